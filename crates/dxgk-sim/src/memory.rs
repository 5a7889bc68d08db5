//! Physical memory, MDLs, system-VA mappings and the IOMMU.
//!
//! # Model
//!
//! * **Physical frames.** Each allocation is ONE contiguous, page-aligned host region (so
//!   `MmMapLockedPagesSpecifyCache` can return its base as the system VA), but every page gets
//!   its own PFN, deliberately not consecutive (descending, stride 2), so a driver that assumes
//!   physical contiguity breaks. A PFN → host page map per machine resolves PFNs. Fresh pages are
//!   zeroed unless `MM_DONT_ZERO_ALLOCATION` (then [`FRESH_PAGE_FILL`]); freed pages are filled
//!   with [`FREED_PAGE_FILL`] before release. Nonpaged pool pages get PFNs on demand when the
//!   driver builds an MDL over them (`MmBuildMdlForNonPagedPool`).
//! * **What the MDL from `DxgkCbAllocatePagesForMdl` contains.** Its PFN array holds the
//!   **logical** page numbers the device must use: in [`IommuMode::Identity`] (WDDM 2.4
//!   isolation) logical == physical; in [`IommuMode::Remapped`] they come from a separate range
//!   starting at [`REMAPPED_LOGICAL_BASE`] and never equal a physical PFN (they are not
//!   consecutive either: descending, stride 2, holes unmapped). Microsoft documents
//!   that these MDLs are "mapped to the IOMMU for their whole lifetime" and that the device is
//!   programmed with the pages the MDL describes; how WDDM 3.0 remapping exposes logical pages
//!   through this (deprecated) path is not documented (ddi-reference §8 item 9). The simulator's
//!   rule for drivers is therefore: **device addresses come only from the MDL Dxgkrnl returned;
//!   CPU access only through `MmGetSystemAddressForMdlSafe`**. These MDLs are *not* pre-mapped to
//!   system VA (`MDL_MAPPED_TO_SYSTEM_VA` clear).
//! * **Driver-built MDLs** (IoAllocateMdl over pool + MmBuildMdlForNonPagedPool, then
//!   `DxgkCbMapMdlToIoMmu`): the IOMMU maps those pages at map time — identity: logical ==
//!   physical; remapped: a fresh logical range. *Limitation:* in remapped mode the driver cannot
//!   learn those logical addresses through the WDDM 2.4 interface (the callback returns only a
//!   handle), so only identity mode makes such mappings usable by a device.
//! * **`DxgkCbAllocateContiguousMemory`** returns only a kernel VA. Its pages get consecutive
//!   PFNs (it is contiguous) and are mapped in the IOMMU at identity (identity mode) or at a
//!   fresh logical range (remapped mode, where — *limitation* — the driver cannot discover it).
//! * **IOMMU.** One logical address space per adapter. Device DMA goes through [`Dma`]: an
//!   access to an unmapped logical page, or a write to a read-only one, records an
//!   [`IommuFault`] (and a [`Rule::IommuFault`] finding) and does not touch memory.

use std::alloc::{alloc, alloc_zeroed, dealloc, Layout};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;

use dxgk_sys::{BOOLEAN, CSHORT, IRP, KPROCESSOR_MODE, MDL, MEMORY_CACHING_TYPE, PVOID, ULONG};

use crate::dxgkrnl::AdapterId;
use crate::fault::inject;
use crate::machine::{current, IommuMode, Machine, MachineState};
use crate::ntoskrnl::irql::require_irql_at_most;
use crate::verifier::{driver_call_site, Finding, Rule};

/// 4 KiB.
pub const PAGE: usize = 4096;
/// First logical page number handed out in [`IommuMode::Remapped`] (logical address
/// 0x40_0000_0000).
pub const REMAPPED_LOGICAL_BASE: u64 = 0x40_0000_0000 >> 12;
/// 4 KiB pages in a 64 KiB page.
pub const PAGES_PER_64K: usize = 16;

/// `runs` runs of `run` consecutive page numbers from `start`, the runs in descending order with
/// a run-sized gap between them: contiguous where a 64 KiB page needs it, nowhere else.
fn scattered_runs(start: u64, runs: u64, run: u64) -> Vec<u64> {
    (0..runs)
        .flat_map(|k| {
            let base = start + 2 * run * (runs - 1 - k);
            base..base + run
        })
        .collect()
}

/// First physical page number the simulator hands out (1 MiB).
pub const FIRST_PHYSICAL_PFN: u64 = 0x100;
/// Physical memory per machine available to MDL and contiguous allocations (a test-scale
/// limit): beyond it the callbacks fail with STATUS_INSUFFICIENT_RESOURCES.
pub const PHYSICAL_MEMORY_LIMIT: usize = 1 << 30;
/// Largest `TotalBytes` DxgkCbAllocatePagesForMdl accepts (4 GiB − 4 KiB: MDL ByteCount is a
/// ULONG).
pub const MAX_MDL_BYTES: usize = (4 << 30) - PAGE;
/// Fill of fresh pages allocated with MM_DONT_ZERO_ALLOCATION.
pub const FRESH_PAGE_FILL: u8 = 0xC7;
/// Fill written over pages when they are freed.
pub const FREED_PAGE_FILL: u8 = 0xDE;

/// `MM_DONT_ZERO_ALLOCATION`.
pub const MM_DONT_ZERO_ALLOCATION: u32 = 0x1;
/// `MM_ALLOCATE_FULLY_REQUIRED` (Dxgkrnl always adds it).
pub const MM_ALLOCATE_FULLY_REQUIRED: u32 = 0x4;

const MDL_HEADER: usize = std::mem::size_of::<MDL>();

/// Why the IOMMU refused a device access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IommuFaultKind {
    /// No mapping for the logical page.
    NotMapped,
    /// A write to a page mapped read-only.
    ReadOnly,
}

/// A device access the IOMMU refused. The access had no effect on memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IommuFault {
    pub adapter: AdapterId,
    /// First faulting byte (logical address).
    pub logical_addr: u64,
    pub kind: IommuFaultKind,
    pub write: bool,
    /// The device unit that issued the access (`Debug` of the source passed to [`Dma`]).
    pub source: String,
}

impl fmt::Display for IommuFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "IOMMU fault on adapter {}: {} {:#x} ({:?}) by {}",
            self.adapter.0,
            if self.write { "write" } else { "read" },
            self.logical_addr,
            self.kind,
            self.source
        )
    }
}

/// A page-aligned host region standing in for physical pages.
pub(crate) struct Region {
    base: usize,
    pages: usize,
}

impl Region {
    fn layout(pages: usize) -> Layout {
        Layout::from_size_align(pages * PAGE, PAGE).expect("page layout")
    }

    fn new(pages: usize, zero: bool) -> Option<Region> {
        let layout = Self::layout(pages);
        let base = if zero {
            // SAFETY: `layout` has non-zero size (pages ≥ 1).
            unsafe { alloc_zeroed(layout) }
        } else {
            // SAFETY: as above.
            unsafe { alloc(layout) }
        };
        if base.is_null() {
            return None;
        }
        if !zero {
            // SAFETY: `base` is a fresh allocation of `pages * PAGE` bytes.
            unsafe { base.write_bytes(FRESH_PAGE_FILL, pages * PAGE) };
        }
        Some(Region {
            base: base as usize,
            pages,
        })
    }

    fn page(&self, i: usize) -> usize {
        self.base + i * PAGE
    }

    fn release(self) {
        let p = self.base as *mut u8;
        // SAFETY: the region is live and `pages * PAGE` bytes long.
        unsafe { p.write_bytes(FREED_PAGE_FILL, self.pages * PAGE) };
        // SAFETY: allocated in `Region::new` with this layout.
        unsafe { dealloc(p, Self::layout(self.pages)) };
    }
}

/// Host storage for an MDL header + PFN array.
fn alloc_mdl(pages: usize) -> *mut MDL {
    let layout = Layout::from_size_align(MDL_HEADER + pages * 8, 16).expect("mdl layout");
    // SAFETY: non-zero size.
    unsafe { alloc_zeroed(layout) }.cast()
}

