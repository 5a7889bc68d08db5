//! The DDI entry layer: `DriverEntry`, the DDI table and the `extern "system"` thunks.
//!
//! This layer (with `crate::seam`) is the only place in the driver with `unsafe`. Every thunk
//! has the shape of Microsoft's KMDOD sample:
//! 1. check the IRQL where the DDI is documented PASSIVE_LEVEL (`paged_code`),
//! 2. null-check the arguments,
//! 3. recover the adapter (or device / context / process object) from its handle,
//! 4. check its state where it matters (started, not removed),
//! 5. decode the raw argument block once into typed values (views from `dxgk`),
//! 6. forward to safe code returning `NtResult`, and convert at the boundary with a debug
//!    message naming the DDI (`finish`). Nothing unwinds across a DDI.
//!
//! Concurrency: Dxgkrnl serializes the PnP DDIs (Add/Start/Stop/Remove) of an adapter and calls
//! no other DDI of that adapter during them, so those get `&mut Adapter`; every other DDI only
//! gets `&Adapter`, and per-object state lives in the object its handle names.
//!
//! Status: the PnP, interrupt, capability, power-query, exclusive-access, engine-query,
//! process/device/context, root page table, BuildPagingBuffer (`crate::paging`),
//! SubmitCommandVirtual and PreemptCommand (answered once the ring drains), allocation
//! (Create/Destroy/Open/CloseAllocation, `allocation`) and Escape DDIs are implemented.
//! DescribeAllocation and GetStandardAllocationDriverData, which Dxgkrnl needs only for display
//! surfaces, return STATUS_NOT_SUPPORTED and log once per adapter
//! ([`crate::log_once::Unsupported`]).

mod allocation;
mod info;
mod objects;
mod pnp;
mod scheduling;

use core::ptr::NonNull;

use dxgk::handle::{AdapterHandle, KmdHandle};
use dxgk::irql::Passive;
use dxgk::pool::{PoolBox, PoolTag};
use dxgk::{NtError, NtResult};
use dxgk_sys as sys;
use dxgk_sys::{DRIVER_INITIALIZATION_DATA, DRIVER_OBJECT, HANDLE, NTSTATUS, UNICODE_STRING};

