//! A D3DKMT-shaped front end: the calls a user-mode client (a UMD, or `rgpu-kmt`) makes
//! through gdi32's `D3DKMT*` functions, each routed into the miniport's DDIs the way Dxgkrnl
//! and VidMm route them. It is meant as the simulator backend of a client-side `Kmt` trait whose
//! Windows backend calls gdi32: every method takes the Rust counterpart of one D3DKMT structure
//! (same members, Rust types; outputs are filled in place) and returns the NTSTATUS as
//! `Result<_, NTSTATUS>` (`Err` is always a failure code; a wait that times out is
//! `Ok(`[`WaitOutcome::TimedOut`]`)`, as STATUS_TIMEOUT is a success code).
//!
//! # Routing
//!
//! | call | DDIs / VidMm |
//! |------|--------------|
//! | [`Kmt::enum_adapters2`], [`Kmt::open_adapter_from_luid`] | none (Dxgkrnl's adapter list) |
//! | [`Kmt::create_device`] | DxgkDdiCreateProcess (first device of a process), DxgkDdiCreateDevice, and VidMm's root page table ([`Vidmm::create_process`]) |
//! | [`Kmt::create_allocation2`] | DxgkDdiCreateAllocation; the driver's DXGK_ALLOCATIONINFO is checked as Dxgkrnl does and decides placement; backing from VidMm; DxgkDdiOpenAllocation (`Create`) for the creating device |
//! | [`Kmt::open_resource`] | DxgkCbGetHandleData-visible handle, DxgkDdiOpenAllocation on the opening device |
//! | [`Kmt::destroy_allocation2`] | unmap every GPU VA mapping, DxgkDdiCloseAllocation per device; with the last reference DxgkDdiDestroyAllocation and VidMm frees the backing — deferred while queued work of the device may still use it (see below) |
//! | [`Kmt::map_gpu_virtual_address`], [`Kmt::free_gpu_virtual_address`] | UPDATE_PAGE_TABLE + FLUSH_TLB through DxgkDdiBuildPagingBuffer ([`Vidmm::map`] / [`Vidmm::unmap`]) |
//! | [`Kmt::evict`] | contents paged out (VIRTUAL_TRANSFER), PTE invalidation through paging buffers, backing released ([`Vidmm::evict`]) |
//! | [`Kmt::make_resident`] | backing re-acquired, contents paged back in, mappings' PTEs rewritten + FLUSH_TLB ([`Vidmm::make_resident`]) |
//! | [`Kmt::submit_command`] | DxgkDdiSubmitCommandVirtual on the device's context, waited for (or held in the scheduler's queue: see below) |
//! | [`Kmt::escape`] | DxgkDdiEscape with a kernel copy of the buffer, copied back on success |
//!
//! # Handles
//!
//! Handles are `u32`s like D3DKMT_HANDLE, from one counter (distinct across processes). Each is
//! owned by the [`ClientId`] that received it: a handle of another process, of another device
//! (where a device's object is expected), of the wrong type, or already destroyed is refused
//! with STATUS_INVALID_PARAMETER — what Dxgkrnl's handle-table lookup returns — and never
//! reaches the driver.
//!
//! # Known gaps (the fake's `todo_wine`)
//!
//! * One device and one context per process (the VidMm process model); a second is
//!   STATUS_NOT_SUPPORTED.
//! * Submissions are synchronous by default: a submission completes before `submit_command`
//!   returns. [`Kmt::hold_submissions`] makes them asynchronous instead (below).
//! * Placement: the preferred segment when VidMm can place memory there (the implicit
//!   system-memory segment, or an aperture segment [`Vidmm::is_aperture`] accepts), else the
//!   implicit system-memory segment when the read set has it, else the first aperture segment
//!   of the read set VidMm can map; an allocation VidMm can place nowhere is
//!   STATUS_NOT_SUPPORTED (a limit of the simulator, no finding). VidMm never moves an allocation to another
//!   segment (no memory segments; eviction only at D3DKMTEvict).
//! * MakeResident is synchronous: the paging is done on return and `PagingFenceValue` is 0.
//!   VidMm here pages an evicted allocation out to (and back in from) system memory even
//!   though its backing already is system memory.
//!
//! # Work in flight: held submissions and deferred destruction
//!
//! With [`Kmt::hold_submissions`] on, the GPU scheduler keeps each D3DKMTSubmitCommand (and a
//! D3DKMTSignalSynchronizationObjectFromGpu2 queued behind it) in its software queue and
//! returns at once: the work is in flight, not yet given to the driver. Paging operations are
//! not queued behind it, so anything that unmapped or freed memory the queued work uses would
//! make it fault when it runs. The queue is released to the device in order (each submission
//! through DxgkDdiSubmitCommandVirtual, waited for) when something needs it done:
//! a CPU wait on a fence a queued signal would reach, D3DKMTLock2, D3DKMTEvict,
//! D3DKMTFreeGpuVirtualAddress, a synchronous destroy, device destruction, turning the hold
//! off, or [`Kmt::run_gpu`] (the scheduler getting to it).
//!
//! D3DKMTDestroyAllocation2 follows D3DDDICB_DESTROYALLOCATION2FLAGS (Learn):
//! * `AssumeNotInUse` clear (the default): work queued before the call may still access the
//!   allocation, so its destruction is deferred until that work finishes. The handle is gone
//!   at once (a second destroy, a Lock2 or a map of it is STATUS_INVALID_PARAMETER), but its GPU
//!   VA mappings stay and the driver sees DxgkDdiCloseAllocation / DxgkDdiDestroyAllocation and
//!   VidMm frees the backing only after the queued work ran.
//! * `SynchronousDestroy`: the call waits for that work and the reclamation before it returns.
//! * `AssumeNotInUse` set: the pending work is ignored and the allocation destroyed at once;
//!   queued work that still uses it then faults on the device (the client's bug, and what the
//!   GPU would do).
//!
//! Locks: the front end holds none of its own; it takes `port` (rank 30) only for the handle
//! table DxgkCbGetHandleData reads, never across a DDI call (see [`crate::lock_order`]).

use std::collections::HashMap;

use dxgk_sys::{HANDLE, NTSTATUS};

use crate::verifier::{Finding, Rule};
use crate::vidmm::{AllocId, ProcessId, Vidmm, VidmmError};

/// A D3DKMT_HANDLE.
pub type D3dkmtHandle = u32;
/// What a D3DKMT call returns: `Err` holds its (failure) NTSTATUS.
pub type KmtResult<T> = Result<T, NTSTATUS>;

/// WaitForSynchronizationObjectFromCpu on a fence nothing pending can signal: the wait would
/// never end, and this synchronous simulator returns what a bounded wait does.
pub const STATUS_TIMEOUT: NTSTATUS = 0x0000_0102;

/// How a CPU wait ended (both are success statuses: STATUS_SUCCESS and STATUS_TIMEOUT).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitOutcome {
    /// Every fence reached its value.
    Reached,
    /// The wait timed out (STATUS_TIMEOUT).
    TimedOut,
}

const INVALID: NTSTATUS = dxgk_sys::STATUS_INVALID_PARAMETER;
const PAGE: u64 = 4096;
/// Lowest GPU VA a reservation gets when the client lets the front end choose.
const VA_FLOOR: u64 = 0x10_0000_0000;

/// A client process (the caller Dxgkrnl would see).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(u32);

/// D3DKMT_ADAPTERINFO (one entry of D3DKMT_ENUMADAPTERS2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AdapterInfo {
    /// `hAdapter` (opened for the caller).
    pub h_adapter: D3dkmtHandle,
    /// `AdapterLuid` (low | high << 32).
    pub adapter_luid: u64,
    /// `NumOfSources`.
    pub num_of_sources: u32,
}

/// D3DKMT_OPENADAPTERFROMLUID.
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenAdapterFromLuid {
    /// `AdapterLuid` (in).
    pub adapter_luid: u64,
    /// `hAdapter` (out).
    pub h_adapter: D3dkmtHandle,
}