fn free_mdl(mdl: *mut MDL, pages: usize) {
    let layout = Layout::from_size_align(MDL_HEADER + pages * 8, 16).expect("mdl layout");
    // SAFETY: allocated by `alloc_mdl(pages)`.
    unsafe { dealloc(mdl.cast(), layout) };
}

/// Pages an MDL spans.
///
/// # Safety
/// `mdl` must be a readable MDL header.
unsafe fn mdl_span(mdl: *const MDL) -> usize {
    // SAFETY: the caller guarantees `mdl` is readable.
    let h = unsafe { mdl.read() };
    dxgk_sys::ADDRESS_AND_SIZE_TO_SPAN_PAGES(
        h.StartVa as usize + h.ByteOffset as usize,
        h.ByteCount as usize,
    )
}

/// The PFN array of an MDL as a vector.
///
/// # Safety
/// `mdl` must be an MDL with room for `span` PFNs.
unsafe fn mdl_pfns(mdl: *mut MDL, span: usize) -> Vec<u64> {
    // SAFETY: the caller guarantees `mdl` is a full MDL allocation.
    let array = unsafe { dxgk_sys::MmGetMdlPfnArray(mdl) };
    // SAFETY: the caller guarantees the PFN array has `span` entries.
    let pfns = unsafe { std::slice::from_raw_parts(array, span) };
    pfns.iter().map(|&p| p as u64).collect()
}

/// FNV-1a over the parts of an MDL the driver must not change while it is IOMMU-mapped: the
/// header (except the system-VA mapping state, which MmMapLockedPages legitimately changes) and
/// the PFN array.
///
/// # Safety
/// `mdl` must be an MDL with room for `span` PFNs.
unsafe fn mdl_checksum(mdl: *mut MDL, span: usize) -> u64 {
    // SAFETY: the caller guarantees `mdl` is readable.
    let h = unsafe { mdl.read() };
    let mut x: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |v: u64| {
        for b in v.to_le_bytes() {
            x ^= u64::from(b);
            x = x.wrapping_mul(0x0100_0000_01b3);
        }
    };
    eat(h.Next as u64);
    eat(h.Size as u64);
    eat((h.MdlFlags & !dxgk_sys::MDL_MAPPED_TO_SYSTEM_VA) as u64);
    eat(h.StartVa as u64);
    eat(u64::from(h.ByteCount));
    eat(u64::from(h.ByteOffset));
    // SAFETY: forwarded guarantee.
    for p in unsafe { mdl_pfns(mdl, span) } {
        eat(p);
    }
    x
}

#[derive(Clone, Copy)]
struct PageEntry {
    host: usize,
    writable: bool,
    refs: u32,
}

/// One adapter's logical address space.
pub(crate) struct Domain {
    mode: IommuMode,
    next_logical: u64,
    pages: BTreeMap<u64, PageEntry>,
    /// The most pages mapped at once.
    peak_pages: usize,
}

impl Domain {
    fn new(mode: IommuMode) -> Self {
        Self {
            mode,
            next_logical: REMAPPED_LOGICAL_BASE,
            pages: BTreeMap::new(),
            peak_pages: 0,
        }
    }

    /// Maps host pages (with their physical PFNs) and returns the logical PFNs.
    fn map(&mut self, pages: &[(u64, usize)]) -> Vec<u64> {
        self.map_runs(pages, 1)
    }

    /// [`Domain::map`] keeping runs of `run` pages logically contiguous and `run`-aligned (a
    /// 64 KiB page needs one logical range; identity mode keeps the physical runs).
    fn map_runs(&mut self, pages: &[(u64, usize)], run: u64) -> Vec<u64> {
        let logical: Vec<u64> = match self.mode {
            IommuMode::Identity => pages.iter().map(|p| p.0).collect(),
            IommuMode::Remapped => {
                // Scattered like the physical pages: logical contiguity beyond a run is not
                // something a driver may assume either. The gaps and the space between ranges
                // stay unmapped.
                let base = self.next_logical.next_multiple_of(run);
                let runs = pages.len() as u64 / run;
                self.next_logical = base + 2 * run * runs + 1;
                scattered_runs(base, runs, run)
            }
        };
        for (l, &(_, host)) in logical.iter().zip(pages) {
            let e = self.pages.entry(*l).or_insert(PageEntry {
                host,
                writable: true,
                refs: 0,
            });
            e.refs += 1;
        }
        self.peak_pages = self.peak_pages.max(self.pages.len());
        logical
    }

    fn unmap(&mut self, logical: &[u64]) {
        for l in logical {
            if let Some(e) = self.pages.get_mut(l) {
                e.refs -= 1;
                if e.refs == 0 {
                    self.pages.remove(l);
                }
            }
        }
    }
}

pub(crate) struct MdlAlloc {
    adapter: AdapterId,
    mdl: usize,
    span: usize,
    region: Region,
    logical: Vec<u64>,
    pub(crate) cache_type: i32,
    site: String,
}

pub(crate) struct ContigAlloc {
    adapter: AdapterId,
    region: Region,
    logical: Vec<u64>,
    site: String,
}

pub(crate) struct IommuMap {
    adapter: AdapterId,
    mdl: usize,
    /// CPU VA range the MDL describes (for "pool freed while mapped").
    va: (usize, usize),
    logical: Vec<u64>,
    checksum: u64,
    span: usize,
    site: String,
}

struct DriverMdl {
    span: usize,
    site: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Retired {
    Mdl,
    Contig,
    Map,
    /// A mapping torn down because its MDL was freed while mapped (already reported).
    OrphanedMap,
}

/// Per-machine memory state.
#[derive(Default)]
pub(crate) struct MemState {
    next_pfn: u64,
    frames: HashMap<u64, usize>,
    host_pfn: HashMap<usize, u64>,
    bytes_in_use: usize,
    next_handle: usize,
    pub(crate) mdl_allocs: HashMap<usize, MdlAlloc>,
    pub(crate) contig: HashMap<usize, ContigAlloc>,
    pub(crate) maps: HashMap<usize, IommuMap>,
    /// The most entries `maps` held at once.
    pub(crate) peak_maps: usize,
    retired: HashMap<usize, Retired>,
    retired_order: VecDeque<usize>,
    driver_mdls: HashMap<usize, DriverMdl>,
    /// System VA → (MDL, mapping site), for MmMapLockedPagesSpecifyCache mappings.
    sys_maps: HashMap<usize, (usize, String)>,
    domains: HashMap<AdapterId, Domain>,
    /// VidMm-owned memory ([`VidmmMemory`]), by handle.
    pub(crate) vidmm: HashMap<usize, VidmmRegion>,
}

impl MemState {
    fn handle(&mut self) -> usize {
        self.next_handle += 1;
        0xD6C0_0000_0000 + self.next_handle * 16
    }

    fn retire(&mut self, h: usize, what: Retired) {
        self.retired.insert(h, what);
        self.retired_order.push_back(h);
        if self.retired_order.len() > 4096 {
            if let Some(old) = self.retired_order.pop_front() {
                self.retired.remove(&old);
            }
        }
    }

    /// Pages `adapter`'s IOMMU domain maps now, and the most it mapped at once.
    pub(crate) fn mapped_pages(&self, adapter: AdapterId) -> (usize, usize) {
        self.domains
            .get(&adapter)
            .map_or((0, 0), |d| (d.pages.len(), d.peak_pages))
    }

    fn domain(&mut self, adapter: AdapterId, mode: IommuMode) -> &mut Domain {
        self.domains
            .entry(adapter)
            .or_insert_with(|| Domain::new(mode))
    }

    /// Physical PFNs for `n` new pages within `[low, high]`, in `run`-aligned runs of `run`
    /// consecutive pages (`n` a multiple of `run`): 1 for ordinary allocations — never two
    /// consecutive pages — and [`PAGES_PER_64K`] for 64 KiB pages. The runs are scattered
    /// (descending, a run's gap between them).
    fn scattered_pfns(&mut self, n: usize, low: u64, high: u64, run: u64) -> Option<Vec<u64>> {
        let start = self
            .next_pfn
            .max(FIRST_PHYSICAL_PFN)
            .max(low >> 12)
            .next_multiple_of(run);
        let runs = n as u64 / run;
        let last = start + 2 * run * (runs - 1) + run - 1;
        if (last << 12) + (PAGE as u64 - 1) > high {
            return None;
        }
        self.next_pfn = start + 2 * run * runs + 1;
        Some(scattered_runs(start, runs, run))
    }

