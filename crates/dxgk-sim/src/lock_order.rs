//! The order in which the simulator takes its locks — the one place it is written down — and
//! `RankedMutex`, the mutex every simulator lock is, which checks that order in debug builds.
//!
//! # The order
//!
//! A thread may take a lock only while every lock it already holds has a *lower* rank. Locks of
//! the same rank (the per-adapter ones) are never held two at a time.
//!
//! | rank | lock                 | field                              | held across                                  |
//! |-----:|----------------------|------------------------------------|----------------------------------------------|
//! |   10 | `interrupt`          | `Adapter::interrupt_lock`          | the driver's ISR and SynchronizeExecution routine (which may touch registers, notify, queue DPCs) |
//! |   20 | `device`             | `Adapter::device`                  | the device model's `sync` and register accesses (which do DMA and record trace events) |
//! |   30 | `port`               | `MachineState::port`               | Dxgkrnl bookkeeping only                     |
//! |   40 | `kernel`             | `MachineState::kernel` (+ `wake`)  | dispatcher-object updates and waits          |
//! |   45 | `dxgk memory`        | `MachineState::dxgk_memory`        | a memory callback (which then takes `mem`)   |
//! |   50 | `mem`                | `MachineState::mem`                | Mm / IOMMU bookkeeping and device copies     |
//! |   60 | `pool`               | `MachineState::pool`               | pool bookkeeping                             |
//! |   70 | `faults`             | `MachineState::faults`             | injection bookkeeping                        |
//! |   80 | `calls`              | `MachineState::calls`              | one counter update                           |
//! |   90 | `trace origin`       | `TraceState::origin`               | one read or the first write                  |
//! |  100 | `trace events`       | `TraceState::events`               | one push or a copy                           |
//! |  110 | `findings`           | `MachineState::findings`           | one push or a copy                           |
//! |  120 | `iommu faults`       | `MachineState::iommu_faults`       | one push or a copy                           |
//! |  130 | `debug`              | `MachineState::debug`              | one push or a read                           |
//!
//! The two outermost locks are the ones held while code the simulator does not control runs
//! (the driver's interrupt-synchronized routines, the device model); everything below them is a
//! leaf taken for bookkeeping, and the recorders (trace, findings, faults, debug) are innermost
//! so that any layer may report while holding its own state.
//!
//! # The check
//!
//! In debug builds (`cfg(debug_assertions)`, so every `cargo test`) each thread keeps the ranks
//! it holds; taking a lock whose rank is not above all of them panics with a message naming
//! both locks ("lock order violation: ..."), before blocking — so an inversion shows up as a
//! test failure on the first run that takes the two locks in the wrong order, not as a rare
//! deadlock. Release builds keep nothing: a `RankedMutex` is then a `Mutex` and its rank.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// A lock's place in the simulator's lock order (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub(crate) enum LockRank {
    Interrupt = 10,
    Device = 20,
    Port = 30,
    Kernel = 40,
    DxgkMemory = 45,
    Mem = 50,
    Pool = 60,
    Faults = 70,
    Calls = 80,
    TraceOrigin = 90,
    TraceEvents = 100,
    Findings = 110,
    IommuFaults = 120,
    Debug = 130,
}

impl LockRank {
    /// The lock's name in the table above (only the debug-build checker reports it).
    #[cfg_attr(not(debug_assertions), allow(dead_code))]
    pub(crate) fn name(self) -> &'static str {
        match self {
            LockRank::Interrupt => "interrupt",
            LockRank::Device => "device",
            LockRank::Port => "port",
            LockRank::Kernel => "kernel",
            LockRank::DxgkMemory => "dxgk memory",
            LockRank::Mem => "mem",
            LockRank::Pool => "pool",
            LockRank::Faults => "faults",
            LockRank::Calls => "calls",
            LockRank::TraceOrigin => "trace origin",
            LockRank::TraceEvents => "trace events",
            LockRank::Findings => "findings",
            LockRank::IommuFaults => "iommu faults",
            LockRank::Debug => "debug",
        }
    }
}

/// A mutex with a [`LockRank`]. Poisoning is ignored: a panicking test thread must not hide
/// the state (findings above all) of the others.
pub(crate) struct RankedMutex<T: ?Sized> {
    rank: LockRank,
    inner: Mutex<T>,
}

impl<T> RankedMutex<T> {
    pub(crate) const fn new(rank: LockRank, value: T) -> Self {
        Self {
            rank,
            inner: Mutex::new(value),
        }
    }
}

impl<T: ?Sized> RankedMutex<T> {
    /// Locks, after checking (debug builds) that the calling thread holds only lower ranks.
    pub(crate) fn lock(&self) -> RankedGuard<'_, T> {
        #[cfg(debug_assertions)]
        let held = held::acquire(self.rank);
        let guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        RankedGuard {
            guard,
            #[cfg(debug_assertions)]
            _held: held,
        }
    }

    /// This lock's rank.
    #[allow(dead_code)]
    pub(crate) fn rank(&self) -> LockRank {
        self.rank
    }
}

