//! The WDDM 3.0 IOMMU DMA remapping memory callbacks: DxgkCbCreatePhysicalMemoryObject /
//! DxgkCbDestroyPhysicalMemoryObject, DxgkCbMapPhysicalMemory / DxgkCbUnmapPhysicalMemory and
//! DxgkCbAllocateAdl / DxgkCbFreeAdl. Dxgkrnl offers them only from interface WDDM 3.0 (the
//! headers gate the members at 2.9; below 3.0 they are NULL, see [`super::callbacks`]).
//!
//! # Model
//!
//! * **Objects** are backed by sim pages from Mm: `DXGK_PHYSICAL_MEMORY_TYPE_MDL` scattered
//!   (never two consecutive PFNs), `CONTIGUOUS_MEMORY` physically contiguous. `SECTION` and
//!   `IO_SPACE` are not simulated (STATUS_NOT_SUPPORTED and a finding). An object created with
//!   `hAdapter` is opened on that adapter at once (`hAdapterMemoryObject`).
//! * **ADLs** map the object's pages into the adapter's IOMMU domain when allocated and unmap
//!   them when freed, so a device access through a freed ADL faults. In
//!   [`crate::IommuMode::Remapped`] an ADL is one contiguous logical range when the driver asks
//!   for one (`RequireContiguous` / `PreferContiguous`) and a scattered page list otherwise; in
//!   identity mode logical == physical, so it is contiguous exactly when the physical pages are
//!   (`RequireContiguous` over scattered pages fails with STATUS_INSUFFICIENT_RESOURCES). The
//!   DXGK_ADL and its page array are Dxgkrnl's storage; after FreeAdl they stay allocated in a
//!   quarantine, poisoned ([`FREED_ADL_PAGE`]), so a driver that reads a freed ADL gets
//!   addresses that fault instead of reading freed memory.
//! * **CPU mappings** are kernel-mode only (user mode is not simulated); Offset/Size are
//!   widened to whole pages and written back, as Learn documents for these in/out members.
//! * **Strictness** ([`Rule::MdlMisuse`]): unknown, stale or wrong-kind handles, an ADL freed
//!   twice or on another adapter object, an object destroyed with live ADLs or CPU mappings
//!   (reported, then torn down), an unmap that matches no mapping. Teardown reports live
//!   objects, ADLs and mappings as [`Rule::ResourceLeak`].
//!
//! State lives in `CallbackMemory` ([`super::memory_callbacks`]) (`dxgk memory` lock, taken before
//! `mem`, [`crate::lock_order`]); findings are reported after both are released.

use std::collections::{HashMap, VecDeque};
use std::ptr::NonNull;

use dxgk_sys::{DXGK_ADL, PVOID};

use super::AdapterId;
use crate::machine::{Machine, MachineState};
use crate::memory::{leak, HandleKind, Region, MM_DONT_ZERO_ALLOCATION, PAGE};
use crate::verifier::{driver_call_site, Finding, Rule};

/// The page number a freed (quarantined) ADL's entries are overwritten with: never mapped.
pub const FREED_ADL_PAGE: u64 = 0xDEAD_0000;

/// How many freed ADLs stay quarantined (older ones are released).
const QUARANTINE: usize = 4096;

struct Object {
    adapter: Option<AdapterId>,
    adapter_object: usize,
    region: Region,
    /// (physical PFN, host page) of each page.
    host: Vec<(u64, usize)>,
    site: String,
}

/// Dxgkrnl's storage of one ADL: the DXGK_ADL the driver holds a pointer to, and its page array.
///
/// Both are heap blocks owned through raw pointers, never through a `Box` that moves: moving a
/// `Box` asserts it is the only pointer to its block (Stacked Borrows retags it), which would
/// invalidate the `pAdl` / `Pages` pointers the driver was handed (Miri found this as the
/// driver's read of `*pAdl` after the record went into the map).
struct AdlStorage {
    /// From `Box::leak`; freed in `Drop`.
    adl: NonNull<DXGK_ADL>,
    /// From `Box::leak` (`adl.u.Pages` points at its first element); freed in `Drop`.
    pages: Option<NonNull<[usize]>>,
}

