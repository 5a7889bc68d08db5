//! The DXGKRNL_INTERFACE callbacks the simulator models, with their IRQL rules (from
//! `ddi-prototypes.json` `callbacks[].irql`), and the version-sized interface Dxgkrnl hands to
//! DxgkDdiStartDevice.
//!
//! Callbacks the simulator does not model (ACPI, VidPN, power components, opening a physical
//! memory object on a second adapter, …) are NULL even inside the negotiated size; a driver that
//! needs one gets a [`Rule::CallbackUnavailable`]-worthy NULL it must check. The DMA remapping
//! callbacks ([`super::physical_memory`]) are offered from WDDM 3.0 only, although the headers
//! gate their members at 2.9: Learn documents the remapping contract from 3.0.

use std::sync::Arc;

use dxgk_sys::{
    BOOLEAN, DXGKARGCB_ALLOCATECONTIGUOUSMEMORY, DXGKARGCB_ALLOCATEPAGESFORMDL,
    DXGKARGCB_FREECONTIGUOUSMEMORY, DXGKARGCB_FREEPAGESFROMMDL, DXGKARGCB_MAPMDLTOIOMMU,
    DXGKARGCB_NOTIFY_INTERRUPT_DATA, DXGKARGCB_UNMAPMDLFROMIOMMU, DXGKRNL_INTERFACE,
    DXGK_DEVICE_INFO, HANDLE, KIRQL, MEMORY_CACHING_TYPE, NTSTATUS, PHYSICAL_ADDRESS,
    PKSYNCHRONIZE_ROUTINE, PVOID, ULONG,
};

use super::{memory_callbacks, physical_memory};
use super::{AdapterId, DEVICE_IRQL};
use crate::machine::{current, irql, set_irql, MachineState};
use crate::verifier::{Finding, Rule};

/// Documented IRQL bound of a callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IrqlRule {
    /// `_IRQL_requires_max_(x)` / `_IRQL_requires_(PASSIVE_LEVEL)` treated as a maximum.
    AtMost(KIRQL),
    /// `_IRQL_requires_(x)`: exactly.
    Exactly(KIRQL),
    /// Above DISPATCH_LEVEL (device IRQL: called from the ISR).
    DeviceIrql,
    /// No annotation.
    Any,
}

/// The IRQL rule of each modelled callback (ddi-prototypes.json; DxgkCbNotifyInterrupt is
/// annotated HIGH_LEVEL there but is called from the ISR at device IRQL).
pub const CALLBACK_IRQL: &[(&str, IrqlRule)] = &[
    (
        "DxgkCbGetDeviceInformation",
        IrqlRule::AtMost(dxgk_sys::PASSIVE_LEVEL),
    ),
    ("DxgkCbMapMemory", IrqlRule::AtMost(dxgk_sys::PASSIVE_LEVEL)),
    (
        "DxgkCbUnmapMemory",
        IrqlRule::AtMost(dxgk_sys::PASSIVE_LEVEL),
    ),
    ("DxgkCbQueueDpc", IrqlRule::Any),
    (
        "DxgkCbSynchronizeExecution",
        IrqlRule::AtMost(dxgk_sys::DISPATCH_LEVEL),
    ),
    ("DxgkCbNotifyInterrupt", IrqlRule::DeviceIrql),
    (
        "DxgkCbNotifyDpc",
        IrqlRule::Exactly(dxgk_sys::DISPATCH_LEVEL),
    ),
    (
        "DxgkCbAllocateContiguousMemory",
        IrqlRule::AtMost(dxgk_sys::PASSIVE_LEVEL),
    ),
    (
        "DxgkCbFreeContiguousMemory",
        IrqlRule::AtMost(dxgk_sys::PASSIVE_LEVEL),
    ),
    (
        "DxgkCbAllocatePagesForMdl",
        IrqlRule::AtMost(dxgk_sys::PASSIVE_LEVEL),
    ),
    (
        "DxgkCbFreePagesFromMdl",
        IrqlRule::AtMost(dxgk_sys::PASSIVE_LEVEL),
    ),
    (
        "DxgkCbMapMdlToIoMmu",
        IrqlRule::AtMost(dxgk_sys::PASSIVE_LEVEL),
    ),
    (
        "DxgkCbUnmapMdlFromIoMmu",
        IrqlRule::AtMost(dxgk_sys::PASSIVE_LEVEL),
    ),
    (
        "DxgkCbCreatePhysicalMemoryObject",
        IrqlRule::AtMost(dxgk_sys::PASSIVE_LEVEL),
    ),
    (
        "DxgkCbDestroyPhysicalMemoryObject",
        IrqlRule::AtMost(dxgk_sys::PASSIVE_LEVEL),
    ),
    (
        "DxgkCbMapPhysicalMemory",
        IrqlRule::AtMost(dxgk_sys::PASSIVE_LEVEL),
    ),
    (
        "DxgkCbUnmapPhysicalMemory",
        IrqlRule::AtMost(dxgk_sys::PASSIVE_LEVEL),
    ),
    (
        "DxgkCbAllocateAdl",
        IrqlRule::AtMost(dxgk_sys::PASSIVE_LEVEL),
    ),
    ("DxgkCbFreeAdl", IrqlRule::AtMost(dxgk_sys::PASSIVE_LEVEL)),
];

