//! ===========================================================================================
//! WINE-ONLY WORKAROUND — TEST TOOLING, NEVER SHIPPED, NEVER IN RGPU.
//!
//! Wine 8.0's `IoGetDeviceObjectPointer` is a FIXME stub: for any name it returns a static fake
//! device whose driver has no dispatch routines and whose `StackSize` is 0x80 (-128 as CCHAR),
//! so the `IoBuildDeviceIoControlRequest` that rgpu's displib handshake sends next page-faults
//! (../shared/reference/wine.md, steps 2 and 4).
//!
//! rgpu must stay Windows-correct, so the fix lives here, in the fake port: at load we overwrite
//! the first 12 bytes of Wine's exported `IoGetDeviceObjectPointer` with
//! `48 B8 <imm64> FF E0` (`mov rax, imm64; jmp rax`) pointing at [`fake_get_device_object_pointer`],
//! which resolves `\Device\DxgKrnl` to our device (with a NULL file object, which displib
//! tolerates) and fails every other name with STATUS_OBJECT_NAME_NOT_FOUND. The page is made
//! writable with `ZwProtectVirtualMemory(NtCurrentProcess(), …, PAGE_EXECUTE_READWRITE)`.
//!
//! Guarded: the patch is applied only when ntoskrnl exports `wine_ntoskrnl_main_loop` (i.e.
//! under Wine); on Windows this module does nothing. Depends on Wine 8.0 internals (Debian 12's
//! `wine64` 8.0~repack); not checked against newer Wine. The patch is never undone: the port
//! is never unloaded, and winedevice exits with the test.
//! ===========================================================================================

use core::sync::atomic::{AtomicPtr, Ordering};

use dxgk_sys::{
    DEVICE_OBJECT, NTSTATUS, PVOID, STATUS_OBJECT_NAME_NOT_FOUND, STATUS_PROCEDURE_NOT_FOUND,
    STATUS_SUCCESS, ULONG, UNICODE_STRING,
};

use crate::kernel;

/// The device `\Device\DxgKrnl` resolves to.
static DXGKRNL_DEVICE: AtomicPtr<DEVICE_OBJECT> = AtomicPtr::new(core::ptr::null_mut());

fn system_routine(name: &mut [u16]) -> PVOID {
    let mut us = kernel::unicode(name);
    // SAFETY: a valid NUL-terminated UNICODE_STRING living for the call.
    unsafe { dxgk_sys::MmGetSystemRoutineAddress(&mut us) }
}

/// True when the kernel is Wine's (it exports `wine_ntoskrnl_main_loop`).
pub fn running_on_wine() -> bool {
    let mut name = wstr!("wine_ntoskrnl_main_loop");
    !system_routine(&mut name).is_null()
}

/// Patches Wine's `IoGetDeviceObjectPointer` so that `\Device\DxgKrnl` resolves to `device`.
pub fn install(device: *mut DEVICE_OBJECT) -> NTSTATUS {
    DXGKRNL_DEVICE.store(device, Ordering::SeqCst);
    if !running_on_wine() {
        say!("wine_hook: not running on Wine; IoGetDeviceObjectPointer left alone");
        return STATUS_SUCCESS;
    }
    let mut name = wstr!("IoGetDeviceObjectPointer");
    let target = system_routine(&mut name).cast::<u8>();
    if target.is_null() {
        return STATUS_PROCEDURE_NOT_FOUND;
    }
    let status = patch(
        target,
        fake_get_device_object_pointer as *const () as usize as u64,
    );
    if status < 0 {
        return status;
    }
    say!(
        "wine_hook: IoGetDeviceObjectPointer at {:p} now jumps to the port's resolver (Wine-only)",
        target
    );
    STATUS_SUCCESS
}

/// Writes `mov rax, hook; jmp rax` over the first 12 bytes of the function at `target`.
fn patch(target: *mut u8, hook: u64) -> NTSTATUS {
    let mut code = [0u8; 12];
    code[0] = 0x48; // mov rax, imm64
    code[1] = 0xB8;
    code[2..10].copy_from_slice(&hook.to_le_bytes());
    code[10] = 0xFF; // jmp rax
    code[11] = 0xE0;

    let mut base: PVOID = target.cast();
    let mut size: usize = code.len();
    let mut old: ULONG = 0;
    let current_process = usize::MAX as PVOID; // NtCurrentProcess()
                                               // SAFETY: changes the protection of the page(s) holding a Wine export in our own process.
    let status = unsafe {
        kernel::ZwProtectVirtualMemory(
            current_process,
            &mut base,
            &mut size,
            kernel::PAGE_EXECUTE_READWRITE,
            &mut old,
        )
    };
    if status < 0 {
        return status;
    }
    // SAFETY: the 12 bytes at `target` are now writable code of the Wine function we replace;
    // nothing else calls it while the port's DriverEntry runs (rgpu's DriverEntry is blocked in
    // ZwLoadDriver waiting for us, and the adapter thread does not exist yet).
    unsafe { core::ptr::copy_nonoverlapping(code.as_ptr(), target, code.len()) };
    let mut base: PVOID = target.cast();
    let mut size: usize = code.len();
    let mut ignored: ULONG = 0;
    // SAFETY: restores the original protection of the same range.
    unsafe {
        kernel::ZwProtectVirtualMemory(current_process, &mut base, &mut size, old, &mut ignored)
    };
    STATUS_SUCCESS
}

