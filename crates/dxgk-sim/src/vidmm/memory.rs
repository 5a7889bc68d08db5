//! Memory the simulated VidMm owns: host frames from Mm mapped in the adapter's IOMMU domain for
//! their whole life, standing for what Dxgkrnl allocates for itself.

use crate::dxgkrnl::AdapterId;
use crate::machine::Machine;
use crate::memory::{HandleKind, KernelAlloc, PAGE, PAGES_PER_64K};

/// System memory owned by the simulated VidMm ([`crate::vidmm`]), not by the driver: host
/// frames with scattered physical PFNs, mapped in one adapter's IOMMU for their whole life
/// (logical == physical in [`crate::IommuMode::Identity`], a separate range in
/// [`crate::IommuMode::Remapped`]). Not an injection point and not part of the driver's leak
/// checks: it stands for what Dxgkrnl allocates for itself (page tables, paging buffers,
/// allocation backing). Freed with [`Machine::vidmm_free`]. Per-page overhead is one logical
/// page number plus the IOMMU and frame-table entries.
#[derive(Debug)]
pub struct VidmmMemory {
    handle: usize,
    adapter: AdapterId,
    base: usize,
    logical: Vec<u64>,
    /// Physical PFN of each page (what an MDL over it names).
    physical: Vec<u64>,
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

    /// Physical page numbers of every page, in order (what an MDL describing it lists; the
    /// device may use them only where logical == physical).
    pub fn physical_pages(&self) -> &[u64] {
        &self.physical
    }

    /// Whether the logical pages form one contiguous run.
    pub fn logically_contiguous(&self) -> bool {
        self.logical.windows(2).all(|w| w[1] == w[0] + 1)
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

/// How [`Machine::vidmm_allocate_runs`] lays pages out in the logical space.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// Scattered 4 KiB pages.
    Pages,
    /// Scattered 64 KiB-aligned runs of 16 pages.
    Runs64K,
    /// One logically contiguous range (remapped mode).
    Contiguous,
}

impl Machine {
    /// Allocates `pages` pages of VidMm-owned memory mapped in `adapter`'s IOMMU ([`VidmmMemory`]).
    /// `zero`: zero-filled, else filled with [`crate::memory::FRESH_PAGE_FILL`]. None when the
    /// machine's physical memory ([`crate::memory::PHYSICAL_MEMORY_LIMIT`]) is exhausted.
    pub fn vidmm_allocate(
        &self,
        adapter: AdapterId,
        pages: usize,
        zero: bool,
    ) -> Option<VidmmMemory> {
        self.vidmm_allocate_runs(adapter, pages, zero, Layout::Pages)
    }

    /// [`Machine::vidmm_allocate`] at one logically contiguous range (in
    /// [`crate::IommuMode::Remapped`]; identity mode keeps the scattered physical pages): what
    /// Dxgkrnl hands out to describe an allocation with a contiguous ADL.
    pub fn vidmm_allocate_contiguous(
        &self,
        adapter: AdapterId,
        pages: usize,
        zero: bool,
    ) -> Option<VidmmMemory> {
        self.vidmm_allocate_runs(adapter, pages, zero, Layout::Contiguous)
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
        self.vidmm_allocate_runs(adapter, pages, zero, Layout::Runs64K)
    }

    fn vidmm_allocate_runs(
        &self,
        adapter: AdapterId,
        pages: usize,
        zero: bool,
        layout: Layout,
    ) -> Option<VidmmMemory> {
        assert!(pages > 0, "empty VidMm allocation");
        let mut mem = self.state.mem();
        let run = match layout {
            Layout::Runs64K => PAGES_PER_64K as u64,
            _ => 1,
        };
        let (region, host) = mem
            .mm
            .allocate_scattered(pages, 0, u64::MAX >> 1, run, zero)?;
        let domain = adapter.domain();
        let d = mem.iommu.domain(domain, self.state.config.iommu);
        let logical = match layout {
            Layout::Contiguous => d.map_contiguous(&host),
            _ => d.map_runs(&host, run),
        };
        let physical = host.iter().map(|p| p.0).collect();
        drop(host);
        let h = mem.handles.issue(HandleKind::Kernel);
        let base = region.base;
        mem.kernel_allocs.insert(
            h,
            KernelAlloc {
                region,
                logical: logical.clone(),
                domain,
            },
        );
        Some(VidmmMemory {
            handle: h,
            adapter,
            base,
            logical,
            physical,
        })
    }

    /// Unmaps VidMm-owned memory from the IOMMU and frees it (pages filled with
    /// [`crate::memory::FREED_PAGE_FILL`]).
    pub fn vidmm_free(&self, memory: VidmmMemory) {
        let mut mem = self.state.mem();
        let Some(r) = mem.kernel_allocs.remove(&memory.handle) else {
            panic!("dxgk-sim: VidMm memory {:#x} freed twice", memory.handle);
        };
        mem.handles.forget(memory.handle);
        debug_assert_eq!(r.domain, memory.adapter.domain());
        mem.iommu
            .domain(r.domain, self.state.config.iommu)
            .unmap(&r.logical);
        mem.mm.retire_region(&r.region);
        drop(mem);
        r.region.release();
    }

    /// Live VidMm-owned allocations (all adapters).
    pub fn vidmm_allocations(&self) -> usize {
        self.state.mem().kernel_allocs.len()
    }
}
