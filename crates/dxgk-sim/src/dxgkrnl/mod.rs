//! The simulated port driver (Dxgkrnl): registration through `DxgkInitialize`, adapters and
//! their DXGKRNL_INTERFACE callbacks, the PnP sequence ([`pnp`]).
//!
//! Validation follows what Windows documents: the declared `Version` must be a known
//! DXGKDDI_INTERFACE_VERSION not newer than the machine's Dxgkrnl, and the PnP DDIs every
//! miniport needs must be present; the GpuMmu / IOMMU-isolation DDI sets are checked at start,
//! once DRIVERCAPS says which the driver claims.

pub mod callbacks;
pub mod dma;
pub mod memory_callbacks;
pub mod physical_memory;
pub mod pnp;
pub mod registers;

use std::sync::Arc;

use crate::lock_order::{LockRank, RankedMutex};

use dxgk_sys::{
    DRIVER_INITIALIZATION_DATA, DRIVER_OBJECT, DXGKRNL_INTERFACE, HANDLE, KIRQL, NTSTATUS, PVOID,
    UNICODE_STRING,
};

use crate::machine::{current, Machine, MachineState};
use crate::ntoskrnl::irql::require_irql_at_most;
use crate::verifier::{Finding, Rule};

pub use pnp::{AdapterConfig, AdapterInfo, AdapterView, PnpState, SimDevice};

/// The IRQL the simulated interrupt line runs at (DIRQL).
pub const DEVICE_IRQL: KIRQL = 8;

/// Physical base of adapter `n`'s MMIO BAR is `MMIO_PHYS_BASE + n * MMIO_PHYS_STRIDE`.
pub const MMIO_PHYS_BASE: u64 = 0xE000_0000;
/// See [`MMIO_PHYS_BASE`].
pub const MMIO_PHYS_STRIDE: u64 = 0x0100_0000;

/// An adapter of a machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AdapterId(pub u32);

impl AdapterId {
    /// The IOMMU domain this adapter's device accesses go through (one per adapter).
    pub fn domain(self) -> crate::memory::DomainId {
        crate::memory::DomainId(self.0)
    }

    /// The DXGKRNL_INTERFACE DeviceHandle Dxgkrnl gives this adapter.
    pub fn device_handle(self) -> HANDLE {
        (0x5EED_0000_usize + self.0 as usize * 0x10) as HANDLE
    }
}

pub(crate) fn adapter_of_handle(m: &MachineState, h: HANDLE) -> Option<AdapterId> {
    let v = (h as usize).checked_sub(0x5EED_0000)?;
    if v % 0x10 != 0 {
        return None;
    }
    let id = AdapterId((v / 0x10) as u32);
    (m.port().adapters.len() > id.0 as usize).then_some(id)
}

/// Size of DXGKRNL_INTERFACE at `version` (panics on an unknown version: a harness bug).
pub(crate) fn interface_size(version: u32) -> usize {
    size_at(dxgk_sys::DXGKRNL_INTERFACE_SIZE_BY_VERSION, version)
        .unwrap_or_else(|| panic!("dxgk-sim: unknown DXGKDDI_INTERFACE_VERSION {version:#x}"))
}

/// The size a versioned struct has at `version` (the entry for the newest version ≤ `version`).
pub fn size_at(table: &[(u32, usize)], version: u32) -> Option<usize> {
    table.iter().rev().find(|(v, _)| *v <= version).map(|x| x.1)
}

/// A CM_RESOURCE_LIST in stable storage.
pub(crate) struct Resources(Box<dxgk_sys::CM_RESOURCE_LIST>);

/// Per-adapter state.
pub(crate) struct Adapter {
    pub(crate) id: AdapterId,
    pub(crate) synthetic: bool,
    pub(crate) interface: Box<DXGKRNL_INTERFACE>,
    pub(crate) mmio: Box<[u32]>,
    pub(crate) mmio_maps: Vec<(usize, usize, String)>,
    resources: Resources,
    registry_path: Box<[u16]>,
    pub(crate) pdo: Box<dxgk_sys::DEVICE_OBJECT>,
    /// Enumerated by the root bus (`IoGetDeviceProperty(DevicePropertyEnumeratorName)` answers
    /// `ROOT`), else by PCI.
    pub(crate) root_enumerated: bool,
    pub(crate) context: usize,
    /// The device model, behind its own lock so that register accesses from any thread and the
    /// simulator's synchronizations serialize (as accesses to one device do) without holding
    /// the port lock.
    pub(crate) device: Option<SharedDevice>,
    pub(crate) state: PnpState,
    pub(crate) interrupt_lock: Arc<RankedMutex<()>>,
    pub(crate) notify_interrupts: Vec<i32>,
    pub(crate) notify_log: Vec<InterruptNotification>,
    pub(crate) notify_dpcs: u64,
    pub(crate) info: AdapterInfo,
}

