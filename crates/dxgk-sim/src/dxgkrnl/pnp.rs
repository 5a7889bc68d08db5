//! The PnP sequence as Dxgkrnl drives it: DriverEntry ([`Machine::load_driver`]) → AddDevice →
//! StartDevice → the QueryAdapterInfo calls Windows makes at start → … → StopDevice →
//! RemoveDevice → Unload, plus interrupt and DPC delivery and the device model hook
//! ([`SimDevice`]).
//!
//! * StartDevice gets a DXGK_START_INFO and a DXGKRNL_INTERFACE sized for the interface version
//!   the driver registered (`Size`, `Version` and only the members of that version; see
//!   [`super::callbacks`]).
//! * DRIVERCAPS is queried with the output size of the *machine's* interface version
//!   (`DXGK_DRIVERCAPS_SIZE_BY_VERSION`): a driver that requires its own compiled size fails on
//!   older Windows, as it would there. Every QAI output buffer is guarded; writing past
//!   `OutputDataSize` is a [`Rule::DdiProtocol`] finding.
//! * After DRIVERCAPS the DDI sets are checked (ddi-reference §1.5): GpuMmuSupported requires
//!   CreateProcess, DestroyProcess, SetRootPageTable, SubmitCommandVirtual (and
//!   GetRootPageTableSize when GPUMMUCAPS reports 2 levels); IoMmuSecureModeSupported requires
//!   Begin/EndExclusiveAccess. A missing DDI or a failed start query fails the start: Dxgkrnl
//!   calls StopDevice and RemoveDevice, and `start_adapter` returns the status.
//! * After RemoveDevice, anything the adapter still holds (MDL pages, contiguous memory, IOMMU
//!   and MMIO mappings) is a [`Rule::ResourceLeak`]; at unload, pool, driver MDLs, handles and
//!   threads are checked too.
//! * Whenever control returns to the simulator from a DDI, the adapter's device model is
//!   synchronized ([`SimDevice::sync`]) and a pending interrupt is delivered to
//!   DxgkDdiInterruptRoutine at device IRQL, then queued DPCs run.

use dxgk_sys::{
    DRIVER_OBJECT, DXGKARG_QUERYADAPTERINFO, DXGK_DRIVERCAPS, DXGK_GPUMMUCAPS,
    DXGK_PAGE_TABLE_LEVEL_DESC, DXGK_PHYSICALADAPTERCAPS, DXGK_PHYSICAL_MEMORY_RANGE,
    DXGK_QUERYADAPTERINFOTYPE, DXGK_QUERYSEGMENTOUT4, DXGK_START_INFO, NTSTATUS, PVOID, ULONG,
    UNICODE_STRING,
};

use super::{new_adapter, size_at, AdapterId, DriverStorage, DEVICE_IRQL};
use crate::dxgkrnl::dma::Dma;
use crate::machine::{irql, set_irql, Machine, MachineState};
use crate::trace::{TraceValue, Track};
use crate::verifier::{Finding, Rule};

/// A device model plugged behind an adapter's MMIO BAR and IOMMU.
pub trait SimDevice: Send {
    /// Size of the MMIO BAR in bytes (a multiple of 4).
    fn mmio_size(&self) -> usize;
    /// Power-on state (called before StartDevice).
    fn reset(&mut self, mmio: &mut [u32]);
    /// Advances the device: called deterministically whenever control returns to the simulator
    /// from a DDI (and by [`Machine::service`]). Device memory access goes through `dma`.
    fn sync(&mut self, mmio: &mut [u32], dma: &mut Dma);
    /// Whether the device asserts its interrupt line.
    fn interrupt_pending(&self) -> bool;
    /// Monotonic counters the model keeps (commands executed, bytes moved, …), for reports and
    /// the event trace ([`crate::trace`]): a synchronization that moved any of them is recorded
    /// with the differences. Default: none (every synchronization is recorded).
    fn counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
    /// The driver reads the register at byte `offset` (READ_REGISTER_ULONG). Default: plain
    /// memory.
    fn mmio_read(&mut self, offset: u32, mmio: &mut [u32]) -> u32 {
        mmio.get(offset as usize / 4).copied().unwrap_or(u32::MAX)
    }
    /// The driver writes `value` to the register at byte `offset` (WRITE_REGISTER_ULONG).
    /// Default: plain memory.
    fn mmio_write(&mut self, offset: u32, value: u32, mmio: &mut [u32]) {
        if let Some(w) = mmio.get_mut(offset as usize / 4) {
            *w = value;
        }
    }
}

/// An adapter to plug into a machine.
#[derive(Default)]
pub struct AdapterConfig {
    /// The device model (None: plain memory behind a 64 KiB BAR).
    pub device: Option<Box<dyn SimDevice>>,
}

impl std::fmt::Debug for AdapterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "AdapterConfig {{ device: {} }}",
            if self.device.is_some() {
                "Some(..)"
            } else {
                "None"
            }
        )
    }
}

/// Where an adapter is in its PnP life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PnpState {
    Added,
    Started,
    Stopped,
    Removed,
}

