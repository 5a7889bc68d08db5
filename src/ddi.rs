//! `DriverEntry` and the DDI thunks.
//!
//! Thunks follow Microsoft's KMDOD sample: check arguments, recover the adapter (or device /
//! context / process object) from its handle, forward to safe code returning `NtResult`, and
//! convert at the boundary with a debug message naming the DDI. Nothing unwinds across a DDI.
//!
//! Concurrency: Dxgkrnl serializes the PnP DDIs (Add/Start/Stop/Remove) of an adapter and calls
//! no other DDI of that adapter during them, so those get `&mut Adapter`; every other DDI only
//! gets `&Adapter`, and per-object state lives in the object its handle names.
//!
//! Status: the PnP, interrupt, capability, power-query, exclusive-access, engine-query,
//! process/device/context, root page table, BuildPagingBuffer (`crate::paging`),
//! SubmitCommandVirtual and PreemptCommand (answered once the ring drains) DDIs are implemented.
//! The allocation DDIs (needed only with a user-mode driver creating allocations) return
//! STATUS_NOT_SUPPORTED and log once per adapter ([`Unsupported`]).

use core::ptr::NonNull;
use core::sync::atomic::{AtomicU32, Ordering};

use dxgk::pool::{Pool, PoolBox};
use dxgk::{NtError, NtResult};
use dxgk_sys as sys;
use dxgk_sys::{
    DEVICE_OBJECT, DRIVER_INITIALIZATION_DATA, DRIVER_OBJECT, DXGKRNL_INTERFACE, DXGK_START_INFO,
    HANDLE, NTSTATUS, PVOID, SIZE_T, UINT, ULONG, UNICODE_STRING,
};

use crate::adapter::Adapter;
use crate::POOL_TAG;

/// Interface versions rgpu can register with, newest first: WDDM 3.1 down to WDDM 2.4 (the
/// first with the IOMMU memory callbacks). One rgpu.sys serves every Windows from 1803 up.
pub const SUPPORTED_INTERFACE_VERSIONS: &[u32] = &[
    sys::DXGKDDI_INTERFACE_VERSION_WDDM3_1,
    sys::DXGKDDI_INTERFACE_VERSION_WDDM3_0,
    sys::DXGKDDI_INTERFACE_VERSION_WDDM2_9,
    sys::DXGKDDI_INTERFACE_VERSION_WDDM2_8,
    sys::DXGKDDI_INTERFACE_VERSION_WDDM2_7,
    sys::DXGKDDI_INTERFACE_VERSION_WDDM2_6,
    sys::DXGKDDI_INTERFACE_VERSION_WDDM2_5,
    sys::DXGKDDI_INTERFACE_VERSION_WDDM2_4,
];

/// The oldest interface rgpu accepts from Dxgkrnl at StartDevice.
pub const MINIMUM_INTERFACE_VERSION: u32 = sys::DXGKDDI_INTERFACE_VERSION_WDDM2_4;

/// Pool tags of the per-handle objects.
const DEVICE_TAG: dxgk::pool::PoolTag = dxgk::pool::PoolTag::new(*b"RgDv");
const CONTEXT_TAG: dxgk::pool::PoolTag = dxgk::pool::PoolTag::new(*b"RgCx");
const PROCESS_TAG: dxgk::pool::PoolTag = dxgk::pool::PoolTag::new(*b"RgPr");

/// DDIs registered but not implemented yet; each logs once per adapter.
#[derive(Clone, Copy, Debug)]
#[repr(u32)]
pub enum Unsupported {
    CreateAllocation = 0,
    DestroyAllocation,
    DescribeAllocation,
    GetStandardAllocationDriverData,
}

/// Bit set of [`Unsupported`] DDIs an adapter has already logged.
#[derive(Default)]
pub struct LoggedOnce(AtomicU32);

