//! Harness settings: REG_DWORD values under the `DXGKrnl` service key, written by
//! `tools/wine/run.sh` (its `--scenario`s). All optional.
//!
//! | value | default | effect |
//! |---|---|---|
//! | `HarnessMaxInterface` | none | DpiInitialize refuses any `DRIVER_INITIALIZATION_DATA.Version` above it (0 = refuse all) |
//! | `HarnessStartInterface` | negotiated | `DXGKRNL_INTERFACE.Version` passed to StartDevice; below WDDM 2.4 rgpu must refuse to start |
//! | `HarnessRequireAllLive` | 0 | 1 = every step must be live (pending steps become failures): the tightened table |
//! | `HarnessShimStall` | 0 | 1 = shim Wine's unimplemented `hal.dll!KeStallExecutionProcessor` (see `wine_hook`) |
//! | `HarnessSoftFault` | 0 | 1 = (with `HarnessSoft`) the mini VidMm leaves the allocation unmapped: the engine must page-fault, the soft steps fail, the run FAILs (runner self-test) |
//! | `HarnessSoft` | 0 | 1 = a root-enumerated adapter: StartDevice's resource list is empty, so rgpu starts in soft mode; the soft steps ([`crate::soft`]) run |

use dxgk_sys::{HANDLE, UNICODE_STRING};

use crate::kernel::{self, OBJECT_ATTRIBUTES};

#[derive(Clone, Copy, Default)]
pub struct Settings {
    pub max_interface: Option<u32>,
    pub start_interface: Option<u32>,
    pub require_all_live: bool,
    pub shim_stall: bool,
    pub soft: bool,
    pub soft_fault: bool,
}

/// Reads the settings from the port's service key (`registry_path` from DriverEntry).
///
/// # Safety
/// `registry_path` must be null or a valid UNICODE_STRING.
pub unsafe fn read(registry_path: *mut UNICODE_STRING) -> Settings {
    let mut s = Settings::default();
    if registry_path.is_null() {
        return s;
    }
    let mut attrs = OBJECT_ATTRIBUTES {
        Length: core::mem::size_of::<OBJECT_ATTRIBUTES>() as u32,
        RootDirectory: core::ptr::null_mut(),
        ObjectName: registry_path,
        Attributes: kernel::OBJ_CASE_INSENSITIVE | kernel::OBJ_KERNEL_HANDLE,
        SecurityDescriptor: core::ptr::null_mut(),
        SecurityQualityOfService: core::ptr::null_mut(),
    };
    let mut key: HANDLE = core::ptr::null_mut();
    // SAFETY: valid out-pointer and attributes naming the caller's registry path.
    let status = unsafe { kernel::ZwOpenKey(&mut key, kernel::KEY_READ, &mut attrs) };
    if status < 0 {
        say!(
            "settings: cannot open service key ({:#010x}); defaults",
            status as u32
        );
        return s;
    }
    let mut name = wstr!("HarnessMaxInterface");
    s.max_interface = dword(key, &mut name);
    let mut name = wstr!("HarnessStartInterface");
    s.start_interface = dword(key, &mut name);
    let mut name = wstr!("HarnessRequireAllLive");
    s.require_all_live = dword(key, &mut name).unwrap_or(0) != 0;
    let mut name = wstr!("HarnessShimStall");
    s.shim_stall = dword(key, &mut name).unwrap_or(0) != 0;
    let mut name = wstr!("HarnessSoft");
    s.soft = dword(key, &mut name).unwrap_or(0) != 0;
    let mut name = wstr!("HarnessSoftFault");
    s.soft_fault = dword(key, &mut name).unwrap_or(0) != 0;
    // SAFETY: `key` is the handle ZwOpenKey returned.
    unsafe { dxgk_sys::ZwClose(key) };
    s
}

fn dword(key: HANDLE, name: &mut [u16]) -> Option<u32> {
    let mut us = kernel::unicode(name);
    // KEY_VALUE_PARTIAL_INFORMATION: TitleIndex, Type, DataLength, Data[].
    let mut info = [0u32; 8];
    let mut len = 0u32;
    // SAFETY: `info` is a writable 32-byte buffer; `us` names the value.
    let status = unsafe {
        kernel::ZwQueryValueKey(
            key,
            &mut us,
            kernel::KEY_VALUE_PARTIAL_INFORMATION_CLASS,
            info.as_mut_ptr().cast(),
            core::mem::size_of_val(&info) as u32,
            &mut len,
        )
    };
    (status >= 0 && info[1] == kernel::REG_DWORD && info[2] == 4).then_some(info[3])
}
