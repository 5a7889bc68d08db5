//! The soft engine thread: a `SystemThread` woken by the doorbell that runs the model over the
//! adapter's memory with a bounded budget per lock hold and raises completion through
//! DxgkCbSynchronizeExecution → the adapter's own ISR logic (coskmd's pattern).

#![forbid(unsafe_code)]

use dxgk::irql::Passive;
use dxgk::pool::{Pool, PoolTag};
use dxgk::thread::{SystemThread, Worker};
use dxgk::NtResult;

use crate::ddi::AdapterContext;

/// Pool tag of the engine thread's shared block ("rgSE").
pub const ENGINE_TAG: PoolTag = PoolTag(u32::from_le_bytes(*b"rgSE"));
/// The thread's wait times out this often; a timeout does no work (only a wake does), it just
/// bounds how long a lost wake-up could go unnoticed by a stop request.
const POLL_MS: u32 = 1000;

/// The running engine thread of a soft adapter. Dropping it halts and joins the thread.
pub struct Engine {
    thread: SystemThread<AdapterContext>,
}

impl Engine {
    /// Starts the engine thread for the adapter `context` names. PASSIVE_LEVEL. The thread does
    /// nothing until [`Engine::wake`], so starting it while StartDevice still holds the adapter
    /// exclusively is sound.
    pub fn spawn(pool: &Pool, passive: &Passive, context: AdapterContext) -> NtResult<Self> {
        let thread = SystemThread::spawn(pool, ENGINE_TAG, passive, context, POLL_MS, body)?;
        Ok(Self { thread })
    }

    /// Wakes the engine (a doorbell). IRQL ≤ DISPATCH_LEVEL.
    pub fn wake(&self) {
        self.thread.wake();
    }

    /// Ends the thread and waits for it (idempotent). PASSIVE_LEVEL.
    pub fn halt(&self) {
        self.thread.halt();
    }

    /// True once halted.
    pub fn is_halted(&self) -> bool {
        self.thread.is_halted()
    }
}

/// The thread body: each wake runs the engine until the ring is idle (or a stop is asked).
fn body(w: &Worker<'_, AdapterContext>) {
    while !w.should_stop() {
        if !w.wait() || w.should_stop() {
            continue;
        }
        w.state().adapter().run_soft_engine(|| w.should_stop());
    }
}
