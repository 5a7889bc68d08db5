//! Chrome trace-event JSON (the format Perfetto and chrome://tracing open) from the events the
//! simulator recorded: one process, one thread (track) per [`Track`], named with `thread_name`
//! metadata; spans are complete ("X") events, instants are thread-scoped "i" events.

use dxgk_sim::{TraceValue, Track};
use serde_json::{json, Map, Value};

use crate::scenario::Outcome;

/// Thread id and name of a track.
pub fn track_thread(t: Track) -> (u64, &'static str) {
    match t {
        Track::Ddi => (1, "DDI calls"),
        Track::Callback => (2, "Dxgkrnl callbacks"),
        Track::Paging => (3, "Paging (BuildPagingBuffer, submissions)"),
        Track::Device => (4, "Device execution"),
        Track::Interrupt => (5, "Interrupts and DPCs"),
    }
}

fn category(t: Track) -> &'static str {
    match t {
        Track::Ddi => "ddi",
        Track::Callback => "callback",
        Track::Paging => "paging",
        Track::Device => "device",
        Track::Interrupt => "interrupt",
    }
}

/// Microseconds with nanosecond precision.
fn us(ns: u64) -> Value {
    json!(ns as f64 / 1000.0)
}

/// The trace as `{"traceEvents": [...], "displayTimeUnit": "ns", "otherData": {...}}`.
pub fn chrome_trace(o: &Outcome) -> Value {
    const PID: u64 = 1;
    let mut events = vec![json!({
        "name": "process_name", "ph": "M", "pid": PID, "tid": 0,
        "args": { "name": format!("rgpu in dxgk-sim ({})", o.config.name) },
    })];
    for t in Track::ALL {
        let (tid, name) = track_thread(t);
        events.push(json!({
            "name": "thread_name", "ph": "M", "pid": PID, "tid": tid,
            "args": { "name": name },
        }));
        events.push(json!({
            "name": "thread_sort_index", "ph": "M", "pid": PID, "tid": tid,
            "args": { "sort_index": tid },
        }));
    }
    // In start order (the simulator records spans when they end).
    let mut sorted: Vec<_> = o.events.iter().collect();
    sorted.sort_by_key(|e| e.start_ns);
    for e in sorted {
        let (tid, _) = track_thread(e.track);
        let mut args = Map::new();
        for (k, v) in &e.args {
            let v = match v {
                TraceValue::Int(i) => json!(i),
                TraceValue::Text(s) => json!(s),
            };
            args.insert((*k).to_string(), v);
        }
        let mut ev = json!({
            "name": e.name,
            "cat": category(e.track),
            "pid": PID,
            "tid": tid,
            "ts": us(e.start_ns),
            "args": Value::Object(args),
        });
        match e.dur_ns {
            Some(d) => {
                ev["ph"] = json!("X");
                ev["dur"] = us(d);
            }
            None => {
                ev["ph"] = json!("i");
                ev["s"] = json!("t");
            }
        }
        events.push(ev);
    }
    json!({
        "traceEvents": events,
        "displayTimeUnit": "ns",
        "otherData": {
            "machine": o.config.name,
            "max_interface_version": format!("{:#x}", o.config.max_interface_version),
        },
    })
}
