//! wdk flavour only (`cfg(rgpu_wdk)`): every NT type that both dxgk-sys and wdk-sys (bindgen over
//! the real WDK headers) define has the same size and alignment on both sides. Checked at compile
//! time, so every build of drivers/rgpu-wdk runs it: on Windows by `cargo make`, on Linux by
//! tools/wdk-check/run.sh, which also keeps this list equal to the set of names both crates
//! define and runs a self-test build in which every assertion must fire.
//!
//! wdk-sys has no display (d3dkmddi/dispmprt) bindings, so the DDI structs are checked against
//! layouts.json by dxgk-sys's own tests instead; field offsets are not comparable by name (the
//! two crates name anonymous unions differently).

use core::mem::{align_of, size_of};

/// `RGPU_WDK_LAYOUT_SELFTEST` set at build time skews every comparison by one byte (run.sh).
const SKEW: usize = option_env!("RGPU_WDK_LAYOUT_SELFTEST").is_some() as usize;

macro_rules! same_layout {
    ($($name:ident),* $(,)?) => {
        $(
            const _: () = assert!(
                size_of::<dxgk_sys::$name>() + SKEW == size_of::<wdk_sys::$name>()
                    && align_of::<dxgk_sys::$name>() == align_of::<wdk_sys::$name>(),
                concat!("wdk-sys layout mismatch: ", stringify!($name), " (size, align) differs between dxgk-sys and wdk-sys"),
            );
        )*
    };
}

same_layout!(
    MDL,
    UNICODE_STRING,
    LIST_ENTRY,
    KEVENT,
    KDPC,
    DISPATCHER_HEADER,
    DRIVER_OBJECT,
    DRIVER_EXTENSION,
    DEVICE_OBJECT,
    IRP,
    IO_STACK_LOCATION,
    IO_STATUS_BLOCK,
    CM_RESOURCE_LIST,
    CM_FULL_RESOURCE_DESCRIPTOR,
    CM_PARTIAL_RESOURCE_LIST,
    CM_PARTIAL_RESOURCE_DESCRIPTOR,
    LARGE_INTEGER,
);