impl AdlStorage {
    /// Takes ownership of `adl` and `pages`, pointing a page-list ADL at its array.
    fn new(adl: DXGK_ADL, pages: Option<Box<[usize]>>) -> Self {
        let pages = pages.map(|p| NonNull::from(Box::leak(p)));
        let adl = NonNull::from(Box::leak(Box::new(adl)));
        let storage = AdlStorage { adl, pages };
        if let Some(p) = storage.pages {
            storage.edit(|a| a.u.Pages = p.cast::<usize>().as_ptr().cast_const());
        }
        storage
    }

    /// An ADL of the logical pages `logical` (at least one): contiguous when they are one run,
    /// a page list otherwise.
    fn describing(logical: &[u64]) -> Self {
        let mut adl = DXGK_ADL {
            PageCount: logical.len() as u32,
            ..Default::default()
        };
        let mut pages = None;
        if logical.windows(2).all(|w| w[1] == w[0] + 1) {
            adl.Flags.set_Contiguous(1);
            adl.u.BasePageNumber = logical[0] as usize;
        } else {
            pages = Some(
                logical
                    .iter()
                    .map(|&l| l as usize)
                    .collect::<Box<[usize]>>(),
            );
        }
        Self::new(adl, pages)
    }

    /// The address the driver gets as `pAdl`.
    fn address(&self) -> usize {
        self.adl.as_ptr() as usize
    }

    /// Edits the DXGK_ADL in place (the machine lock serializes this with every Dxgkrnl path;
    /// the driver only reads it, and never after FreeAdl).
    fn edit(&self, f: impl FnOnce(&mut DXGK_ADL)) {
        // SAFETY: `adl` is a live block this value owns (from `Box::leak`); no reference to it
        // outlives this call.
        f(unsafe { &mut *self.adl.as_ptr() });
    }

    /// Poisons the ADL and its page array so a stale pointer reads addresses that fault.
    fn poison(&mut self, page: usize) {
        self.edit(|a| {
            a.Flags.set_Contiguous(1);
            a.u.BasePageNumber = page;
        });
        if let Some(p) = self.pages {
            // SAFETY: `p` is a live block this value owns (from `Box::leak`); `&mut self`
            // excludes any other Rust access to it while the slice lives.
            unsafe { &mut *p.as_ptr() }.fill(page);
        }
    }
}

impl Drop for AdlStorage {
    fn drop(&mut self) {
        // SAFETY: from `Box::leak` in `new`, freed only here.
        drop(unsafe { Box::from_raw(self.adl.as_ptr()) });
        if let Some(p) = self.pages {
            // SAFETY: from `Box::leak` in `new`, freed only here.
            drop(unsafe { Box::from_raw(p.as_ptr()) });
        }
    }
}

// SAFETY: the blocks behind the pointers are owned by this value alone; the driver reads them
// through the DXGK_ADL pointer, never through Rust references held across threads.
unsafe impl Send for AdlStorage {}

struct AdlRec {
    /// The physical memory object (0: an ADL Dxgkrnl built for VidMm's own memory).
    object: usize,
    adapter_object: usize,
    adapter: AdapterId,
    logical: Vec<u64>,
    physical: Vec<u64>,
    storage: AdlStorage,
    site: String,
    /// The ADL mapped its pages in the IOMMU (and unmaps them when freed); VidMm's own ADLs
    /// describe memory that is mapped for its whole life.
    owns_mapping: bool,
}

struct Freed {
    /// Kept allocated (poisoned) so a stale DXGK_ADL pointer reads addresses that fault.
    _storage: AdlStorage,
    /// Torn down with its object (already reported): a later FreeAdl is not reported again.
    orphaned: bool,
    site: String,
}

struct CpuMap {
    object: usize,
    base: usize,
    len: usize,
    site: String,
}

