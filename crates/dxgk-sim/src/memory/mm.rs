//! The ntoskrnl memory manager: physical frames (PFN ↔ host page), page allocations for MDLs
//! and contiguous memory, driver MDLs (IoAllocateMdl, MmBuildMdlForNonPagedPool, IoFreeMdl) and
//! system-VA mappings (MmMapLockedPagesSpecifyCache, MmUnmapLockedPages).

use std::collections::HashMap;

use dxgk_sys::{BOOLEAN, CSHORT, IRP, KPROCESSOR_MODE, MDL, MEMORY_CACHING_TYPE, PVOID, ULONG};

use super::{
    alloc_mdl, free_mdl, invalid, leak, mdl_pfns, mdl_span, misuse, scattered_runs, Region,
    FIRST_PHYSICAL_PFN, MDL_HEADER, PAGE, PHYSICAL_MEMORY_LIMIT,
};
use crate::fault::inject;
use crate::machine::current;
use crate::ntoskrnl::irql::require_irql_at_most;
use crate::verifier::{driver_call_site, Finding};

struct DriverMdl {
    span: usize,
    site: String,
}

/// Pages allocated for an MDL (what MmAllocatePagesForMdlEx returns), by MDL address.
pub(crate) struct PagesMdl {
    pub(crate) region: Region,
    pub(crate) span: usize,
    /// (physical PFN, host page) of each page.
    pub(crate) host: Vec<(u64, usize)>,
}

/// Per-machine memory-manager state.
#[derive(Default)]
pub(crate) struct Mm {
    next_pfn: u64,
    frames: HashMap<u64, usize>,
    pub(crate) host_pfn: HashMap<usize, u64>,
    bytes_in_use: usize,
    driver_mdls: HashMap<usize, DriverMdl>,
    /// MDLs over allocated pages ([`Mm::allocate_pages_mdl`]), by MDL address.
    pub(crate) pages_mdls: HashMap<usize, PagesMdl>,
    /// System VA → (MDL, mapping site), for MmMapLockedPagesSpecifyCache mappings.
    sys_maps: HashMap<usize, (usize, String)>,
    /// The system VAs in `sys_maps` that map an MDL the system owns (VidMm's): they go with the
    /// MDL when its owner frees it, so they are not the driver's leaks.
    system_mdl_maps: std::collections::HashSet<usize>,
}

impl Mm {
    /// Installed memory starts at `pfn` (at least [`FIRST_PHYSICAL_PFN`]).
    pub(crate) fn start_at(&mut self, pfn: u64) {
        self.next_pfn = self.next_pfn.max(pfn);
    }

    /// Whether `pages` more pages fit in the machine's physical memory.
    fn fits(&self, pages: usize) -> bool {
        self.bytes_in_use + pages * PAGE <= PHYSICAL_MEMORY_LIMIT
    }

    /// Physical PFNs for `n` new pages within `[low, high]`, in `run`-aligned runs of `run`
    /// consecutive pages (`n` a multiple of `run`): 1 for ordinary allocations — never two
    /// consecutive pages — and [`super::PAGES_PER_64K`] for 64 KiB pages. The runs are scattered
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

    /// Backs `pfns` with a new region and charges it: (the region, each page's (PFN, host
    /// page)). None when the host allocation fails.
    fn back(&mut self, pfns: &[u64], zero: bool) -> Option<(Region, Vec<(u64, usize)>)> {
        let region = Region::new(pfns.len(), zero)?;
        for (i, &p) in pfns.iter().enumerate() {
            self.frames.insert(p, region.page(i));
            self.host_pfn.insert(region.page(i), p);
        }
        self.bytes_in_use += region.pages * PAGE;
        let host = pfns
            .iter()
            .enumerate()
            .map(|(i, &p)| (p, region.page(i)))
            .collect();
        Some((region, host))
    }

    /// `pages` scattered pages in runs of `run` within `[low, high]` (see
    /// [`Mm::scattered_pfns`]); None when physical memory is exhausted.
    pub(crate) fn allocate_scattered(
        &mut self,
        pages: usize,
        low: u64,
        high: u64,
        run: u64,
        zero: bool,
    ) -> Option<(Region, Vec<(u64, usize)>)> {
        if !self.fits(pages) {
            return None;
        }
        let pfns = self.scattered_pfns(pages, low, high, run)?;
        self.back(&pfns, zero)
    }

