//! Device-visible system memory through Dxgkrnl's IOMMU callbacks (WDDM 2.4).
//!
//! * [`MdlPages`] owns pages from `DxgkCbAllocatePagesForMdl`: CPU access only, through the
//!   system mapping of each MDL. Requests above 4 GiB − 4 KiB are split over several MDLs (the
//!   per-call limit: an MDL's ByteCount is a ULONG).
//! * [`IoMmuMapping`] borrows an `MdlPages` and maps it with `DxgkCbMapMdlToIoMmu`. It is the
//!   only type that hands out **logical** (device) page addresses. Because it borrows the pages,
//!   it is always dropped first: unmap → unmap system VA → free, as WDDM requires (the MDL must
//!   outlive `DxgkCbUnmapMdlFromIoMmu`).
//! * [`ContiguousMemory`] owns a `DxgkCbAllocateContiguousMemory` block (CPU VA only: Dxgkrnl
//!   returns no device address for it).
//!
//! Device addresses come only from the MDLs Dxgkrnl returned, never from CPU addresses or
//! `MmGetPhysicalAddress` (that breaks with DMA remapping). All of this is PASSIVE_LEVEL: the
//! constructors take a [`Passive`] token; `Drop` must also run at PASSIVE_LEVEL.

use core::ptr::NonNull;

use dxgk_sys::{
    DXGKARGCB_ALLOCATECONTIGUOUSMEMORY, DXGKARGCB_ALLOCATEPAGESFORMDL,
    DXGKARGCB_FREECONTIGUOUSMEMORY, DXGKARGCB_FREEPAGESFROMMDL, DXGKARGCB_MAPMDLTOIOMMU,
    DXGKARGCB_UNMAPMDLFROMIOMMU, DXGK_MEMORY_CACHING_TYPE, HANDLE, LARGE_INTEGER, MDL,
};

use crate::interface::DxgkInterface;
use crate::irql::Passive;
use crate::{NtError, NtResult};

/// CPU and device page size.
pub const PAGE_SIZE: usize = 4096;
/// Largest single `DxgkCbAllocatePagesForMdl` request: 4 GiB − 4 KiB.
pub const MAX_BYTES_PER_MDL: usize = (4 << 30) - PAGE_SIZE;
/// Most MDLs one [`MdlPages`] holds (≈ 64 GiB).
pub const MAX_MDLS: usize = 16;

/// A logical (IOMMU / device) address. Not a CPU address, not a physical one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogicalAddress(pub u64);

#[derive(Clone, Copy)]
struct Chunk {
    memory_handle: HANDLE,
    mdl: NonNull<MDL>,
    bytes: usize,
    cpu: NonNull<u8>,
}

/// Pages allocated by `DxgkCbAllocatePagesForMdl`, mapped for the CPU.
///
/// # Invariants
/// `chunks[..count]` each come from a successful `DxgkCbAllocatePagesForMdl` on `adapter`
/// (handle + MDL of exactly `bytes` bytes) and are mapped to system VA at `cpu`; the chunks
/// together hold `total` bytes in order. Each is unmapped and freed exactly once, in `Drop`.
pub struct MdlPages {
    adapter: HANDLE,
    free: dxgk_sys::PFN_DXGKCB_FREEPAGESFROMMDL,
    chunks: [Option<Chunk>; MAX_MDLS],
    count: usize,
    total: usize,
}

// SAFETY: the pages and MDLs are owned exclusively; the callbacks may be called from any thread
// at PASSIVE_LEVEL.
unsafe impl Send for MdlPages {}

impl core::fmt::Debug for MdlPages {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MdlPages")
            .field("bytes", &self.total)
            .field("mdls", &self.count)
            .finish()
    }
}