/// Dxgkrnl's records of physical memory objects, their ADLs and CPU mappings.
#[derive(Default)]
pub(crate) struct PhysicalMemory {
    objects: HashMap<usize, Object>,
    /// Adapter memory object handle → physical memory object handle.
    adapter_objects: HashMap<usize, usize>,
    /// Live ADLs by DXGK_ADL address.
    adls: HashMap<usize, AdlRec>,
    freed: HashMap<usize, Freed>,
    freed_order: VecDeque<usize>,
    cpu_maps: Vec<CpuMap>,
    /// (object, base, size) of mappings torn down with their object (already reported).
    orphaned_maps: Vec<(usize, usize, usize)>,
}

impl PhysicalMemory {
    fn quarantine(&mut self, ptr: usize, mut storage: AdlStorage, orphaned: bool, site: String) {
        storage.poison(FREED_ADL_PAGE as usize);
        self.freed.insert(
            ptr,
            Freed {
                _storage: storage,
                orphaned,
                site,
            },
        );
        self.freed_order.push_back(ptr);
        if self.freed_order.len() > QUARANTINE {
            if let Some(old) = self.freed_order.pop_front() {
                self.freed.remove(&old);
            }
        }
    }
}

fn large(v: &dxgk_sys::LARGE_INTEGER) -> i64 {
    // SAFETY: every bit pattern of the union is a valid i64.
    unsafe { v.QuadPart }
}

fn misuse(call: &'static str, detail: String) -> Finding {
    Finding::here(Rule::MdlMisuse, call, detail)
}

fn invalid(call: &'static str, detail: impl Into<String>) -> Finding {
    Finding::here(Rule::InvalidArgument, call, detail)
}

fn report_all(m: &MachineState, findings: Vec<Finding>) {
    for f in findings {
        m.report(f);
    }
}

fn describe_handle(m: &MachineState, h: usize, expected: HandleKind, what: &str) -> String {
    let mem = m.mem();
    match (mem.handles.retired(h), mem.handles.live(h)) {
        (Some(r), _) if r == expected => format!("{what} {h:#x} was already destroyed"),
        (Some(_), _) => {
            format!("handle {h:#x} is stale and not of the kind this call takes ({what})")
        }
        (None, Some(_)) => format!("handle {h:#x} is not of the kind this call takes ({what})"),
        (None, None) => format!("unknown {what} {h:#x}"),
    }
}

