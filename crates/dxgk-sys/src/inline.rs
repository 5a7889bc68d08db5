//! Kernel "functions" that are inline code on x64 Windows, not exports.
//!
//! * IRQL: on Windows x64 `KeGetCurrentIrql` / `KeRaiseIrql` / `KeLowerIrql` read and write CR8.
//!   On the host they are routed to `dxgk-sim` (as `DxgkSimKeGetCurrentIrql` …) because the
//!   simulator must see every IRQL change to check callers.
//! * Register access (`READ_REGISTER_ULONG` / `WRITE_REGISTER_ULONG`) is a volatile access on
//!   Windows; on the host it is routed to `dxgk-sim` (`DxgkSimReadRegisterUlong` …), so that a
//!   device model sees every register access in program order, as hardware does (a doorbell or
//!   write-1-to-clear register cannot be modelled by plain memory).
//! * `KeInitializeSpinLock`, `MmGetMdlPfnArray`, `MmGetMdlByteCount` and
//!   `MmGetMdlVirtualAddress` are plain memory operations on every target.

use crate::{KIRQL, KSPIN_LOCK, MDL, PFN_NUMBER, PVOID, ULONG};

#[cfg(not(target_os = "windows"))]
unsafe extern "system" {
    fn DxgkSimKeGetCurrentIrql() -> KIRQL;
    fn DxgkSimKeRaiseIrql(NewIrql: KIRQL) -> KIRQL;
    fn DxgkSimKeLowerIrql(NewIrql: KIRQL);
    fn DxgkSimReadRegisterUlong(Register: *const ULONG) -> ULONG;
    fn DxgkSimWriteRegisterUlong(Register: *mut ULONG, Value: ULONG);
}

/// Current IRQL of this processor (thread, in the simulator).
#[inline]
pub fn KeGetCurrentIrql() -> KIRQL {
    #[cfg(target_os = "windows")]
    {
        let cr8: u64;
        // SAFETY: reading CR8 is allowed at CPL 0 (a kernel driver) and has no side effects.
        unsafe {
            core::arch::asm!("mov {}, cr8", out(reg) cr8, options(nomem, nostack, preserves_flags))
        };
        cr8 as KIRQL
    }
    #[cfg(not(target_os = "windows"))]
    {
        // SAFETY: defined by dxgk-sim; takes no arguments and only reads simulator state.
        unsafe { DxgkSimKeGetCurrentIrql() }
    }
}

/// Raises IRQL to `new_irql` (which must be ≥ the current IRQL) and returns the old one.
///
/// # Safety
/// The caller must lower back to the returned IRQL on the same processor, and `new_irql` must
/// not be below the current IRQL.
#[inline]
pub unsafe fn KeRaiseIrql(new_irql: KIRQL) -> KIRQL {
    #[cfg(target_os = "windows")]
    {
        let old = KeGetCurrentIrql();
        // SAFETY: the caller guarantees the raise is valid; CR8 writes are allowed at CPL 0.
        unsafe {
            core::arch::asm!("mov cr8, {}", in(reg) new_irql as u64, options(nomem, nostack, preserves_flags))
        };
        old
    }
    #[cfg(not(target_os = "windows"))]
    {
        // SAFETY: defined by dxgk-sim, which validates the transition.
        unsafe { DxgkSimKeRaiseIrql(new_irql) }
    }
}

/// Lowers IRQL to `new_irql`, undoing a [`KeRaiseIrql`].
///
/// # Safety
/// `new_irql` must be the value returned by the matching raise.
#[inline]
pub unsafe fn KeLowerIrql(new_irql: KIRQL) {
    #[cfg(target_os = "windows")]
    {
        // SAFETY: the caller guarantees this restores a previous IRQL; CR8 writes are allowed
        // at CPL 0.
        unsafe {
            core::arch::asm!("mov cr8, {}", in(reg) new_irql as u64, options(nomem, nostack, preserves_flags))
        };
    }
    #[cfg(not(target_os = "windows"))]
    {
        // SAFETY: defined by dxgk-sim, which validates the transition.
        unsafe { DxgkSimKeLowerIrql(new_irql) }
    }
}

/// `KeInitializeSpinLock` (inline on x64: the lock word is zeroed).
#[inline]
pub fn KeInitializeSpinLock(lock: &mut KSPIN_LOCK) {
    *lock = 0;
}

/// `MmGetMdlPfnArray`: the PFN array that follows the MDL header.
///
/// # Safety
/// `mdl` must point to a valid MDL that was allocated with room for its PFN array.
#[inline]
pub unsafe fn MmGetMdlPfnArray(mdl: *mut MDL) -> *mut PFN_NUMBER {
    // SAFETY: the PFN array starts right after the fixed MDL header (caller guarantees `mdl`
    // is a full MDL allocation), so one-past-the-header is in bounds.
    unsafe { mdl.add(1) }.cast::<PFN_NUMBER>()
}