fn irql_rule(call: &str) -> IrqlRule {
    CALLBACK_IRQL
        .iter()
        .find(|(n, _)| *n == call)
        .map(|x| x.1)
        .unwrap_or(IrqlRule::Any)
}

/// Checks the IRQL of `call`; records a finding and returns false when it is wrong.
pub(crate) fn check_irql(m: &MachineState, call: &'static str) -> bool {
    let now = irql();
    let bad = match irql_rule(call) {
        IrqlRule::AtMost(max) if now > max => Some((
            Rule::IrqlTooHigh,
            format!("called at IRQL {now}, documented maximum {max}"),
        )),
        IrqlRule::Exactly(x) if now > x => Some((
            Rule::IrqlTooHigh,
            format!("called at IRQL {now}, requires exactly {x}"),
        )),
        IrqlRule::Exactly(x) if now < x => Some((
            Rule::IrqlTooLow,
            format!("called at IRQL {now}, requires exactly {x}"),
        )),
        IrqlRule::DeviceIrql if now <= dxgk_sys::DISPATCH_LEVEL => Some((
            Rule::IrqlTooLow,
            format!("called at IRQL {now}: only legal from the ISR (device IRQL)"),
        )),
        _ => None,
    };
    match bad {
        Some((rule, detail)) => {
            m.report(Finding::here(rule, call, detail));
            false
        }
        None => true,
    }
}

/// Common prologue: count, IRQL, adapter handle.
fn enter(call: &'static str, handle: HANDLE) -> Option<(Arc<MachineState>, AdapterId)> {
    let m = current();
    m.count_call(call);
    if !check_irql(&m, call) {
        return None;
    }
    match super::adapter_of_handle(&m, handle) {
        Some(id) => Some((m, id)),
        None => {
            m.report(Finding::here(
                Rule::InvalidArgument,
                call,
                format!("unknown DeviceHandle {handle:p}"),
            ));
            None
        }
    }
}

fn null_arg(m: &MachineState, call: &'static str) -> NTSTATUS {
    m.report(Finding::here(
        Rule::InvalidArgument,
        call,
        "NULL argument structure",
    ));
    dxgk_sys::STATUS_INVALID_PARAMETER
}

extern "system" fn cb_allocate_pages_for_mdl(
    h: HANDLE,
    args: *mut DXGKARGCB_ALLOCATEPAGESFORMDL,
) -> NTSTATUS {
    const CALL: &str = "DxgkCbAllocatePagesForMdl";
    let _span = crate::trace::guard(crate::trace::Track::Callback, CALL);
    let Some((m, id)) = enter(CALL, h) else {
        return dxgk_sys::STATUS_INVALID_PARAMETER;
    };
    // SAFETY: the driver passes its argument structure (or NULL, reported).
    match unsafe { args.as_mut() } {
        Some(a) => memory_callbacks::allocate_pages_for_mdl(&m, id, a),
        None => null_arg(&m, CALL),
    }
}