pub(crate) fn create_object(
    m: &MachineState,
    args: &mut dxgk_sys::DXGKARGCB_CREATE_PHYSICAL_MEMORY_OBJECT,
) -> i32 {
    const CALL: &str = "DxgkCbCreatePhysicalMemoryObject";
    let adapter = if args.hAdapter.is_null() {
        None
    } else {
        match super::adapter_of_handle(m, args.hAdapter) {
            Some(a) => Some(a),
            None => {
                let d = format!("unknown hAdapter {:p}", args.hAdapter);
                m.report(invalid(CALL, d));
                return dxgk_sys::STATUS_INVALID_PARAMETER;
            }
        }
    };
    let size = args.Size;
    let pages = size.div_ceil(PAGE);
    if size == 0 || pages.checked_mul(PAGE).is_none() {
        m.report(invalid(CALL, format!("Size {size:#x} is 0 or too large")));
        return dxgk_sys::STATUS_INVALID_PARAMETER;
    }
    let caching = args.CacheType.0;
    if !(0..=2).contains(&caching) {
        let d = format!("unknown DXGK_MEMORY_CACHING_TYPE {caching}");
        m.report(invalid(CALL, d));
        return dxgk_sys::STATUS_INVALID_PARAMETER;
    }
    enum Kind {
        Scattered { low: u64, high: u64, zero: bool },
        Contiguous { low: u64, high: u64, boundary: u64 },
    }
    let kind = match args.Type {
        dxgk_sys::DXGK_PHYSICAL_MEMORY_TYPE_MDL => {
            // SAFETY: Type selects the Mdl arm; every bit pattern of it is valid.
            let a = unsafe { args.u.Mdl };
            let (low, high, skip) = (
                large(&a.LowAddress),
                large(&a.HighAddress),
                large(&a.SkipBytes),
            );
            if high < low || low < 0 || skip != 0 {
                let d = format!("bad range: Low {low:#x} High {high:#x} SkipBytes {skip:#x} (nonzero SkipBytes is not simulated)");
                m.report(invalid(CALL, d));
                return dxgk_sys::STATUS_INVALID_PARAMETER;
            }
            Kind::Scattered {
                low: low as u64,
                high: high as u64,
                zero: a.Flags & MM_DONT_ZERO_ALLOCATION == 0,
            }
        }
        dxgk_sys::DXGK_PHYSICAL_MEMORY_TYPE_CONTIGUOUS_MEMORY => {
            // SAFETY: Type selects the ContiguousMemory arm; every bit pattern is valid.
            let a = unsafe { args.u.ContiguousMemory };
            let (low, high, boundary) = (
                large(&a.LowestAcceptableAddress),
                large(&a.HighestAcceptableAddress),
                large(&a.BoundaryAddressMultiple),
            );
            if high < low
                || low < 0
                || boundary < 0
                || (boundary != 0 && (boundary as u64).count_ones() != 1)
            {
                let d =
                    format!("bad range: Lowest {low:#x} Highest {high:#x} Boundary {boundary:#x}");
                m.report(invalid(CALL, d));
                return dxgk_sys::STATUS_INVALID_PARAMETER;
            }
            Kind::Contiguous {
                low: low as u64,
                high: high as u64,
                boundary: boundary as u64,
            }
        }
        t => {
            let d = format!("DXGK_PHYSICAL_MEMORY_TYPE {} is not simulated", t.0);
            m.report(invalid(CALL, d));
            return dxgk_sys::STATUS_NOT_SUPPORTED;
        }
    };
    if crate::fault::inject_on(m, CALL) {
        return dxgk_sys::STATUS_INSUFFICIENT_RESOURCES;
    }
    let mut cb = m.dxgk_memory();
    let mut mem = m.mem();
    let got = match kind {
        Kind::Scattered { low, high, zero } => mem.mm.allocate_scattered(pages, low, high, 1, zero),
        Kind::Contiguous {
            low,
            high,
            boundary,
        } => mem.mm.allocate_contiguous(pages, low, high, boundary),
    };
    let Some((region, host)) = got else {
        return dxgk_sys::STATUS_INSUFFICIENT_RESOURCES;
    };
    let h = mem.handles.issue(HandleKind::PhysicalObject);
    let ao = match adapter {
        Some(_) => mem.handles.issue(HandleKind::AdapterObject),
        None => 0,
    };
    drop(mem);
    if ao != 0 {
        cb.pmo.adapter_objects.insert(ao, h);
    }
    cb.pmo.objects.insert(
        h,
        Object {
            adapter,
            adapter_object: ao,
            region,
            host,
            site: driver_call_site(),
        },
    );
    args.hPhysicalMemoryObject = h as PVOID;
    args.hAdapterMemoryObject = ao as PVOID;
    dxgk_sys::STATUS_SUCCESS
}