/// `MmGetMdlByteCount`.
///
/// # Safety
/// `mdl` must point to a valid MDL.
#[inline]
pub unsafe fn MmGetMdlByteCount(mdl: *const MDL) -> ULONG {
    // SAFETY: the caller guarantees `mdl` is valid for reads.
    unsafe { (*mdl).ByteCount }
}

/// `MmGetMdlByteOffset`.
///
/// # Safety
/// `mdl` must point to a valid MDL.
#[inline]
pub unsafe fn MmGetMdlByteOffset(mdl: *const MDL) -> ULONG {
    // SAFETY: the caller guarantees `mdl` is valid for reads.
    unsafe { (*mdl).ByteOffset }
}

/// `MmGetMdlVirtualAddress`: `StartVa + ByteOffset` (not necessarily mapped).
///
/// # Safety
/// `mdl` must point to a valid MDL.
#[inline]
pub unsafe fn MmGetMdlVirtualAddress(mdl: *const MDL) -> PVOID {
    // SAFETY: the caller guarantees `mdl` is valid for reads.
    let start = unsafe { (*mdl).StartVa };
    // SAFETY: as above.
    let offset = unsafe { (*mdl).ByteOffset };
    start.cast::<u8>().wrapping_add(offset as usize).cast()
}

/// `MmGetSystemAddressForMdlSafe`: the MDL's system VA, mapping it (non-executable) when it is
/// not mapped yet. NULL on failure. IRQL ≤ DISPATCH_LEVEL.
///
/// # Safety
/// `mdl` must point to a valid MDL describing locked pages.
#[inline]
pub unsafe fn MmGetSystemAddressForMdlSafe(mdl: *mut MDL, priority: ULONG) -> PVOID {
    // SAFETY: the caller guarantees `mdl` is valid for reads.
    let flags = unsafe { (*mdl).MdlFlags };
    if flags & (crate::MDL_MAPPED_TO_SYSTEM_VA | crate::MDL_SOURCE_IS_NONPAGED_POOL) != 0 {
        // SAFETY: as above.
        return unsafe { (*mdl).MappedSystemVa };
    }
    // SAFETY: the caller guarantees `mdl` describes locked pages; KernelMode mapping.
    unsafe {
        crate::MmMapLockedPagesSpecifyCache(
            mdl,
            crate::KernelMode,
            crate::MmCached,
            core::ptr::null_mut(),
            0,
            priority | crate::MdlMappingNoExecute,
        )
    }
}

/// `ADDRESS_AND_SIZE_TO_SPAN_PAGES(va, size)` for 4 KiB pages.
#[inline]
pub const fn ADDRESS_AND_SIZE_TO_SPAN_PAGES(va: usize, size: usize) -> usize {
    ((va & (crate::PAGE_SIZE_USIZE - 1)) + size).div_ceil(crate::PAGE_SIZE_USIZE)
}

/// `READ_REGISTER_ULONG`: a volatile 32-bit MMIO read.
///
/// # Safety
/// `register` must be a mapped, 4-byte aligned device register (or memory standing in for one).
#[inline]
pub unsafe fn READ_REGISTER_ULONG(register: *const ULONG) -> ULONG {
    #[cfg(target_os = "windows")]
    {
        // SAFETY: the caller guarantees `register` is a valid, aligned MMIO location.
        unsafe { core::ptr::read_volatile(register) }
    }
    #[cfg(not(target_os = "windows"))]
    {
        // SAFETY: defined by dxgk-sim; the caller guarantees `register` is valid.
        unsafe { DxgkSimReadRegisterUlong(register) }
    }
}

/// `WRITE_REGISTER_ULONG`: a volatile 32-bit MMIO write, ordered after earlier memory writes
/// (the device may read memory the driver just wrote, e.g. a ring entry before a doorbell).
///
/// # Safety
/// `register` must be a mapped, 4-byte aligned device register (or memory standing in for one).
#[inline]
pub unsafe fn WRITE_REGISTER_ULONG(register: *mut ULONG, value: ULONG) {
    core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
    #[cfg(target_os = "windows")]
    {
        // SAFETY: the caller guarantees `register` is a valid, aligned MMIO location.
        unsafe { core::ptr::write_volatile(register, value) }
    }
    #[cfg(not(target_os = "windows"))]
    {
        // SAFETY: defined by dxgk-sim; the caller guarantees `register` is valid.
        unsafe { DxgkSimWriteRegisterUlong(register, value) }
    }
}