impl MdlPages {
    /// Allocates `bytes` (rounded up to whole pages) of zeroed system memory.
    ///
    /// Fails with STATUS_INVALID_PARAMETER for 0 bytes or more than `MAX_MDLS` MDLs' worth,
    /// STATUS_PROCEDURE_NOT_FOUND when the interface predates WDDM 2.4, and passes Dxgkrnl's
    /// status through otherwise. Nothing stays allocated on failure.
    pub fn allocate(
        iface: &DxgkInterface,
        passive: &Passive,
        bytes: usize,
        cache: DXGK_MEMORY_CACHING_TYPE,
    ) -> NtResult<Self> {
        Self::allocate_in_mdls_of(iface, passive, bytes, cache, MAX_BYTES_PER_MDL)
    }

    /// As [`MdlPages::allocate`], with MDLs of at most `max_bytes_per_mdl` (a whole number of
    /// pages, at most [`MAX_BYTES_PER_MDL`]) — smaller MDLs are easier for Mm to satisfy.
    pub fn allocate_in_mdls_of(
        iface: &DxgkInterface,
        _passive: &Passive,
        bytes: usize,
        cache: DXGK_MEMORY_CACHING_TYPE,
        max_bytes_per_mdl: usize,
    ) -> NtResult<Self> {
        if max_bytes_per_mdl == 0
            || !max_bytes_per_mdl.is_multiple_of(PAGE_SIZE)
            || max_bytes_per_mdl > MAX_BYTES_PER_MDL
        {
            return Err(NtError::INVALID_PARAMETER);
        }
        let alloc = iface.allocate_pages_for_mdl()?;
        let free = iface.free_pages_from_mdl()?;
        let total = bytes
            .checked_next_multiple_of(PAGE_SIZE)
            .filter(|&t| t > 0 && t <= max_bytes_per_mdl * MAX_MDLS)
            .ok_or(NtError::INVALID_PARAMETER)?;
        let mut pages = Self {
            adapter: iface.device_handle(),
            free,
            chunks: [None; MAX_MDLS],
            count: 0,
            total: 0,
        };
        let mut remaining = total;
        while remaining > 0 {
            let chunk_bytes = remaining.min(max_bytes_per_mdl);
            // On error `pages` drops here and frees the chunks allocated so far.
            let chunk = pages.allocate_chunk(alloc, chunk_bytes, cache)?;
            pages.chunks[pages.count] = Some(chunk);
            pages.count += 1;
            pages.total += chunk_bytes;
            remaining -= chunk_bytes;
        }
        // INVARIANT: every chunk allocated, size-checked and mapped; total == sum of chunks.
        Ok(pages)
    }

    fn allocate_chunk(
        &self,
        alloc: dxgk_sys::PFN_DXGKCB_ALLOCATEPAGESFORMDL,
        bytes: usize,
        cache: DXGK_MEMORY_CACHING_TYPE,
    ) -> NtResult<Chunk> {
        let mut args = DXGKARGCB_ALLOCATEPAGESFORMDL {
            LowAddress: LARGE_INTEGER { QuadPart: 0 },
            HighAddress: LARGE_INTEGER { QuadPart: i64::MAX },
            SkipBytes: LARGE_INTEGER { QuadPart: 0 },
            TotalBytes: bytes,
            CacheType: cache,
            ..Default::default()
        };
        // SAFETY: `args` is a valid, initialized argument block for the adapter's callback;
        // we are at PASSIVE_LEVEL (the caller holds a Passive token).
        crate::status::to_result(unsafe { alloc(self.adapter, &mut args) })?;
        let memory_handle = args.hMemoryHandle;
        let Some(mdl) = NonNull::new(args.pMdl) else {
            return Err(NtError::INSUFFICIENT_RESOURCES);
        };
        let give_back = |status: NtError| {
            self.free_one(memory_handle);
            Err(status)
        };
        // SAFETY: Dxgkrnl returned a valid MDL.
        let mdl_bytes = unsafe { dxgk_sys::MmGetMdlByteCount(mdl.as_ptr()) } as usize;
        if mdl_bytes != bytes {
            // Dxgkrnl adds MM_ALLOCATE_FULLY_REQUIRED; a short MDL would be a bug elsewhere.
            return give_back(NtError::INSUFFICIENT_RESOURCES);
        }
        // SAFETY: the MDL describes locked pages owned by us until FreePagesFromMdl.
        let va = unsafe {
            dxgk_sys::MmGetSystemAddressForMdlSafe(
                mdl.as_ptr(),
                dxgk_sys::NormalPagePriority.0 as u32,
            )
        };
        let Some(cpu) = NonNull::new(va.cast::<u8>()) else {
            return give_back(NtError::INSUFFICIENT_RESOURCES);
        };
        Ok(Chunk {
            memory_handle,
            mdl,
            bytes,
            cpu,
        })
    }

