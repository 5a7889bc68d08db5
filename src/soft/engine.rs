//! The soft engine thread: a `SystemThread` woken by the doorbell that runs the model over the
//! adapter's memory with a bounded budget per lock hold and raises completion through
//! DxgkCbSynchronizeExecution → the adapter's own ISR logic (coskmd's pattern).

#![forbid(unsafe_code)]

use dxgk::irql::Passive;
use dxgk::pool::{Pool, PoolTag};
use dxgk::sync::SpinLock;
use dxgk::thread::{SystemThread, Worker};
use dxgk::NtResult;

use crate::ddi::AdapterContext;

/// Pool tag of the engine thread's shared block ("rgSE").
pub const ENGINE_TAG: PoolTag = PoolTag(u32::from_le_bytes(*b"rgSE"));
/// The thread's wait times out this often; a timeout does no work (only a wake does), it just
/// bounds how long a lost wake-up could go unnoticed by a stop request.
const POLL_MS: u32 = 1000;

/// The engine thread of a soft adapter: ended on power-down and ResetFromTimeout, started
/// again at power-up and RestartFromTimeout. Dropping it halts and joins the thread.
pub struct Engine {
    /// The running thread (None while ended). Taken out under the lock and joined outside it.
    thread: SpinLock<Option<SystemThread<AdapterContext>>>,
    /// What a new thread reaches the adapter through.
    context: AdapterContext,
}

impl Engine {
    /// Starts the engine thread for the adapter `context` names. PASSIVE_LEVEL. The thread does
    /// nothing until [`Engine::wake`], so starting it while StartDevice still holds the adapter
    /// exclusively is sound.
    pub fn spawn(pool: &Pool, passive: &Passive, context: AdapterContext) -> NtResult<Self> {
        let thread = spawn_thread(pool, passive, &context)?;
        Ok(Self {
            thread: SpinLock::new(Some(thread)),
            context,
        })
    }

    /// Wakes the engine (a doorbell); nothing while it is ended. IRQL ≤ DISPATCH_LEVEL.
    pub fn wake(&self) {
        if let Some(t) = self.thread.lock().as_ref() {
            t.wake();
        }
    }

    /// Ends the thread and waits for it (idempotent). PASSIVE_LEVEL.
    pub fn halt(&self) {
        let thread = self.thread.lock().take();
        // Joined outside the lock (a wait at PASSIVE_LEVEL).
        drop(thread);
    }

    /// Starts a new thread if the engine is ended (no-op while it runs). PASSIVE_LEVEL.
    pub fn resume(&self, pool: &Pool, passive: &Passive) -> NtResult<()> {
        if self.thread.lock().is_some() {
            return Ok(());
        }
        let thread = spawn_thread(pool, passive, &self.context)?;
        let mut slot = self.thread.lock();
        if slot.is_none() {
            *slot = Some(thread);
            return Ok(());
        }
        drop(slot);
        // Another resume won the race: this thread is not needed (joined here).
        drop(thread);
        Ok(())
    }

    /// True while no thread runs.
    pub fn is_halted(&self) -> bool {
        self.thread.lock().is_none()
    }
}

fn spawn_thread(
    pool: &Pool,
    passive: &Passive,
    context: &AdapterContext,
) -> NtResult<SystemThread<AdapterContext>> {
    SystemThread::spawn(pool, ENGINE_TAG, passive, context.again(), POLL_MS, body)
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