/// OPT-IN (`HarnessShimStall=1`, scenario `shim-stall`), OFF by default: Wine 8.0's
/// `hal.dll!KeStallExecutionProcessor` is an unimplemented stub (`__wine_stub`, aborts
/// winedevice). The default run must show that rgpu calls it (issue 8, item 2: nothing on these
/// paths may call an export Wine lacks); this shim only lets a developer see the later steps
/// meanwhile. It busy-waits on `KeQueryPerformanceCounter` (implemented in Wine's hal.dll).
pub fn install_stall_shim() -> NTSTATUS {
    if !running_on_wine() {
        return STATUS_SUCCESS;
    }
    let mut name = wstr!("KeStallExecutionProcessor");
    let target = system_routine(&mut name).cast::<u8>();
    if target.is_null() {
        return STATUS_PROCEDURE_NOT_FOUND;
    }
    let status = patch(target, stall_shim as *const () as usize as u64);
    if status >= 0 {
        say!(
            "wine_hook: SHIM hal.dll!KeStallExecutionProcessor at {:p} (opt-in, Wine-only)",
            target
        );
    }
    status
}

unsafe extern "system" fn stall_shim(microseconds: ULONG) {
    // A stall is where the driver gives the device time: advance the model.
    crate::device::tick();
    let mut freq = dxgk_sys::LARGE_INTEGER::default();
    // SAFETY: hal's performance counter; `freq` is a valid out-pointer.
    let start = unsafe { dxgk_sys::KeQueryPerformanceCounter(&mut freq) };
    // SAFETY: reading the QuadPart view of a LARGE_INTEGER.
    let start = unsafe { start.QuadPart };
    // SAFETY: as above.
    let freq = unsafe { freq.QuadPart };
    let ticks = i64::from(microseconds) * freq / 1_000_000;
    loop {
        // SAFETY: as above; NULL frequency pointer is allowed.
        let now = unsafe { dxgk_sys::KeQueryPerformanceCounter(core::ptr::null_mut()) };
        // SAFETY: reading the QuadPart view.
        if unsafe { now.QuadPart } - start >= ticks {
            break;
        }
        core::hint::spin_loop();
    }
}

/// Replacement for Wine's stub: `\Device\DxgKrnl` → our device, nothing else.
/// Replaces hal.dll!KeQueryPerformanceCounter (Wine-only) with a deterministic clock that also
/// advances the device model: a driver polling a register on the performance counter (as rgpu
/// does for reset and ring enable) then sees the device make progress, as real hardware would
/// between two polls — without a second thread racing rgpu's register writes. The clock runs at
/// 10 MHz and advances 1 µs per call, so timeouts expire after a bounded number of polls.
pub fn install_qpc_shim() -> NTSTATUS {
    if !running_on_wine() {
        return STATUS_SUCCESS;
    }
    let mut name = wstr!("KeQueryPerformanceCounter");
    let target = system_routine(&mut name).cast::<u8>();
    if target.is_null() {
        return STATUS_PROCEDURE_NOT_FOUND;
    }
    let status = patch(target, qpc_shim as *const () as usize as u64);
    if status >= 0 {
        say!(
            "wine_hook: hal.dll!KeQueryPerformanceCounter at {:p} now ticks the device model (Wine-only)",
            target
        );
    }
    status
}

static FAKE_CLOCK: core::sync::atomic::AtomicI64 = core::sync::atomic::AtomicI64::new(0);
const FAKE_CLOCK_HZ: i64 = 10_000_000;

unsafe extern "system" fn qpc_shim(
    frequency: *mut dxgk_sys::LARGE_INTEGER,
) -> dxgk_sys::LARGE_INTEGER {
    crate::device::tick();
    if !frequency.is_null() {
        let value = dxgk_sys::LARGE_INTEGER {
            QuadPart: FAKE_CLOCK_HZ,
        };
        // SAFETY: the caller passes a valid out-parameter or NULL (checked).
        unsafe { frequency.write(value) };
    }
    let now = FAKE_CLOCK.fetch_add(FAKE_CLOCK_HZ / 1_000_000, Ordering::SeqCst);
    dxgk_sys::LARGE_INTEGER { QuadPart: now }
}

unsafe extern "system" fn fake_get_device_object_pointer(
    object_name: *mut UNICODE_STRING,
    _desired_access: ULONG,
    file_object: *mut PVOID,
    device_object: *mut *mut DEVICE_OBJECT,
) -> NTSTATUS {
    // SAFETY: callers pass a valid UNICODE_STRING (the IoGetDeviceObjectPointer contract).
    let ours = unsafe { kernel::unicode_eq(object_name, "\\Device\\DxgKrnl") };
    let device = DXGKRNL_DEVICE.load(Ordering::SeqCst);
    if !ours || device.is_null() || file_object.is_null() || device_object.is_null() {
        say!("wine_hook: IoGetDeviceObjectPointer for another name: not found");
        return STATUS_OBJECT_NAME_NOT_FOUND;
    }
    // SAFETY: checked non-null; out-pointers per the contract.
    unsafe { *file_object = core::ptr::null_mut() };
    // SAFETY: as above.
    unsafe { *device_object = device };
    STATUS_SUCCESS
}
