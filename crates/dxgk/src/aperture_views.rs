//! CPU views of the pages VidMm maps into an aperture segment, by logical (device) page: what a
//! software GPU inside the driver (soft rgpu) needs to reach memory it was only given as MDLs
//! (MAP_APERTURE_SEGMENT) or as a CPU-visible address (MAP_APERTURE_SEGMENT2).
//!
//! * [`MdlSystemVa`]: the system-VA view of a borrowed MDL with `MmGetSystemAddressForMdlSafe`
//!   semantics — the MDL's `MappedSystemVa` when it has `MDL_MAPPED_TO_SYSTEM_VA` or
//!   `MDL_SOURCE_IS_NONPAGED_POOL`, else a mapping made with
//!   `MmMapLockedPagesSpecifyCache(KernelMode, MmCached, NULL, FALSE, NormalPagePriority |
//!   MdlMappingNoExecute)` that it releases with `MmUnmapLockedPages` when dropped.
//! * [`ApertureViews`]: the registry logical page → CPU page, one nonpaged pool block sized at
//!   creation (an open-addressed hash table, linear probing with backward-shift deletion, at most
//!   half full), plus a table of the MDL system mappings it made ([`MAX_MDL_MAPPINGS`]), each
//!   released with the UNMAP of its last page. Every access takes its spin lock and copies under
//!   it, so an unmap never pulls a page from under a reader on another thread.
//!
//! The pages stay registered across DDI calls: their validity rests on VidMm's contract, which
//! the decode ([`crate::paging::BuildPagingBuffer::from_raw`]) states as part of its safety
//! contract — a MAP_APERTURE_SEGMENT MDL (and a MAP_APERTURE_SEGMENT2 CPU-visible address) stays
//! valid until the UNMAP_APERTURE_SEGMENT of those pages. [`ApertureMdl`] and [`ApertureCpu`]
//! carry that promise; only the decode makes them.

use core::ptr::NonNull;

use dxgk_sys::MDL;

use crate::mdl::Mdl;
use crate::pool::{Pool, PoolTag};
use crate::sync::SpinLock;
use crate::{NtError, NtResult};

/// Bytes of a page.
const PAGE: usize = 4096;
/// Distinct MDLs [`ApertureViews`] can hold a system mapping of at once (the index lives in the
/// low 12 bits of a page address).
pub const MAX_MDL_MAPPINGS: usize = 4095;

/// The system-VA view of an MDL's described bytes, borrowed for `'a`; unmapped on drop when it
/// made the mapping itself.
///
/// # Invariants
/// `va` is the system address of the MDL's first described byte (`StartVa + ByteOffset`'s
/// mapping); the pages the MDL spans are mapped there, contiguously, while `self` lives; `ours`
/// says `va` came from MmMapLockedPagesSpecifyCache on this MDL and must be unmapped once.
pub struct MdlSystemVa<'a> {
    mdl: Mdl<'a>,
    va: NonNull<u8>,
    ours: bool,
}

impl<'a> MdlSystemVa<'a> {
    /// Maps `mdl` (which must describe locked pages: VidMm's and Dxgkrnl's MDLs do) as
    /// `MmGetSystemAddressForMdlSafe` does. IRQL ≤ DISPATCH_LEVEL. STATUS_INSUFFICIENT_RESOURCES
    /// when Mm has no system VA for it.
    pub fn map(mdl: Mdl<'a>) -> NtResult<Self> {
        let raw = mdl.as_ptr();
        // SAFETY: a validated MDL, valid for 'a (Mdl's invariant); a plain field read.
        let flags = unsafe { (*raw).MdlFlags };
        let premapped = flags
            & (dxgk_sys::MDL_MAPPED_TO_SYSTEM_VA | dxgk_sys::MDL_SOURCE_IS_NONPAGED_POOL)
            != 0;
        // SAFETY: the MDL describes locked pages (documented requirement); the routine maps
        // it (KernelMode, cached, no-execute) unless it is premapped.
        let va = unsafe {
            dxgk_sys::MmGetSystemAddressForMdlSafe(raw, dxgk_sys::NormalPagePriority.0 as u32)
        };
        let va = NonNull::new(va.cast::<u8>()).ok_or(NtError::INSUFFICIENT_RESOURCES)?;
        // INVARIANT: `va` maps the MDL's described bytes; `ours` iff we mapped it.
        Ok(Self {
            mdl,
            va,
            ours: !premapped,
        })
    }