    /// `pages` physically contiguous zeroed pages within `[low, high]` not crossing
    /// `boundary` (MmAllocateContiguousMemorySpecifyCache).
    pub(crate) fn allocate_contiguous(
        &mut self,
        pages: usize,
        low: u64,
        high: u64,
        boundary: u64,
    ) -> Option<(Region, Vec<(u64, usize)>)> {
        if !self.fits(pages) {
            return None;
        }
        let pfns = self.contiguous_pfns(pages, low, high, boundary)?;
        self.back(&pfns, true)
    }

    /// Forgets the frames of `region` and uncharges it; the caller releases it (outside the
    /// lock).
    pub(crate) fn retire_region(&mut self, region: &Region) {
        for i in 0..region.pages {
            if let Some(p) = self.host_pfn.remove(&region.page(i)) {
                self.frames.remove(&p);
            }
        }
        self.bytes_in_use -= region.pages * PAGE;
    }

    /// MmAllocatePagesForMdlEx: scattered pages within `[low, high]` and a locked MDL over them
    /// whose PFN array the caller fills ([`write_pfn_array`]). None when memory is exhausted.
    pub(crate) fn allocate_pages_mdl(
        &mut self,
        pages: usize,
        low: u64,
        high: u64,
        zero: bool,
    ) -> Option<(*mut MDL, Vec<(u64, usize)>)> {
        let (region, host) = self.allocate_scattered(pages, low, high, 1, zero)?;
        let mdl = alloc_locked_mdl(pages);
        self.pages_mdls.insert(
            mdl as usize,
            PagesMdl {
                region,
                span: pages,
                host: host.clone(),
            },
        );
        Some((mdl, host))
    }

    /// Takes back the pages of an MDL from [`Mm::allocate_pages_mdl`]: the region to release
    /// and free the MDL with (outside the lock).
    pub(crate) fn free_pages_mdl(&mut self, mdl: usize) -> Option<PagesMdl> {
        let p = self.pages_mdls.remove(&mdl)?;
        self.retire_region(&p.region);
        Some(p)
    }

    /// Drops the system-VA mapping of `mdl`, if there is one, and returns its VA.
    pub(crate) fn take_sys_map_of(&mut self, mdl: usize) -> Option<usize> {
        self.purge_system_maps_of(mdl);
        let va = self
            .sys_maps
            .iter()
            .find(|(_, m)| m.0 == mdl)
            .map(|(va, _)| *va)?;
        self.sys_maps.remove(&va);
        self.system_mdl_maps.remove(&va);
        Some(va)
    }

    /// Drops the mappings recorded for a system-owned MDL at address `mdl`: such a mapping goes
    /// with its MDL, and an MDL at that address now is that one being freed or a new one (the
    /// host reused the address after the system freed the old MDL without the simulator seeing
    /// it, e.g. outside `Machine::enter`).
    pub(crate) fn purge_system_maps_of(&mut self, mdl: usize) {
        let stale: Vec<usize> = self
            .sys_maps
            .iter()
            .filter(|(va, m)| m.0 == mdl && self.system_mdl_maps.contains(*va))
            .map(|(va, _)| *va)
            .collect();
        for va in stale {
            self.sys_maps.remove(&va);
            self.system_mdl_maps.remove(&va);
        }
    }

    /// The host page behind physical page `pfn`.
    pub(crate) fn host_of_pfn(&self, pfn: u64) -> Option<usize> {
        self.frames.get(&pfn).copied()
    }

    /// Driver-global leftovers: MDLs from IoAllocateMdl and system-VA mappings.
    pub(crate) fn leak_findings(&self, call: &'static str) -> Vec<Finding> {
        let mut out = Vec::new();
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
                || self.pages_mdls.contains_key(mdl)
                || self.system_mdl_maps.contains(va)
            {
                continue;
            }
            out.push(leak(
                call,
                format!("system VA {va:#x} of MDL {mdl:#x} never unmapped (MmUnmapLockedPages)"),
                format!("mapped at {site}"),
            ));
        }
        out
    }
}

/// Writes `pfns` into the PFN array of `mdl`.
///
/// # Safety
/// `mdl` must be a live MDL with room for `pfns.len()` PFNs.
/// A fresh MDL of `pages` locked pages (no system VA, `StartVa` NULL, `ByteOffset` 0) whose PFN
/// array the caller fills ([`write_pfn_array`]); freed with [`super::free_mdl`].
pub(crate) fn alloc_locked_mdl(pages: usize) -> *mut MDL {
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
    mdl
}