extern "system" fn cb_free_pages_from_mdl(
    h: HANDLE,
    args: *const DXGKARGCB_FREEPAGESFROMMDL,
) -> NTSTATUS {
    const CALL: &str = "DxgkCbFreePagesFromMdl";
    let _span = crate::trace::guard(crate::trace::Track::Callback, CALL);
    let Some((m, id)) = enter(CALL, h) else {
        return dxgk_sys::STATUS_INVALID_PARAMETER;
    };
    // SAFETY: as above.
    match unsafe { args.as_ref() } {
        Some(a) => memory_callbacks::free_pages_from_mdl(&m, id, a.hMemoryHandle as usize),
        None => null_arg(&m, CALL),
    }
}

extern "system" fn cb_map_mdl_to_iommu(h: HANDLE, args: *mut DXGKARGCB_MAPMDLTOIOMMU) -> NTSTATUS {
    const CALL: &str = "DxgkCbMapMdlToIoMmu";
    let _span = crate::trace::guard(crate::trace::Track::Callback, CALL);
    let Some((m, id)) = enter(CALL, h) else {
        return dxgk_sys::STATUS_INVALID_PARAMETER;
    };
    // SAFETY: as above.
    match unsafe { args.as_mut() } {
        Some(a) => memory_callbacks::map_mdl_to_iommu(&m, id, a),
        None => null_arg(&m, CALL),
    }
}

extern "system" fn cb_unmap_mdl_from_iommu(h: HANDLE, args: *const DXGKARGCB_UNMAPMDLFROMIOMMU) {
    const CALL: &str = "DxgkCbUnmapMdlFromIoMmu";
    let _span = crate::trace::guard(crate::trace::Track::Callback, CALL);
    let Some((m, id)) = enter(CALL, h) else {
        return;
    };
    // SAFETY: as above.
    match unsafe { args.as_ref() } {
        Some(a) => memory_callbacks::unmap_mdl_from_iommu(&m, id, a.hMemoryHandle as usize),
        None => {
            null_arg(&m, CALL);
        }
    }
}

extern "system" fn cb_allocate_contiguous(
    h: HANDLE,
    args: *mut DXGKARGCB_ALLOCATECONTIGUOUSMEMORY,
) -> NTSTATUS {
    const CALL: &str = "DxgkCbAllocateContiguousMemory";
    let _span = crate::trace::guard(crate::trace::Track::Callback, CALL);
    let Some((m, id)) = enter(CALL, h) else {
        return dxgk_sys::STATUS_INVALID_PARAMETER;
    };
    // SAFETY: as above.
    match unsafe { args.as_mut() } {
        Some(a) => memory_callbacks::allocate_contiguous(&m, id, a),
        None => null_arg(&m, CALL),
    }
}

extern "system" fn cb_free_contiguous(
    h: HANDLE,
    args: *const DXGKARGCB_FREECONTIGUOUSMEMORY,
) -> NTSTATUS {
    const CALL: &str = "DxgkCbFreeContiguousMemory";
    let _span = crate::trace::guard(crate::trace::Track::Callback, CALL);
    let Some((m, id)) = enter(CALL, h) else {
        return dxgk_sys::STATUS_INVALID_PARAMETER;
    };
    // SAFETY: as above.
    match unsafe { args.as_ref() } {
        Some(a) => memory_callbacks::free_contiguous(&m, id, a.hMemoryHandle as usize),
        None => null_arg(&m, CALL),
    }
}

/// Prologue of the callbacks that take no DeviceHandle (the DMA remapping ones): count, IRQL.
fn enter_unbound(call: &'static str) -> Option<Arc<MachineState>> {
    let m = current();
    m.count_call(call);
    check_irql(&m, call).then_some(m)
}

