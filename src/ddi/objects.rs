//! Device, context and process objects and root page tables.

use dxgk::args::{
    CreateContext, CreateDevice, CreateProcess, GetRootPageTableSize, SetRootPageTable,
};
use dxgk::handle::DeviceHandle;
use dxgk::pool::PoolBox;
use dxgk::NtError;
use dxgk_sys as sys;
use dxgk_sys::{HANDLE, NTSTATUS, SIZE_T};

use super::{adapter, finish, into_handle, object, paged_code, take_handle};
use crate::objects::{Context, Device, Process, CONTEXT_TAG, DEVICE_TAG, PROCESS_TAG};

pub(super) unsafe extern "system" fn ddi_create_device(
    h_adapter: HANDLE,
    args: *mut sys::DXGKARG_CREATEDEVICE,
) -> NTSTATUS {
    let r = (|| {
        paged_code("CreateDevice")?;
        // SAFETY: Dxgkrnl passes the adapter handle from AddDevice.
        let a = unsafe { adapter(h_adapter) }?;
        // SAFETY: Dxgkrnl's argument block.
        let args = unsafe { CreateDevice::from_raw(args) }?;
        let process = args.process().ok_or(NtError::INVALID_PARAMETER)?;
        // SAFETY: hKmdProcess is a live process from CreateProcess (WDDM 2.0+ contract).
        let process: &Process = unsafe { object(process) };
        let device = PoolBox::try_new(
            &a.pool,
            DEVICE_TAG,
            Device {
                adapter: a,
                process,
            },
        )?;
        args.complete(into_handle(device));
        Ok(())
    })();
    finish("CreateDevice", r)
}

pub(super) unsafe extern "system" fn ddi_destroy_device(h_device: HANDLE) -> NTSTATUS {
    // SAFETY: `h_device` came from CreateDevice (DEVICE_TAG); DestroyDevice is its last use.
    let r = unsafe { take_handle::<Device>(h_device, DEVICE_TAG) }.map(drop);
    finish("DestroyDevice", r)
}

pub(super) unsafe extern "system" fn ddi_create_context(
    h_device: HANDLE,
    args: *mut sys::DXGKARG_CREATECONTEXT,
) -> NTSTATUS {
    let r = (|| {
        paged_code("CreateContext")?;
        let device = DeviceHandle::from_raw(h_device).ok_or(NtError::INVALID_PARAMETER)?;
        // SAFETY: `h_device` is a live device from CreateDevice.
        let device: &Device = unsafe { object(device) };
        // SAFETY: the device keeps its adapter alive (devices are destroyed before RemoveDevice).
        let a = unsafe { &*device.adapter };
        // SAFETY: the device's process outlives its devices (Dxgkrnl destroys devices first).
        let asid = unsafe { &*device.process }.asid;
        // SAFETY: Dxgkrnl's argument block.
        let args = unsafe { CreateContext::from_raw(args) }?;
        if args.node() != 0 {
            return Err(NtError::INVALID_PARAMETER);
        }
        let context = PoolBox::try_new(
            &a.pool,
            CONTEXT_TAG,
            Context {
                node: args.node(),
                asid,
                root: None,
                system: args.system(),
            },
        )?;
        args.complete(into_handle(context), crate::objects::context_info());
        Ok(())
    })();
    finish("CreateContext", r)
}

pub(super) unsafe extern "system" fn ddi_destroy_context(h_context: HANDLE) -> NTSTATUS {
    // SAFETY: `h_context` came from CreateContext (CONTEXT_TAG); DestroyContext is its last use.
    let r = unsafe { take_handle::<Context>(h_context, CONTEXT_TAG) }.map(drop);
    finish("DestroyContext", r)
}

pub(super) unsafe extern "system" fn ddi_create_process(
    h_adapter: HANDLE,
    args: *mut sys::DXGKARG_CREATEPROCESS,
) -> NTSTATUS {
    let r = (|| {
        paged_code("CreateProcess")?;
        // SAFETY: Dxgkrnl passes the adapter handle from AddDevice.
        let a = unsafe { adapter(h_adapter) }?;
        // SAFETY: Dxgkrnl's argument block.
        let args = unsafe { CreateProcess::from_raw(args) }?;
        let system = args.system();
        let asid = a.allocate_asid(system)?;
        let process = match PoolBox::try_new(&a.pool, PROCESS_TAG, Process { system, asid }) {
            Ok(p) => p,
            Err(e) => {
                a.free_asid(asid);
                return Err(e);
            }
        };
        a.set_process_handle(asid, args.dxgk_process());
        args.complete(into_handle(process));
        Ok(())
    })();
    finish("CreateProcess", r)
}

pub(super) unsafe extern "system" fn ddi_destroy_process(
    h_adapter: HANDLE,
    h_kmd_process: HANDLE,
) -> NTSTATUS {
    let r = (|| {
        // SAFETY: the handle came from CreateProcess (PROCESS_TAG) and this is its last use.
        let process = unsafe { take_handle::<Process>(h_kmd_process, PROCESS_TAG) }?;
        // SAFETY: Dxgkrnl passes the adapter handle from AddDevice.
        if let Ok(a) = unsafe { adapter(h_adapter) } {
            a.free_asid(process.asid);
        }
        Ok(())
    })();
    finish("DestroyProcess", r)
}

pub(super) unsafe extern "system" fn ddi_set_root_page_table(
    h_adapter: HANDLE,
    args: *const sys::DXGKARG_SETROOTPAGETABLE,
) {
    let r = (|| {
        // SAFETY: Dxgkrnl's argument block.
        let args = unsafe { SetRootPageTable::from_raw(args) }?;
        let mut ctx = args
            .context
            .ok_or(NtError::INVALID_PARAMETER)?
            .as_non_null()
            .cast::<Context>();
        // SAFETY: a live context from CreateContext; VidMm guarantees it is idle during the
        // call, so nothing else uses it.
        let ctx = unsafe { ctx.as_mut() };
        // SAFETY: Dxgkrnl passes the adapter handle from AddDevice.
        let a = unsafe { adapter(h_adapter) }?;
        // A root in the aperture segment is addressed by its aperture offset.
        let root =
            crate::paging::aperture::table_address(a.aperture(), args.segment, args.address)?;
        let entries = args.entries;
        ctx.root = Some((root, entries));
        a.set_root(ctx.asid, root, entries)
    })();
    // The DDI returns nothing: a failure can only be logged.
    finish("SetRootPageTable", r);
}

pub(super) unsafe extern "system" fn ddi_get_root_page_table_size(
    _h_adapter: HANDLE,
    args: *mut sys::DXGKARG_GETROOTPAGETABLESIZE,
) -> SIZE_T {
    // Only called for two-level schemes; rgpu's root is a fixed 4 KiB table. Answer honestly.
    // SAFETY: Dxgkrnl's argument block.
    if let Ok(args) = unsafe { GetRootPageTableSize::from_raw(args) } {
        args.complete(rgpu_hw::pte::ENTRIES_PER_TABLE as u32);
    }
    rgpu_hw::pte::TABLE_SIZE
}