pub(crate) fn destroy_object(
    m: &MachineState,
    args: &dxgk_sys::DXGKARGCB_DESTROY_PHYSICAL_MEMORY_OBJECT,
) {
    const CALL: &str = "DxgkCbDestroyPhysicalMemoryObject";
    let h = args.hPhysicalMemoryObject as usize;
    let given_ao = args.hAdapterMemoryObject as usize;
    let mut cb = m.dxgk_memory();
    let Some(obj) = cb.pmo.objects.get(&h) else {
        drop(cb);
        let d = describe_handle(m, h, HandleKind::PhysicalObject, "physical memory object");
        m.report(misuse(CALL, d));
        return;
    };
    let mut found = Vec::new();
    if given_ao != obj.adapter_object {
        if given_ao != 0 {
            drop(cb);
            let d = format!(
                "hAdapterMemoryObject {given_ao:#x} is not the adapter memory object of physical memory object {h:#x}"
            );
            m.report(misuse(CALL, d));
            return;
        }
        found.push(misuse(
            CALL,
            format!(
                "hAdapterMemoryObject not given, but physical memory object {h:#x} is open on an adapter ({:#x}); destroyed with it",
                obj.adapter_object
            ),
        ));
    }
    let obj = cb.pmo.objects.remove(&h).expect("present");
    if obj.adapter_object != 0 {
        cb.pmo.adapter_objects.remove(&obj.adapter_object);
    }
    let mut mem = m.mem();
    let live: Vec<usize> = cb
        .pmo
        .adls
        .iter()
        .filter(|(_, a)| a.object == h)
        .map(|(p, _)| *p)
        .collect();
    for p in live {
        let a = cb.pmo.adls.remove(&p).expect("present");
        found.push(misuse(
            CALL,
            format!(
                "physical memory object {h:#x} destroyed with a live ADL {p:#x} (allocated at {}; call DxgkCbFreeAdl first)",
                a.site
            ),
        ));
        mem.iommu
            .domain(a.adapter.domain(), m.config.iommu)
            .unmap(&a.logical);
        cb.pmo.quarantine(p, a.storage, true, a.site);
    }
    let mut i = 0;
    while i < cb.pmo.cpu_maps.len() {
        if cb.pmo.cpu_maps[i].object == h {
            let c = cb.pmo.cpu_maps.swap_remove(i);
            found.push(misuse(
                CALL,
                format!(
                    "physical memory object {h:#x} destroyed while mapped at {:#x} (mapped at {}; call DxgkCbUnmapPhysicalMemory first)",
                    c.base, c.site
                ),
            ));
            cb.pmo.orphaned_maps.push((h, c.base, c.len));
        } else {
            i += 1;
        }
    }
    mem.mm.retire_region(&obj.region);
    mem.handles.retire(h, HandleKind::PhysicalObject);
    if obj.adapter_object != 0 {
        mem.handles
            .retire(obj.adapter_object, HandleKind::AdapterObject);
    }
    drop(mem);
    drop(cb);
    obj.region.release();
    report_all(m, found);
}

pub(crate) fn map_physical_memory(
    m: &MachineState,
    args: &mut dxgk_sys::DXGKARGCB_MAP_PHYSICAL_MEMORY,
) -> i32 {
    const CALL: &str = "DxgkCbMapPhysicalMemory";
    let h = args.hPhysicalMemoryObject as usize;
    match args.AccessMode {
        dxgk_sys::DXGK_ACCESS_MODE_KERNEL_MODE => {}
        dxgk_sys::DXGK_ACCESS_MODE_USER_MODE => {
            m.report(invalid(CALL, "user-mode mappings are not simulated"));
            return dxgk_sys::STATUS_NOT_SUPPORTED;
        }
        a => {
            m.report(invalid(CALL, format!("unknown DXGK_ACCESS_MODE {}", a.0)));
            return dxgk_sys::STATUS_INVALID_PARAMETER;
        }
    }
    let cb = m.dxgk_memory();
    let Some(obj) = cb.pmo.objects.get(&h) else {
        drop(cb);
        let d = describe_handle(m, h, HandleKind::PhysicalObject, "physical memory object");
        m.report(misuse(CALL, d));
        return dxgk_sys::STATUS_INVALID_PARAMETER;
    };
    let bytes = obj.region.pages * PAGE;
    let (offset, size) = (args.Offset, args.Size);
    let end = offset.checked_add(size).filter(|&e| size > 0 && e <= bytes);
    let Some(end) = end else {
        drop(cb);
        let d = format!(
            "Offset {offset:#x} Size {size:#x} outside the object ({bytes:#x} bytes) or empty"
        );
        m.report(invalid(CALL, d));
        return dxgk_sys::STATUS_INVALID_PARAMETER;
    };
    let base_off = offset & !(PAGE - 1);
    let len = end.next_multiple_of(PAGE) - base_off;
    let base = obj.region.base + base_off;
    drop(cb);
    if crate::fault::inject_on(m, CALL) {
        return dxgk_sys::STATUS_INSUFFICIENT_RESOURCES;
    }
    let mut cb = m.dxgk_memory();
    cb.pmo.cpu_maps.push(CpuMap {
        object: h,
        base,
        len,
        site: driver_call_site(),
    });
    args.Offset = base_off;
    args.Size = len;
    args.pMappedAddress = base as PVOID;
    dxgk_sys::STATUS_SUCCESS
}

