//! Event recording: what the simulated machine did, in order, with host timestamps — DDI calls
//! the simulator makes, DXGKRNL_INTERFACE callbacks, VidMm's paging operations and submissions,
//! device-model runs, interrupts and DPCs. Off by default ([`Machine::enable_trace`]); when off,
//! each recording site costs one relaxed atomic load.
//!
//! Generic: events name DDIs, callbacks and operation codes as Windows does; a device model
//! contributes only the counters it reports through [`crate::SimDevice::counters`]. Consumers
//! (e.g. a Chrome trace-event writer) map [`Track`]s to timelines.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::lock_order::{LockRank, RankedMutex};
use crate::machine::{Machine, MachineState};

/// The timeline an event belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Track {
    /// DxgkDdi* calls the simulator makes (PnP, QueryAdapterInfo, VidMm's DDIs), and DriverEntry.
    Ddi,
    /// DxgkCb* callbacks the driver makes.
    Callback,
    /// VidMm paging: one event per DxgkDdiBuildPagingBuffer call (named by operation) and per
    /// paging-buffer submission.
    Paging,
    /// Device-model synchronizations that did work, with the counters that moved.
    Device,
    /// DxgkDdiInterruptRoutine, DxgkDdiDpcRoutine, and DxgkCbNotifyInterrupt / NotifyDpc
    /// (instants).
    Interrupt,
}

impl Track {
    /// Every track, in display order.
    pub const ALL: [Track; 5] = [
        Track::Ddi,
        Track::Callback,
        Track::Paging,
        Track::Device,
        Track::Interrupt,
    ];
}

/// A value attached to an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TraceValue {
    Int(i64),
    Text(String),
}

impl From<u64> for TraceValue {
    fn from(v: u64) -> Self {
        TraceValue::Int(v as i64)
    }
}

impl From<u32> for TraceValue {
    fn from(v: u32) -> Self {
        TraceValue::Int(i64::from(v))
    }
}

impl From<&str> for TraceValue {
    fn from(v: &str) -> Self {
        TraceValue::Text(v.into())
    }
}

impl From<String> for TraceValue {
    fn from(v: String) -> Self {
        TraceValue::Text(v)
    }
}

/// An NTSTATUS as text ("0x00000000").
pub fn status_value(status: i32) -> TraceValue {
    TraceValue::Text(format!("{:#010x}", status as u32))
}

/// The name of a DXGK_BUILDPAGINGBUFFER_OPERATION value ("UPDATE_PAGE_TABLE", …).
pub fn paging_operation_name(op: i32) -> &'static str {
    const NAMES: [&str; 18] = [
        "TRANSFER",
        "FILL",
        "DISCARD_CONTENT",
        "READ_PHYSICAL",
        "WRITE_PHYSICAL",
        "MAP_APERTURE_SEGMENT",
        "UNMAP_APERTURE_SEGMENT",
        "SPECIAL_LOCK_TRANSFER",
        "VIRTUAL_TRANSFER",
        "VIRTUAL_FILL",
        "INIT_CONTEXT_RESOURCE",
        "UPDATE_PAGE_TABLE",
        "FLUSH_TLB",
        "UPDATE_CONTEXT_ALLOCATION",
        "COPY_PAGE_TABLE_ENTRIES",
        "NOTIFY_RESIDENCY",
        "SIGNAL_MONITORED_FENCE",
        "MAP_APERTURE_SEGMENT2",
    ];
    usize::try_from(op)
        .ok()
        .and_then(|i| NAMES.get(i))
        .copied()
        .unwrap_or("UNKNOWN")
}

/// The name of a DXGK_INTERRUPT_TYPE value ("DMA_COMPLETED", …).
pub fn interrupt_type_name(kind: i32) -> &'static str {
    match kind {
        1 => "DMA_COMPLETED",
        2 => "DMA_PREEMPTED",
        3 => "CRTC_VSYNC",
        4 => "DMA_FAULTED",
        9 => "DMA_PAGE_FAULTED",
        11 => "MONITORED_FENCE_SIGNALED",
        _ => "OTHER",
    }
}

/// One recorded event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceEvent {
    pub track: Track,
    pub name: String,
    /// Nanoseconds since [`Machine::enable_trace`].
    pub start_ns: u64,
    /// Duration; `None` for an instant.
    pub dur_ns: Option<u64>,
    pub args: Vec<(&'static str, TraceValue)>,
}

/// Per-machine recording state.
pub(crate) struct TraceState {
    enabled: AtomicBool,
    origin: RankedMutex<Option<Instant>>,
    events: RankedMutex<Vec<TraceEvent>>,
}

impl Default for TraceState {
    fn default() -> Self {
        Self {
            enabled: AtomicBool::new(false),
            origin: RankedMutex::new(LockRank::TraceOrigin, None),
            events: RankedMutex::new(LockRank::TraceEvents, Vec::new()),
        }
    }
}

/// A started span: [`begin`] returns one only while recording.
pub(crate) struct Span {
    start: Instant,
}

