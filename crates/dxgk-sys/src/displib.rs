//! `DxgkInitialize` for the cross flavour: our own implementation of the `displib.lib`
//! handshake (../shared/reference/ddi-reference.md §1.2), since the WDK's static library is not
//! available off Windows. The wdk flavour links the real `displib.lib` instead.
//!
//! The sequence, as reconstructed by ReactOS and observed under Wine
//! (../shared/reference/wine.md step 4):
//! 1. `ZwLoadDriver` of the `DXGKrnl` service (STATUS_IMAGE_ALREADY_LOADED is fine);
//! 2. `IoGetDeviceObjectPointer("\Device\DxgKrnl")`;
//! 3. an *internal* device-control IRP `IOCTL_VIDEO_DDI_FUNC_REGISTER` (0x0023003F,
//!    METHOD_NEITHER) whose output buffer is one pointer: Dxgkrnl writes its port initializer
//!    there;
//! 4. call that initializer with the driver object, registry path and initialization data and
//!    return its status unchanged.
//!
//! The IOCTL and the device name are reverse-engineered, not documented by Microsoft. PASSIVE_LEVEL.

use core::ptr;

use crate::{
    DEVICE_OBJECT, DRIVER_INITIALIZATION_DATA, DRIVER_OBJECT, FILE_ALL_ACCESS, IO_STATUS_BLOCK,
    KEVENT, NTSTATUS, PVOID, STATUS_IMAGE_ALREADY_LOADED, STATUS_INSUFFICIENT_RESOURCES,
    STATUS_PENDING, UNICODE_STRING,
};

/// `CTL_CODE(FILE_DEVICE_VIDEO, 0xF, METHOD_NEITHER, FILE_ANY_ACCESS)`.
pub const IOCTL_VIDEO_DDI_FUNC_REGISTER: u32 = 0x0023_003F;

/// The port driver's initializer, as returned through the IOCTL.
pub type PFN_DPI_INITIALIZE = unsafe extern "system" fn(
    DriverObject: *mut DRIVER_OBJECT,
    RegistryPath: *mut UNICODE_STRING,
    DriverInitializationData: *mut DRIVER_INITIALIZATION_DATA,
) -> NTSTATUS;

const DXGKRNL_SERVICE: &str = "\\Registry\\Machine\\System\\CurrentControlSet\\Services\\DXGKrnl";
const DXGKRNL_DEVICE: &str = "\\Device\\DxgKrnl";

/// ASCII → NUL-terminated UTF-16 at compile time (Wine reads `Buffer` as NUL-terminated).
const fn wide<const N: usize>(s: &str) -> [u16; N] {
    let bytes = s.as_bytes();
    let mut out = [0u16; N];
    let mut i = 0;
    while i < bytes.len() {
        out[i] = bytes[i] as u16;
        i += 1;
    }
    out
}

fn unicode_string(buffer: &mut [u16]) -> UNICODE_STRING {
    let chars = buffer.len() - 1; // without the terminating NUL
    let mut s = UNICODE_STRING::default();
    s.Length = (chars * 2) as u16;
    s.MaximumLength = (buffer.len() * 2) as u16;
    s.Buffer = buffer.as_mut_ptr();
    s
}

/// Registers a display miniport with Dxgkrnl (cross flavour). PASSIVE_LEVEL.
///
/// # Safety
/// Called from `DriverEntry` with the arguments the I/O manager passed to it and a fully
/// initialized `DRIVER_INITIALIZATION_DATA`.
pub unsafe extern "system" fn DxgkInitialize(
    DriverObject: *mut DRIVER_OBJECT,
    RegistryPath: *mut UNICODE_STRING,
    DriverInitializationData: *mut DRIVER_INITIALIZATION_DATA,
) -> NTSTATUS {
    let mut service_buf: [u16; DXGKRNL_SERVICE.len() + 1] = wide(DXGKRNL_SERVICE);
    let mut service = unicode_string(&mut service_buf);
    // SAFETY: `service` is a valid, NUL-terminated UNICODE_STRING living for the call.
    let status = unsafe { crate::ZwLoadDriver(&mut service) };
    if status < 0 && status != STATUS_IMAGE_ALREADY_LOADED {
        return status;
    }

    let mut device_buf: [u16; DXGKRNL_DEVICE.len() + 1] = wide(DXGKRNL_DEVICE);
    let mut device_name = unicode_string(&mut device_buf);
    let mut file_object: PVOID = ptr::null_mut();
    let mut device: *mut DEVICE_OBJECT = ptr::null_mut();
    // SAFETY: all out-pointers are valid locals; the name is a valid UNICODE_STRING.
    let status = unsafe {
        crate::IoGetDeviceObjectPointer(
            &mut device_name,
            FILE_ALL_ACCESS,
            &mut file_object,
            &mut device,
        )
    };
    if status < 0 {
        return status;
    }

    let mut initializer: Option<PFN_DPI_INITIALIZE> = None;
    let status = request_initializer(device, &mut initializer);
    if !file_object.is_null() {
        // SAFETY: `file_object` is the referenced file object IoGetDeviceObjectPointer returned;
        // dropping that reference is the caller's duty.
        unsafe { crate::ObfDereferenceObject(file_object) };
    }
    if status < 0 {
        return status;
    }
    match initializer {
        // SAFETY: Dxgkrnl returned its port initializer; the arguments are the caller's.
        Some(init) => unsafe { init(DriverObject, RegistryPath, DriverInitializationData) },
        None => crate::STATUS_UNSUCCESSFUL,
    }
}

/// Sends IOCTL_VIDEO_DDI_FUNC_REGISTER and waits for it.
fn request_initializer(
    device: *mut DEVICE_OBJECT,
    initializer: &mut Option<PFN_DPI_INITIALIZE>,
) -> NTSTATUS {
    let mut event = KEVENT::default();
    let mut iosb = IO_STATUS_BLOCK::default();
    // SAFETY: `event` is a local KEVENT that outlives the wait below.
    unsafe { crate::KeInitializeEvent(&mut event, crate::NotificationEvent, 0) };
    let out: *mut Option<PFN_DPI_INITIALIZE> = initializer;
    // SAFETY: the output buffer is one pointer-sized slot that outlives the request; event and
    // status block outlive it too (we wait for completion below).
    let irp = unsafe {
        crate::IoBuildDeviceIoControlRequest(
            IOCTL_VIDEO_DDI_FUNC_REGISTER,
            device,
            ptr::null_mut(),
            0,
            out.cast(),
            core::mem::size_of::<PVOID>() as u32,
            1,
            &mut event,
            &mut iosb,
        )
    };
    if irp.is_null() {
        return STATUS_INSUFFICIENT_RESOURCES;
    }
    // SAFETY: `irp` was just built for `device`; ownership passes to the I/O manager.
    let mut status = unsafe { crate::IofCallDriver(device, irp) };
    if status == STATUS_PENDING {
        // SAFETY: `event` is initialized and signalled by the I/O manager on completion.
        unsafe {
            crate::KeWaitForSingleObject(
                (&mut event as *mut KEVENT).cast(),
                crate::Executive,
                crate::KernelMode,
                0,
                ptr::null_mut(),
            )
        };
        // SAFETY: the union's `Status` member is what the I/O manager fills on completion.
        status = unsafe { iosb.u.Status };
    }
    status
}
