//! The allocation DDIs and DxgkDdiEscape: CreateAllocation / DestroyAllocation (adapter),
//! OpenAllocation / CloseAllocation (device: shared allocations), DescribeAllocation and
//! GetStandardAllocationDriverData (refused: see below), Escape.
//!
//! Creation is all-or-nothing: every element's private data is validated before any object
//! exists, and if a pool allocation fails halfway the objects already made are freed again —
//! a refused call creates nothing and writes no handle Dxgkrnl could use.
//!
//! DescribeAllocation and GetStandardAllocationDriverData exist for display: Dxgkrnl calls
//! them for primaries, shadow and staging surfaces of scan-out, and GDI surfaces. rgpu is a
//! render-only adapter (no VidPN sources, no GDI hardware acceleration), so Dxgkrnl has no
//! standard allocation to ask for; they return STATUS_NOT_SUPPORTED and log once per adapter.

use dxgk::allocation::{CloseAllocation, CreateAllocation, DestroyAllocation, OpenAllocation};
use dxgk::escape::Escape;
use dxgk::handle::{DeviceAllocationHandle, DeviceHandle};
use dxgk::pool::PoolBox;
use dxgk::{NtError, NtResult};
use dxgk_sys as sys;
use dxgk_sys::{HANDLE, NTSTATUS};

use super::{adapter, finish, into_handle, object, paged_code, take_handle};
use crate::allocation::{
    describe, Allocation, DeviceAllocation, ALLOCATION_TAG, DEVICE_ALLOCATION_TAG,
};
use crate::log_once::Unsupported;
use crate::objects::Device;

pub(super) unsafe extern "system" fn ddi_create_allocation(
    h_adapter: HANDLE,
    args: *mut sys::DXGKARG_CREATEALLOCATION,
) -> NTSTATUS {
    let r = (|| {
        paged_code("CreateAllocation")?;
        // SAFETY: Dxgkrnl passes the adapter handle from AddDevice.
        let a = unsafe { adapter(h_adapter) }?;
        // SAFETY: Dxgkrnl's argument block.
        let mut args = unsafe { CreateAllocation::from_raw(args) }?;
        if args.resource() {
            // rgpu keeps no per-resource state: clients create stand-alone allocations.
            rgpu_log!(error, "CreateAllocation: resources are not supported");
            return Err(NtError::NOT_SUPPORTED);
        }
        if !args.resource_private_data().is_empty() {
            rgpu_log!(error, "CreateAllocation: unexpected resource private data");
            return Err(NtError::INVALID_PARAMETER);
        }
        let soft = a.soft_caps();
        // Validate everything before creating anything.
        for i in 0..args.len() {
            describe(args.private_data(i).unwrap_or(&[]), soft)?;
        }
        for i in 0..args.len() {
            let made = describe(args.private_data(i).unwrap_or(&[]), soft).and_then(|alloc| {
                let d = alloc.description;
                let object = PoolBox::try_new(&a.pool, ALLOCATION_TAG, alloc)?;
                args.complete(i, &d, into_handle(object))?;
                a.counters.allocation_created(d.size as u64);
                Ok(())
            });
            if let Err(e) = made {
                for j in 0..i {
                    let Some(h) = args.completed_handle(j) else {
                        continue;
                    };
                    // SAFETY: `h` is the allocation this call just created for element j
                    // (ALLOCATION_TAG); Dxgkrnl never sees it since the call fails.
                    let x = unsafe { take_handle::<Allocation>(h.as_raw(), ALLOCATION_TAG) };
                    if let Ok(x) = x {
                        a.counters.allocation_destroyed(x.description.size as u64);
                    }
                }
                return Err(e);
            }
        }
        Ok(())
    })();
    finish("CreateAllocation", r)
}

pub(super) unsafe extern "system" fn ddi_destroy_allocation(
    h_adapter: HANDLE,
    args: *const sys::DXGKARG_DESTROYALLOCATION,
) -> NTSTATUS {
    let r = (|| {
        paged_code("DestroyAllocation")?;
        // SAFETY: Dxgkrnl passes the adapter handle from AddDevice.
        let a = unsafe { adapter(h_adapter) }?;
        // SAFETY: Dxgkrnl's argument block.
        let args = unsafe { DestroyAllocation::from_raw(args) }?;
        if (0..args.len()).any(|i| args.handle(i).is_none()) {
            return Err(NtError::INVALID_PARAMETER);
        }
        for h in (0..args.len()).filter_map(|i| args.handle(i)) {
            // SAFETY: each handle is an allocation CreateAllocation returned (ALLOCATION_TAG),
            // destroyed once (Dxgkrnl's contract).
            let x = unsafe { take_handle::<Allocation>(h.as_raw(), ALLOCATION_TAG) }?;
            a.counters.allocation_destroyed(x.description.size as u64);
        }
        Ok(())
    })();
    finish("DestroyAllocation", r)
}

/// The device behind `hDevice`.
///
/// # Safety
/// `h_device` must be NULL or a live device from CreateDevice.
unsafe fn device<'a>(h_device: HANDLE) -> NtResult<&'a Device> {
    let h = DeviceHandle::from_raw(h_device).ok_or(NtError::INVALID_PARAMETER)?;
    // SAFETY: a live device (caller).
    Ok(unsafe { object(h) })
}

