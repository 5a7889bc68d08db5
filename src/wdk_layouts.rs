//! wdk flavour only (`cfg(rgpu_wdk)`): every NT type that both dxgk-sys and wdk-sys (bindgen over
//! the real WDK headers) define has the same size and alignment on both sides, except the ones
//! dxgk-sys declares opaque (zero-sized, only used behind pointers), which must stay opaque.
//!
//! Checked at compile time, so every build of drivers/rgpu-wdk runs it: on Windows by
//! `cargo make`, on Linux by tools/wdk-check/run.sh, which also keeps these lists equal to the set
//! of names both crates define and runs a self-test build in which every assertion must fire.
//! (It replaces tests/wdk_sys_layouts.rs, a run-time test of 17 of these types that could not
//! build: a no_std cdylib cannot be linked under the unwinding test profile.)
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
                concat!("wdk-sys layout mismatch: ", stringify!($name), ": (size, align) differs between dxgk-sys and wdk-sys"),
            );
        )*
    };
}

/// A type dxgk-sys only declares (`_private: [u8; 0]`): it must stay zero-sized, so that no
/// code can read a layout dxgk-sys never checked; once it gets fields it belongs in
/// `same_layout!`.
macro_rules! opaque_in_dxgk_sys {
    ($($name:ident),* $(,)?) => {
        $(
            const _: () = assert!(
                size_of::<dxgk_sys::$name>() + SKEW == 0 && size_of::<wdk_sys::$name>() > 0,
                concat!("wdk-sys layout mismatch: ", stringify!($name), ": opaque in dxgk-sys, so zero-sized there and sized in wdk-sys"),
            );
        )*
    };
}

// Every type name that both crates define, in the two lists below (tools/wdk-check/run.sh fails
// when these lists and that set differ). Measured with the WDK 10.0.22000 headers.
same_layout!(
    ACCESS_MASK,
    BOOLEAN,
    CCHAR,
    CHAR,
    CM_FULL_RESOURCE_DESCRIPTOR,
    CM_PARTIAL_RESOURCE_DESCRIPTOR,
    CM_PARTIAL_RESOURCE_LIST,
    CM_RESOURCE_LIST,
    CSHORT,
    DEVICE_OBJECT,
    DISPATCHER_HEADER,
    DRIVER_EXTENSION,
    DRIVER_OBJECT,
    DWORD,
    GUID,
    HANDLE,
    INT,
    INT32,
    INT64,
    IO_STACK_LOCATION,
    IO_STATUS_BLOCK,
    IRP,
    KAFFINITY,
    KAPC,
    KDEVICE_QUEUE,
    KDEVICE_QUEUE_ENTRY,
    KDPC,
    KEVENT,
    KIRQL,
    KPRIORITY,
    KPROCESSOR_MODE,
    KSPIN_LOCK,
    LARGE_INTEGER,
    LCID,
    LIST_ENTRY,
    LONG,
    LONG64,
    LONGLONG,
    LONG_PTR,
    LUID,
    MDL,
    NTSTATUS,
    PCHAR,
    PCSTR,
    PCWSTR,
    PDRIVER_ADD_DEVICE,
    PDRIVER_CANCEL,
    PDRIVER_CONTROL,
    PDRIVER_DISPATCH,
    PDRIVER_INITIALIZE,
    PDRIVER_STARTIO,
    PDRIVER_UNLOAD,
    PFN_NUMBER,
    PHANDLE,
    PHYSICAL_ADDRESS,
    PIO_APC_ROUTINE,
    PIO_COMPLETION_ROUTINE,
    PKDEFERRED_ROUTINE,
    PKSTART_ROUTINE,
    PKSYNCHRONIZE_ROUTINE,
    POOL_FLAGS,
    POWER_STATE,
    PSECURITY_DESCRIPTOR,
    PSID,
    PUCHAR,
    PULONG,
    PVOID,
    PWCHAR,
    PWSTR,
    SECURITY_INFORMATION,
    SHORT,
    SINGLE_LIST_ENTRY,
    SIZE_T,
    SYSTEM_POWER_STATE_CONTEXT,
    UCHAR,
    UINT16,
    UINT32,
    UINT64,
    UINT8,
    UINT_PTR,
    ULONG,
    ULONG64,
    ULONGLONG,
    ULONG_PTR,
    UNICODE_STRING,
    USHORT,
    WAIT_CONTEXT_BLOCK,
    WCHAR,
);

opaque_in_dxgk_sys!(
    DEVICE_CAPABILITIES,
    DEVOBJ_EXTENSION,
    FAST_IO_DISPATCH,
    FILE_GET_QUOTA_INFORMATION,
    FILE_OBJECT,
    INTERFACE,
    IO_RESOURCE_REQUIREMENTS_LIST,
    IO_SECURITY_CONTEXT,
    MAILSLOT_CREATE_PARAMETERS,
    NAMED_PIPE_CREATE_PARAMETERS,
    POWER_SEQUENCE,
    VPB,
);