pub(crate) unsafe fn write_pfn_array(mdl: *mut MDL, pfns: &[u64]) {
    // SAFETY: the caller guarantees a live MDL.
    let array = unsafe { dxgk_sys::MmGetMdlPfnArray(mdl) };
    // SAFETY: the caller guarantees room for `pfns.len()` entries.
    let array = unsafe { std::slice::from_raw_parts_mut(array, pfns.len()) };
    for (slot, &p) in array.iter_mut().zip(pfns) {
        *slot = p as usize;
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
    m.mem().mm.driver_mdls.insert(
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
    let Some(span) = mem.mm.driver_mdls.get(&(mdl as usize)).map(|d| d.span) else {
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
        .map(|i| mem.mm.pfn_of_host_page(h.StartVa as usize + i * PAGE))
        .collect();
    drop(mem);
    // SAFETY: a live MDL from IoAllocateMdl, with `span` PFN entries.
    unsafe { write_pfn_array(mdl, &pfns) };
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
    if mem.mm.pages_mdls.contains_key(&(mdl as usize)) {
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
    let Some(d) = mem.mm.driver_mdls.remove(&(mdl as usize)) else {
        drop(mem);
        misuse(
            &m,
            CALL,
            format!("{mdl:p} is not a live MDL from IoAllocateMdl (double free?)"),
        );
        return;
    };
    let mut found: Vec<String> = mem
        .orphan_mappings_of(mdl as usize, m.config.iommu)
        .into_iter()
        .map(|(mh, map)| {
            format!(
                "MDL {mdl:p} freed while mapped to the IOMMU (handle {mh:#x}, mapped at {})",
                map.site
            )
        })
        .collect();
    if let Some(va) = mem.mm.take_sys_map_of(mdl as usize) {
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
    let mm = &mut mem.mm;
    let mut system_mdl = false;
    // The MDL is not mapped (checked above): a mapping still recorded at its address is a
    // system MDL's that went with it.
    mm.purge_system_maps_of(mdl as usize);
    let base = if let Some(a) = mm.pages_mdls.get(&(mdl as usize)) {
        a.region.base
    } else if mm.driver_mdls.contains_key(&(mdl as usize)) {
        // SAFETY: live driver MDL.
        let span = unsafe { mdl_span(mdl) };
        // SAFETY: as above.
        let pfns = unsafe { mdl_pfns(mdl, span) };
        let hosts: Option<Vec<usize>> = pfns.iter().map(|&p| mm.host_of_pfn(p)).collect();
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
    } else if h.MdlFlags & dxgk_sys::MDL_PAGES_LOCKED != 0 {
        // An MDL the system built over locked pages (VidMm's MAP_APERTURE_SEGMENT MDLs): Mm maps
        // any such MDL. Every PFN must be a live frame, host-contiguous (simulator limitation).
        // SAFETY: the driver passes a valid MDL (its header was read above).
        let span = unsafe { mdl_span(mdl) };
        // SAFETY: as above.
        let pfns = unsafe { mdl_pfns(mdl, span) };
        let hosts: Option<Vec<usize>> = pfns.iter().map(|&p| mm.host_of_pfn(p)).collect();
        match hosts {
            Some(v) if v.windows(2).all(|w| w[1] == w[0] + PAGE) && !v.is_empty() => {
                system_mdl = true;
                v[0]
            }
            _ => {
                drop(mem);
                misuse(
                    &m,
                    CALL,
                    format!("{mdl:p}: locked-pages MDL whose PFNs are not live frames (or not host-contiguous: simulator limitation)"),
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
    mm.sys_maps.insert(va, (mdl as usize, driver_call_site()));
    if system_mdl {
        mm.system_mdl_maps.insert(va);
    }
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
    if mem.mm.sys_maps.get(&(base as usize)).map(|m| m.0) != Some(mdl as usize) {
        drop(mem);
        misuse(&m, CALL, format!("{base:p} is not a system VA mapping of MDL {mdl:p} (never mapped, or already unmapped)"));
        return;
    }
    mem.mm.sys_maps.remove(&(base as usize));
    mem.mm.system_mdl_maps.remove(&(base as usize));
    drop(mem);
    // SAFETY: a live MDL (it has a live mapping).
    let mut h = unsafe { mdl.read() };
    h.MdlFlags &= !dxgk_sys::MDL_MAPPED_TO_SYSTEM_VA;
    h.MappedSystemVa = std::ptr::null_mut();
    // SAFETY: as above.
    unsafe { mdl.write(h) };
}
