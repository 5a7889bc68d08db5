//! Queries: adapter capabilities, children (none), node metadata, clocks and debug data.

use dxgk::args::{CalibrateGpuClock, GetNodeMetadata};
use dxgk::query::Request;
use dxgk::NtError;
use dxgk_sys as sys;
use dxgk_sys::{HANDLE, NTSTATUS, PVOID, UINT, ULONG};

use super::{adapter, finish, paged_code};

pub(super) unsafe extern "system" fn ddi_query_adapter_info(
    h_adapter: HANDLE,
    args: *const sys::DXGKARG_QUERYADAPTERINFO,
) -> NTSTATUS {
    let r = (|| {
        paged_code("QueryAdapterInfo")?;
        // SAFETY: Dxgkrnl passes the adapter handle from AddDevice.
        let a = unsafe { adapter(h_adapter) }?;
        // SAFETY: Dxgkrnl's argument block.
        let raw = unsafe { super::args_ref(args) }?;
        let ty = raw.Type.0;
        let version = a.interface_version();
        // SAFETY: the buffers are Dxgkrnl's, valid for the sizes it passes, for this call.
        let request = unsafe { Request::decode(raw, version) };
        let iommu_caps = ty == sys::DXGKQAITYPE_IOMMU_CAPS.0;
        request
            .and_then(|request| crate::caps::answer(version, a.soft_caps(), request))
            .inspect(|()| {
                // The DMA remapping opt-in: only an answer given before StartDevice counts.
                if iommu_caps && a.started().is_none() {
                    a.remapping.record(
                        crate::caps::iommu_caps(a.soft_caps()).DmaRemappingSupported() != 0,
                    );
                }
            })
            .inspect_err(|e| {
                // Dxgkrnl probes optional types: NOT_SUPPORTED is an answer, not an error.
                if *e != NtError::NOT_SUPPORTED {
                    rgpu_log!(error, "QueryAdapterInfo type {}: {}", ty, e);
                }
            })
    })();
    dxgk::status::into_ntstatus(r)
}

pub(super) unsafe extern "system" fn ddi_query_child_relations(
    miniport_device_context: PVOID,
    child_relations: *mut sys::DXGK_CHILD_DESCRIPTOR,
    child_relations_size: ULONG,
) -> NTSTATUS {
    let r = (|| {
        paged_code("QueryChildRelations")?;
        // SAFETY: Dxgkrnl passes the context from AddDevice.
        unsafe { adapter(miniport_device_context) }?;
        if child_relations.is_null() && child_relations_size != 0 {
            return Err(NtError::INVALID_PARAMETER);
        }
        // Zero children: the (zero-terminated) array stays as Dxgkrnl zeroed it.
        Ok(())
    })();
    finish("QueryChildRelations", r)
}

pub(super) unsafe extern "system" fn ddi_query_child_status(
    _miniport_device_context: PVOID,
    _child_status: *mut sys::DXGK_CHILD_STATUS,
    _non_destructive_only: sys::BOOLEAN,
) -> NTSTATUS {
    rgpu_log!(error, "QueryChildStatus: rgpu reports no children");
    sys::STATUS_INVALID_PARAMETER
}

pub(super) unsafe extern "system" fn ddi_query_device_descriptor(
    _miniport_device_context: PVOID,
    _child_uid: ULONG,
    _device_descriptor: *mut sys::DXGK_DEVICE_DESCRIPTOR,
) -> NTSTATUS {
    rgpu_log!(error, "QueryDeviceDescriptor: rgpu reports no children");
    sys::STATUS_INVALID_PARAMETER
}

pub(super) unsafe extern "system" fn ddi_collect_dbg_info(
    _h_adapter: HANDLE,
    _args: *const sys::DXGKARG_COLLECTDBGINFO,
) -> NTSTATUS {
    // Nothing beyond what the fault registers already logged.
    sys::STATUS_SUCCESS
}

pub(super) unsafe extern "system" fn ddi_calibrate_gpu_clock(
    _h_adapter: HANDLE,
    node_ordinal: u32,
    engine_ordinal: u32,
    args: *mut sys::DXGKARG_CALIBRATEGPUCLOCK,
) -> NTSTATUS {
    let r = (|| {
        // SAFETY: Dxgkrnl's argument block.
        let args = unsafe { CalibrateGpuClock::from_raw(args) }?;
        if node_ordinal != 0 || engine_ordinal != 0 {
            return Err(NtError::INVALID_PARAMETER);
        }
        // rgpu has no GPU timestamp counter: report the CPU's performance counter for both,
        // which is an exact (trivial) correlation.
        let (now, frequency) = dxgk::time::performance_counter();
        args.complete(frequency as u64, now as u64, now as u64);
        Ok(())
    })();
    finish("CalibrateGpuClock", r)
}

pub(super) unsafe extern "system" fn ddi_get_node_metadata(
    _h_adapter: HANDLE,
    node_ordinal_and_adapter_index: UINT,
    args: *mut sys::DXGKARG_GETNODEMETADATA,
) -> NTSTATUS {
    let r = (|| {
        // SAFETY: Dxgkrnl's argument block (packed, align 1).
        let args = unsafe { GetNodeMetadata::from_raw(args) }?;
        if node_ordinal_and_adapter_index & 0xFFFF != 0 {
            return Err(NtError::INVALID_PARAMETER);
        }
        args.complete(&crate::caps::node_metadata());
        Ok(())
    })();
    finish("GetNodeMetadata", r)
}

pub(super) unsafe extern "system" fn ddi_set_stable_power_state(
    _h_adapter: HANDLE,
    _args: *const sys::DXGKARG_SETSTABLEPOWERSTATE,
) {
    // rgpu has no power states to pin.
}

pub(super) unsafe extern "system" fn ddi_set_virtual_machine_data(
    _h_adapter: HANDLE,
    _args: *const sys::DXGKARG_SETVIRTUALMACHINEDATA,
) -> NTSTATUS {
    // No paravirtualization state to keep.
    sys::STATUS_SUCCESS
}