/// What the driver answered at start.
#[derive(Clone, Default)]
pub struct AdapterInfo {
    /// Interface version of the DXGKRNL_INTERFACE given to StartDevice.
    pub interface_version: u32,
    pub number_of_video_present_sources: u32,
    pub number_of_children: u32,
    /// OutputDataSize Windows passed for DRIVERCAPS, and the answer (zero-extended).
    pub driver_caps_size: usize,
    pub driver_caps: Option<DXGK_DRIVERCAPS>,
    pub segments: Option<DXGK_QUERYSEGMENTOUT4>,
    /// The segment descriptors of the fill call (`NbSegment * SegmentDescriptorStride` bytes).
    pub segment_descriptors: Vec<u8>,
    pub gpummu_caps: Option<DXGK_GPUMMUCAPS>,
    pub page_table_levels: Vec<DXGK_PAGE_TABLE_LEVEL_DESC>,
    pub physical_adapter_caps: Option<DXGK_PHYSICALADAPTERCAPS>,
    pub num_power_components: Option<u32>,
    pub framebuffer_save_size: Option<usize>,
    pub hardware_reserved_ranges: Option<Vec<DXGK_PHYSICAL_MEMORY_RANGE>>,
    /// QueryAdapterInfo types asked at start, in order.
    pub queries: Vec<i32>,
    /// DXGK_PHYSICAL_MEMORY_CAPS.HighestVisibleAddress, asked after AddDevice, before
    /// StartDevice (interface ≥ WDDM 2.9).
    pub highest_visible_address: Option<i64>,
    /// DXGK_IOMMU_CAPS (raw bits), asked with the above.
    pub iommu_caps: Option<u32>,
    /// Dxgkrnl accepted DMA remapping for this adapter: WDDM 3.0 or newer and the driver
    /// answered `DmaRemappingSupported`. Such a driver must not use the WDDM 2.4 memory
    /// callbacks ([`crate::Rule::MdlMisuse`]).
    pub dma_remapping: bool,
}

impl std::fmt::Debug for AdapterInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdapterInfo")
            .field("interface_version", &self.interface_version)
            .field("driver_caps_size", &self.driver_caps_size)
            .field("queries", &self.queries)
            .finish_non_exhaustive()
    }
}

impl AdapterInfo {
    /// DRIVERCAPS as answered at start.
    pub fn driver_caps(&self) -> Option<DXGK_DRIVERCAPS> {
        self.driver_caps
    }
}

const GUARD: usize = 64;
const GUARD_BYTE: u8 = 0xAB;

fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
    let p = (v as *const T).cast::<u8>();
    // SAFETY: `v` is a live `T` of `size_of::<T>()` bytes; generated types have no padding
    // whose reading matters (we only copy it back into the same type).
    unsafe { std::slice::from_raw_parts(p, std::mem::size_of::<T>()) }.to_vec()
}

fn from_bytes<T: Copy + Default>(b: &[u8]) -> T {
    let mut v = T::default();
    let n = b.len().min(std::mem::size_of::<T>());
    let p = (&mut v as *mut T).cast::<u8>();
    // SAFETY: copies at most size_of::<T>() bytes into `v`; generated types are plain data for
    // which any byte pattern the driver wrote is what Windows would read.
    unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), p, n) };
    v
}

struct Ddis {
    data: dxgk_sys::DRIVER_INITIALIZATION_DATA,
}

fn ddis(m: &MachineState) -> Option<Ddis> {
    m.port().registered.as_deref().map(|d| Ddis { data: *d })
}

fn context_of(m: &MachineState, id: AdapterId) -> PVOID {
    m.port().adapters[id.0 as usize].context as PVOID
}