    /// Physical PFNs for `n` consecutive pages within `[low, high]`, not crossing `boundary`.
    fn contiguous_pfns(
        &mut self,
        n: usize,
        low: u64,
        high: u64,
        boundary: u64,
    ) -> Option<Vec<u64>> {
        let mut start = self
            .next_pfn
            .max(FIRST_PHYSICAL_PFN)
            .max(low.div_ceil(PAGE as u64));
        let bytes = n as u64 * PAGE as u64;
        if boundary != 0 {
            if bytes > boundary {
                return None;
            }
            let s = start << 12;
            if s / boundary != (s + bytes - 1) / boundary {
                start = ((s / boundary + 1) * boundary) >> 12;
            }
        }
        let last = start + n as u64 - 1;
        if (last << 12) + (PAGE as u64 - 1) > high {
            return None;
        }
        self.next_pfn = last + 2;
        Some((start..=last).collect())
    }

    /// Physical PFN of a host page, registering it as a frame if new.
    fn pfn_of_host_page(&mut self, host: usize) -> u64 {
        if let Some(&p) = self.host_pfn.get(&host) {
            return p;
        }
        let p = self.next_pfn.max(FIRST_PHYSICAL_PFN);
        self.next_pfn = p + 2;
        self.host_pfn.insert(host, p);
        self.frames.insert(p, host);
        p
    }

    fn register_frames(&mut self, pfns: &[u64], region: &Region) {
        for (i, &p) in pfns.iter().enumerate() {
            self.frames.insert(p, region.page(i));
            self.host_pfn.insert(region.page(i), p);
        }
    }

    fn unregister_frames(&mut self, region: &Region) {
        for i in 0..region.pages {
            if let Some(p) = self.host_pfn.remove(&region.page(i)) {
                self.frames.remove(&p);
            }
        }
    }

    fn is_iommu_mapped(&self, mdl: usize) -> Option<usize> {
        self.maps
            .iter()
            .find(|(_, m)| m.mdl == mdl)
            .map(|(h, _)| *h)
    }

    /// Everything still allocated or mapped (on `adapter`, or anywhere).
    pub(crate) fn leak_findings(
        &self,
        adapter: Option<AdapterId>,
        call: &'static str,
    ) -> Vec<Finding> {
        let on = |a: AdapterId| adapter.is_none_or(|x| x == a);
        let mut out = Vec::new();
        for (h, a) in &self.mdl_allocs {
            if on(a.adapter) {
                let pages = a.region.pages;
                let detail = format!(
                    "DxgkCbAllocatePagesForMdl allocation {h:#x} ({pages} pages) never freed with DxgkCbFreePagesFromMdl"
                );
                out.push(leak(call, detail, format!("allocated at {}", a.site)));
            }
        }
        for (h, c) in &self.contig {
            if on(c.adapter) {
                out.push(leak(
                    call,
                    format!(
                        "DxgkCbAllocateContiguousMemory block {h:#x} ({} pages) never freed",
                        c.region.pages
                    ),
                    format!("allocated at {}", c.site),
                ));
            }
        }
        for (h, m) in &self.maps {
            if on(m.adapter) {
                out.push(leak(
                    call,
                    format!(
                        "DxgkCbMapMdlToIoMmu mapping {h:#x} ({} pages) never unmapped",
                        m.logical.len()
                    ),
                    format!("mapped at {}", m.site),
                ));
            }
        }
        out
    }