    /// The CPU address of the start of span page `i` (page aligned), or None past the span.
    pub fn page(&self, i: usize) -> Option<NonNull<u8>> {
        if i >= self.mdl.page_count() {
            return None;
        }
        let first = (self.va.as_ptr() as usize).checked_sub(self.mdl.byte_offset() as usize)?;
        NonNull::new(first.checked_add(i.checked_mul(PAGE)?)? as *mut u8)
    }

    /// Whether dropping this unmaps (it made the mapping).
    pub fn owns_mapping(&self) -> bool {
        self.ours
    }

    /// Gives up the view without unmapping: the caller now owns the mapping (if
    /// [`MdlSystemVa::owns_mapping`]) and releases it with [`unmap_raw`].
    fn into_raw(self) -> (NonNull<u8>, bool) {
        let me = core::mem::ManuallyDrop::new(self);
        (me.va, me.ours)
    }
}

impl Drop for MdlSystemVa<'_> {
    fn drop(&mut self) {
        if self.ours {
            // SAFETY: `va` is this MDL's mapping from MmMapLockedPagesSpecifyCache (invariant),
            // released once, here; the MDL is valid for 'a.
            unsafe { unmap_raw(self.va, self.mdl.as_ptr()) };
        }
    }
}

/// MmUnmapLockedPages.
///
/// # Safety
/// `va` must be `mdl`'s live mapping from MmMapLockedPagesSpecifyCache, and `mdl` valid.
unsafe fn unmap_raw(va: NonNull<u8>, mdl: *mut MDL) {
    // SAFETY: per the caller.
    unsafe { dxgk_sys::MmUnmapLockedPages(va.as_ptr().cast(), mdl) }
}

/// A MAP_APERTURE_SEGMENT MDL that VidMm keeps valid, with its pages locked and its PFN array
/// unchanged, until the UNMAP_APERTURE_SEGMENT of the pages it maps (made only by the decode,
/// whose safety contract says so).
#[derive(Clone, Copy, Debug)]
pub struct ApertureMdl {
    pub(crate) mdl: NonNull<MDL>,
}

/// A MAP_APERTURE_SEGMENT2 `CpuVisibleAddress`: a kernel VA of the allocation, valid until the
/// UNMAP_APERTURE_SEGMENT of the allocation (Learn, "IOMMU DMA remapping"; made only by the
/// decode, whose safety contract says so).
#[derive(Clone, Copy, Debug)]
pub struct ApertureCpu {
    pub(crate) base: NonNull<u8>,
}

/// Why pages could not be registered (nothing was).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViewError {
    /// The registry holds as many pages as it was sized for.
    Full,
    /// [`MAX_MDL_MAPPINGS`] MDLs are mapped already.
    TooManyMdls,
    /// A logical page is registered already (mapped twice without an unmap).
    AlreadyMapped(u64),
    /// The MDL does not hold the pages named.
    MdlPages,
    /// The CPU address is not page aligned or the range wraps.
    CpuAddress(usize),
    /// Mm could not map the MDL.
    Map(NtError),
}

impl From<ViewError> for NtError {
    fn from(e: ViewError) -> Self {
        match e {
            ViewError::Full | ViewError::TooManyMdls => NtError::INSUFFICIENT_RESOURCES,
            ViewError::Map(e) => e,
            _ => NtError::INVALID_PARAMETER,
        }
    }
}

/// One hash slot: `key` = logical page + 1 (0: empty), `cpu` = page address | mapping index.
#[derive(Clone, Copy, Default)]
#[repr(C)]
struct Slot {
    key: u64,
    cpu: usize,
}

/// A system mapping the registry made (or found) for one MDL: `mdl` 0 = free slot.
#[derive(Clone, Copy, Default)]
#[repr(C)]
struct MdlMapping {
    mdl: usize,
    va: usize,
    ours: bool,
    /// Registered pages that use it.
    live: u32,
}

/// Raw tables in one pool block: `slots` (a power of two) then `maps`.
struct Tables {
    block: NonNull<u8>,
    slots: NonNull<Slot>,
    mask: usize,
    maps: NonNull<MdlMapping>,
    used: usize,
    limit: usize,
}

// SAFETY: the tables are plain memory owned by the registry; all access is under its lock.
unsafe impl Send for Tables {}

/// The registry logical page → CPU page (see the module documentation).
///
/// # Invariants
/// `tables.block` is a pool block with `tag` holding `mask + 1` slots and
/// [`MAX_MDL_MAPPINGS`] + 1 mapping records (record 0 unused); every occupied slot's page
/// address is valid for reads and writes of a page while the slot is occupied (a live MDL
/// mapping, or a CPU-visible address VidMm keeps mapped); a record with `live > 0` is a live
/// mapping of its MDL.
pub struct ApertureViews {
    tables: SpinLock<Tables>,
    tag: PoolTag,
}

