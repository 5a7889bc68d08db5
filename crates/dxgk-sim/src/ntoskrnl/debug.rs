//! `DbgPrintEx`: captured per machine (and echoed to stderr when `DXGK_SIM_ECHO` is set).
//!
//! The export is C-variadic. Normal builds format it with the C shim (`csrc/variadic.c`, the
//! host's `vsnprintf`), because stable Rust cannot define a C-variadic function. Miri cannot
//! run C, so under `cfg(miri)` (always a nightly compiler, where C-variadic definitions exist)
//! `variadic` defines `DbgPrintEx` in Rust and formats with `printf`. Either way the text
//! ends in `deliver`.

use crate::machine::{current, DebugLine};

// Used by the Miri `DbgPrintEx` and by the tests (which check it in every build).
#[cfg_attr(not(any(miri, test)), allow(dead_code))]
mod printf;
#[cfg(miri)]
mod variadic;

/// Hands one formatted `DbgPrintEx` line to the current machine.
fn deliver(component: u32, level: u32, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes)
        .trim_end_matches('\n')
        .to_string();
    if std::env::var_os("DXGK_SIM_ECHO").is_some() {
        eprintln!("[dbg {component}:{level}] {text}");
    }
    current().debug_print(DebugLine {
        component,
        level,
        text,
    });
}

#[cfg(not(miri))]
type PrintHook = unsafe extern "C" fn(component: u32, level: u32, text: *const u8, len: usize);

#[cfg(not(miri))]
unsafe extern "C" {
    fn dxgk_sim_set_print_hook(hook: PrintHook);
}

#[cfg(not(miri))]
unsafe extern "C" fn print_hook(component: u32, level: u32, text: *const u8, len: usize) {
    // SAFETY: the C shim passes a buffer of `len` initialized bytes that lives for the call.
    let bytes = unsafe { std::slice::from_raw_parts(text, len) };
    deliver(component, level, bytes);
}

/// Connects the C shim's `DbgPrintEx` to [`deliver`] (once per process).
#[cfg(not(miri))]
pub(crate) fn install_print_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: installs a function pointer with the signature the shim expects.
        unsafe { dxgk_sim_set_print_hook(print_hook) }
    });
}

/// Under Miri `DbgPrintEx` is Rust and calls [`deliver`] directly: nothing to connect.
#[cfg(miri)]
pub(crate) fn install_print_hook() {}