// SAFETY: the raw pointers inside (PDO, interface handle, resource list) point into storage this
// struct owns or are opaque values; all access is serialized by the port mutex.
unsafe impl Send for Adapter {}

impl Adapter {
    pub(crate) fn mmio_phys(&self) -> u64 {
        MMIO_PHYS_BASE + u64::from(self.id.0) * MMIO_PHYS_STRIDE
    }
    pub(crate) fn mmio_bytes(&self) -> usize {
        self.mmio.len() * 4
    }
}

/// Storage for the kernel objects the I/O manager passes to DriverEntry (kept alive for the
/// driver, which may keep pointers to them; never read by the simulator).
#[allow(dead_code)]
pub(crate) struct DriverStorage {
    pub(crate) object: Box<dxgk_sys::DRIVER_OBJECT>,
    pub(crate) path_buf: Box<[u16]>,
    pub(crate) path: Box<UNICODE_STRING>,
}

// SAFETY: as for `Adapter`: owned storage, serialized by the port mutex.
unsafe impl Send for DriverStorage {}

/// A device model shared between the simulator and register accesses.
pub(crate) type SharedDevice = Arc<RankedMutex<Box<dyn SimDevice>>>;

pub(crate) fn new_adapter(
    m: &MachineState,
    synthetic: bool,
    version: u32,
    mmio_words: usize,
    device: Option<Box<dyn SimDevice>>,
    root_enumerated: bool,
) -> AdapterId {
    let mut port = m.port();
    let id = AdapterId(port.adapters.len() as u32);
    let interface = Box::new(callbacks::build_interface(id.device_handle(), version));
    let mut rl = Box::new(dxgk_sys::CM_RESOURCE_LIST::default());
    rl.Count = 1;
    rl.List[0].InterfaceType = dxgk_sys::INTERFACE_TYPE(5); // PCIBus
    rl.List[0].PartialResourceList.Version = 1;
    rl.List[0].PartialResourceList.Revision = 1;
    rl.List[0].PartialResourceList.Count = 1;
    let mut d = dxgk_sys::CM_PARTIAL_RESOURCE_DESCRIPTOR {
        Type: dxgk_sys::CmResourceTypeMemory,
        ShareDisposition: 1, // CmResourceShareDeviceExclusive
        ..Default::default()
    };
    let mut mem = dxgk_sys::CM_PARTIAL_RESOURCE_DESCRIPTOR_u_Memory::default();
    mem.Start.QuadPart = (MMIO_PHYS_BASE + u64::from(id.0) * MMIO_PHYS_STRIDE) as i64;
    mem.Length = (mmio_words * 4) as u32;
    d.u.Memory = mem;
    rl.List[0].PartialResourceList.PartialDescriptors[0] = d;
    if root_enumerated {
        // A root-enumerated device: PnP assigns it no hardware resources at all.
        rl.Count = 0;
        rl.List[0].PartialResourceList.Count = 0;
    }
    let path: Vec<u16> = format!(
        "\\REGISTRY\\MACHINE\\SYSTEM\\CurrentControlSet\\Control\\Video\\{{sim-adapter-{}}}\\0000",
        id.0
    )
    .encode_utf16()
    .collect();
    port.adapters.push(Adapter {
        id,
        synthetic,
        interface,
        mmio: vec![0u32; mmio_words].into_boxed_slice(),
        mmio_maps: Vec::new(),
        resources: Resources(rl),
        registry_path: path.into_boxed_slice(),
        pdo: Box::default(),
        root_enumerated,
        context: 0,
        device: device.map(|d| Arc::new(RankedMutex::new(LockRank::Device, d))),
        state: PnpState::Added,
        interrupt_lock: Arc::new(RankedMutex::new(LockRank::Interrupt, ())),
        notify_interrupts: Vec::new(),
        notify_log: Vec::new(),
        notify_dpcs: 0,
        info: AdapterInfo::default(),
    });
    id
}