    /// Driver-global leftovers: MDLs from IoAllocateMdl and system-VA mappings.
    pub(crate) fn global_leak_findings(&self, call: &'static str) -> Vec<Finding> {
        let mut out = Vec::new();
        {
            for (p, d) in &self.driver_mdls {
                out.push(leak(
                    call,
                    format!("MDL {p:#x} from IoAllocateMdl never freed with IoFreeMdl"),
                    format!("allocated at {}", d.site),
                ));
            }
            for (va, (mdl, site)) in &self.sys_maps {
                // A mapping of an MDL that is itself leaked is part of that leak.
                if self.driver_mdls.contains_key(mdl)
                    || self.mdl_allocs.values().any(|a| a.mdl == *mdl)
                {
                    continue;
                }
                out.push(leak(
                    call,
                    format!(
                        "system VA {va:#x} of MDL {mdl:#x} never unmapped (MmUnmapLockedPages)"
                    ),
                    format!("mapped at {site}"),
                ));
            }
        }
        out
    }
}

/// A [`Rule::ResourceLeak`] finding found at teardown (the site is where it was allocated).
fn leak(call: &'static str, detail: String, driver_site: String) -> Finding {
    Finding {
        rule: Rule::ResourceLeak,
        call,
        detail,
        driver_site,
    }
}

fn misuse(m: &MachineState, call: &'static str, detail: String) {
    m.report(Finding::here(Rule::MdlMisuse, call, detail));
}

fn invalid(m: &MachineState, call: &'static str, detail: impl Into<String>) {
    m.report(Finding::here(Rule::InvalidArgument, call, detail));
}

fn large(v: &dxgk_sys::LARGE_INTEGER) -> i64 {
    // SAFETY: every bit pattern of the union is a valid i64.
    unsafe { v.QuadPart }
}

// ---- the memory callbacks (called by the DXGKRNL_INTERFACE thunks with the adapter resolved) ---

pub(crate) fn allocate_pages_for_mdl(
    m: &MachineState,
    adapter: AdapterId,
    args: &mut dxgk_sys::DXGKARGCB_ALLOCATEPAGESFORMDL,
) -> i32 {
    const CALL: &str = "DxgkCbAllocatePagesForMdl";
    let total = args.TotalBytes;
    if total == 0 || total > MAX_MDL_BYTES {
        invalid(
            m,
            CALL,
            format!("TotalBytes {total:#x} is 0 or above 4 GiB - 4 KiB"),
        );
        return dxgk_sys::STATUS_INVALID_PARAMETER;
    }
    let (low, high, skip) = (
        large(&args.LowAddress),
        large(&args.HighAddress),
        large(&args.SkipBytes),
    );
    if high < low || skip < 0 || !(skip as usize).is_multiple_of(PAGE) {
        invalid(
            m,
            CALL,
            format!("bad range: Low {low:#x} High {high:#x} SkipBytes {skip:#x}"),
        );
        return dxgk_sys::STATUS_INVALID_PARAMETER;
    }
    let caching = args.CacheType.0;
    if !(0..=2).contains(&caching) {
        invalid(
            m,
            CALL,
            format!("unknown DXGK_MEMORY_CACHING_TYPE {caching}"),
        );
        return dxgk_sys::STATUS_INVALID_PARAMETER;
    }
    if crate::fault::inject_on(m, CALL) {
        return dxgk_sys::STATUS_INSUFFICIENT_RESOURCES;
    }
    let pages = total.div_ceil(PAGE);
    let mut mem = m.mem();
    if mem.bytes_in_use + pages * PAGE > PHYSICAL_MEMORY_LIMIT {
        return dxgk_sys::STATUS_INSUFFICIENT_RESOURCES; // all-or-nothing (MM_ALLOCATE_FULLY_REQUIRED)
    }
    let Some(pfns) = mem.scattered_pfns(pages, low as u64, high as u64, 1) else {
        return dxgk_sys::STATUS_INSUFFICIENT_RESOURCES;
    };
    let Some(region) = Region::new(pages, args.Flags & MM_DONT_ZERO_ALLOCATION == 0) else {
        return dxgk_sys::STATUS_INSUFFICIENT_RESOURCES;
    };
    mem.register_frames(&pfns, &region);
    let host: Vec<(u64, usize)> = pfns
        .iter()
        .enumerate()
        .map(|(i, &p)| (p, region.page(i)))
        .collect();
    let logical = mem.domain(adapter, m.config.iommu).map(&host);
    let mdl = alloc_mdl(pages);
    let header = MDL {
        Next: std::ptr::null_mut(),
        Size: (MDL_HEADER + pages * 8) as CSHORT,
        MdlFlags: dxgk_sys::MDL_PAGES_LOCKED | dxgk_sys::MDL_ALLOCATED_FIXED_SIZE,
        Process: std::ptr::null_mut(),
        MappedSystemVa: std::ptr::null_mut(),
        StartVa: std::ptr::null_mut(),
        ByteCount: (pages * PAGE) as ULONG,
        ByteOffset: 0,
    };
    // SAFETY: `mdl` is a fresh allocation with room for the header and `pages` PFNs.
    unsafe { mdl.write(header) };
    // SAFETY: as above.
    let array = unsafe { dxgk_sys::MmGetMdlPfnArray(mdl) };
    // SAFETY: as above: the PFN array has `pages` entries.
    let array = unsafe { std::slice::from_raw_parts_mut(array, pages) };
    for (slot, &l) in array.iter_mut().zip(&logical) {
        *slot = l as usize;
    }
    let h = mem.handle();
    mem.bytes_in_use += pages * PAGE;
    mem.mdl_allocs.insert(
        h,
        MdlAlloc {
            adapter,
            mdl: mdl as usize,
            span: pages,
            region,
            logical,
            cache_type: caching,
            site: driver_call_site(),
        },
    );
    args.hMemoryHandle = h as PVOID;
    args.pMdl = mdl;
    dxgk_sys::STATUS_SUCCESS
}

fn unknown_handle(mem: &MemState, h: usize, expected: Retired) -> String {
    match mem.retired.get(&h) {
        Some(r) if *r == expected => match expected {
            Retired::Map | Retired::OrphanedMap => format!("double unmap of handle {h:#x}"),
            _ => format!("double free of handle {h:#x}"),
        },
        Some(_) => format!("handle {h:#x} is a stale handle of another kind"),
        None if mem.mdl_allocs.contains_key(&h)
            || mem.contig.contains_key(&h)
            || mem.maps.contains_key(&h) =>
        {
            format!("handle {h:#x} belongs to another callback")
        }
        None => format!("unknown handle {h:#x}"),
    }
}

pub(crate) fn free_pages_from_mdl(m: &MachineState, adapter: AdapterId, h: usize) -> i32 {
    const CALL: &str = "DxgkCbFreePagesFromMdl";
    let mut mem = m.mem();
    let Some(a) = mem.mdl_allocs.remove(&h) else {
        let d = unknown_handle(&mem, h, Retired::Mdl);
        drop(mem);
        misuse(m, CALL, d);
        return dxgk_sys::STATUS_INVALID_PARAMETER;
    };
    if a.adapter != adapter {
        mem.mdl_allocs.insert(h, a);
        drop(mem);
        misuse(m, CALL, format!("handle {h:#x} belongs to another adapter"));
        return dxgk_sys::STATUS_INVALID_PARAMETER;
    }
    let mut found = Vec::new();
    if let Some(va) = mem
        .sys_maps
        .iter()
        .find(|(_, m)| m.0 == a.mdl)
        .map(|(va, _)| *va)
    {
        mem.sys_maps.remove(&va);
        found.push(format!(
            "MDL {:#x} freed while mapped to system VA {va:#x} (call MmUnmapLockedPages first)",
            a.mdl
        ));
    }
    while let Some(mh) = mem.is_iommu_mapped(a.mdl) {
        let map = mem.maps.remove(&mh).expect("present");
        mem.domain(map.adapter, m.config.iommu).unmap(&map.logical);
        mem.retire(mh, Retired::OrphanedMap);
        found.push(format!(
            "MDL {:#x} freed while mapped to the IOMMU (DxgkCbMapMdlToIoMmu handle {mh:#x} still live)",
            a.mdl
        ));
    }
    mem.domain(a.adapter, m.config.iommu).unmap(&a.logical);
    mem.unregister_frames(&a.region);
    mem.bytes_in_use -= a.region.pages * PAGE;
    mem.retire(h, Retired::Mdl);
    drop(mem);
    a.region.release();
    free_mdl(a.mdl as *mut MDL, a.span);
    for d in found {
        misuse(m, CALL, d);
    }
    dxgk_sys::STATUS_SUCCESS
}

pub(crate) fn map_mdl_to_iommu(
    m: &MachineState,
    adapter: AdapterId,
    args: &mut dxgk_sys::DXGKARGCB_MAPMDLTOIOMMU,
) -> i32 {
    const CALL: &str = "DxgkCbMapMdlToIoMmu";
    let mdl = args.pMdl;
    if mdl.is_null() {
        invalid(m, CALL, "NULL pMdl");
        return dxgk_sys::STATUS_INVALID_PARAMETER;
    }
    if crate::fault::inject_on(m, CALL) {
        return dxgk_sys::STATUS_INSUFFICIENT_RESOURCES;
    }
    let mut mem = m.mem();
    let host: Vec<(u64, usize)>;
    let span;
    if let Some(a) = mem.mdl_allocs.values().find(|a| a.mdl == mdl as usize) {
        span = a.span;
        host = (0..a.span)
            .map(|i| (a.logical[i], a.region.page(i)))
            .collect::<Vec<_>>()
            .into_iter()
            .map(|(l, hp)| (mem.host_pfn.get(&hp).copied().unwrap_or(l), hp))
            .collect();
    } else {
        // SAFETY: the driver passes an MDL it built; we read its header and PFN array.
        span = unsafe { mdl_span(mdl) };
        // SAFETY: as above, with `span` entries.
        let pfns = unsafe { mdl_pfns(mdl, span) };
        let mut v = Vec::with_capacity(span);
        for p in pfns {
            let Some(&hp) = mem.frames.get(&p) else {
                drop(mem);
                invalid(m, CALL, format!("MDL {mdl:p} names PFN {p:#x}, which is not a physical page of this machine (build driver MDLs with MmBuildMdlForNonPagedPool)"));
                return dxgk_sys::STATUS_INVALID_PARAMETER;
            };
            v.push((p, hp));
        }
        host = v;
    }
    // SAFETY: `mdl` has `span` PFNs (checked above).
    let checksum = unsafe { mdl_checksum(mdl, span) };
    // SAFETY: readable MDL.
    let hdr = unsafe { mdl.read() };
    let va = hdr.StartVa as usize + hdr.ByteOffset as usize;
    let logical = mem.domain(adapter, m.config.iommu).map(&host);
    let h = mem.handle();
    mem.maps.insert(
        h,
        IommuMap {
            adapter,
            mdl: mdl as usize,
            va: (va, va + hdr.ByteCount as usize),
            logical,
            checksum,
            span,
            site: driver_call_site(),
        },
    );
    mem.peak_maps = mem.peak_maps.max(mem.maps.len());
    args.hMemoryHandle = h as PVOID;
    dxgk_sys::STATUS_SUCCESS
}

pub(crate) fn unmap_mdl_from_iommu(m: &MachineState, adapter: AdapterId, h: usize) {
    const CALL: &str = "DxgkCbUnmapMdlFromIoMmu";
    let mut mem = m.mem();
    let Some(map) = mem.maps.remove(&h) else {
        if mem.retired.get(&h) == Some(&Retired::OrphanedMap) {
            mem.retired.insert(h, Retired::Map);
            return; // already reported when its MDL was freed
        }
        let d = unknown_handle(&mem, h, Retired::Map);
        drop(mem);
        misuse(m, CALL, d);
        return;
    };
    if map.adapter != adapter {
        mem.maps.insert(h, map);
        drop(mem);
        misuse(m, CALL, format!("handle {h:#x} belongs to another adapter"));
        return;
    }
    // SAFETY: the MDL must still be alive while mapped (the driver's contract; a freed MDL is
    // reported by IoFreeMdl / FreePagesFromMdl and its mapping torn down there).
    let now = unsafe { mdl_checksum(map.mdl as *mut MDL, map.span) };
    mem.domain(adapter, m.config.iommu).unmap(&map.logical);
    mem.retire(h, Retired::Map);
    drop(mem);
    if now != map.checksum {
        misuse(
            m,
            CALL,
            format!(
                "MDL {:#x} changed while mapped to the IOMMU (header or PFN array differs from DxgkCbMapMdlToIoMmu time; mapped at {})",
                map.mdl, map.site
            ),
        );
    }
}

pub(crate) fn allocate_contiguous(
    m: &MachineState,
    adapter: AdapterId,
    args: &mut dxgk_sys::DXGKARGCB_ALLOCATECONTIGUOUSMEMORY,
) -> i32 {
    const CALL: &str = "DxgkCbAllocateContiguousMemory";
    let n = args.NumberOfBytes;
    if n == 0 || n > MAX_MDL_BYTES {
        invalid(m, CALL, format!("NumberOfBytes {n:#x} is 0 or too large"));
        return dxgk_sys::STATUS_INVALID_PARAMETER;
    }
    let (low, high, boundary) = (
        large(&args.LowestAcceptableAddress),
        large(&args.HighestAcceptableAddress),
        large(&args.BoundaryAddressMultiple),
    );
    if high < low || boundary < 0 || (boundary != 0 && (boundary as u64).count_ones() != 1) {
        invalid(
            m,
            CALL,
            format!("bad range: Lowest {low:#x} Highest {high:#x} Boundary {boundary:#x}"),
        );
        return dxgk_sys::STATUS_INVALID_PARAMETER;
    }
    if crate::fault::inject_on(m, CALL) {
        return dxgk_sys::STATUS_NO_MEMORY;
    }
    let pages = n.div_ceil(PAGE);
    let mut mem = m.mem();
    if mem.bytes_in_use + pages * PAGE > PHYSICAL_MEMORY_LIMIT {
        return dxgk_sys::STATUS_NO_MEMORY;
    }
    let Some(pfns) = mem.contiguous_pfns(pages, low as u64, high as u64, boundary as u64) else {
        return dxgk_sys::STATUS_NO_MEMORY;
    };
    let Some(region) = Region::new(pages, true) else {
        return dxgk_sys::STATUS_NO_MEMORY;
    };
    mem.register_frames(&pfns, &region);
    let host: Vec<(u64, usize)> = pfns
        .iter()
        .enumerate()
        .map(|(i, &p)| (p, region.page(i)))
        .collect();
    let logical = mem.domain(adapter, m.config.iommu).map(&host);
    let h = mem.handle();
    mem.bytes_in_use += pages * PAGE;
    args.pMemory = region.base as PVOID;
    args.hMemoryHandle = h as PVOID;
    mem.contig.insert(
        h,
        ContigAlloc {
            adapter,
            region,
            logical,
            site: driver_call_site(),
        },
    );
    dxgk_sys::STATUS_SUCCESS
}

pub(crate) fn free_contiguous(m: &MachineState, adapter: AdapterId, h: usize) -> i32 {
    const CALL: &str = "DxgkCbFreeContiguousMemory";
    let mut mem = m.mem();
    let Some(c) = mem.contig.remove(&h) else {
        let d = unknown_handle(&mem, h, Retired::Contig);
        drop(mem);
        misuse(m, CALL, d);
        return dxgk_sys::STATUS_INVALID_PARAMETER;
    };
    if c.adapter != adapter {
        mem.contig.insert(h, c);
        drop(mem);
        misuse(m, CALL, format!("handle {h:#x} belongs to another adapter"));
        return dxgk_sys::STATUS_INVALID_PARAMETER;
    }
    mem.domain(adapter, m.config.iommu).unmap(&c.logical);
    mem.unregister_frames(&c.region);
    mem.bytes_in_use -= c.region.pages * PAGE;
    mem.retire(h, Retired::Contig);
    drop(mem);
    c.region.release();
    dxgk_sys::STATUS_SUCCESS
}

/// Called by ExFreePoolWithTag: reports a pool block whose pages a driver MDL still maps in the
/// IOMMU (the device could still reach memory the pool will reuse).
pub(crate) fn check_pool_free(m: &MachineState, user: usize, size: usize) {
    let mem = m.mem();
    let hit = mem
        .maps
        .iter()
        .find(|(_, map)| map.va.0 < user + size && user < map.va.1)
        .map(|(h, map)| (*h, map.site.clone()));
    drop(mem);
    if let Some((h, site)) = hit {
        misuse(
            m,
            "ExFreePoolWithTag",
            format!("pool block {user:#x} freed while an MDL over it is mapped to the IOMMU (handle {h:#x}, mapped at {site})"),
        );
    }
}

// ---- ntoskrnl MDL functions -------------------------------------------------------------------

/// `IoAllocateMdl`. IRQL ≤ DISPATCH_LEVEL. Allocates an MDL (header + PFN array) describing
/// `[va, va + length)`; PFNs are filled by MmBuildMdlForNonPagedPool.
#[no_mangle]
pub extern "system" fn IoAllocateMdl(
    va: PVOID,
    length: ULONG,
    _secondary: BOOLEAN,
    _charge_quota: BOOLEAN,
    irp: *mut IRP,
) -> *mut MDL {
    const CALL: &str = "IoAllocateMdl";
    let m = current();
    m.count_call(CALL);
    if !require_irql_at_most(CALL, dxgk_sys::DISPATCH_LEVEL) {
        return std::ptr::null_mut();
    }
    if length == 0 || !irp.is_null() {
        invalid(&m, CALL, "zero length, or an IRP (not simulated)");
        return std::ptr::null_mut();
    }
    if inject(CALL) {
        return std::ptr::null_mut();
    }
    let span = dxgk_sys::ADDRESS_AND_SIZE_TO_SPAN_PAGES(va as usize, length as usize);
    let mdl = alloc_mdl(span);
    let header = MDL {
        Size: (MDL_HEADER + span * 8) as CSHORT,
        StartVa: (va as usize & !(PAGE - 1)) as PVOID,
        ByteCount: length,
        ByteOffset: (va as usize & (PAGE - 1)) as ULONG,
        ..MDL::default()
    };
    // SAFETY: fresh allocation with room for the header.
    unsafe { mdl.write(header) };
    m.mem().driver_mdls.insert(
        mdl as usize,
        DriverMdl {
            span,
            site: driver_call_site(),
        },
    );
    mdl
}

/// `MmBuildMdlForNonPagedPool`. IRQL ≤ DISPATCH_LEVEL. Fills the PFN array of an MDL over
/// nonpaged memory (PFNs are assigned to host pages on first use) and marks it
/// MDL_SOURCE_IS_NONPAGED_POOL with MappedSystemVa set.
#[no_mangle]
pub extern "system" fn MmBuildMdlForNonPagedPool(mdl: *mut MDL) {
    const CALL: &str = "MmBuildMdlForNonPagedPool";
    let m = current();
    m.count_call(CALL);
    require_irql_at_most(CALL, dxgk_sys::DISPATCH_LEVEL);
    let mut mem = m.mem();
    let Some(span) = mem.driver_mdls.get(&(mdl as usize)).map(|d| d.span) else {
        drop(mem);
        misuse(
            &m,
            CALL,
            format!("{mdl:p} is not an MDL from IoAllocateMdl"),
        );
        return;
    };
    // SAFETY: a live MDL from IoAllocateMdl.
    let mut h = unsafe { mdl.read() };
    let pfns: Vec<u64> = (0..span)
        .map(|i| mem.pfn_of_host_page(h.StartVa as usize + i * PAGE))
        .collect();
    drop(mem);
    // SAFETY: a live MDL from IoAllocateMdl.
    let array = unsafe { dxgk_sys::MmGetMdlPfnArray(mdl) };
    // SAFETY: the PFN array has `span` entries.
    let array = unsafe { std::slice::from_raw_parts_mut(array, span) };
    for (slot, p) in array.iter_mut().zip(pfns) {
        *slot = p as usize;
    }
    h.MdlFlags |= dxgk_sys::MDL_SOURCE_IS_NONPAGED_POOL;
    h.MappedSystemVa = (h.StartVa as usize + h.ByteOffset as usize) as PVOID;
    // SAFETY: as above.
    unsafe { mdl.write(h) };
}

/// `IoFreeMdl`. IRQL ≤ DISPATCH_LEVEL.
#[no_mangle]
pub extern "system" fn IoFreeMdl(mdl: *mut MDL) {
    const CALL: &str = "IoFreeMdl";
    let m = current();
    m.count_call(CALL);
    require_irql_at_most(CALL, dxgk_sys::DISPATCH_LEVEL);
    let mut mem = m.mem();
    if mem.mdl_allocs.values().any(|a| a.mdl == mdl as usize) {
        drop(mem);
        misuse(
            &m,
            CALL,
            format!(
                "{mdl:p} came from DxgkCbAllocatePagesForMdl: free it with DxgkCbFreePagesFromMdl"
            ),
        );
        return;
    }
    let Some(d) = mem.driver_mdls.remove(&(mdl as usize)) else {
        drop(mem);
        misuse(
            &m,
            CALL,
            format!("{mdl:p} is not a live MDL from IoAllocateMdl (double free?)"),
        );
        return;
    };
    let mut found = Vec::new();
    while let Some(mh) = mem.is_iommu_mapped(mdl as usize) {
        let map = mem.maps.remove(&mh).expect("present");
        mem.domain(map.adapter, m.config.iommu).unmap(&map.logical);
        mem.retire(mh, Retired::OrphanedMap);
        found.push(format!(
            "MDL {mdl:p} freed while mapped to the IOMMU (handle {mh:#x}, mapped at {})",
            map.site
        ));
    }
    if let Some(va) = mem
        .sys_maps
        .iter()
        .find(|(_, m)| m.0 == mdl as usize)
        .map(|(va, _)| *va)
    {
        mem.sys_maps.remove(&va);
        found.push(format!(
            "MDL {mdl:p} freed while mapped to system VA {va:#x}"
        ));
    }
    drop(mem);
    free_mdl(mdl, d.span);
    for f in found {
        misuse(&m, CALL, f);
    }
}

/// `MmMapLockedPagesSpecifyCache` (KernelMode only). IRQL ≤ DISPATCH_LEVEL. An injection point
/// (returns NULL).
#[no_mangle]
pub extern "system" fn MmMapLockedPagesSpecifyCache(
    mdl: *mut MDL,
    mode: KPROCESSOR_MODE,
    _cache: MEMORY_CACHING_TYPE,
    requested: PVOID,
    _bugcheck_on_failure: ULONG,
    _priority: ULONG,
) -> PVOID {
    const CALL: &str = "MmMapLockedPagesSpecifyCache";
    let m = current();
    m.count_call(CALL);
    if !require_irql_at_most(CALL, dxgk_sys::DISPATCH_LEVEL) {
        return std::ptr::null_mut();
    }
    if mdl.is_null() || mode != dxgk_sys::KernelMode || !requested.is_null() {
        invalid(
            &m,
            CALL,
            "NULL MDL, UserMode or a RequestedAddress (not simulated)",
        );
        return std::ptr::null_mut();
    }
    // SAFETY: the driver passes a valid MDL.
    let mut h = unsafe { mdl.read() };
    if h.MdlFlags & dxgk_sys::MDL_MAPPED_TO_SYSTEM_VA != 0 {
        misuse(
            &m,
            CALL,
            format!(
                "MDL {mdl:p} is already mapped to system VA (use MmGetSystemAddressForMdlSafe)"
            ),
        );
        return h.MappedSystemVa;
    }
    if inject(CALL) {
        return std::ptr::null_mut();
    }
    let mut mem = m.mem();
    let base = if let Some(a) = mem.mdl_allocs.values().find(|a| a.mdl == mdl as usize) {
        a.region.base
    } else if mem.driver_mdls.contains_key(&(mdl as usize)) {
        // SAFETY: live driver MDL.
        let span = unsafe { mdl_span(mdl) };
        // SAFETY: as above.
        let pfns = unsafe { mdl_pfns(mdl, span) };
        let hosts: Option<Vec<usize>> = pfns.iter().map(|p| mem.frames.get(p).copied()).collect();
        match hosts {
            Some(v) if v.windows(2).all(|w| w[1] == w[0] + PAGE) && !v.is_empty() => v[0],
            _ => {
                drop(mem);
                invalid(
                    &m,
                    CALL,
                    format!(
                        "MDL {mdl:p}: PFNs unknown or not host-contiguous (simulator limitation)"
                    ),
                );
                return std::ptr::null_mut();
            }
        }
    } else {
        drop(mem);
        misuse(&m, CALL, format!("{mdl:p} is not a live MDL"));
        return std::ptr::null_mut();
    };
    let va = base + h.ByteOffset as usize;
    mem.sys_maps.insert(va, (mdl as usize, driver_call_site()));
    drop(mem);
    h.MdlFlags |= dxgk_sys::MDL_MAPPED_TO_SYSTEM_VA;
    h.MappedSystemVa = va as PVOID;
    // SAFETY: as above.
    unsafe { mdl.write(h) };
    va as PVOID
}

/// `MmUnmapLockedPages`. IRQL ≤ DISPATCH_LEVEL.
#[no_mangle]
pub extern "system" fn MmUnmapLockedPages(base: PVOID, mdl: *mut MDL) {
    const CALL: &str = "MmUnmapLockedPages";
    let m = current();
    m.count_call(CALL);
    require_irql_at_most(CALL, dxgk_sys::DISPATCH_LEVEL);
    let mut mem = m.mem();
    if mem.sys_maps.get(&(base as usize)).map(|m| m.0) != Some(mdl as usize) {
        drop(mem);
        misuse(&m, CALL, format!("{base:p} is not a system VA mapping of MDL {mdl:p} (never mapped, or already unmapped)"));
        return;
    }
    mem.sys_maps.remove(&(base as usize));
    drop(mem);
    // SAFETY: a live MDL (it has a live mapping).
    let mut h = unsafe { mdl.read() };
    h.MdlFlags &= !dxgk_sys::MDL_MAPPED_TO_SYSTEM_VA;
    h.MappedSystemVa = std::ptr::null_mut();
    // SAFETY: as above.
    unsafe { mdl.write(h) };
}

// ---- device side -----------------------------------------------------------------------------

/// Device memory access through one adapter's IOMMU (logical addresses). Obtained from
/// [`Machine::dma`]; also handed to [`crate::SimDevice::sync`].
pub struct Dma {
    pub(crate) machine: Arc<MachineState>,
    pub(crate) adapter: AdapterId,
}

impl fmt::Debug for Dma {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Dma(adapter {})", self.adapter.0)
    }
}

