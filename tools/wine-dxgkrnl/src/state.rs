//! Harness-global state. The harness is sequential by construction (DriverEntry → IOCTL →
//! DpiInitialize on the loading thread, then one adapter thread, then DriverUnload after that
//! thread signalled completion), so plain cells are enough; every access is short and never
//! spans a call into rgpu (whose callbacks may touch the same state).

use core::cell::UnsafeCell;

/// A `static` cell for harness state.
pub struct Global<T>(UnsafeCell<T>);

// SAFETY: accesses are serialized by the harness flow described in the module docs.
unsafe impl<T> Sync for Global<T> {}

impl<T> Global<T> {
    pub const fn new(v: T) -> Self {
        Self(UnsafeCell::new(v))
    }

    /// # Safety
    /// No other reference to the contents may be live, and the returned one must not be held
    /// across a call into rgpu.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn get(&self) -> &mut T {
        // SAFETY: exclusivity is the caller's promise.
        unsafe { &mut *self.0.get() }
    }
}
