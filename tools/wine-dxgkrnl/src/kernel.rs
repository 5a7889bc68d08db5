//! Kernel imports the fake port needs beyond `dxgk-sys` (which declares rgpu's), plus small
//! UNICODE_STRING helpers. All of these exist in Wine 8.0's ntoskrnl.exe (checked with
//! `objdump -p`, ../shared/reference/wine.md); `ZwProtectVirtualMemory` is used only by
//! [`crate::wine_hook`].

use dxgk_sys::{
    BOOLEAN, CCHAR, DEVICE_OBJECT, DRIVER_OBJECT, HANDLE, IRP, NTSTATUS, PVOID, SIZE_T, ULONG,
    UNICODE_STRING,
};

/// `OBJECT_ATTRIBUTES` (wdm.h, x64: 48 bytes).
#[repr(C)]
pub struct OBJECT_ATTRIBUTES {
    pub Length: ULONG,
    pub RootDirectory: HANDLE,
    pub ObjectName: *mut UNICODE_STRING,
    pub Attributes: ULONG,
    pub SecurityDescriptor: PVOID,
    pub SecurityQualityOfService: PVOID,
}

pub const OBJ_CASE_INSENSITIVE: ULONG = 0x40;
pub const OBJ_KERNEL_HANDLE: ULONG = 0x200;
pub const KEY_READ: ULONG = 0x2_0019;
/// `KeyValuePartialInformation`.
pub const KEY_VALUE_PARTIAL_INFORMATION_CLASS: i32 = 2;
pub const REG_DWORD: ULONG = 4;
pub const FILE_DEVICE_VIDEO: ULONG = 0x23;
pub const DO_DEVICE_INITIALIZING: ULONG = 0x80;
pub const IRP_MJ_CREATE: usize = 0x00;
pub const IRP_MJ_CLOSE: usize = 0x02;
pub const IRP_MJ_INTERNAL_DEVICE_CONTROL: usize = 0x0F;
pub const IRP_MJ_PNP: usize = 0x1B;
pub const IRP_MN_QUERY_ID: u8 = 0x13;
pub const PAGE_EXECUTE_READWRITE: ULONG = 0x40;

#[cfg_attr(
    target_os = "windows",
    link(name = "ntoskrnl.exe", kind = "raw-dylib", modifiers = "+verbatim")
)]
unsafe extern "system" {
    pub fn IoCreateDevice(
        DriverObject: *mut DRIVER_OBJECT,
        DeviceExtensionSize: ULONG,
        DeviceName: *mut UNICODE_STRING,
        DeviceType: ULONG,
        DeviceCharacteristics: ULONG,
        Exclusive: BOOLEAN,
        DeviceObject: *mut *mut DEVICE_OBJECT,
    ) -> NTSTATUS;
    pub fn IofCompleteRequest(Irp: *mut IRP, PriorityBoost: CCHAR);
    pub fn ZwOpenKey(
        KeyHandle: *mut HANDLE,
        DesiredAccess: ULONG,
        ObjectAttributes: *mut OBJECT_ATTRIBUTES,
    ) -> NTSTATUS;
    pub fn ZwQueryValueKey(
        KeyHandle: HANDLE,
        ValueName: *mut UNICODE_STRING,
        KeyValueInformationClass: i32,
        KeyValueInformation: PVOID,
        Length: ULONG,
        ResultLength: *mut ULONG,
    ) -> NTSTATUS;
    /// The calling thread's id (the interrupt callbacks' "which thread is inside" check).
    pub fn PsGetCurrentThreadId() -> HANDLE;
    pub fn ZwProtectVirtualMemory(
        ProcessHandle: HANDLE,
        BaseAddress: *mut PVOID,
        RegionSize: *mut SIZE_T,
        NewProtect: ULONG,
        OldProtect: *mut ULONG,
    ) -> NTSTATUS;
}

// Large stack frames (the QueryAdapterInfo buffers) call `__chkstk`, which ntoskrnl exports.
#[cfg_attr(
    target_os = "windows",
    link(name = "ntoskrnl.exe", kind = "raw-dylib", modifiers = "+verbatim")
)]
unsafe extern "C" {
    #[allow(dead_code)]
    fn __chkstk();
}

/// ASCII → NUL-terminated UTF-16, at compile time. `N` = `s.len() + 1`.
pub const fn wide<const N: usize>(s: &str) -> [u16; N] {
    let b = s.as_bytes();
    let mut out = [0u16; N];
    let mut i = 0;
    while i < b.len() {
        out[i] = b[i] as u16;
        i += 1;
    }
    out
}

/// A UNICODE_STRING over a NUL-terminated UTF-16 buffer (Wine reads `Buffer` up to the NUL).
pub fn unicode(buf: &mut [u16]) -> UNICODE_STRING {
    UNICODE_STRING {
        Length: ((buf.len() - 1) * 2) as u16,
        MaximumLength: (buf.len() * 2) as u16,
        Buffer: buf.as_mut_ptr(),
    }
}

/// `wstr!("text")`: a NUL-terminated `[u16; N]` local.
macro_rules! wstr {
    ($s:expr) => {{
        const S: &str = $s;
        $crate::kernel::wide::<{ S.len() + 1 }>(S)
    }};
}

/// Case-insensitive ASCII comparison of a UNICODE_STRING with `s`.
///
/// # Safety
/// `u` must be null or a valid UNICODE_STRING whose `Buffer` holds `Length` bytes.
pub unsafe fn unicode_eq(u: *const UNICODE_STRING, s: &str) -> bool {
    if u.is_null() {
        return false;
    }
    // SAFETY: `u` is valid for reads (caller).
    let us = unsafe { *u };
    let n = us.Length as usize / 2;
    if n != s.len() || us.Buffer.is_null() {
        return false;
    }
    // SAFETY: `Buffer` holds `Length` bytes = `n` UTF-16 units (caller).
    let chars = unsafe { core::slice::from_raw_parts(us.Buffer, n) };
    chars
        .iter()
        .zip(s.bytes())
        .all(|(&c, b)| c < 0x80 && (c as u8).eq_ignore_ascii_case(&b))
}
