//! The six WDDM 2.4 memory callbacks (DxgkCbAllocatePagesForMdl, DxgkCbFreePagesFromMdl,
//! DxgkCbMapMdlToIoMmu, DxgkCbUnmapMdlFromIoMmu, DxgkCbAllocateContiguousMemory,
//! DxgkCbFreeContiguousMemory), called by the DXGKRNL_INTERFACE thunks with the adapter
//! resolved. Each validates what Windows documents, then allocates from Mm and maps in the
//! adapter's IOMMU domain ([`crate::memory`]); the model is described there.
//!
//! Dxgkrnl's own records (which adapter owns which handle, the caching type, the call site)
//! are `CallbackMemory`, behind the `dxgk memory` lock, taken before `mem`
//! ([`crate::lock_order`]).

use std::collections::HashMap;

use dxgk_sys::{MDL, PVOID};

use super::AdapterId;
use crate::machine::{Machine, MachineState};
use crate::memory::iommu::MdlMapping;
use crate::memory::mm::write_pfn_array;
use crate::memory::{
    free_mdl, invalid, leak, mdl_checksum, mdl_pfns, mdl_span, misuse, HandleKind, Handles, Region,
    MAX_MDL_BYTES, MM_DONT_ZERO_ALLOCATION, PAGE,
};
use crate::verifier::{driver_call_site, Finding, Rule};

pub(crate) struct MdlAlloc {
    adapter: AdapterId,
    mdl: usize,
    span: usize,
    logical: Vec<u64>,
    cache_type: i32,
    site: String,
}

pub(crate) struct ContigAlloc {
    adapter: AdapterId,
    region: Region,
    logical: Vec<u64>,
    site: String,
}

/// Dxgkrnl's records of the memory drivers got through the callbacks, by handle.
#[derive(Default)]
pub(crate) struct CallbackMemory {
    mdl_allocs: HashMap<usize, MdlAlloc>,
    contig: HashMap<usize, ContigAlloc>,
    /// The WDDM 3.0 physical memory objects, ADLs and their CPU mappings.
    pub(crate) pmo: super::physical_memory::PhysicalMemory,
}

fn large(v: &dxgk_sys::LARGE_INTEGER) -> i64 {
    // SAFETY: every bit pattern of the union is a valid i64.
    unsafe { v.QuadPart }
}

fn unknown_handle(handles: &Handles, h: usize, expected: HandleKind) -> String {
    match handles.retired(h) {
        Some(r) if r == expected => match expected {
            HandleKind::Map | HandleKind::OrphanedMap => format!("double unmap of handle {h:#x}"),
            _ => format!("double free of handle {h:#x}"),
        },
        Some(_) => format!("handle {h:#x} is a stale handle of another kind"),
        None if matches!(
            handles.live(h),
            Some(HandleKind::Mdl | HandleKind::Contig | HandleKind::Map)
        ) =>
        {
            format!("handle {h:#x} belongs to another callback")
        }
        None => format!("unknown handle {h:#x}"),
    }
}

/// Learn: for a driver that supports DMA remapping the WDDM 2.4 memory callbacks "are
/// deprecated and can't be used". Reported (the call still proceeds) when Dxgkrnl accepted
/// remapping for `adapter` before StartDevice.
fn check_not_remapping(m: &MachineState, adapter: AdapterId, call: &'static str) {
    let remapping = m
        .port()
        .adapters
        .get(adapter.0 as usize)
        .is_some_and(|a| a.info.dma_remapping);
    if remapping {
        m.report(Finding::here(
            Rule::MdlMisuse,
            call,
            format!(
                "{call} on an adapter that opted in to WDDM 3.0 DMA remapping \
                 (DmaRemappingSupported accepted before StartDevice): use physical memory \
                 objects and ADLs"
            ),
        ));
    }
}

pub(crate) fn allocate_pages_for_mdl(
    m: &MachineState,
    adapter: AdapterId,
    args: &mut dxgk_sys::DXGKARGCB_ALLOCATEPAGESFORMDL,
) -> i32 {
    const CALL: &str = "DxgkCbAllocatePagesForMdl";
    check_not_remapping(m, adapter, CALL);
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
    let mut cb = m.dxgk_memory();
    let mut mem = m.mem();
    let zero = args.Flags & MM_DONT_ZERO_ALLOCATION == 0;
    // All-or-nothing (MM_ALLOCATE_FULLY_REQUIRED).
    let Some((mdl, host)) = mem
        .mm
        .allocate_pages_mdl(pages, low as u64, high as u64, zero)
    else {
        return dxgk_sys::STATUS_INSUFFICIENT_RESOURCES;
    };
    let logical = mem
        .iommu
        .domain(adapter.domain(), m.config.iommu)
        .map(&host);
    // SAFETY: `mdl` is the fresh MDL for `pages` pages Mm just built.
    unsafe { write_pfn_array(mdl, &logical) };
    let h = mem.handles.issue(HandleKind::Mdl);
    drop(mem);
    cb.mdl_allocs.insert(
        h,
        MdlAlloc {
            adapter,
            mdl: mdl as usize,
            span: pages,
            logical,
            cache_type: caching,
            site: driver_call_site(),
        },
    );
    args.hMemoryHandle = h as PVOID;
    args.pMdl = mdl;
    dxgk_sys::STATUS_SUCCESS
}

