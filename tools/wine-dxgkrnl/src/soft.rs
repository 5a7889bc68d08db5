//! The soft steps (harness setting `HarnessSoft=1`): rgpu was started as a root-enumerated
//! adapter (an empty translated resource list), so it runs its device model inside the driver
//! on its own engine thread (docs/soft-rgpu.md). These steps drive that engine through the
//! DDIs Dxgkrnl would call and observe what comes back through the interrupt callbacks
//! ([`crate::interrupt`]), as Dxgkrnl would see it:
//!
//! * `SoftEngine/Start` — StartDevice succeeded without the port mapping any BAR (no
//!   `DxgkCbMapMemory`): there is nothing to map.
//! * `SoftEngine/Preempt#N` — `DxgkDdiPreemptCommand` queues a fence-only request on the ring
//!   and rings the doorbell; rgpu's engine thread must answer it: DMA_PREEMPTED with this
//!   PreemptionFenceId (and LastCompletedFenceId 0: nothing was submitted), notified inside
//!   `DxgkCbSynchronizeExecution`, then the queued DPC run and `DxgkCbNotifyDpc` called from it.
//!   Twice, so the engine is shown to wait for the next doorbell and answer again.

use core::sync::atomic::Ordering;

use dxgk_sys::{DRIVER_INITIALIZATION_DATA, DXGKARG_PREEMPTCOMMAND, LARGE_INTEGER, PVOID};

use crate::interrupt;
use crate::steps::{check, record, Got};

/// How long a step waits for the engine thread (a hang detector, not a timing check).
const WAIT_MS: u32 = 5000;
const POLL_MS: u32 = 10;

fn sleep_ms(ms: u32) {
    let mut delay = LARGE_INTEGER {
        QuadPart: -(i64::from(ms) * 10_000),
    };
    // SAFETY: the adapter thread at PASSIVE_LEVEL; `delay` lives for the call.
    unsafe { dxgk_sys::KeDelayExecutionThread(dxgk_sys::KernelMode, 0, &mut delay) };
}

/// Polls `done` until it holds or [`WAIT_MS`] pass; returns whether it held.
pub(crate) fn wait_for(done: impl Fn() -> bool) -> bool {
    for _ in 0..WAIT_MS / POLL_MS {
        if done() {
            return true;
        }
        sleep_ms(POLL_MS);
    }
    done()
}

/// Runs the soft steps on the started adapter `context` (skipped when it did not start).
pub fn run(
    init: &DRIVER_INITIALIZATION_DATA,
    context: PVOID,
    started: bool,
    geometry: &crate::steps::Geometry,
) {
    if !started {
        record(
            "SoftEngine",
            Got::Blocked("adapter not started or its GpuMmu caps were not read"),
            format_args!(""),
        );
        return;
    }
    let mapped = crate::callbacks::MAP_MEMORY_CALLS.load(Ordering::Relaxed);
    record(
        "SoftEngine/Start",
        if check(
            mapped == 0,
            format_args!("no DxgkCbMapMemory for a device without a BAR (got {mapped})"),
        ) {
            Got::Done
        } else {
            Got::Failed
        },
        format_args!("started with an empty resource list (root-enumerated)"),
    );
    for (n, fence) in [(1, 77u32), (2, 78)] {
        preempt(init, context, n, fence);
    }
    let geo = crate::vidmm::Geometry {
        levels: geometry.levels,
        bits: geometry.bits,
        paging_table_segment: geometry.paging_table_segment,
    };
    let verified = crate::vidmm::run(init, context, &geo);
    // The one summary line CI checks (tools/wine/run.sh, .ci/run): bytes compared by the CPU
    // after the soft engine ran the paging buffer (0 when any soft paging step failed).
    if verified > 0 {
        say!(
            "soft rgpu: {} bytes verified (under Wine: rgpu.sys's soft engine thread ran FILL_VIRTUAL + TRANSFER_VIRTUAL from a paging buffer in the aperture, DMA_COMPLETED through SynchronizeExecution and the DPC, read back by the CPU)",
            verified
        );
    } else {
        say!("soft rgpu: 0 bytes verified (a SoftPaging step failed: see the STEP lines)");
    }
}

/// One fence-only request answered by the engine thread (see the module docs).
fn preempt(init: &DRIVER_INITIALIZATION_DATA, context: PVOID, n: u32, fence: u32) {
    let Some(f) = init.DxgkDdiPreemptCommand else {
        record(
            "SoftEngine/Preempt",
            Got::NotImplemented(0),
            format_args!(""),
        );
        return;
    };
    let seen = interrupt::notified_count();
    let dpcs = interrupt::DPCS_NOTIFIED.load(Ordering::Acquire);
    let args = DXGKARG_PREEMPTCOMMAND {
        PreemptionFenceId: fence,
        ..Default::default()
    };
    // SAFETY: rgpu's PreemptCommand on its started adapter with a valid argument block.
    let st = unsafe { f(context, &args) };
    let answered = st == 0
        && wait_for(|| {
            interrupt::notified_count() > seen
                && interrupt::DPCS_NOTIFIED.load(Ordering::Acquire) > dpcs
        });
    let got = interrupt::notified(seen);
    let ok = check(st == 0, format_args!("PreemptCommand status {:#010x}", st as u32))
        && check(
            answered,
            format_args!(
                "the engine thread answered within {} ms: notifications {} -> {}, DPCs notified {} -> {}",
                WAIT_MS,
                seen,
                interrupt::notified_count(),
                dpcs,
                interrupt::DPCS_NOTIFIED.load(Ordering::Acquire)
            ),
        )
        && check(
            got.is_some_and(|g| {
                g.kind == dxgk_sys::DXGK_INTERRUPT_DMA_PREEMPTED.0
                    && g.preemption_fence == fence
                    && g.fence == 0
            }),
            format_args!(
                "DMA_PREEMPTED(PreemptionFenceId {fence}, LastCompletedFenceId 0), got {got:?}"
            ),
        );
    record(
        if n == 1 {
            "SoftEngine/Preempt#1"
        } else {
            "SoftEngine/Preempt#2"
        },
        if ok { Got::Done } else { Got::Failed },
        format_args!(
            "fence {} answered by the engine thread: DMA_PREEMPTED inside SynchronizeExecution ({} so far), DPC queued {} / run {} / NotifyDpc {}",
            fence,
            interrupt::SYNCHRONIZED.load(Ordering::Relaxed),
            interrupt::DPCS_QUEUED.load(Ordering::Relaxed),
            interrupt::DPCS_RUN.load(Ordering::Relaxed),
            interrupt::DPCS_NOTIFIED.load(Ordering::Relaxed),
        ),
    );
}
