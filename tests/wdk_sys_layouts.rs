//! wdk flavour only (Windows + eWDK, `cargo test --features wdk`): dxgk-sys's NT structs have
//! the same size and alignment as windows-drivers-rs' bindgen output of the real WDK headers.
//! wdk-sys has no display (d3dkmddi/dispmprt) bindings, so only the NT base types can be
//! compared; the DDI structs are checked against layouts.json by dxgk-sys's own tests.
//! Not compiled by our Linux CI (the wdk crates do not build on Linux).
#![cfg(all(target_os = "windows", feature = "wdk"))]

use core::mem::{align_of, size_of};

macro_rules! same_layout {
    ($($name:ident),* $(,)?) => {
        #[test]
        fn nt_structs_match_wdk_sys() {
            $(
                assert_eq!(
                    (size_of::<dxgk_sys::$name>(), align_of::<dxgk_sys::$name>()),
                    (size_of::<wdk_sys::$name>(), align_of::<wdk_sys::$name>()),
                    concat!(stringify!($name), ": (size, align) dxgk-sys vs wdk-sys"),
                );
            )*
        }
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
