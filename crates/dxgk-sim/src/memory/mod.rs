//! Physical memory, MDLs, system-VA mappings and the IOMMU: the layers below Dxgkrnl.
//!
//! * [`mm`]: the ntoskrnl memory manager — physical frames, MDLs (IoAllocateMdl,
//!   MmBuildMdlForNonPagedPool, MmMapLockedPagesSpecifyCache, …), page allocations for MDLs and
//!   contiguous memory.
//! * [`iommu`]: one logical address space per [`DomainId`], strict map/unmap, MDL mappings, and
//!   device accesses that fault instead of touching unmapped memory.
//! * The Dxgkrnl memory callbacks that drivers call (DxgkCbAllocatePagesForMdl, …) sit above both
//!   in [`crate::dxgkrnl::memory_callbacks`] (the WDDM 3.0 physical memory objects and ADLs in
//!   [`crate::dxgkrnl::physical_memory`]), device DMA ([`crate::Dma`]) in
//!   [`crate::dxgkrnl::dma`], and VidMm's own memory in [`crate::vidmm::memory`]. These layers
//!   map adapters to domains; nothing here knows what an adapter is.
//!
//! Mm and IOMMU state share one lock (`mem`, see [`crate::lock_order`]): freeing an MDL must
//! tear down its IOMMU mappings atomically.
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
//! * **IOMMU.** One logical address space per adapter. Device DMA goes through [`crate::Dma`]:
//!   an access to an unmapped logical page, or a write to a read-only one, records an
//!   [`crate::IommuFault`] (and a [`crate::Rule::IommuFault`] finding) and does not touch
//!   memory.

pub mod iommu;
pub mod mm;

use std::alloc::{alloc, alloc_zeroed, dealloc, Layout};
use std::collections::{HashMap, VecDeque};

use dxgk_sys::MDL;

pub use iommu::{DomainId, IommuFaultKind, IommuMode};

use crate::machine::MachineState;
use crate::verifier::{Finding, Rule};

/// 4 KiB.
pub const PAGE: usize = 4096;
/// First logical page number handed out in [`IommuMode::Remapped`] (logical address
/// 0x40_0000_0000).
pub const REMAPPED_LOGICAL_BASE: u64 = 0x40_0000_0000 >> 12;
/// 4 KiB pages in a 64 KiB page.
pub const PAGES_PER_64K: usize = 16;

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

pub(crate) const MDL_HEADER: usize = std::mem::size_of::<MDL>();

/// `runs` runs of `run` consecutive page numbers from `start`, the runs in descending order with
/// a run-sized gap between them: contiguous where a 64 KiB page needs it, nowhere else.
pub(crate) fn scattered_runs(start: u64, runs: u64, run: u64) -> Vec<u64> {
    (0..runs)
        .flat_map(|k| {
            let base = start + 2 * run * (runs - 1 - k);
            base..base + run
        })
        .collect()
}

/// A page-aligned host region standing in for physical pages.
pub(crate) struct Region {
    pub(crate) base: usize,
    pub(crate) pages: usize,
}

impl Region {
    fn layout(pages: usize) -> Layout {
        Layout::from_size_align(pages * PAGE, PAGE).expect("page layout")
    }