pub(crate) fn free_pages_from_mdl(m: &MachineState, adapter: AdapterId, h: usize) -> i32 {
    const CALL: &str = "DxgkCbFreePagesFromMdl";
    let mut cb = m.dxgk_memory();
    let mut mem = m.mem();
    let Some(a) = cb.mdl_allocs.remove(&h) else {
        let d = unknown_handle(&mem.handles, h, HandleKind::Mdl);
        drop(mem);
        drop(cb);
        misuse(m, CALL, d);
        return dxgk_sys::STATUS_INVALID_PARAMETER;
    };
    if a.adapter != adapter {
        cb.mdl_allocs.insert(h, a);
        drop(mem);
        drop(cb);
        misuse(m, CALL, format!("handle {h:#x} belongs to another adapter"));
        return dxgk_sys::STATUS_INVALID_PARAMETER;
    }
    let mut found = Vec::new();
    if let Some(va) = mem.mm.take_sys_map_of(a.mdl) {
        found.push(format!(
            "MDL {:#x} freed while mapped to system VA {va:#x} (call MmUnmapLockedPages first)",
            a.mdl
        ));
    }
    for (mh, _) in mem.orphan_mappings_of(a.mdl, m.config.iommu) {
        found.push(format!(
            "MDL {:#x} freed while mapped to the IOMMU (DxgkCbMapMdlToIoMmu handle {mh:#x} still live)",
            a.mdl
        ));
    }
    mem.iommu
        .domain(a.adapter.domain(), m.config.iommu)
        .unmap(&a.logical);
    let pages = mem.mm.free_pages_mdl(a.mdl);
    mem.handles.retire(h, HandleKind::Mdl);
    drop(mem);
    drop(cb);
    if let Some(p) = pages {
        p.region.release();
    }
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
    check_not_remapping(m, adapter, CALL);
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
    if let Some(p) = mem.mm.pages_mdls.get(&(mdl as usize)) {
        span = p.span;
        host = p.host.clone();
    } else {
        // SAFETY: the driver passes an MDL it built; we read its header and PFN array.
        span = unsafe { mdl_span(mdl) };
        // SAFETY: as above, with `span` entries.
        let pfns = unsafe { mdl_pfns(mdl, span) };
        let mut v = Vec::with_capacity(span);
        for p in pfns {
            let Some(hp) = mem.mm.host_of_pfn(p) else {
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
    let domain = adapter.domain();
    let logical = mem.iommu.domain(domain, m.config.iommu).map(&host);
    let h = mem.handles.issue(HandleKind::Map);
    mem.iommu.insert_mapping(
        h,
        MdlMapping {
            domain,
            mdl: mdl as usize,
            va: (va, va + hdr.ByteCount as usize),
            logical,
            checksum,
            span,
            site: driver_call_site(),
        },
    );
    args.hMemoryHandle = h as PVOID;
    dxgk_sys::STATUS_SUCCESS
}

pub(crate) fn unmap_mdl_from_iommu(m: &MachineState, adapter: AdapterId, h: usize) {
    const CALL: &str = "DxgkCbUnmapMdlFromIoMmu";
    let mut mem = m.mem();
    let Some(map) = mem.iommu.maps.remove(&h) else {
        if mem.handles.retired(h) == Some(HandleKind::OrphanedMap) {
            mem.handles.reretire(h, HandleKind::Map);
            return; // already reported when its MDL was freed
        }
        let d = unknown_handle(&mem.handles, h, HandleKind::Map);
        drop(mem);
        misuse(m, CALL, d);
        return;
    };
    if map.domain != adapter.domain() {
        mem.iommu.maps.insert(h, map);
        drop(mem);
        misuse(m, CALL, format!("handle {h:#x} belongs to another adapter"));
        return;
    }
    // SAFETY: the MDL must still be alive while mapped (the driver's contract; a freed MDL is
    // reported by IoFreeMdl / FreePagesFromMdl and its mapping torn down there).
    let now = unsafe { mdl_checksum(map.mdl as *mut MDL, map.span) };
    mem.iommu
        .domain(map.domain, m.config.iommu)
        .unmap(&map.logical);
    mem.handles.retire(h, HandleKind::Map);
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
    let mut cb = m.dxgk_memory();
    let mut mem = m.mem();
    let Some((region, host)) =
        mem.mm
            .allocate_contiguous(pages, low as u64, high as u64, boundary as u64)
    else {
        return dxgk_sys::STATUS_NO_MEMORY;
    };
    let logical = mem
        .iommu
        .domain(adapter.domain(), m.config.iommu)
        .map(&host);
    let h = mem.handles.issue(HandleKind::Contig);
    drop(mem);
    args.pMemory = region.base as PVOID;
    args.hMemoryHandle = h as PVOID;
    cb.contig.insert(
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
    let mut cb = m.dxgk_memory();
    let mut mem = m.mem();
    let Some(c) = cb.contig.remove(&h) else {
        let d = unknown_handle(&mem.handles, h, HandleKind::Contig);
        drop(mem);
        drop(cb);
        misuse(m, CALL, d);
        return dxgk_sys::STATUS_INVALID_PARAMETER;
    };
    if c.adapter != adapter {
        cb.contig.insert(h, c);
        drop(mem);
        drop(cb);
        misuse(m, CALL, format!("handle {h:#x} belongs to another adapter"));
        return dxgk_sys::STATUS_INVALID_PARAMETER;
    }
    mem.iommu
        .domain(adapter.domain(), m.config.iommu)
        .unmap(&c.logical);
    mem.mm.retire_region(&c.region);
    mem.handles.retire(h, HandleKind::Contig);
    drop(mem);
    drop(cb);
    c.region.release();
    dxgk_sys::STATUS_SUCCESS
}

/// Everything the driver still holds through the memory callbacks (on `adapter`, or
/// anywhere): MDL pages, contiguous blocks, IOMMU mappings.
pub(crate) fn leak_findings(
    m: &MachineState,
    adapter: Option<AdapterId>,
    call: &'static str,
) -> Vec<Finding> {
    let cb = m.dxgk_memory();
    let mem = m.mem();
    let on = |a: AdapterId| adapter.is_none_or(|x| x == a);
    let mut out = super::physical_memory::leak_findings(&cb, adapter, call);
    for (h, a) in &cb.mdl_allocs {
        if on(a.adapter) {
            let pages = a.span;
            let detail = format!(
                "DxgkCbAllocatePagesForMdl allocation {h:#x} ({pages} pages) never freed with DxgkCbFreePagesFromMdl"
            );
            out.push(leak(call, detail, format!("allocated at {}", a.site)));
        }
    }
    for (h, c) in &cb.contig {
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
    for (h, map) in &mem.iommu.maps {
        if adapter.is_none_or(|x| x.domain() == map.domain) {
            out.push(leak(
                call,
                format!(
                    "DxgkCbMapMdlToIoMmu mapping {h:#x} ({} pages) never unmapped",
                    map.logical.len()
                ),
                format!("mapped at {}", map.site),
            ));
        }
    }
    out
}

impl Machine {
    /// Live DxgkCbAllocatePagesForMdl allocations.
    pub fn live_mdl_allocations(&self) -> usize {
        self.state.dxgk_memory().mdl_allocs.len()
    }

    /// Live DxgkCbMapMdlToIoMmu mappings.
    pub fn live_iommu_mappings(&self) -> usize {
        self.state.mem().iommu.maps.len()
    }

    /// The most DxgkCbMapMdlToIoMmu mappings live at once so far.
    pub fn peak_iommu_mappings(&self) -> usize {
        self.state.mem().iommu.peak_maps
    }

    /// Logical pages `adapter`'s IOMMU maps now (driver mappings, contiguous memory and
    /// VidMm-owned memory alike), and the most it mapped at once so far.
    pub fn iommu_mapped_pages(&self, adapter: AdapterId) -> (usize, usize) {
        self.state.mem().iommu.mapped_pages(adapter.domain())
    }

    /// Live DxgkCbAllocateContiguousMemory blocks.
    pub fn live_contiguous_allocations(&self) -> usize {
        self.state.dxgk_memory().contig.len()
    }

    /// The caching type recorded for a live DxgkCbAllocatePagesForMdl allocation, by MDL.
    pub fn mdl_cache_type(&self, mdl: *const MDL) -> Option<dxgk_sys::DXGK_MEMORY_CACHING_TYPE> {
        self.state
            .dxgk_memory()
            .mdl_allocs
            .values()
            .find(|a| a.mdl == mdl as usize)
            .map(|a| dxgk_sys::DXGK_MEMORY_CACHING_TYPE(a.cache_type))
    }

    /// The physical PFNs behind a live DxgkCbAllocatePagesForMdl MDL (what the driver never
    /// sees in remapped mode).
    pub fn mdl_physical_pfns(&self, mdl: *const MDL) -> Option<Vec<u64>> {
        let mem = self.state.mem();
        let p = mem.mm.pages_mdls.get(&(mdl as usize))?;
        Some(p.host.iter().map(|&(pfn, _)| pfn).collect())
    }

    /// The logical pages the IOMMU maps for contiguous block `handle` (not discoverable by the
    /// driver in remapped mode; for device-side tests).
    pub fn contiguous_logical_pages(&self, handle: dxgk_sys::HANDLE) -> Option<Vec<u64>> {
        self.state
            .dxgk_memory()
            .contig
            .get(&(handle as usize))
            .map(|c| c.logical.clone())
    }

    /// The logical pages of IOMMU mapping `handle` (for device-side tests).
    pub fn mapping_logical_pages(&self, handle: dxgk_sys::HANDLE) -> Option<Vec<u64>> {
        self.state
            .mem()
            .iommu
            .maps
            .get(&(handle as usize))
            .map(|c| c.logical.clone())
    }
}
