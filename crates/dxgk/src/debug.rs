//! Debug print: `core::fmt` into a bounded stack buffer, then one `DbgPrintEx` call.
//!
//! Formatting happens in Rust so that no caller-controlled `%` ever reaches the kernel's
//! printf (the format string is always `"%s"`). Messages longer than [`MAX_MESSAGE`] bytes are
//! truncated and end in `...`. Usable at any IRQL ≤ DIRQL (no allocation, no waits).

use core::fmt::{self, Write};

/// Longest line (bytes, newline included, NUL excluded) printed by [`print`].
pub const MAX_MESSAGE: usize = 255;

/// A `DbgPrintEx` severity level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Error,
    Warning,
    Trace,
    Info,
}

impl Level {
    const fn raw(self) -> u32 {
        match self {
            Level::Error => dxgk_sys::DPFLTR_ERROR_LEVEL,
            Level::Warning => dxgk_sys::DPFLTR_WARNING_LEVEL,
            Level::Trace => dxgk_sys::DPFLTR_TRACE_LEVEL,
            Level::Info => dxgk_sys::DPFLTR_INFO_LEVEL,
        }
    }
}

/// Text bytes before the newline.
const TEXT_CAPACITY: usize = MAX_MESSAGE - 1;

struct Buffer {
    bytes: [u8; MAX_MESSAGE + 1],
    len: usize,
    truncated: bool,
}

impl Write for Buffer {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len == TEXT_CAPACITY {
                self.truncated = true;
                return Ok(());
            }
            // A NUL would end the C string early; show it instead.
            self.bytes[self.len] = if b == 0 { b'?' } else { b };
            self.len += 1;
        }
        Ok(())
    }
}

/// Formats `args` and prints one line (a trailing newline is added) via `DbgPrintEx` for the
/// video component (`DPFLTR_IHVVIDEO_ID`).
pub fn print(level: Level, args: fmt::Arguments<'_>) {
    let mut buf = Buffer {
        bytes: [0; MAX_MESSAGE + 1],
        len: 0,
        truncated: false,
    };
    let _ = buf.write_fmt(args);
    if buf.truncated {
        buf.len = TEXT_CAPACITY - 3;
        buf.bytes[buf.len..TEXT_CAPACITY].copy_from_slice(b"...");
        buf.len = TEXT_CAPACITY;
    }
    buf.bytes[buf.len] = b'\n';
    buf.bytes[buf.len + 1] = 0;
    // SAFETY: the format is a static NUL-terminated "%s" and the one argument is our
    // NUL-terminated buffer, which lives for the call.
    unsafe {
        dxgk_sys::DbgPrintEx(
            dxgk_sys::DPFLTR_IHVVIDEO_ID,
            level.raw(),
            c"%s".as_ptr().cast(),
            buf.bytes.as_ptr(),
        )
    };
}

/// `dbg_print!(Level::Error, "rgpu: {}", x)`.
#[macro_export]
macro_rules! dbg_print {
    ($level:expr, $($arg:tt)*) => {
        $crate::debug::print($level, format_args!($($arg)*))
    };
}