    pub(crate) fn new(pages: usize, zero: bool) -> Option<Region> {
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

    pub(crate) fn page(&self, i: usize) -> usize {
        self.base + i * PAGE
    }

    pub(crate) fn release(self) {
        let p = self.base as *mut u8;
        // SAFETY: the region is live and `pages * PAGE` bytes long.
        unsafe { p.write_bytes(FREED_PAGE_FILL, self.pages * PAGE) };
        // SAFETY: allocated in `Region::new` with this layout.
        unsafe { dealloc(p, Self::layout(self.pages)) };
    }
}

/// Host storage for an MDL header + PFN array.
pub(crate) fn alloc_mdl(pages: usize) -> *mut MDL {
    let layout = Layout::from_size_align(MDL_HEADER + pages * 8, 16).expect("mdl layout");
    // SAFETY: non-zero size.
    unsafe { alloc_zeroed(layout) }.cast()
}

pub(crate) fn free_mdl(mdl: *mut MDL, pages: usize) {
    // A system mapping a driver made of an MDL the system owns (VidMm's MAP_APERTURE_SEGMENT
    // MDLs, mapped with MmGetSystemAddressForMdlSafe) lives in the MDL and goes with it when
    // its owner tears it down (as MmUnlockPages unmaps MDL_MAPPED_TO_SYSTEM_VA). The callers
    // that free a driver's own MDLs check for live mappings themselves and report them.
    if let Some(m) = crate::machine::try_current() {
        m.mem().mm.take_sys_map_of(mdl as usize);
    }
    let layout = Layout::from_size_align(MDL_HEADER + pages * 8, 16).expect("mdl layout");
    // SAFETY: allocated by `alloc_mdl(pages)`.
    unsafe { dealloc(mdl.cast(), layout) };
}

/// Pages an MDL spans.
///
/// # Safety
/// `mdl` must be a readable MDL header.
pub(crate) unsafe fn mdl_span(mdl: *const MDL) -> usize {
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
pub(crate) unsafe fn mdl_pfns(mdl: *mut MDL, span: usize) -> Vec<u64> {
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
pub(crate) unsafe fn mdl_checksum(mdl: *mut MDL, span: usize) -> u64 {
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

/// What kind of memory handle a live or retired handle is (for "double free" and "wrong
/// callback" diagnostics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HandleKind {
    /// Pages for an MDL (DxgkCbAllocatePagesForMdl).
    Mdl,
    /// Contiguous memory (DxgkCbAllocateContiguousMemory).
    Contig,
    /// An IOMMU mapping of an MDL (DxgkCbMapMdlToIoMmu).
    Map,
    /// A mapping torn down because its MDL was freed while mapped (already reported).
    OrphanedMap,
    /// Memory the simulator's VidMm owns.
    Kernel,
    /// A physical memory object (DxgkCbCreatePhysicalMemoryObject).
    PhysicalObject,
    /// A physical memory object opened on an adapter (its hAdapterMemoryObject).
    AdapterObject,
}

/// The memory handles of a machine: one namespace for every kind, with the kinds of the live
/// ones and of the last 4096 retired ones.
#[derive(Default)]
pub(crate) struct Handles {
    next: usize,
    live: HashMap<usize, HandleKind>,
    retired: HashMap<usize, HandleKind>,
    retired_order: VecDeque<usize>,
}

impl Handles {
    /// A fresh handle of `kind`.
    pub(crate) fn issue(&mut self, kind: HandleKind) -> usize {
        self.next += 1;
        let h = 0xD6C0_0000_0000 + self.next * 16;
        self.live.insert(h, kind);
        h
    }

    /// Records that live handle `h` ended as `what`.
    pub(crate) fn retire(&mut self, h: usize, what: HandleKind) {
        self.live.remove(&h);
        self.retired.insert(h, what);
        self.retired_order.push_back(h);
        if self.retired_order.len() > 4096 {
            if let Some(old) = self.retired_order.pop_front() {
                self.retired.remove(&old);
            }
        }
    }

    /// How retired handle `h` ended, if it is remembered.
    pub(crate) fn retired(&self, h: usize) -> Option<HandleKind> {
        self.retired.get(&h).copied()
    }

    /// Turns the record of a retired handle into `what` (an orphaned mapping the driver has
    /// now unmapped).
    pub(crate) fn reretire(&mut self, h: usize, what: HandleKind) {
        self.retired.insert(h, what);
    }

    /// Forgets live handle `h` without remembering it as retired.
    pub(crate) fn forget(&mut self, h: usize) {
        self.live.remove(&h);
    }

    /// The kind of live handle `h`.
    pub(crate) fn live(&self, h: usize) -> Option<HandleKind> {
        self.live.get(&h).copied()
    }
}

/// The Mm and IOMMU state of a machine, behind its `mem` lock.
#[derive(Default)]
pub(crate) struct MemState {
    pub(crate) mm: mm::Mm,
    pub(crate) iommu: iommu::Iommu,
    pub(crate) handles: Handles,
    /// Memory the simulator itself owns ([`crate::VidmmMemory`]), by handle.
    pub(crate) kernel_allocs: HashMap<usize, KernelAlloc>,
}

/// Memory the simulator owns for itself (what Dxgkrnl allocates for VidMm: page tables, paging
/// buffers, allocation backing): mapped in one domain for its whole life.
pub(crate) struct KernelAlloc {
    pub(crate) region: Region,
    pub(crate) logical: Vec<u64>,
    pub(crate) domain: DomainId,
}

/// A [`Rule::ResourceLeak`] finding found at teardown (the site is where it was allocated).
pub(crate) fn leak(call: &'static str, detail: String, driver_site: String) -> Finding {
    Finding {
        rule: Rule::ResourceLeak,
        call,
        detail,
        driver_site,
    }
}

pub(crate) fn misuse(m: &MachineState, call: &'static str, detail: String) {
    m.report(Finding::here(Rule::MdlMisuse, call, detail));
}

pub(crate) fn invalid(m: &MachineState, call: &'static str, detail: impl Into<String>) {
    m.report(Finding::here(Rule::InvalidArgument, call, detail));
}

impl MemState {
    /// Tears down every IOMMU mapping of `mdl` (its MDL is going away under it) and retires
    /// their handles as orphaned; the caller reports them.
    pub(crate) fn orphan_mappings_of(
        &mut self,
        mdl: usize,
        mode: IommuMode,
    ) -> Vec<(usize, iommu::MdlMapping)> {
        let mut out = Vec::new();
        while let Some(mh) = self.iommu.mapping_of_mdl(mdl) {
            let map = self.iommu.remove_mapping(mh, mode).expect("present");
            self.handles.retire(mh, HandleKind::OrphanedMap);
            out.push((mh, map));
        }
        out
    }
}

/// Called by ExFreePoolWithTag: reports a pool block whose pages a driver MDL still maps in the
/// IOMMU (the device could still reach memory the pool will reuse).
pub(crate) fn check_pool_free(m: &MachineState, user: usize, size: usize) {
    let mem = m.mem();
    let hit = mem
        .iommu
        .mapping_over(user, size)
        .map(|(h, map)| (h, map.site.clone()));
    drop(mem);
    if let Some((h, site)) = hit {
        misuse(
            m,
            "ExFreePoolWithTag",
            format!("pool block {user:#x} freed while an MDL over it is mapped to the IOMMU (handle {h:#x}, mapped at {site})"),
        );
    }
}
