//! The VidMm side of GpuMmu paging, as Windows drives a miniport: the system paging process and
//! its context, user processes with their own page tables, allocations in system memory or in
//! the driver's aperture segments, and
//! every page-table update, TLB flush, fill and transfer going through
//! DxgkDdiBuildPagingBuffer into paging buffers submitted with DxgkDdiSubmitCommandVirtual.
//!
//! Generic: written against the DDIs and the caps the driver answered at start
//! (GPUMMUCAPS and PAGETABLELEVELDESC from [`crate::AdapterInfo`]), never against a driver's
//! internals. What it needs of the caps: 4 KiB page tables at every level (so every table is
//! one page), more than two levels (no resizable root), and a GPU_VIRTUAL or CPU_VIRTUAL update
//! mode.
//!
//! # The model
//!
//! * **System paging process** ([`Vidmm::new`]): DxgkDdiCreateProcess with `SystemProcess`,
//!   DxgkDdiCreateDevice (`hKmdProcess`), DxgkDdiCreateContext with `SystemContext`. Its page
//!   tables are VidMm-owned memory ([`VidmmMemory`]: sim frames mapped in the
//!   adapter's IOMMU) covering a fixed layout, all allocated up front and initialized with
//!   UPDATE_PAGE_TABLE in **CPU_VIRTUAL mode with `pDmaBuffer == NULL`** (what Windows forces for
//!   the paging process), then DxgkDdiSetRootPageTable. The layout (paging-process VAs):
//!   - [`PT_WINDOW_BASE`]: the page-table window — every page table VidMm updates through a
//!     paging buffer (the paging process's own and every user process's) is mapped here, so
//!     GPU_VIRTUAL updates can name it (`PageTableAddress.GpuVirtual`);
//!   - [`PAGING_BUFFER_BASE`]: the paging buffer (`DmaBufferGpuVirtualAddress`);
//!   - [`SCRATCH_BASE`]: the scratch window where allocations are mapped while they are filled
//!     (VIRTUAL_FILL) or transferred (VIRTUAL_TRANSFER); large operations go in chunks.
//! * **User processes** ([`Vidmm::create_process`]): process, device, context, a root table
//!   (mapped in the page-table window and initialized to invalid through a paging buffer),
//!   DxgkDdiSetRootPageTable. Lower-level tables are created on demand by [`Vidmm::map`].
//! * **64 KiB pages** (when the driver declares `SysMem64KBPageSupported` and
//!   [`VidmmConfig::pages_64k`] is on): allocations whose size is a multiple of 64 KiB get
//!   backing in 64 KiB-aligned, logically contiguous runs ([`Machine::vidmm_allocate_64k`]).
//!   WDDM's single-PTE mode: each leaf table is either a 4 KiB-page or a 64 KiB-page table,
//!   told to the driver by the level-1 entry's `PageTablePageSize` and by `Use64KBPages` on
//!   updates of the leaf table itself. A leaf table is a 64 KiB-page table exactly when every
//!   64 KiB of its 2 MiB is either unmapped or one aligned, contiguous 64 KiB run; when a
//!   mapping or unmapping changes that, VidMm rewrites the whole table in the other kind,
//!   updates the level-1 entry and flushes the TLB for the region (Learn: "Support for 64KB
//!   pages"). VidMm keeps its own copy of what each leaf table maps, since the driver's
//!   format is opaque to it.
//! * **Aperture segments** (QuerySegment descriptors with `Flags.Aperture`; see `aperture.rs`
//!   and docs/memory.md): an allocation placed in one ([`Vidmm::allocate_placed`]) gets an
//!   aperture range, MAP_APERTURE_SEGMENT (MDLs, no DMA remapping) or MAP_APERTURE_SEGMENT2
//!   (an ADL, DMA remapping) before its PTEs are written — which then name the aperture
//!   segment and page — and UNMAP_APERTURE_SEGMENT at free and eviction (MakeResident maps a
//!   new range). The paging buffer lives in `PagingBufferSegmentId` when that is an aperture,
//!   and page tables in `PageTableSegmentId` / `PagingProcessPageTableSegmentId` when those
//!   are: each table is then mapped into the aperture and named by aperture segment + offset
//!   (parent entries, window, FLUSH_TLB, SetRootPageTable).
//!   Fills and transfers map aperture allocations in the scratch window through aperture PTEs
//!   too, so every device access to them goes through the driver's aperture translation.
//! * **Paging buffers**: one VidMm-owned buffer of [`VidmmConfig::dma_buffer_size`] bytes.
//!   Operations append to it; on STATUS_GRAPHICS_INSUFFICIENT_DMA_BUFFER the buffer is
//!   submitted (system context, new SubmissionFenceId), waited for, and the same operation is
//!   called again with the preserved `MultipassOffset`. Every status is checked with
//!   [`Machine::check_build_paging_buffer_status`].
//! * **Completion**: after a submission the device is serviced ([`Machine::service`]) until
//!   DxgkCbNotifyInterrupt(DMA_COMPLETED) reports the fence — at most
//!   [`VidmmConfig::max_service_rounds`] times; beyond that the submission is a
//!   [`Rule::PossibleHang`] finding and [`VidmmError::Hang`]. A DMA_FAULTED or DMA_PAGE_FAULTED
//!   notification is
//!   [`VidmmError::DeviceFault`]. Both are followed by a TDR (DxgkDdiResetFromTimeout +
//!   DxgkDdiRestartFromTimeout), as Windows does; the driver must leave the device able to run
//!   every process afterwards (VidMm does not call DxgkDdiSetRootPageTable again: no root moved).
//!
//! Everything is synchronous: each public operation leaves the paging buffer empty and the
//! device idle.

use std::collections::HashMap;

use dxgk_sys::{
    DRIVER_INITIALIZATION_DATA, DXGKARG_BUILDPAGINGBUFFER, DXGK_BUILDPAGINGBUFFER_OPERATION,
    DXGK_PTE, HANDLE, NTSTATUS,
};

use crate::dxgkrnl::{pnp::after_ddi, AdapterId};
use crate::machine::Machine;
use crate::memory::{PAGE, PAGES_PER_64K};
use crate::trace::{TraceResult, TraceValue, Track};
use crate::verifier::{Finding, Rule};

mod aperture;
pub mod memory;
mod pgtable;

pub use aperture::ApertureMode;
use aperture::{ApertureMapping, ApertureSegment, VidmmMdl, MDL_MAX_PAGES};
pub use memory::VidmmMemory;
use pgtable::{Geometry, TableRun};

/// Paging-process VA of the page-table window.
pub const PT_WINDOW_BASE: u64 = 0x4000_0000;
/// Paging-process VA of the paging buffer.
pub const PAGING_BUFFER_BASE: u64 = 0x8000_0000;
/// Paging-process VA of the scratch window.
pub const SCRATCH_BASE: u64 = 0x1_0000_0000;

const PAGE64: u64 = PAGE as u64;

/// Tunables of a [`Vidmm`].
#[derive(Clone, Debug)]
pub struct VidmmConfig {
    /// Bytes of the paging buffer (a multiple of 4; rounded up to whole pages in memory). Small
    /// values force multipass.
    pub dma_buffer_size: u32,
    /// Bytes of the scratch window (a multiple of the leaf-table span); fills and transfers
    /// larger than it (half of it for transfers) go in chunks.
    pub scratch_bytes: u64,
    /// Page-table window slots (tables VidMm can update through paging buffers).
    pub page_table_slots: u64,
    /// Device synchronizations a submission may take before it is a possible hang.
    pub max_service_rounds: u32,
    /// Use 64 KiB pages (see the module documentation) when the driver supports them.
    pub pages_64k: bool,
    /// Back aperture allocations of a DMA-remapping adapter with one logically contiguous
    /// range, so their ADL is contiguous (else scattered pages: a page-list ADL).
    pub contiguous_adls: bool,
}

impl Default for VidmmConfig {
    fn default() -> Self {
        Self {
            dma_buffer_size: 64 * 1024,
            scratch_bytes: 256 << 20,
            page_table_slots: 8192,
            max_service_rounds: 4096,
            pages_64k: true,
            contiguous_adls: true,
        }
    }
}

/// A process (address space) VidMm created. The system paging process is not one of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProcessId(usize);

/// An allocation VidMm created.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AllocId(u32);

/// Why a VidMm operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VidmmError {
    /// A DDI returned a failure status (e.g. a low-resources failure in CreateProcess).
    Ddi { ddi: &'static str, status: NTSTATUS },
    /// DxgkDdiBuildPagingBuffer returned a status Dxgkrnl does not accept (also a finding), or
    /// left `pDmaBuffer` outside the buffer.
    BuildPagingBuffer { operation: i32, status: NTSTATUS },
    /// STATUS_GRAPHICS_INSUFFICIENT_DMA_BUFFER on an empty buffer: no buffer size can help.
    NoProgress { operation: i32 },
    /// The device faulted while VidMm waited for `fence`: DMA_FAULTED (`status`) or
    /// DMA_PAGE_FAULTED (`status` 0) named `faulted_fence`; `notification` is the whole report.
    /// The adapter was reset (TDR) afterwards.
    DeviceFault {
        fence: u32,
        faulted_fence: u32,
        status: NTSTATUS,
        notification: crate::dxgkrnl::InterruptNotification,
    },
    /// `fence` did not complete within the service bound (possible hang; TDR done).
    Hang { fence: u32 },
    /// VidMm's memory (sim physical memory) is exhausted.
    OutOfMemory,
    /// The driver's caps describe something this VidMm does not model.
    Unsupported(String),
    /// Bad arguments (unaligned VA, range outside an allocation, unknown id, …).
    InvalidArgument(String),
    /// The allocation has no backing (evicted).
    Evicted(AllocId),
}

impl std::fmt::Display for VidmmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

impl std::error::Error for VidmmError {}

/// Result of VidMm operations.
pub type VidmmResult<T> = Result<T, VidmmError>;

/// Counters, for tests (multipass evidence and the like).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VidmmStats {
    /// DxgkDdiBuildPagingBuffer calls.
    pub build_calls: u64,
    /// Of which returned STATUS_GRAPHICS_INSUFFICIENT_DMA_BUFFER (each one a multipass resume).
    pub multipass_resumes: u64,
    /// Paging buffers submitted on the system context.
    pub paging_submissions: u64,
    /// DMA buffers submitted on user contexts.
    pub user_submissions: u64,
    /// Page-table entries VidMm asked the driver to write.
    pub ptes_written: u64,
    /// Of which entries of 64 KiB-page leaf tables.
    pub ptes_64k_written: u64,
    /// Leaf tables rewritten in the other kind (4 KiB-page ↔ 64 KiB-page).
    pub leaf_kind_changes: u64,
    /// DMA_FAULTED and DMA_PAGE_FAULTED notifications seen.
    pub device_faults: u64,
    /// TDRs (ResetFromTimeout + RestartFromTimeout) performed.
    pub resets: u64,
    /// MAP_APERTURE_SEGMENT / MAP_APERTURE_SEGMENT2 operations VidMm asked for (each chunk
    /// one operation).
    pub aperture_maps: u64,
    /// UNMAP_APERTURE_SEGMENT operations.
    pub aperture_unmaps: u64,
}

struct Table {
    mem: VidmmMemory,
    /// The segment id VidMm names it by when it is in system memory (PageTableSegmentId or
    /// PagingProcessPageTableSegmentId).
    segment: u32,
    /// Its aperture mapping, when the driver put page tables in an aperture segment.
    aperture: Option<ApertureMapping>,
    /// VA in the paging process's page-table window.
    window_va: u64,
    /// For a user process's leaf table: its kind and what it maps.
    leaf: Option<LeafBook>,
}

/// What a PTE points at: a page of a segment (`segment` 0: a logical page of system memory;
/// an aperture segment's id: a page of that aperture).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Target {
    segment: u32,
    page: u64,
}

impl Target {
    fn system(logical_page: u64) -> Self {
        Self {
            segment: 0,
            page: logical_page,
        }
    }
}

/// VidMm's record of one user-process leaf table.
#[derive(Clone)]
struct LeafBook {
    /// A 64 KiB-page table (else 4 KiB pages).
    pages_64k: bool,
    /// What each 4 KiB of the table's span maps (None = invalid).
    slots: Vec<Option<Target>>,
}

/// Can these 16 slots be one 64 KiB entry: all unmapped, or one aligned contiguous run of
/// system memory (aperture pages are 4 KiB pages only)?
fn is_64k_group(group: &[Option<Target>]) -> bool {
    match group.first().copied().flatten() {
        None => group.iter().all(Option::is_none),
        Some(first) => {
            first.segment == 0
                && first.page.is_multiple_of(PAGES_PER_64K as u64)
                && group
                    .iter()
                    .enumerate()
                    .all(|(i, &s)| s == Some(Target::system(first.page + i as u64)))
        }
    }
}

impl Table {
    /// Where the table is: its logical page, or its aperture page when it lives in an
    /// aperture segment.
    fn address(&self) -> Target {
        match &self.aperture {
            Some(m) => Target {
                segment: m.segment,
                page: m.first,
            },
            None => Target {
                segment: self.segment,
                page: self.mem.logical_page(0),
            },
        }
    }
}

