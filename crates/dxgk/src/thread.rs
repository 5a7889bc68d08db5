//! Owned system worker threads (`PsCreateSystemThread`) with a wake-up event and a stop request.
//!
//! A [`SystemThread`] owns a pool block with the state it shares with its body; dropping it
//! asks the body to stop, wakes it and waits for the thread object to be signalled before the
//! block is freed, so the body never sees freed state. Forgetting a `SystemThread`
//! (`mem::forget`) leaks the block and leaves the thread running: never unsound.
//!
//! The body is a plain function that gets a [`Worker`]: it reads the shared state, sleeps in
//! [`Worker::wait`] until [`SystemThread::wake`] or its poll interval, and returns when
//! [`Worker::should_stop`] says so. Returning from the start routine ends a system thread
//! (supported since Windows Vista; the sim and Wine do the same).

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

use dxgk_sys as sys;

use crate::irql::Passive;
use crate::pool::{Pool, PoolBox, PoolTag};
use crate::{NtError, NtResult};

/// What the thread and its owner share (in one non-paged pool block that never moves).
struct Shared<T> {
    /// Auto-reset (SynchronizationEvent): one wake-up per [`SystemThread::wake`] burst.
    wake: UnsafeCell<sys::KEVENT>,
    stop: AtomicBool,
    body: fn(&Worker<'_, T>),
    poll_100ns: i64,
    state: T,
}

// SAFETY: the KEVENT is only touched through Ke* routines, which synchronize internally; the
// rest is atomics and `T: Sync`.
unsafe impl<T: Sync> Sync for Shared<T> {}
// SAFETY: as above; `T: Send` moves with the block.
unsafe impl<T: Send> Send for Shared<T> {}

impl<T> Shared<T> {
    fn signal(&self) {
        // SAFETY: an initialized event in non-paged pool; IRQL ≤ DISPATCH_LEVEL (callers).
        unsafe { sys::KeSetEvent(self.wake.get(), 0, 0) };
    }
}

/// A running system thread and the state it shares with its body; joined on drop.
pub struct SystemThread<T: Send + Sync + 'static> {
    /// Dropped after the join (field order is irrelevant: `Drop::drop` joins first).
    shared: PoolBox<Shared<T>>,
    /// The referenced thread object (`ObReferenceObjectByHandle`), released after the join.
    thread: sys::PVOID,
}

// SAFETY: the thread object pointer is only waited on and dereferenced (any thread may); the
// shared block is Send + Sync for T: Send + Sync.
unsafe impl<T: Send + Sync + 'static> Send for SystemThread<T> {}
// SAFETY: `&SystemThread` only reads the shared state and signals the event.
unsafe impl<T: Send + Sync + 'static> Sync for SystemThread<T> {}

/// The body's view: the shared state, its wake-up event and the stop request.
pub struct Worker<'a, T> {
    shared: &'a Shared<T>,
}

impl<T> Worker<'_, T> {
    /// The state shared with the owner.
    pub fn state(&self) -> &T {
        &self.shared.state
    }

    /// True once the owner is stopping the thread: the body must return promptly.
    pub fn should_stop(&self) -> bool {
        self.shared.stop.load(Ordering::Acquire)
    }

    /// Sleeps until [`SystemThread::wake`] (true) or the poll interval passes (false).
    /// PASSIVE_LEVEL (the thread's own).
    pub fn wait(&self) -> bool {
        let mut timeout = sys::LARGE_INTEGER {
            QuadPart: -self.shared.poll_100ns,
        };
        // SAFETY: the initialized event of the live shared block; a relative timeout that lives
        // across the call; the thread runs at PASSIVE_LEVEL.
        let st = unsafe {
            sys::KeWaitForSingleObject(
                self.shared.wake.get().cast(),
                sys::Executive,
                sys::KernelMode,
                0,
                &mut timeout,
            )
        };
        st == sys::STATUS_SUCCESS
    }
}

unsafe extern "system" fn start<T>(context: sys::PVOID) {
    // SAFETY: `context` is the shared block of the SystemThread that created this thread; it is
    // freed only after this thread object is signalled, i.e. after this function returns.
    let shared = unsafe { &*context.cast::<Shared<T>>() };
    (shared.body)(&Worker { shared });
}