/// Synchronizes the device and delivers pending interrupts and DPCs (bounded).
pub(crate) fn after_ddi(m: &MachineState, id: AdapterId) {
    for _ in 0..64 {
        let dev = m
            .port()
            .adapters
            .get(id.0 as usize)
            .and_then(|a| a.device.clone());
        let Some(dev) = dev else {
            // No device model (a root-enumerated adapter): the "device" is whatever engine
            // thread the driver runs; let it finish what the DDI started (soft rgpu).
            crate::ntoskrnl::sync::wait_until_system_threads_quiescent(m);
            break;
        };
        let (ptr, len) = {
            let mut port = m.port();
            let a = &mut port.adapters[id.0 as usize];
            (a.mmio.as_mut_ptr(), a.mmio.len())
        };
        // SAFETY: the BAR storage lives as long as the adapter; register accesses to it are
        // serialized with this sync by the device lock taken below.
        let mmio = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
        let mut dma = Dma {
            machine: crate::machine::current(),
            adapter: id,
        };
        let pending = {
            let mut d = dev.lock();
            let span = crate::trace::begin(m);
            let before = if span.is_some() {
                d.counters()
            } else {
                Vec::new()
            };
            d.sync(mmio, &mut dma);
            if span.is_some() {
                let after = d.counters();
                let moved: Vec<(&'static str, crate::trace::TraceValue)> = after
                    .iter()
                    .zip(before.iter().map(|b| b.1).chain(std::iter::repeat(0)))
                    .filter(|((_, a), b)| a != b)
                    .map(|((n, a), b)| (*n, a.wrapping_sub(b).into()))
                    .collect();
                if after.is_empty() || !moved.is_empty() {
                    crate::trace::end(m, span, crate::trace::Track::Device, "device run", || {
                        let mut args = vec![("adapter", id.0.into())];
                        args.extend(moved);
                        args
                    });
                }
            }
            d.interrupt_pending()
        };
        if !pending {
            break;
        }
        deliver_interrupt(m, id, 0);
    }
    crate::ntoskrnl::dpc::run_if_below_dispatch(m);
}

fn deliver_interrupt(m: &MachineState, id: AdapterId, message: ULONG) -> bool {
    let Some(isr) = ddis(m).and_then(|d| d.data.DxgkDdiInterruptRoutine) else {
        return false;
    };
    let ctx = context_of(m, id);
    let lock = super::interrupt_lock(m, id);
    let claimed = {
        let _held = lock.lock();
        let old = irql();
        set_irql(DEVICE_IRQL);
        let r = crate::trace::call(
            m,
            crate::trace::Track::Interrupt,
            "DxgkDdiInterruptRoutine",
            || vec![("adapter", id.0.into()), ("message", message.into())],
            // SAFETY: the miniport's ISR with its adapter context, at device IRQL.
            || super::in_interrupt_of(id, || unsafe { isr(ctx, message) }),
        );
        if irql() != DEVICE_IRQL {
            m.report(Finding::here(
                Rule::IrqlTransition,
                "DxgkDdiInterruptRoutine",
                format!("returned at IRQL {}", irql()),
            ));
        }
        set_irql(old);
        r != 0
    };
    crate::ntoskrnl::dpc::run_if_below_dispatch(m);
    claimed
}

struct Qai {
    id: AdapterId,
}

impl Qai {
    /// One QueryAdapterInfo call with a guarded output buffer.
    fn call(
        &self,
        m: &MachineState,
        ty: DXGK_QUERYADAPTERINFOTYPE,
        input: &mut [u8],
        out: &[u8],
    ) -> Result<Vec<u8>, NTSTATUS> {
        let Some(qai) = ddis(m).and_then(|d| d.data.DxgkDdiQueryAdapterInfo) else {
            return Err(dxgk_sys::STATUS_NOT_SUPPORTED);
        };
        m.port().adapters[self.id.0 as usize]
            .info
            .queries
            .push(ty.0);
        let mut buf = out.to_vec();
        buf.resize(out.len() + GUARD, GUARD_BYTE);
        let args = DXGKARG_QUERYADAPTERINFO {
            Type: ty,
            pInputData: input.as_mut_ptr().cast(),
            InputDataSize: input.len() as u32,
            pOutputData: buf.as_mut_ptr().cast(),
            OutputDataSize: out.len() as u32,
            ..Default::default()
        };
        let ctx = context_of(m, self.id);
        let s = crate::trace::call(
            m,
            Track::Ddi,
            "DxgkDdiQueryAdapterInfo",
            || vec![("type", TraceValue::Int(ty.0.into()))],
            // SAFETY: the miniport's QueryAdapterInfo with its adapter handle and valid buffers.
            || unsafe { qai(ctx, &args) },
        );
        after_ddi(m, self.id);
        if buf[out.len()..].iter().any(|&b| b != GUARD_BYTE) {
            m.report(Finding::here(
                Rule::DdiProtocol,
                "DxgkDdiQueryAdapterInfo",
                format!("type {} wrote past OutputDataSize {}", ty.0, out.len()),
            ));
        }
        if s != dxgk_sys::STATUS_SUCCESS {
            return Err(s);
        }
        buf.truncate(out.len());
        Ok(buf)
    }
}

fn fail_start(m: &MachineState, id: AdapterId, started: bool, status: NTSTATUS) -> NTSTATUS {
    let d = ddis(m).expect("registered");
    let ctx = context_of(m, id);
    if started {
        if let Some(stop) = d.data.DxgkDdiStopDevice {
            crate::trace::call(
                m,
                Track::Ddi,
                "DxgkDdiStopDevice",
                Vec::new,
                // SAFETY: the miniport's StopDevice with its context.
                || unsafe { stop(ctx) },
            );
        }
    }
    remove(m, id, &d);
    status
}

fn remove(m: &MachineState, id: AdapterId, d: &Ddis) -> NTSTATUS {
    let ctx = context_of(m, id);
    let s = match d.data.DxgkDdiRemoveDevice {
        Some(r) => crate::trace::call(
            m,
            Track::Ddi,
            "DxgkDdiRemoveDevice",
            Vec::new,
            // SAFETY: the miniport's RemoveDevice with its context, once.
            || unsafe { r(ctx) },
        ),
        None => dxgk_sys::STATUS_SUCCESS,
    };
    crate::ntoskrnl::dpc::run_if_below_dispatch(m);
    m.port().adapters[id.0 as usize].state = PnpState::Removed;
    let mut f = super::memory_callbacks::leak_findings(m, Some(id), "DxgkDdiRemoveDevice");
    f.extend(super::mmio_leak_findings(
        m,
        Some(id),
        "DxgkDdiRemoveDevice",
    ));
    for x in f {
        m.report(x);
    }
    s
}

fn missing(m: &MachineState, what: &str, names: &[(&str, bool)]) -> bool {
    let gone: Vec<&str> = names.iter().filter(|(_, ok)| !ok).map(|x| x.0).collect();
    if gone.is_empty() {
        return false;
    }
    m.report(Finding::here(
        Rule::DdiProtocol,
        "DxgkDdiStartDevice",
        format!(
            "{what} requires DDIs the driver did not register: {}",
            gone.join(", ")
        ),
    ));
    true
}

fn start(m: &MachineState, id: AdapterId) -> NTSTATUS {
    let Some(d) = ddis(m) else {
        panic!("dxgk-sim: start_adapter before a driver registered (load_driver first)");
    };
    let dd = &d.data;
    let state = m.port().adapters[id.0 as usize].state;
    match state {
        PnpState::Added => {}
        // A stopped adapter is started again without a new AddDevice (PnP rebalance, or
        // disable/enable of a device Dxgkrnl keeps): StartDevice with the same context.
        PnpState::Stopped => return start_device(m, id, &d, context_of(m, id)),
        other => panic!("dxgk-sim: start_adapter on an adapter in state {other:?}"),
    }
    // AddDevice.
    let pdo: *mut dxgk_sys::DEVICE_OBJECT = {
        let mut port = m.port();
        &mut *port.adapters[id.0 as usize].pdo
    };
    let mut ctx: PVOID = std::ptr::null_mut();
    let add = dd.DxgkDdiAddDevice.expect("validated at DxgkInitialize");
    let s = crate::trace::call(
        m,
        Track::Ddi,
        "DxgkDdiAddDevice",
        Vec::new,
        // SAFETY: a PDO and a context slot, as Dxgkrnl passes them.
        || unsafe { add(pdo, &mut ctx) },
    );
    if s != dxgk_sys::STATUS_SUCCESS || ctx.is_null() {
        m.port().adapters[id.0 as usize].state = PnpState::Removed;
        return if s == dxgk_sys::STATUS_SUCCESS {
            dxgk_sys::STATUS_UNSUCCESSFUL
        } else {
            s
        };
    }
    m.port().adapters[id.0 as usize].context = ctx as usize;
    // Required DDIs for any adapter (checked at start; DxgkInitialize checks the PnP set).
    if missing(
        m,
        "a WDDM adapter",
        &[
            (
                "DxgkDdiQueryAdapterInfo",
                dd.DxgkDdiQueryAdapterInfo.is_some(),
            ),
            (
                "DxgkDdiInterruptRoutine",
                dd.DxgkDdiInterruptRoutine.is_some(),
            ),
            ("DxgkDdiDpcRoutine", dd.DxgkDdiDpcRoutine.is_some()),
        ],
    ) {
        return fail_start(m, id, false, dxgk_sys::STATUS_UNSUCCESSFUL);
    }
    // The DMA remapping opt-in: Windows asks both caps after AddDevice, before StartDevice.
    if let Err(s) = remapping_queries(m, id, dd.Version.min(m.config.max_interface_version)) {
        return fail_start(m, id, false, s);
    }
    start_device(m, id, &d, ctx)
}

/// DXGKQAITYPE_PHYSICAL_MEMORY_CAPS and DXGKQAITYPE_IOMMU_CAPS, asked before StartDevice on an
/// interface ≥ WDDM 2.9 (the types exist from 2.9; remapping is accepted from WDDM 3.0).
/// STATUS_NOT_SUPPORTED is an answer (no remapping); any other failure fails the start.
fn remapping_queries(m: &MachineState, id: AdapterId, version: u32) -> Result<(), NTSTATUS> {
    if version < dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM2_9 {
        return Ok(());
    }
    let q = Qai { id };
    let optional = |r: Result<Vec<u8>, NTSTATUS>| match r {
        Ok(v) => Ok(Some(v)),
        Err(s) if s == dxgk_sys::STATUS_NOT_SUPPORTED => Ok(None),
        Err(s) => Err(s),
    };
    let size = std::mem::size_of::<dxgk_sys::DXGK_PHYSICAL_MEMORY_CAPS>();
    let phys = optional(q.call(
        m,
        dxgk_sys::DXGKQAITYPE_PHYSICAL_MEMORY_CAPS,
        &mut [],
        &vec![0u8; size],
    ))?
    .map(|b| {
        // SAFETY: LARGE_INTEGER is plain data; any bit pattern is valid.
        unsafe {
            from_bytes::<dxgk_sys::DXGK_PHYSICAL_MEMORY_CAPS>(&b)
                .HighestVisibleAddress
                .QuadPart
        }
    });
    let size = std::mem::size_of::<dxgk_sys::DXGK_IOMMU_CAPS>();
    let iommu = optional(q.call(
        m,
        dxgk_sys::DXGKQAITYPE_IOMMU_CAPS,
        &mut [],
        &vec![0u8; size],
    ))?
    .map(|b| u32::from_le_bytes(b[..4].try_into().expect("4 bytes")));
    // Remapping needs an IOMMU that remaps (identity mode has none to offer).
    let remapping = version >= dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM3_0
        && m.config.iommu == crate::IommuMode::Remapped
        && iommu.is_some_and(|c| c & IOMMU_CAPS_DMA_REMAPPING_SUPPORTED != 0);
    let mut port = m.port();
    let a = &mut port.adapters[id.0 as usize];
    a.info.highest_visible_address = phys;
    a.info.iommu_caps = iommu;
    a.info.dma_remapping = remapping;
    Ok(())
}

/// Dxgkrnl's refusal of an adapter that cannot reach installed memory: the GPU's highest
/// visible address (PHYSICAL_MEMORY_CAPS, else DRIVERCAPS.HighestAcceptableAddress) is below
/// the highest installed physical address and DMA remapping was not accepted (with remapping,
/// logical addresses are allocated inside the GPU's reach instead). STATUS_NOT_SUPPORTED and a
/// `dxgkrnl:` debug line saying why.
fn check_reach(m: &MachineState, id: AdapterId) -> Result<(), NTSTATUS> {
    let (visible, remapping) = {
        let port = m.port();
        let info = &port.adapters[id.0 as usize].info;
        let from_caps = info.driver_caps.map(|c| {
            // SAFETY: LARGE_INTEGER is plain data; any bit pattern is valid.
            unsafe { c.HighestAcceptableAddress.QuadPart }
        });
        (
            info.highest_visible_address.or(from_caps),
            info.dma_remapping,
        )
    };
    let installed = m.config.highest_physical_address();
    let Some(visible) = visible.filter(|&v| v > 0) else {
        return Ok(());
    };
    if remapping || visible as u64 >= installed {
        return Ok(());
    }
    m.debug_print(crate::machine::DebugLine {
        component: 0,
        level: 0,
        text: format!(
            "dxgkrnl: adapter refused: the GPU reaches up to {visible:#x}, installed memory up to \
             {installed:#x}, and DMA remapping was not accepted\n"
        ),
    });
    Err(dxgk_sys::STATUS_NOT_SUPPORTED)
}

/// DXGK_IOMMU_CAPS bit 2.
const IOMMU_CAPS_DMA_REMAPPING_SUPPORTED: u32 = 1 << 2;

/// DxgkDdiStartDevice and the start queries, for an added or stopped adapter.
fn start_device(m: &MachineState, id: AdapterId, d: &Ddis, ctx: PVOID) -> NTSTATUS {
    let dd = &d.data;
    // StartDevice.
    let version = dd.Version.min(m.config.max_interface_version);
    let (iface, mmio_ptr, mmio_len) = {
        let mut port = m.port();
        let a = &mut port.adapters[id.0 as usize];
        *a.interface = super::callbacks::build_interface(id.device_handle(), version);
        a.info.interface_version = version;
        (
            &mut *a.interface as *mut dxgk_sys::DXGKRNL_INTERFACE,
            a.mmio.as_mut_ptr(),
            a.mmio.len(),
        )
    };
    let dev = m.port().adapters[id.0 as usize].device.clone();
    if let Some(dev) = dev {
        // SAFETY: the BAR storage; nothing else touches it before StartDevice.
        let mmio = unsafe { std::slice::from_raw_parts_mut(mmio_ptr, mmio_len) };
        dev.lock().reset(mmio);
    }
    let mut info = DXGK_START_INFO {
        RequiredDmaQueueEntry: 16,
        ..Default::default()
    };
    info.AdapterLuid.LowPart = 0x5100 + id.0;
    info.AdapterGuid.Data1 = 0x5EED_0000 + id.0;
    let (mut sources, mut children) = (0u32, 0u32);
    let startf = dd.DxgkDdiStartDevice.expect("validated at DxgkInitialize");
    let s = crate::trace::call(
        m,
        Track::Ddi,
        "DxgkDdiStartDevice",
        || vec![("interface_version", version.into())],
        // SAFETY: valid start info, interface (owned by the adapter) and out counts.
        || unsafe { startf(ctx, &mut info, iface, &mut sources, &mut children) },
    );
    after_ddi(m, id);
    if s != dxgk_sys::STATUS_SUCCESS {
        return fail_start(m, id, false, s);
    }
    {
        let mut port = m.port();
        let a = &mut port.adapters[id.0 as usize];
        a.info.number_of_video_present_sources = sources;
        a.info.number_of_children = children;
    }
    match start_queries(m, id, d).and_then(|()| check_reach(m, id)) {
        Ok(()) => {
            m.port().adapters[id.0 as usize].state = PnpState::Started;
            dxgk_sys::STATUS_SUCCESS
        }
        Err(s) => fail_start(m, id, true, s),
    }
}

fn start_queries(m: &MachineState, id: AdapterId, d: &Ddis) -> Result<(), NTSTATUS> {
    let dd = &d.data;
    let q = Qai { id };
    let version = m.config.max_interface_version;
    // DRIVERCAPS with the size this Windows passes.
    let caps_size = size_at(dxgk_sys::DXGK_DRIVERCAPS_SIZE_BY_VERSION, version)
        .unwrap_or(std::mem::size_of::<DXGK_DRIVERCAPS>());
    let out = q.call(
        m,
        dxgk_sys::DXGKQAITYPE_DRIVERCAPS,
        &mut [],
        &vec![0u8; caps_size],
    )?;
    let caps: DXGK_DRIVERCAPS = from_bytes(&out);
    {
        let mut port = m.port();
        let a = &mut port.adapters[id.0 as usize];
        a.info.driver_caps_size = caps_size;
        a.info.driver_caps = Some(caps);
    }
    let mm = caps.MemoryManagementCaps;
    let gpummu = mm.GpuMmuSupported() != 0;
    let iommu = mm.IoMmuSecureModeSupported() != 0;
    if gpummu
        && missing(
            m,
            "GpuMmuSupported",
            &[
                ("DxgkDdiCreateProcess", dd.DxgkDdiCreateProcess.is_some()),
                ("DxgkDdiDestroyProcess", dd.DxgkDdiDestroyProcess.is_some()),
                (
                    "DxgkDdiSetRootPageTable",
                    dd.DxgkDdiSetRootPageTable.is_some(),
                ),
                (
                    "DxgkDdiSubmitCommandVirtual",
                    dd.DxgkDdiSubmitCommandVirtual.is_some(),
                ),
            ],
        )
    {
        return Err(dxgk_sys::STATUS_UNSUCCESSFUL);
    }
    if iommu
        && missing(
            m,
            "IoMmuSecureModeSupported",
            &[
                (
                    "DxgkDdiBeginExclusiveAccess",
                    dd.DxgkDdiBeginExclusiveAccess.is_some(),
                ),
                (
                    "DxgkDdiEndExclusiveAccess",
                    dd.DxgkDdiEndExclusiveAccess.is_some(),
                ),
            ],
        )
    {
        return Err(dxgk_sys::STATUS_UNSUCCESSFUL);
    }
    let mut index0 = 0u32.to_le_bytes();
    if gpummu {
        // QUERYSEGMENT4: count, then fill.
        let stride = std::mem::size_of::<dxgk_sys::DXGK_SEGMENTDESCRIPTOR4>();
        let probe = DXGK_QUERYSEGMENTOUT4 {
            SegmentDescriptorStride: stride,
            ..Default::default()
        };
        let out = q.call(
            m,
            dxgk_sys::DXGKQAITYPE_QUERYSEGMENT4,
            &mut index0,
            &bytes_of(&probe),
        )?;
        let counted: DXGK_QUERYSEGMENTOUT4 = from_bytes(&out);
        let n = counted.NbSegment as usize;
        let mut descs = vec![0u8; n * stride];
        let fill = DXGK_QUERYSEGMENTOUT4 {
            NbSegment: counted.NbSegment,
            pSegmentDescriptor: descs.as_mut_ptr(),
            SegmentDescriptorStride: stride,
            ..Default::default()
        };
        let out = q.call(
            m,
            dxgk_sys::DXGKQAITYPE_QUERYSEGMENT4,
            &mut index0,
            &bytes_of(&fill),
        )?;
        let mut segs: DXGK_QUERYSEGMENTOUT4 = from_bytes(&out);
        segs.pSegmentDescriptor = std::ptr::null_mut();
        // GPUMMUCAPS.
        let size = size_at(dxgk_sys::DXGK_GPUMMUCAPS_SIZE_BY_VERSION, version)
            .unwrap_or(std::mem::size_of::<DXGK_GPUMMUCAPS>());
        let out = q.call(
            m,
            dxgk_sys::DXGKQAITYPE_GPUMMUCAPS,
            &mut index0,
            &vec![0u8; size],
        )?;
        let mmu: DXGK_GPUMMUCAPS = from_bytes(&out);
        if mmu.PageTableLevelCount == 2
            && missing(
                m,
                "a 2-level GpuMmu",
                &[(
                    "DxgkDdiGetRootPageTableSize",
                    dd.DxgkDdiGetRootPageTableSize.is_some(),
                )],
            )
        {
            return Err(dxgk_sys::STATUS_UNSUCCESSFUL);
        }
        if !(2..=6).contains(&mmu.PageTableLevelCount) {
            m.report(Finding::here(
                Rule::DdiProtocol,
                "DxgkDdiQueryAdapterInfo",
                format!(
                    "GPUMMUCAPS.PageTableLevelCount {} outside 2..=6",
                    mmu.PageTableLevelCount
                ),
            ));
            return Err(dxgk_sys::STATUS_UNSUCCESSFUL);
        }
        let mut levels = Vec::new();
        for level in 0..mmu.PageTableLevelCount {
            let mut input = level.to_le_bytes();
            let out = q.call(
                m,
                dxgk_sys::DXGKQAITYPE_PAGETABLELEVELDESC,
                &mut input,
                &vec![0u8; std::mem::size_of::<DXGK_PAGE_TABLE_LEVEL_DESC>()],
            )?;
            levels.push(from_bytes::<DXGK_PAGE_TABLE_LEVEL_DESC>(&out));
        }
        let size = size_at(dxgk_sys::DXGK_PHYSICALADAPTERCAPS_SIZE_BY_VERSION, version)
            .unwrap_or(std::mem::size_of::<DXGK_PHYSICALADAPTERCAPS>());
        let out = q.call(
            m,
            dxgk_sys::DXGKQAITYPE_PHYSICALADAPTERCAPS,
            &mut index0,
            &vec![0u8; size],
        )?;
        let pac: DXGK_PHYSICALADAPTERCAPS = from_bytes(&out);
        let out = q.call(
            m,
            dxgk_sys::DXGKQAITYPE_NUMPOWERCOMPONENTS,
            &mut [],
            &[0u8; 4],
        )?;
        let npc = u32::from_le_bytes(out[..4].try_into().expect("4 bytes"));
        let mut port = m.port();
        let a = &mut port.adapters[id.0 as usize];
        a.info.segments = Some(segs);
        a.info.segment_descriptors = descs;
        a.info.gpummu_caps = Some(mmu);
        a.info.page_table_levels = levels;
        a.info.physical_adapter_caps = Some(pac);
        a.info.num_power_components = Some(npc);
    }
    if iommu {
        let out = q.call(
            m,
            dxgk_sys::DXGKQAITYPE_FRAMEBUFFERSAVESIZE,
            &mut index0,
            &vec![0u8; std::mem::size_of::<dxgk_sys::DXGK_FRAMEBUFFERSAVEAREA>()],
        )?;
        let fb: dxgk_sys::DXGK_FRAMEBUFFERSAVEAREA = from_bytes(&out);
        if !fb.MaximumSize.is_multiple_of(crate::memory::PAGE) {
            m.report(Finding::here(
                Rule::DdiProtocol,
                "DxgkDdiQueryAdapterInfo",
                format!(
                    "FRAMEBUFFERSAVESIZE {:#x} is not a multiple of PAGE_SIZE",
                    fb.MaximumSize
                ),
            ));
            return Err(dxgk_sys::STATUS_UNSUCCESSFUL);
        }
        let probe = dxgk_sys::DXGK_HARDWARERESERVEDRANGES::default();
        let out = q.call(
            m,
            dxgk_sys::DXGKQAITYPE_HARDWARERESERVEDRANGES,
            &mut index0,
            &bytes_of(&probe),
        )?;
        let counted: dxgk_sys::DXGK_HARDWARERESERVEDRANGES = from_bytes(&out);
        let mut ranges = vec![DXGK_PHYSICAL_MEMORY_RANGE::default(); counted.NumRanges as usize];
        if !ranges.is_empty() {
            let fill = dxgk_sys::DXGK_HARDWARERESERVEDRANGES {
                NumRanges: counted.NumRanges,
                pPhysicalRanges: ranges.as_mut_ptr(),
            };
            q.call(
                m,
                dxgk_sys::DXGKQAITYPE_HARDWARERESERVEDRANGES,
                &mut index0,
                &bytes_of(&fill),
            )?;
        }
        let mut port = m.port();
        let a = &mut port.adapters[id.0 as usize];
        a.info.framebuffer_save_size = Some(fb.MaximumSize);
        a.info.hardware_reserved_ranges = Some(ranges);
    }
    Ok(())
}

/// NTSTATUS values Dxgkrnl accepts from DxgkDdiBuildPagingBuffer.
pub const BUILD_PAGING_BUFFER_STATUSES: &[NTSTATUS] = &[
    dxgk_sys::STATUS_SUCCESS,
    dxgk_sys::STATUS_GRAPHICS_INSUFFICIENT_DMA_BUFFER,
    dxgk_sys::STATUS_GRAPHICS_ALLOCATION_BUSY,
];

impl Machine {
    /// Loads a driver: calls `entry` (DriverEntry) at PASSIVE_LEVEL with a DRIVER_OBJECT and a
    /// registry path the machine owns.
    pub fn load_driver(
        &self,
        entry: unsafe extern "system" fn(*mut DRIVER_OBJECT, *mut UNICODE_STRING) -> NTSTATUS,
    ) -> NTSTATUS {
        let mut path_buf: Box<[u16]> =
            "\\Registry\\Machine\\System\\CurrentControlSet\\Services\\simdriver\0"
                .encode_utf16()
                .collect();
        let mut path = Box::new(UNICODE_STRING {
            Length: ((path_buf.len() - 1) * 2) as u16,
            MaximumLength: (path_buf.len() * 2) as u16,
            Buffer: path_buf.as_mut_ptr(),
        });
        let mut object = Box::<DRIVER_OBJECT>::default();
        object.Type = 4; // IO_TYPE_DRIVER
        object.Size = std::mem::size_of::<DRIVER_OBJECT>() as i16;
        let (o, p): (*mut DRIVER_OBJECT, *mut UNICODE_STRING) = (&mut *object, &mut *path);
        self.state.port().driver = Some(DriverStorage {
            object,
            path_buf,
            path,
        });
        self.enter(|| {
            crate::trace::call(
                &self.state,
                Track::Ddi,
                "DriverEntry",
                Vec::new,
                // SAFETY: DriverEntry with valid, machine-owned objects.
                || unsafe { entry(o, p) },
            )
        })
    }

    /// Plugs in an adapter (not started yet).
    pub fn add_adapter(&self, config: AdapterConfig) -> AdapterId {
        let words = config
            .device
            .as_ref()
            .map_or(16 * 1024, |d| d.mmio_size().div_ceil(4));
        new_adapter(
            &self.state,
            false,
            self.state.config.max_interface_version,
            words,
            config.device,
            false,
        )
    }

    /// Plugs in a root-enumerated adapter (`Root\rgpu`, not started yet): its translated
    /// resource list is empty — no register BAR, no interrupt — as PnP gives a device that
    /// no bus enumerated. A driver sees no hardware there (rgpu runs soft mode).
    pub fn add_root_adapter(&self) -> AdapterId {
        new_adapter(
            &self.state,
            false,
            self.state.config.max_interface_version,
            16 * 1024,
            None,
            true,
        )
    }

    /// The PDO of adapter `id`, for tests that call DxgkDdiAddDevice themselves (the driver may
    /// ask PnP about it: `IoGetDeviceProperty` accepts only real PDOs).
    pub fn pdo(&self, id: AdapterId) -> *mut dxgk_sys::DEVICE_OBJECT {
        let mut port = self.state.port();
        &mut *port.adapters[id.0 as usize].pdo
    }

    /// AddDevice + StartDevice + the QueryAdapterInfo calls Windows makes at start. On failure
    /// the adapter is stopped (if it started) and removed, as Dxgkrnl does; the status is
    /// returned.
    pub fn start_adapter(&self, id: AdapterId) -> NTSTATUS {
        self.enter(|| start(&self.state, id))
    }

    /// DxgkDdiStopDevice.
    pub fn stop_adapter(&self, id: AdapterId) -> NTSTATUS {
        self.enter(|| {
            let d = ddis(&self.state).expect("driver registered");
            let ctx = context_of(&self.state, id);
            assert_eq!(
                self.adapter(id).state,
                PnpState::Started,
                "dxgk-sim: stop_adapter on an adapter that is not started"
            );
            let s = match d.data.DxgkDdiStopDevice {
                Some(f) => crate::trace::call(
                    &self.state,
                    Track::Ddi,
                    "DxgkDdiStopDevice",
                    Vec::new,
                    // SAFETY: the miniport's StopDevice with its context.
                    || unsafe { f(ctx) },
                ),
                None => dxgk_sys::STATUS_SUCCESS,
            };
            after_ddi(&self.state, id);
            self.state.port().adapters[id.0 as usize].state = PnpState::Stopped;
            s
        })
    }

    /// DxgkDdiRemoveDevice, then reports what the adapter still holds as [`Rule::ResourceLeak`].
    pub fn remove_adapter(&self, id: AdapterId) -> NTSTATUS {
        self.enter(|| {
            let d = ddis(&self.state).expect("driver registered");
            let st = self.adapter(id).state;
            assert!(
                matches!(st, PnpState::Stopped | PnpState::Started),
                "dxgk-sim: remove_adapter in state {st:?}"
            );
            remove(&self.state, id, &d)
        })
    }

    /// DxgkDdiUnload, then the unload-time leak checks (pool, driver MDLs, system-VA mappings,
    /// handles, threads, anything an adapter that was never removed still holds).
    pub fn unload_driver(&self) {
        self.enter(|| {
            let Some(d) = ddis(&self.state) else {
                return;
            };
            if let Some(u) = d.data.DxgkDdiUnload {
                crate::trace::call(
                    &self.state,
                    Track::Ddi,
                    "DxgkDdiUnload",
                    Vec::new,
                    // SAFETY: the miniport's Unload, once, after its adapters are gone.
                    || unsafe { u() },
                );
            }
            self.state.port().registered = None;
        });
        let live: Vec<AdapterId> = self
            .state
            .port()
            .adapters
            .iter()
            .filter(|a| a.state != PnpState::Removed && !a.synthetic)
            .map(|a| a.id)
            .collect();
        let mut f = Vec::new();
        for id in &live {
            f.extend(super::memory_callbacks::leak_findings(
                &self.state,
                Some(*id),
                "DxgkDdiUnload",
            ));
            f.extend(super::mmio_leak_findings(
                &self.state,
                Some(*id),
                "DxgkDdiUnload",
            ));
        }
        f.extend(self.state.mem().mm.leak_findings("DxgkDdiUnload"));
        f.extend(self.state.kernel().leak_findings("DxgkDdiUnload"));
        for x in f {
            self.state.report(x);
        }
        self.check_pool_leaks();
    }

    /// A snapshot of what the driver answered at start and where the adapter is.
    pub fn adapter(&self, id: AdapterId) -> AdapterView {
        let port = self.state.port();
        let a = &port.adapters[id.0 as usize];
        AdapterView {
            id,
            state: a.state,
            info: a.info.clone(),
            context: a.context as PVOID,
        }
    }

    /// The counters `id`'s device model reports ([`SimDevice::counters`]); empty without a
    /// model.
    pub fn device_counters(&self, id: AdapterId) -> Vec<(&'static str, u64)> {
        let dev = self.state.port().adapters[id.0 as usize].device.clone();
        dev.map(|d| d.lock().counters()).unwrap_or_default()
    }

    /// Synchronizes `id`'s device model, delivers its pending interrupts and runs queued DPCs.
    pub fn service(&self, id: AdapterId) {
        self.enter(|| after_ddi(&self.state, id));
    }

    /// Delivers one interrupt (message `message`) to DxgkDdiInterruptRoutine at device IRQL,
    /// then runs the DPCs it queued. Returns what the ISR returned.
    pub fn raise_interrupt(&self, id: AdapterId, message: u32) -> bool {
        self.enter(|| deliver_interrupt(&self.state, id, message))
    }

    /// The VidMm-side check of a DxgkDdiBuildPagingBuffer result: anything but SUCCESS,
    /// INSUFFICIENT_DMA_BUFFER or ALLOCATION_BUSY is a [`Rule::DdiProtocol`] finding. Returns
    /// whether the status was acceptable.
    pub fn check_build_paging_buffer_status(&self, status: NTSTATUS) -> bool {
        self.check_ddi_status(
            "DxgkDdiBuildPagingBuffer",
            status,
            BUILD_PAGING_BUFFER_STATUSES,
        )
    }

    /// Records a [`Rule::DdiProtocol`] finding when `status` is not one `ddi` may return.
    pub fn check_ddi_status(
        &self,
        ddi: &'static str,
        status: NTSTATUS,
        allowed: &[NTSTATUS],
    ) -> bool {
        if allowed.contains(&status) {
            return true;
        }
        self.state.report(Finding::here(
            Rule::DdiProtocol,
            ddi,
            format!(
                "returned {:#010x}, which Dxgkrnl does not accept from this DDI",
                status as u32
            ),
        ));
        false
    }
}

/// A snapshot of an adapter.
#[derive(Clone, Debug)]
pub struct AdapterView {
    pub id: AdapterId,
    pub state: PnpState,
    pub info: AdapterInfo,
    /// The MiniportDeviceContext AddDevice returned.
    pub context: PVOID,
}

impl AdapterView {
    /// DRIVERCAPS as answered at start.
    pub fn driver_caps(&self) -> Option<DXGK_DRIVERCAPS> {
        self.info.driver_caps
    }
}

/// `IoGetDeviceProperty`. PASSIVE_LEVEL. `DeviceObject` must be an adapter's PDO (the one
/// AddDevice received); only `DevicePropertyEnumeratorName` is simulated: `ROOT` for an adapter
/// from [`Machine::add_root_adapter`], `PCI` otherwise. A buffer too small for the
/// NUL-terminated string gets STATUS_BUFFER_TOO_SMALL with the needed size in `ResultLength`,
/// as on Windows.
#[no_mangle]
pub extern "system" fn IoGetDeviceProperty(
    device_object: *mut dxgk_sys::DEVICE_OBJECT,
    property: dxgk_sys::DEVICE_REGISTRY_PROPERTY,
    buffer_length: dxgk_sys::ULONG,
    buffer: dxgk_sys::PVOID,
    result_length: *mut dxgk_sys::ULONG,
) -> NTSTATUS {
    const CALL: &str = "IoGetDeviceProperty";
    if !crate::ntoskrnl::irql::require_irql_at_most(CALL, dxgk_sys::PASSIVE_LEVEL) {
        return dxgk_sys::STATUS_INVALID_DEVICE_STATE;
    }
    let m = crate::machine::current();
    m.count_call(CALL);
    let root = {
        let port = m.port();
        port.adapters
            .iter()
            .find(|a| std::ptr::eq(&*a.pdo, device_object))
            .map(|a| a.root_enumerated)
    };
    let Some(root) = root else {
        crate::memory::invalid(&m, CALL, format!("{device_object:p} is not a PDO"));
        return dxgk_sys::STATUS_INVALID_DEVICE_REQUEST;
    };
    if property != dxgk_sys::DevicePropertyEnumeratorName || result_length.is_null() {
        crate::memory::invalid(
            &m,
            CALL,
            format!("property {property} or a NULL ResultLength (only DevicePropertyEnumeratorName is simulated)"),
        );
        return dxgk_sys::STATUS_INVALID_PARAMETER;
    }
    let name: Vec<u16> = if root { "ROOT" } else { "PCI" }
        .encode_utf16()
        .chain([0])
        .collect();
    let bytes = (name.len() * 2) as dxgk_sys::ULONG;
    // SAFETY: checked non-NULL; the caller's ULONG.
    unsafe { result_length.write(bytes) };
    if buffer.is_null() || buffer_length < bytes {
        return dxgk_sys::STATUS_BUFFER_TOO_SMALL;
    }
    // SAFETY: the caller's buffer holds `buffer_length` ≥ `bytes` bytes; WCHARs may be
    // unaligned in principle, so copy bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(
            name.as_ptr().cast::<u8>(),
            buffer.cast::<u8>(),
            bytes as usize,
        )
    };
    dxgk_sys::STATUS_SUCCESS
}