pub(crate) fn device_info(m: &MachineState, id: AdapterId) -> dxgk_sys::DXGK_DEVICE_INFO {
    let mut port = m.port();
    let a = &mut port.adapters[id.0 as usize];
    let mut info = dxgk_sys::DXGK_DEVICE_INFO {
        MiniportDeviceContext: a.context as PVOID,
        PhysicalDeviceObject: &mut *a.pdo,
        TranslatedResourceList: &mut *a.resources.0,
        ..Default::default()
    };
    info.DeviceRegistryPath.Length = (a.registry_path.len() * 2) as u16;
    info.DeviceRegistryPath.MaximumLength = (a.registry_path.len() * 2) as u16;
    info.DeviceRegistryPath.Buffer = a.registry_path.as_mut_ptr();
    info.SystemMemorySize.QuadPart = crate::memory::PHYSICAL_MEMORY_LIMIT as i64;
    info.HighestPhysicalAddress.QuadPart = 0x7F_FFFF_FFFF;
    info
}

pub(crate) fn map_mmio(
    m: &MachineState,
    id: AdapterId,
    phys: u64,
    len: usize,
) -> Result<PVOID, NTSTATUS> {
    const CALL: &str = "DxgkCbMapMemory";
    let (base, size) = {
        let port = m.port();
        let a = &port.adapters[id.0 as usize];
        (a.mmio_phys(), a.mmio_bytes())
    };
    if phys < base || phys + len as u64 > base + size as u64 {
        m.report(Finding::here(
            Rule::InvalidArgument,
            CALL,
            format!("{phys:#x}+{len:#x} is not inside the adapter's memory resource {base:#x}+{size:#x}"),
        ));
        return Err(dxgk_sys::STATUS_INVALID_PARAMETER);
    }
    if crate::fault::inject_on(m, CALL) {
        return Err(dxgk_sys::STATUS_INSUFFICIENT_RESOURCES);
    }
    let site = crate::verifier::driver_call_site();
    let mut port = m.port();
    let a = &mut port.adapters[id.0 as usize];
    let va = a.mmio.as_mut_ptr() as usize + (phys - base) as usize;
    a.mmio_maps.push((va, len, site));
    Ok(va as PVOID)
}

pub(crate) fn unmap_mmio(m: &MachineState, id: AdapterId, va: usize) -> NTSTATUS {
    let mut port = m.port();
    let a = &mut port.adapters[id.0 as usize];
    match a.mmio_maps.iter().position(|x| x.0 == va) {
        Some(i) => {
            a.mmio_maps.remove(i);
            dxgk_sys::STATUS_SUCCESS
        }
        None => {
            drop(port);
            m.report(Finding::here(
                Rule::MdlMisuse,
                "DxgkCbUnmapMemory",
                format!("{va:#x} is not a live DxgkCbMapMemory mapping (double unmap?)"),
            ));
            dxgk_sys::STATUS_INVALID_PARAMETER
        }
    }
}

pub(crate) fn mmio_leak_findings(
    m: &MachineState,
    id: Option<AdapterId>,
    call: &'static str,
) -> Vec<Finding> {
    let port = m.port();
    let mut out = Vec::new();
    for a in &port.adapters {
        if id.is_some_and(|x| x != a.id) {
            continue;
        }
        for (va, len, site) in &a.mmio_maps {
            out.push(Finding {
                rule: Rule::ResourceLeak,
                call,
                detail: format!(
                    "DxgkCbMapMemory mapping {va:#x}+{len:#x} of adapter {} never unmapped",
                    a.id.0
                ),
                driver_site: format!("mapped at {site}"),
            });
        }
    }
    out
}

pub(crate) fn interrupt_lock(m: &MachineState, id: AdapterId) -> Arc<RankedMutex<()>> {
    m.port().adapters[id.0 as usize].interrupt_lock.clone()
}

