//! The readable report of a scenario run.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use dxgk_sim::{IommuMode, Track};
use dxgk_sys as sys;

use crate::scenario::Outcome;

/// Interface versions by name, newest last.
const VERSIONS: &[(u32, &str)] = &[
    (sys::DXGKDDI_INTERFACE_VERSION_WDDM2_0, "WDDM 2.0"),
    (sys::DXGKDDI_INTERFACE_VERSION_WDDM2_1, "WDDM 2.1"),
    (sys::DXGKDDI_INTERFACE_VERSION_WDDM2_2, "WDDM 2.2"),
    (sys::DXGKDDI_INTERFACE_VERSION_WDDM2_3, "WDDM 2.3"),
    (sys::DXGKDDI_INTERFACE_VERSION_WDDM2_4, "WDDM 2.4"),
    (sys::DXGKDDI_INTERFACE_VERSION_WDDM2_5, "WDDM 2.5"),
    (sys::DXGKDDI_INTERFACE_VERSION_WDDM2_6, "WDDM 2.6"),
    (sys::DXGKDDI_INTERFACE_VERSION_WDDM2_7, "WDDM 2.7"),
    (sys::DXGKDDI_INTERFACE_VERSION_WDDM2_8, "WDDM 2.8"),
    (sys::DXGKDDI_INTERFACE_VERSION_WDDM2_9, "WDDM 2.9"),
    (sys::DXGKDDI_INTERFACE_VERSION_WDDM3_0, "WDDM 3.0"),
    (sys::DXGKDDI_INTERFACE_VERSION_WDDM3_1, "WDDM 3.1"),
];

/// "WDDM 3.1 (0xa00b)".
pub fn version_name(v: u32) -> String {
    match VERSIONS.iter().find(|x| x.0 == v) {
        Some((_, n)) => format!("{n} ({v:#x})"),
        None => format!("{v:#x}"),
    }
}