pub(crate) fn unmap_physical_memory(
    m: &MachineState,
    args: &dxgk_sys::DXGKARGCB_UNMAP_PHYSICAL_MEMORY,
) {
    const CALL: &str = "DxgkCbUnmapPhysicalMemory";
    let key = (
        args.hPhysicalMemoryObject as usize,
        args.pBaseAddress as usize,
        args.Size,
    );
    let mut cb = m.dxgk_memory();
    let hit = cb
        .pmo
        .cpu_maps
        .iter()
        .position(|c| (c.object, c.base, c.len) == key);
    if let Some(i) = hit {
        cb.pmo.cpu_maps.swap_remove(i);
        return;
    }
    if let Some(i) = cb.pmo.orphaned_maps.iter().position(|&o| o == key) {
        cb.pmo.orphaned_maps.swap_remove(i);
        return; // reported when its object was destroyed
    }
    let known = cb.pmo.objects.contains_key(&key.0);
    drop(cb);
    let d = if known {
        format!(
            "no live mapping of physical memory object {:#x} at {:#x} of {:#x} bytes (double unmap, or not the address and size DxgkCbMapPhysicalMemory returned)",
            key.0, key.1, key.2
        )
    } else {
        describe_handle(
            m,
            key.0,
            HandleKind::PhysicalObject,
            "physical memory object",
        )
    };
    m.report(misuse(CALL, d));
}

pub(crate) fn allocate_adl(m: &MachineState, args: &mut dxgk_sys::DXGKARGCB_ALLOCATE_ADL) -> i32 {
    const CALL: &str = "DxgkCbAllocateAdl";
    let ao = args.hAdapterMemoryObject as usize;
    let flags = args.Flags;
    if flags.Reserved() != 0 || (flags.RequireContiguous() != 0 && flags.PreferContiguous() != 0) {
        let d = format!(
            "Flags {:#x}: reserved bits set, or both RequireContiguous and PreferContiguous",
            flags.Value
        );
        m.report(invalid(CALL, d));
        return dxgk_sys::STATUS_INVALID_PARAMETER;
    }
    let want_contiguous = flags.RequireContiguous() != 0 || flags.PreferContiguous() != 0;
    let mut cb = m.dxgk_memory();
    let Some(&h) = cb.pmo.adapter_objects.get(&ao) else {
        drop(cb);
        let d = describe_handle(m, ao, HandleKind::AdapterObject, "adapter memory object");
        m.report(misuse(CALL, d));
        return dxgk_sys::STATUS_INVALID_PARAMETER;
    };
    let obj = &cb.pmo.objects[&h];
    let adapter = obj.adapter.expect("adapter objects belong to an adapter");
    let bytes = obj.region.pages * PAGE;
    let (offset, size) = (args.Offset, args.Size);
    let end = offset.checked_add(size).filter(|&e| size > 0 && e <= bytes);
    let Some(end) = end else {
        drop(cb);
        let d = format!(
            "Offset {offset:#x} Size {size:#x} outside the object ({bytes:#x} bytes) or empty"
        );
        m.report(invalid(CALL, d));
        return dxgk_sys::STATUS_INVALID_PARAMETER;
    };
    let host: Vec<(u64, usize)> = obj.host[offset / PAGE..end.div_ceil(PAGE)].to_vec();
    if crate::fault::inject_on(m, CALL) {
        return dxgk_sys::STATUS_INSUFFICIENT_RESOURCES;
    }
    let physically_contiguous = host.windows(2).all(|w| w[1].0 == w[0].0 + 1);
    let mut mem = m.mem();
    let domain = mem.iommu.domain(adapter.domain(), m.config.iommu);
    let logical = match m.config.iommu {
        crate::IommuMode::Identity => {
            if flags.RequireContiguous() != 0 && !physically_contiguous {
                return dxgk_sys::STATUS_INSUFFICIENT_RESOURCES;
            }
            domain.map(&host)
        }
        crate::IommuMode::Remapped if want_contiguous => domain.map_contiguous(&host),
        crate::IommuMode::Remapped => domain.map(&host),
    };
    drop(mem);
    let storage = AdlStorage::describing(&logical);
    let ptr = storage.address();
    cb.pmo.adls.insert(
        ptr,
        AdlRec {
            object: h,
            adapter_object: ao,
            adapter,
            logical,
            physical: host.iter().map(|p| p.0).collect(),
            storage,
            site: driver_call_site(),
            owns_mapping: true,
        },
    );
    args.pAdl = ptr as *mut DXGK_ADL;
    dxgk_sys::STATUS_SUCCESS
}

