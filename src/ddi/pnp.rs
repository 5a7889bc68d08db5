//! PnP, power and interrupt DDIs.

use dxgk::device::Enumerator;
use dxgk::interface::{DxgkInterface, InterfaceError, StartInfo};
use dxgk::interrupt::{DpcContext, InterruptContext};
use dxgk::pool::{Pool, PoolBox};
use dxgk::NtError;
use dxgk_sys as sys;
use dxgk_sys::{DEVICE_OBJECT, DXGKRNL_INTERFACE, DXGK_START_INFO, NTSTATUS, PVOID, ULONG};

use super::{adapter, adapter_mut, finish, paged_code, take_handle, AdapterContext};
use crate::adapter::Adapter;
use crate::version::MINIMUM_INTERFACE_VERSION;
use crate::POOL_TAG;

/// `DISPLAY_ADAPTER_HW_ID` (dispmprt.h): the DeviceUid of the adapter itself in
/// DxgkDdiSetPowerState (other values name children; rgpu has none).
pub const DISPLAY_ADAPTER_HW_ID: ULONG = 0xFFFF_FFFF;

pub(super) unsafe extern "system" fn ddi_add_device(
    physical_device_object: *mut DEVICE_OBJECT,
    miniport_device_context: *mut PVOID,
) -> NTSTATUS {
    let r = (|| {
        paged_code("AddDevice")?;
        if physical_device_object.is_null() || miniport_device_context.is_null() {
            rgpu_log!(error, "AddDevice: NULL argument");
            return Err(NtError::INVALID_PARAMETER);
        }
        let pool = Pool::resolve();
        let passive = dxgk::irql::Passive::check()?;
        // SAFETY: Dxgkrnl's PDO, checked non-null above.
        let enumerator = unsafe { Enumerator::of_pdo(physical_device_object, &passive) }
            .unwrap_or_else(|e| {
                rgpu_log!(
                    warn,
                    "AddDevice: IoGetDeviceProperty(EnumeratorName) failed ({}): assuming a bus device",
                    e
                );
                Enumerator::Bus
            });
        let adapter = PoolBox::try_new(
            &pool,
            POOL_TAG,
            Adapter::new(pool, physical_device_object, enumerator),
        )
        .inspect_err(|e| rgpu_log!(error, "AddDevice: adapter context allocation failed: {}", e))?;
        // SAFETY: checked non-null above; Dxgkrnl provides the slot for the context.
        unsafe { *miniport_device_context = adapter.into_raw().as_ptr().cast() };
        Ok(())
    })();
    dxgk::status::into_ntstatus(r)
}

/// Logs why StartDevice's interface was refused.
fn log_interface_error(e: &InterfaceError) {
    match *e {
        InterfaceError::TooOld { version, minimum } => rgpu_log!(
            error,
            "StartDevice: Dxgkrnl interface {:#x} is older than WDDM 2.4 ({:#x}); rgpu needs the IOMMU memory callbacks",
            version,
            minimum
        ),
        InterfaceError::TooSmall { size, expected } => rgpu_log!(
            error,
            "StartDevice: DXGKRNL_INTERFACE Size {} is smaller than {} for its Version",
            size,
            expected
        ),
        InterfaceError::Null => rgpu_log!(error, "StartDevice: NULL DXGKRNL_INTERFACE"),
    }
}

pub(super) unsafe extern "system" fn ddi_start_device(
    miniport_device_context: PVOID,
    start_info: *mut DXGK_START_INFO,
    interface: *mut DXGKRNL_INTERFACE,
    number_of_video_present_sources: *mut ULONG,
    number_of_children: *mut ULONG,
) -> NTSTATUS {
    let r = (|| {
        paged_code("StartDevice")?;
        if number_of_video_present_sources.is_null() || number_of_children.is_null() {
            return Err(NtError::INVALID_PARAMETER);
        }
        // SAFETY: PnP DDI, serialized by Dxgkrnl; the context came from AddDevice.
        let a = unsafe { adapter_mut(miniport_device_context) }?;
        if a.started().is_some() {
            rgpu_log!(error, "StartDevice: adapter already started");
            return Err(NtError::INVALID_DEVICE_STATE);
        }
        // SAFETY: Dxgkrnl's StartDevice argument (or NULL).
        let info = unsafe { StartInfo::from_raw(start_info) }
            .inspect_err(|_| rgpu_log!(error, "StartDevice: NULL DXGK_START_INFO"))?;
        // SAFETY: Dxgkrnl's DXGKRNL_INTERFACE of at least its Size bytes (or NULL).
        let iface = unsafe { DxgkInterface::copy_from(interface, MINIMUM_INTERFACE_VERSION) }
            .inspect_err(log_interface_error)?;
        // SAFETY: the context from AddDevice; the engine that keeps it is halted before every
        // exclusive access (StopDevice, RemoveDevice) and dropped before the adapter is freed.
        let context = unsafe { AdapterContext::new(miniport_device_context) }?;
        a.start(iface, info, context)?;
        // Render-only: no video present sources, no children.
        // SAFETY: checked non-null above; out-parameters owned by Dxgkrnl.
        unsafe { *number_of_video_present_sources = 0 };
        // SAFETY: as above.
        unsafe { *number_of_children = 0 };
        Ok(())
    })();
    finish("StartDevice", r)
}

