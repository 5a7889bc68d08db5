//! `DriverEntry` and the DDI thunks.
//!
//! Thunks follow Microsoft's KMDOD sample: check IRQL where documented, null-check arguments,
//! recover the adapter from its handle, forward to safe code that returns `NtResult`, and
//! convert at the boundary. Nothing unwinds across a DDI.
//!
//! Status of this module: registration and the adapter context's lifetime (AddDevice /
//! RemoveDevice) are real; StartDevice refuses to start (STATUS_NOT_SUPPORTED, logged) until the
//! adapter start sequence lands with the driver-core work.

use core::ptr::NonNull;

use dxgk::pool::{Pool, PoolBox};
use dxgk::{NtResult, NtStatus};
use dxgk_sys::{
    DEVICE_OBJECT, DRIVER_INITIALIZATION_DATA, DRIVER_OBJECT, DXGKRNL_INTERFACE, DXGK_START_INFO,
    NTSTATUS, PVOID, ULONG, UNICODE_STRING,
};

use crate::POOL_TAG;

/// Interface versions rgpu can register with, newest first: WDDM 3.1 down to WDDM 2.4 (the
/// first with the IOMMU memory callbacks). One rgpu.sys serves every Windows from 1803 up.
pub const SUPPORTED_INTERFACE_VERSIONS: &[u32] = &[
    dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM3_1,
    dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM3_0,
    dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM2_9,
    dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM2_8,
    dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM2_7,
    dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM2_6,
    dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM2_5,
    dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM2_4,
];

/// The oldest interface rgpu accepts from Dxgkrnl at StartDevice.
pub const MINIMUM_INTERFACE_VERSION: u32 = dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM2_4;

/// Per-adapter state, owned by Dxgkrnl's `MiniportDeviceContext` between AddDevice and
/// RemoveDevice.
pub struct Adapter {
    /// The pool routine resolved for this adapter (ExAllocatePool2 or the fallback).
    pub pool: Pool,
    /// The PDO Dxgkrnl passed to AddDevice.
    pub pdo: *mut DEVICE_OBJECT,
}

/// Driver entry point. PASSIVE_LEVEL.
///
/// # Safety
/// Called by the I/O manager with its driver object and registry path.
#[no_mangle]
pub unsafe extern "system" fn DriverEntry(
    driver_object: *mut DRIVER_OBJECT,
    registry_path: *mut UNICODE_STRING,
) -> NTSTATUS {
    crate::seam::init();
    if driver_object.is_null() || registry_path.is_null() {
        rgpu_log!(error, "DriverEntry: NULL driver object or registry path");
        return dxgk_sys::STATUS_INVALID_PARAMETER;
    }
    // Newest first: Dxgkrnl refuses a version newer than itself, and older Windows versions do
    // not document which status they return for that, so any failure moves one version down.
    let mut status = dxgk_sys::STATUS_UNSUCCESSFUL;
    for &version in SUPPORTED_INTERFACE_VERSIONS {
        let mut init = initialization_data(version);
        // SAFETY: both pointers come from the I/O manager; `init` is fully initialized and only
        // needs to live for the call.
        status = unsafe { dxgk_sys::DxgkInitialize(driver_object, registry_path, &mut init) };
        if status >= 0 {
            rgpu_log!(info, "registered with interface {:#x}", version);
            return status;
        }
        rgpu_log!(
            warn,
            "DxgkInitialize refused interface {:#x}: {:#010x}",
            version,
            status as u32
        );
    }
    rgpu_log!(
        error,
        "no supported interface version (WDDM 2.4 or newer) was accepted; last status {:#010x}",
        status as u32
    );
    status
}

/// The DDI table for interface `version`: only DDIs that exist at that version are filled.
fn initialization_data(version: u32) -> DRIVER_INITIALIZATION_DATA {
    DRIVER_INITIALIZATION_DATA {
        Version: version,
        DxgkDdiAddDevice: Some(ddi_add_device),
        DxgkDdiStartDevice: Some(ddi_start_device),
        DxgkDdiStopDevice: Some(ddi_stop_device),
        DxgkDdiRemoveDevice: Some(ddi_remove_device),
        DxgkDdiUnload: Some(ddi_unload),
        ..Default::default()
    }
}

/// Recovers the adapter from a MiniportDeviceContext.
///
/// # Safety
/// `context` must be null or a pointer AddDevice returned and RemoveDevice has not freed.
unsafe fn adapter_from(context: PVOID) -> NtResult<&'static mut Adapter> {
    let ptr = NonNull::new(context.cast::<Adapter>()).ok_or(NtStatus::INVALID_PARAMETER)?;
    // SAFETY: per the caller, `ptr` is a live Adapter owned by Dxgkrnl's context slot, and
    // Dxgkrnl serializes PnP DDIs for one adapter.
    Ok(unsafe { &mut *ptr.as_ptr() })
}

unsafe extern "system" fn ddi_add_device(
    physical_device_object: *mut DEVICE_OBJECT,
    miniport_device_context: *mut PVOID,
) -> NTSTATUS {
    if physical_device_object.is_null() || miniport_device_context.is_null() {
        rgpu_log!(error, "AddDevice: NULL argument");
        return dxgk_sys::STATUS_INVALID_PARAMETER;
    }
    let pool = Pool::resolve();
    let adapter = Adapter {
        pool,
        pdo: physical_device_object,
    };
    match PoolBox::try_new(&pool, POOL_TAG, adapter) {
        Ok(b) => {
            // SAFETY: checked non-null above; Dxgkrnl provides the slot for the context.
            unsafe { *miniport_device_context = b.into_raw().as_ptr().cast() };
            dxgk_sys::STATUS_SUCCESS
        }
        Err(e) => {
            rgpu_log!(error, "AddDevice: adapter context allocation failed: {e}");
            e.raw()
        }
    }
}

unsafe extern "system" fn ddi_start_device(
    miniport_device_context: PVOID,
    _start_info: *mut DXGK_START_INFO,
    _interface: *mut DXGKRNL_INTERFACE,
    _sources: *mut ULONG,
    _children: *mut ULONG,
) -> NTSTATUS {
    // SAFETY: Dxgkrnl passes the context AddDevice returned.
    if let Err(e) = unsafe { adapter_from(miniport_device_context) } {
        return e.raw();
    }
    rgpu_log!(error, "StartDevice: adapter start is not implemented yet");
    dxgk_sys::STATUS_NOT_SUPPORTED
}

unsafe extern "system" fn ddi_stop_device(miniport_device_context: PVOID) -> NTSTATUS {
    // SAFETY: Dxgkrnl passes the context AddDevice returned.
    match unsafe { adapter_from(miniport_device_context) } {
        Ok(_) => dxgk_sys::STATUS_SUCCESS,
        Err(e) => e.raw(),
    }
}

unsafe extern "system" fn ddi_remove_device(miniport_device_context: PVOID) -> NTSTATUS {
    let Some(ptr) = NonNull::new(miniport_device_context.cast::<Adapter>()) else {
        rgpu_log!(error, "RemoveDevice: NULL context");
        return dxgk_sys::STATUS_INVALID_PARAMETER;
    };
    // SAFETY: the context came from `PoolBox::into_raw` in AddDevice with POOL_TAG, and
    // RemoveDevice is its last use.
    drop(unsafe { PoolBox::from_raw(ptr, POOL_TAG) });
    dxgk_sys::STATUS_SUCCESS
}

unsafe extern "system" fn ddi_unload() {}