macro_rules! remap_thunk {
    ($name:ident, $call:literal, $args:ty, as_mut, $imp:path) => {
        extern "system" fn $name(args: *mut $args) -> NTSTATUS {
            let _span = crate::trace::guard(crate::trace::Track::Callback, $call);
            let Some(m) = enter_unbound($call) else {
                return dxgk_sys::STATUS_INVALID_PARAMETER;
            };
            // SAFETY: the driver passes its argument structure (or NULL, reported).
            match unsafe { args.as_mut() } {
                Some(a) => $imp(&m, a),
                None => null_arg(&m, $call),
            }
        }
    };
    ($name:ident, $call:literal, $args:ty, as_ref, $imp:path) => {
        extern "system" fn $name(args: *const $args) {
            let _span = crate::trace::guard(crate::trace::Track::Callback, $call);
            let Some(m) = enter_unbound($call) else {
                return;
            };
            // SAFETY: the driver passes its argument structure (or NULL, reported).
            match unsafe { args.as_ref() } {
                Some(a) => $imp(&m, a),
                None => {
                    null_arg(&m, $call);
                }
            }
        }
    };
}

remap_thunk!(
    cb_create_physical_memory_object,
    "DxgkCbCreatePhysicalMemoryObject",
    dxgk_sys::DXGKARGCB_CREATE_PHYSICAL_MEMORY_OBJECT,
    as_mut,
    physical_memory::create_object
);
remap_thunk!(
    cb_destroy_physical_memory_object,
    "DxgkCbDestroyPhysicalMemoryObject",
    dxgk_sys::DXGKARGCB_DESTROY_PHYSICAL_MEMORY_OBJECT,
    as_ref,
    physical_memory::destroy_object
);
remap_thunk!(
    cb_map_physical_memory,
    "DxgkCbMapPhysicalMemory",
    dxgk_sys::DXGKARGCB_MAP_PHYSICAL_MEMORY,
    as_mut,
    physical_memory::map_physical_memory
);
remap_thunk!(
    cb_unmap_physical_memory,
    "DxgkCbUnmapPhysicalMemory",
    dxgk_sys::DXGKARGCB_UNMAP_PHYSICAL_MEMORY,
    as_ref,
    physical_memory::unmap_physical_memory
);
remap_thunk!(
    cb_allocate_adl,
    "DxgkCbAllocateAdl",
    dxgk_sys::DXGKARGCB_ALLOCATE_ADL,
    as_mut,
    physical_memory::allocate_adl
);
remap_thunk!(
    cb_free_adl,
    "DxgkCbFreeAdl",
    dxgk_sys::DXGKARGCB_FREE_ADL,
    as_ref,
    physical_memory::free_adl
);

extern "system" fn cb_get_device_information(h: HANDLE, info: *mut DXGK_DEVICE_INFO) -> NTSTATUS {
    const CALL: &str = "DxgkCbGetDeviceInformation";
    let _span = crate::trace::guard(crate::trace::Track::Callback, CALL);
    let Some((m, id)) = enter(CALL, h) else {
        return dxgk_sys::STATUS_INVALID_PARAMETER;
    };
    if info.is_null() {
        return null_arg(&m, CALL);
    }
    let value = super::device_info(&m, id);
    // SAFETY: non-null DXGK_DEVICE_INFO the driver provides for us to fill.
    unsafe { info.write(value) };
    dxgk_sys::STATUS_SUCCESS
}

extern "system" fn cb_map_memory(
    h: HANDLE,
    translated: PHYSICAL_ADDRESS,
    length: ULONG,
    in_io_space: BOOLEAN,
    to_user: BOOLEAN,
    _cache: MEMORY_CACHING_TYPE,
    va: *mut PVOID,
) -> NTSTATUS {
    const CALL: &str = "DxgkCbMapMemory";
    let _span = crate::trace::guard(crate::trace::Track::Callback, CALL);
    let Some((m, id)) = enter(CALL, h) else {
        return dxgk_sys::STATUS_INVALID_PARAMETER;
    };
    if va.is_null() || in_io_space != 0 || to_user != 0 || length == 0 {
        m.report(Finding::here(
            Rule::InvalidArgument,
            CALL,
            "NULL VirtualAddress, zero Length, I/O space or user-mode mapping (not simulated)",
        ));
        return dxgk_sys::STATUS_INVALID_PARAMETER;
    }
    // SAFETY: every bit pattern of the union is a valid i64.
    let phys = unsafe { translated.QuadPart } as u64;
    match super::map_mmio(&m, id, phys, length as usize) {
        Ok(p) => {
            // SAFETY: non-null out pointer from the driver.
            unsafe { va.write(p) };
            dxgk_sys::STATUS_SUCCESS
        }
        Err(s) => s,
    }
}