    fn free_one(&self, memory_handle: HANDLE) {
        let args = DXGKARGCB_FREEPAGESFROMMDL {
            hMemoryHandle: memory_handle,
        };
        // SAFETY: `memory_handle` came from AllocatePagesForMdl on this adapter and is freed once.
        let _ = unsafe { (self.free)(self.adapter, &args) };
    }

    /// Size in bytes (whole pages).
    pub fn len(&self) -> usize {
        self.total
    }

    /// Always false: an `MdlPages` holds at least one page.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Number of 4 KiB pages.
    pub fn page_count(&self) -> usize {
        self.total / PAGE_SIZE
    }

    /// Number of MDLs backing these pages.
    pub fn mdl_count(&self) -> usize {
        self.count
    }

    /// A borrowed view of MDL `i` (of [`MdlPages::mdl_count`]), e.g. to hand its pages to code
    /// written against the [`crate::mdl::Mdl`] VidMm passes.
    pub fn mdl(&self, i: usize) -> Option<crate::mdl::Mdl<'_>> {
        let c = self.chunks().nth(i)?;
        // SAFETY: the MDL came from DxgkCbAllocatePagesForMdl (header + PFN array as Mm builds
        // it) and stays allocated, its PFNs unchanged, until `self` drops.
        unsafe { crate::mdl::Mdl::from_raw(c.mdl.as_ptr()) }.ok()
    }

    fn chunks(&self) -> impl Iterator<Item = &Chunk> {
        self.chunks[..self.count].iter().flatten()
    }

    /// Runs `f` over the CPU bytes `[offset, offset + len)`, chunk by chunk.
    fn for_range(
        &self,
        offset: usize,
        len: usize,
        mut f: impl FnMut(*mut u8, usize, usize),
    ) -> NtResult<()> {
        let end = offset.checked_add(len).filter(|&e| e <= self.total);
        let Some(end) = end else {
            return Err(NtError::INVALID_PARAMETER);
        };
        let mut chunk_start = 0;
        let mut done = 0;
        for c in self.chunks() {
            let chunk_end = chunk_start + c.bytes;
            let lo = offset.max(chunk_start);
            let hi = end.min(chunk_end);
            if lo < hi {
                // SAFETY: `lo - chunk_start < c.bytes`: inside the chunk's mapping.
                let p = unsafe { c.cpu.as_ptr().add(lo - chunk_start) };
                f(p, hi - lo, done);
                done += hi - lo;
            }
            chunk_start = chunk_end;
        }
        Ok(())
    }

    /// Copies `data` into the pages at `offset`.
    pub fn write(&mut self, offset: usize, data: &[u8]) -> NtResult<()> {
        self.shared().write(offset, data)
    }

    /// Copies bytes at `offset` out of the pages.
    pub fn read(&self, offset: usize, out: &mut [u8]) -> NtResult<()> {
        self.shared().read(offset, out)
    }

    /// Fills `[offset, offset + len)` with `byte`.
    pub fn fill(&mut self, offset: usize, len: usize, byte: u8) -> NtResult<()> {
        self.shared().fill(offset, len, byte)
    }
}

impl MdlPages {
    /// The pages as memory shared with a device engine: reads and writes through `&self`, so a
    /// software engine thread and the driver can both reach them (the soft rgpu engine).
    pub fn shared(&self) -> SharedPages<'_> {
        SharedPages {
            source: Source::Mdl(self),
        }
    }
}

