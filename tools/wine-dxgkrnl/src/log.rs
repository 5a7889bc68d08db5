//! One `DbgPrintEx` line per message, prefixed `wine-dxgkrnl: `. Formatting is done in Rust
//! into a stack buffer (the kernel format string is always `%s`). Error level, so Windows
//! would print it too; Wine prints it with `WINEDEBUG=+debugstr` (channel `debugstr`).

use core::fmt::{self, Write};

const CAPACITY: usize = 400;

struct Line {
    bytes: [u8; CAPACITY + 2],
    len: usize,
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len == CAPACITY {
                return Ok(());
            }
            self.bytes[self.len] = if b == 0 { b'?' } else { b };
            self.len += 1;
        }
        Ok(())
    }
}

/// Prints `wine-dxgkrnl: <args>` as one line.
pub fn print(args: fmt::Arguments<'_>) {
    let mut line = Line {
        bytes: [0; CAPACITY + 2],
        len: 0,
    };
    let _ = line.write_str("wine-dxgkrnl: ");
    let _ = line.write_fmt(args);
    line.bytes[line.len] = b'\n';
    line.bytes[line.len + 1] = 0;
    // SAFETY: static "%s" format, one NUL-terminated argument living for the call.
    unsafe {
        dxgk_sys::DbgPrintEx(
            dxgk_sys::DPFLTR_IHVVIDEO_ID,
            dxgk_sys::DPFLTR_ERROR_LEVEL,
            c"%s".as_ptr().cast(),
            line.bytes.as_ptr(),
        )
    };
}

/// `say!("fmt", args…)`: one harness line.
macro_rules! say {
    ($($arg:tt)*) => { $crate::log::print(format_args!($($arg)*)) };
}
