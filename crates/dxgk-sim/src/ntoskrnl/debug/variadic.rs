//! `DbgPrintEx` in Rust, for Miri only (see the parent module): Miri then checks every
//! argument a caller passes against the conversion that reads it.

use core::ffi::{c_char, c_void, CStr, VaList};

use super::printf::{format, Arg, Args};

/// Longest text delivered (bytes): the C shim's 1024-byte buffer minus its NUL.
const MAX_TEXT: usize = 1023;

/// Reads the arguments of a C-variadic call in the order the format asks for them.
struct VaArgs<'a, 'f>(&'a mut VaList<'f>);

impl Args for VaArgs<'_, '_> {
    fn next(&mut self, arg: Arg) -> u64 {
        // The printf contract: the caller of `DbgPrintEx` passed one argument of the C type the
        // conversion names. Miri reports a mismatch.
        match arg {
            // SAFETY: as above (an `int`).
            Arg::Int => i64::from(unsafe { self.0.next_arg::<i32>() }) as u64,
            // SAFETY: as above (an `unsigned int`).
            Arg::Unsigned => u64::from(unsafe { self.0.next_arg::<u32>() }),
            // SAFETY: as above (a signed 64-bit integer).
            Arg::Long => (unsafe { self.0.next_arg::<i64>() }) as u64,
            // SAFETY: as above (an unsigned 64-bit integer).
            Arg::UnsignedLong => unsafe { self.0.next_arg::<u64>() },
            // SAFETY: as above (a pointer).
            Arg::Pointer => unsafe { self.0.next_arg::<*const c_void>() }.addr() as u64,
        }
    }

    fn next_str(&mut self) -> Option<&[u8]> {
        // SAFETY: `%s` takes a `const char *`, per the printf contract.
        let p = unsafe { self.0.next_arg::<*const c_char>() };
        if p.is_null() {
            return None;
        }
        // SAFETY: a non-null `%s` argument is a NUL-terminated string that lives for the call.
        Some(unsafe { CStr::from_ptr(p) }.to_bytes())
    }
}

/// `DbgPrintEx` (C-variadic, `cdecl`): formats like the C shim and delivers the text.
///
/// # Safety
/// `format` is a NUL-terminated printf format whose conversions match the arguments.
#[no_mangle]
pub unsafe extern "C" fn DbgPrintEx(
    component: u32,
    level: u32,
    format_string: *const c_char,
    mut args: ...
) -> u32 {
    // SAFETY: the caller guarantees a NUL-terminated format.
    let fmt = unsafe { CStr::from_ptr(format_string) };
    let text = format(fmt.to_bytes(), &mut VaArgs(&mut args), MAX_TEXT);
    super::deliver(component, level, &text);
    0
}