impl<T: Send + Sync + 'static> SystemThread<T> {
    /// Starts a system thread running `body` with `state`; it polls at least every `poll_ms`
    /// milliseconds (≥ 1). PASSIVE_LEVEL. On failure nothing is left allocated or running.
    pub fn spawn(
        pool: &Pool,
        tag: PoolTag,
        _passive: &Passive,
        state: T,
        poll_ms: u32,
        body: fn(&Worker<'_, T>),
    ) -> NtResult<Self> {
        let shared = PoolBox::try_new(
            pool,
            tag,
            Shared {
                wake: UnsafeCell::new(sys::KEVENT::default()),
                stop: AtomicBool::new(false),
                body,
                poll_100ns: i64::from(poll_ms.max(1)) * 10_000,
                state,
            },
        )?;
        // SAFETY: the event is in the new non-paged block, which does not move; PASSIVE_LEVEL.
        unsafe { sys::KeInitializeEvent(shared.wake.get(), sys::SynchronizationEvent, 0) };
        let context: *const Shared<T> = &*shared;
        let mut handle: sys::HANDLE = core::ptr::null_mut();
        // SAFETY: a valid start routine whose context outlives the thread (joined in Drop, or
        // never started on failure); NULL attributes, process and client id as drivers pass.
        let st = unsafe {
            sys::PsCreateSystemThread(
                &mut handle,
                sys::THREAD_ALL_ACCESS,
                core::ptr::null_mut(),
                core::ptr::null_mut(),
                core::ptr::null_mut(),
                Some(start::<T>),
                context.cast_mut().cast(),
            )
        };
        crate::status::to_result(st)?;
        let mut thread: sys::PVOID = core::ptr::null_mut();
        // SAFETY: the thread handle just returned; KernelMode access to our own handle.
        let st = unsafe {
            sys::ObReferenceObjectByHandle(
                handle,
                sys::THREAD_ALL_ACCESS,
                core::ptr::null_mut(),
                sys::KernelMode,
                &mut thread,
                core::ptr::null_mut(),
            )
        };
        // SAFETY: our handle, closed once; the thread keeps running.
        unsafe { sys::ZwClose(handle) };
        if st != sys::STATUS_SUCCESS || thread.is_null() {
            // The thread runs but cannot be joined: stop it and leave the block to it (a leak
            // is sound; freeing it under the running thread would not be).
            shared.stop.store(true, Ordering::Release);
            shared.signal();
            let _ = shared.into_raw();
            return Err(crate::status::to_result(st)
                .err()
                .unwrap_or(NtError::UNSUCCESSFUL));
        }
        Ok(Self { shared, thread })
    }

    /// The state shared with the body.
    pub fn state(&self) -> &T {
        &self.shared.state
    }

    /// Wakes the body from [`Worker::wait`]. IRQL ≤ DISPATCH_LEVEL.
    pub fn wake(&self) {
        self.shared.signal();
    }
}

impl<T: Send + Sync + 'static> SystemThread<T> {
    /// Asks the body to stop, wakes it and waits until the thread has terminated; through
    /// `&self`, so an owner reachable from the thread's own state can end it before taking
    /// exclusive access. Idempotent (a terminated thread object stays signalled). PASSIVE_LEVEL,
    /// never from the thread itself.
    pub fn halt(&self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.signal();
        // SAFETY: the referenced thread object; an infinite wait at PASSIVE_LEVEL for a thread
        // that returns once it sees the stop request.
        unsafe {
            sys::KeWaitForSingleObject(
                self.thread,
                sys::Executive,
                sys::KernelMode,
                0,
                core::ptr::null_mut(),
            )
        };
    }

    /// True once [`SystemThread::halt`] (or drop) asked the thread to stop.
    pub fn is_halted(&self) -> bool {
        self.shared.stop.load(Ordering::Acquire)
    }
}

impl<T: Send + Sync + 'static> Drop for SystemThread<T> {
    /// Stops and joins the thread. PASSIVE_LEVEL (it waits).
    fn drop(&mut self) {
        self.halt();
        // SAFETY: the reference taken in `spawn`, released once.
        unsafe { sys::ObfDereferenceObject(self.thread) };
        // `shared` is freed after this: the thread has terminated.
    }
}
