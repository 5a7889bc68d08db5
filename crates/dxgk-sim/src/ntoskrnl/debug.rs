//! `DbgPrintEx`: formatted by the C shim, captured per machine (and echoed to stderr when
//! `DXGK_SIM_ECHO` is set).

use std::sync::Once;

use crate::machine::{current, DebugLine};

type PrintHook = unsafe extern "C" fn(component: u32, level: u32, text: *const u8, len: usize);

unsafe extern "C" {
    fn dxgk_sim_set_print_hook(hook: PrintHook);
}

unsafe extern "C" fn print_hook(component: u32, level: u32, text: *const u8, len: usize) {
    // SAFETY: the C shim passes a buffer of `len` initialized bytes that lives for the call.
    let bytes = unsafe { std::slice::from_raw_parts(text, len) };
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

pub(crate) fn install_print_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: installs a function pointer with the signature the shim expects.
        unsafe { dxgk_sim_set_print_hook(print_hook) }
    });
}
