//! [`SpinLock`]: data guarded by a KSPIN_LOCK, usable at IRQL ≤ DISPATCH_LEVEL.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};

use dxgk_sys::{KIRQL, KSPIN_LOCK};

/// A `T` guarded by a kernel spin lock. Locking raises to DISPATCH_LEVEL until the guard drops:
/// code holding the guard must not wait, allocate paged memory or call PASSIVE-only routines.
///
/// # Invariants
/// `data` is only accessed through a [`SpinLockGuard`], which exists only while `lock` is held.
pub struct SpinLock<T> {
    lock: UnsafeCell<KSPIN_LOCK>,
    data: UnsafeCell<T>,
}

// SAFETY: access to `data` is serialized by the spin lock (see the invariant).
unsafe impl<T: Send> Sync for SpinLock<T> {}
// SAFETY: moving the lock moves the data it owns.
unsafe impl<T: Send> Send for SpinLock<T> {}

impl<T> SpinLock<T> {
    /// An unlocked lock around `value` (`KeInitializeSpinLock`).
    pub const fn new(value: T) -> Self {
        Self {
            lock: UnsafeCell::new(0),
            data: UnsafeCell::new(value),
        }
    }

    /// Initializes a lock in `slot` around a value `init` builds in place (given the value's
    /// uninitialized slot, it must return that same slot initialized, as
    /// [`crate::pool::PoolBox::try_new_in_place`] requires). Returns the lock, or `init`'s
    /// error (STATUS_INVALID_PARAMETER if it returned some other `T`); `slot` is then left
    /// uninitialized.
    pub fn init_in_place(
        slot: &mut core::mem::MaybeUninit<Self>,
        init: impl FnOnce(&mut core::mem::MaybeUninit<T>) -> crate::NtResult<&mut T>,
    ) -> crate::NtResult<&mut Self> {
        let p = slot.as_mut_ptr();
        // Field addresses only (no reference to uninitialized memory).
        let lock = p
            .wrapping_byte_add(core::mem::offset_of!(Self, lock))
            .cast::<UnsafeCell<KSPIN_LOCK>>();
        // UnsafeCell<T> is repr(transparent) over T, so its address is the T's.
        let data = p
            .wrapping_byte_add(core::mem::offset_of!(Self, data))
            .cast::<core::mem::MaybeUninit<T>>();
        // SAFETY: `data` points inside `slot`, which we borrow exclusively, aligned for T.
        let value = unsafe { &mut *data };
        let done = init(value).map(|t| core::ptr::eq(t, data.cast::<T>()));
        if done != Ok(true) {
            return Err(done.err().unwrap_or(crate::NtError::INVALID_PARAMETER));
        }
        // SAFETY: `lock` points inside `slot`, aligned; KeInitializeSpinLock's value is 0.
        unsafe { lock.write(UnsafeCell::new(0)) };
        // SAFETY: both fields are initialized now.
        Ok(unsafe { slot.assume_init_mut() })
    }

    /// Acquires the lock, raising to DISPATCH_LEVEL.
    pub fn lock(&self) -> SpinLockGuard<'_, T> {
        // SAFETY: `lock` is an initialized KSPIN_LOCK in memory that outlives the guard.
        let old_irql = unsafe { dxgk_sys::KeAcquireSpinLockRaiseToDpc(self.lock.get()) };
        // INVARIANT: the lock is held until the guard drops.
        SpinLockGuard {
            owner: self,
            old_irql,
        }
    }

    /// Exclusive access without locking (the `&mut` proves no one else can lock).
    pub fn get_mut(&mut self) -> &mut T {
        self.data.get_mut()
    }
}

/// Holds a [`SpinLock`]; releases it (and restores IRQL) on drop.
pub struct SpinLockGuard<'a, T> {
    owner: &'a SpinLock<T>,
    old_irql: KIRQL,
}

impl<T> Deref for SpinLockGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the lock is held for the guard's lifetime (invariant).
        unsafe { &*self.owner.data.get() }
    }
}

impl<T> DerefMut for SpinLockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the lock is held for the guard's lifetime, and `&mut self` is unique.
        unsafe { &mut *self.owner.data.get() }
    }
}

impl<T> Drop for SpinLockGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: this guard acquired the lock with KeAcquireSpinLockRaiseToDpc.
        unsafe { dxgk_sys::KeReleaseSpinLock(self.owner.lock.get(), self.old_irql) }
    }
}