fn ms(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else if us < 1e6 {
        format!("{:.1} ms", us / 1000.0)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

fn bytes(b: u64) -> String {
    if b >= 1 << 20 {
        format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
    } else if b >= 1024 {
        format!("{:.1} KiB", b as f64 / 1024.0)
    } else {
        format!("{b} B")
    }
}

/// Per-name (count, total time) of the events of `tracks` whose name passes `keep`.
fn tally(
    o: &Outcome,
    tracks: &[Track],
    keep: impl Fn(&str) -> bool,
) -> BTreeMap<String, (u64, Duration)> {
    let mut t: BTreeMap<String, (u64, Duration)> = BTreeMap::new();
    for e in &o.events {
        if tracks.contains(&e.track) && keep(&e.name) {
            let x = t.entry(e.name.clone()).or_default();
            x.0 += 1;
            x.1 += Duration::from_nanos(e.dur_ns.unwrap_or(0));
        }
    }
    t
}

/// The report of one run.
pub struct Report<'a> {
    o: &'a Outcome,
}

impl<'a> Report<'a> {
    pub fn new(o: &'a Outcome) -> Self {
        Self { o }
    }

    /// A step failed without an injected failure to explain it.
    fn unexplained_failure(&self) -> bool {
        self.o.failed.is_some() && self.o.injected.is_empty()
    }

    /// Verifier clean, every byte verified right, and no failure an injection does not explain.
    pub fn passed(&self) -> bool {
        self.o.findings.is_empty() && self.o.mismatches.is_empty() && !self.unexplained_failure()
    }

    pub fn verdict_line(&self) -> String {
        let o = self.o;
        let mut why = Vec::new();
        if !o.findings.is_empty() {
            why.push(format!("{} verifier finding(s)", o.findings.len()));
        }
        if !o.mismatches.is_empty() {
            why.push(format!("{} data mismatch(es)", o.mismatches.len()));
        }
        if self.unexplained_failure() {
            let (step, err) = o.failed.as_ref().expect("failed");
            why.push(format!("step \"{step}\" failed: {err}"));
        }
        if why.is_empty() {
            let how = match &o.failed {
                None => format!("{} verified", bytes(o.verified_bytes)),
                Some((step, _)) => format!("injected failure ended \"{step}\"; unwound cleanly"),
            };
            format!("verdict: PASS (verifier clean; {how})")
        } else {
            format!("verdict: FAIL ({})", why.join("; "))
        }
    }

    pub fn render(&self) -> String {
        let o = self.o;
        let mut s = String::new();
        let w = &mut s;
        let iommu = match o.config.iommu {
            IommuMode::Identity => "identity (WDDM 2.4 IOMMU isolation)",
            IommuMode::Remapped => "remapped (WDDM 3.0 DMA remapping)",
        };
        let _ = writeln!(w, "rgpu-sim: the rgpu driver in dxgk-sim");
        let _ = writeln!(
            w,
            "machine:   {} — newest interface {}, IOMMU {iommu}, ExAllocatePool2 {}",
            o.config.name,
            version_name(o.config.max_interface_version),
            if o.config.has_pool2 { "yes" } else { "no" }
        );
        let _ = writeln!(
            w,
            "device:    {}",
            match o.device_kind {
                crate::Device::Hardware => "hardware (rgpu register BAR, device model behind MMIO)",
                crate::Device::Soft =>
                    "soft (root-enumerated, no resources: the model runs inside the driver)",
            }
        );
        let _ = writeln!(w, "scenario:  {:?}", o.size);

        // ---- driver and capabilities ----
        let _ = writeln!(w, "\nDriver and adapter");
        let offered: Vec<String> = o
            .offered_versions
            .iter()
            .map(|v| version_name(*v))
            .collect();
        let _ = writeln!(
            w,
            "  DxgkInitialize offers:    {}",
            if offered.is_empty() {
                "none".into()
            } else {
                offered.join(", ")
            }
        );
        match &o.info {
            Some(info) if info.interface_version != 0 => {
                let _ = writeln!(
                    w,
                    "  negotiated interface:     {}",
                    version_name(info.interface_version)
                );
                if let Some(caps) = info.driver_caps {
                    let mm = caps.MemoryManagementCaps;
                    let _ = writeln!(
                        w,
                        "  DRIVERCAPS:               WDDMVersion {:#x}, VirtualAddressing {}, GpuMmu {}, IoMmuSecureMode {} ({} bytes asked)",
                        caps.WDDMVersion.0,
                        mm.VirtualAddressingSupported(),
                        mm.GpuMmuSupported(),
                        mm.IoMmuSecureModeSupported(),
                        info.driver_caps_size
                    );
                }
                if let Some(g) = info.gpummu_caps {
                    let bits: Vec<String> = info
                        .page_table_levels
                        .iter()
                        .map(|l| l.PageTableIndexBitCount.to_string())
                        .collect();
                    let mode = if g.PageTableUpdateMode == sys::DXGK_PAGETABLEUPDATE_GPU_VIRTUAL {
                        "GPU_VIRTUAL".to_string()
                    } else {
                        format!("{}", g.PageTableUpdateMode.0)
                    };
                    let _ = writeln!(
                        w,
                        "  GPUMMUCAPS:               {}-bit VA, {} page-table levels (index bits leaf→root {}), update mode {mode}",
                        g.VirtualAddressBitCount,
                        g.PageTableLevelCount,
                        bits.join("/")
                    );
                }
                if let Some(seg) = info.segments {
                    let _ = writeln!(
                        w,
                        "  QUERYSEGMENT4:            {} segment(s), paging buffer {} in segment {}",
                        seg.NbSegment,
                        bytes(u64::from(seg.PagingBufferSize)),
                        seg.PagingBufferSegmentId
                    );
                }
                if let Some(p) = info.physical_adapter_caps {
                    let _ = writeln!(
                        w,
                        "  PHYSICALADAPTERCAPS:      {} execution node(s), paging node {}",
                        p.NumExecutionNodes, p.PagingNodeIndex
                    );
                }
                let _ = writeln!(
                    w,
                    "  IOMMU queries:            framebuffer save size {}, {} hardware reserved range(s)",
                    info.framebuffer_save_size
                        .map_or("-".into(), |x| x.to_string()),
                    info.hardware_reserved_ranges
                        .as_ref()
                        .map_or("-".into(), |r| r.len().to_string())
                );
            }
            _ => {
                let _ = writeln!(w, "  the adapter never started");
            }
        }
        if let Some(st) = o.final_state {
            let _ = writeln!(w, "  adapter state at the end: {st:?}");
        }

        // ---- scenario ----
        let _ = writeln!(w, "\nScenario");
        let _ = writeln!(
            w,
            "  {} process(es), {} allocation(s) ({}), {} read back and verified: {}",
            o.processes,
            o.allocations,
            bytes(o.allocated_bytes),
            bytes(o.verified_bytes),
            if o.mismatches.is_empty() {
                "every byte matches"
            } else {
                "MISMATCHES"
            }
        );
        for m in &o.mismatches {
            let _ = writeln!(w, "    mismatch: {m}");
        }
        let failed_steps: Vec<_> = o.steps.iter().filter(|s| s.error.is_some()).collect();
        let _ = writeln!(
            w,
            "  steps: {} run, {} failed",
            o.steps.len(),
            failed_steps.len()
        );
        for st in failed_steps {
            let _ = writeln!(
                w,
                "    failed: {}: {}",
                st.name,
                st.error.as_deref().unwrap_or("")
            );
        }

        // ---- fault injection ----
        if let Some(n) = o.fail_nth {
            let _ = writeln!(w, "\nFault injection (--fail-nth {n})");
            if o.injected.is_empty() {
                let _ = writeln!(
                    w,
                    "  not reached: the run reached {} injection point(s)",
                    o.injection_points
                );
            }
            for f in &o.injected {
                let _ = writeln!(
                    w,
                    "  injected: failure of injection point #{} — {} (driver call site: {})",
                    f.point, f.call, f.driver_site
                );
            }
            let coped = match &o.failed {
                Some((step, err)) => format!(
                    "the driver failed \"{step}\" cleanly ({err}); teardown ran: {}",
                    if o.findings.is_empty() {
                        "no leaks, no findings"
                    } else {
                        "WITH FINDINGS"
                    }
                ),
                None if !o.injected.is_empty() => {
                    "the driver absorbed the failure: the whole scenario completed".into()
                }
                None => "nothing failed".into(),
            };
            let _ = writeln!(w, "  outcome: {coped}");
        }

        // ---- DDIs ----
        let ddis = tally(o, &[Track::Ddi, Track::Interrupt], |n| {
            n.starts_with("DxgkDdi") || n == "DriverEntry"
        });
        let (n, t) = ddis
            .values()
            .fold((0, Duration::ZERO), |a, x| (a.0 + x.0, a.1 + x.1));
        let _ = writeln!(
            w,
            "\nDDI calls: {n} calls, {} inside DDIs (wall time; includes the simulated kernel's work)",
            ms(t)
        );
        for (name, (c, d)) in &ddis {
            let _ = writeln!(w, "  {name:<34} {c:>7}  {:>9}", ms(*d));
        }

        // ---- callbacks ----
        let cbs: Vec<_> = o
            .calls
            .iter()
            .filter(|(n, _)| n.starts_with("DxgkCb"))
            .collect();
        let total: u64 = cbs.iter().map(|x| x.1).sum();
        let _ = writeln!(w, "\nCallbacks (DxgkCb*): {total} calls");
        for (name, c) in &cbs {
            let _ = writeln!(w, "  {name:<34} {c:>7}");
        }
        let mut kernel: Vec<_> = o
            .calls
            .iter()
            .filter(|(n, _)| !n.starts_with("DxgkCb") && *n != "DxgkInitialize")
            .collect();
        kernel.sort_by_key(|x| std::cmp::Reverse(x.1));
        let ktotal: u64 = kernel.iter().map(|x| x.1).sum();
        let top: Vec<String> = kernel
            .iter()
            .take(5)
            .map(|(n, c)| format!("{n} {c}"))
            .collect();
        let _ = writeln!(
            w,
            "  kernel routines: {ktotal} calls (most: {})",
            top.join(", ")
        );

        // ---- IOMMU ----
        let _ = writeln!(w, "\nIOMMU");
        let count = |name: &str| o.calls.iter().find(|(n, _)| *n == name).map_or(0, |x| x.1);
        let (objects, adls, mdls) = (
            count("DxgkCbCreatePhysicalMemoryObject"),
            count("DxgkCbAllocateAdl"),
            count("DxgkCbAllocatePagesForMdl"),
        );
        let path = match (objects, mdls) {
            (0, 0) => "none allocated".to_string(),
            (o, 0) => {
                format!("WDDM 3.0 DMA remapping ({o} physical memory object(s), {adls} ADL(s))")
            }
            (0, m) => format!("WDDM 2.4 ({m} DxgkCbAllocatePagesForMdl)"),
            (o, m) => format!("both: {o} physical memory object(s) and {m} MDL allocation(s)"),
        };
        let _ = writeln!(w, "  driver memory:  {path}");
        let _ = writeln!(
            w,
            "  driver mappings (DxgkCbMapMdlToIoMmu): peak {}, at the end {}",
            o.iommu_maps_peak, o.iommu_maps_end
        );
        let _ = writeln!(
            w,
            "  mapped pages (driver + VidMm memory):  peak {}, at the end {}",
            o.iommu_pages_peak, o.iommu_pages_end
        );

        // ---- paging ----
        let ops = tally(o, &[Track::Paging], |n| n.starts_with("BuildPagingBuffer"));
        let _ = writeln!(w, "\nPaging (VidMm)");
        match o.vidmm {
            Some(v) => {
                let per: Vec<String> = ops
                    .iter()
                    .map(|(n, (c, _))| {
                        format!("{} {c}", n.trim_start_matches("BuildPagingBuffer "))
                    })
                    .collect();
                let _ = writeln!(
                    w,
                    "  paging operations (BuildPagingBuffer calls): {} ({})",
                    v.build_calls,
                    per.join(", ")
                );
                let _ = writeln!(
                    w,
                    "  multipass resumes: {}, paging submissions: {}, user submissions: {}",
                    v.multipass_resumes, v.paging_submissions, v.user_submissions
                );
                let _ = writeln!(
                    w,
                    "  PTEs requested: {} (of which 64 KiB pages: {}; leaf-table kind changes: {}), device faults seen: {}, TDRs: {}",
                    v.ptes_written,
                    v.ptes_64k_written,
                    v.leaf_kind_changes,
                    v.device_faults,
                    v.resets
                );
            }
            None => {
                let _ = writeln!(w, "  VidMm never started");
            }
        }

        // ---- device ----
        let _ = writeln!(w, "\nDevice (rgpu model counters)");
        let get = |k: &str| o.device.iter().find(|x| x.0 == k).map_or(0, |x| x.1);
        if o.device.is_empty() {
            let _ = writeln!(w, "  no device model");
        } else {
            let _ = writeln!(
                w,
                "  commands: {}, ring entries: {}, doorbells: {}, fences: {}, interrupts: {}",
                get("commands"),
                get("ring_entries"),
                get("doorbells"),
                get("fences"),
                get("interrupts")
            );
            let _ = writeln!(
                w,
                "  bytes filled: {}, bytes copied: {}, bytes written: {}, PTEs written: {}",
                bytes(get("bytes_filled")),
                bytes(get("bytes_copied")),
                bytes(get("bytes_written")),
                get("ptes_written")
            );
            let _ = writeln!(
                w,
                "  TLB hits: {}, TLB misses: {}, PTE reads: {}, TLB flushes: {}, faults: {}, resets: {}",
                get("tlb_hits"),
                get("tlb_misses"),
                get("pte_reads"),
                get("tlb_flushes"),
                get("faults"),
                get("resets")
            );
        }
        let runs = o.events.iter().filter(|e| e.track == Track::Device).count();
        let notify = tally(o, &[Track::Interrupt], |n| n.starts_with("DxgkCbNotify"));
        let notes: Vec<String> = notify
            .iter()
            .map(|(n, (c, _))| format!("{n} {c}"))
            .collect();
        let _ = writeln!(
            w,
            "  device runs that did work: {runs}; notifications: {}",
            notes.join(", ")
        );

        // ---- timings ----
        let _ = writeln!(w, "\nTimings");
        let mut phases: Vec<(&str, Duration)> = Vec::new();
        for st in &o.steps {
            match phases.iter_mut().find(|p| p.0 == st.phase) {
                Some(p) => p.1 += st.duration,
                None => phases.push((st.phase, st.duration)),
            }
        }
        let line: Vec<String> = phases
            .iter()
            .map(|(p, d)| format!("{p} {}", ms(*d)))
            .collect();
        let _ = writeln!(w, "  {}; total {}", line.join(", "), ms(o.total));
        let slowest = o.steps.iter().max_by_key(|s| s.duration);
        if let Some(st) = slowest {
            let _ = writeln!(w, "  slowest step: {} ({})", st.name, ms(st.duration));
        }

        // ---- verifier ----
        if o.findings.is_empty() {
            let _ = writeln!(w, "\nVerifier: clean (0 findings)");
        } else {
            let _ = writeln!(w, "\nVerifier: {} finding(s)", o.findings.len());
            for f in &o.findings {
                let _ = writeln!(w, "  {f}");
            }
        }
        let _ = writeln!(w, "{}", self.verdict_line());
        s
    }
}