pub use self::pnp::DISPLAY_ADAPTER_HW_ID;
use crate::adapter::Adapter;
pub use crate::objects::DMA_BUFFER_SIZE;
pub use crate::version::{MINIMUM_INTERFACE_VERSION, SUPPORTED_INTERFACE_VERSIONS};

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
        DxgkDdiAddDevice: Some(pnp::ddi_add_device),
        DxgkDdiStartDevice: Some(pnp::ddi_start_device),
        DxgkDdiStopDevice: Some(pnp::ddi_stop_device),
        DxgkDdiRemoveDevice: Some(pnp::ddi_remove_device),
        DxgkDdiUnload: Some(pnp::ddi_unload),
        DxgkDdiResetDevice: Some(pnp::ddi_reset_device),
        DxgkDdiInterruptRoutine: Some(pnp::ddi_interrupt_routine),
        DxgkDdiDpcRoutine: Some(pnp::ddi_dpc_routine),
        DxgkDdiQueryChildRelations: Some(info::ddi_query_child_relations),
        DxgkDdiQueryChildStatus: Some(info::ddi_query_child_status),
        DxgkDdiQueryDeviceDescriptor: Some(info::ddi_query_device_descriptor),
        DxgkDdiSetPowerState: Some(pnp::ddi_set_power_state),
        DxgkDdiNotifySurpriseRemoval: Some(pnp::ddi_notify_surprise_removal),
        DxgkDdiQueryAdapterInfo: Some(info::ddi_query_adapter_info),
        // Objects.
        DxgkDdiCreateDevice: Some(objects::ddi_create_device),
        DxgkDdiDestroyDevice: Some(objects::ddi_destroy_device),
        DxgkDdiCreateContext: Some(objects::ddi_create_context),
        DxgkDdiDestroyContext: Some(objects::ddi_destroy_context),
        DxgkDdiCreateProcess: Some(objects::ddi_create_process),
        DxgkDdiDestroyProcess: Some(objects::ddi_destroy_process),
        DxgkDdiSetRootPageTable: Some(objects::ddi_set_root_page_table),
        DxgkDdiGetRootPageTableSize: Some(objects::ddi_get_root_page_table_size),
        // Allocations, paging and submission.
        DxgkDdiCreateAllocation: Some(allocation::ddi_create_allocation),
        DxgkDdiDestroyAllocation: Some(allocation::ddi_destroy_allocation),
        DxgkDdiDescribeAllocation: Some(allocation::ddi_describe_allocation),
        DxgkDdiGetStandardAllocationDriverData: Some(
            allocation::ddi_get_standard_allocation_driver_data,
        ),
        DxgkDdiEscape: Some(allocation::ddi_escape),
        DxgkDdiOpenAllocation: Some(allocation::ddi_open_allocation),
        DxgkDdiCloseAllocation: Some(allocation::ddi_close_allocation),
        DxgkDdiBuildPagingBuffer: Some(scheduling::ddi_build_paging_buffer),
        DxgkDdiSubmitCommandVirtual: Some(scheduling::ddi_submit_command_virtual),
        DxgkDdiPreemptCommand: Some(scheduling::ddi_preempt_command),
        DxgkDdiFormatHistoryBuffer: Some(scheduling::ddi_format_history_buffer),
        // Scheduling, TDR and engine queries.
        DxgkDdiResetFromTimeout: Some(scheduling::ddi_reset_from_timeout),
        DxgkDdiRestartFromTimeout: Some(scheduling::ddi_restart_from_timeout),
        DxgkDdiResetEngine: Some(scheduling::ddi_reset_engine),
        DxgkDdiQueryDependentEngineGroup: Some(scheduling::ddi_query_dependent_engine_group),
        DxgkDdiQueryEngineStatus: Some(scheduling::ddi_query_engine_status),
        DxgkDdiCollectDbgInfo: Some(info::ddi_collect_dbg_info),
        DxgkDdiCalibrateGpuClock: Some(info::ddi_calibrate_gpu_clock),
        DxgkDdiGetNodeMetadata: Some(info::ddi_get_node_metadata),
        DxgkDdiSetStablePowerState: Some(info::ddi_set_stable_power_state),
        DxgkDdiSetVirtualMachineData: Some(info::ddi_set_virtual_machine_data),
        // IOMMU isolation.
        DxgkDdiBeginExclusiveAccess: Some(scheduling::ddi_begin_exclusive_access),
        DxgkDdiEndExclusiveAccess: Some(scheduling::ddi_end_exclusive_access),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------------
// The steps every thunk shares.

/// KMDOD's `PAGED_CODE()` for DDIs documented PASSIVE_LEVEL: a call at a raised IRQL is logged
/// and refused (STATUS_INVALID_DEVICE_STATE) instead of touching pageable state.
fn paged_code(ddi: &str) -> NtResult<Passive> {
    Passive::check().inspect_err(|_| {
        rgpu_log!(
            error,
            "{}: called above PASSIVE_LEVEL (IRQL {})",
            ddi,
            sys::KeGetCurrentIrql()
        )
    })
}

/// Recovers the adapter from a MiniportDeviceContext / hAdapter.
///
/// # Safety
/// `handle` must be NULL or a pointer AddDevice returned that RemoveDevice has not freed, and
/// the caller must not create overlapping `&mut` (see the module's concurrency note).
unsafe fn adapter<'a>(handle: HANDLE) -> NtResult<&'a Adapter> {
    let h = AdapterHandle::from_raw(handle).ok_or(NtError::INVALID_PARAMETER)?;
    // SAFETY: per the caller, a live Adapter.
    Ok(unsafe { h.as_non_null().cast::<Adapter>().as_ref() })
}

/// The adapter as the soft engine thread reaches it: Dxgkrnl's MiniportDeviceContext, turned
/// back into `&Adapter` the way the ISR thunk does.
///
/// # Invariants
/// Points to the live `Adapter` AddDevice created. Only the engine thread of that adapter holds
/// one, and that thread is halted (`Adapter::halt_engine`) before any PnP DDI takes exclusive
/// access and joined before the adapter is freed, so every reference it hands out is to a live
/// adapter that no `&mut` aliases.
pub struct AdapterContext(NonNull<Adapter>);