/// Driver memory seen as DMA-shared memory: every access is a raw-pointer copy into its system
/// mapping, taking `&self`, never a slice that spans memory another thread may write. Accesses
/// from different threads to the same bytes race the way a device's DMA races the CPU: order
/// them through the device protocol (doorbell, fences), as for hardware.
#[derive(Clone, Copy)]
pub struct SharedPages<'a> {
    source: Source<'a>,
}

#[derive(Clone, Copy)]
enum Source<'a> {
    /// MDL pages mapped chunk by chunk.
    Mdl(&'a MdlPages),
    /// One mapping of `len` bytes at `base` (a physical memory object's), alive for `'a`.
    Flat {
        base: NonNull<u8>,
        len: usize,
        _life: core::marker::PhantomData<&'a [u8]>,
    },
}

// SAFETY: every access through a SharedPages is a raw-pointer copy into a nonpaged system
// mapping, valid from any thread for `'a`; no reference to the bytes is ever formed.
unsafe impl Send for SharedPages<'_> {}
// SAFETY: as above.
unsafe impl Sync for SharedPages<'_> {}

impl<'a> SharedPages<'a> {
    /// A view of the `len` mapped bytes at `base`.
    ///
    /// # Safety
    /// `base` must start `len` bytes of nonpaged system mapping that stay mapped for `'a`,
    /// with write provenance (not derived from a shared reference).
    pub(crate) unsafe fn from_raw(base: NonNull<u8>, len: usize) -> Self {
        Self {
            source: Source::Flat {
                base,
                len,
                _life: core::marker::PhantomData,
            },
        }
    }

    /// Bytes covered.
    pub fn len(&self) -> usize {
        match self.source {
            Source::Mdl(p) => p.total,
            Source::Flat { len, .. } => len,
        }
    }

    /// True for no bytes (never: driver memory holds at least one page).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs `f(pointer, n, done)` over the bytes `[offset, offset + len)`, piece by piece;
    /// STATUS_INVALID_PARAMETER (and no call) when out of range.
    fn for_range(
        &self,
        offset: usize,
        len: usize,
        mut f: impl FnMut(*mut u8, usize, usize),
    ) -> NtResult<()> {
        match self.source {
            Source::Mdl(p) => p.for_range(offset, len, f),
            Source::Flat {
                base, len: total, ..
            } => {
                if offset.checked_add(len).is_none_or(|e| e > total) {
                    return Err(NtError::INVALID_PARAMETER);
                }
                // SAFETY: `offset + len <= total`: inside the mapping.
                let p = unsafe { base.as_ptr().add(offset) };
                f(p, len, 0);
                Ok(())
            }
        }
    }

    /// Copies bytes at `offset` into `out`; STATUS_INVALID_PARAMETER out of range (nothing read).
    pub fn read(&self, offset: usize, out: &mut [u8]) -> NtResult<()> {
        let len = out.len();
        self.for_range(offset, len, |src, n, done| {
            let dst = &mut out[done..done + n];
            // SAFETY: `src` has `n` readable bytes in the live mapping; a raw copy.
            unsafe { core::ptr::copy_nonoverlapping(src, dst.as_mut_ptr(), n) }
        })
    }

    /// Copies `data` to `offset`; STATUS_INVALID_PARAMETER out of range (nothing written).
    pub fn write(&self, offset: usize, data: &[u8]) -> NtResult<()> {
        self.for_range(offset, data.len(), |dst, n, done| {
            let src = &data[done..done + n];
            // SAFETY: `dst` has `n` writable bytes in the live mapping (for_range); a raw copy,
            // no reference to the destination is formed (see the type's race note).
            unsafe { core::ptr::copy_nonoverlapping(src.as_ptr(), dst, n) }
        })
    }