/// A held [`RankedMutex`]. Dropping it unlocks, then forgets the rank.
pub(crate) struct RankedGuard<'a, T: ?Sized> {
    guard: MutexGuard<'a, T>,
    #[cfg(debug_assertions)]
    _held: held::Held,
}

impl<'a, T> RankedGuard<'a, T> {
    /// [`Condvar::wait_timeout`] on this guard. The rank stays recorded while the thread waits:
    /// it takes no other lock meanwhile and holds the lock again when this returns.
    pub(crate) fn wait_timeout(self, cv: &Condvar, dur: Duration) -> Self {
        let RankedGuard {
            guard,
            #[cfg(debug_assertions)]
            _held,
        } = self;
        let guard = cv
            .wait_timeout(guard, dur)
            .unwrap_or_else(|e| e.into_inner())
            .0;
        RankedGuard {
            guard,
            #[cfg(debug_assertions)]
            _held,
        }
    }
}

impl<T: ?Sized> std::ops::Deref for RankedGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T: ?Sized> std::ops::DerefMut for RankedGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

#[cfg(debug_assertions)]
mod held {
    use std::cell::RefCell;

    use super::LockRank;

    thread_local! {
        /// Ranks this thread holds, in acquisition order.
        static HELD: RefCell<Vec<LockRank>> = const { RefCell::new(Vec::new()) };
    }

    /// Proof that a rank is recorded as held; forgets it when dropped.
    pub(super) struct Held(LockRank);

    /// Records `rank` as held, or panics if a lock of the same or a higher rank is held.
    pub(super) fn acquire(rank: LockRank) -> Held {
        let worst = HELD
            .try_with(|h| {
                let worst = h.borrow().iter().copied().max();
                if worst.is_none_or(|w| w < rank) {
                    h.borrow_mut().push(rank);
                }
                worst
            })
            .ok()
            .flatten();
        if let Some(w) = worst.filter(|&w| w >= rank) {
            panic!(
                "dxgk-sim lock order violation: taking `{}` (rank {}) while holding `{}` (rank {}); \
                 see dxgk_sim::lock_order",
                rank.name(),
                rank as u8,
                w.name(),
                w as u8
            );
        }
        Held(rank)
    }

    impl Drop for Held {
        fn drop(&mut self) {
            // Guards may be dropped in any order: forget the latest record of this rank.
            let _ = HELD.try_with(|h| {
                let mut h = h.borrow_mut();
                if let Some(i) = h.iter().rposition(|&r| r == self.0) {
                    h.remove(i);
                }
            });
        }
    }

    /// Ranks the calling thread holds now (for tests).
    #[cfg(test)]
    pub(super) fn held() -> Vec<LockRank> {
        HELD.with(|h| h.borrow().clone())
    }
}

#[cfg(all(test, debug_assertions))]
mod tests {
    use super::*;

    #[test]
    fn locks_taken_in_order_are_accepted_and_released_in_any_order() {
        let port = RankedMutex::new(LockRank::Port, 1);
        let mem = RankedMutex::new(LockRank::Mem, 2);
        let findings = RankedMutex::new(LockRank::Findings, 3);
        let p = port.lock();
        let m = mem.lock();
        let f = findings.lock();
        assert_eq!(*p + *m + *f, 6);
        assert_eq!(
            held::held(),
            [LockRank::Port, LockRank::Mem, LockRank::Findings]
        );
        drop(m); // not LIFO
        assert_eq!(held::held(), [LockRank::Port, LockRank::Findings]);
        drop(p);
        drop(f);
        assert!(held::held().is_empty());
        // Retaking after release is fine, in the other order too.
        drop(mem.lock());
        drop(port.lock());
    }

    #[test]
    #[should_panic(
        expected = "lock order violation: taking `port` (rank 30) while holding `mem` (rank 50)"
    )]
    fn a_lock_taken_out_of_order_panics_naming_both() {
        let port = RankedMutex::new(LockRank::Port, ());
        let mem = RankedMutex::new(LockRank::Mem, ());
        let _m = mem.lock();
        let _p = port.lock();
    }

    #[test]
    fn two_locks_of_one_rank_are_out_of_order() {
        let a = RankedMutex::new(LockRank::Device, ());
        let b = RankedMutex::new(LockRank::Device, ());
        let _a = a.lock();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(b.lock())));
        let msg = r.expect_err("second device lock accepted");
        let msg = msg
            .downcast_ref::<String>()
            .expect("panic message is a String");
        assert!(
            msg.contains("taking `device` (rank 20) while holding `device` (rank 20)"),
            "{msg}"
        );
        // The refused lock was not recorded, and the lock itself was never taken.
        assert_eq!(held::held(), [LockRank::Device]);
        assert!(b.inner.try_lock().is_ok());
    }

    #[test]
    fn a_wait_keeps_the_rank_and_the_lock() {
        let kernel = RankedMutex::new(LockRank::Kernel, 7);
        let cv = Condvar::new();
        let g = kernel.lock();
        let g = g.wait_timeout(&cv, Duration::from_millis(1));
        assert_eq!(*g, 7);
        assert_eq!(held::held(), [LockRank::Kernel]);
        drop(g);
        assert!(held::held().is_empty());
    }
}