struct Process {
    /// Dxgkrnl's handle of the process (hDxgkProcess), as DMA_PAGE_FAULTED names it.
    hdxgk: HANDLE,
    hkmd: HANDLE,
    hdevice: HANDLE,
    hcontext: HANDLE,
    tables: HashMap<(usize, u64), Table>,
    /// (allocation, VA) pairs mapped in this process.
    /// `(allocation, gpu_va, first page, pages)`: a range of an allocation mapped at a VA.
    mappings: Vec<(AllocId, u64, u64, u64)>,
}

struct Allocation {
    bytes: u64,
    backing: Option<VidmmMemory>,
    /// While evicted: the system-memory allocation its contents were paged out to.
    paged_out: Option<AllocId>,
    /// While evicted from an aperture segment: its backing store, kept. An aperture segment
    /// only maps system-memory pages into the GPU's view, so evicting an allocation from one is
    /// UNMAP_APERTURE_SEGMENT and nothing else: no page-out transfer, the pages (and their
    /// contents) stay the allocation's (Learn, DXGK_OPERATION_UNMAP_APERTURE_SEGMENT: "unmap a
    /// range of an aperture segment" when an allocation is evicted from it).
    parked: Option<VidmmMemory>,
    /// Where it is placed: 0 for the implicit system-memory segment, else an aperture
    /// segment's id.
    segment: u32,
    /// The driver's `hAllocation` (NULL for VidMm's own allocations).
    h_allocation: HANDLE,
    /// Asks for a `CpuVisibleAddress` in MAP_APERTURE_SEGMENT2 (MapApertureCpuVisible and
    /// AccessedPhysically).
    map_cpu_visible: bool,
    /// Its aperture range while resident in an aperture segment.
    aperture: Option<ApertureMapping>,
}

/// What the aperture operations need of a [`VidmmMemory`] (copied, so VidMm can map memory it
/// holds while it builds operations).
struct PagesOf {
    logical: Vec<u64>,
    physical: Vec<u64>,
    cpu: *mut u8,
}

impl PagesOf {
    fn of(mem: &VidmmMemory) -> Self {
        Self {
            logical: mem.logical_pages().to_vec(),
            physical: mem.physical_pages().to_vec(),
            cpu: mem.cpu_address(0),
        }
    }
}

/// Where [`Vidmm::allocate_placed`] puts an allocation, from the driver's DXGK_ALLOCATIONINFO.
#[derive(Clone, Copy, Debug)]
pub struct AllocSpec {
    /// Bytes (rounded up to 4 KiB).
    pub bytes: u64,
    /// The segment: an aperture segment's id, or anything else (0, the implicit
    /// system-memory segment's id) for system memory.
    pub segment: u32,
    /// The driver's `hAllocation`, passed in the aperture operations.
    pub h_allocation: HANDLE,
    /// `Flags.MapApertureCpuVisible` and `Flags.AccessedPhysically` were both set.
    pub map_cpu_visible: bool,
}

impl AllocSpec {
    /// `bytes` of system memory, VidMm's own (no `hAllocation`).
    pub fn system(bytes: u64) -> Self {
        Self {
            bytes,
            segment: 0,
            h_allocation: std::ptr::null_mut(),
            map_cpu_visible: false,
        }
    }
}

/// How a UPDATE_PAGE_TABLE walk writes its entries.
#[derive(Clone, Copy, Default)]
struct Update {
    /// The level-0 tables are 64 KiB-page tables (entries of 64 KiB, `Use64KBPages`).
    pages_64k: bool,
    /// The first write of fresh tables (`InitialUpdate`).
    initial: bool,
}

/// Where a UPDATE_PAGE_TABLE takes its entries from.
#[derive(Clone, Copy)]
enum Entries<'a> {
    Slice(&'a [DXGK_PTE]),
    Repeat(DXGK_PTE, u64),
}

impl Entries<'_> {
    fn len(&self) -> u64 {
        match self {
            Entries::Slice(s) => s.len() as u64,
            Entries::Repeat(_, n) => *n,
        }
    }
}

/// The simulated VidMm of one started adapter. See the module documentation.
pub struct Vidmm {
    m: Machine,
    id: AdapterId,
    ddi: DRIVER_INITIALIZATION_DATA,
    hadapter: HANDLE,
    config: VidmmConfig,
    geo: Geometry,
    /// Index 0: the system paging process; then user processes (None once destroyed).
    procs: Vec<Option<Process>>,
    allocs: HashMap<AllocId, Allocation>,
    next_alloc: u32,
    /// [`Vidmm::fail_next_acquire`] is pending.
    fail_acquire: bool,
    buffer: Option<VidmmMemory>,
    write_offset: u32,
    next_fence: u32,
    last_completed: u32,
    seen_notifications: usize,
    next_slot: u64,
    free_slots: Vec<u64>,
    stats: VidmmStats,
    destroyed: bool,
    /// The paging process's non-leaf tables as initialized (their contents never change: every
    /// table of the layout exists from the start), replayed by [`Vidmm::power_up`].
    paging_upper_tables: Vec<((usize, u64), Vec<DXGK_PTE>)>,
    /// The driver's aperture segments.
    apertures: Vec<ApertureSegment>,
    /// How aperture ranges are mapped on this adapter.
    aperture_mode: ApertureMode,
    /// `PagingBufferSegmentId` from QuerySegment.
    paging_buffer_segment: u32,
    /// VidMm's dummy page: what UNMAP_APERTURE_SEGMENT points unmapped pages at.
    dummy: Option<VidmmMemory>,
    /// The paging buffer's aperture mapping, when it lives in an aperture segment.
    buffer_aperture: Option<ApertureMapping>,
    /// The paging process can run paging buffers (its tables are written and its root set).
    paging_ready: bool,
}

fn invalid_pte() -> DXGK_PTE {
    DXGK_PTE::default()
}

fn target_pte(t: Target) -> DXGK_PTE {
    page_pte(t.page, t.segment)
}

fn page_pte(logical_page: u64, segment: u32) -> DXGK_PTE {
    let mut p = DXGK_PTE::default();
    p.set_Valid(1);
    p.set_Segment(u64::from(segment));
    p.u.PageAddress = logical_page;
    p
}

fn table_pte(logical_page: u64, segment: u32) -> DXGK_PTE {
    let mut p = DXGK_PTE::default();
    p.set_Valid(1);
    p.set_Segment(u64::from(segment));
    p.u.PageTableAddress = logical_page;
    p
}

fn bad(msg: impl Into<String>) -> VidmmError {
    VidmmError::InvalidArgument(msg.into())
}

/// The aperture segments the driver described (QuerySegment descriptors with
/// `Flags.Aperture`) and how VidMm can map them on this adapter ([`ApertureMode`]).
fn aperture_segments(
    m: &Machine,
    info: &crate::dxgkrnl::AdapterInfo,
) -> (Vec<ApertureSegment>, ApertureMode) {
    let mut out = Vec::new();
    if let Some(segs) = info.segments {
        let stride = segs.SegmentDescriptorStride;
        let size = std::mem::size_of::<dxgk_sys::DXGK_SEGMENTDESCRIPTOR4>();
        for i in 0..segs.NbSegment as usize {
            let Some(raw) = info
                .segment_descriptors
                .get(i * stride..i * stride + size)
                .filter(|_| stride >= size)
            else {
                break;
            };
            // SAFETY: `raw` holds `size` bytes; DXGK_SEGMENTDESCRIPTOR4 is plain data (integers
            // and a union of integers), valid for every bit pattern; read unaligned.
            let d: dxgk_sys::DXGK_SEGMENTDESCRIPTOR4 = unsafe {
                raw.as_ptr()
                    .cast::<dxgk_sys::DXGK_SEGMENTDESCRIPTOR4>()
                    .read_unaligned()
            };
            if d.Flags.Aperture() != 0 {
                out.push(ApertureSegment::new(
                    i as u32 + 1,
                    d.Size as u64 / PAGE64,
                    d.Flags.CacheCoherent() != 0,
                ));
            }
        }
    }
    let map2 = info
        .driver_caps
        .is_some_and(|c| c.MemoryManagementCaps.MapAperture2Supported() != 0);
    let mode = if out.is_empty() {
        ApertureMode::Unavailable("the driver describes no aperture segment".into())
    } else if info.dma_remapping {
        ApertureMode::Adl { cpu_visible: map2 }
    } else if m.state.config.iommu == crate::IommuMode::Remapped {
        // Not a configuration Windows has: without DMA remapping its IOMMU maps 1:1, so an
        // MDL's PFNs are device addresses. Here they are not, so VidMm keeps out of the
        // aperture rather than hand the driver addresses the device cannot use.
        ApertureMode::Unavailable(
            "no DMA remapping, but the IOMMU remaps: MDL pages are not device addresses".into(),
        )
    } else {
        ApertureMode::Mdl
    };
    (out, mode)
}

impl Vidmm {
    /// Creates the system paging process, its device and context and page tables on started
    /// adapter `id`, with the default configuration.
    pub fn new(m: &Machine, id: AdapterId) -> VidmmResult<Vidmm> {
        Self::with_config(m, id, VidmmConfig::default())
    }