    /// Fills `[offset, offset + len)` with `byte`.
    pub fn fill(&self, offset: usize, len: usize, byte: u8) -> NtResult<()> {
        self.for_range(offset, len, |dst, n, _| {
            // SAFETY: `dst` has `n` writable bytes in the live mapping (for_range).
            unsafe { core::ptr::write_bytes(dst, byte, n) }
        })
    }
}

impl Drop for MdlPages {
    fn drop(&mut self) {
        for i in 0..self.count {
            if let Some(c) = self.chunks[i].take() {
                // SAFETY: the MDL was mapped with MmGetSystemAddressForMdlSafe at `cpu`; no
                // borrow of it remains (IoMmuMapping borrows `self` and is gone by now).
                unsafe { dxgk_sys::MmUnmapLockedPages(c.cpu.as_ptr().cast(), c.mdl.as_ptr()) };
                self.free_one(c.memory_handle);
            }
        }
    }
}

/// An `MdlPages` mapped into the device's IOMMU domain with `DxgkCbMapMdlToIoMmu`.
///
/// # Invariants
/// `handles[i]` is the live mapping of `pages`' i-th MDL on `adapter`; each is unmapped
/// exactly once, in `Drop`, while `pages` (borrowed for `'p`) is still alive.
pub struct IoMmuMapping<'p> {
    pages: &'p MdlPages,
    unmap: dxgk_sys::PFN_DXGKCB_UNMAPMDLFROMIOMMU,
    handles: [HANDLE; MAX_MDLS],
    mapped: usize,
}

impl core::fmt::Debug for IoMmuMapping<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("IoMmuMapping")
            .field("pages", self.pages)
            .finish()
    }
}

impl<'p> IoMmuMapping<'p> {
    /// Maps every MDL of `pages`. On failure, the MDLs already mapped are unmapped again.
    pub fn map(iface: &DxgkInterface, _passive: &Passive, pages: &'p MdlPages) -> NtResult<Self> {
        let map = iface.map_mdl_to_iommu()?;
        let unmap = iface.unmap_mdl_from_iommu()?;
        let mut mapping = Self {
            pages,
            unmap,
            handles: [core::ptr::null_mut(); MAX_MDLS],
            mapped: 0,
        };
        // On error `mapping` drops and unmaps what is mapped.
        map_each(map, pages, &mut mapping.handles, &mut mapping.mapped)?;
        // INVARIANT: every MDL of `pages` is mapped, handles recorded in order.
        Ok(mapping)
    }

    /// The pages this mapping makes device-visible.
    pub fn pages(&self) -> &MdlPages {
        self.pages
    }

    /// Logical address of 4 KiB page `index` (as the device must be programmed).
    pub fn page_address(&self, index: usize) -> Option<LogicalAddress> {
        logical_page(self.pages, index)
    }

    /// Logical address of byte `offset`.
    pub fn address_of(&self, offset: usize) -> Option<LogicalAddress> {
        let page = self.page_address(offset / PAGE_SIZE)?;
        Some(LogicalAddress(page.0 + (offset % PAGE_SIZE) as u64))
    }
}

impl Drop for IoMmuMapping<'_> {
    fn drop(&mut self) {
        for &h in &self.handles[..self.mapped] {
            let args = DXGKARGCB_UNMAPMDLFROMIOMMU { hMemoryHandle: h };
            // SAFETY: `h` is a live mapping handle from MapMdlToIoMmu on this adapter, unmapped
            // once; the MDL is still alive because `pages` is borrowed.
            unsafe { (self.unmap)(self.pages.adapter, &args) };
        }
    }
}

/// Pages that are device-visible for as long as this value lives: an [`MdlPages`] together with
/// its IOMMU mapping, for memory an adapter keeps (rings, fence pages, page tables).
///
/// # Invariants
/// `handles[..mapped]` are the live IOMMU mappings of `pages`' MDLs on `pages.adapter`. `Drop`
/// unmaps them all before the `pages` field is dropped (Rust drops fields after `drop`), so the
/// order unmap → unmap system VA → free holds by construction.
pub struct DeviceMemory {
    unmap: dxgk_sys::PFN_DXGKCB_UNMAPMDLFROMIOMMU,
    handles: [HANDLE; MAX_MDLS],
    mapped: usize,
    pages: MdlPages,
}