/// Whether `adl` is a live ADL; otherwise reports its use by `call` (after DxgkCbFreeAdl, or
/// never allocated) and returns false. For every Dxgkrnl path that receives an ADL.
pub(crate) fn check_adl(m: &MachineState, call: &'static str, adl: usize) -> bool {
    let cb = m.dxgk_memory();
    if cb.pmo.adls.contains_key(&adl) {
        return true;
    }
    let d = match cb.pmo.freed.get(&adl) {
        Some(f) if f.orphaned => {
            format!("ADL {adl:#x} used after its physical memory object was destroyed (allocated at {})", f.site)
        }
        Some(f) => format!(
            "ADL {adl:#x} used after DxgkCbFreeAdl (allocated at {})",
            f.site
        ),
        None => format!("unknown ADL {adl:#x} (not returned by DxgkCbAllocateAdl)"),
    };
    drop(cb);
    m.report(misuse(call, d));
    false
}

pub(crate) fn free_adl(m: &MachineState, args: &dxgk_sys::DXGKARGCB_FREE_ADL) {
    const CALL: &str = "DxgkCbFreeAdl";
    let p = args.pAdl as usize;
    if p == 0 {
        m.report(invalid(CALL, "NULL pAdl"));
        return;
    }
    let mut cb = m.dxgk_memory();
    if let Some(f) = cb.pmo.freed.get_mut(&p) {
        if f.orphaned {
            // Reported when its object was destroyed; the driver has now freed it.
            f.orphaned = false;
            return;
        }
    }
    let Some(rec) = cb.pmo.adls.get(&p) else {
        drop(cb);
        check_adl(m, CALL, p);
        return;
    };
    let ao = args.hAdapterMemoryObject as usize;
    let owner = rec.adapter_object;
    if owner != ao {
        drop(cb);
        let d = format!("ADL {p:#x} belongs to adapter memory object {owner:#x}, not {ao:#x}");
        m.report(misuse(CALL, d));
        return;
    }
    let rec = cb.pmo.adls.remove(&p).expect("present");
    if rec.owns_mapping {
        let mut mem = m.mem();
        mem.iommu
            .domain(rec.adapter.domain(), m.config.iommu)
            .unmap(&rec.logical);
    }
    cb.pmo.quarantine(p, rec.storage, false, rec.site);
}

/// Dxgkrnl's ADL for VidMm-owned memory already mapped in `adapter`'s IOMMU at `logical`
/// (what VidMm passes in MAP_APERTURE_SEGMENT2): contiguous when the logical pages are, a page
/// list otherwise. Registered like a driver's ADL (so [`check_adl`] and the quarantine apply)
/// but owned by no physical memory object: only [`vidmm_free_adl`] frees it, and a driver
/// DxgkCbFreeAdl of it is misuse. Returns the DXGK_ADL's address and a copy of it (what a
/// paging operation carries inline).
pub(crate) fn vidmm_adl(
    m: &MachineState,
    adapter: AdapterId,
    logical: &[u64],
    physical: &[u64],
) -> (usize, DXGK_ADL) {
    let storage = AdlStorage::describing(logical);
    let ptr = storage.address();
    let mut copy = DXGK_ADL::default();
    storage.edit(|a| copy = *a);
    m.dxgk_memory().pmo.adls.insert(
        ptr,
        AdlRec {
            object: 0,
            adapter_object: 0,
            adapter,
            logical: logical.to_vec(),
            physical: physical.to_vec(),
            storage,
            site: "dxgk-sim VidMm".into(),
            owns_mapping: false,
        },
    );
    (ptr, copy)
}