    /// As [`Vidmm::new`] with `config`. On failure everything created so far is destroyed.
    pub fn with_config(m: &Machine, id: AdapterId, config: VidmmConfig) -> VidmmResult<Vidmm> {
        let view = m.adapter(id);
        let ddi = m
            .registered_driver()
            .ok_or_else(|| bad("no driver registered"))?;
        let caps = view
            .info
            .gpummu_caps
            .ok_or_else(|| VidmmError::Unsupported("no GPUMMUCAPS answered at start".into()))?;
        let levels = &view.info.page_table_levels;
        if levels.len() < 3 || levels.len() != caps.PageTableLevelCount as usize {
            return Err(VidmmError::Unsupported(format!(
                "{} page-table levels (this VidMm needs fixed-size roots: more than 2)",
                levels.len()
            )));
        }
        if let Some(l) = levels.iter().find(|l| {
            l.PageTableSizeInBytes as usize != PAGE
                || l.PageTableIndexBitCount == 0
                || (8u64 << l.PageTableIndexBitCount) > PAGE64
        }) {
            return Err(VidmmError::Unsupported(format!(
                "page tables of {} bytes with {} index bits (this VidMm needs one 4 KiB page per table)",
                l.PageTableSizeInBytes, l.PageTableIndexBitCount
            )));
        }
        let mode = caps.PageTableUpdateMode;
        if mode != dxgk_sys::DXGK_PAGETABLEUPDATE_GPU_VIRTUAL {
            return Err(VidmmError::Unsupported(format!(
                "PageTableUpdateMode {} (only GPU_VIRTUAL is modelled)",
                mode.0
            )));
        }
        if config.dma_buffer_size < 64 || !config.dma_buffer_size.is_multiple_of(4) {
            return Err(bad("dma_buffer_size must be a multiple of 4, at least 64"));
        }
        // 64 KiB pages of system memory: a 64 KiB-page leaf table covers what a 4 KiB-page one
        // does, and is allocated like one (this VidMm needs it to fit in one 4 KiB page).
        let leaf_64k_bytes = caps.LeafPageTableSizeFor64KPagesInBytes as usize;
        let entries_64k = (config.pages_64k
            && caps.SysMem64KBPageSupported() != 0
            && leaf_64k_bytes > 0
            && leaf_64k_bytes <= PAGE
            && levels[0].PageTableIndexBitCount >= 4)
            .then(|| 1 << (levels[0].PageTableIndexBitCount - 4));
        let geo = Geometry {
            bits: levels.iter().map(|l| l.PageTableIndexBitCount).collect(),
            va_bits: caps.VirtualAddressBitCount,
            table_segment: levels[0].PageTableSegmentId,
            paging_table_segment: levels[0].PagingProcessPageTableSegmentId,
            entries_64k,
        };
        if geo.va_bits < 34 || geo.va_bits > 64 {
            return Err(VidmmError::Unsupported(format!(
                "{}-bit VA (the paging layout needs at least 34)",
                geo.va_bits
            )));
        }
        let (apertures, aperture_mode) = aperture_segments(m, &view.info);
        let paging_buffer_segment = view.info.segments.map_or(0, |s| s.PagingBufferSegmentId);
        let seen = m.interrupt_notifications(id).len();
        let mut v = Vidmm {
            m: m.clone(),
            id,
            ddi,
            hadapter: view.context,
            config,
            geo,
            procs: Vec::new(),
            allocs: HashMap::new(),
            next_alloc: 1,
            fail_acquire: false,
            buffer: None,
            write_offset: 0,
            next_fence: 1,
            last_completed: 0,
            seen_notifications: seen,
            next_slot: 0,
            free_slots: Vec::new(),
            stats: VidmmStats::default(),
            destroyed: false,
            paging_upper_tables: Vec::new(),
            apertures,
            aperture_mode,
            paging_buffer_segment,
            dummy: None,
            buffer_aperture: None,
            paging_ready: false,
        };
        for (what, seg) in [
            ("PageTableSegmentId", v.geo.table_segment),
            (
                "PagingProcessPageTableSegmentId",
                v.geo.paging_table_segment,
            ),
        ] {
            if v.apertures.iter().any(|a| a.id == seg) && !v.is_aperture(seg) {
                return Err(VidmmError::Unsupported(format!(
                    "{what} {seg} is an aperture segment VidMm cannot map here ({:?})",
                    v.aperture_mode
                )));
            }
        }
        match v.init_paging_process() {
            Ok(()) => Ok(v),
            Err(e) => {
                let _ = v.teardown();
                Err(e)
            }
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> VidmmStats {
        self.stats
    }

    /// The configuration in use.
    pub fn config(&self) -> &VidmmConfig {
        &self.config
    }

    /// Changes the hang bound ([`VidmmConfig::max_service_rounds`]) from now on.
    pub fn set_max_service_rounds(&mut self, rounds: u32) {
        self.config.max_service_rounds = rounds;
    }

    // ---- DDI calls ------------------------------------------------------------------------

    /// The machine.
    pub(crate) fn machine(&self) -> &Machine {
        &self.m
    }

    /// The adapter.
    pub(crate) fn adapter_id(&self) -> AdapterId {
        self.id
    }

    /// The registered DDI table.
    pub(crate) fn ddi_table(&self) -> &DRIVER_INITIALIZATION_DATA {
        &self.ddi
    }

    /// The driver's adapter handle (MiniportDeviceContext).
    pub(crate) fn adapter_handle(&self) -> HANDLE {
        self.hadapter
    }

    /// The driver's `hDevice` of user process `p`.
    pub(crate) fn device_handle(&self, p: ProcessId) -> VidmmResult<HANDLE> {
        let i = self.user(p)?;
        Ok(self.proc_ref(i).hdevice)
    }

    /// Runs a DDI call with the machine current, then synchronizes the device (as after every
    /// DDI the simulator calls).
    pub(crate) fn call<R: TraceResult>(&self, ddi: &'static str, f: impl FnOnce() -> R) -> R {
        self.m.enter(|| {
            let r = crate::trace::call(&self.m.state, Track::Ddi, ddi, Vec::new, f);
            after_ddi(&self.m.state, self.id);
            r
        })
    }

    fn check(ddi: &'static str, status: NTSTATUS) -> VidmmResult<()> {
        if status == dxgk_sys::STATUS_SUCCESS {
            Ok(())
        } else {
            Err(VidmmError::Ddi { ddi, status })
        }
    }

    fn create_objects(&mut self, system: bool) -> VidmmResult<Process> {
        let create_process = self
            .ddi
            .DxgkDdiCreateProcess
            .ok_or_else(|| VidmmError::Unsupported("no DxgkDdiCreateProcess".into()))?;
        let mut pa = dxgk_sys::DXGKARG_CREATEPROCESS {
            hDxgkProcess: (0xD6_0000 + self.procs.len() * 0x10) as HANDLE,
            ..Default::default()
        };
        pa.Flags.set_SystemProcess(u32::from(system));
        let h = self.hadapter;
        // SAFETY: the miniport's DDI with its adapter handle and a valid argument block.
        let s = self.call("DxgkDdiCreateProcess", || unsafe {
            create_process(h, &mut pa)
        });
        Self::check("DxgkDdiCreateProcess", s)?;
        let mut p = Process {
            hdxgk: pa.hDxgkProcess,
            hkmd: pa.hKmdProcess,
            hdevice: std::ptr::null_mut(),
            hcontext: std::ptr::null_mut(),
            tables: HashMap::new(),
            mappings: Vec::new(),
        };
        if let Err(e) = self.create_device_and_context(&mut p, system) {
            self.destroy_objects(&p);
            return Err(e);
        }
        Ok(p)
    }

    fn create_device_and_context(&mut self, p: &mut Process, system: bool) -> VidmmResult<()> {
        let create_device = self
            .ddi
            .DxgkDdiCreateDevice
            .ok_or_else(|| VidmmError::Unsupported("no DxgkDdiCreateDevice".into()))?;
        let create_context = self
            .ddi
            .DxgkDdiCreateContext
            .ok_or_else(|| VidmmError::Unsupported("no DxgkDdiCreateContext".into()))?;
        let mut da = dxgk_sys::DXGKARG_CREATEDEVICE {
            hKmdProcess: p.hkmd,
            ..Default::default()
        };
        let h = self.hadapter;
        // SAFETY: the miniport's DDI with its adapter handle and a valid argument block.
        let s = self.call("DxgkDdiCreateDevice", || unsafe {
            create_device(h, &mut da)
        });
        Self::check("DxgkDdiCreateDevice", s)?;
        p.hdevice = da.hDevice;
        let mut ca = dxgk_sys::DXGKARG_CREATECONTEXT::default();
        ca.Flags.set_SystemContext(u32::from(system));
        let hd = p.hdevice;
        // SAFETY: the miniport's DDI with a device it created and a valid argument block.
        let s = self.call("DxgkDdiCreateContext", || unsafe {
            create_context(hd, &mut ca)
        });
        Self::check("DxgkDdiCreateContext", s)?;
        p.hcontext = ca.hContext;
        Ok(())
    }

    /// Destroys context, device and process (whichever exist), in that order.
    fn destroy_objects(&self, p: &Process) {
        let h = self.hadapter;
        if !p.hcontext.is_null() {
            if let Some(f) = self.ddi.DxgkDdiDestroyContext {
                let hc = p.hcontext;
                // SAFETY: the miniport's DDI with a context it created, destroyed once.
                let s = self.call("DxgkDdiDestroyContext", || unsafe { f(hc) });
                self.m.check_ddi_status("DxgkDdiDestroyContext", s, &[0]);
            }
        }
        if !p.hdevice.is_null() {
            if let Some(f) = self.ddi.DxgkDdiDestroyDevice {
                let hd = p.hdevice;
                // SAFETY: the miniport's DDI with a device it created, destroyed once.
                let s = self.call("DxgkDdiDestroyDevice", || unsafe { f(hd) });
                self.m.check_ddi_status("DxgkDdiDestroyDevice", s, &[0]);
            }
        }
        if let Some(f) = self.ddi.DxgkDdiDestroyProcess {
            let hp = p.hkmd;
            // SAFETY: the miniport's DDI with a process it created, destroyed once.
            let s = self.call("DxgkDdiDestroyProcess", || unsafe { f(h, hp) });
            self.m.check_ddi_status("DxgkDdiDestroyProcess", s, &[0]);
        }
    }

    fn set_root(&self, p: &Process) -> VidmmResult<()> {
        let f = self
            .ddi
            .DxgkDdiSetRootPageTable
            .ok_or_else(|| VidmmError::Unsupported("no DxgkDdiSetRootPageTable".into()))?;
        let root = &p.tables[&(self.geo.root(), 0)];
        let mut args = dxgk_sys::DXGKARG_SETROOTPAGETABLE {
            hContext: p.hcontext,
            NumEntries: self.geo.entries(self.geo.root()),
            ..Default::default()
        };
        let at = root.address();
        args.Address.SegmentId = at.segment;
        args.Address.SegmentOffset = at.page << 12;
        let h = self.hadapter;
        // SAFETY: the miniport's DDI with its adapter handle and a valid argument block.
        self.call("DxgkDdiSetRootPageTable", || unsafe { f(h, &args) });
        Ok(())
    }

    // ---- memory ---------------------------------------------------------------------------

    fn vidmm_pages(&self, pages: usize, zero: bool) -> VidmmResult<VidmmMemory> {
        self.m
            .vidmm_allocate(self.id, pages, zero)
            .ok_or(VidmmError::OutOfMemory)
    }

    /// A new page table of the paging process (`paging`) or a user process.
    fn new_table(&mut self, paging: bool) -> VidmmResult<Table> {
        let slot = match self.free_slots.pop() {
            Some(s) => s,
            None if self.next_slot < self.config.page_table_slots => {
                self.next_slot += 1;
                self.next_slot - 1
            }
            None => {
                return Err(VidmmError::Unsupported(format!(
                    "page-table window full ({} slots)",
                    self.config.page_table_slots
                )))
            }
        };
        let segment = if paging {
            self.geo.paging_table_segment
        } else {
            self.geo.table_segment
        };
        // Not zeroed: VidMm initializes every table through the driver, so a missing
        // initialization shows up as garbage entries.
        let mem = match self.vidmm_pages(1, false) {
            Ok(mem) => mem,
            Err(e) => {
                self.free_slots.push(slot);
                return Err(e);
            }
        };
        // A table in an aperture segment is mapped like any aperture allocation (no
        // hAllocation); the operation goes into the current paging batch, before the updates
        // that name the table.
        let mut aperture = None;
        if self.is_aperture(segment) {
            match self.map_aperture(&PagesOf::of(&mem), segment, std::ptr::null_mut(), false) {
                Ok(m) => aperture = Some(m),
                Err(e) => {
                    self.free_slots.push(slot);
                    self.m.vidmm_free(mem);
                    return Err(e);
                }
            }
        }
        Ok(Table {
            mem,
            segment,
            aperture,
            window_va: PT_WINDOW_BASE + slot * PAGE64,
            leaf: None,
        })
    }

    /// Frees a table nothing names any more: its aperture range (if any) unmapped
    /// (UNMAP_APERTURE_SEGMENT, submitted; only forgotten during teardown or when `unmap` is
    /// false, for a table whose creation is being undone), then its memory.
    fn free_table_with(&mut self, t: Table, unmap: bool) -> VidmmResult<()> {
        self.free_slots
            .push((t.window_va - PT_WINDOW_BASE) / PAGE64);
        let r = match t.aperture {
            Some(m) if unmap && !self.destroyed => self.unmap_aperture(m, std::ptr::null_mut()),
            Some(m) => {
                self.drop_aperture(m);
                Ok(())
            }
            None => Ok(()),
        };
        self.m.vidmm_free(t.mem);
        r
    }

    fn free_table(&mut self, t: Table) -> VidmmResult<()> {
        self.free_table_with(t, true)
    }

    // ---- aperture segments ------------------------------------------------------------------

    /// How this VidMm maps aperture ranges on its adapter.
    pub fn aperture_mode(&self) -> &ApertureMode {
        &self.aperture_mode
    }

    /// Whether `segment` is an aperture segment VidMm can place memory in.
    pub fn is_aperture(&self, segment: u32) -> bool {
        !matches!(self.aperture_mode, ApertureMode::Unavailable(_))
            && self.apertures.iter().any(|a| a.id == segment)
    }

    fn aperture_seg(&mut self, segment: u32) -> VidmmResult<&mut ApertureSegment> {
        self.apertures
            .iter_mut()
            .find(|a| a.id == segment)
            .ok_or_else(|| bad(format!("segment {segment} is not an aperture segment")))
    }

    /// Pages mapped in aperture segment `segment` (Dxgkrnl's book).
    pub fn aperture_mapped_pages(&self, segment: u32) -> u64 {
        self.apertures
            .iter()
            .find(|a| a.id == segment)
            .map_or(0, ApertureSegment::mapped_pages)
    }

    /// Maps the pages of `mem` into aperture segment `segment`: a range from its allocator,
    /// then MAP_APERTURE_SEGMENT (one per MDL of at most [`MDL_MAX_PAGES`] pages) or
    /// MAP_APERTURE_SEGMENT2 (one ADL) into the paging buffer; the caller submits. On failure
    /// nothing stays allocated or mapped in the book.
    fn map_aperture(
        &mut self,
        mem: &PagesOf,
        segment: u32,
        h_allocation: HANDLE,
        map_cpu_visible: bool,
    ) -> VidmmResult<ApertureMapping> {
        let pages = mem.logical.len() as u64;
        let seg = self.aperture_seg(segment)?;
        let cache_coherent = seg.cache_coherent;
        let first = seg.allocate(pages).ok_or(VidmmError::OutOfMemory)?;
        let mut map = ApertureMapping {
            segment,
            first,
            pages,
            mdls: Vec::new(),
            adl: None,
        };
        let mut flags = dxgk_sys::DXGK_MAPAPERTUREFLAGS::default();
        flags.set_CacheCoherent(u32::from(cache_coherent));
        let r = match self.aperture_mode.clone() {
            ApertureMode::Mdl => {
                let mut r = Ok(());
                for (i, chunk) in mem.physical.chunks(MDL_MAX_PAGES).enumerate() {
                    let mdl = VidmmMdl::new(chunk);
                    let op = dxgk_sys::DXGKARG_BUILDPAGINGBUFFER_MapApertureSegment {
                        hAllocation: h_allocation,
                        SegmentId: segment,
                        OffsetInPages: (first + (i * MDL_MAX_PAGES) as u64) as usize,
                        NumberOfPages: chunk.len(),
                        pMdl: mdl.as_ptr(),
                        Flags: flags,
                        MdlOffset: 0,
                        ..Default::default()
                    };
                    map.mdls.push(mdl);
                    self.stats.aperture_maps += 1;
                    r = self.build(dxgk_sys::DXGK_OPERATION_MAP_APERTURE_SEGMENT, |a| {
                        a.u.MapApertureSegment = op;
                    });
                    if r.is_err() {
                        break;
                    }
                }
                r
            }
            ApertureMode::Adl { cpu_visible } => {
                let (ptr, adl) = crate::dxgkrnl::physical_memory::vidmm_adl(
                    &self.m.state,
                    self.id,
                    &mem.logical,
                    &mem.physical,
                );
                map.adl = Some(ptr);
                // Learn: non-NULL only for an allocation created with MapApertureCpuVisible
                // (and AccessedPhysically), and only if the driver declared
                // MapAperture2Supported.
                let cpu = if cpu_visible && map_cpu_visible {
                    mem.cpu.cast()
                } else {
                    std::ptr::null_mut()
                };
                let op = dxgk_sys::DXGKARG_BUILDPAGINGBUFFER_MapApertureSegment2 {
                    hAllocation: h_allocation,
                    SegmentId: segment,
                    OffsetInPages: first as usize,
                    NumberOfPages: pages as usize,
                    Adl: adl,
                    Flags: flags,
                    AdlOffset: 0,
                    CpuVisibleAddress: cpu,
                    ..Default::default()
                };
                self.build_map2(ptr, op)
            }
            ApertureMode::Unavailable(why) => Err(VidmmError::Unsupported(why)),
        };
        match r {
            Ok(()) => {
                if let Ok(seg) = self.aperture_seg(segment) {
                    seg.mark_mapped(first, pages);
                }
                Ok(map)
            }
            Err(e) => {
                self.drop_aperture(map);
                Err(e)
            }
        }
    }

    /// MAP_APERTURE_SEGMENT2 carrying ADL `adl` (its address, for Dxgkrnl's check that it is
    /// live: an ADL used after DxgkCbFreeAdl is a [`Rule::MdlMisuse`] finding and no operation
    /// is built).
    fn build_map2(
        &mut self,
        adl: usize,
        op: dxgk_sys::DXGKARG_BUILDPAGINGBUFFER_MapApertureSegment2,
    ) -> VidmmResult<()> {
        const CALL: &str = "DxgkDdiBuildPagingBuffer";
        if !crate::dxgkrnl::physical_memory::check_adl(&self.m.state, CALL, adl) {
            return Err(bad(format!("ADL {adl:#x} is not live")));
        }
        self.stats.aperture_maps += 1;
        self.build(dxgk_sys::DXGK_OPERATION_MAP_APERTURE_SEGMENT2, |a| {
            a.u.MapApertureSegment2 = op;
        })
    }

    /// UNMAP_APERTURE_SEGMENT of `[first, first + pages)` of `segment` (pointing them at the
    /// dummy page) into the paging buffer. A range that no MAP operation mapped is a
    /// [`Rule::MdlMisuse`] finding and no operation is built.
    fn build_unmap_aperture(
        &mut self,
        segment: u32,
        first: u64,
        pages: u64,
        h_allocation: HANDLE,
    ) -> VidmmResult<()> {
        if !self.aperture_seg(segment)?.take_mapped(first, pages) {
            self.m.state.report(Finding::here(
                Rule::MdlMisuse,
                "DxgkDdiBuildPagingBuffer",
                format!(
                    "UNMAP_APERTURE_SEGMENT of pages {first}+{pages} of segment {segment}, which no MAP_APERTURE_SEGMENT(2) mapped"
                ),
            ));
            return Err(bad(format!(
                "aperture pages {first}+{pages} of segment {segment} are not mapped"
            )));
        }
        let dummy = self.dummy_address()?;
        let op = dxgk_sys::DXGKARG_BUILDPAGINGBUFFER_UnmapApertureSegment {
            hAllocation: h_allocation,
            SegmentId: segment,
            OffsetInPages: first as usize,
            NumberOfPages: pages as usize,
            DummyPage: dxgk_sys::LARGE_INTEGER {
                QuadPart: (dummy << 12) as i64,
            },
            ..Default::default()
        };
        self.stats.aperture_unmaps += 1;
        self.build(dxgk_sys::DXGK_OPERATION_UNMAP_APERTURE_SEGMENT, |a| {
            a.u.UnmapApertureSegment = op;
        })
    }

    /// The logical page of VidMm's dummy page (allocated on first use, zeroed).
    fn dummy_address(&mut self) -> VidmmResult<u64> {
        if self.dummy.is_none() {
            self.dummy = Some(self.vidmm_pages(1, true)?);
        }
        Ok(self.dummy.as_ref().map_or(0, |d| d.logical_page(0)))
    }

    /// Unmaps `map` (UNMAP_APERTURE_SEGMENT, submitted and waited for), then frees what its
    /// MAP operations carried and its range.
    fn unmap_aperture(&mut self, map: ApertureMapping, h_allocation: HANDLE) -> VidmmResult<()> {
        let r = self.paging_batch(|v| {
            v.build_unmap_aperture(map.segment, map.first, map.pages, h_allocation)?;
            v.submit_paging()
        });
        self.drop_aperture(map);
        r
    }

    /// Frees what `map`'s MAP operations carried (its ADL, its MDLs) and returns its range to
    /// the segment, with no paging work.
    fn drop_aperture(&mut self, map: ApertureMapping) {
        if let Some(adl) = map.adl {
            crate::dxgkrnl::physical_memory::vidmm_free_adl(&self.m.state, adl);
        }
        if let Ok(seg) = self.aperture_seg(map.segment) {
            seg.take_mapped(map.first, map.pages);
            seg.release(map.first, map.pages);
        }
    }

    /// The ADL of resident aperture allocation `a` on the remapping path (what its
    /// MAP_APERTURE_SEGMENT2 carried), for tests.
    pub fn aperture_adl(&self, a: AllocId) -> Option<*const dxgk_sys::DXGK_ADL> {
        let m = self.allocs.get(&a)?.aperture.as_ref()?;
        m.adl.map(|p| p as *const dxgk_sys::DXGK_ADL)
    }

    /// `(segment, first page, pages)` of resident aperture allocation `a`.
    pub fn aperture_range(&self, a: AllocId) -> Option<(u32, u64, u64)> {
        let m = self.allocs.get(&a)?.aperture.as_ref()?;
        Some((m.segment, m.first, m.pages))
    }

    /// MAP_APERTURE_SEGMENT2 of `pages` pages of ADL `adl` (from `adl_offset`) at aperture page
    /// `first` of `segment`, submitted: an operation VidMm itself builds only from its own
    /// live ADLs. For negative tests: an ADL used after DxgkCbFreeAdl is a
    /// [`Rule::MdlMisuse`] finding (nothing reaches the driver). Not tracked in any
    /// allocation's books.
    pub fn map_aperture_adl(
        &mut self,
        segment: u32,
        first: u64,
        adl: *const dxgk_sys::DXGK_ADL,
        adl_offset: u32,
        pages: u64,
    ) -> VidmmResult<()> {
        const CALL: &str = "DxgkDdiBuildPagingBuffer";
        if !crate::dxgkrnl::physical_memory::check_adl(&self.m.state, CALL, adl as usize) {
            return Err(bad(format!("ADL {adl:p} is not live")));
        }
        // SAFETY: `adl` is a live ADL Dxgkrnl owns (checked above); its storage stays
        // allocated until freed, which cannot happen during this read.
        let copy = unsafe { adl.read() };
        let op = dxgk_sys::DXGKARG_BUILDPAGINGBUFFER_MapApertureSegment2 {
            SegmentId: segment,
            OffsetInPages: first as usize,
            NumberOfPages: pages as usize,
            Adl: copy,
            AdlOffset: adl_offset,
            ..Default::default()
        };
        self.paging_batch(|v| {
            v.build_map2(adl as usize, op)?;
            v.aperture_seg(segment)?.mark_mapped(first, pages);
            v.submit_paging()
        })
    }

    /// UNMAP_APERTURE_SEGMENT of `[first, first + pages)` of `segment`, submitted. For negative
    /// tests: a range no MAP operation mapped is a [`Rule::MdlMisuse`] finding (nothing
    /// reaches the driver).
    pub fn unmap_aperture_range(
        &mut self,
        segment: u32,
        first: u64,
        pages: u64,
    ) -> VidmmResult<()> {
        self.paging_batch(|v| {
            v.build_unmap_aperture(segment, first, pages, std::ptr::null_mut())?;
            v.submit_paging()
        })
    }

    // ---- the system paging process ----------------------------------------------------------

    fn layout(&self) -> [(u64, u64); 3] {
        let buf_pages = (self.config.dma_buffer_size as u64).div_ceil(PAGE64);
        [
            (PT_WINDOW_BASE, self.config.page_table_slots * PAGE64),
            (PAGING_BUFFER_BASE, buf_pages * PAGE64),
            (SCRATCH_BASE, self.config.scratch_bytes),
        ]
    }

    fn init_paging_process(&mut self) -> VidmmResult<()> {
        let leaf_span = self.geo.table_span(0);
        if self.config.scratch_bytes == 0 || !self.config.scratch_bytes.is_multiple_of(leaf_span) {
            return Err(bad(format!(
                "scratch_bytes must be a non-zero multiple of {leaf_span}"
            )));
        }
        let p = self.create_objects(true)?;
        self.procs.push(Some(p));
        // Every table of the layout, up front.
        let layout = self.layout();
        let mut keys = vec![(self.geo.root(), 0u64)];
        for level in (0..self.geo.root()).rev() {
            for &(base, len) in &layout {
                keys.extend(
                    self.geo
                        .tables_covering(level, base, len)
                        .map(|k| (level, k)),
                );
            }
        }
        keys.sort();
        keys.dedup();
        let buffer = self.vidmm_pages(layout[1].1 as usize / PAGE, true)?;
        let pages = PagesOf::of(&buffer);
        self.buffer = Some(buffer);
        // The paging buffer in PagingBufferSegmentId when that is an aperture: mapped like a
        // DMA buffer (no hAllocation) before the CPU_VIRTUAL updates that map it in the paging
        // process translate its aperture pages.
        let segment = self.paging_buffer_segment;
        if self.is_aperture(segment) {
            let map = self.map_aperture(&pages, segment, std::ptr::null_mut(), false)?;
            self.buffer_aperture = Some(map);
        }
        // The tables after the buffer: in an aperture segment, each is mapped with an
        // operation built into the paging buffer (and run once the paging process can run it).
        for key in keys {
            let t = self.new_table(true)?;
            self.proc_mut(0).tables.insert(key, t);
        }
        let buffer_targets: Vec<Target> = (0..pages.logical.len() as u64)
            .map(|i| match &self.buffer_aperture {
                Some(m) => Target {
                    segment: m.segment,
                    page: m.first + i,
                },
                None => Target::system(pages.logical[i as usize]),
            })
            .collect();
        // The entries of every table, computed by VidMm, written by the driver with the CPU.
        let mut contents: HashMap<(usize, u64), Vec<DXGK_PTE>> = HashMap::new();
        let proc0 = self.procs[0].as_ref().expect("paging process");
        for &(level, key) in proc0.tables.keys() {
            contents.insert(
                (level, key),
                vec![invalid_pte(); self.geo.entries(level) as usize],
            );
        }
        let mut set = |level: usize, va: u64, pte: DXGK_PTE| {
            let entry = self.geo.entry(level, va);
            let e = contents.get_mut(&entry.table).expect("table of the layout");
            e[entry.index as usize] = pte;
        };
        for (&(level, key), t) in &proc0.tables {
            // The parent entry pointing at this table.
            if level < self.geo.root() {
                let va = key * self.geo.table_span(level);
                let at = t.address();
                set(level + 1, va, table_pte(at.page, at.segment));
            }
            // The window mapping of this table.
            set(0, t.window_va, target_pte(t.address()));
        }
        for (i, &t) in buffer_targets.iter().enumerate() {
            set(0, PAGING_BUFFER_BASE + i as u64 * PAGE64, target_pte(t));
        }
        let mut order: Vec<_> = contents.into_iter().collect();
        order.sort_by_key(|(key, _)| *key);
        self.write_paging_tables(&order)?;
        self.paging_ready = true;
        // Whatever the aperture mapping put in the paging buffer runs now that the paging
        // process can run it.
        self.submit_paging()?;
        self.paging_upper_tables = order
            .into_iter()
            .filter(|((level, _), _)| *level > 0)
            .collect();
        Ok(())
    }

    /// Writes paging-process tables with CPU_VIRTUAL UPDATE_PAGE_TABLE and a NULL DMA buffer
    /// (what Windows forces for the paging process), then sets its root.
    fn write_paging_tables(&mut self, tables: &[((usize, u64), Vec<DXGK_PTE>)]) -> VidmmResult<()> {
        let proc0 = self.procs[0].as_ref().expect("paging process");
        let hkmd = proc0.hkmd;
        let hctx = proc0.hcontext;
        for (key, entries) in tables {
            let key = *key;
            let table = self.procs[0].as_ref().expect("paging process").tables[&key]
                .mem
                .cpu_address(0);
            let mut upt = dxgk_sys::DXGK_BUILDPAGINGBUFFER_UPDATEPAGETABLE {
                PageTableLevel: key.0 as u32,
                pPageTableEntries: entries.as_ptr().cast_mut(),
                StartIndex: 0,
                NumPageTableEntries: entries.len() as u32,
                hProcess: hkmd,
                UpdateMode: dxgk_sys::DXGK_PAGETABLEUPDATE_CPU_VIRTUAL,
                FirstPteVirtualAddress: key.1 * self.geo.table_span(key.0),
                ..Default::default()
            };
            upt.PageTableAddress.u.CpuVirtual = table.cast();
            upt.Flags.set_InitialUpdate(1);
            let mut args = DXGKARG_BUILDPAGINGBUFFER {
                pDmaBuffer: std::ptr::null_mut(),
                DmaSize: 0,
                Operation: dxgk_sys::DXGK_OPERATION_UPDATE_PAGE_TABLE,
                hSystemContext: hctx,
                ..Default::default()
            };
            args.u.UpdatePageTable = upt;
            let status = self.build_call(&mut args);
            self.stats.ptes_written += entries.len() as u64;
            if !self.m.check_build_paging_buffer_status(status) {
                return Err(VidmmError::BuildPagingBuffer {
                    operation: args.Operation.0,
                    status,
                });
            }
            if status != dxgk_sys::STATUS_SUCCESS {
                // With no DMA buffer there is nothing to submit: the driver must write at once.
                self.m.state.report(Finding::here(
                    Rule::DdiProtocol,
                    "DxgkDdiBuildPagingBuffer",
                    format!(
                        "CPU_VIRTUAL UpdatePageTable with pDmaBuffer NULL returned {:#010x}",
                        status as u32
                    ),
                ));
                return Err(VidmmError::BuildPagingBuffer {
                    operation: args.Operation.0,
                    status,
                });
            }
        }
        let p = self.procs[0].take().expect("paging process");
        let r = self.set_root(&p);
        self.procs[0] = Some(p);
        r
    }

    /// After the adapter powers up (DxgkDdiSetPowerState D0), VidMm re-initializes the system
    /// paging process's page tables with CPU_VIRTUAL updates, as Windows does: here the upper
    /// levels (whose contents are fixed), then SetRootPageTable.
    pub fn power_up(&mut self) -> VidmmResult<()> {
        let tables = std::mem::take(&mut self.paging_upper_tables);
        let r = self.write_paging_tables(&tables);
        self.paging_upper_tables = tables;
        r
    }

    fn proc_mut(&mut self, i: usize) -> &mut Process {
        self.procs[i].as_mut().expect("live process")
    }

    fn proc_ref(&self, i: usize) -> &Process {
        self.procs[i].as_ref().expect("live process")
    }

    fn user(&self, p: ProcessId) -> VidmmResult<usize> {
        match self.procs.get(p.0) {
            Some(Some(_)) if p.0 > 0 => Ok(p.0),
            _ => Err(bad(format!("{p:?} is not a live process"))),
        }
    }

    // ---- BuildPagingBuffer ----------------------------------------------------------------

    fn build_call(&mut self, args: &mut DXGKARG_BUILDPAGINGBUFFER) -> NTSTATUS {
        let f = self
            .ddi
            .DxgkDdiBuildPagingBuffer
            .expect("GpuMmu drivers register DxgkDdiBuildPagingBuffer");
        self.stats.build_calls += 1;
        let h = self.hadapter;
        let span = crate::trace::begin(&self.m.state);
        // SAFETY: the miniport's DDI with its adapter handle; the DMA buffer (or NULL), entry
        // arrays and table addresses inside `args` are valid for the call.
        let status = self.call("DxgkDdiBuildPagingBuffer", || unsafe { f(h, args) });
        let op = args.Operation.0;
        crate::trace::end(
            &self.m.state,
            span,
            Track::Paging,
            format!(
                "BuildPagingBuffer {}",
                crate::trace::paging_operation_name(op)
            ),
            || {
                vec![
                    ("operation", TraceValue::Int(op.into())),
                    ("multipass_offset", args.MultipassOffset.into()),
                    ("dma_size", args.DmaSize.into()),
                    ("status", crate::trace::status_value(status)),
                ]
            },
        );
        status
    }

    /// One operation into the paging buffer, with multipass.
    fn build(
        &mut self,
        operation: DXGK_BUILDPAGINGBUFFER_OPERATION,
        set: impl Fn(&mut DXGKARG_BUILDPAGINGBUFFER),
    ) -> VidmmResult<()> {
        let size = self.config.dma_buffer_size;
        let hctx = self.proc_ref(0).hcontext;
        let mut multipass = 0u32;
        let mut busy = 0;
        loop {
            let base = self.buffer.as_ref().expect("paging buffer").cpu_address(0);
            let offset = self.write_offset;
            let mut args = DXGKARG_BUILDPAGINGBUFFER {
                // SAFETY: `offset <= size`: inside (or one past) the buffer.
                pDmaBuffer: unsafe { base.add(offset as usize) }.cast(),
                DmaSize: size - offset,
                Operation: operation,
                MultipassOffset: multipass,
                hSystemContext: hctx,
                DmaBufferGpuVirtualAddress: PAGING_BUFFER_BASE,
                DmaBufferWriteOffset: offset,
                ..Default::default()
            };
            set(&mut args);
            let status = self.build_call(&mut args);
            if !self.m.check_build_paging_buffer_status(status) {
                return Err(VidmmError::BuildPagingBuffer {
                    operation: operation.0,
                    status,
                });
            }
            let end = (args.pDmaBuffer as usize).wrapping_sub(base as usize);
            if end < offset as usize || end > size as usize {
                self.m.state.report(Finding::here(
                    Rule::DdiProtocol,
                    "DxgkDdiBuildPagingBuffer",
                    format!(
                        "pDmaBuffer moved to offset {end:#x}, outside [{offset:#x}, {size:#x}]"
                    ),
                ));
                return Err(VidmmError::BuildPagingBuffer {
                    operation: operation.0,
                    status,
                });
            }
            self.write_offset = end as u32;
            if status == dxgk_sys::STATUS_SUCCESS {
                return Ok(());
            }
            if status == dxgk_sys::STATUS_GRAPHICS_ALLOCATION_BUSY {
                // Everything is idle between operations: retry a bounded number of times.
                busy += 1;
                if busy > 3 {
                    return Err(VidmmError::BuildPagingBuffer {
                        operation: operation.0,
                        status,
                    });
                }
                continue;
            }
            // INSUFFICIENT_DMA_BUFFER: submit what is there and resume.
            self.stats.multipass_resumes += 1;
            if self.write_offset == 0 {
                return Err(VidmmError::NoProgress {
                    operation: operation.0,
                });
            }
            if !self.paging_ready {
                // The aperture mappings of the paging buffer and the paging process's tables
                // come before anything can run them.
                return Err(VidmmError::Unsupported(format!(
                    "a second pass of {} before the paging process can run a paging buffer",
                    crate::trace::paging_operation_name(operation.0)
                )));
            }
            multipass = args.MultipassOffset;
            self.submit_paging()?;
        }
    }

    /// Runs `batch` (paging operations ending in [`Vidmm::submit_paging`]); if it fails, the
    /// partly built paging buffer is discarded so the next batch starts from an empty one.
    fn paging_batch(
        &mut self,
        batch: impl FnOnce(&mut Self) -> VidmmResult<()>,
    ) -> VidmmResult<()> {
        let r = batch(self);
        if r.is_err() {
            self.write_offset = 0;
        }
        r
    }

    /// Submits the paging buffer (if anything is in it) and waits for it.
    fn submit_paging(&mut self) -> VidmmResult<()> {
        if self.write_offset == 0 {
            return Ok(());
        }
        let len = self.write_offset;
        self.write_offset = 0;
        self.stats.paging_submissions += 1;
        let ctx = self.proc_ref(0).hcontext;
        let span = crate::trace::begin(&self.m.state);
        let fence = self.next_fence;
        let r = self.submit(ctx, PAGING_BUFFER_BASE, len);
        crate::trace::end(
            &self.m.state,
            span,
            Track::Paging,
            "paging submission",
            || {
                vec![
                    ("fence", fence.into()),
                    ("bytes", len.into()),
                    ("completed", TraceValue::Int(i64::from(r.is_ok()))),
                ]
            },
        );
        r
    }

    /// Submits a user DMA buffer and returns its fence without waiting: the work stays queued
    /// on the device (for "remove while work is pending" scenarios).
    pub fn submit_user_nowait(&mut self, p: ProcessId, gpu_va: u64, len: u32) -> VidmmResult<u32> {
        let i = self.user(p)?;
        self.stats.user_submissions += 1;
        let ctx = self.proc_ref(i).hcontext;
        self.enqueue(ctx, gpu_va, len)
    }

    fn submit(&mut self, context: HANDLE, va: u64, len: u32) -> VidmmResult<()> {
        let fence = self.enqueue(context, va, len)?;
        self.wait(fence)
    }

    /// DxgkDdiSubmitCommandVirtual with a new fence id; returns the fence.
    fn enqueue(&mut self, context: HANDLE, va: u64, len: u32) -> VidmmResult<u32> {
        let f = self
            .ddi
            .DxgkDdiSubmitCommandVirtual
            .ok_or_else(|| VidmmError::Unsupported("no DxgkDdiSubmitCommandVirtual".into()))?;
        let fence = self.next_fence;
        self.next_fence += 1;
        let args = dxgk_sys::DXGKARG_SUBMITCOMMANDVIRTUAL {
            hContext: context,
            DmaBufferVirtualAddress: va,
            DmaBufferSize: len,
            SubmissionFenceId: fence,
            ..Default::default()
        };
        let h = self.hadapter;
        // SAFETY: the miniport's DDI with its adapter handle and a valid argument block.
        let s = self.call("DxgkDdiSubmitCommandVirtual", || unsafe { f(h, &args) });
        Self::check("DxgkDdiSubmitCommandVirtual", s)?;
        Ok(fence)
    }

    /// Services the device until `fence` completes (bounded), a fault is reported or the bound
    /// is hit.
    fn wait(&mut self, fence: u32) -> VidmmResult<()> {
        for round in 0..=self.config.max_service_rounds {
            let new = self
                .m
                .interrupt_notifications_since(self.id, self.seen_notifications);
            self.seen_notifications += new.len();
            let mut faulted = None;
            for n in new {
                if n.kind == dxgk_sys::DXGK_INTERRUPT_DMA_COMPLETED.0 {
                    self.last_completed = self.last_completed.max(n.fence);
                } else if n.kind == dxgk_sys::DXGK_INTERRUPT_DMA_FAULTED.0
                    || n.kind == dxgk_sys::DXGK_INTERRUPT_DMA_PAGE_FAULTED.0
                {
                    // A page fault is recovered like any fault here: rgpu always asks for an
                    // engine reset, which this VidMm models with the TDR sequence.
                    faulted = Some(n);
                }
            }
            if let Some(n) = faulted {
                self.stats.device_faults += 1;
                self.reset_adapter()?;
                return Err(VidmmError::DeviceFault {
                    fence,
                    faulted_fence: n.fence,
                    status: n.status,
                    notification: n,
                });
            }
            if self.last_completed >= fence {
                return Ok(());
            }
            if round < self.config.max_service_rounds {
                self.m.service(self.id);
            }
        }
        self.m.state.report(Finding::here(
            Rule::PossibleHang,
            "DxgkDdiSubmitCommandVirtual",
            format!(
                "fence {fence} not reported by DxgkCbNotifyInterrupt(DMA_COMPLETED) after {} device synchronizations (TDR)",
                self.config.max_service_rounds
            ),
        ));
        self.reset_adapter()?;
        Err(VidmmError::Hang { fence })
    }

    /// TDR: DxgkDdiResetFromTimeout, then DxgkDdiRestartFromTimeout. Abandons the paging buffer.
    fn reset_adapter(&mut self) -> VidmmResult<()> {
        self.stats.resets += 1;
        self.write_offset = 0;
        let h = self.hadapter;
        if let Some(f) = self.ddi.DxgkDdiResetFromTimeout {
            // SAFETY: the miniport's DDI with its adapter handle.
            let s = self.call("DxgkDdiResetFromTimeout", || unsafe { f(h) });
            Self::check("DxgkDdiResetFromTimeout", s)?;
        }
        if let Some(f) = self.ddi.DxgkDdiRestartFromTimeout {
            // SAFETY: the miniport's DDI with its adapter handle.
            let s = self.call("DxgkDdiRestartFromTimeout", || unsafe { f(h) });
            Self::check("DxgkDdiRestartFromTimeout", s)?;
        }
        // Notifications of the dead submissions are not waited for.
        self.seen_notifications = self.m.interrupt_notifications(self.id).len();
        Ok(())
    }

    // ---- page-table updates ---------------------------------------------------------------

    /// UPDATE_PAGE_TABLE (GPU_VIRTUAL) of the level-`level` entries of process `p` starting at
    /// the one for `va`, split at table boundaries.
    fn update_entries(
        &mut self,
        p: usize,
        level: usize,
        va: u64,
        entries: Entries<'_>,
    ) -> VidmmResult<()> {
        self.update_walk(p, level, Update::default(), va, entries)
    }

    /// [`Vidmm::update_entries`] as `how` says: one UPDATE_PAGE_TABLE per table the walk
    /// ([`Geometry::runs`]) covers.
    fn update_walk(
        &mut self,
        p: usize,
        level: usize,
        how: Update,
        va: u64,
        entries: Entries<'_>,
    ) -> VidmmResult<()> {
        let Update { pages_64k, initial } = how;
        let hkmd = self.proc_ref(p).hkmd;
        for run in self.geo.runs(level, pages_64k, va, entries.len())? {
            let at = run.va;
            let table_va = self
                .proc_ref(p)
                .tables
                .get(&run.table)
                .map(|t| t.window_va)
                .ok_or_else(|| bad(format!("no level-{level} table for VA {at:#x}")))?;
            let (ptr, repeat) = match entries {
                Entries::Slice(s) => (s[run.offset as usize..].as_ptr(), false),
                Entries::Repeat(ref pte, _) => (pte as *const DXGK_PTE, true),
            };
            let mut upt = dxgk_sys::DXGK_BUILDPAGINGBUFFER_UPDATEPAGETABLE {
                PageTableLevel: level as u32,
                pPageTableEntries: ptr.cast_mut(),
                StartIndex: run.index,
                NumPageTableEntries: run.count as u32,
                hProcess: hkmd,
                UpdateMode: dxgk_sys::DXGK_PAGETABLEUPDATE_GPU_VIRTUAL,
                FirstPteVirtualAddress: at,
                ..Default::default()
            };
            upt.PageTableAddress.u.GpuVirtual = table_va;
            upt.Flags.set_Repeat(u32::from(repeat));
            upt.Flags.set_Use64KBPages(u32::from(pages_64k));
            upt.Flags.set_InitialUpdate(u32::from(initial));
            self.build(dxgk_sys::DXGK_OPERATION_UPDATE_PAGE_TABLE, |a| {
                a.u.UpdatePageTable = upt;
            })?;
            self.stats.ptes_written += run.count;
            if pages_64k {
                self.stats.ptes_64k_written += run.count;
            }
        }
        Ok(())
    }

    fn flush_tlb(&mut self, p: usize, start: u64, end: u64) -> VidmmResult<()> {
        let proc_ = self.proc_ref(p);
        let mut f = dxgk_sys::DXGK_BUILDPAGINGBUFFER_FLUSHTLB {
            hProcess: proc_.hkmd,
            StartVirtualAddress: start,
            EndVirtualAddress: end,
            ..Default::default()
        };
        let root = proc_.tables[&(self.geo.root(), 0)].address();
        f.RootPageTableAddress.SegmentId = root.segment;
        f.RootPageTableAddress.SegmentOffset = root.page << 12;
        self.build(dxgk_sys::DXGK_OPERATION_FLUSH_TLB, |a| a.u.FlushTlb = f)
    }

    /// Creates (maps in the window, initializes to invalid, links into the parent) every table
    /// user process `p` lacks for `[va, va + len)`; `root` also creates the root. Appends to the
    /// paging buffer.
    fn ensure_tables(&mut self, p: usize, va: u64, len: u64, root: bool) -> VidmmResult<()> {
        let mut missing = Vec::new();
        if root {
            missing.push((self.geo.root(), 0));
        }
        if len > 0 {
            for level in (0..self.geo.root()).rev() {
                let tables = &self.proc_ref(p).tables;
                missing.extend(
                    self.geo
                        .tables_covering(level, va, len)
                        .map(|k| (level, k))
                        .filter(|key| !tables.contains_key(key)),
                );
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let mut created = Vec::new();
        for &key in &missing {
            match self.new_table(p == 0) {
                Ok(mut t) => {
                    if key.0 == 0 && p != 0 {
                        t.leaf = Some(LeafBook {
                            pages_64k: false,
                            slots: vec![None; self.geo.entries(0) as usize],
                        });
                    }
                    created.push((key, t));
                }
                Err(e) => {
                    // The batch is discarded: the tables' MAP operations never ran.
                    for (_, t) in created {
                        let _ = self.free_table_with(t, false);
                    }
                    return Err(e);
                }
            }
        }
        let window: Vec<(u64, Target)> = created
            .iter()
            .map(|(_, t)| (t.window_va, t.address()))
            .collect();
        for (key, t) in created {
            self.proc_mut(p).tables.insert(key, t);
        }
        // 1. Map the new tables in the paging process's page-table window, flush its TLB.
        let (mut lo, mut hi) = (u64::MAX, 0);
        for &(wva, at) in &window {
            let pte = target_pte(at);
            self.update_entries(0, 0, wva, Entries::Slice(&[pte]))?;
            lo = lo.min(wva);
            hi = hi.max(wva + PAGE64);
        }
        self.flush_tlb(0, lo, hi)?;
        // 2. Initialize each new table to invalid (through the window).
        for &(level, key) in &missing {
            let first_va = key * self.geo.table_span(level);
            let n = u64::from(self.geo.entries(level));
            let initial = Update {
                pages_64k: false,
                initial: true,
            };
            self.update_walk(
                p,
                level,
                initial,
                first_va,
                Entries::Repeat(invalid_pte(), n),
            )?;
        }
        // 3. Link every new non-root table into its parent.
        for &(level, key) in &missing {
            if level == self.geo.root() {
                continue;
            }
            let at = self.proc_ref(p).tables[&(level, key)].address();
            let va = key * self.geo.table_span(level);
            let pte = table_pte(at.page, at.segment);
            self.update_entries(p, level + 1, va, Entries::Slice(&[pte]))?;
        }
        Ok(())
    }

    /// Writes leaf entries of `p` for `[va, va + pages.len() pages)`: `Some(page)` maps that
    /// logical page, `None` invalidates. Appends to the paging buffer. In a user process, each
    /// leaf table is written in its kind, which may change (see the module documentation).
    fn write_leaves(&mut self, p: usize, va: u64, pages: &[Option<Target>]) -> VidmmResult<()> {
        if p == 0 {
            // The paging process maps its windows with 4 KiB pages.
            let ptes: Vec<DXGK_PTE> = pages
                .iter()
                .map(|pg| pg.map_or_else(invalid_pte, target_pte))
                .collect();
            return self.update_entries(p, 0, va, Entries::Slice(&ptes));
        }
        for run in self.geo.runs(0, false, va, pages.len() as u64)? {
            let (from, n) = (run.offset as usize, run.count as usize);
            self.write_leaf_table(p, run, &pages[from..from + n])?;
        }
        Ok(())
    }

    /// [`Vidmm::write_leaves`] within the one leaf table of user process `p` that `run` (of a
    /// 4 KiB-entry walk) covers.
    fn write_leaf_table(
        &mut self,
        p: usize,
        run: TableRun,
        pages: &[Option<Target>],
    ) -> VidmmResult<()> {
        let (key, va) = (run.table, run.va);
        let region = key.1 * self.geo.table_span(0);
        let first = run.index as usize;
        let (table_page, book) = self
            .proc_ref(p)
            .tables
            .get(&key)
            .and_then(|t| Some((t.address(), t.leaf.clone()?)))
            .ok_or_else(|| bad(format!("no leaf table for VA {va:#x}")))?;
        let mut slots = book.slots;
        slots[first..first + pages.len()].copy_from_slice(pages);
        let pages_64k =
            self.geo.entries_64k.is_some() && slots.chunks(PAGES_PER_64K).all(is_64k_group);
        if pages_64k == book.pages_64k {
            self.write_leaf_entries(p, region, &slots, first..first + pages.len(), pages_64k)?;
        } else {
            // Another kind: every entry in the new kind, the level-1 entry, and a flush of the
            // whole region (the device may cache the old kind of the table).
            self.write_leaf_entries(p, region, &slots, 0..slots.len(), pages_64k)?;
            let mut link = table_pte(table_page.page, table_page.segment);
            link.set_PageTablePageSize(u64::from(pages_64k));
            self.update_entries(p, 1, region, Entries::Slice(&[link]))?;
            self.flush_tlb(p, region, region + self.geo.table_span(0))?;
            self.stats.leaf_kind_changes += 1;
        }
        if let Some(book) = self
            .proc_mut(p)
            .tables
            .get_mut(&key)
            .and_then(|t| t.leaf.as_mut())
        {
            *book = LeafBook { pages_64k, slots };
        }
        Ok(())
    }

    /// UPDATE_PAGE_TABLE of the entries of one leaf table (at `region`) that cover the 4 KiB
    /// `slots[range]`, written as `slots` says, in the table's kind.
    fn write_leaf_entries(
        &mut self,
        p: usize,
        region: u64,
        slots: &[Option<Target>],
        range: std::ops::Range<usize>,
        pages_64k: bool,
    ) -> VidmmResult<()> {
        let pte_of = |s: &Option<Target>| s.map_or_else(invalid_pte, target_pte);
        if !pages_64k {
            let ptes: Vec<DXGK_PTE> = slots[range.clone()].iter().map(pte_of).collect();
            return self.update_entries(
                p,
                0,
                region + range.start as u64 * PAGE64,
                Entries::Slice(&ptes),
            );
        }
        let groups = range.start / PAGES_PER_64K..range.end.div_ceil(PAGES_PER_64K);
        let ptes: Vec<DXGK_PTE> = groups
            .clone()
            .map(|g| pte_of(&slots[g * PAGES_PER_64K]))
            .collect();
        let first_va = region + (groups.start * PAGES_PER_64K) as u64 * PAGE64;
        let how = Update {
            pages_64k: true,
            initial: false,
        };
        self.update_walk(p, 0, how, first_va, Entries::Slice(&ptes))
    }

    fn invalidate_leaves(&mut self, p: usize, va: u64, pages: u64) -> VidmmResult<()> {
        self.update_entries(p, 0, va, Entries::Repeat(invalid_pte(), pages))
    }

    fn check_va(&self, va: u64, len: u64) -> VidmmResult<()> {
        let limit = 1u64.checked_shl(self.geo.va_bits).unwrap_or(u64::MAX);
        if !va.is_multiple_of(PAGE64) || len == 0 || va.checked_add(len).is_none_or(|e| e > limit) {
            return Err(bad(format!(
                "VA range {va:#x}+{len:#x} is unaligned, empty or beyond {} bits",
                self.geo.va_bits
            )));
        }
        Ok(())
    }

    // ---- public API -----------------------------------------------------------------------

    /// A user process: DxgkDdiCreateProcess, a device, a context, its root table (mapped in
    /// the paging process and initialized through a paging buffer), DxgkDdiSetRootPageTable.
    pub fn create_process(&mut self) -> VidmmResult<ProcessId> {
        let p = self.create_objects(false)?;
        let i = self.procs.len();
        self.procs.push(Some(p));
        let r = self
            .ensure_tables(i, 0, 0, true)
            .and_then(|()| self.submit_paging());
        let r = r.and_then(|()| {
            let p = self.procs[i].take().expect("process");
            let r = self.set_root(&p);
            self.procs[i] = Some(p);
            r
        });
        match r {
            Ok(()) => Ok(ProcessId(i)),
            Err(e) => {
                let _ = self.destroy_index(i);
                Err(e)
            }
        }
    }

    /// Destroys a user process: its mappings stay in the allocations' books no longer; its
    /// tables leave the page-table window (invalidated, TLB flushed) and are freed; context,
    /// device and process are destroyed.
    /// Dxgkrnl's handle of `p` (the hDxgkProcess VidMm passed to DxgkDdiCreateProcess).
    pub fn dxgk_process_handle(&self, p: ProcessId) -> VidmmResult<HANDLE> {
        let i = self.user(p)?;
        Ok(self.proc_ref(i).hdxgk)
    }

    pub fn destroy_process(&mut self, p: ProcessId) -> VidmmResult<()> {
        let i = self.user(p)?;
        self.destroy_index(i)
    }

    fn destroy_index(&mut self, i: usize) -> VidmmResult<()> {
        let windows: Vec<u64> = self
            .proc_ref(i)
            .tables
            .values()
            .map(|t| t.window_va)
            .collect();
        let mut r = Ok(());
        if !windows.is_empty() && !self.destroyed {
            r = (|| {
                for &w in &windows {
                    self.invalidate_leaves(0, w, 1)?;
                }
                let lo = windows.iter().min().copied().unwrap_or(0);
                let hi = windows.iter().max().copied().unwrap_or(0) + PAGE64;
                self.flush_tlb(0, lo, hi)?;
                self.submit_paging()
            })();
        }
        let p = self.procs[i].take().expect("process");
        self.destroy_objects(&p);
        for (_, t) in p.tables {
            r = r.and(self.free_table(t));
        }
        r
    }

    /// An allocation of `bytes` (rounded up to 4 KiB) of zeroed system memory, mapped in the
    /// adapter's IOMMU (VidMm-owned; see [`VidmmMemory`]).
    pub fn allocate(&mut self, bytes: u64) -> VidmmResult<AllocId> {
        self.allocate_placed(AllocSpec::system(bytes))
    }

    /// An allocation placed as `spec` says: in system memory as [`Vidmm::allocate`], or in an
    /// aperture segment — zeroed system memory (4 KiB pages; one logically contiguous range
    /// on the remapping path when [`VidmmConfig::contiguous_adls`]) mapped into a range of the
    /// aperture with MAP_APERTURE_SEGMENT / MAP_APERTURE_SEGMENT2 (submitted and waited for),
    /// its PTEs then naming aperture pages. A segment VidMm cannot map
    /// ([`Vidmm::is_aperture`] false) holds nothing: [`VidmmError::Unsupported`].
    pub fn allocate_placed(&mut self, spec: AllocSpec) -> VidmmResult<AllocId> {
        if spec.bytes == 0 {
            return Err(bad("empty allocation"));
        }
        let aperture = self.apertures.iter().any(|a| a.id == spec.segment);
        if aperture && !self.is_aperture(spec.segment) {
            return Err(VidmmError::Unsupported(format!(
                "segment {}: {:?}",
                spec.segment, self.aperture_mode
            )));
        }
        let pages = spec.bytes.div_ceil(PAGE64) as usize;
        let segment = if aperture { spec.segment } else { 0 };
        let id = AllocId(self.next_alloc);
        self.next_alloc += 1;
        self.allocs.insert(
            id,
            Allocation {
                bytes: pages as u64 * PAGE64,
                backing: None,
                paged_out: None,
                parked: None,
                segment,
                h_allocation: spec.h_allocation,
                map_cpu_visible: spec.map_cpu_visible,
                aperture: None,
            },
        );
        if let Err(e) = self.back(id) {
            self.allocs.remove(&id);
            return Err(e);
        }
        Ok(id)
    }

    /// Gives allocation `a` (without backing) new backing through [`Vidmm::acquire`] and, in an
    /// aperture segment, its aperture mapping (submitted). On failure `a` stays without
    /// backing and nothing leaks.
    fn back(&mut self, a: AllocId) -> VidmmResult<()> {
        let x = self.alloc_ref(a)?;
        let (pages, segment) = ((x.bytes / PAGE64) as usize, x.segment);
        let mem = self.acquire(pages, segment != 0)?;
        self.install_backing(a, mem).map_err(|failed| {
            let (e, mem) = *failed;
            self.m.vidmm_free(mem);
            e
        })
    }

    /// Makes `mem` the backing of `a` (without backing): in an aperture segment, first maps it
    /// into a new aperture range (MAP_APERTURE_SEGMENT(2), submitted). On failure nothing of
    /// the mapping is left and `mem` is handed back.
    fn install_backing(
        &mut self,
        a: AllocId,
        mem: VidmmMemory,
    ) -> Result<(), Box<(VidmmError, VidmmMemory)>> {
        let (segment, h, cpu) = match self.alloc_ref(a) {
            Ok(x) => (x.segment, x.h_allocation, x.map_cpu_visible),
            Err(e) => return Err(Box::new((e, mem))),
        };
        let mut map = None;
        if segment != 0 {
            let view = PagesOf::of(&mem);
            let r = self.paging_batch(|v| {
                let m = v.map_aperture(&view, segment, h, cpu)?;
                map = Some(m);
                v.submit_paging()
            });
            if let Err(e) = r {
                if let Some(m) = map {
                    self.drop_aperture(m);
                }
                return Err(Box::new((e, mem)));
            }
        }
        if let Some(x) = self.allocs.get_mut(&a) {
            x.backing = Some(mem);
            x.aperture = map;
        }
        Ok(())
    }

    /// Takes `a`'s backing away: its aperture range unmapped (UNMAP_APERTURE_SEGMENT,
    /// submitted) when it has one, then the memory freed. The allocation stays.
    fn unback(&mut self, a: AllocId) -> VidmmResult<()> {
        let Some(x) = self.allocs.get_mut(&a) else {
            return Ok(());
        };
        let (map, mem, h) = (x.aperture.take(), x.backing.take(), x.h_allocation);
        let r = match map {
            Some(m) => self.unmap_aperture(m, h),
            None => Ok(()),
        };
        if let Some(mem) = mem {
            self.m.vidmm_free(mem);
        }
        r
    }

    /// Backing for an allocation of `pages` pages: 64 KiB runs when the geometry has 64 KiB
    /// PTEs and the size allows, else 4 KiB pages (the path [`Vidmm::allocate`] and
    /// [`Vidmm::make_resident`] share); for the aperture (`aperture`) 4 KiB pages, logically
    /// contiguous on the remapping path when [`VidmmConfig::contiguous_adls`].
    /// [`Vidmm::fail_next_acquire`] fails it once.
    fn acquire(&mut self, pages: usize, aperture: bool) -> VidmmResult<VidmmMemory> {
        if std::mem::take(&mut self.fail_acquire) {
            return Err(VidmmError::OutOfMemory);
        }
        if aperture {
            let contiguous = self.config.contiguous_adls
                && matches!(self.aperture_mode, ApertureMode::Adl { .. });
            return if contiguous {
                self.m.vidmm_allocate_contiguous(self.id, pages, true)
            } else {
                self.m.vidmm_allocate(self.id, pages, true)
            }
            .ok_or(VidmmError::OutOfMemory);
        }
        if self.geo.entries_64k.is_some() && pages.is_multiple_of(PAGES_PER_64K) {
            self.m
                .vidmm_allocate_64k(self.id, pages, true)
                .ok_or(VidmmError::OutOfMemory)
        } else {
            self.vidmm_pages(pages, true)
        }
    }

    /// Makes the next backing acquisition ([`Vidmm::allocate`], [`Vidmm::make_resident`])
    /// fail with [`VidmmError::OutOfMemory`], as a full segment would.
    pub fn fail_next_acquire(&mut self) {
        self.fail_acquire = true;
    }

    fn alloc_ref(&self, a: AllocId) -> VidmmResult<&Allocation> {
        self.allocs
            .get(&a)
            .ok_or_else(|| bad(format!("{a:?} is not a live allocation")))
    }

    fn backing(&self, a: AllocId) -> VidmmResult<&VidmmMemory> {
        self.alloc_ref(a)?
            .backing
            .as_ref()
            .ok_or(VidmmError::Evicted(a))
    }

    /// Size of an allocation in bytes (whole pages).
    pub fn size_of(&self, a: AllocId) -> VidmmResult<u64> {
        Ok(self.alloc_ref(a)?.bytes)
    }

    /// The logical pages backing `a` (what its PTEs point at).
    pub fn logical_pages(&self, a: AllocId) -> VidmmResult<Vec<u64>> {
        Ok(self.backing(a)?.logical_pages().to_vec())
    }

    /// Maps all of `a` at `gpu_va` in process `p`: UPDATE_PAGE_TABLE for every level that needs
    /// entries (creating tables), then FLUSH_TLB, in paging buffers; waits for completion.
    pub fn map(&mut self, p: ProcessId, a: AllocId, gpu_va: u64) -> VidmmResult<()> {
        self.map_with(p, a, gpu_va, true)
    }

    /// [`Vidmm::map`] with the final FLUSH_TLB optional — `flush_tlb: false` breaks the
    /// GpuMmu rule on purpose (to show that the device's TLB keeps stale translations).
    pub fn map_with(
        &mut self,
        p: ProcessId,
        a: AllocId,
        gpu_va: u64,
        flush_tlb: bool,
    ) -> VidmmResult<()> {
        let pages = self.alloc_ref(a)?.bytes / PAGE64;
        self.map_range(p, a, gpu_va, 0, pages, flush_tlb)
    }

    /// Maps pages `[first, first + pages)` of `a` at `gpu_va` in process `p` (a partial map):
    /// UPDATE_PAGE_TABLE, then FLUSH_TLB unless `flush_tlb` is false. A range outside the
    /// allocation is [`VidmmError::InvalidArgument`].
    pub fn map_range(
        &mut self,
        p: ProcessId,
        a: AllocId,
        gpu_va: u64,
        first: u64,
        pages: u64,
        flush_tlb: bool,
    ) -> VidmmResult<()> {
        let i = self.user(p)?;
        let total = self.alloc_ref(a)?.bytes / PAGE64;
        if pages == 0 || first.checked_add(pages).is_none_or(|e| e > total) {
            return Err(bad(format!(
                "{a:?}: pages {first}+{pages} outside its {total} pages"
            )));
        }
        let ptes = self.range_ptes(a, first, pages)?;
        self.map_targets(i, gpu_va, &ptes, flush_tlb)?;
        self.proc_mut(i).mappings.push((a, gpu_va, first, pages));
        Ok(())
    }

    /// The PTE targets of pages `[first, first + pages)` of resident `a`: its aperture pages
    /// when it lives in an aperture segment, else its logical pages.
    fn range_ptes(&self, a: AllocId, first: u64, pages: u64) -> VidmmResult<Vec<Option<Target>>> {
        let x = self.alloc_ref(a)?;
        let backing = self.backing(a)?;
        Ok((first..first + pages)
            .map(|i| {
                Some(match &x.aperture {
                    Some(m) => Target {
                        segment: m.segment,
                        page: m.first + i,
                    },
                    None => Target::system(backing.logical_page(i as usize)),
                })
            })
            .collect())
    }

    /// Every mapping of `a`: `(process index, gpu_va, first page, pages)`.
    fn mappings_of(&self, a: AllocId) -> Vec<(usize, u64, u64, u64)> {
        (1..self.procs.len())
            .filter_map(|i| self.procs[i].as_ref().map(|p| (i, p)))
            .flat_map(|(i, p)| {
                p.mappings
                    .iter()
                    .filter(move |m| m.0 == a)
                    .map(move |m| (i, m.1, m.2, m.3))
            })
            .collect()
    }

    /// Writes the leaf PTEs of `pages` pages at `gpu_va` of process index `i` to `ptes` (or
    /// invalidates them with `None`) and flushes the TLB, in one paging batch.
    fn rewrite(&mut self, i: usize, gpu_va: u64, ptes: &[Option<Target>]) -> VidmmResult<()> {
        let end = gpu_va + ptes.len() as u64 * PAGE64;
        self.paging_batch(|v| {
            v.write_leaves(i, gpu_va, ptes)?;
            v.flush_tlb(i, gpu_va, end)?;
            v.submit_paging()
        })
    }

    /// Writes leaf PTEs of process `p` for `[gpu_va, gpu_va + 4 KiB × pages.len())` directly:
    /// `Some(l)` points the page at logical page `l` (which need not belong to anything — the
    /// isolation tests point PTEs at pages the IOMMU does not map), `None` invalidates it.
    /// Creates tables as needed; FLUSH_TLB unless `flush_tlb` is false. Not tracked as a
    /// mapping.
    pub fn map_logical(
        &mut self,
        p: ProcessId,
        gpu_va: u64,
        pages: &[Option<u64>],
        flush_tlb: bool,
    ) -> VidmmResult<()> {
        let i = self.user(p)?;
        let pages: Vec<Option<Target>> = pages.iter().map(|p| p.map(Target::system)).collect();
        self.map_targets(i, gpu_va, &pages, flush_tlb)
    }

    /// [`Vidmm::map_logical`] of process index `i` with PTE targets of any segment.
    fn map_targets(
        &mut self,
        i: usize,
        gpu_va: u64,
        pages: &[Option<Target>],
        flush_tlb: bool,
    ) -> VidmmResult<()> {
        let len = pages.len() as u64 * PAGE64;
        self.check_va(gpu_va, len)?;
        self.paging_batch(|v| {
            v.ensure_tables(i, gpu_va, len, false)?;
            v.write_leaves(i, gpu_va, pages)?;
            if flush_tlb {
                v.flush_tlb(i, gpu_va, gpu_va + len)?;
            }
            v.submit_paging()
        })
    }

    /// Unmaps `a` from `gpu_va` in process `p`: invalid PTEs, FLUSH_TLB.
    pub fn unmap(&mut self, p: ProcessId, a: AllocId, gpu_va: u64) -> VidmmResult<()> {
        let i = self.user(p)?;
        let at = self
            .proc_ref(i)
            .mappings
            .iter()
            .position(|&m| (m.0, m.1) == (a, gpu_va))
            .ok_or_else(|| bad(format!("{a:?} is not mapped at {gpu_va:#x} in {p:?}")))?;
        let pages = self.proc_mut(i).mappings.remove(at).3;
        self.rewrite(i, gpu_va, &vec![None; pages as usize])
    }

    /// Whether `a` has backing (is resident).
    pub fn is_resident(&self, a: AllocId) -> VidmmResult<bool> {
        Ok(self.alloc_ref(a)?.backing.is_some())
    }

    /// Evicts `a` as VidMm does: its contents are paged out (VIRTUAL_TRANSFER) to a
    /// system-memory allocation, every mapping in every process has its PTEs invalidated (with
    /// FLUSH_TLB) but stays recorded, and the backing is released (unmapped from the IOMMU and
    /// freed). The allocation stays, without backing, until [`Vidmm::make_resident`]. If the
    /// page-out target cannot be had or the transfer fails, nothing changed.
    ///
    /// In an aperture segment the backing store is system memory already: the mappings' PTEs
    /// are invalidated, the aperture range is unmapped (UNMAP_APERTURE_SEGMENT) and the pages
    /// are kept, with no transfer (Windows unmaps an allocation evicted from an aperture).
    pub fn evict(&mut self, a: AllocId) -> VidmmResult<()> {
        self.backing(a)?;
        let (bytes, segment) = {
            let x = self.alloc_ref(a)?;
            (x.bytes, x.segment)
        };
        if segment != 0 {
            for (i, va, _, pages) in self.mappings_of(a) {
                self.rewrite(i, va, &vec![None; pages as usize])?;
            }
            let Some(x) = self.allocs.get_mut(&a) else {
                return Ok(());
            };
            let (map, h) = (x.aperture.take(), x.h_allocation);
            x.parked = x.backing.take();
            return match map {
                Some(m) => self.unmap_aperture(m, h),
                None => Ok(()),
            };
        }
        let staging = self.allocate(bytes)?;
        if let Err(e) = self.transfer(a, staging, bytes) {
            self.release(staging);
            return Err(e);
        }
        for (i, va, _, pages) in self.mappings_of(a) {
            self.rewrite(i, va, &vec![None; pages as usize])?;
        }
        if let Some(x) = self.allocs.get_mut(&a) {
            x.paged_out = Some(staging);
        }
        self.unback(a)
    }

    /// Makes evicted `a` resident again as VidMm does: new backing through the same path it
    /// was first made resident by, the paged-out contents transferred back (VIRTUAL_TRANSFER),
    /// then every recorded mapping's PTEs rewritten (UPDATE_PAGE_TABLE + FLUSH_TLB). An
    /// allocation evicted from an aperture segment gets its kept pages mapped into a new
    /// aperture range (MAP_APERTURE_SEGMENT(2)) instead, with no transfer. Returns
    /// whether anything was paged in (false: `a` was resident). Synchronous: the paging work
    /// is done on return. If the backing cannot be acquired or the transfer fails, `a` stays
    /// evicted with its paged-out contents and nothing is leaked.
    pub fn make_resident(&mut self, a: AllocId) -> VidmmResult<bool> {
        let x = self.alloc_ref(a)?;
        if x.backing.is_some() {
            return Ok(false);
        }
        if x.parked.is_some() {
            // Evicted from an aperture segment: map the kept pages into a new range.
            let mem = self.allocs.get_mut(&a).and_then(|x| x.parked.take());
            if let Some(mem) = mem {
                if let Err(failed) = self.install_backing(a, mem) {
                    let (e, mem) = *failed;
                    if let Some(x) = self.allocs.get_mut(&a) {
                        x.parked = Some(mem);
                    }
                    return Err(e);
                }
            }
            for (i, va, first, pages) in self.mappings_of(a) {
                let ptes = self.range_ptes(a, first, pages)?;
                self.rewrite(i, va, &ptes)?;
            }
            return Ok(true);
        }
        let (bytes, staging) = (x.bytes, x.paged_out);
        let staging = staging.ok_or_else(|| bad(format!("{a:?} has no paged-out contents")))?;
        self.back(a)?;
        if let Err(e) = self.transfer(staging, a, bytes) {
            let _ = self.unback(a);
            return Err(e);
        }
        if let Some(x) = self.allocs.get_mut(&a) {
            x.paged_out = None;
        }
        self.release(staging);
        for (i, va, first, pages) in self.mappings_of(a) {
            let ptes = self.range_ptes(a, first, pages)?;
            self.rewrite(i, va, &ptes)?;
        }
        Ok(true)
    }

    /// Drops allocation `a` and frees its backing, with no paging work (for an allocation
    /// nothing maps, like a page-out target).
    fn release(&mut self, a: AllocId) {
        if let Some(x) = self.allocs.remove(&a) {
            if let Some(m) = x.aperture {
                self.drop_aperture(m);
            }
            if let Some(mem) = x.backing {
                self.m.vidmm_free(mem);
            }
            if let Some(mem) = x.parked {
                self.m.vidmm_free(mem);
            }
            if let Some(staging) = x.paged_out {
                self.release(staging);
            }
        }
    }

    /// Frees `a`: every mapping still recorded is unmapped (PTEs invalidated, TLB flushed),
    /// its aperture range unmapped (UNMAP_APERTURE_SEGMENT), then its backing (or paged-out
    /// contents) freed.
    pub fn free(&mut self, a: AllocId) -> VidmmResult<()> {
        self.alloc_ref(a)?;
        let mut r = Ok(());
        for (i, va, _, _) in self.mappings_of(a) {
            r = r.and(self.unmap(ProcessId(i), a, va));
        }
        r = r.and(self.unback(a));
        self.release(a);
        r
    }

    /// The segment `a` is placed in: 0 for the implicit system-memory segment, else an
    /// aperture segment's id.
    pub fn segment_of(&self, a: AllocId) -> VidmmResult<u32> {
        Ok(self.alloc_ref(a)?.segment)
    }

    fn check_range(&self, a: AllocId, offset: u64, size: u64) -> VidmmResult<()> {
        let bytes = self.alloc_ref(a)?.bytes;
        if offset.checked_add(size).is_none_or(|e| e > bytes) {
            return Err(bad(format!(
                "{a:?}: range {offset:#x}+{size:#x} outside its {bytes:#x} bytes"
            )));
        }
        self.backing(a).map(|_| ())
    }

    /// Maps the pages of `a` covering `[offset, offset + size)` at `scratch_va` in the paging
    /// process; returns the VA of byte `offset` and the pages mapped.
    fn map_scratch(
        &mut self,
        a: AllocId,
        offset: u64,
        size: u64,
        scratch_va: u64,
    ) -> VidmmResult<(u64, u64)> {
        let first = offset / PAGE64;
        let last = (offset + size).div_ceil(PAGE64);
        let pages = self.range_ptes(a, first, last - first)?;
        self.write_leaves(0, scratch_va, &pages)?;
        Ok((scratch_va + offset % PAGE64, last - first))
    }

    /// VIRTUAL_FILL of `[offset, offset + size)` of `a` with the 32-bit `pattern` (offset and
    /// size multiples of 4): maps the range in the paging process's scratch window
    /// (UPDATE_PAGE_TABLE + FLUSH_TLB), fills, unmaps, in chunks of the window.
    pub fn fill(&mut self, a: AllocId, offset: u64, size: u64, pattern: u32) -> VidmmResult<()> {
        if !offset.is_multiple_of(4) || !size.is_multiple_of(4) {
            return Err(bad("fill offset and size must be multiples of 4"));
        }
        self.check_range(a, offset, size)?;
        let chunk_max = self.config.scratch_bytes - PAGE64;
        let mut done = 0;
        while done < size {
            let off = offset + done;
            let n = (size - done).min(chunk_max - off % PAGE64);
            self.paging_batch(|v| {
                let (va, pages) = v.map_scratch(a, off, n, SCRATCH_BASE)?;
                v.flush_tlb(0, SCRATCH_BASE, SCRATCH_BASE + pages * PAGE64)?;
                let f = dxgk_sys::DXGK_BUILDPAGINGBUFFER_FILLVIRTUAL {
                    AllocationOffsetInBytes: off,
                    FillSizeInBytes: n,
                    FillPattern: pattern,
                    DestinationVirtualAddress: va,
                    ..Default::default()
                };
                v.build(dxgk_sys::DXGK_OPERATION_VIRTUAL_FILL, |x| {
                    x.u.FillVirtual = f
                })?;
                v.invalidate_leaves(0, SCRATCH_BASE, pages)?;
                v.flush_tlb(0, SCRATCH_BASE, SCRATCH_BASE + pages * PAGE64)?;
                v.submit_paging()
            })?;
            done += n;
        }
        Ok(())
    }

    /// VIRTUAL_TRANSFER of all of `src` into `dst` (`size` bytes from offset 0).
    pub fn transfer(&mut self, src: AllocId, dst: AllocId, size: u64) -> VidmmResult<()> {
        self.transfer_at(src, 0, dst, 0, size)
    }

    /// VIRTUAL_TRANSFER of `size` bytes from `src` at `src_offset` to `dst` at `dst_offset`:
    /// both mapped in the scratch window (UPDATE_PAGE_TABLE + FLUSH_TLB), copied, unmapped, in
    /// chunks of half the window.
    pub fn transfer_at(
        &mut self,
        src: AllocId,
        src_offset: u64,
        dst: AllocId,
        dst_offset: u64,
        size: u64,
    ) -> VidmmResult<()> {
        self.check_range(src, src_offset, size)?;
        self.check_range(dst, dst_offset, size)?;
        if size == 0 {
            return Ok(());
        }
        let half = self.config.scratch_bytes / 2;
        let chunk_max = half - PAGE64;
        let mut done = 0;
        while done < size {
            let (so, d_o) = (src_offset + done, dst_offset + done);
            let n = (size - done)
                .min(chunk_max - so % PAGE64)
                .min(chunk_max - d_o % PAGE64);
            self.paging_batch(|v| {
                let (sva, sp) = v.map_scratch(src, so, n, SCRATCH_BASE)?;
                let (dva, dp) = v.map_scratch(dst, d_o, n, SCRATCH_BASE + half)?;
                let end = SCRATCH_BASE + half + dp * PAGE64;
                v.flush_tlb(0, SCRATCH_BASE, end)?;
                let t = dxgk_sys::DXGK_BUILDPAGINGBUFFER_TRANSFERVIRTUAL {
                    AllocationOffsetInBytes: d_o,
                    TransferSizeInBytes: n,
                    SourceVirtualAddress: sva,
                    DestinationVirtualAddress: dva,
                    ..Default::default()
                };
                v.build(dxgk_sys::DXGK_OPERATION_VIRTUAL_TRANSFER, |x| {
                    x.u.TransferVirtual = t;
                })?;
                v.invalidate_leaves(0, SCRATCH_BASE, sp)?;
                v.invalidate_leaves(0, SCRATCH_BASE + half, dp)?;
                v.flush_tlb(0, SCRATCH_BASE, end)?;
                v.submit_paging()
            })?;
            done += n;
        }
        Ok(())
    }

    /// CPU read of `len` bytes of `a` at `offset`.
    pub fn read(&self, a: AllocId, offset: u64, len: usize) -> VidmmResult<Vec<u8>> {
        self.check_range(a, offset, len as u64)?;
        let mut buf = vec![0u8; len];
        self.backing(a)?.read(offset as usize, &mut buf);
        Ok(buf)
    }

    /// CPU write of `data` into `a` at `offset` (e.g. a command buffer a UMD built).
    pub fn write(&self, a: AllocId, offset: u64, data: &[u8]) -> VidmmResult<()> {
        self.check_range(a, offset, data.len() as u64)?;
        self.backing(a)?.write(offset as usize, data);
        Ok(())
    }

    /// Submits a DMA buffer of `len` bytes at `gpu_va` in process `p` on its (non-system)
    /// context, as the scheduler does for a UMD's command buffer, and waits for it.
    pub fn submit_user(&mut self, p: ProcessId, gpu_va: u64, len: u32) -> VidmmResult<()> {
        let i = self.user(p)?;
        self.stats.user_submissions += 1;
        let ctx = self.proc_ref(i).hcontext;
        self.submit(ctx, gpu_va, len)
    }

    /// Destroys every process (user processes first, then the paging process) and frees all
    /// memory. Call before stopping the adapter.
    pub fn destroy(mut self) -> VidmmResult<()> {
        let r = self.teardown();
        self.destroyed = true;
        r
    }

    fn teardown(&mut self) -> VidmmResult<()> {
        let mut r = Ok(());
        for i in (1..self.procs.len()).rev() {
            if self.procs[i].is_some() {
                let x = self.destroy_index(i);
                if r.is_ok() {
                    r = x;
                }
            }
        }
        self.destroyed = true;
        if let Some(Some(p)) = self.procs.first_mut().map(Option::take) {
            self.destroy_objects(&p);
            for (_, t) in p.tables {
                if let Some(m) = t.aperture {
                    self.drop_aperture(m);
                }
                self.m.vidmm_free(t.mem);
            }
        }
        self.procs.clear();
        if let Some(m) = self.buffer_aperture.take() {
            self.drop_aperture(m);
        }
        if let Some(b) = self.buffer.take() {
            self.m.vidmm_free(b);
        }
        // Every allocation left, with no paging work (a page-out target goes with its owner).
        let allocs: Vec<AllocId> = self.allocs.keys().copied().collect();
        for a in allocs {
            self.release(a);
        }
        if let Some(d) = self.dummy.take() {
            self.m.vidmm_free(d);
        }
        r
    }
}

impl Drop for Vidmm {
    fn drop(&mut self) {
        if !self.destroyed {
            let _ = self.teardown();
        }
    }
}