// SAFETY: owns its pages and mappings exclusively (see MdlPages).
unsafe impl Send for DeviceMemory {}

impl core::fmt::Debug for DeviceMemory {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DeviceMemory")
            .field("pages", &self.pages)
            .finish()
    }
}

impl DeviceMemory {
    /// Allocates `bytes` (whole pages) with [`MdlPages::allocate`] and maps them with
    /// `DxgkCbMapMdlToIoMmu`. Nothing stays allocated or mapped on failure.
    pub fn allocate(
        iface: &DxgkInterface,
        passive: &Passive,
        bytes: usize,
        cache: DXGK_MEMORY_CACHING_TYPE,
    ) -> NtResult<Self> {
        let map = iface.map_mdl_to_iommu()?;
        let unmap = iface.unmap_mdl_from_iommu()?;
        let pages = MdlPages::allocate(iface, passive, bytes, cache)?;
        let mut mem = Self {
            unmap,
            handles: [core::ptr::null_mut(); MAX_MDLS],
            mapped: 0,
            pages,
        };
        // On error `mem` drops: unmaps what is mapped, then frees the pages.
        map_each(map, &mem.pages, &mut mem.handles, &mut mem.mapped)?;
        // INVARIANT: every MDL mapped, handles in order.
        Ok(mem)
    }

    /// CPU access to the pages.
    pub fn pages(&self) -> &MdlPages {
        &self.pages
    }

    /// Mutable CPU access to the pages (the device may be reading them: order with the
    /// device through its doorbell / fences).
    pub fn pages_mut(&mut self) -> &mut MdlPages {
        &mut self.pages
    }

    /// Logical address of 4 KiB page `index`.
    pub fn page_address(&self, index: usize) -> Option<LogicalAddress> {
        logical_page(&self.pages, index)
    }

    /// Logical address of byte `offset`.
    pub fn address_of(&self, offset: usize) -> Option<LogicalAddress> {
        let page = self.page_address(offset / PAGE_SIZE)?;
        Some(LogicalAddress(page.0 + (offset % PAGE_SIZE) as u64))
    }
}

impl Drop for DeviceMemory {
    fn drop(&mut self) {
        for &h in &self.handles[..self.mapped] {
            let args = DXGKARGCB_UNMAPMDLFROMIOMMU { hMemoryHandle: h };
            // SAFETY: `h` is a live mapping of one of our MDLs, unmapped once; the MDL stays
            // alive until `self.pages` drops after this function.
            unsafe { (self.unmap)(self.pages.adapter, &args) };
        }
    }
}

/// Maps every MDL of `pages` with `DxgkCbMapMdlToIoMmu`, recording the handles in order in
/// `handles[..*mapped]` (so a caller's `Drop` unmaps exactly what was mapped, even after an
/// error). PASSIVE_LEVEL (the callers hold a Passive token).
fn map_each(
    map: dxgk_sys::PFN_DXGKCB_MAPMDLTOIOMMU,
    pages: &MdlPages,
    handles: &mut [HANDLE; MAX_MDLS],
    mapped: &mut usize,
) -> NtResult<()> {
    for c in pages.chunks() {
        let mut args = DXGKARGCB_MAPMDLTOIOMMU {
            pMdl: c.mdl.as_ptr(),
            hMemoryHandle: core::ptr::null_mut(),
        };
        // SAFETY: the MDL is valid and stays unchanged while mapped (its owner outlives the
        // mapping); PASSIVE_LEVEL per the callers' token.
        crate::status::to_result(unsafe { map(pages.adapter, &mut args) })?;
        handles[*mapped] = args.hMemoryHandle;
        *mapped += 1;
    }
    Ok(())
}