/// D3DKMT_CREATEDEVICE.
#[derive(Clone, Copy, Debug, Default)]
pub struct CreateDevice {
    /// `hAdapter` (in).
    pub h_adapter: D3dkmtHandle,
    /// `hDevice` (out).
    pub h_device: D3dkmtHandle,
}

/// D3DDDI_ALLOCATIONINFO2 (the members a GpuMmu client uses).
#[derive(Clone, Debug, Default)]
pub struct AllocationInfo2 {
    /// `pPrivateDriverData` / `PrivateDriverDataSize` (in): for rgpu, `rgpu_abi` data.
    pub private_driver_data: Vec<u8>,
    /// `hAllocation` (out).
    pub h_allocation: D3dkmtHandle,
}

/// D3DKMT_CREATEALLOCATION (as D3DKMTCreateAllocation2 takes it, no resource).
#[derive(Clone, Debug, Default)]
pub struct CreateAllocation2 {
    /// `hDevice` (in).
    pub h_device: D3dkmtHandle,
    /// `Flags.CreateShared` (in): also return a global share handle.
    pub create_shared: bool,
    /// `pAllocationInfo2` / `NumAllocations`.
    pub allocations: Vec<AllocationInfo2>,
    /// `hGlobalShare` (out, with `create_shared`).
    pub h_global_share: D3dkmtHandle,
}

/// D3DDDICB_DESTROYALLOCATION2FLAGS (see the module documentation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DestroyAllocation2Flags {
    /// `AssumeNotInUse`: ignore pending work of the device and destroy at once.
    pub assume_not_in_use: bool,
    /// `SynchronousDestroy`: return only once the memory is reclaimed.
    pub synchronous_destroy: bool,
}

/// D3DKMT_DESTROYALLOCATION2.
#[derive(Clone, Debug, Default)]
pub struct DestroyAllocation2 {
    /// `hDevice`.
    pub h_device: D3dkmtHandle,
    /// `phAllocationList`.
    pub allocations: Vec<D3dkmtHandle>,
    /// `Flags`.
    pub flags: DestroyAllocation2Flags,
}

/// D3DDDI_OPENALLOCATIONINFO2 (out).
#[derive(Clone, Debug, Default)]
pub struct OpenAllocationInfo2 {
    /// `hAllocation`.
    pub h_allocation: D3dkmtHandle,
    /// `pPrivateDriverData`: the creator's allocation private data.
    pub private_driver_data: Vec<u8>,
}

/// D3DKMT_OPENRESOURCE (by global share handle).
#[derive(Clone, Debug, Default)]
pub struct OpenResource {
    /// `hDevice` (in).
    pub h_device: D3dkmtHandle,
    /// `hGlobalShare` (in).
    pub h_global_share: D3dkmtHandle,
    /// `pOpenAllocationInfo2` (out, one per shared allocation).
    pub allocations: Vec<OpenAllocationInfo2>,
}

/// D3DDDI_RESERVEGPUVIRTUALADDRESS.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReserveGpuVirtualAddress {
    /// `hAdapter` (in; the caller's address space on that adapter).
    pub h_adapter: D3dkmtHandle,
    /// `BaseAddress` (in; 0 = the front end chooses).
    pub base_address: u64,
    /// `Size` (in; bytes, a multiple of 64 KiB).
    pub size: u64,
    /// `VirtualAddress` (out).
    pub virtual_address: u64,
}

/// D3DDDI_MAPGPUVIRTUALADDRESS.
#[derive(Clone, Copy, Debug, Default)]
pub struct MapGpuVirtualAddress {
    /// `hPagingQueue`: here the device the queue belongs to (in).
    pub h_device: D3dkmtHandle,
    /// `BaseAddress` (in): inside a reservation.
    pub base_address: u64,
    /// `hAllocation` (in).
    pub h_allocation: D3dkmtHandle,
    /// `OffsetInPages` (in): the first 4 KiB page of the allocation mapped.
    pub offset_in_pages: u64,
    /// `SizeInPages` (in): pages mapped from there (≥ 1, within the allocation).
    pub size_in_pages: u64,
    /// `VirtualAddress` (out).
    pub virtual_address: u64,
    /// `PagingFenceValue` (out; reached on return).
    pub paging_fence_value: u64,
}

/// D3DKMT_FREEGPUVIRTUALADDRESS.
#[derive(Clone, Copy, Debug, Default)]
pub struct FreeGpuVirtualAddress {
    /// `hAdapter`.
    pub h_adapter: D3dkmtHandle,
    /// `BaseAddress`: a reservation's start.
    pub base_address: u64,
    /// `Size`: that reservation's size.
    pub size: u64,
}

/// D3DDDI_MAKERESIDENT.
#[derive(Clone, Debug, Default)]
pub struct MakeResident {
    /// `hPagingQueue`: here its device.
    pub h_device: D3dkmtHandle,
    /// `AllocationList`.
    pub allocations: Vec<D3dkmtHandle>,
    /// `PagingFenceValue` (out).
    pub paging_fence_value: u64,
}

/// D3DKMT_EVICT.
#[derive(Clone, Debug, Default)]
pub struct Evict {
    /// `hDevice`.
    pub h_device: D3dkmtHandle,
    /// `AllocationList`.
    pub allocations: Vec<D3dkmtHandle>,
    /// `NumBytesToTrim` (out).
    pub num_bytes_to_trim: u64,
}

/// D3DKMT_CREATECONTEXTVIRTUAL.
#[derive(Clone, Copy, Debug, Default)]
pub struct CreateContextVirtual {
    /// `hDevice` (in).
    pub h_device: D3dkmtHandle,
    /// `NodeOrdinal` (in).
    pub node_ordinal: u32,
    /// `hContext` (out).
    pub h_context: D3dkmtHandle,
}

/// D3DKMT_SUBMITCOMMAND.
#[derive(Clone, Debug, Default)]
pub struct SubmitCommand {
    /// `Commands`: GPU VA of the command buffer.
    pub commands: u64,
    /// `CommandLength` in bytes.
    pub command_length: u32,
    /// `HwQueueProgressFenceId`-less broadcast list: `BroadcastContext[]` (one context).
    pub broadcast_contexts: Vec<D3dkmtHandle>,
}

/// D3DKMT_CREATESYNCHRONIZATIONOBJECT2 with `Info.Type = D3DDDI_MONITORED_FENCE`.
#[derive(Clone, Copy, Debug, Default)]
pub struct CreateSynchronizationObject2 {
    /// `hDevice` (in).
    pub h_device: D3dkmtHandle,
    /// `Info.MonitoredFence.InitialFenceValue` (in).
    pub initial_fence_value: u64,
    /// `hSyncObject` (out).
    pub h_sync_object: D3dkmtHandle,
}

/// D3DKMT_SIGNALSYNCHRONIZATIONOBJECTFROMGPU2 (monitored fences).
#[derive(Clone, Debug, Default)]
pub struct SignalSynchronizationObjectFromGpu2 {
    /// `hContext`s whose work precedes the signal.
    pub broadcast_contexts: Vec<D3dkmtHandle>,
    /// `ObjectHandleArray`.
    pub objects: Vec<D3dkmtHandle>,
    /// `MonitoredFenceValue`.
    pub fence_value: u64,
}

/// D3DKMT_WAITFORSYNCHRONIZATIONOBJECTFROMCPU.
#[derive(Clone, Debug, Default)]
pub struct WaitForSynchronizationObjectFromCpu {
    /// `hDevice`.
    pub h_device: D3dkmtHandle,
    /// `ObjectHandleArray`.
    pub objects: Vec<D3dkmtHandle>,
    /// `FenceValueArray`.
    pub fence_values: Vec<u64>,
}

/// D3DKMT_LOCK2.
#[derive(Clone, Copy, Debug, Default)]
pub struct Lock2 {
    /// `hDevice` (in).
    pub h_device: D3dkmtHandle,
    /// `hAllocation` (in).
    pub h_allocation: D3dkmtHandle,
    /// Bytes `pData` covers (out); read and write them with [`Kmt::read_locked`] /
    /// [`Kmt::write_locked`] (the simulator hands out no raw pointer).
    pub locked_bytes: u64,
}

