//! [`PagePool`]: IOMMU-mapped pages kept for reuse (cf. Linux TTM's `ttm_pool`).
//!
//! Device-visible pages are expensive to make: `DxgkCbAllocatePagesForMdl` plus
//! `DxgkCbMapMdlToIoMmu` (or, with DMA remapping, `DxgkCbCreatePhysicalMemoryObject`,
//! `DxgkCbMapPhysicalMemory` and `DxgkCbAllocateAdl`), all PASSIVE_LEVEL round trips into Dxgkrnl. A pool keeps returned
//! pages mapped so that steady-state users make no Dxgkrnl calls at all, and so that pages can
//! be handed out at DISPATCH_LEVEL (from the free list only).
//!
//! * Bounded: at most [`PagePool::capacity`] pages are kept; more returns are freed at once.
//! * Zeroed on reuse: a page is cleared when it comes back, so no data leaks between users.
//! * Trimmed: [`PagePool::trim`] frees idle pages (call it when idle and on StopDevice); dropping
//!   the pool frees everything, so everything is returned before RemoveDevice.
//! * Counted: [`PoolStats`] says how many Dxgkrnl round trips were made and saved.
//!
//! Pages are single 4 KiB [`SystemMemory`] blocks from the pool's [`MemoryPath`] (WDDM 2.4 MDL
//! pages, or WDDM 3.0 physical memory objects with ADLs); users that need more take several.

use crate::device_memory::{MemoryPath, SystemMemory};
use crate::interface::DxgkInterface;
use crate::irql::Passive;
use crate::memory::PAGE_SIZE;
use crate::sync::SpinLock;
use crate::{NtError, NtResult};

/// Most pages any pool keeps.
pub const MAX_CAPACITY: usize = 64;

/// Counters of a [`PagePool`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Pages allocated and mapped through Dxgkrnl (two round trips each on the MDL path, three
    /// on the ADL path).
    pub allocated: u64,
    /// Pages unmapped and freed through Dxgkrnl.
    pub freed: u64,
    /// Requests served from the free list (no Dxgkrnl call).
    pub hits: u64,
    /// Requests that needed a new page.
    pub misses: u64,
    /// Pages currently kept in the free list.
    pub idle: usize,
}

struct State {
    free: [Option<SystemMemory>; MAX_CAPACITY],
    idle: usize,
    stats: PoolStats,
}

/// A bounded pool of zeroed, IOMMU-mapped 4 KiB pages.
pub struct PagePool {
    iface: DxgkInterface,
    path: MemoryPath,
    cache: dxgk_sys::DXGK_MEMORY_CACHING_TYPE,
    capacity: usize,
    state: SpinLock<State>,
}

impl core::fmt::Debug for PagePool {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PagePool")
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl PagePool {
    /// An empty pool keeping at most `capacity` (≤ [`MAX_CAPACITY`]) pages from `path`.
    pub fn new(
        iface: &DxgkInterface,
        path: MemoryPath,
        cache: dxgk_sys::DXGK_MEMORY_CACHING_TYPE,
        capacity: usize,
    ) -> Self {
        Self {
            iface: *iface,
            path,
            cache,
            capacity: capacity.min(MAX_CAPACITY),
            state: SpinLock::new(State {
                free: [const { None }; MAX_CAPACITY],
                idle: 0,
                stats: PoolStats::default(),
            }),
        }
    }

    /// Where the pool's pages come from.
    pub fn path(&self) -> MemoryPath {
        self.path
    }

    /// How many pages the pool keeps at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The counters.
    pub fn stats(&self) -> PoolStats {
        let s = self.state.lock();
        PoolStats {
            idle: s.idle,
            ..s.stats
        }
    }

    /// A zeroed page from the free list, without calling Dxgkrnl: usable at DISPATCH_LEVEL.
    /// `None` when the free list is empty.
    pub fn try_get(&self) -> Option<SystemMemory> {
        let mut s = self.state.lock();
        if s.idle == 0 {
            return None;
        }
        s.idle -= 1;
        let i = s.idle;
        let page = s.free[i].take();
        s.stats.hits += 1;
        page
    }

    /// A zeroed page: from the free list if possible, otherwise newly allocated and mapped
    /// (PASSIVE_LEVEL).
    pub fn get(&self, passive: &Passive) -> NtResult<SystemMemory> {
        if let Some(p) = self.try_get() {
            return Ok(p);
        }
        self.state.lock().stats.misses += 1;
        let page = SystemMemory::allocate(&self.iface, passive, self.path, PAGE_SIZE, self.cache)?;
        self.state.lock().stats.allocated += 1;
        Ok(page)
    }

    /// Gives a page back: it is zeroed and kept, or freed when the pool is full (freeing needs
    /// PASSIVE_LEVEL, hence the token). Pages of other sizes, of the other path or CPU-only are
    /// refused with STATUS_INVALID_PARAMETER (the page is freed).
    pub fn put(&self, _passive: &Passive, mut page: SystemMemory) -> NtResult<()> {
        if page.len() != PAGE_SIZE || page.path() != self.path || !page.is_device_visible() {
            return Err(NtError::INVALID_PARAMETER);
        }
        page.fill(0, PAGE_SIZE, 0)?;
        let overflow = {
            let mut s = self.state.lock();
            if s.idle < self.capacity {
                let i = s.idle;
                s.free[i] = Some(page);
                s.idle += 1;
                None
            } else {
                s.stats.freed += 1;
                Some(page)
            }
        };
        // Freed outside the spin lock: unmapping and freeing are PASSIVE_LEVEL calls.
        drop(overflow);
        Ok(())
    }

    /// Frees idle pages until at most `keep` remain (PASSIVE_LEVEL). Returns how many were freed.
    pub fn trim(&self, _passive: &Passive, keep: usize) -> usize {
        let mut freed = 0;
        loop {
            let page = {
                let mut s = self.state.lock();
                if s.idle <= keep {
                    break;
                }
                s.idle -= 1;
                let i = s.idle;
                s.stats.freed += 1;
                s.free[i].take()
            };
            // Dropped outside the spin lock (PASSIVE_LEVEL work).
            drop(page);
            freed += 1;
        }
        freed
    }
}

impl Drop for PagePool {
    fn drop(&mut self) {
        // `&mut self`: no one else can lock; free every idle page (PASSIVE_LEVEL, as the pool
        // is dropped from StopDevice / RemoveDevice).
        let s = self.state.get_mut();
        for slot in s.free.iter_mut().take(s.idle) {
            drop(slot.take());
        }
        s.idle = 0;
    }
}