/// Logical address of page `index` of `pages`, read from the MDL's page array.
fn logical_page(pages: &MdlPages, index: usize) -> Option<LogicalAddress> {
    let mut first = 0;
    for c in pages.chunks() {
        let n = c.bytes / PAGE_SIZE;
        if index < first + n {
            // SAFETY: the MDL is valid and has at least `n` PFN entries.
            let pfns = unsafe { dxgk_sys::MmGetMdlPfnArray(c.mdl.as_ptr()) };
            // SAFETY: `index - first < n`, within the PFN array.
            let entry = unsafe { pfns.add(index - first) };
            // SAFETY: `entry` points into the MDL's PFN array.
            let pfn = unsafe { *entry };
            return Some(LogicalAddress((pfn as u64) << 12));
        }
        first += n;
    }
    None
}

/// A block from `DxgkCbAllocateContiguousMemory`: CPU-visible, physically contiguous, mapped
/// in the IOMMU by Dxgkrnl for its lifetime. Dxgkrnl returns no device address for it, so use
/// it for CPU-side state, not for anything the device must address under DMA remapping.
///
/// # Invariants
/// `memory_handle`/`cpu` come from a successful allocation of `bytes` bytes on `adapter`; freed
/// exactly once, in `Drop`.
pub struct ContiguousMemory {
    adapter: HANDLE,
    free: dxgk_sys::PFN_DXGKCB_FREECONTIGUOUSMEMORY,
    memory_handle: HANDLE,
    cpu: NonNull<u8>,
    bytes: usize,
}

impl core::fmt::Debug for ContiguousMemory {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ContiguousMemory")
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl ContiguousMemory {
    /// Allocates `bytes` (> 0) of contiguous memory.
    pub fn allocate(
        iface: &DxgkInterface,
        _passive: &Passive,
        bytes: usize,
        cache: DXGK_MEMORY_CACHING_TYPE,
    ) -> NtResult<Self> {
        let alloc = iface.allocate_contiguous_memory()?;
        let free = iface.free_contiguous_memory()?;
        if bytes == 0 {
            return Err(NtError::INVALID_PARAMETER);
        }
        let mut args = DXGKARGCB_ALLOCATECONTIGUOUSMEMORY {
            NumberOfBytes: bytes,
            LowestAcceptableAddress: LARGE_INTEGER { QuadPart: 0 },
            HighestAcceptableAddress: LARGE_INTEGER { QuadPart: i64::MAX },
            BoundaryAddressMultiple: LARGE_INTEGER { QuadPart: 0 },
            CacheType: cache,
            ..Default::default()
        };
        let adapter = iface.device_handle();
        // SAFETY: valid argument block; PASSIVE_LEVEL per the token.
        crate::status::to_result(unsafe { alloc(adapter, &mut args) })?;
        let Some(cpu) = NonNull::new(args.pMemory.cast::<u8>()) else {
            let f = DXGKARGCB_FREECONTIGUOUSMEMORY {
                hMemoryHandle: args.hMemoryHandle,
            };
            // SAFETY: give back what Dxgkrnl returned, once.
            let _ = unsafe { free(adapter, &f) };
            return Err(NtError::INSUFFICIENT_RESOURCES);
        };
        // INVARIANT: successful allocation recorded.
        Ok(Self {
            adapter,
            free,
            memory_handle: args.hMemoryHandle,
            cpu,
            bytes,
        })
    }

    /// The block as bytes.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `cpu` is a live block of `bytes` bytes owned exclusively by `self`.
        unsafe { core::slice::from_raw_parts_mut(self.cpu.as_ptr(), self.bytes) }
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.bytes
    }

    /// Always false.
    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }
}

impl Drop for ContiguousMemory {
    fn drop(&mut self) {
        let args = DXGKARGCB_FREECONTIGUOUSMEMORY {
            hMemoryHandle: self.memory_handle,
        };
        // SAFETY: the handle came from AllocateContiguousMemory on this adapter; freed once.
        let _ = unsafe { (self.free)(self.adapter, &args) };
    }
}