/// D3DKMT_UNLOCK2.
#[derive(Clone, Copy, Debug, Default)]
pub struct Unlock2 {
    /// `hDevice`.
    pub h_device: D3dkmtHandle,
    /// `hAllocation`.
    pub h_allocation: D3dkmtHandle,
}

/// D3DKMT_ESCAPE with `Type = D3DKMT_ESCAPE_DRIVERPRIVATE`.
#[derive(Clone, Debug, Default)]
pub struct Escape {
    /// `hAdapter`.
    pub h_adapter: D3dkmtHandle,
    /// `hDevice` (0: adapter-level).
    pub h_device: D3dkmtHandle,
    /// `pPrivateDriverData` / `PrivateDriverDataSize` (in/out).
    pub private_driver_data: Vec<u8>,
}

/// Where and how an allocation was placed, from the driver's DXGK_ALLOCATIONINFO.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    /// `Size`.
    pub size: u64,
    /// `Alignment`.
    pub alignment: u32,
    /// `PreferredSegment.SegmentId0`.
    pub preferred_segment: u32,
    /// `SupportedReadSegmentSet`.
    pub read_segments: u32,
    /// `SupportedWriteSegmentSet`.
    pub write_segments: u32,
    /// The segment VidMm placed it in (0 while none of its segments can hold it here).
    pub segment: u32,
    /// `Flags.CpuVisible`.
    pub cpu_visible: bool,
    /// `Flags.MapApertureCpuVisible` and `Flags.AccessedPhysically`: MAP_APERTURE_SEGMENT2
    /// passes a CPU-visible address (when the driver declared MapAperture2Supported).
    pub map_aperture_cpu_visible: bool,
}

enum Object {
    Adapter,
    Device {
        adapter: D3dkmtHandle,
        process: ProcessId,
        context: Option<D3dkmtHandle>,
    },
    Allocation {
        device: D3dkmtHandle,
        /// Dxgkrnl's handle of the underlying allocation.
        global: u32,
        /// The driver's `hDeviceSpecificAllocation` for this device.
        opened: HANDLE,
        locked: bool,
    },
    Context {
        device: D3dkmtHandle,
    },
    Fence {
        value: u64,
    },
}

struct Entry {
    owner: ClientId,
    object: Object,
}

/// One allocation as Dxgkrnl sees it: shared by every handle opened on it.
struct Underlying {
    h_allocation: HANDLE,
    placement: Placement,
    backing: AllocId,
    private: Vec<u8>,
    refs: u32,
}

/// A GPU VA mapping: (client, base VA) → allocation.
struct Mapping {
    owner: ClientId,
    process: ProcessId,
    va: u64,
    bytes: u64,
    global: u32,
    handle: D3dkmtHandle,
}

/// Work the GPU scheduler holds (see the module documentation).
enum HeldWork {
    Submit {
        process: ProcessId,
        commands: u64,
        length: u32,
    },
    Signal {
        objects: Vec<D3dkmtHandle>,
        value: u64,
    },
}

struct Held {
    seq: u64,
    device: D3dkmtHandle,
    work: HeldWork,
}

/// An allocation handle destroyed while queued work of its device may use it: the rest of
/// its destruction runs once the queue is released past `after`.
struct Deferred {
    after: u64,
    c: ClientId,
    detached: Detached,
}

/// What destroying one allocation handle still has to do once the handle is gone.
struct Detached {
    h: D3dkmtHandle,
    global: u32,
    opened: HANDLE,
    process: ProcessId,
}

/// The D3DKMT front end of one started adapter. See the module documentation.
pub struct Kmt {
    v: Vidmm,
    luid: u64,
    next_handle: u32,
    next_client: u32,
    objects: HashMap<D3dkmtHandle, Entry>,
    allocations: HashMap<u32, Underlying>,
    shares: HashMap<D3dkmtHandle, Vec<u32>>,
    reservations: Vec<(ClientId, u64, u64)>,
    mappings: Vec<Mapping>,
    hold: bool,
    held: std::collections::VecDeque<Held>,
    next_seq: u64,
    deferred: Vec<Deferred>,
}

fn vidmm_status(e: VidmmError) -> NTSTATUS {
    match e {
        VidmmError::Ddi { status, .. } => status,
        VidmmError::BuildPagingBuffer { status, .. } if status < 0 => status,
        VidmmError::OutOfMemory => dxgk_sys::STATUS_NO_MEMORY,
        VidmmError::InvalidArgument(_) | VidmmError::Evicted(_) => INVALID,
        VidmmError::Unsupported(_) => dxgk_sys::STATUS_NOT_SUPPORTED,
        _ => dxgk_sys::STATUS_GRAPHICS_GPU_EXCEPTION_ON_DEVICE,
    }
}

fn ok(status: NTSTATUS) -> KmtResult<()> {
    if status >= 0 {
        Ok(())
    } else {
        Err(status)
    }
}

impl Kmt {
    /// The front end over `v` (a VidMm already created on a started adapter).
    pub fn new(v: Vidmm) -> Kmt {
        let luid = 0x5247_0000_0000 | u64::from(v.adapter_id().0);
        Kmt {
            v,
            luid,
            next_handle: 0x4000_0000,
            next_client: 1,
            objects: HashMap::new(),
            allocations: HashMap::new(),
            shares: HashMap::new(),
            reservations: Vec::new(),
            mappings: Vec::new(),
            hold: false,
            held: std::collections::VecDeque::new(),
            next_seq: 1,
            deferred: Vec::new(),
        }
    }

    // ---- the GPU scheduler's queue -------------------------------------------------------

    /// Holds submissions (and GPU signals queued behind them) in the scheduler's queue
    /// instead of running them before `submit_command` returns (see the module
    /// documentation). Turning it off releases what is held.
    pub fn hold_submissions(&mut self, on: bool) -> KmtResult<()> {
        self.hold = on;
        if on {
            Ok(())
        } else {
            self.run_gpu()
        }
    }

    /// Entries the scheduler holds (submissions and queued signals).
    pub fn held_work(&self) -> usize {
        self.held.len()
    }

    /// Allocation handles destroyed whose destruction waits for queued work.
    pub fn deferred_destructions(&self) -> usize {
        self.deferred.len()
    }

    /// Releases everything the scheduler holds to the device, in order, and finishes the
    /// destructions that waited for it.
    pub fn run_gpu(&mut self) -> KmtResult<()> {
        let last = self.next_seq;
        self.release_through(last)
    }

    /// Releases held work with sequence numbers up to `seq` (each submission waited for),
    /// then runs every deferred destruction that no longer waits. Keeps going after an error
    /// (a faulted submission) and returns the first.
    fn release_through(&mut self, seq: u64) -> KmtResult<()> {
        let mut r = Ok(());
        while self.held.front().is_some_and(|h| h.seq <= seq) {
            let Some(h) = self.held.pop_front() else {
                break;
            };
            let x = match h.work {
                HeldWork::Submit {
                    process,
                    commands,
                    length,
                } => self
                    .v
                    .submit_user(process, commands, length)
                    .map_err(vidmm_status),
                HeldWork::Signal { objects, value } => {
                    self.set_fences(&objects, value);
                    Ok(())
                }
            };
            r = r.and(x);
        }
        let done = self.held.front().map_or(u64::MAX, |h| h.seq);
        let (ready, waiting): (Vec<Deferred>, Vec<Deferred>) = std::mem::take(&mut self.deferred)
            .into_iter()
            .partition(|d| d.after < done);
        self.deferred = waiting;
        for d in ready {
            r = r.and(self.finish_destroy(d.detached));
        }
        r
    }

    /// The sequence number of the last held entry of `device`, if any.
    fn held_by(&self, device: D3dkmtHandle) -> Option<u64> {
        self.held
            .iter()
            .rev()
            .find(|h| h.device == device)
            .map(|h| h.seq)
    }