extern "system" fn cb_unmap_memory(h: HANDLE, va: PVOID) -> NTSTATUS {
    const CALL: &str = "DxgkCbUnmapMemory";
    let _span = crate::trace::guard(crate::trace::Track::Callback, CALL);
    let Some((m, id)) = enter(CALL, h) else {
        return dxgk_sys::STATUS_INVALID_PARAMETER;
    };
    super::unmap_mmio(&m, id, va as usize)
}

extern "system" fn cb_queue_dpc(h: HANDLE) -> BOOLEAN {
    const CALL: &str = "DxgkCbQueueDpc";
    let _span = crate::trace::guard(crate::trace::Track::Callback, CALL);
    let Some((m, id)) = enter(CALL, h) else {
        return 0;
    };
    let queued = crate::ntoskrnl::dpc::queue_system_dpc(&m, super::adapter_dpc(id));
    crate::ntoskrnl::dpc::run_if_below_dispatch(&m);
    BOOLEAN::from(queued)
}

extern "system" fn cb_synchronize_execution(
    h: HANDLE,
    routine: PKSYNCHRONIZE_ROUTINE,
    context: PVOID,
    _message: ULONG,
    ret: *mut BOOLEAN,
) -> NTSTATUS {
    const CALL: &str = "DxgkCbSynchronizeExecution";
    let _span = crate::trace::guard(crate::trace::Track::Callback, CALL);
    let Some((m, id)) = enter(CALL, h) else {
        return dxgk_sys::STATUS_INVALID_PARAMETER;
    };
    let Some(routine) = routine else {
        return null_arg(&m, CALL);
    };
    let lock = super::interrupt_lock(&m, id);
    let _held = lock.lock();
    let old = irql();
    set_irql(DEVICE_IRQL);
    // SAFETY: the driver's synchronize routine with the context it passed.
    let r = super::in_interrupt_of(id, || unsafe { routine(context) });
    set_irql(old);
    drop(_held);
    // As on Windows, a DPC the routine queued runs as soon as this CPU's IRQL drops below
    // DISPATCH_LEVEL: here, on the caller's thread (a soft engine's), not at some later lock
    // release on a thread that may be inside a PnP DDI.
    crate::ntoskrnl::dpc::run_if_below_dispatch(&m);
    if !ret.is_null() {
        // SAFETY: non-null out pointer from the driver.
        unsafe { ret.write(r) };
    }
    dxgk_sys::STATUS_SUCCESS
}

extern "system" fn cb_notify_interrupt(h: HANDLE, data: *mut DXGKARGCB_NOTIFY_INTERRUPT_DATA) {
    const CALL: &str = "DxgkCbNotifyInterrupt";
    let _span = crate::trace::guard(crate::trace::Track::Callback, CALL);
    let Some((m, id)) = enter(CALL, h) else {
        return;
    };
    if !super::is_in_interrupt_of(id) {
        // Device IRQL alone is not enough: the call must be serialized with the ISR, i.e. come
        // from the adapter's ISR or from a DxgkCbSynchronizeExecution routine (a software
        // engine raising completion from its own thread, coskmd-style).
        m.report(Finding::here(
            Rule::IrqlTooLow,
            CALL,
            "called outside the adapter's ISR and outside DxgkCbSynchronizeExecution",
        ));
        return;
    }
    // SAFETY: the driver passes its notification (or NULL, reported).
    match unsafe { data.as_ref() } {
        Some(d) => super::record_notify_interrupt(&m, id, d),
        None => {
            null_arg(&m, CALL);
        }
    }
}

extern "system" fn cb_notify_dpc(h: HANDLE) {
    const CALL: &str = "DxgkCbNotifyDpc";
    let _span = crate::trace::guard(crate::trace::Track::Callback, CALL);
    if let Some((m, id)) = enter(CALL, h) {
        super::record_notify_dpc(&m, id);
    }
}

/// d3dkmddi.h's DXGKARGCB_GETHANDLEDATA (dxgk-sys passes it as `*const c_void`).
#[repr(C)]
struct GetHandleData {
    h_object: u32,
    kind: i32,
    flags: u32,
}