impl LoggedOnce {
    fn first_time(&self, ddi: Unsupported) -> bool {
        let bit = 1u32 << ddi as u32;
        self.0.fetch_or(bit, Ordering::Relaxed) & bit == 0
    }
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
        return sys::STATUS_INVALID_PARAMETER;
    }
    // Newest first: Dxgkrnl refuses a version newer than itself, and older Windows versions do
    // not document which status they return for that, so any failure moves one version down.
    let mut status = sys::STATUS_UNSUCCESSFUL;
    for &version in SUPPORTED_INTERFACE_VERSIONS {
        let mut init = initialization_data(version);
        // SAFETY: both pointers come from the I/O manager; `init` is fully initialized and only
        // needs to live for the call.
        status = unsafe { sys::DxgkInitialize(driver_object, registry_path, &mut init) };
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

/// The DDI table for interface `version`: every DDI a render-only GpuMmu adapter with IOMMU
/// isolation provides (reference §1.5). All of them exist at WDDM 2.4, rgpu's minimum, so no
/// member newer than `version` is filled.
pub fn initialization_data(version: u32) -> DRIVER_INITIALIZATION_DATA {
    DRIVER_INITIALIZATION_DATA {
        Version: version,
        // PnP and interrupts.
        DxgkDdiAddDevice: Some(ddi_add_device),
        DxgkDdiStartDevice: Some(ddi_start_device),
        DxgkDdiStopDevice: Some(ddi_stop_device),
        DxgkDdiRemoveDevice: Some(ddi_remove_device),
        DxgkDdiUnload: Some(ddi_unload),
        DxgkDdiResetDevice: Some(ddi_reset_device),
        DxgkDdiInterruptRoutine: Some(ddi_interrupt_routine),
        DxgkDdiDpcRoutine: Some(ddi_dpc_routine),
        DxgkDdiQueryChildRelations: Some(ddi_query_child_relations),
        DxgkDdiQueryChildStatus: Some(ddi_query_child_status),
        DxgkDdiQueryDeviceDescriptor: Some(ddi_query_device_descriptor),
        DxgkDdiSetPowerState: Some(ddi_set_power_state),
        DxgkDdiNotifySurpriseRemoval: Some(ddi_notify_surprise_removal),
        DxgkDdiQueryAdapterInfo: Some(ddi_query_adapter_info),
        // Objects.
        DxgkDdiCreateDevice: Some(ddi_create_device),
        DxgkDdiDestroyDevice: Some(ddi_destroy_device),
        DxgkDdiCreateContext: Some(ddi_create_context),
        DxgkDdiDestroyContext: Some(ddi_destroy_context),
        DxgkDdiCreateProcess: Some(ddi_create_process),
        DxgkDdiDestroyProcess: Some(ddi_destroy_process),
        DxgkDdiSetRootPageTable: Some(ddi_set_root_page_table),
        DxgkDdiGetRootPageTableSize: Some(ddi_get_root_page_table_size),
        // Allocations, paging and submission (arrive with the paging work).
        DxgkDdiCreateAllocation: Some(ddi_create_allocation),
        DxgkDdiDestroyAllocation: Some(ddi_destroy_allocation),
        DxgkDdiDescribeAllocation: Some(ddi_describe_allocation),
        DxgkDdiGetStandardAllocationDriverData: Some(ddi_get_standard_allocation_driver_data),
        DxgkDdiOpenAllocation: Some(ddi_open_allocation),
        DxgkDdiCloseAllocation: Some(ddi_close_allocation),
        DxgkDdiBuildPagingBuffer: Some(ddi_build_paging_buffer),
        DxgkDdiSubmitCommandVirtual: Some(ddi_submit_command_virtual),
        DxgkDdiPreemptCommand: Some(ddi_preempt_command),
        DxgkDdiFormatHistoryBuffer: Some(ddi_format_history_buffer),
        // Scheduling, TDR and engine queries.
        DxgkDdiResetFromTimeout: Some(ddi_reset_from_timeout),
        DxgkDdiRestartFromTimeout: Some(ddi_restart_from_timeout),
        DxgkDdiResetEngine: Some(ddi_reset_engine),
        DxgkDdiQueryDependentEngineGroup: Some(ddi_query_dependent_engine_group),
        DxgkDdiQueryEngineStatus: Some(ddi_query_engine_status),
        DxgkDdiCollectDbgInfo: Some(ddi_collect_dbg_info),
        DxgkDdiCalibrateGpuClock: Some(ddi_calibrate_gpu_clock),
        DxgkDdiGetNodeMetadata: Some(ddi_get_node_metadata),
        DxgkDdiSetStablePowerState: Some(ddi_set_stable_power_state),
        DxgkDdiSetVirtualMachineData: Some(ddi_set_virtual_machine_data),
        // IOMMU isolation.
        DxgkDdiBeginExclusiveAccess: Some(ddi_begin_exclusive_access),
        DxgkDdiEndExclusiveAccess: Some(ddi_end_exclusive_access),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Handle recovery.

/// Recovers the adapter from a MiniportDeviceContext / hAdapter.
///
/// # Safety
/// `context` must be NULL or a pointer AddDevice returned that RemoveDevice has not freed, and
/// the caller must not create overlapping `&mut` (see the module's concurrency note).
unsafe fn adapter<'a>(context: PVOID) -> NtResult<&'a Adapter> {
    let ptr = NonNull::new(context.cast::<Adapter>()).ok_or(NtError::INVALID_PARAMETER)?;
    // SAFETY: per the caller, a live Adapter.
    Ok(unsafe { ptr.as_ref() })
}

/// As [`adapter`], exclusively (PnP DDIs only).
///
/// # Safety
/// As [`adapter`], and Dxgkrnl must be calling a serialized PnP DDI.
unsafe fn adapter_mut<'a>(context: PVOID) -> NtResult<&'a mut Adapter> {
    let mut ptr = NonNull::new(context.cast::<Adapter>()).ok_or(NtError::INVALID_PARAMETER)?;
    // SAFETY: per the caller, a live Adapter with no other reference in use.
    Ok(unsafe { ptr.as_mut() })
}

/// Converts a DDI result, logging failures with the DDI's name.
fn finish(ddi: &str, r: NtResult<()>) -> NTSTATUS {
    match r {
        Ok(()) => sys::STATUS_SUCCESS,
        Err(e) => {
            rgpu_log!(error, "{}: {}", ddi, e);
            e.raw()
        }
    }
}

fn unsupported(h: HANDLE, ddi: Unsupported) -> NTSTATUS {
    // SAFETY: Dxgkrnl passes the adapter handle it got from AddDevice.
    if let Ok(a) = unsafe { adapter(h) } {
        if a.logged.first_time(ddi) {
            rgpu_log!(
                warn,
                "{:?}: not supported yet (returns STATUS_NOT_SUPPORTED)",
                ddi
            );
        }
    }
    sys::STATUS_NOT_SUPPORTED
}

// ---------------------------------------------------------------------------------------------
// PnP.

unsafe extern "system" fn ddi_add_device(
    physical_device_object: *mut DEVICE_OBJECT,
    miniport_device_context: *mut PVOID,
) -> NTSTATUS {
    if physical_device_object.is_null() || miniport_device_context.is_null() {
        rgpu_log!(error, "AddDevice: NULL argument");
        return sys::STATUS_INVALID_PARAMETER;
    }
    let pool = Pool::resolve();
    match PoolBox::try_new(&pool, POOL_TAG, Adapter::new(pool, physical_device_object)) {
        Ok(b) => {
            // SAFETY: checked non-null above; Dxgkrnl provides the slot for the context.
            unsafe { *miniport_device_context = b.into_raw().as_ptr().cast() };
            sys::STATUS_SUCCESS
        }
        Err(e) => {
            rgpu_log!(error, "AddDevice: adapter context allocation failed: {}", e);
            e.raw()
        }
    }
}

unsafe extern "system" fn ddi_start_device(
    miniport_device_context: PVOID,
    start_info: *mut DXGK_START_INFO,
    interface: *mut DXGKRNL_INTERFACE,
    number_of_video_present_sources: *mut ULONG,
    number_of_children: *mut ULONG,
) -> NTSTATUS {
    let r = (|| {
        if number_of_video_present_sources.is_null() || number_of_children.is_null() {
            return Err(NtError::INVALID_PARAMETER);
        }
        // SAFETY: PnP DDI, serialized by Dxgkrnl; the context came from AddDevice.
        let a = unsafe { adapter_mut(miniport_device_context) }?;
        // SAFETY: the pointers are Dxgkrnl's StartDevice arguments.
        unsafe { a.start(start_info, interface) }?;
        // Render-only: no video present sources, no children.
        // SAFETY: checked non-null above; out-parameters owned by Dxgkrnl.
        unsafe { *number_of_video_present_sources = 0 };
        // SAFETY: as above.
        unsafe { *number_of_children = 0 };
        Ok(())
    })();
    finish("StartDevice", r)
}

unsafe extern "system" fn ddi_stop_device(miniport_device_context: PVOID) -> NTSTATUS {
    // SAFETY: PnP DDI, serialized; the context came from AddDevice.
    let r = unsafe { adapter_mut(miniport_device_context) }.map(Adapter::stop);
    finish("StopDevice", r)
}

unsafe extern "system" fn ddi_remove_device(miniport_device_context: PVOID) -> NTSTATUS {
    let Some(ptr) = NonNull::new(miniport_device_context.cast::<Adapter>()) else {
        rgpu_log!(error, "RemoveDevice: NULL context");
        return sys::STATUS_INVALID_PARAMETER;
    };
    // SAFETY: the context came from `PoolBox::into_raw` in AddDevice with POOL_TAG, and
    // RemoveDevice is its last use. Dropping it stops the adapter first if still started.
    let mut adapter = unsafe { PoolBox::from_raw(ptr, POOL_TAG) };
    adapter.stop();
    drop(adapter);
    sys::STATUS_SUCCESS
}

unsafe extern "system" fn ddi_unload() {
    // Nothing: DriverEntry allocates nothing that outlives it.
}

unsafe extern "system" fn ddi_reset_device(miniport_device_context: PVOID) {
    // Bugcheck / shutdown path: no locks, no paging, just quiesce the device.
    // SAFETY: Dxgkrnl passes the context from AddDevice.
    if let Ok(a) = unsafe { adapter(miniport_device_context) } {
        a.reset_hardware();
    }
}

// ---------------------------------------------------------------------------------------------
// Interrupts.

unsafe extern "system" fn ddi_interrupt_routine(
    miniport_device_context: PVOID,
    _message_number: ULONG,
) -> sys::BOOLEAN {
    // SAFETY: Dxgkrnl passes the context from AddDevice; DIRQL, no allocation, no waits.
    match unsafe { adapter(miniport_device_context) } {
        Ok(a) => a.interrupt() as sys::BOOLEAN,
        Err(_) => 0,
    }
}

unsafe extern "system" fn ddi_dpc_routine(miniport_device_context: PVOID) {
    // SAFETY: Dxgkrnl passes the context from AddDevice; DISPATCH_LEVEL.
    if let Ok(a) = unsafe { adapter(miniport_device_context) } {
        a.dpc();
    }
}

// ---------------------------------------------------------------------------------------------
// Children, power, capabilities.

unsafe extern "system" fn ddi_query_child_relations(
    miniport_device_context: PVOID,
    child_relations: *mut sys::DXGK_CHILD_DESCRIPTOR,
    child_relations_size: ULONG,
) -> NTSTATUS {
    // SAFETY: Dxgkrnl passes the context from AddDevice.
    let r = unsafe { adapter(miniport_device_context) }.and_then(|_| {
        if child_relations.is_null() && child_relations_size != 0 {
            return Err(NtError::INVALID_PARAMETER);
        }
        // Zero children: the (zero-terminated) array stays as Dxgkrnl zeroed it.
        Ok(())
    });
    finish("QueryChildRelations", r)
}

unsafe extern "system" fn ddi_query_child_status(
    _miniport_device_context: PVOID,
    _child_status: *mut sys::DXGK_CHILD_STATUS,
    _non_destructive_only: sys::BOOLEAN,
) -> NTSTATUS {
    rgpu_log!(error, "QueryChildStatus: rgpu reports no children");
    sys::STATUS_INVALID_PARAMETER
}

unsafe extern "system" fn ddi_query_device_descriptor(
    _miniport_device_context: PVOID,
    _child_uid: ULONG,
    _device_descriptor: *mut sys::DXGK_DEVICE_DESCRIPTOR,
) -> NTSTATUS {
    rgpu_log!(error, "QueryDeviceDescriptor: rgpu reports no children");
    sys::STATUS_INVALID_PARAMETER
}

/// `DISPLAY_ADAPTER_HW_ID` (dispmprt.h): the DeviceUid of the adapter itself in
/// DxgkDdiSetPowerState (other values name children; rgpu has none).
pub const DISPLAY_ADAPTER_HW_ID: ULONG = 0xFFFF_FFFF;

unsafe extern "system" fn ddi_set_power_state(
    miniport_device_context: PVOID,
    device_uid: ULONG,
    device_power_state: sys::DEVICE_POWER_STATE,
    _action_type: sys::POWER_ACTION,
) -> NTSTATUS {
    let r = (|| {
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

unsafe extern "system" fn ddi_notify_surprise_removal(
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

unsafe extern "system" fn ddi_query_adapter_info(
    h_adapter: HANDLE,
    args: *const sys::DXGKARG_QUERYADAPTERINFO,
) -> NTSTATUS {
    let r = (|| {
        // SAFETY: Dxgkrnl passes the adapter handle from AddDevice.
        let a = unsafe { adapter(h_adapter) }?;
        // SAFETY: non-null checked by as_ref; Dxgkrnl's argument block.
        let args = unsafe { args.as_ref() }.ok_or(NtError::INVALID_PARAMETER)?;
        let version = a
            .started()
            .map_or(MINIMUM_INTERFACE_VERSION, |s| s.interface_version());
        // SAFETY: the buffers are Dxgkrnl's, valid for the sizes it passes.
        unsafe { crate::caps::query_adapter_info(version, args) }.inspect_err(|e| {
            if *e != NtError::NOT_SUPPORTED {
                rgpu_log!(error, "QueryAdapterInfo type {}: {}", args.Type.0, e);
            }
        })
    })();
    match r {
        Ok(()) => sys::STATUS_SUCCESS,
        Err(e) => e.raw(),
    }
}

// ---------------------------------------------------------------------------------------------
// Device, context and process objects.

/// A D3D device (DxgkDdiCreateDevice).
pub struct Device {
    adapter: *const Adapter,
    /// The process that owns the device (WDDM 2.0+ `hKmdProcess`).
    process: *const Process,
}

/// A scheduling context (DxgkDdiCreateContext).
pub struct Context {
    /// Node the context runs on.
    pub node: UINT,
    /// Device ASID of the owning process.
    pub asid: u8,
    /// Root page table set by DxgkDdiSetRootPageTable: (segment offset, entries).
    pub root: Option<(u64, UINT)>,
    /// True for the system (paging) context.
    pub system: bool,
}

/// A GPU VA space owner (DxgkDdiCreateProcess).
pub struct Process {
    /// True for the system paging process.
    pub system: bool,
    /// The device address space this process runs in.
    pub asid: u8,
}

/// DMA buffer size rgpu asks VidMm for, per context.
pub const DMA_BUFFER_SIZE: UINT = 64 * 1024;

unsafe extern "system" fn ddi_create_device(
    h_adapter: HANDLE,
    args: *mut sys::DXGKARG_CREATEDEVICE,
) -> NTSTATUS {
    let r = (|| {
        // SAFETY: Dxgkrnl passes the adapter handle from AddDevice.
        let a = unsafe { adapter(h_adapter) }?;
        // SAFETY: Dxgkrnl's argument block (only `hDevice`, present in every version, is used).
        let args = unsafe { args.as_mut() }.ok_or(NtError::INVALID_PARAMETER)?;
        let process = args.hKmdProcess.cast::<Process>().cast_const();
        if process.is_null() {
            return Err(NtError::INVALID_PARAMETER);
        }
        let device = PoolBox::try_new(
            &a.pool,
            DEVICE_TAG,
            Device {
                adapter: a,
                process,
            },
        )?;
        args.hDevice = device.into_raw().as_ptr().cast();
        Ok(())
    })();
    finish("CreateDevice", r)
}

/// Takes back a per-handle object handed to Dxgkrnl with `PoolBox::into_raw` and frees it.
///
/// # Safety
/// `handle` must be NULL or a handle this driver created for a `T` with `tag`, used for the last
/// time (Dxgkrnl's Destroy* contract).
unsafe fn release_handle<T>(ddi: &str, handle: HANDLE, tag: dxgk::pool::PoolTag) -> NTSTATUS {
    let Some(ptr) = NonNull::new(handle.cast::<T>()) else {
        return finish(ddi, Err(NtError::INVALID_PARAMETER));
    };
    // SAFETY: per the caller, the object came from `PoolBox::into_raw` with `tag`, last use.
    drop(unsafe { PoolBox::from_raw(ptr, tag) });
    sys::STATUS_SUCCESS
}

unsafe extern "system" fn ddi_destroy_device(h_device: HANDLE) -> NTSTATUS {
    // SAFETY: `h_device` came from CreateDevice (DEVICE_TAG); DestroyDevice is its last use.
    unsafe { release_handle::<Device>("DestroyDevice", h_device, DEVICE_TAG) }
}

unsafe extern "system" fn ddi_create_context(
    h_device: HANDLE,
    args: *mut sys::DXGKARG_CREATECONTEXT,
) -> NTSTATUS {
    let r = (|| {
        let device = NonNull::new(h_device.cast::<Device>()).ok_or(NtError::INVALID_PARAMETER)?;
        // SAFETY: `h_device` is a live device from CreateDevice.
        let device = unsafe { device.as_ref() };
        // SAFETY: the device keeps its adapter alive (devices are destroyed before RemoveDevice).
        let a = unsafe { &*device.adapter };
        // SAFETY: Dxgkrnl's argument block.
        let args = unsafe { args.as_mut() }.ok_or(NtError::INVALID_PARAMETER)?;
        if args.NodeOrdinal != 0 {
            return Err(NtError::INVALID_PARAMETER);
        }
        let system = args.Flags.SystemContext() != 0;
        // SAFETY: the device's process outlives its devices (Dxgkrnl destroys devices first).
        let asid = unsafe { &*device.process }.asid;
        let context = PoolBox::try_new(
            &a.pool,
            CONTEXT_TAG,
            Context {
                node: args.NodeOrdinal,
                asid,
                root: None,
                system,
            },
        )?;
        args.ContextInfo.DmaBufferSize = DMA_BUFFER_SIZE;
        args.ContextInfo.DmaBufferSegmentSet = 1 << (crate::caps::APERTURE_SEGMENT_ID - 1);
        args.ContextInfo.DmaBufferPrivateDataSize = 0;
        args.ContextInfo.AllocationListSize = 0;
        args.ContextInfo.PatchLocationListSize = 0;
        args.hContext = context.into_raw().as_ptr().cast();
        Ok(())
    })();
    finish("CreateContext", r)
}

unsafe extern "system" fn ddi_destroy_context(h_context: HANDLE) -> NTSTATUS {
    // SAFETY: `h_context` came from CreateContext (CONTEXT_TAG); DestroyContext is its last use.
    unsafe { release_handle::<Context>("DestroyContext", h_context, CONTEXT_TAG) }
}

unsafe extern "system" fn ddi_create_process(
    h_adapter: HANDLE,
    args: *mut sys::DXGKARG_CREATEPROCESS,
) -> NTSTATUS {
    let r = (|| {
        // SAFETY: Dxgkrnl passes the adapter handle from AddDevice.
        let a = unsafe { adapter(h_adapter) }?;
        // SAFETY: Dxgkrnl's argument block.
        let args = unsafe { args.as_mut() }.ok_or(NtError::INVALID_PARAMETER)?;
        let system = args.Flags.SystemProcess() != 0;
        let asid = a.allocate_asid(system)?;
        let process = match PoolBox::try_new(&a.pool, PROCESS_TAG, Process { system, asid }) {
            Ok(p) => p,
            Err(e) => {
                a.free_asid(asid);
                return Err(e);
            }
        };
        a.set_process_handle(asid, args.hDxgkProcess);
        args.hKmdProcess = process.into_raw().as_ptr().cast();
        Ok(())
    })();
    finish("CreateProcess", r)
}

unsafe extern "system" fn ddi_destroy_process(
    h_adapter: HANDLE,
    h_kmd_process: HANDLE,
) -> NTSTATUS {
    let Some(ptr) = NonNull::new(h_kmd_process.cast::<Process>()) else {
        return finish("DestroyProcess", Err(NtError::INVALID_PARAMETER));
    };
    // SAFETY: the handle came from CreateProcess (PROCESS_TAG) and this is its last use.
    let process = unsafe { PoolBox::from_raw(ptr, PROCESS_TAG) };
    // SAFETY: Dxgkrnl passes the adapter handle from AddDevice.
    if let Ok(a) = unsafe { adapter(h_adapter) } {
        a.free_asid(process.asid);
    }
    drop(process);
    sys::STATUS_SUCCESS
}

unsafe extern "system" fn ddi_set_root_page_table(
    h_adapter: HANDLE,
    args: *const sys::DXGKARG_SETROOTPAGETABLE,
) {
    // SAFETY: Dxgkrnl's argument block.
    let Some(args) = (unsafe { args.as_ref() }) else {
        rgpu_log!(error, "SetRootPageTable: NULL arguments");
        return;
    };
    let Some(mut ctx) = NonNull::new(args.hContext.cast::<Context>()) else {
        rgpu_log!(error, "SetRootPageTable: NULL context");
        return;
    };
    // SAFETY: a live context from CreateContext; VidMm guarantees it is idle during the call.
    let ctx = unsafe { ctx.as_mut() };
    let root = args.Address.SegmentOffset;
    ctx.root = Some((root, args.NumEntries));
    // SAFETY: Dxgkrnl passes the adapter handle from AddDevice.
    let r = unsafe { adapter(h_adapter) }.and_then(|a| a.set_root(ctx.asid, root, args.NumEntries));
    if let Err(e) = r {
        rgpu_log!(error, "SetRootPageTable: {}", e);
    }
}

unsafe extern "system" fn ddi_get_root_page_table_size(
    _h_adapter: HANDLE,
    args: *mut sys::DXGKARG_GETROOTPAGETABLESIZE,
) -> SIZE_T {
    // Only called for two-level schemes; rgpu's root is a fixed 4 KiB table. Answer honestly.
    // SAFETY: Dxgkrnl's argument block.
    if let Some(args) = unsafe { args.as_mut() } {
        args.NumberOfPte = rgpu_hw::pte::ENTRIES_PER_TABLE as UINT;
    }
    rgpu_hw::pte::TABLE_SIZE
}

// ---------------------------------------------------------------------------------------------
// Allocations (no user-mode driver creates any yet), paging, submission. OpenAllocation,
// CloseAllocation and FormatHistoryBuffer get a device or context handle, not the adapter, so
// they cannot log once per adapter and just return STATUS_NOT_SUPPORTED.

unsafe extern "system" fn ddi_create_allocation(
    h: HANDLE,
    _a: *mut sys::DXGKARG_CREATEALLOCATION,
) -> NTSTATUS {
    unsupported(h, Unsupported::CreateAllocation)
}
unsafe extern "system" fn ddi_destroy_allocation(
    h: HANDLE,
    _a: *const sys::DXGKARG_DESTROYALLOCATION,
) -> NTSTATUS {
    unsupported(h, Unsupported::DestroyAllocation)
}
unsafe extern "system" fn ddi_describe_allocation(
    h: HANDLE,
    _a: *mut sys::DXGKARG_DESCRIBEALLOCATION,
) -> NTSTATUS {
    unsupported(h, Unsupported::DescribeAllocation)
}
unsafe extern "system" fn ddi_get_standard_allocation_driver_data(
    h: HANDLE,
    _a: *mut sys::DXGKARG_GETSTANDARDALLOCATIONDRIVERDATA,
) -> NTSTATUS {
    unsupported(h, Unsupported::GetStandardAllocationDriverData)
}
unsafe extern "system" fn ddi_open_allocation(
    _h_device: HANDLE,
    _a: *const sys::DXGKARG_OPENALLOCATION,
) -> NTSTATUS {
    sys::STATUS_NOT_SUPPORTED
}
unsafe extern "system" fn ddi_close_allocation(
    _h_device: HANDLE,
    _a: *const core::ffi::c_void,
) -> NTSTATUS {
    sys::STATUS_NOT_SUPPORTED
}
unsafe extern "system" fn ddi_build_paging_buffer(
    h_adapter: HANDLE,
    args: *mut sys::DXGKARG_BUILDPAGINGBUFFER,
) -> NTSTATUS {
    let r = (|| {
        // SAFETY: Dxgkrnl passes the adapter handle from AddDevice.
        let a = unsafe { adapter(h_adapter) }?;
        // SAFETY: Dxgkrnl's argument block (or NULL), ours for this call, with the DMA buffer,
        // entry and range arrays, CPU table and MDLs in it valid as the DDI documents.
        let req = unsafe {
            dxgk::paging::BuildPagingBuffer::from_raw(args, crate::paging::MAX_TABLE_ENTRIES)
        }
        .map_err(|e| crate::paging::report(e.into()))?;
        let asid_of = |h: dxgk::handle::ProcessHandle| {
            let process = h.as_non_null().cast::<Process>();
            // SAFETY: a non-NULL hProcess in FLUSH_TLB is the process object rgpu returned from
            // CreateProcess, alive until DestroyProcess (VidMm's contract).
            Some(unsafe { process.as_ref() }.asid)
        };
        let ctx = crate::paging::PagingContext {
            aperture: a.aperture(),
            asid_of: Some(&asid_of),
        };
        ctx.build(req)
    })();
    match r {
        Ok(()) => sys::STATUS_SUCCESS,
        Err(e) if e == NtError::GRAPHICS_INSUFFICIENT_DMA_BUFFER => e.raw(),
        Err(e) => finish("BuildPagingBuffer", Err(e)),
    }
}
unsafe extern "system" fn ddi_submit_command_virtual(
    h_adapter: HANDLE,
    args: *const sys::DXGKARG_SUBMITCOMMANDVIRTUAL,
) -> NTSTATUS {
    let r = (|| {
        // SAFETY: Dxgkrnl passes the adapter handle from AddDevice.
        let a = unsafe { adapter(h_adapter) }?;
        // SAFETY: Dxgkrnl's argument block.
        let args = unsafe { args.as_ref() }.ok_or(NtError::INVALID_PARAMETER)?;
        let ctx =
            NonNull::new(args.hContext.cast::<Context>()).ok_or(NtError::INVALID_PARAMETER)?;
        // SAFETY: a live context from CreateContext.
        let ctx = unsafe { ctx.as_ref() };
        if args.NodeOrdinal != 0 || args.EngineOrdinal != 0 || args.DmaBufferSize % 4 != 0 {
            return Err(NtError::INVALID_PARAMETER);
        }
        a.submit(
            args.DmaBufferVirtualAddress,
            args.DmaBufferSize,
            ctx.asid,
            ctx.system,
            u64::from(args.SubmissionFenceId),
        )
    })();
    finish("SubmitCommandVirtual", r)
}
/// DISPATCH_LEVEL. See [`Adapter::preempt`]: answered with DMA_PREEMPTED once the ring drains.
unsafe extern "system" fn ddi_preempt_command(
    h_adapter: HANDLE,
    args: *const sys::DXGKARG_PREEMPTCOMMAND,
) -> NTSTATUS {
    let r = (|| {
        // SAFETY: Dxgkrnl passes the adapter handle from AddDevice.
        let a = unsafe { adapter(h_adapter) }?;
        // SAFETY: Dxgkrnl's argument block.
        let args = unsafe { args.as_ref() }.ok_or(NtError::INVALID_PARAMETER)?;
        if args.NodeOrdinal != 0 || args.EngineOrdinal != 0 {
            rgpu_log!(
                error,
                "PreemptCommand: node {} engine {}: rgpu has one node with one engine",
                args.NodeOrdinal,
                args.EngineOrdinal
            );
            return Err(NtError::INVALID_PARAMETER);
        }
        a.preempt(args.PreemptionFenceId)
    })();
    finish("PreemptCommand", r)
}
unsafe extern "system" fn ddi_format_history_buffer(
    _h_context: HANDLE,
    _a: *mut sys::DXGKARG_FORMATHISTORYBUFFER,
) -> NTSTATUS {
    sys::STATUS_NOT_SUPPORTED
}

// ---------------------------------------------------------------------------------------------
// TDR and engine queries.

unsafe extern "system" fn ddi_reset_from_timeout(h_adapter: HANDLE) -> NTSTATUS {
    // SAFETY: Dxgkrnl passes the adapter handle from AddDevice. Runs at HIGH_LEVEL-safe code:
    // register writes only.
    let r = unsafe { adapter(h_adapter) }.map(Adapter::reset_hardware);
    finish("ResetFromTimeout", r)
}

unsafe extern "system" fn ddi_restart_from_timeout(h_adapter: HANDLE) -> NTSTATUS {
    // SAFETY: Dxgkrnl passes the adapter handle from AddDevice.
    let r = unsafe { adapter(h_adapter) }.and_then(Adapter::restart_hardware);
    finish("RestartFromTimeout", r)
}

unsafe extern "system" fn ddi_reset_engine(
    h_adapter: HANDLE,
    args: *mut sys::DXGKARG_RESETENGINE,
) -> NTSTATUS {
    let r = (|| {
        // SAFETY: Dxgkrnl passes the adapter handle from AddDevice.
        let a = unsafe { adapter(h_adapter) }?;
        // SAFETY: Dxgkrnl's argument block.
        let args = unsafe { args.as_mut() }.ok_or(NtError::INVALID_PARAMETER)?;
        if args.NodeOrdinal != 0 || args.EngineOrdinal != 0 {
            return Err(NtError::INVALID_PARAMETER);
        }
        // Everything queued and not completed is aborted by the reset: the last aborted fence
        // is the last one submitted (equal to the last completed one when nothing was lost).
        let last_submitted = a.last_submitted_fence();
        a.reset_hardware();
        a.restart_hardware()?;
        args.LastAbortedFenceId = last_submitted;
        Ok(())
    })();
    finish("ResetEngine", r)
}

unsafe extern "system" fn ddi_query_dependent_engine_group(
    _h_adapter: HANDLE,
    args: *mut sys::DXGKARG_QUERYDEPENDENTENGINEGROUP,
) -> NTSTATUS {
    // SAFETY: Dxgkrnl's argument block.
    let Some(args) = (unsafe { args.as_mut() }) else {
        return finish("QueryDependentEngineGroup", Err(NtError::INVALID_PARAMETER));
    };
    if args.NodeOrdinal != 0 || args.EngineOrdinal != 0 {
        return finish("QueryDependentEngineGroup", Err(NtError::INVALID_PARAMETER));
    }
    // One engine: it depends on nothing else.
    args.DependentNodeOrdinalMask = 0;
    sys::STATUS_SUCCESS
}

unsafe extern "system" fn ddi_query_engine_status(
    h_adapter: HANDLE,
    args: *mut sys::DXGKARG_QUERYENGINESTATUS,
) -> NTSTATUS {
    let r = (|| {
        // SAFETY: Dxgkrnl passes the adapter handle from AddDevice.
        let a = unsafe { adapter(h_adapter) }?;
        // SAFETY: Dxgkrnl's argument block.
        let args = unsafe { args.as_mut() }.ok_or(NtError::INVALID_PARAMETER)?;
        if args.NodeOrdinal != 0 || args.EngineOrdinal != 0 {
            return Err(NtError::INVALID_PARAMETER);
        }
        args.EngineStatus
            .set_Responsive(a.engine_responsive() as UINT);
        Ok(())
    })();
    finish("QueryEngineStatus", r)
}

unsafe extern "system" fn ddi_collect_dbg_info(
    _h_adapter: HANDLE,
    _args: *const sys::DXGKARG_COLLECTDBGINFO,
) -> NTSTATUS {
    // Nothing beyond what the fault registers already logged.
    sys::STATUS_SUCCESS
}

unsafe extern "system" fn ddi_calibrate_gpu_clock(
    _h_adapter: HANDLE,
    node_ordinal: u32,
    engine_ordinal: u32,
    args: *mut sys::DXGKARG_CALIBRATEGPUCLOCK,
) -> NTSTATUS {
    // SAFETY: Dxgkrnl's argument block.
    let Some(args) = (unsafe { args.as_mut() }) else {
        return finish("CalibrateGpuClock", Err(NtError::INVALID_PARAMETER));
    };
    if node_ordinal != 0 || engine_ordinal != 0 {
        return finish("CalibrateGpuClock", Err(NtError::INVALID_PARAMETER));
    }
    // rgpu has no GPU timestamp counter: report the CPU's performance counter for both, which
    // is an exact (trivial) correlation.
    let mut frequency = sys::LARGE_INTEGER { QuadPart: 0 };
    // SAFETY: valid out-parameter; any IRQL.
    let now = unsafe { sys::KeQueryPerformanceCounter(&mut frequency) };
    // SAFETY: LARGE_INTEGER is plain data; QuadPart covers all of it.
    let now = unsafe { now.QuadPart };
    // SAFETY: as above.
    let frequency = unsafe { frequency.QuadPart };
    args.GpuFrequency = frequency as u64;
    args.GpuClockCounter = now as u64;
    args.CpuClockCounter = now as u64;
    sys::STATUS_SUCCESS
}

unsafe extern "system" fn ddi_get_node_metadata(
    _h_adapter: HANDLE,
    node_ordinal_and_adapter_index: UINT,
    args: *mut sys::DXGKARG_GETNODEMETADATA,
) -> NTSTATUS {
    // SAFETY: Dxgkrnl's argument block (packed, align 1).
    let Some(args) = (unsafe { args.as_mut() }) else {
        return finish("GetNodeMetadata", Err(NtError::INVALID_PARAMETER));
    };
    if node_ordinal_and_adapter_index & 0xFFFF != 0 {
        return finish("GetNodeMetadata", Err(NtError::INVALID_PARAMETER));
    }
    args.EngineType = sys::DXGK_ENGINE_TYPE_3D;
    let mut name = [0u16; 32];
    for (dst, src) in name.iter_mut().zip("rgpu 3D".encode_utf16()) {
        *dst = src;
    }
    args.FriendlyName = name;
    args.GpuMmuSupported = 1;
    args.IoMmuSupported = 0;
    sys::STATUS_SUCCESS
}

unsafe extern "system" fn ddi_set_stable_power_state(
    _h_adapter: HANDLE,
    _args: *const sys::DXGKARG_SETSTABLEPOWERSTATE,
) {
    // rgpu has no power states to pin.
}

unsafe extern "system" fn ddi_set_virtual_machine_data(
    _h_adapter: HANDLE,
    _args: *const sys::DXGKARG_SETVIRTUALMACHINEDATA,
) -> NTSTATUS {
    // No paravirtualization state to keep.
    sys::STATUS_SUCCESS
}

// ---------------------------------------------------------------------------------------------
// IOMMU isolation: between Begin and End the device must not touch system memory.

unsafe extern "system" fn ddi_begin_exclusive_access(
    h_adapter: HANDLE,
    _args: *mut sys::DXGKARG_BEGINEXCLUSIVEACCESS,
) -> NTSTATUS {
    // SAFETY: Dxgkrnl passes the adapter handle from AddDevice.
    let r = unsafe { adapter(h_adapter) }.map(Adapter::begin_exclusive_access);
    finish("BeginExclusiveAccess", r)
}

unsafe extern "system" fn ddi_end_exclusive_access(
    h_adapter: HANDLE,
    _args: *mut sys::DXGKARG_ENDEXCLUSIVEACCESS,
) -> NTSTATUS {
    // SAFETY: Dxgkrnl passes the adapter handle from AddDevice.
    let r = unsafe { adapter(h_adapter) }.map(Adapter::end_exclusive_access);
    finish("EndExclusiveAccess", r)
}