pub(super) unsafe extern "system" fn ddi_open_allocation(
    h_device: HANDLE,
    args: *const sys::DXGKARG_OPENALLOCATION,
) -> NTSTATUS {
    let r = (|| {
        paged_code("OpenAllocation")?;
        // SAFETY: Dxgkrnl passes a device from CreateDevice.
        let dev = unsafe { device(h_device) }?;
        // SAFETY: the device keeps its adapter alive (devices are destroyed before RemoveDevice).
        let a = unsafe { &*dev.adapter };
        let iface = a.started().ok_or(NtError::DEVICE_NOT_READY)?.interface();
        // SAFETY: Dxgkrnl's argument block.
        let mut args = unsafe { OpenAllocation::from_raw(args) }?;
        let read_only = args.read_only();
        for i in 0..args.len() {
            let made = (|| {
                let dxgk_handle = args.dxgk_allocation(i).ok_or(NtError::INVALID_PARAMETER)?;
                let h = iface
                    .allocation_handle_data(dxgk_handle)?
                    .ok_or(NtError::INVALID_PARAMETER)?;
                // SAFETY: Dxgkrnl's handle data for an allocation is the hAllocation rgpu
                // returned from CreateAllocation, alive until DestroyAllocation, which Dxgkrnl
                // calls only after every open is closed.
                let alloc: &Allocation = unsafe { object(h) };
                // The UMD's creation data comes back with the open: it must be the same.
                let private = args.private_data(i).unwrap_or(&[]);
                if !private.is_empty() && private != alloc.data.encode() {
                    rgpu_log!(error, "OpenAllocation: private data differs from creation");
                    return Err(NtError::INVALID_PARAMETER);
                }
                let opened = PoolBox::try_new(
                    &a.pool,
                    DEVICE_ALLOCATION_TAG,
                    DeviceAllocation {
                        device: dev,
                        data: alloc.data,
                        bytes: alloc.description.size,
                        read_only,
                    },
                )?;
                args.complete(i, into_handle(opened))?;
                a.counters.opened();
                Ok(())
            })();
            if let Err(e) = made {
                for j in 0..i {
                    if let Some(h) = args.completed_handle(j) {
                        // SAFETY: made by this call for element j (DEVICE_ALLOCATION_TAG) and
                        // never seen by Dxgkrnl, since the call fails.
                        let x = unsafe {
                            take_handle::<DeviceAllocation>(h.as_raw(), DEVICE_ALLOCATION_TAG)
                        };
                        if x.is_ok() {
                            a.counters.closed();
                        }
                    }
                }
                return Err(e);
            }
        }
        Ok(())
    })();
    finish("OpenAllocation", r)
}

pub(super) unsafe extern "system" fn ddi_close_allocation(
    h_device: HANDLE,
    args: *const core::ffi::c_void,
) -> NTSTATUS {
    let r = (|| {
        paged_code("CloseAllocation")?;
        // SAFETY: Dxgkrnl passes a device from CreateDevice.
        let dev = unsafe { device(h_device) }?;
        // SAFETY: the device keeps its adapter alive.
        let a = unsafe { &*dev.adapter };
        // SAFETY: Dxgkrnl's argument block.
        let args = unsafe { CloseAllocation::from_raw(args) }?;
        let handles = || (0..args.len()).map(|i| args.handle(i));
        if handles().any(|h| h.is_none()) {
            return Err(NtError::INVALID_PARAMETER);
        }
        for h in handles().flatten() {
            close_one(a, h)?;
        }
        Ok(())
    })();
    finish("CloseAllocation", r)
}

fn close_one(a: &crate::adapter::Adapter, h: DeviceAllocationHandle) -> NtResult<()> {
    // SAFETY: `h` is a handle OpenAllocation returned (DEVICE_ALLOCATION_TAG), closed once
    // (Dxgkrnl's contract).
    let x = unsafe { take_handle::<DeviceAllocation>(h.as_raw(), DEVICE_ALLOCATION_TAG) }?;
    drop(x);
    a.counters.closed();
    Ok(())
}

/// STATUS_NOT_SUPPORTED, logged once per adapter.
fn unsupported(h_adapter: HANDLE, ddi: Unsupported) -> NTSTATUS {
    // SAFETY: Dxgkrnl passes the adapter handle from AddDevice.
    if let Ok(a) = unsafe { adapter(h_adapter) } {
        a.logged.report(ddi);
    }
    sys::STATUS_NOT_SUPPORTED
}

pub(super) unsafe extern "system" fn ddi_describe_allocation(
    h: HANDLE,
    _a: *mut sys::DXGKARG_DESCRIBEALLOCATION,
) -> NTSTATUS {
    unsupported(h, Unsupported::DescribeAllocation)
}

pub(super) unsafe extern "system" fn ddi_get_standard_allocation_driver_data(
    h: HANDLE,
    _a: *mut sys::DXGKARG_GETSTANDARDALLOCATIONDRIVERDATA,
) -> NTSTATUS {
    unsupported(h, Unsupported::GetStandardAllocationDriverData)
}

pub(super) unsafe extern "system" fn ddi_escape(
    h_adapter: HANDLE,
    args: *const sys::DXGKARG_ESCAPE,
) -> NTSTATUS {
    let r = (|| {
        paged_code("Escape")?;
        // SAFETY: Dxgkrnl passes the adapter handle from AddDevice.
        let a = unsafe { adapter(h_adapter) }?;
        // SAFETY: Dxgkrnl's argument block with its (kernel copy of the) escape buffer.
        let args = unsafe { Escape::from_raw(args) }?;
        crate::escape::escape(a, args.data)
    })();
    finish("Escape", r)
}