/// `DxgkCbGetHandleData`: the driver's `hAllocation` for one of Dxgkrnl's allocation handles
/// (DXGK_HANDLE_ALLOCATION, not device-specific); NULL, and a finding, for anything else.
extern "system" fn cb_get_handle_data(args: *const core::ffi::c_void) -> PVOID {
    const CALL: &str = "DxgkCbGetHandleData";
    let _span = crate::trace::guard(crate::trace::Track::Callback, CALL);
    let m = current();
    m.count_call(CALL);
    // SAFETY: the driver passes its argument structure (or NULL, reported).
    let Some(a) = (unsafe { args.cast::<GetHandleData>().as_ref() }) else {
        null_arg(&m, CALL);
        return std::ptr::null_mut();
    };
    if a.kind != 1 || a.flags != 0 {
        m.report(Finding::here(
            Rule::InvalidArgument,
            CALL,
            format!(
                "Type {} Flags {:#x}: only DXGK_HANDLE_ALLOCATION is simulated",
                a.kind, a.flags
            ),
        ));
        return std::ptr::null_mut();
    }
    let found = m.port().allocation_handles.get(&a.h_object).copied();
    match found {
        Some(h) => h,
        None => {
            m.report(Finding::here(
                Rule::InvalidArgument,
                CALL,
                format!("unknown allocation handle {:#x}", a.h_object),
            ));
            std::ptr::null_mut()
        }
    }
}

/// The interface for `handle` at interface `version`: `Size` and members as compiled at that
/// version (members beyond that size are NULL), `Version` = `version`.
pub(crate) fn build_interface(handle: HANDLE, version: u32) -> DXGKRNL_INTERFACE {
    let size = super::interface_size(version);
    let mut i = DXGKRNL_INTERFACE {
        Size: size as ULONG,
        Version: version,
        DeviceHandle: handle,
        DxgkCbGetDeviceInformation: Some(cb_get_device_information),
        DxgkCbMapMemory: Some(cb_map_memory),
        DxgkCbQueueDpc: Some(cb_queue_dpc),
        DxgkCbSynchronizeExecution: Some(cb_synchronize_execution),
        DxgkCbUnmapMemory: Some(cb_unmap_memory),
        DxgkCbNotifyInterrupt: Some(cb_notify_interrupt),
        DxgkCbNotifyDpc: Some(cb_notify_dpc),
        DxgkCbAllocateContiguousMemory: Some(cb_allocate_contiguous),
        DxgkCbFreeContiguousMemory: Some(cb_free_contiguous),
        DxgkCbAllocatePagesForMdl: Some(cb_allocate_pages_for_mdl),
        DxgkCbFreePagesFromMdl: Some(cb_free_pages_from_mdl),
        DxgkCbMapMdlToIoMmu: Some(cb_map_mdl_to_iommu),
        DxgkCbUnmapMdlFromIoMmu: Some(cb_unmap_mdl_from_iommu),
        DxgkCbGetHandleData: Some(cb_get_handle_data),
        ..DXGKRNL_INTERFACE::default()
    };
    if version >= dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM3_0 {
        i.DxgkCbCreatePhysicalMemoryObject = Some(cb_create_physical_memory_object);
        i.DxgkCbDestroyPhysicalMemoryObject = Some(cb_destroy_physical_memory_object);
        i.DxgkCbMapPhysicalMemory = Some(cb_map_physical_memory);
        i.DxgkCbUnmapPhysicalMemory = Some(cb_unmap_physical_memory);
        i.DxgkCbAllocateAdl = Some(cb_allocate_adl);
        i.DxgkCbFreeAdl = Some(cb_free_adl);
    }
    let full = std::mem::size_of::<DXGKRNL_INTERFACE>();
    let p = (&mut i as *mut DXGKRNL_INTERFACE)
        .cast::<u8>()
        .wrapping_add(size);
    // SAFETY: `size..full` lies inside `i`; those bytes are members (Option<fn> / PVOID) for
    // which all-zero (None / NULL) is valid.
    unsafe { p.write_bytes(0, full - size) };
    i
}
