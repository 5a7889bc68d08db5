//! Time for drivers that must also run under Wine: `KeQueryPerformanceCounter` (hal.dll) only.
//!
//! `KeStallExecutionProcessor` is deliberately not used: Wine 8.0 exports it as an
//! unimplemented stub that aborts the process (../shared/reference/wine.md), and a bounded
//! poll on the performance counter is what a register wait needs anyway.

/// Current performance-counter value and its frequency (ticks per second). Any IRQL.
pub fn performance_counter() -> (i64, i64) {
    let mut frequency = dxgk_sys::LARGE_INTEGER { QuadPart: 0 };
    // SAFETY: valid out-parameter; callable at any IRQL.
    let now = unsafe { dxgk_sys::KeQueryPerformanceCounter(&mut frequency) };
    // SAFETY: LARGE_INTEGER is plain data; QuadPart covers it.
    let now = unsafe { now.QuadPart };
    // SAFETY: as above.
    let frequency = unsafe { frequency.QuadPart };
    (now, frequency)
}

/// Calls `done` until it returns true or `timeout_us` microseconds pass; returns whether it
/// succeeded. `done` is always called at least once, and at most `max_polls` times (so a
/// counter that does not advance cannot hang the caller). Busy-waits: keep timeouts short.
pub fn poll_until(timeout_us: u64, max_polls: u32, mut done: impl FnMut() -> bool) -> bool {
    let (start, frequency) = performance_counter();
    let limit = if frequency > 0 {
        (timeout_us as i128 * frequency as i128 / 1_000_000) as i64
    } else {
        0
    };
    for _ in 0..max_polls.max(1) {
        if done() {
            return true;
        }
        let (now, _) = performance_counter();
        if now.wrapping_sub(start) > limit {
            return done();
        }
        core::hint::spin_loop();
    }
    false
}