pub(super) unsafe extern "system" fn ddi_stop_device(miniport_device_context: PVOID) -> NTSTATUS {
    let r = paged_code("StopDevice").and_then(|_| {
        halt_engine(miniport_device_context);
        // SAFETY: PnP DDI, serialized; the context came from AddDevice; the soft engine thread
        // (the one other user of the adapter during a PnP DDI) has terminated.
        unsafe { adapter_mut(miniport_device_context) }.map(Adapter::stop)
    });
    finish("StopDevice", r)
}

/// Ends the soft engine thread through a shared reference, before a PnP DDI takes the adapter
/// exclusively (the thread holds `&Adapter` while it runs).
fn halt_engine(miniport_device_context: PVOID) {
    // SAFETY: the context came from AddDevice; shared access only.
    if let Ok(a) = unsafe { adapter(miniport_device_context) } {
        a.halt_engine();
    }
}

pub(super) unsafe extern "system" fn ddi_remove_device(miniport_device_context: PVOID) -> NTSTATUS {
    halt_engine(miniport_device_context);
    // SAFETY: the context came from `PoolBox::into_raw` in AddDevice with POOL_TAG, and
    // RemoveDevice is its last use.
    let r =
        unsafe { take_handle::<Adapter>(miniport_device_context, POOL_TAG) }.map(|mut adapter| {
            // Dropping it would stop the adapter too; stop explicitly to log the page pool.
            adapter.stop();
        });
    finish("RemoveDevice", r)
}

pub(super) unsafe extern "system" fn ddi_unload() {
    // Nothing: DriverEntry allocates nothing that outlives it.
}

pub(super) unsafe extern "system" fn ddi_reset_device(miniport_device_context: PVOID) {
    // Bugcheck / shutdown path: no locks, no paging, just quiesce the device.
    // SAFETY: Dxgkrnl passes the context from AddDevice.
    if let Ok(a) = unsafe { adapter(miniport_device_context) } {
        a.reset_hardware();
    }
}

pub(super) unsafe extern "system" fn ddi_interrupt_routine(
    miniport_device_context: PVOID,
    _message_number: ULONG,
) -> sys::BOOLEAN {
    // SAFETY: this is the adapter's interrupt routine (DIRQL), for this call only.
    let isr = unsafe { InterruptContext::assume() };
    // SAFETY: Dxgkrnl passes the context from AddDevice; no allocation, no waits.
    match unsafe { adapter(miniport_device_context) } {
        Ok(a) => a.interrupt(&isr) as sys::BOOLEAN,
        Err(_) => 0,
    }
}

pub(super) unsafe extern "system" fn ddi_dpc_routine(miniport_device_context: PVOID) {
    // SAFETY: this is the adapter's DPC routine (DISPATCH_LEVEL), for this call only.
    let dpc = unsafe { DpcContext::assume() };
    // SAFETY: Dxgkrnl passes the context from AddDevice.
    if let Ok(a) = unsafe { adapter(miniport_device_context) } {
        a.dpc(&dpc);
    }
}

pub(super) unsafe extern "system" fn ddi_set_power_state(
    miniport_device_context: PVOID,
    device_uid: ULONG,
    device_power_state: sys::DEVICE_POWER_STATE,
    _action_type: sys::POWER_ACTION,
) -> NTSTATUS {
    let r = (|| {
        paged_code("SetPowerState")?;
        // SAFETY: Dxgkrnl passes the context from AddDevice.
        let a = unsafe { adapter(miniport_device_context) }?;
        if device_uid != DISPLAY_ADAPTER_HW_ID {
            return Err(NtError::INVALID_PARAMETER);
        }
        let d0 = device_power_state == sys::PowerDeviceD0;
        if !d0 && !(sys::PowerDeviceD1.0..=sys::PowerDeviceD3.0).contains(&device_power_state.0) {
            return Err(NtError::INVALID_PARAMETER);
        }
        a.set_power(d0)?;
        rgpu_log!(
            info,
            "SetPowerState: adapter -> D{}",
            device_power_state.0 - 1
        );
        Ok(())
    })();
    finish("SetPowerState", r)
}

pub(super) unsafe extern "system" fn ddi_notify_surprise_removal(
    miniport_device_context: PVOID,
    _removal_type: sys::DXGK_SURPRISE_REMOVAL_TYPE,
) -> NTSTATUS {
    // SAFETY: Dxgkrnl passes the context from AddDevice.
    let r = unsafe { adapter(miniport_device_context) }.map(|a| {
        a.surprise_remove();
        rgpu_log!(
            warn,
            "surprise removal: the device is gone; no more register access"
        );
    });
    finish("NotifySurpriseRemoval", r)
}