/// Fibonacci hashing of a page number onto `mask + 1` slots.
fn home(key: u64, mask: usize) -> usize {
    (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize & mask
}

impl Tables {
    fn slot(&self, i: usize) -> Slot {
        // SAFETY: i ≤ mask (callers mask it); the block holds mask + 1 initialized slots.
        unsafe { self.slots.as_ptr().wrapping_add(i & self.mask).read() }
    }

    fn set_slot(&mut self, i: usize, s: Slot) {
        // SAFETY: as in `slot`; `&mut self` under the lock.
        unsafe { self.slots.as_ptr().wrapping_add(i & self.mask).write(s) }
    }

    fn map(&self, i: usize) -> MdlMapping {
        // SAFETY: i ≤ MAX_MDL_MAPPINGS (callers pass indices from `find_map` or from a slot's
        // low 12 bits, which hold at most 4095); the block holds those records.
        unsafe {
            self.maps
                .as_ptr()
                .wrapping_add(i.min(MAX_MDL_MAPPINGS))
                .read()
        }
    }

    fn set_map(&mut self, i: usize, m: MdlMapping) {
        // SAFETY: as in `map`.
        unsafe {
            self.maps
                .as_ptr()
                .wrapping_add(i.min(MAX_MDL_MAPPINGS))
                .write(m)
        }
    }

    /// The slot index holding `key`.
    fn find(&self, key: u64) -> Option<usize> {
        let mut i = home(key, self.mask);
        loop {
            let s = self.slot(i);
            if s.key == key {
                return Some(i & self.mask);
            }
            if s.key == 0 {
                return None;
            }
            i = (i + 1) & self.mask;
        }
    }

    fn insert(&mut self, key: u64, cpu: usize) -> Result<(), ViewError> {
        if self.used >= self.limit {
            return Err(ViewError::Full);
        }
        let mut i = home(key, self.mask);
        loop {
            let s = self.slot(i);
            if s.key == key {
                return Err(ViewError::AlreadyMapped(key - 1));
            }
            if s.key == 0 {
                self.set_slot(i, Slot { key, cpu });
                self.used += 1;
                return Ok(());
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Inserts logical page `logical[i]` → `cpu(i)` for every page, or none: on an error the
    /// pages inserted so far are removed again. Returns how many were inserted.
    fn insert_all(
        &mut self,
        logical: impl Iterator<Item = u64> + Clone,
        cpu: impl Fn(usize) -> usize,
    ) -> Result<usize, ViewError> {
        let mut done = 0;
        for (i, page) in logical.clone().enumerate() {
            let inserted = page
                .checked_add(1)
                .ok_or(ViewError::AlreadyMapped(page))
                .and_then(|key| self.insert(key, cpu(i)));
            if let Err(e) = inserted {
                for page in logical.take(done) {
                    self.remove(page + 1);
                }
                return Err(e);
            }
            done += 1;
        }
        Ok(done)
    }

    /// Removes `key`; returns its slot's `cpu` word.
    fn remove(&mut self, key: u64) -> Option<usize> {
        let mut hole = self.find(key)?;
        let cpu = self.slot(hole).cpu;
        // Backward-shift deletion: move later members of the probe run into the hole.
        let mut j = hole;
        loop {
            j = (j + 1) & self.mask;
            let s = self.slot(j);
            if s.key == 0 {
                break;
            }
            let h = home(s.key, self.mask);
            // Move s if its home is not in (hole, j] cyclically.
            let between = if hole <= j {
                hole < h && h <= j
            } else {
                hole < h || h <= j
            };
            if !between {
                self.set_slot(hole, s);
                hole = j;
            }
        }
        self.set_slot(hole, Slot::default());
        self.used -= 1;
        Some(cpu)
    }

    /// The record index of `mdl`'s mapping, or a free one (0 when none is free).
    fn find_map(&self, mdl: usize) -> (usize, bool) {
        let mut free = 0;
        for i in 1..=MAX_MDL_MAPPINGS {
            let m = self.map(i);
            if m.mdl == mdl {
                return (i, true);
            }
            if m.mdl == 0 && free == 0 {
                free = i;
            }
        }
        (free, false)
    }
}

impl ApertureViews {
    /// A registry for up to `pages` pages, in one zeroed nonpaged pool block of `tag` (see
    /// [`ApertureViews::block_bytes`]). IRQL ≤ DISPATCH_LEVEL.
    pub fn new(pool: &Pool, tag: PoolTag, pages: usize) -> NtResult<Self> {
        let slots = pages
            .max(1)
            .checked_mul(2)
            .and_then(usize::checked_next_power_of_two)
            .ok_or(NtError::INVALID_PARAMETER)?;
        let bytes = Self::block_bytes(pages).ok_or(NtError::INVALID_PARAMETER)?;
        let block = pool
            .alloc_zeroed(tag, bytes)
            .ok_or(NtError::INSUFFICIENT_RESOURCES)?;
        let maps_at = slots * core::mem::size_of::<Slot>();
        // Pool blocks are 16-aligned; Slot (16 bytes) and MdlMapping (8-aligned) keep their
        // alignment at these offsets. All-zero is a valid (empty) Slot and MdlMapping.
        let maps = block.as_ptr().wrapping_add(maps_at).cast::<MdlMapping>();
        // INVARIANT: a fresh zeroed block of `bytes` = slots + records.
        Ok(Self {
            tables: SpinLock::new(Tables {
                block,
                slots: block.cast(),
                mask: slots - 1,
                maps: NonNull::new(maps).ok_or(NtError::INSUFFICIENT_RESOURCES)?,
                used: 0,
                limit: pages,
            }),
            tag,
        })
    }

    /// Bytes of the pool block for `pages` pages: 16 × the power of two ≥ 2 × `pages`, plus
    /// ([`MAX_MDL_MAPPINGS`] + 1) × 24.
    pub fn block_bytes(pages: usize) -> Option<usize> {
        let slots = pages.max(1).checked_mul(2)?.checked_next_power_of_two()?;
        slots
            .checked_mul(core::mem::size_of::<Slot>())?
            .checked_add((MAX_MDL_MAPPINGS + 1) * core::mem::size_of::<MdlMapping>())
    }

    /// Pages registered.
    pub fn len(&self) -> usize {
        self.tables.lock().used
    }

    /// True when no page is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Registers MDL pages `mdl_first..mdl_first + logical.len()` of `mdl` under the logical
    /// pages `logical` yields, in order (MAP_APERTURE_SEGMENT: the PFNs written to the GART).
    /// Maps the MDL to system VA unless it is (or the registry already holds a mapping of it).
    /// All or nothing. IRQL ≤ DISPATCH_LEVEL.
    pub fn map_mdl(
        &self,
        mdl: ApertureMdl,
        mdl_first: usize,
        logical: impl ExactSizeIterator<Item = u64> + Clone,
    ) -> Result<(), ViewError> {
        let pages = logical.len();
        // SAFETY: VidMm keeps the MDL valid until the matching UNMAP (ApertureMdl's promise),
        // which outlives this call.
        let view = unsafe { Mdl::from_raw(mdl.mdl.as_ptr()) }.map_err(|_| ViewError::MdlPages)?;
        if mdl_first
            .checked_add(pages)
            .is_none_or(|end| end > view.page_count())
        {
            return Err(ViewError::MdlPages);
        }
        let key = mdl.mdl.as_ptr() as usize;
        let mut t = self.tables.lock();
        let (index, existing) = t.find_map(key);
        if index == 0 {
            return Err(ViewError::TooManyMdls);
        }
        let mut record = if existing {
            t.map(index)
        } else {
            // Mapping at DISPATCH_LEVEL (under the lock) is allowed for MmMapLockedPages.
            let sys = MdlSystemVa::map(view).map_err(ViewError::Map)?;
            let (va, ours) = sys.into_raw();
            MdlMapping {
                mdl: key,
                va: va.as_ptr() as usize - view.byte_offset() as usize,
                ours,
                live: 0,
            }
        };
        let base = record.va + mdl_first * PAGE;
        let done = match t.insert_all(logical, |i| (base + i * PAGE) | index) {
            Ok(done) => done,
            Err(e) => {
                let release = !existing && record.ours;
                drop(t);
                if release {
                    // SAFETY: the mapping made above, unused by any slot now.
                    unsafe { unmap_raw(first_byte(&record, view.byte_offset()), mdl.mdl.as_ptr()) };
                }
                return Err(e);
            }
        };
        record.live += done as u32;
        t.set_map(index, record);
        Ok(())
    }

    /// Registers `pages` pages of a CPU-visible allocation: logical page `logical[i]` at
    /// `cpu + (first + i) × 4096` (MAP_APERTURE_SEGMENT2, `first` = AdlOffset). All or nothing.
    pub fn map_cpu(
        &self,
        cpu: ApertureCpu,
        first: usize,
        logical: impl ExactSizeIterator<Item = u64> + Clone,
    ) -> Result<(), ViewError> {
        let base = cpu.base.as_ptr() as usize;
        if !base.is_multiple_of(PAGE) {
            return Err(ViewError::CpuAddress(base));
        }
        let end = first
            .checked_add(logical.len())
            .and_then(|p| p.checked_mul(PAGE))
            .and_then(|b| b.checked_add(base));
        if end.is_none() {
            return Err(ViewError::CpuAddress(base));
        }
        let base = base + first * PAGE;
        self.tables
            .lock()
            .insert_all(logical, |i| base + i * PAGE)
            .map(|_| ())?;
        Ok(())
    }

    /// Unregisters the logical pages `logical` yields (those not registered are skipped);
    /// releases an MDL's system mapping with its last page. Returns how many were registered.
    /// IRQL ≤ DISPATCH_LEVEL.
    pub fn unmap(&self, logical: impl Iterator<Item = u64>) -> usize {
        let mut removed = 0;
        for page in logical {
            let Some(key) = page.checked_add(1) else {
                continue;
            };
            let mut t = self.tables.lock();
            let Some(cpu) = t.remove(key) else {
                continue;
            };
            removed += 1;
            let index = cpu & (PAGE - 1);
            if index == 0 {
                continue;
            }
            let mut record = t.map(index);
            record.live = record.live.saturating_sub(1);
            if record.live > 0 {
                t.set_map(index, record);
                continue;
            }
            t.set_map(index, MdlMapping::default());
            drop(t);
            release(&record);
        }
        removed
    }

    /// Copies the bytes at `logical` into `buf` (inside one page), under the lock. False when
    /// the page is not registered or the range leaves it.
    pub fn read(&self, logical: u64, buf: &mut [u8]) -> bool {
        let t = self.tables.lock();
        let Some(src) = locate(&t, logical, buf.len()) else {
            return false;
        };
        // SAFETY: `src` is inside a registered page (valid while registered, and it cannot be
        // unregistered while we hold the lock); `buf` is ours; raw copy, no reference formed.
        unsafe { core::ptr::copy_nonoverlapping(src as *const u8, buf.as_mut_ptr(), buf.len()) };
        true
    }

    /// Copies `data` to `logical` (inside one page), under the lock. False as for `read`.
    pub fn write(&self, logical: u64, data: &[u8]) -> bool {
        let t = self.tables.lock();
        let Some(dst) = locate(&t, logical, data.len()) else {
            return false;
        };
        // SAFETY: as in `read`; registered pages are writable.
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), dst as *mut u8, data.len()) };
        true
    }
}

/// The CPU address of `len` bytes at `logical`, if inside one registered page.
fn locate(t: &Tables, logical: u64, len: usize) -> Option<usize> {
    let within = (logical % PAGE as u64) as usize;
    if within + len > PAGE {
        return None;
    }
    let i = t.find(logical / PAGE as u64 + 1)?;
    Some((t.slot(i).cpu & !(PAGE - 1)) + within)
}

/// The address MmMapLockedPagesSpecifyCache returned for `record` (page base + ByteOffset).
fn first_byte(record: &MdlMapping, byte_offset: u32) -> NonNull<u8> {
    NonNull::new((record.va + byte_offset as usize) as *mut u8).unwrap_or(NonNull::dangling())
}

/// Unmaps a record's mapping if the registry made it (at the UNMAP of its last page).
fn release(record: &MdlMapping) {
    if !record.ours {
        return;
    }
    let mdl = record.mdl as *mut MDL;
    // SAFETY: the record was made from a valid MDL that VidMm keeps until this UNMAP returns;
    // ByteOffset is a plain field.
    let offset = unsafe { (*mdl).ByteOffset };
    // SAFETY: the record's live mapping of this MDL, released once (the record is cleared).
    unsafe { unmap_raw(first_byte(record, offset), mdl) };
}

impl Drop for ApertureViews {
    /// Frees the tables. Pages still registered are forgotten, and their MDLs are not touched:
    /// they are VidMm's, and by StopDevice VidMm may have freed them without an UNMAP (its own
    /// page tables and paging buffer go with the paging process). A system mapping the registry
    /// made lives in its MDL (`MDL_MAPPED_TO_SYSTEM_VA`, `MappedSystemVa`) and is released with
    /// it by the MDL's owner, as for any MDL a driver maps with MmGetSystemAddressForMdlSafe.
    fn drop(&mut self) {
        let t = self.tables.get_mut();
        // SAFETY: the block from `new` with `tag`, not used after this (invariant).
        unsafe { Pool::free(t.block, self.tag) };
    }
}