impl Dma {
    /// Checks every page of the access; returns the host address of each page piece.
    fn translate(
        &self,
        logical: u64,
        len: usize,
        write: bool,
        source: &dyn fmt::Debug,
    ) -> Result<Vec<(usize, usize, usize)>, IommuFault> {
        let mut mem = self.machine.mem();
        let dom = mem.domain(self.adapter, self.machine.config.iommu);
        let mut pieces = Vec::new();
        let mut addr = logical;
        let mut done = 0usize;
        while done < len {
            let off = (addr as usize) & (PAGE - 1);
            let n = (PAGE - off).min(len - done);
            let fault = |kind| IommuFault {
                adapter: self.adapter,
                logical_addr: addr,
                kind,
                write,
                source: format!("{source:?}"),
            };
            match dom.pages.get(&(addr >> 12)) {
                None => return Err(fault(IommuFaultKind::NotMapped)),
                Some(e) if write && !e.writable => return Err(fault(IommuFaultKind::ReadOnly)),
                Some(e) => pieces.push((e.host + off, done, n)),
            }
            addr += n as u64;
            done += n;
        }
        Ok(pieces)
    }

    fn fault(&self, f: IommuFault) -> IommuFault {
        self.machine.report(Finding {
            rule: Rule::IommuFault,
            call: "device DMA",
            detail: f.to_string(),
            driver_site: format!("device access by {}", f.source),
        });
        self.machine.iommu_faults.lock().push(f.clone());
        f
    }

