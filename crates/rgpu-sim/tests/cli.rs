//! The `rgpu-sim` binary end to end: exit statuses, the report's key lines, and the Chrome
//! trace (valid trace-event JSON, one named track per kind of event, counts that agree with the
//! report).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

fn rgpu_sim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rgpu-sim"))
        .args(args)
        .output()
        .expect("run rgpu-sim")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The number right after `prefix` on the first report line containing it.
fn number_after(report: &str, prefix: &str) -> u64 {
    let line = report
        .lines()
        .find(|l| l.contains(prefix))
        .unwrap_or_else(|| panic!("no line with {prefix:?} in:\n{report}"));
    let rest = &line[line.find(prefix).unwrap() + prefix.len()..];
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no number after {prefix:?} in {line:?}"))
}

/// The count column of a DDI line of the report ("  DxgkDdiInterruptRoutine   114   1.7 ms").
fn ddi_count(report: &str, ddi: &str) -> u64 {
    report
        .lines()
        .find_map(|l| {
            let mut it = l.split_whitespace();
            (it.next() == Some(ddi)).then(|| it.next().unwrap().parse().unwrap())
        })
        .unwrap_or(0)
}

fn temp_file(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("rgpu-sim-{}-{name}", std::process::id()))
}

#[test]
fn the_default_scenario_small_passes_and_reports_every_section() {
    let o = rgpu_sim(&["run", "--size", "small"]);
    let out = stdout(&o);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for needle in [
        "machine:   Windows 11 22H2 — newest interface WDDM 3.1",
        "IOMMU remapped",
        "negotiated interface:     WDDM 3.1",
        "DRIVERCAPS:",
        "GPUMMUCAPS:               48-bit VA, 4 page-table levels",
        "3 process(es)",
        "every byte matches",
        "steps: 27 run, 0 failed",
        "DDI calls:",
        "DxgkDdiStartDevice",
        "DxgkDdiBuildPagingBuffer",
        "DxgkDdiSubmitCommandVirtual",
        "Callbacks (DxgkCb*)",
        "DxgkCbCreatePhysicalMemoryObject         3",
        "DxgkCbAllocateAdl                        2",
        "DxgkCbFreeAdl                            2",
        "DxgkCbDestroyPhysicalMemoryObject        3",
        "driver memory:  WDDM 3.0 DMA remapping (3 physical memory object(s), 2 ADL(s))",
        "driver mappings (DxgkCbMapMdlToIoMmu): peak 0, at the end 0",
        "at the end 0",
        "paging operations (BuildPagingBuffer calls):",
        "multipass resumes:",
        "Device (rgpu model counters)",
        "TLB hits:",
        "Timings",
        "Verifier: clean (0 findings)",
        "verdict: PASS",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
    assert!(number_after(&out, "multipass resumes:") > 0, "{out}");
    assert!(number_after(&out, "paging submissions:") > 0, "{out}");
    assert!(number_after(&out, "commands:") > 0, "{out}");
    assert!(number_after(&out, "bytes copied:") > 0, "{out}");
    assert_eq!(number_after(&out, "faults:"), 0, "{out}");
}

#[test]
fn interface_2_7_uses_the_2_4_callbacks_and_memory_above_the_gpu_reach_needs_remapping() {
    let o = rgpu_sim(&["run", "--size", "small", "--interface", "2.7"]);
    let out = stdout(&o);
    assert!(o.status.success(), "{out}");
    for needle in [
        "DxgkCbAllocatePagesForMdl                3",
        "DxgkCbMapMdlToIoMmu                      2",
        "driver memory:  WDDM 2.4 (3 DxgkCbAllocatePagesForMdl)",
        "Verifier: clean (0 findings)",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
    assert!(!out.contains("DxgkCbCreatePhysicalMemoryObject"), "{out}");

    // Installed memory at 1 TiB and up: remapped 3.1 passes, 2.7 is refused at start.
    let o = rgpu_sim(&["run", "--size", "small", "--phys-above", "1T"]);
    let out = stdout(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("every byte matches"), "{out}");
    assert!(!out.contains("DxgkCbAllocatePagesForMdl"), "{out}");
    let o = rgpu_sim(&[
        "run",
        "--size",
        "small",
        "--phys-above",
        "1T",
        "--interface",
        "2.7",
    ]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("returned 0xc00000bb"), "{out}");
}

#[test]
fn the_trace_is_chrome_trace_json_with_one_track_per_kind_consistent_with_the_report() {
    let path = temp_file("trace.json");
    let o = rgpu_sim(&[
        "run",
        "--size",
        "small",
        "--interface",
        "2.4",
        "--trace",
        path.to_str().unwrap(),
    ]);
    let report = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{report}");
    let text = std::fs::read_to_string(&path).expect("trace written");
    let _ = std::fs::remove_file(&path);
    let json: Value = serde_json::from_str(&text).expect("trace is JSON");
    let events = json["traceEvents"].as_array().expect("traceEvents array");

    // Every event is well formed for its phase.
    let mut thread_names: HashMap<u64, String> = HashMap::new();
    for e in events {
        let ph = e["ph"].as_str().expect("ph");
        assert!(
            e["name"].is_string() && e["pid"].is_u64() && e["tid"].is_u64(),
            "{e}"
        );
        match ph {
            "M" => {
                if e["name"] == "thread_name" {
                    let name = e["args"]["name"].as_str().expect("thread name").to_string();
                    thread_names.insert(e["tid"].as_u64().unwrap(), name);
                }
            }
            "X" => {
                assert!(e["ts"].as_f64().expect("ts") >= 0.0, "{e}");
                assert!(e["dur"].as_f64().expect("dur") >= 0.0, "{e}");
            }
            "i" => {
                assert!(e["ts"].is_number(), "{e}");
                assert_eq!(e["s"], "t", "{e}");
            }
            other => panic!("unexpected phase {other}: {e}"),
        }
    }
    let tid_of = |needle: &str| {
        thread_names
            .iter()
            .find(|(_, n)| n.contains(needle))
            .map(|(t, _)| *t)
            .unwrap_or_else(|| panic!("no track named like {needle:?}: {thread_names:?}"))
    };
    let (ddi, cb, paging, device, irq) = (
        tid_of("DDI"),
        tid_of("callbacks"),
        tid_of("Paging"),
        tid_of("Device"),
        tid_of("Interrupts"),
    );
    let mut tids = vec![ddi, cb, paging, device, irq];
    tids.sort();
    tids.dedup();
    assert_eq!(tids.len(), 5, "separate tracks: {thread_names:?}");

    fn on_track<'a>(
        events: &'a [Value],
        tid: u64,
        ph: &'static str,
    ) -> impl Iterator<Item = &'a Value> + 'a {
        events
            .iter()
            .filter(move |e| e["tid"] == tid && e["ph"] == ph)
    }
    let on = |tid: u64, ph: &'static str| on_track(events, tid, ph);
    let named = |tid: u64, prefix: &str| {
        on(tid, "X")
            .filter(|e| e["name"].as_str().unwrap().starts_with(prefix))
            .count() as u64
    };

    // Paging: one event per BuildPagingBuffer call, named by operation.
    let builds = named(paging, "BuildPagingBuffer ");
    assert_eq!(
        builds,
        number_after(&report, "paging operations (BuildPagingBuffer calls):"),
        "{report}"
    );
    assert_eq!(builds, ddi_count(&report, "DxgkDdiBuildPagingBuffer"));
    for op in [
        "UPDATE_PAGE_TABLE",
        "FLUSH_TLB",
        "VIRTUAL_FILL",
        "VIRTUAL_TRANSFER",
    ] {
        assert!(
            on(paging, "X").any(|e| e["name"] == format!("BuildPagingBuffer {op}")),
            "{op}"
        );
    }
    assert_eq!(
        named(paging, "paging submission"),
        number_after(&report, "paging submissions:")
    );

    // DDI track: every DDI the report counts, ISR/DPC aside (interrupt track).
    let total_ddis = number_after(&report, "DDI calls:");
    let isr = named(irq, "DxgkDdiInterruptRoutine");
    let dpc = named(irq, "DxgkDdiDpcRoutine");
    assert_eq!(on(ddi, "X").count() as u64 + isr + dpc, total_ddis);
    assert_eq!(named(ddi, "DxgkDdiStartDevice"), 1);
    assert_eq!(
        named(ddi, "DxgkDdiSubmitCommandVirtual"),
        ddi_count(&report, "DxgkDdiSubmitCommandVirtual")
    );

    // Device runs, interrupts and DPCs.
    let runs = on(device, "X").count() as u64;
    assert!(runs > 0);
    assert_eq!(runs, number_after(&report, "device runs that did work:"));
    let commands: u64 = on(device, "X")
        .map(|e| e["args"]["commands"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(commands, number_after(&report, "commands:"), "{report}");
    assert!(isr > 0 && dpc > 0);
    assert_eq!(isr, ddi_count(&report, "DxgkDdiInterruptRoutine"));
    let notify = on(irq, "i")
        .filter(|e| e["name"] == "DxgkCbNotifyInterrupt DMA_COMPLETED")
        .count() as u64;
    assert!(notify > 0);
    assert_eq!(
        notify,
        number_after(&report, "DxgkCbNotifyInterrupt DMA_COMPLETED")
    );

    // Callbacks: the memory callbacks the driver made at start.
    assert_eq!(
        named(cb, "DxgkCbMapMdlToIoMmu"),
        ddi_count(&report, "DxgkCbMapMdlToIoMmu")
    );
    assert!(named(cb, "DxgkCbAllocatePagesForMdl") > 0);
}

#[test]
fn fail_nth_1_unwinds_cleanly_and_reports_the_injected_failure() {
    let o = rgpu_sim(&["run", "--size", "small", "--fail-nth", "1"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("Fault injection (--fail-nth 1)"), "{out}");
    assert!(
        out.contains("injected: failure of injection point #1"),
        "{out}"
    );
    assert!(out.contains("cleanly"), "{out}");
    assert!(out.contains("Verifier: clean (0 findings)"), "{out}");
    assert!(out.contains("verdict: PASS"), "{out}");
    assert!(out.contains("at the end 0"), "nothing left mapped: {out}");
}

#[test]
fn fail_nth_beyond_the_last_point_says_so() {
    let o = rgpu_sim(&["run", "--size", "small", "--fail-nth", "1000000"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("not reached: the run reached"), "{out}");
    assert!(out.contains("every byte matches"), "{out}");
}

#[test]
fn quiet_prints_only_the_verdict() {
    let o = rgpu_sim(&[
        "run",
        "--size",
        "small",
        "--interface",
        "2.7",
        "--iommu",
        "identity",
        "--quiet",
    ]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.starts_with("verdict: PASS"), "{out}");
}

#[test]
fn an_unknown_interface_is_a_usage_error() {
    for bad in ["2.3", "4.0", "wddm"] {
        let o = rgpu_sim(&["run", "--interface", bad]);
        assert_eq!(o.status.code(), Some(2), "--interface {bad}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("invalid value"), "{err}");
        assert!(o.stdout.is_empty());
    }
    let o = rgpu_sim(&["run", "--fail-nth", "0"]);
    assert_eq!(o.status.code(), Some(2), "--fail-nth counts from 1");
}