impl TraceState {
    pub(crate) fn on(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    fn ns(&self, t: Instant) -> u64 {
        let origin = self.origin.lock().unwrap_or(t);
        t.saturating_duration_since(origin).as_nanos() as u64
    }

    fn push(&self, e: TraceEvent) {
        self.events.lock().push(e);
    }
}

/// Starts a span if recording is on.
pub(crate) fn begin(m: &MachineState) -> Option<Span> {
    m.trace.on().then(|| Span {
        start: Instant::now(),
    })
}

/// Ends `span` (if any) as a complete event; `args` is evaluated only when recording.
pub(crate) fn end(
    m: &MachineState,
    span: Option<Span>,
    track: Track,
    name: impl Into<String>,
    args: impl FnOnce() -> Vec<(&'static str, TraceValue)>,
) {
    let Some(span) = span else { return };
    let now = Instant::now();
    let start_ns = m.trace.ns(span.start);
    let dur_ns = now.saturating_duration_since(span.start).as_nanos() as u64;
    m.trace.push(TraceEvent {
        track,
        name: name.into(),
        start_ns,
        dur_ns: Some(dur_ns),
        args: args(),
    });
}

/// Records an instant event if recording is on.
pub(crate) fn instant(
    m: &MachineState,
    track: Track,
    name: impl Into<String>,
    args: impl FnOnce() -> Vec<(&'static str, TraceValue)>,
) {
    if !m.trace.on() {
        return;
    }
    let start_ns = m.trace.ns(Instant::now());
    m.trace.push(TraceEvent {
        track,
        name: name.into(),
        start_ns,
        dur_ns: None,
        args: args(),
    });
}

/// What a traced call returned, as an event argument.
pub(crate) trait TraceResult {
    fn result(&self) -> Option<(&'static str, TraceValue)>;
}

impl TraceResult for i32 {
    fn result(&self) -> Option<(&'static str, TraceValue)> {
        Some(("status", status_value(*self)))
    }
}

impl TraceResult for u8 {
    fn result(&self) -> Option<(&'static str, TraceValue)> {
        Some(("returned", u32::from(*self).into()))
    }
}

impl TraceResult for () {
    fn result(&self) -> Option<(&'static str, TraceValue)> {
        None
    }
}

/// Runs `f` (one call into the driver) as a span of `track` named `name`, with `args` and the
/// call's result as arguments.
pub(crate) fn call<R: TraceResult>(
    m: &MachineState,
    track: Track,
    name: &'static str,
    args: impl FnOnce() -> Vec<(&'static str, TraceValue)>,
    f: impl FnOnce() -> R,
) -> R {
    let span = begin(m);
    let r = f();
    end(m, span, track, name, || {
        let mut a = args();
        a.extend(r.result());
        a
    });
    r
}

/// A span that records itself when dropped (for calls with many exits).
pub(crate) struct SpanGuard {
    live: Option<(Arc<MachineState>, Span)>,
    track: Track,
    name: &'static str,
}

impl Drop for SpanGuard {
    fn drop(&mut self) {
        if let Some((m, span)) = self.live.take() {
            end(&m, Some(span), self.track, self.name, Vec::new);
        }
    }
}

/// A [`SpanGuard`] on the current machine's `track` (recording nothing when tracing is off or
/// there is no current machine).
pub(crate) fn guard(track: Track, name: &'static str) -> SpanGuard {
    let live = crate::machine::try_current()
        .filter(|m| m.trace.on())
        .map(|m| {
            (
                m,
                Span {
                    start: Instant::now(),
                },
            )
        });
    SpanGuard { live, track, name }
}

impl Machine {
    /// Starts recording events (timestamps count from now). Idempotent.
    pub fn enable_trace(&self) {
        let mut origin = self.state.trace.origin.lock();
        if origin.is_none() {
            *origin = Some(Instant::now());
        }
        self.state.trace.enabled.store(true, Ordering::Relaxed);
    }

    /// Stops recording (events recorded so far are kept).
    pub fn disable_trace(&self) {
        self.state.trace.enabled.store(false, Ordering::Relaxed);
    }

    /// Whether events are being recorded.
    pub fn trace_enabled(&self) -> bool {
        self.state.trace.on()
    }

    /// The events recorded so far, in the order they ended (complete events) or happened
    /// (instants).
    pub fn trace_events(&self) -> Vec<TraceEvent> {
        self.state.trace.events.lock().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MachineConfig;

    #[test]
    fn recording_is_off_by_default_and_keeps_events_once_on() {
        let m = Machine::new(MachineConfig::windows_11_22h2());
        instant(&m.state, Track::Interrupt, "before", Vec::new);
        end(&m.state, begin(&m.state), Track::Ddi, "before", Vec::new);
        assert!(!m.trace_enabled());
        assert!(m.trace_events().is_empty());
        m.enable_trace();
        let span = begin(&m.state);
        instant(&m.state, Track::Interrupt, "tick", || {
            vec![("fence", 7u32.into())]
        });
        end(&m.state, span, Track::Ddi, "DxgkDdiTest", || {
            vec![("status", status_value(0))]
        });
        let ev = m.trace_events();
        assert_eq!(ev.len(), 2);
        assert_eq!((ev[0].track, ev[0].dur_ns), (Track::Interrupt, None));
        assert_eq!(ev[0].args, vec![("fence", TraceValue::Int(7))]);
        assert_eq!(ev[1].name, "DxgkDdiTest");
        assert!(ev[1].dur_ns.is_some() && ev[1].start_ns <= ev[0].start_ns);
        assert_eq!(
            ev[1].args,
            vec![("status", TraceValue::Text("0x00000000".into()))]
        );
        m.disable_trace();
        instant(&m.state, Track::Interrupt, "after", Vec::new);
        assert_eq!(m.trace_events().len(), 2);
        assert_eq!(paging_operation_name(11), "UPDATE_PAGE_TABLE");
        assert_eq!(paging_operation_name(99), "UNKNOWN");
        assert_eq!(interrupt_type_name(1), "DMA_COMPLETED");
    }
}