    /// The host address of `logical` when `[logical, logical + len)` lies in one mapped page
    /// (every access the rgpu model makes): the fast path, one lookup under the lock the copy
    /// then also holds. `Err(None)` = use the general path; `Err(Some(f))` = fault.
    fn single_page<R>(
        &self,
        logical: u64,
        len: usize,
        write: bool,
        source: &dyn fmt::Debug,
        copy: impl FnOnce(usize) -> R,
    ) -> Result<R, Option<IommuFault>> {
        let off = (logical as usize) & (PAGE - 1);
        if len == 0 || off + len > PAGE {
            return Err(None);
        }
        let mut mem = self.machine.mem();
        let dom = mem.domain(self.adapter, self.machine.config.iommu);
        let fault = |kind| {
            Some(IommuFault {
                adapter: self.adapter,
                logical_addr: logical,
                kind,
                write,
                source: format!("{source:?}"),
            })
        };
        match dom.pages.get(&(logical >> 12)) {
            None => Err(fault(IommuFaultKind::NotMapped)),
            Some(e) if write && !e.writable => Err(fault(IommuFaultKind::ReadOnly)),
            // The page cannot be freed while the memory lock (`mem`) is held during `copy`.
            Some(e) => Ok(copy(e.host + off)),
        }
    }