/// Frees an ADL from [`vidmm_adl`] (quarantined and poisoned like any freed ADL).
pub(crate) fn vidmm_free_adl(m: &MachineState, adl: usize) {
    let mut cb = m.dxgk_memory();
    if let Some(rec) = cb.pmo.adls.remove(&adl) {
        debug_assert!(!rec.owns_mapping && rec.object == 0, "not a VidMm ADL");
        cb.pmo.quarantine(adl, rec.storage, false, rec.site);
    }
}

/// Physical memory objects, ADLs and CPU mappings still live (on `adapter`, or anywhere).
pub(crate) fn leak_findings(
    cb: &super::memory_callbacks::CallbackMemory,
    adapter: Option<AdapterId>,
    call: &'static str,
) -> Vec<Finding> {
    let on = |a: Option<AdapterId>| match (adapter, a) {
        (None, _) => true,
        (Some(x), Some(a)) => x == a,
        (Some(_), None) => false,
    };
    let mut out = Vec::new();
    for (h, o) in &cb.pmo.objects {
        if on(o.adapter) {
            out.push(leak(
                call,
                format!(
                    "physical memory object {h:#x} ({} pages) never destroyed with DxgkCbDestroyPhysicalMemoryObject",
                    o.region.pages
                ),
                format!("created at {}", o.site),
            ));
        }
    }
    for (p, a) in &cb.pmo.adls {
        // VidMm's own ADLs are Dxgkrnl's memory, not the driver's (like `VidmmMemory`).
        if a.object != 0 && on(Some(a.adapter)) {
            out.push(leak(
                call,
                format!(
                    "ADL {p:#x} ({} pages) never freed with DxgkCbFreeAdl",
                    a.logical.len()
                ),
                format!("allocated at {}", a.site),
            ));
        }
    }
    for c in &cb.pmo.cpu_maps {
        let owner = cb.pmo.objects.get(&c.object).and_then(|o| o.adapter);
        if on(owner) {
            out.push(leak(
                call,
                format!(
                    "DxgkCbMapPhysicalMemory mapping at {:#x} ({:#x} bytes) never unmapped",
                    c.base, c.len
                ),
                format!("mapped at {}", c.site),
            ));
        }
    }
    out
}

impl Machine {
    /// Live physical memory objects (DxgkCbCreatePhysicalMemoryObject).
    pub fn live_physical_memory_objects(&self) -> usize {
        self.state.dxgk_memory().pmo.objects.len()
    }

    /// Live ADLs (DxgkCbAllocateAdl).
    pub fn live_adls(&self) -> usize {
        self.state.dxgk_memory().pmo.adls.len()
    }

    /// Live CPU mappings (DxgkCbMapPhysicalMemory).
    pub fn live_physical_memory_mappings(&self) -> usize {
        self.state.dxgk_memory().pmo.cpu_maps.len()
    }

    /// The physical PFNs behind live ADL `adl` (what a remapping driver never sees).
    pub fn adl_physical_pfns(&self, adl: *const DXGK_ADL) -> Option<Vec<u64>> {
        let cb = self.state.dxgk_memory();
        cb.pmo.adls.get(&(adl as usize)).map(|a| a.physical.clone())
    }

    /// Checks `adl` the way every Dxgkrnl path that receives one does: true when live, else a
    /// [`Rule::MdlMisuse`] finding ("used after DxgkCbFreeAdl", …) attributed to `call`.
    pub fn check_adl_for_tests(&self, call: &'static str, adl: *const DXGK_ADL) -> bool {
        check_adl(&self.state, call, adl as usize)
    }
}
