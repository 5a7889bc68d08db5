//! IRQL as a type: a [`Passive`] token proves the caller runs at PASSIVE_LEVEL, and every
//! PASSIVE-only callback wrapper takes one (cf. Rust for Linux's context tokens).

use core::marker::PhantomData;

use crate::{NtError, NtResult};

/// Proof that the current thread runs at PASSIVE_LEVEL.
///
/// # Invariants
/// Created only after observing IRQL == PASSIVE_LEVEL; `!Send` so it cannot move to a thread
/// (or DPC) where that is not true. Code holding it must not raise IRQL while using it.
#[derive(Debug)]
pub struct Passive {
    _not_send: PhantomData<*const ()>,
}

impl Passive {
    /// Checks the current IRQL. Fails with STATUS_INVALID_DEVICE_STATE above PASSIVE_LEVEL.
    pub fn check() -> NtResult<Self> {
        if dxgk_sys::KeGetCurrentIrql() == dxgk_sys::PASSIVE_LEVEL {
            // INVARIANT: IRQL was just observed to be PASSIVE_LEVEL.
            Ok(Self {
                _not_send: PhantomData,
            })
        } else {
            Err(NtError::INVALID_DEVICE_STATE)
        }
    }
}