    /// Device read of `buf.len()` bytes at `logical`. On a fault nothing is read.
    pub fn read(
        &mut self,
        logical: u64,
        buf: &mut [u8],
        source: impl fmt::Debug,
    ) -> Result<(), IommuFault> {
        let len = buf.len();
        let fast = self.single_page(logical, len, false, &source, |host| {
            // SAFETY: `host..host+len` lies in one mapped page, live while the memory lock
            // is held (it is, for the duration of this closure).
            let src = unsafe { std::slice::from_raw_parts(host as *const u8, len) };
            buf.copy_from_slice(src);
        });
        match fast {
            Ok(()) => return Ok(()),
            Err(Some(f)) => return Err(self.fault(f)),
            Err(None) => {}
        }
        match self.translate(logical, buf.len(), false, &source) {
            Ok(pieces) => {
                let _mem = self.machine.mem(); // pages cannot be freed while we copy
                for (host, at, n) in pieces {
                    // SAFETY: `host..host+n` lies in a mapped page whose region is live while
                    // the memory lock is held.
                    let src = unsafe { std::slice::from_raw_parts(host as *const u8, n) };
                    buf[at..at + n].copy_from_slice(src);
                }
                Ok(())
            }
            Err(f) => Err(self.fault(f)),
        }
    }

    /// Device write of `data` at `logical`. On a fault memory is unchanged.
    pub fn write(
        &mut self,
        logical: u64,
        data: &[u8],
        source: impl fmt::Debug,
    ) -> Result<(), IommuFault> {
        let fast = self.single_page(logical, data.len(), true, &source, |host| {
            // SAFETY: as in `read`.
            let dst = unsafe { std::slice::from_raw_parts_mut(host as *mut u8, data.len()) };
            dst.copy_from_slice(data);
        });
        match fast {
            Ok(()) => return Ok(()),
            Err(Some(f)) => return Err(self.fault(f)),
            Err(None) => {}
        }
        match self.translate(logical, data.len(), true, &source) {
            Ok(pieces) => {
                let _mem = self.machine.mem();
                for (host, at, n) in pieces {
                    // SAFETY: as in `read`.
                    let dst = unsafe { std::slice::from_raw_parts_mut(host as *mut u8, n) };
                    dst.copy_from_slice(&data[at..at + n]);
                }
                Ok(())
            }
            Err(f) => Err(self.fault(f)),
        }
    }

    /// Device copy of `len` bytes from `src` to `dst` (each within one page), host memory to
    /// host memory under one lock (a DMA engine does not stage data). The error says which side
    /// faulted (`true` = the write); on a fault nothing is written.
    pub fn copy(&mut self, dst: u64, src: u64, len: usize) -> Result<(), (IommuFault, bool)> {
        let within = |a: u64| len > 0 && ((a as usize) & (PAGE - 1)) + len <= PAGE;
        if !within(src) || !within(dst) {
            // General path (never taken by the rgpu model): stage through a buffer.
            let mut buf = vec![0u8; len];
            self.read(src, &mut buf, "copy source")
                .map_err(|f| (f, false))?;
            return self
                .write(dst, &buf, "copy destination")
                .map_err(|f| (f, true));
        }
        let outcome = {
            let mut mem = self.machine.mem();
            let dom = mem.domain(self.adapter, self.machine.config.iommu);
            let s = dom
                .pages
                .get(&(src >> 12))
                .map(|e| e.host + ((src as usize) & (PAGE - 1)));
            let d = dom
                .pages
                .get(&(dst >> 12))
                .map(|e| (e.writable, e.host + ((dst as usize) & (PAGE - 1))));
            match (s, d) {
                (None, _) => Err((IommuFaultKind::NotMapped, src, false)),
                (_, None) => Err((IommuFaultKind::NotMapped, dst, true)),
                (_, Some((false, _))) => Err((IommuFaultKind::ReadOnly, dst, true)),
                (Some(s), Some((true, d))) => {
                    // SAFETY: both ranges lie in mapped pages that cannot be freed while the
                    // memory lock (`mem`) is held; `copy` tolerates overlap.
                    unsafe { std::ptr::copy(s as *const u8, d as *mut u8, len) };
                    Ok(())
                }
            }
        };
        outcome.map_err(|(kind, addr, write)| {
            let f = IommuFault {
                adapter: self.adapter,
                logical_addr: addr,
                kind,
                write,
                source: if write { "Write" } else { "Read" }.to_string(),
            };
            (self.fault(f), write)
        })
    }

    /// Whether `logical`'s page is mapped (no fault recorded).
    pub fn is_mapped(&self, logical: u64) -> bool {
        let mut mem = self.machine.mem();
        mem.domain(self.adapter, self.machine.config.iommu)
            .pages
            .contains_key(&(logical >> 12))
    }
}

impl Machine {
    /// Device DMA through `adapter`'s IOMMU.
    pub fn dma(&self, adapter: AdapterId) -> Dma {
        Dma {
            machine: self.state.clone(),
            adapter,
        }
    }

    /// Makes a mapped logical page read-only (or writable again) for the device, as VidMm does
    /// for read-only allocations. False if the page is not mapped.
    pub fn set_logical_page_writable(
        &self,
        adapter: AdapterId,
        logical: u64,
        writable: bool,
    ) -> bool {
        let mut mem = self.state.mem();
        let mode = self.state.config.iommu;
        match mem.domain(adapter, mode).pages.get_mut(&(logical >> 12)) {
            Some(e) => {
                e.writable = writable;
                true
            }
            None => false,
        }
    }

    /// The caching type recorded for a live DxgkCbAllocatePagesForMdl allocation, by MDL.
    pub fn mdl_cache_type(&self, mdl: *const MDL) -> Option<dxgk_sys::DXGK_MEMORY_CACHING_TYPE> {
        self.state
            .mem()
            .mdl_allocs
            .values()
            .find(|a| a.mdl == mdl as usize)
            .map(|a| dxgk_sys::DXGK_MEMORY_CACHING_TYPE(a.cache_type))
    }

    /// The physical PFNs behind a live DxgkCbAllocatePagesForMdl MDL (what the driver never
    /// sees in remapped mode).
    pub fn mdl_physical_pfns(&self, mdl: *const MDL) -> Option<Vec<u64>> {
        let mem = self.state.mem();
        let a = mem.mdl_allocs.values().find(|a| a.mdl == mdl as usize)?;
        Some(
            (0..a.region.pages)
                .map(|i| mem.host_pfn[&a.region.page(i)])
                .collect(),
        )
    }

    /// The logical pages the IOMMU maps for contiguous block `handle` (not discoverable by the
    /// driver in remapped mode; for device-side tests).
    pub fn contiguous_logical_pages(&self, handle: dxgk_sys::HANDLE) -> Option<Vec<u64>> {
        self.state
            .mem()
            .contig
            .get(&(handle as usize))
            .map(|c| c.logical.clone())
    }