// SAFETY: only shared references are handed out, and `Adapter` is used through `&self` from the
// ISR, the DPC and every non-PnP DDI at once (its state is atomics and locks).
unsafe impl Send for AdapterContext {}
// SAFETY: as above.
unsafe impl Sync for AdapterContext {}

impl AdapterContext {
    /// The context for the adapter at `handle`.
    ///
    /// # Safety
    /// `handle` must be a live adapter context from AddDevice, and the invariants of the type
    /// must hold for as long as the value exists (the engine that owns it is halted before
    /// exclusive access and dropped before RemoveDevice frees the adapter).
    unsafe fn new(handle: HANDLE) -> NtResult<Self> {
        let h = AdapterHandle::from_raw(handle).ok_or(NtError::INVALID_PARAMETER)?;
        Ok(Self(h.as_non_null().cast::<Adapter>()))
    }

    /// Another context for the same adapter, for a new engine thread (the invariants hold for it
    /// as for `self`: the engine that owns it is halted before exclusive access and dropped
    /// before RemoveDevice frees the adapter — `soft::engine::Engine` keeps it only to hand it
    /// to the threads it starts, and never reaches the adapter through it itself).
    pub fn again(&self) -> Self {
        Self(self.0)
    }

    /// The adapter.
    pub fn adapter(&self) -> &Adapter {
        // SAFETY: per the type's invariants, a live adapter with no `&mut` in use.
        unsafe { self.0.as_ref() }
    }
}

/// As [`adapter`], exclusively (PnP DDIs only).
///
/// # Safety
/// As [`adapter`], and Dxgkrnl must be calling a serialized PnP DDI.
unsafe fn adapter_mut<'a>(handle: HANDLE) -> NtResult<&'a mut Adapter> {
    let h = AdapterHandle::from_raw(handle).ok_or(NtError::INVALID_PARAMETER)?;
    // SAFETY: per the caller, a live Adapter with no other reference in use.
    Ok(unsafe { h.as_non_null().cast::<Adapter>().as_mut() })
}

/// Recovers the per-handle object (`hDevice`, `hContext`, `hKmdProcess`) of type `T` a typed
/// handle names.
///
/// # Safety
/// `handle` must be a handle this driver created for a live `T` (with [`into_handle`]), and no
/// `&mut T` to it may be in use.
unsafe fn object<'a, K, T>(handle: KmdHandle<K>) -> &'a T {
    // SAFETY: per the caller, a live T.
    unsafe { handle.as_non_null().cast::<T>().as_ref() }
}

/// Hands a pool object to Dxgkrnl as a handle of kind `K`.
fn into_handle<K, T>(object: PoolBox<T>) -> KmdHandle<K> {
    KmdHandle::from_non_null(object.into_raw().cast())
}

/// Takes back a per-handle object handed to Dxgkrnl with [`into_handle`].
///
/// # Safety
/// `handle` must be NULL or a handle this driver created for a `T` with `tag`, used for the last
/// time (Dxgkrnl's Destroy* contract).
unsafe fn take_handle<T>(handle: HANDLE, tag: PoolTag) -> NtResult<PoolBox<T>> {
    let ptr = NonNull::new(handle.cast::<T>()).ok_or(NtError::INVALID_PARAMETER)?;
    // SAFETY: per the caller, the object came from `PoolBox::into_raw` with `tag`, last use.
    Ok(unsafe { PoolBox::from_raw(ptr, tag) })
}

/// Converts a DDI result, logging failures with the DDI's name.
fn finish(ddi: &str, r: NtResult<()>) -> NTSTATUS {
    if let Err(e) = r {
        rgpu_log!(error, "{}: {}", ddi, e);
    }
    dxgk::status::into_ntstatus(r)
}

/// Reads a Dxgkrnl argument block.
///
/// # Safety
/// `args` must be NULL or point to a valid `T` for `'a`, not written meanwhile.
unsafe fn args_ref<'a, T>(args: *const T) -> NtResult<&'a T> {
    // SAFETY: per the caller.
    unsafe { args.as_ref() }.ok_or(NtError::INVALID_PARAMETER)
}
