//! `MmGetSystemRoutineAddress`: run-time lookup of optional exports.

use dxgk_sys::{PVOID, UNICODE_STRING};

use crate::machine::current;
use crate::ntoskrnl::irql::require_irql_at_most;
use crate::verifier::{Finding, Rule};

/// Reads a UNICODE_STRING (Length in bytes, not necessarily NUL-terminated).
///
/// # Safety
/// `s` must be null or point to a valid UNICODE_STRING whose buffer holds `Length` bytes.
pub(crate) unsafe fn read_unicode(s: *const UNICODE_STRING) -> Option<String> {
    // SAFETY: the caller guarantees `s` is null or valid.
    let s = unsafe { s.as_ref() }?;
    if s.Buffer.is_null() || s.Length % 2 != 0 || s.Length > s.MaximumLength {
        return None;
    }
    // SAFETY: the caller guarantees `Buffer` holds `Length` bytes.
    let chars = unsafe { std::slice::from_raw_parts(s.Buffer, usize::from(s.Length) / 2) };
    Some(String::from_utf16_lossy(chars))
}

/// `MmGetSystemRoutineAddress`. PASSIVE_LEVEL. Knows the optional exports a machine may lack.
#[no_mangle]
pub extern "system" fn MmGetSystemRoutineAddress(name: *mut UNICODE_STRING) -> PVOID {
    const CALL: &str = "MmGetSystemRoutineAddress";
    if !require_irql_at_most(CALL, dxgk_sys::PASSIVE_LEVEL) {
        return std::ptr::null_mut();
    }
    let machine = current();
    // SAFETY: the driver passes a UNICODE_STRING per the contract; we validate its fields.
    let Some(name) = (unsafe { read_unicode(name) }) else {
        machine.report(Finding::here(
            Rule::InvalidArgument,
            CALL,
            "malformed UNICODE_STRING",
        ));
        return std::ptr::null_mut();
    };
    match name.as_str() {
        "ExAllocatePool2" if machine.config.has_pool2 => {
            crate::ntoskrnl::pool::ExAllocatePool2 as *const () as PVOID
        }
        _ => std::ptr::null_mut(),
    }
}
