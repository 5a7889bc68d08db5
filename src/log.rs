//! Driver logging: one line per message, prefixed with `rgpu: `.
//!
//! Goes through `dxgk::debug` (DbgPrintEx with the video component) in the host and cross
//! flavours, and through windows-drivers-rs' `wdk::println!` in the wdk flavour. That is one of
//! the documented import differences between the Windows images: the wdk image imports
//! `DbgPrint` (no component or level: the kernel's debug filter shows it only with the DEFAULT
//! component's mask raised) where the cross image imports `DbgPrintEx` (docs/packaging.md).

#[cfg(not(rgpu_wdk))]
macro_rules! rgpu_log {
    (error, $($arg:tt)*) => { dxgk::dbg_print!(dxgk::debug::Level::Error, "rgpu: {}", format_args!($($arg)*)) };
    (warn, $($arg:tt)*) => { dxgk::dbg_print!(dxgk::debug::Level::Warning, "rgpu: {}", format_args!($($arg)*)) };
    (info, $($arg:tt)*) => { dxgk::dbg_print!(dxgk::debug::Level::Info, "rgpu: {}", format_args!($($arg)*)) };
}

#[cfg(rgpu_wdk)]
macro_rules! rgpu_log {
    ($level:ident, $($arg:tt)*) => { wdk::println!("rgpu: {}", format_args!($($arg)*)) };
}