std::thread_local! {
    /// The adapter whose ISR or SynchronizeExecution routine this thread is running (with the
    /// adapter's interrupt lock held), if any.
    static IN_INTERRUPT: std::cell::Cell<Option<AdapterId>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` as adapter `id`'s interrupt-synchronized code (its ISR or a SynchronizeExecution
/// routine): DxgkCbNotifyInterrupt is legal only inside. The caller holds the interrupt lock
/// and has raised to DEVICE_IRQL.
pub(crate) fn in_interrupt_of<R>(id: AdapterId, f: impl FnOnce() -> R) -> R {
    let outer = IN_INTERRUPT.with(|c| c.replace(Some(id)));
    let r = f();
    IN_INTERRUPT.with(|c| c.set(outer));
    r
}

/// Is this thread inside adapter `id`'s ISR or SynchronizeExecution routine?
pub(crate) fn is_in_interrupt_of(id: AdapterId) -> bool {
    IN_INTERRUPT.with(|c| c.get()) == Some(id)
}

/// One DxgkCbNotifyInterrupt call, with the fields of the DMA notifications decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InterruptNotification {
    /// DXGK_INTERRUPT_TYPE value.
    pub kind: i32,
    /// DmaCompleted.SubmissionFenceId / DmaFaulted.FaultedFenceId /
    /// DmaPreempted.LastCompletedFenceId / DmaPageFaulted.FaultedFenceId (0 for other kinds).
    pub fence: u32,
    /// DmaFaulted.Status (0 for other kinds).
    pub status: i32,
    /// DmaPreempted.PreemptionFenceId (0 for other kinds).
    pub preemption_fence: u32,
    /// The DmaPageFaulted fields (None for other kinds).
    pub page_fault: Option<PageFaultReport>,
}

/// The fields of a DMA_PAGE_FAULTED notification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageFaultReport {
    /// FaultedVirtualAddress (a logical address with DXGK_PAGE_FAULT_IOMMU).
    pub address: u64,
    /// PageFaultFlags (DXGK_PAGE_FAULT_* bits).
    pub flags: i32,
    /// PageTableLevel.
    pub level: u32,
    /// FaultErrorCode, raw (bit 0 IsDeviceSpecificCode, bits 31:1 the code).
    pub error_code: u32,
    /// FaultedProcessHandle.
    pub process: usize,
}

pub(crate) fn record_notify_interrupt(
    m: &MachineState,
    id: AdapterId,
    data: &dxgk_sys::DXGKARGCB_NOTIFY_INTERRUPT_DATA,
) {
    let kind = data.InterruptType.0;
    let (fence, status) = if data.InterruptType == dxgk_sys::DXGK_INTERRUPT_DMA_COMPLETED {
        // SAFETY: the interrupt type names the valid union member (plain integers).
        (unsafe { data.u.DmaCompleted }.SubmissionFenceId, 0)
    } else if data.InterruptType == dxgk_sys::DXGK_INTERRUPT_DMA_FAULTED {
        // SAFETY: as above.
        let f = unsafe { data.u.DmaFaulted };
        (f.FaultedFenceId, f.Status)
    } else if data.InterruptType == dxgk_sys::DXGK_INTERRUPT_DMA_PREEMPTED {
        // SAFETY: as above.
        let p = unsafe { data.u.DmaPreempted };
        (p.LastCompletedFenceId, 0)
    } else if data.InterruptType == dxgk_sys::DXGK_INTERRUPT_DMA_PAGE_FAULTED {
        // SAFETY: as above.
        (unsafe { data.u.DmaPageFaulted }.FaultedFenceId, 0)
    } else {
        (0, 0)
    };
    let page_fault = if data.InterruptType == dxgk_sys::DXGK_INTERRUPT_DMA_PAGE_FAULTED {
        // SAFETY: as above (integers and a handle value).
        let f = unsafe { data.u.DmaPageFaulted };
        Some(PageFaultReport {
            address: f.FaultedVirtualAddress,
            flags: f.PageFaultFlags.0,
            level: f.PageTableLevel,
            error_code: f.FaultErrorCode._bitfield_1,
            process: f.FaultedProcessHandle as usize,
        })
    } else {
        None
    };
    let preemption_fence = if data.InterruptType == dxgk_sys::DXGK_INTERRUPT_DMA_PREEMPTED {
        // SAFETY: as above.
        unsafe { data.u.DmaPreempted }.PreemptionFenceId
    } else {
        0
    };
    crate::trace::instant(
        m,
        crate::trace::Track::Interrupt,
        format!(
            "DxgkCbNotifyInterrupt {}",
            crate::trace::interrupt_type_name(kind)
        ),
        || {
            vec![
                ("adapter", id.0.into()),
                ("fence", fence.into()),
                ("status", crate::trace::status_value(status)),
            ]
        },
    );
    let mut port = m.port();
    let a = &mut port.adapters[id.0 as usize];
    a.notify_interrupts.push(kind);
    a.notify_log.push(InterruptNotification {
        kind,
        fence,
        status,
        preemption_fence,
        page_fault,
    });
}

/// The adapter DPC DxgkCbQueueDpc queues on the kernel's DPC queue.
pub(crate) fn adapter_dpc(id: AdapterId) -> crate::ntoskrnl::dpc::SystemDpc {
    crate::ntoskrnl::dpc::SystemDpc {
        name: "DxgkDdiDpcRoutine",
        key: u64::from(id.0),
        routine: run_adapter_dpc,
    }
}

/// Runs adapter `key`'s DxgkDdiDpcRoutine (at DISPATCH_LEVEL, from the DPC queue).
fn run_adapter_dpc(m: &MachineState, key: u64) {
    let id = AdapterId(key as u32);
    let ddi = m
        .port()
        .registered
        .as_ref()
        .and_then(|r| r.DxgkDdiDpcRoutine);
    let ctx = m.port().adapters[id.0 as usize].context;
    match ddi {
        Some(f) => {
            crate::trace::call(
                m,
                crate::trace::Track::Interrupt,
                "DxgkDdiDpcRoutine",
                || vec![("adapter", id.0.into())],
                // SAFETY: the miniport's DPC routine with its adapter context.
                || unsafe { f(ctx as PVOID) },
            );
        }
        None => m.report(Finding::here(
            Rule::DdiProtocol,
            "DxgkCbQueueDpc",
            "DPC queued but the driver has no DxgkDdiDpcRoutine",
        )),
    }
}

pub(crate) fn record_notify_dpc(m: &MachineState, id: AdapterId) {
    crate::trace::instant(m, crate::trace::Track::Interrupt, "DxgkCbNotifyDpc", || {
        vec![("adapter", id.0.into())]
    });
    m.port().adapters[id.0 as usize].notify_dpcs += 1;
}

impl Machine {
    /// A version-sized DXGKRNL_INTERFACE for a new synthetic adapter (no driver, a 64 KiB plain
    /// memory MMIO BAR, no device model) whose modelled callbacks all work — for unit tests of
    /// safe wrappers without a driver. `DeviceHandle` identifies the adapter
    /// ([`Machine::adapter_of`]).
    pub fn interface_for_tests(&self, version: u32) -> DXGKRNL_INTERFACE {
        let id = new_adapter(&self.state, true, version, 16 * 1024, None, false);
        let mut port = self.state.port();
        port.adapters[id.0 as usize].state = PnpState::Started;
        *port.adapters[id.0 as usize].interface
    }

    /// A copy of the DXGKRNL_INTERFACE adapter `id` got at its last StartDevice (for tests that
    /// act as a misbehaving driver on a real adapter).
    pub fn adapter_interface(&self, id: AdapterId) -> DXGKRNL_INTERFACE {
        *self.state.port().adapters[id.0 as usize].interface
    }

    /// The adapter a DXGKRNL_INTERFACE DeviceHandle designates.
    pub fn adapter_of(&self, device_handle: HANDLE) -> Option<AdapterId> {
        adapter_of_handle(&self.state, device_handle)
    }

    /// DxgkCbNotifyInterrupt calls recorded on `id` (their DXGK_INTERRUPT_TYPE values).
    pub fn notified_interrupts(&self, id: AdapterId) -> Vec<i32> {
        self.state.port().adapters[id.0 as usize]
            .notify_interrupts
            .clone()
    }

    /// DxgkCbNotifyInterrupt calls recorded on `id`, with their fence ids and statuses.
    pub fn interrupt_notifications(&self, id: AdapterId) -> Vec<InterruptNotification> {
        self.state.port().adapters[id.0 as usize].notify_log.clone()
    }

    /// The notifications recorded on `id` from index `from` on (for incremental consumers).
    pub fn interrupt_notifications_since(
        &self,
        id: AdapterId,
        from: usize,
    ) -> Vec<InterruptNotification> {
        let port = self.state.port();
        let log = &port.adapters[id.0 as usize].notify_log;
        log.get(from..).map(<[_]>::to_vec).unwrap_or_default()
    }

    /// DxgkCbNotifyDpc calls recorded on `id`.
    pub fn notified_dpcs(&self, id: AdapterId) -> u64 {
        self.state.port().adapters[id.0 as usize].notify_dpcs
    }
}

/// Every DXGKDDI_INTERFACE_VERSION Windows has shipped, oldest first.
pub const KNOWN_INTERFACE_VERSIONS: &[u32] = &[
    dxgk_sys::DXGKDDI_INTERFACE_VERSION_VISTA,
    dxgk_sys::DXGKDDI_INTERFACE_VERSION_VISTA_SP1,
    dxgk_sys::DXGKDDI_INTERFACE_VERSION_WIN7,
    dxgk_sys::DXGKDDI_INTERFACE_VERSION_WIN8,
    dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM1_3,
    dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM1_3_PATH_INDEPENDENT_ROTATION,
    dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM2_0,
    dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM2_1,
    dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM2_1_5,
    dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM2_1_6,
    dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM2_2,
    dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM2_3,
    dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM2_4,
    dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM2_5,
    dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM2_6,
    dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM2_7,
    dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM2_8,
    dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM2_9,
    dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM3_0,
    dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM3_1,
];

/// Per-machine port-driver state.
#[derive(Default)]
pub(crate) struct PortState {
    /// The registered miniport's DDI table (a copy, as Dxgkrnl keeps one).
    pub(crate) registered: Option<Box<DRIVER_INITIALIZATION_DATA>>,
    /// Every `Version` a driver offered to DxgkInitialize, in order (accepted or not).
    pub(crate) offered_versions: Vec<u32>,
    pub(crate) adapters: Vec<Adapter>,
    pub(crate) driver: Option<DriverStorage>,
    /// Dxgkrnl's allocation handles (what DXGK_OPENALLOCATIONINFO.hAllocation names) → the
    /// driver's `hAllocation`, for DxgkCbGetHandleData. Filled by [`crate::kmt`].
    pub(crate) allocation_handles: std::collections::HashMap<u32, HANDLE>,
}

// SAFETY: the DDI table holds function pointers and opaque PVOID slots the simulator never
// dereferences; access is serialized by the machine's port mutex.
unsafe impl Send for PortState {}

/// `DxgkInitialize` (displib). PASSIVE_LEVEL.
///
/// Returns STATUS_REVISION_MISMATCH for an unknown version or one newer than this machine's
/// Dxgkrnl (the simulator's choice of code: Windows' exact status is not documented), and
/// STATUS_INVALID_PARAMETER for NULL arguments or missing mandatory PnP DDIs.
#[no_mangle]
pub extern "system" fn DxgkInitialize(
    driver_object: *mut DRIVER_OBJECT,
    registry_path: *mut UNICODE_STRING,
    init: *mut DRIVER_INITIALIZATION_DATA,
) -> NTSTATUS {
    const CALL: &str = "DxgkInitialize";
    if !require_irql_at_most(CALL, dxgk_sys::PASSIVE_LEVEL) {
        return dxgk_sys::STATUS_INVALID_DEVICE_STATE;
    }
    let machine = current();
    machine.count_call(CALL);
    if driver_object.is_null() || registry_path.is_null() || init.is_null() {
        machine.report(Finding::here(Rule::InvalidArgument, CALL, "NULL argument"));
        return dxgk_sys::STATUS_INVALID_PARAMETER;
    }
    // SAFETY: non-null and, per the contract, a DRIVER_INITIALIZATION_DATA the driver filled.
    let data = unsafe { *init };
    machine.port().offered_versions.push(data.Version);
    if !KNOWN_INTERFACE_VERSIONS.contains(&data.Version) {
        machine.report(Finding::here(
            Rule::DdiProtocol,
            CALL,
            format!("unknown DXGKDDI_INTERFACE_VERSION {:#x}", data.Version),
        ));
        return dxgk_sys::STATUS_REVISION_MISMATCH;
    }
    if data.Version > machine.config.max_interface_version {
        // Not a driver bug: a driver may probe newer versions first. No finding.
        return dxgk_sys::STATUS_REVISION_MISMATCH;
    }
    let missing: Vec<&str> = [
        ("DxgkDdiAddDevice", data.DxgkDdiAddDevice.is_none()),
        ("DxgkDdiStartDevice", data.DxgkDdiStartDevice.is_none()),
        ("DxgkDdiStopDevice", data.DxgkDdiStopDevice.is_none()),
        ("DxgkDdiRemoveDevice", data.DxgkDdiRemoveDevice.is_none()),
        ("DxgkDdiUnload", data.DxgkDdiUnload.is_none()),
    ]
    .into_iter()
    .filter_map(|(n, m)| m.then_some(n))
    .collect();
    if !missing.is_empty() {
        machine.report(Finding::here(
            Rule::DdiProtocol,
            CALL,
            format!("mandatory DDIs missing: {}", missing.join(", ")),
        ));
        return dxgk_sys::STATUS_INVALID_PARAMETER;
    }
    machine.port().registered = Some(Box::new(data));
    dxgk_sys::STATUS_SUCCESS
}