    /// The logical pages of IOMMU mapping `handle` (for device-side tests).
    pub fn mapping_logical_pages(&self, handle: dxgk_sys::HANDLE) -> Option<Vec<u64>> {
        self.state
            .mem()
            .maps
            .get(&(handle as usize))
            .map(|c| c.logical.clone())
    }
}

#[cfg(feature = "rgpu-hw")]
impl rgpu_hw::bus::DmaBus for Dma {
    fn read(
        &mut self,
        logical_addr: u64,
        buf: &mut [u8],
        source: rgpu_hw::bus::DmaSource,
    ) -> Result<(), rgpu_hw::bus::DmaFault> {
        Dma::read(self, logical_addr, buf, source).map_err(to_rgpu_fault)
    }

    fn write(
        &mut self,
        logical_addr: u64,
        data: &[u8],
        source: rgpu_hw::bus::DmaSource,
    ) -> Result<(), rgpu_hw::bus::DmaFault> {
        Dma::write(self, logical_addr, data, source).map_err(to_rgpu_fault)
    }

    fn copy(
        &mut self,
        dst: u64,
        src: u64,
        len: usize,
        _scratch: &mut [u8],
    ) -> Result<(), (rgpu_hw::bus::DmaFault, bool)> {
        Dma::copy(self, dst, src, len).map_err(|(f, w)| (to_rgpu_fault(f), w))
    }
}

#[cfg(feature = "rgpu-hw")]
fn to_rgpu_fault(f: IommuFault) -> rgpu_hw::bus::DmaFault {
    rgpu_hw::bus::DmaFault {
        logical_addr: f.logical_addr,
        kind: match f.kind {
            IommuFaultKind::NotMapped => rgpu_hw::bus::DmaFaultKind::NotMapped,
            IommuFaultKind::ReadOnly => rgpu_hw::bus::DmaFaultKind::ReadOnly,
        },
    }
}

// ---- memory the simulated VidMm owns ----------------------------------------------------------

/// System memory owned by the simulated VidMm ([`crate::vidmm`]), not by the driver: host
/// frames with scattered physical PFNs, mapped in one adapter's IOMMU for their whole life
/// (logical == physical in [`IommuMode::Identity`], a separate range in
/// [`IommuMode::Remapped`]). Not an injection point and not part of the driver's leak checks:
/// it stands for what Dxgkrnl allocates for itself (page tables, paging buffers, allocation
/// backing). Freed with [`Machine::vidmm_free`]. Per-page overhead is one logical page number
/// plus the IOMMU and frame-table entries.
#[derive(Debug)]
pub struct VidmmMemory {
    handle: usize,
    adapter: AdapterId,
    base: usize,
    logical: Vec<u64>,
}

impl VidmmMemory {
    /// Number of 4 KiB pages.
    pub fn pages(&self) -> usize {
        self.logical.len()
    }

    /// Logical (device) page number of page `i`.
    pub fn logical_page(&self, i: usize) -> u64 {
        self.logical[i]
    }

    /// Logical page numbers of every page, in order.
    pub fn logical_pages(&self) -> &[u64] {
        &self.logical
    }

    /// The CPU address of byte `offset` (valid until [`Machine::vidmm_free`]). What VidMm passes
    /// as `PageTableAddress.CpuVirtual` or `pDmaBuffer`.
    pub fn cpu_address(&self, offset: usize) -> *mut u8 {
        assert!(offset <= self.logical.len() * PAGE, "offset out of range");
        (self.base + offset) as *mut u8
    }

    /// CPU read of `buf.len()` bytes at `offset`.
    pub fn read(&self, offset: usize, buf: &mut [u8]) {
        assert!(
            offset + buf.len() <= self.logical.len() * PAGE,
            "read out of range"
        );
        // SAFETY: inside the live region (checked above); the device writes it only while the
        // simulator runs it on this thread, never concurrently with this copy.
        let src = unsafe { std::slice::from_raw_parts(self.cpu_address(offset), buf.len()) };
        buf.copy_from_slice(src);
    }

    /// CPU write of `data` at `offset`.
    pub fn write(&self, offset: usize, data: &[u8]) {
        assert!(
            offset + data.len() <= self.logical.len() * PAGE,
            "write out of range"
        );
        // SAFETY: as in `read`.
        let dst = unsafe { std::slice::from_raw_parts_mut(self.cpu_address(offset), data.len()) };
        dst.copy_from_slice(data);
    }
}

pub(crate) struct VidmmRegion {
    region: Region,
    logical: Vec<u64>,
    adapter: AdapterId,
}

impl Machine {
    /// Allocates `pages` pages of VidMm-owned memory mapped in `adapter`'s IOMMU ([`VidmmMemory`]).
    /// `zero`: zero-filled, else filled with [`FRESH_PAGE_FILL`]. None when the machine's
    /// physical memory ([`PHYSICAL_MEMORY_LIMIT`]) is exhausted.
    pub fn vidmm_allocate(
        &self,
        adapter: AdapterId,
        pages: usize,
        zero: bool,
    ) -> Option<VidmmMemory> {
        self.vidmm_allocate_runs(adapter, pages, zero, false)
    }

    /// [`Machine::vidmm_allocate`] in 64 KiB pages: `pages` (a multiple of [`PAGES_PER_64K`])
    /// come in runs of 16 that are physically and logically contiguous and 64 KiB-aligned — what
    /// VidMm needs to map them with 64 KiB PTEs. The runs themselves are scattered.
    pub fn vidmm_allocate_64k(
        &self,
        adapter: AdapterId,
        pages: usize,
        zero: bool,
    ) -> Option<VidmmMemory> {
        assert!(
            pages.is_multiple_of(PAGES_PER_64K),
            "64 KiB VidMm allocation of {pages} pages"
        );
        self.vidmm_allocate_runs(adapter, pages, zero, true)
    }

    fn vidmm_allocate_runs(
        &self,
        adapter: AdapterId,
        pages: usize,
        zero: bool,
        large: bool,
    ) -> Option<VidmmMemory> {
        assert!(pages > 0, "empty VidMm allocation");
        let mut mem = self.state.mem();
        if mem.bytes_in_use + pages * PAGE > PHYSICAL_MEMORY_LIMIT {
            return None;
        }
        let run = if large { PAGES_PER_64K as u64 } else { 1 };
        let pfns = mem.scattered_pfns(pages, 0, u64::MAX >> 1, run)?;
        let region = Region::new(pages, zero)?;
        mem.register_frames(&pfns, &region);
        let host: Vec<(u64, usize)> = pfns
            .iter()
            .enumerate()
            .map(|(i, &p)| (p, region.page(i)))
            .collect();
        let logical = mem
            .domain(adapter, self.state.config.iommu)
            .map_runs(&host, run);
        drop(host);
        let h = mem.handle();
        mem.bytes_in_use += pages * PAGE;
        let base = region.base;
        mem.vidmm.insert(
            h,
            VidmmRegion {
                region,
                logical: logical.clone(),
                adapter,
            },
        );
        Some(VidmmMemory {
            handle: h,
            adapter,
            base,
            logical,
        })
    }

    /// Unmaps VidMm-owned memory from the IOMMU and frees it (pages filled with
    /// [`FREED_PAGE_FILL`]).
    pub fn vidmm_free(&self, memory: VidmmMemory) {
        let mut mem = self.state.mem();
        let Some(r) = mem.vidmm.remove(&memory.handle) else {
            panic!("dxgk-sim: VidMm memory {:#x} freed twice", memory.handle);
        };
        debug_assert_eq!(r.adapter, memory.adapter);
        mem.domain(r.adapter, self.state.config.iommu)
            .unmap(&r.logical);
        mem.unregister_frames(&r.region);
        mem.bytes_in_use -= r.region.pages * PAGE;
        drop(mem);
        r.region.release();
    }

    /// Live VidMm-owned allocations (all adapters).
    pub fn vidmm_allocations(&self) -> usize {
        self.state.mem().vidmm.len()
    }
}