    /// Releases held work up to the last entry of any device of client `c` (and the
    /// destructions waiting for it).
    fn release_client(&mut self, c: ClientId) -> KmtResult<()> {
        let last = self
            .held
            .iter()
            .filter(|h| self.objects.get(&h.device).is_some_and(|e| e.owner == c))
            .map(|h| h.seq)
            .max();
        let deferred = self.deferred.iter().any(|d| d.c == c);
        match last {
            Some(s) => self.release_through(s),
            None if deferred => self.release_through(0),
            None => Ok(()),
        }
    }

    fn queue(&mut self, device: D3dkmtHandle, work: HeldWork) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.held.push_back(Held { seq, device, work });
    }

    /// The VidMm underneath (paging operations a client cannot ask for directly — fills,
    /// transfers — and its statistics).
    pub fn vidmm(&mut self) -> &mut Vidmm {
        &mut self.v
    }

    /// A new client process.
    pub fn create_client(&mut self) -> ClientId {
        let c = ClientId(self.next_client);
        self.next_client += 1;
        c
    }

    fn handle(&mut self, owner: ClientId, object: Object) -> D3dkmtHandle {
        self.next_handle += 0x40;
        let h = self.next_handle;
        self.objects.insert(h, Entry { owner, object });
        h
    }

    fn entry(&self, c: ClientId, h: D3dkmtHandle) -> KmtResult<&Object> {
        match self.objects.get(&h) {
            Some(e) if e.owner == c => Ok(&e.object),
            _ => Err(INVALID),
        }
    }

    fn adapter_of(&self, c: ClientId, h: D3dkmtHandle) -> KmtResult<()> {
        match self.entry(c, h)? {
            Object::Adapter => Ok(()),
            _ => Err(INVALID),
        }
    }

    fn device_of(&self, c: ClientId, h: D3dkmtHandle) -> KmtResult<ProcessId> {
        match self.entry(c, h)? {
            Object::Device { process, .. } => Ok(*process),
            _ => Err(INVALID),
        }
    }

    /// `(global, opened)` of allocation `h` of device `device`.
    fn allocation_of(
        &self,
        c: ClientId,
        device: D3dkmtHandle,
        h: D3dkmtHandle,
    ) -> KmtResult<(u32, HANDLE)> {
        match self.entry(c, h)? {
            Object::Allocation {
                device: d,
                global,
                opened,
                ..
            } if *d == device => Ok((*global, *opened)),
            _ => Err(INVALID),
        }
    }

    // ---- adapters and devices ------------------------------------------------------------

    /// D3DKMTEnumAdapters2: the one adapter, opened for the caller.
    pub fn enum_adapters2(&mut self, c: ClientId) -> KmtResult<Vec<AdapterInfo>> {
        let h = self.handle(c, Object::Adapter);
        Ok(vec![AdapterInfo {
            h_adapter: h,
            adapter_luid: self.luid,
            num_of_sources: 0,
        }])
    }

    /// D3DKMTOpenAdapterFromLuid; an unknown LUID is STATUS_INVALID_PARAMETER.
    pub fn open_adapter_from_luid(
        &mut self,
        c: ClientId,
        args: &mut OpenAdapterFromLuid,
    ) -> KmtResult<()> {
        if args.adapter_luid != self.luid {
            return Err(INVALID);
        }
        args.h_adapter = self.handle(c, Object::Adapter);
        Ok(())
    }

    /// D3DKMTCloseAdapter.
    pub fn close_adapter(&mut self, c: ClientId, h_adapter: D3dkmtHandle) -> KmtResult<()> {
        self.adapter_of(c, h_adapter)?;
        self.objects.remove(&h_adapter);
        Ok(())
    }

    /// D3DKMTCreateDevice: the process's first device creates its GPU address space
    /// (DxgkDdiCreateProcess, DxgkDdiCreateDevice, root page table).
    pub fn create_device(&mut self, c: ClientId, args: &mut CreateDevice) -> KmtResult<()> {
        self.adapter_of(c, args.h_adapter)?;
        let has_device = self
            .objects
            .values()
            .any(|e| e.owner == c && matches!(e.object, Object::Device { .. }));
        if has_device {
            return Err(dxgk_sys::STATUS_NOT_SUPPORTED);
        }
        let process = self.v.create_process().map_err(vidmm_status)?;
        args.h_device = self.handle(
            c,
            Object::Device {
                adapter: args.h_adapter,
                process,
                context: None,
            },
        );
        Ok(())
    }

    /// D3DKMTDestroyDevice: destroys what the device still holds (allocations, contexts,
    /// fences), then its address space and DDI objects.
    pub fn destroy_device(&mut self, c: ClientId, h_device: D3dkmtHandle) -> KmtResult<()> {
        let process = self.device_of(c, h_device)?;
        // Dxgkrnl waits for the device's queued work (and the destructions behind it).
        let mut first_error = match self.held_by(h_device) {
            Some(seq) => self.release_through(seq),
            None => Ok(()),
        };
        let owned: Vec<D3dkmtHandle> = self
            .objects
            .iter()
            .filter(|(_, e)| {
                e.owner == c
                    && matches!(e.object,
                        Object::Allocation { device, .. } | Object::Context { device }
                        if device == h_device)
            })
            .map(|(h, _)| *h)
            .collect();
        for h in owned {
            let r = if matches!(self.objects[&h].object, Object::Allocation { .. }) {
                self.destroy_one(c, h_device, h)
            } else {
                self.objects.remove(&h);
                Ok(())
            };
            if first_error.is_ok() {
                first_error = r;
            }
        }
        self.mappings.retain(|m| m.process != process);
        self.reservations.retain(|r| r.0 != c);
        self.objects.remove(&h_device);
        let r = self.v.destroy_process(process).map_err(vidmm_status);
        first_error.and(r)
    }

    // ---- allocations ---------------------------------------------------------------------

    /// Checks the driver's DXGK_ALLOCATIONINFO as Dxgkrnl does and places the allocation.
    fn place(&self, info: &dxgk_sys::DXGK_ALLOCATIONINFO) -> Result<Placement, String> {
        let nb = self
            .v
            .machine()
            .adapter(self.v.adapter_id())
            .info
            .segments
            .map_or(0, |s| s.NbSegment);
        let system = nb + 1;
        let known = (1u32 << system) - 1;
        let preferred = info.PreferredSegment.Value & 0x1F;
        let (read, write) = (info.SupportedReadSegmentSet, info.SupportedWriteSegmentSet);
        let size = info.Size as u64;
        if info.hAllocation.is_null() {
            return Err("hAllocation is NULL".into());
        }
        if size == 0 || !size.is_multiple_of(PAGE) {
            return Err(format!(
                "Size {size:#x} is not a non-zero multiple of 4 KiB"
            ));
        }
        if read == 0 || read & !known != 0 || write & !known != 0 {
            return Err(format!(
                "segment sets read {read:#x} write {write:#x} name segments that do not exist (segments 1..={system})"
            ));
        }
        if preferred != 0 && read & (1 << (preferred - 1)) == 0 {
            return Err(format!(
                "PreferredSegment {preferred} is not in SupportedReadSegmentSet {read:#x}"
            ));
        }
        // SAFETY: the flags view of the union (every bit pattern is a valid u32).
        let flags = unsafe { info.u2.Flags };
        // SAFETY: the same word through its WDDM 2.0 view (every bit pattern is valid).
        let flags2 = unsafe { info.u2.FlagsWddm2 };
        let usable = |s: u32| s == system || self.v.is_aperture(s);
        let in_set = |s: u32| (1..=system).contains(&s) && read & (1 << (s - 1)) != 0;
        let segment = if preferred != 0 && usable(preferred) {
            preferred
        } else if in_set(system) {
            system
        } else {
            // 0: nothing this VidMm can map (the caller refuses it as not supported).
            (1..system).find(|&s| in_set(s) && usable(s)).unwrap_or(0)
        };
        Ok(Placement {
            size,
            alignment: info.Alignment,
            preferred_segment: preferred,
            read_segments: read,
            write_segments: write,
            segment,
            cpu_visible: flags.CpuVisible() != 0,
            map_aperture_cpu_visible: flags2.MapApertureCpuVisible() != 0
                && flags2.AccessedPhysically() != 0,
        })
    }

    fn report(&self, ddi: &'static str, detail: String) {
        self.v
            .machine()
            .state
            .report(Finding::here(Rule::DdiProtocol, ddi, detail));
    }

    /// DxgkDdiOpenAllocation of `globals` on the device of `process`; returns the driver's
    /// device-specific handles.
    fn open_on_device(
        &self,
        process: ProcessId,
        globals: &[u32],
        create: bool,
    ) -> KmtResult<Vec<HANDLE>> {
        let f = self
            .v
            .ddi_table()
            .DxgkDdiOpenAllocation
            .ok_or(dxgk_sys::STATUS_NOT_SUPPORTED)?;
        let hdev = self.v.device_handle(process).map_err(vidmm_status)?;
        let mut privates: Vec<Vec<u8>> = globals
            .iter()
            .map(|g| self.allocations[g].private.clone())
            .collect();
        let mut infos: Vec<dxgk_sys::DXGK_OPENALLOCATIONINFO> = globals
            .iter()
            .zip(privates.iter_mut())
            .map(|(g, p)| dxgk_sys::DXGK_OPENALLOCATIONINFO {
                hAllocation: *g,
                pPrivateDriverData: p.as_mut_ptr().cast(),
                PrivateDriverDataSize: p.len() as u32,
                ..Default::default()
            })
            .collect();
        let mut args = dxgk_sys::DXGKARG_OPENALLOCATION {
            NumAllocations: infos.len() as u32,
            pOpenAllocation: infos.as_mut_ptr(),
            ..Default::default()
        };
        args.Flags.set_Create(u32::from(create));
        // SAFETY: the miniport's DDI with a device it created and a valid argument block whose
        // arrays live across the call.
        let s = self
            .v
            .call("DxgkDdiOpenAllocation", || unsafe { f(hdev, &args) });
        ok(s)?;
        let handles: Vec<HANDLE> = infos.iter().map(|i| i.hDeviceSpecificAllocation).collect();
        if handles.iter().any(|h| h.is_null()) {
            self.report(
                "DxgkDdiOpenAllocation",
                "returned success with a NULL hDeviceSpecificAllocation".into(),
            );
            return Err(INVALID);
        }
        Ok(handles)
    }

    fn close_on_device(&self, process: ProcessId, opened: &[HANDLE]) -> KmtResult<()> {
        let f = self
            .v
            .ddi_table()
            .DxgkDdiCloseAllocation
            .ok_or(dxgk_sys::STATUS_NOT_SUPPORTED)?;
        let hdev = self.v.device_handle(process).map_err(vidmm_status)?;
        #[repr(C)]
        struct CloseArgs {
            num: u32,
            list: *const HANDLE,
        }
        let args = CloseArgs {
            num: opened.len() as u32,
            list: opened.as_ptr(),
        };
        // SAFETY: the miniport's DDI with its device and a DXGKARG_CLOSEALLOCATION whose list
        // lives across the call.
        let s = self.v.call("DxgkDdiCloseAllocation", || unsafe {
            f(hdev, (&args as *const CloseArgs).cast())
        });
        ok(s)
    }

    fn destroy_on_adapter(&self, h_allocations: &[HANDLE]) -> KmtResult<()> {
        let f = self
            .v
            .ddi_table()
            .DxgkDdiDestroyAllocation
            .ok_or(dxgk_sys::STATUS_NOT_SUPPORTED)?;
        let args = dxgk_sys::DXGKARG_DESTROYALLOCATION {
            NumAllocations: h_allocations.len() as u32,
            pAllocationList: h_allocations.as_ptr(),
            ..Default::default()
        };
        let h = self.v.adapter_handle();
        // SAFETY: the miniport's DDI with its adapter and a valid block; the list lives across
        // the call.
        let s = self
            .v
            .call("DxgkDdiDestroyAllocation", || unsafe { f(h, &args) });
        ok(s)
    }

    /// D3DKMTCreateAllocation2: DxgkDdiCreateAllocation with the client's private data, the
    /// driver's answer checked and placed, backing from VidMm, DxgkDdiOpenAllocation
    /// (`Create`) on the device. All-or-nothing.
    pub fn create_allocation2(
        &mut self,
        c: ClientId,
        args: &mut CreateAllocation2,
    ) -> KmtResult<()> {
        let process = self.device_of(c, args.h_device)?;
        if args.allocations.is_empty() {
            return Err(INVALID);
        }
        let f = self
            .v
            .ddi_table()
            .DxgkDdiCreateAllocation
            .ok_or(dxgk_sys::STATUS_NOT_SUPPORTED)?;
        // Dxgkrnl copies the private data into kernel memory.
        let mut privates: Vec<Vec<u8>> = args
            .allocations
            .iter()
            .map(|a| a.private_driver_data.clone())
            .collect();
        let mut infos: Vec<dxgk_sys::DXGK_ALLOCATIONINFO> = privates
            .iter_mut()
            .map(|p| dxgk_sys::DXGK_ALLOCATIONINFO {
                pPrivateDriverData: if p.is_empty() {
                    std::ptr::null_mut()
                } else {
                    p.as_mut_ptr().cast()
                },
                PrivateDriverDataSize: p.len() as u32,
                ..Default::default()
            })
            .collect();
        let mut ca = dxgk_sys::DXGKARG_CREATEALLOCATION {
            NumAllocations: infos.len() as u32,
            pAllocationInfo: infos.as_mut_ptr(),
            ..Default::default()
        };
        let h = self.v.adapter_handle();
        // SAFETY: the miniport's DDI with its adapter and a valid block whose arrays and
        // private data live across the call.
        let s = self
            .v
            .call("DxgkDdiCreateAllocation", || unsafe { f(h, &mut ca) });
        ok(s)?;
        let handles: Vec<HANDLE> = infos.iter().map(|i| i.hAllocation).collect();
        let placed: Result<Vec<Placement>, String> = infos.iter().map(|i| self.place(i)).collect();
        let placed = match placed {
            Ok(p) => p,
            Err(detail) => {
                self.report("DxgkDdiCreateAllocation", detail);
                let live: Vec<HANDLE> = handles.into_iter().filter(|h| !h.is_null()).collect();
                if !live.is_empty() {
                    let _ = self.destroy_on_adapter(&live);
                }
                return Err(INVALID);
            }
        };
        // Only system memory and aperture segments are simulated: an allocation that fits
        // neither is a limit of the simulator, not the driver's error.
        if placed.iter().any(|p| p.segment == 0) {
            let _ = self.destroy_on_adapter(&handles);
            return Err(dxgk_sys::STATUS_NOT_SUPPORTED);
        }
        // Backing, then Dxgkrnl's handles, then the creating device's open.
        let mut backings = Vec::new();
        for (p, &h_allocation) in placed.iter().zip(&handles) {
            let spec = crate::vidmm::AllocSpec {
                bytes: p.size,
                segment: p.segment,
                h_allocation,
                map_cpu_visible: p.map_aperture_cpu_visible,
            };
            match self.v.allocate_placed(spec) {
                Ok(b) => backings.push(b),
                Err(e) => {
                    for b in backings {
                        let _ = self.v.free(b);
                    }
                    let _ = self.destroy_on_adapter(&handles);
                    return Err(vidmm_status(e));
                }
            }
        }
        let mut globals = Vec::new();
        for ((p, &h_alloc), (backing, private)) in placed
            .iter()
            .zip(&handles)
            .zip(backings.iter().zip(privates))
        {
            self.next_handle += 0x40;
            let g = self.next_handle;
            self.allocations.insert(
                g,
                Underlying {
                    h_allocation: h_alloc,
                    placement: *p,
                    backing: *backing,
                    private,
                    refs: 1,
                },
            );
            self.v
                .machine()
                .state
                .port()
                .allocation_handles
                .insert(g, h_alloc);
            globals.push(g);
        }
        match self.open_on_device(process, &globals, true) {
            Ok(opened) => {
                for ((a, g), o) in args.allocations.iter_mut().zip(&globals).zip(opened) {
                    a.h_allocation = self.handle(
                        c,
                        Object::Allocation {
                            device: args.h_device,
                            global: *g,
                            opened: o,
                            locked: false,
                        },
                    );
                }
                if args.create_shared {
                    self.next_handle += 0x40;
                    args.h_global_share = self.next_handle;
                    self.shares.insert(args.h_global_share, globals);
                }
                Ok(())
            }
            Err(s) => {
                for g in &globals {
                    self.forget(*g);
                }
                let _ = self.destroy_on_adapter(&handles);
                Err(s)
            }
        }
    }

    /// Drops Dxgkrnl's record of allocation `g` and frees its backing.
    fn forget(&mut self, g: u32) {
        if let Some(u) = self.allocations.remove(&g) {
            self.v.machine().state.port().allocation_handles.remove(&g);
            let _ = self.v.free(u.backing);
        }
        for list in self.shares.values_mut() {
            list.retain(|x| *x != g);
        }
        self.shares.retain(|_, l| !l.is_empty());
    }

    /// Removes allocation handle `h` of `device` from the handle table (the client can no
    /// longer name it); what is left of its destruction is [`Kmt::finish_destroy`].
    fn detach(
        &mut self,
        c: ClientId,
        device: D3dkmtHandle,
        h: D3dkmtHandle,
    ) -> KmtResult<Detached> {
        let (global, opened) = self.allocation_of(c, device, h)?;
        let process = self.device_of(c, device)?;
        self.objects.remove(&h);
        Ok(Detached {
            h,
            global,
            opened,
            process,
        })
    }

    fn destroy_one(&mut self, c: ClientId, device: D3dkmtHandle, h: D3dkmtHandle) -> KmtResult<()> {
        let d = self.detach(c, device, h)?;
        self.finish_destroy(d)
    }

    /// The handle's GPU VA mappings released, DxgkDdiCloseAllocation on its device and, with
    /// the last reference, DxgkDdiDestroyAllocation and the backing freed.
    fn finish_destroy(&mut self, d: Detached) -> KmtResult<()> {
        let Detached {
            h,
            global,
            opened,
            process,
        } = d;
        // Dxgkrnl releases the handle's GPU VA mappings first.
        let maps: Vec<(ProcessId, u64)> = self
            .mappings
            .iter()
            .filter(|m| m.handle == h)
            .map(|m| (m.process, m.va))
            .collect();
        let backing = self.allocations[&global].backing;
        let mut r = Ok(());
        for (p, va) in maps {
            if let Err(e) = self.v.unmap(p, backing, va) {
                r = r.and(Err(vidmm_status(e)));
            }
        }
        self.mappings.retain(|m| m.handle != h);
        r = r.and(self.close_on_device(process, &[opened]));
        let u = self.allocations.get_mut(&global).expect("allocation");
        u.refs -= 1;
        if u.refs == 0 {
            let h_alloc = u.h_allocation;
            r = r.and(self.destroy_on_adapter(&[h_alloc]));
            self.forget(global);
        }
        r
    }

    /// D3DKMTDestroyAllocation2: every handle is checked before any is destroyed; then each
    /// is unmapped, closed on its device and, with the last reference, destroyed — after the
    /// device's queued work when that may still use it, as `flags` say (see the module
    /// documentation).
    pub fn destroy_allocation2(&mut self, c: ClientId, args: &DestroyAllocation2) -> KmtResult<()> {
        self.device_of(c, args.h_device)?;
        if args.allocations.is_empty() {
            return Err(INVALID);
        }
        for (i, &h) in args.allocations.iter().enumerate() {
            self.allocation_of(c, args.h_device, h)?;
            if args.allocations[..i].contains(&h) {
                return Err(INVALID);
            }
        }
        let busy = self
            .held_by(args.h_device)
            .filter(|_| !args.flags.assume_not_in_use);
        let mut r = Ok(());
        match busy {
            Some(seq) if args.flags.synchronous_destroy => {
                r = self.release_through(seq);
                for &h in &args.allocations {
                    r = r.and(self.destroy_one(c, args.h_device, h));
                }
            }
            Some(after) => {
                for &h in &args.allocations {
                    let detached = self.detach(c, args.h_device, h)?;
                    self.deferred.push(Deferred { after, c, detached });
                }
            }
            None => {
                for &h in &args.allocations {
                    r = r.and(self.destroy_one(c, args.h_device, h));
                }
            }
        }
        r
    }

    /// D3DKMTOpenResource: opens every allocation shared under `h_global_share` on the
    /// caller's device (DxgkDdiOpenAllocation, which finds the allocation with
    /// DxgkCbGetHandleData).
    pub fn open_resource(&mut self, c: ClientId, args: &mut OpenResource) -> KmtResult<()> {
        let process = self.device_of(c, args.h_device)?;
        let globals = self
            .shares
            .get(&args.h_global_share)
            .cloned()
            .ok_or(INVALID)?;
        let opened = self.open_on_device(process, &globals, false)?;
        args.allocations.clear();
        for (g, o) in globals.iter().zip(opened) {
            self.allocations.get_mut(g).expect("shared").refs += 1;
            let h = self.handle(
                c,
                Object::Allocation {
                    device: args.h_device,
                    global: *g,
                    opened: o,
                    locked: false,
                },
            );
            args.allocations.push(OpenAllocationInfo2 {
                h_allocation: h,
                private_driver_data: self.allocations[g].private.clone(),
            });
        }
        Ok(())
    }

    /// Where the allocation behind `h` was placed (what the driver's DXGK_ALLOCATIONINFO said).
    pub fn placement(
        &self,
        c: ClientId,
        h_device: D3dkmtHandle,
        h: D3dkmtHandle,
    ) -> KmtResult<Placement> {
        let (g, _) = self.allocation_of(c, h_device, h)?;
        Ok(self.allocations[&g].placement)
    }

    /// VidMm's id of the allocation behind `h` (for VidMm operations a client cannot ask
    /// for: fills, transfers, CPU access without Lock2 in tests).
    pub fn vidmm_allocation(
        &self,
        c: ClientId,
        h_device: D3dkmtHandle,
        h: D3dkmtHandle,
    ) -> KmtResult<AllocId> {
        let (g, _) = self.allocation_of(c, h_device, h)?;
        Ok(self.allocations[&g].backing)
    }

    /// VidMm's process of device `h_device`.
    pub fn vidmm_process(&self, c: ClientId, h_device: D3dkmtHandle) -> KmtResult<ProcessId> {
        self.device_of(c, h_device)
    }

    // ---- GPU virtual addresses -----------------------------------------------------------

    /// D3DKMTReserveGpuVirtualAddress: a range of the caller's address space (64 KiB
    /// granularity) that maps may use; an overlap with another reservation is
    /// STATUS_INVALID_PARAMETER.
    pub fn reserve_gpu_virtual_address(
        &mut self,
        c: ClientId,
        args: &mut ReserveGpuVirtualAddress,
    ) -> KmtResult<()> {
        self.adapter_of(c, args.h_adapter)?;
        const G: u64 = 64 * 1024;
        if args.size == 0 || !args.size.is_multiple_of(G) || !args.base_address.is_multiple_of(G) {
            return Err(INVALID);
        }
        let base = if args.base_address != 0 {
            args.base_address
        } else {
            self.reservations
                .iter()
                .filter(|r| r.0 == c)
                .map(|r| r.1 + r.2)
                .max()
                .unwrap_or(VA_FLOOR)
                .max(VA_FLOOR)
        };
        let end = base.checked_add(args.size).ok_or(INVALID)?;
        if self
            .reservations
            .iter()
            .any(|r| r.0 == c && base < r.1 + r.2 && r.1 < end)
        {
            return Err(INVALID);
        }
        self.reservations.push((c, base, args.size));
        args.virtual_address = base;
        Ok(())
    }

    /// D3DKMTMapGpuVirtualAddress: pages `[offset_in_pages, offset_in_pages + size_in_pages)`
    /// of the allocation at `base_address`, inside one of the caller's reservations and over no
    /// other mapping (a range outside the allocation, or an empty one, is
    /// STATUS_INVALID_PARAMETER); PTEs written and the TLB flushed through BuildPagingBuffer
    /// before it returns. An evicted allocation is STATUS_INVALID_PARAMETER (make it resident
    /// first).
    pub fn map_gpu_virtual_address(
        &mut self,
        c: ClientId,
        args: &mut MapGpuVirtualAddress,
    ) -> KmtResult<()> {
        let process = self.device_of(c, args.h_device)?;
        let (g, _) = self.allocation_of(c, args.h_device, args.h_allocation)?;
        let pages = self.allocations[&g].placement.size / PAGE;
        let (first, count) = (args.offset_in_pages, args.size_in_pages);
        if count == 0 || first.checked_add(count).is_none_or(|e| e > pages) {
            return Err(INVALID);
        }
        let bytes = count * PAGE;
        let (va, end) = (
            args.base_address,
            args.base_address.checked_add(bytes).ok_or(INVALID)?,
        );
        let inside = self
            .reservations
            .iter()
            .any(|r| r.0 == c && r.1 <= va && end <= r.1 + r.2);
        let overlaps = self
            .mappings
            .iter()
            .any(|m| m.owner == c && va < m.va + m.bytes && m.va < end);
        if !inside || overlaps {
            return Err(INVALID);
        }
        let backing = self.allocations[&g].backing;
        self.v
            .map_range(process, backing, va, first, count, true)
            .map_err(vidmm_status)?;
        self.mappings.push(Mapping {
            owner: c,
            process,
            va,
            bytes,
            global: g,
            handle: args.h_allocation,
        });
        args.virtual_address = va;
        args.paging_fence_value = 0;
        Ok(())
    }

    /// D3DKMTFreeGpuVirtualAddress: unmaps what is mapped in the reservation and releases it.
    pub fn free_gpu_virtual_address(
        &mut self,
        c: ClientId,
        args: &FreeGpuVirtualAddress,
    ) -> KmtResult<()> {
        self.adapter_of(c, args.h_adapter)?;
        // The mappings are not taken from under queued work.
        self.release_client(c)?;
        let at = self
            .reservations
            .iter()
            .position(|r| *r == (c, args.base_address, args.size))
            .ok_or(INVALID)?;
        let end = args.base_address + args.size;
        let inside: Vec<usize> = (0..self.mappings.len())
            .filter(|&i| {
                let m = &self.mappings[i];
                m.owner == c && args.base_address <= m.va && m.va < end
            })
            .collect();
        let mut r = Ok(());
        for &i in inside.iter().rev() {
            let m = self.mappings.remove(i);
            let backing = self.allocations[&m.global].backing;
            r = r.and(self.v.unmap(m.process, backing, m.va).map_err(vidmm_status));
        }
        self.reservations.remove(at);
        r
    }

    // ---- residency -----------------------------------------------------------------------

    /// D3DKMTMakeResident: every evicted allocation of the list paged back in
    /// ([`Vidmm::make_resident`]: backing re-acquired, contents transferred back, its GPU VA
    /// mappings' PTEs rewritten and the TLB flushed, all through DxgkDdiBuildPagingBuffer);
    /// a resident one is left as it is. The paging is synchronous, so `paging_fence_value` is
    /// 0 (reached) on return. Every handle is checked before anything is paged in. On a failure
    /// the allocations paged in before the failing one stay resident, the failing one and
    /// those after it stay evicted with their contents, and the status says why (a backing
    /// that cannot be had is STATUS_NO_MEMORY).
    pub fn make_resident(&mut self, c: ClientId, args: &mut MakeResident) -> KmtResult<()> {
        self.device_of(c, args.h_device)?;
        let mut backings = Vec::new();
        for &h in &args.allocations {
            let (g, _) = self.allocation_of(c, args.h_device, h)?;
            backings.push(self.allocations[&g].backing);
        }
        for b in backings {
            self.v.make_resident(b).map_err(vidmm_status)?;
        }
        args.paging_fence_value = 0;
        Ok(())
    }

    /// D3DKMTEvict: contents paged out to system memory, every mapping's PTEs invalidated (TLB
    /// flushed; the mappings stay and [`Kmt::make_resident`] restores them), backing released.
    pub fn evict(&mut self, c: ClientId, args: &mut Evict) -> KmtResult<()> {
        self.device_of(c, args.h_device)?;
        let mut globals = Vec::new();
        for &h in &args.allocations {
            globals.push(self.allocation_of(c, args.h_device, h)?.0);
        }
        // Nothing is evicted from under queued work.
        self.release_client(c)?;
        let mut trimmed = 0;
        for g in globals {
            let u = &self.allocations[&g];
            if self.v.logical_pages(u.backing).is_ok() {
                trimmed += u.placement.size;
                let backing = u.backing;
                self.v.evict(backing).map_err(vidmm_status)?;
            }
        }
        args.num_bytes_to_trim = trimmed;
        Ok(())
    }

    // ---- contexts, submission, fences ----------------------------------------------------

    /// D3DKMTCreateContextVirtual: node 0 only (STATUS_INVALID_PARAMETER otherwise), one per
    /// device (the context VidMm created with the device).
    pub fn create_context_virtual(
        &mut self,
        c: ClientId,
        args: &mut CreateContextVirtual,
    ) -> KmtResult<()> {
        self.device_of(c, args.h_device)?;
        if args.node_ordinal != 0 {
            return Err(INVALID);
        }
        if let Some(Object::Device {
            context: Some(_), ..
        }) = self.objects.get(&args.h_device).map(|e| &e.object)
        {
            return Err(dxgk_sys::STATUS_NOT_SUPPORTED);
        }
        let h = self.handle(
            c,
            Object::Context {
                device: args.h_device,
            },
        );
        if let Some(Entry {
            object: Object::Device { context, .. },
            ..
        }) = self.objects.get_mut(&args.h_device)
        {
            *context = Some(h);
        }
        args.h_context = h;
        Ok(())
    }

    fn context_device(&self, c: ClientId, h: D3dkmtHandle) -> KmtResult<D3dkmtHandle> {
        match self.entry(c, h)? {
            Object::Context { device } => Ok(*device),
            _ => Err(INVALID),
        }
    }

    /// D3DKMTSubmitCommand: DxgkDdiSubmitCommandVirtual on the context's device, waited for.
    pub fn submit_command(&mut self, c: ClientId, args: &SubmitCommand) -> KmtResult<()> {
        let [ctx] = args.broadcast_contexts[..] else {
            return Err(INVALID);
        };
        let device = self.context_device(c, ctx)?;
        let process = self.device_of(c, device)?;
        if args.command_length == 0 || !args.command_length.is_multiple_of(4) {
            return Err(INVALID);
        }
        if self.hold {
            self.queue(
                device,
                HeldWork::Submit {
                    process,
                    commands: args.commands,
                    length: args.command_length,
                },
            );
            return Ok(());
        }
        self.v
            .submit_user(process, args.commands, args.command_length)
            .map_err(vidmm_status)
    }

    fn set_fences(&mut self, objects: &[D3dkmtHandle], to: u64) {
        for h in objects {
            if let Some(Entry {
                object: Object::Fence { value },
                ..
            }) = self.objects.get_mut(h)
            {
                *value = (*value).max(to);
            }
        }
    }

    /// D3DKMTCreateSynchronizationObject2 (monitored fence).
    pub fn create_synchronization_object2(
        &mut self,
        c: ClientId,
        args: &mut CreateSynchronizationObject2,
    ) -> KmtResult<()> {
        self.device_of(c, args.h_device)?;
        args.h_sync_object = self.handle(
            c,
            Object::Fence {
                value: args.initial_fence_value,
            },
        );
        Ok(())
    }

    /// D3DKMTDestroySynchronizationObject.
    pub fn destroy_synchronization_object(
        &mut self,
        c: ClientId,
        h: D3dkmtHandle,
    ) -> KmtResult<()> {
        match self.entry(c, h)? {
            Object::Fence { .. } => {
                self.objects.remove(&h);
                Ok(())
            }
            _ => Err(INVALID),
        }
    }

    /// D3DKMTSignalSynchronizationObjectFromGpu2: the fences take `fence_value` once the
    /// contexts' work is done (at once when none is held; otherwise queued behind it). A value
    /// below the current one is STATUS_INVALID_PARAMETER (monitored fences only grow).
    pub fn signal_synchronization_object_from_gpu2(
        &mut self,
        c: ClientId,
        args: &SignalSynchronizationObjectFromGpu2,
    ) -> KmtResult<()> {
        let mut devices = Vec::new();
        for &ctx in &args.broadcast_contexts {
            devices.push(self.context_device(c, ctx)?);
        }
        for &h in &args.objects {
            match self.entry(c, h)? {
                Object::Fence { value } if *value <= args.fence_value => {}
                _ => return Err(INVALID),
            }
        }
        match devices.into_iter().find(|d| self.held_by(*d).is_some()) {
            Some(device) => self.queue(
                device,
                HeldWork::Signal {
                    objects: args.objects.clone(),
                    value: args.fence_value,
                },
            ),
            None => self.set_fences(&args.objects, args.fence_value),
        }
        Ok(())
    }

    /// D3DKMTWaitForSynchronizationObjectFromCpu: [`WaitOutcome::Reached`] when every fence has
    /// reached its value — releasing held work up to the last queued signal of these fences if
    /// that is what it waits for — and [`WaitOutcome::TimedOut`] (STATUS_TIMEOUT) when nothing
    /// pending could signal it.
    pub fn wait_for_synchronization_object_from_cpu(
        &mut self,
        c: ClientId,
        args: &WaitForSynchronizationObjectFromCpu,
    ) -> KmtResult<WaitOutcome> {
        self.device_of(c, args.h_device)?;
        if args.objects.len() != args.fence_values.len() || args.objects.is_empty() {
            return Err(INVALID);
        }
        let reached = |k: &Self| -> KmtResult<bool> {
            let mut all = true;
            for (&h, &want) in args.objects.iter().zip(&args.fence_values) {
                match k.entry(c, h)? {
                    Object::Fence { value } => all &= *value >= want,
                    _ => return Err(INVALID),
                }
            }
            Ok(all)
        };
        if !reached(self)? {
            let last_signal = self
                .held
                .iter()
                .filter(|h| {
                    matches!(&h.work, HeldWork::Signal { objects, .. }
                        if objects.iter().any(|o| args.objects.contains(o)))
                })
                .map(|h| h.seq)
                .max();
            if let Some(seq) = last_signal {
                self.release_through(seq)?;
            }
        }
        Ok(if reached(self)? {
            WaitOutcome::Reached
        } else {
            WaitOutcome::TimedOut
        })
    }

    /// The current value of a monitored fence (what its CPU-visible value would read).
    pub fn fence_value(&self, c: ClientId, h: D3dkmtHandle) -> KmtResult<u64> {
        match self.entry(c, h)? {
            Object::Fence { value } => Ok(*value),
            _ => Err(INVALID),
        }
    }

    // ---- CPU access ----------------------------------------------------------------------

    fn set_locked(&mut self, h: D3dkmtHandle, to: bool) {
        if let Some(Entry {
            object: Object::Allocation { locked, .. },
            ..
        }) = self.objects.get_mut(&h)
        {
            *locked = to;
        }
    }

    fn locked(&self, c: ClientId, h: D3dkmtHandle) -> KmtResult<AllocId> {
        match self.entry(c, h)? {
            Object::Allocation {
                locked: true,
                global,
                ..
            } => Ok(self.allocations[global].backing),
            _ => Err(INVALID),
        }
    }

    /// D3DKMTLock2: only a CpuVisible allocation (the driver's `Flags.CpuVisible`) that is
    /// resident and not locked already; anything else is STATUS_INVALID_PARAMETER.
    pub fn lock2(&mut self, c: ClientId, args: &mut Lock2) -> KmtResult<()> {
        let (g, _) = self.allocation_of(c, args.h_device, args.h_allocation)?;
        // Lock2 without DONOTWAIT waits until queued GPU work no longer uses the allocation.
        self.release_client(c)?;
        if let Object::Allocation { locked: true, .. } = self.entry(c, args.h_allocation)? {
            return Err(INVALID);
        }
        let u = &self.allocations[&g];
        if !u.placement.cpu_visible || self.v.logical_pages(u.backing).is_err() {
            return Err(INVALID);
        }
        args.locked_bytes = u.placement.size;
        self.set_locked(args.h_allocation, true);
        Ok(())
    }

    /// D3DKMTUnlock2.
    pub fn unlock2(&mut self, c: ClientId, args: &Unlock2) -> KmtResult<()> {
        self.allocation_of(c, args.h_device, args.h_allocation)?;
        self.locked(c, args.h_allocation)?;
        self.set_locked(args.h_allocation, false);
        Ok(())
    }

    /// Reads through a Lock2 mapping.
    pub fn read_locked(
        &self,
        c: ClientId,
        h: D3dkmtHandle,
        offset: u64,
        len: usize,
    ) -> KmtResult<Vec<u8>> {
        let a = self.locked(c, h)?;
        self.v.read(a, offset, len).map_err(vidmm_status)
    }

    /// Writes through a Lock2 mapping.
    pub fn write_locked(
        &self,
        c: ClientId,
        h: D3dkmtHandle,
        offset: u64,
        data: &[u8],
    ) -> KmtResult<()> {
        let a = self.locked(c, h)?;
        self.v.write(a, offset, data).map_err(vidmm_status)
    }

    // ---- escape --------------------------------------------------------------------------

    /// D3DKMTEscape (driver private): DxgkDdiEscape with a kernel copy of the buffer, copied
    /// back when the driver succeeds.
    pub fn escape(&mut self, c: ClientId, args: &mut Escape) -> KmtResult<()> {
        self.adapter_of(c, args.h_adapter)?;
        let hdevice = if args.h_device != 0 {
            let p = match self.entry(c, args.h_device)? {
                Object::Device {
                    adapter, process, ..
                } if *adapter == args.h_adapter => *process,
                _ => return Err(INVALID),
            };
            self.v.device_handle(p).map_err(vidmm_status)?
        } else {
            std::ptr::null_mut()
        };
        let f = self
            .v
            .ddi_table()
            .DxgkDdiEscape
            .ok_or(dxgk_sys::STATUS_NOT_SUPPORTED)?;
        let mut copy = args.private_driver_data.clone();
        let ea = dxgk_sys::DXGKARG_ESCAPE {
            hDevice: hdevice,
            pPrivateDriverData: if copy.is_empty() {
                std::ptr::null_mut()
            } else {
                copy.as_mut_ptr().cast()
            },
            PrivateDriverDataSize: copy.len() as u32,
            ..Default::default()
        };
        let h = self.v.adapter_handle();
        // SAFETY: the miniport's DDI with its adapter and a valid block; the buffer lives
        // across the call.
        let s = self.v.call("DxgkDdiEscape", || unsafe { f(h, &ea) });
        ok(s)?;
        args.private_driver_data = copy;
        Ok(())
    }

    // ---- teardown ------------------------------------------------------------------------

    /// Process exit: destroys every device the client still has (and with them its
    /// allocations, contexts and fences) and closes its adapters.
    pub fn destroy_client(&mut self, c: ClientId) -> KmtResult<()> {
        let devices: Vec<D3dkmtHandle> = self
            .objects
            .iter()
            .filter(|(_, e)| e.owner == c && matches!(e.object, Object::Device { .. }))
            .map(|(h, _)| *h)
            .collect();
        let mut r = Ok(());
        for d in devices {
            r = r.and(self.destroy_device(c, d));
        }
        self.objects.retain(|_, e| e.owner != c);
        r
    }

    /// Every client's exit, then VidMm's teardown. Call before stopping the adapter.
    pub fn destroy(mut self) -> KmtResult<Vidmm> {
        let mut clients: Vec<ClientId> = self.objects.values().map(|e| e.owner).collect();
        clients.sort();
        clients.dedup();
        let mut r = Ok(());
        for c in clients {
            r = r.and(self.destroy_client(c));
        }
        r.map(|()| self.v)
    }

    /// Allocations Dxgkrnl still tracks (for leak checks in tests).
    pub fn live_allocations(&self) -> usize {
        self.allocations.len()
    }
}
