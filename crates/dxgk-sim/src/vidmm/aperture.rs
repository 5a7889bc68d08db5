//! Aperture segments as VidMm drives them: the segments the driver described with
//! `Flags.Aperture` in QuerySegment, a range allocator over each, Dxgkrnl's book of what is
//! mapped (so an UNMAP of a range never mapped is caught), and the MDLs VidMm hands the driver
//! in MAP_APERTURE_SEGMENT.
//!
//! Which operation maps a range is decided once per adapter ([`ApertureMode`]):
//! MAP_APERTURE_SEGMENT with an MDL of the backing pages on the WDDM 2.4 path, where logical ==
//! physical so the MDL's PFNs are device addresses; MAP_APERTURE_SEGMENT2 with an ADL on an
//! adapter Dxgkrnl accepted DMA remapping for, where the MDL's PFNs mean nothing to the device.

use std::collections::BTreeMap;

use dxgk_sys::MDL;

use crate::memory::mm::{alloc_locked_mdl, write_pfn_array};
use crate::memory::{free_mdl, MDL_HEADER};

/// How VidMm maps aperture ranges on this adapter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApertureMode {
    /// MAP_APERTURE_SEGMENT with the MDL of the backing pages (no DMA remapping).
    Mdl,
    /// MAP_APERTURE_SEGMENT2 with an ADL (DMA remapping accepted). `cpu_visible`: the driver
    /// declared MapAperture2Supported, so allocations that asked for it get a
    /// `CpuVisibleAddress`.
    Adl { cpu_visible: bool },
    /// No aperture mapping is possible; allocations go to the implicit system-memory segment
    /// when their segment sets allow it. The reason says why.
    Unavailable(String),
}

/// Most pages one MDL can describe: its `Size` is a CSHORT (header + 8 bytes per page).
pub(super) const MDL_MAX_PAGES: usize = (i16::MAX as usize - MDL_HEADER) / 8;

/// One aperture segment: its size, and which of its pages are allocated and mapped.
#[derive(Debug)]
pub(super) struct ApertureSegment {
    /// Segment id (1-based, as the driver numbered its descriptors).
    pub(super) id: u32,
    /// `Flags.CacheCoherent` of its descriptor: MAP operations ask for cache coherency.
    pub(super) cache_coherent: bool,
    /// Free ranges: first page → pages.
    free: BTreeMap<u64, u64>,
    /// Ranges mapped with MAP_APERTURE_SEGMENT(2) and not yet unmapped: first page → pages.
    mapped: BTreeMap<u64, u64>,
}

impl ApertureSegment {
    /// A segment of `pages` 4 KiB pages, all free.
    pub(super) fn new(id: u32, pages: u64, cache_coherent: bool) -> Self {
        let mut free = BTreeMap::new();
        if pages > 0 {
            free.insert(0, pages);
        }
        Self {
            id,
            cache_coherent,
            free,
            mapped: BTreeMap::new(),
        }
    }

    /// First fit: the first page of `pages` free pages, now allocated; None when no free range
    /// is large enough (the segment is full or fragmented).
    pub(super) fn allocate(&mut self, pages: u64) -> Option<u64> {
        let (&first, &len) = self.free.iter().find(|(_, &len)| len >= pages)?;
        self.free.remove(&first);
        if len > pages {
            self.free.insert(first + pages, len - pages);
        }
        Some(first)
    }

    /// Returns `[first, first + pages)` to the free ranges, merging neighbours.
    pub(super) fn release(&mut self, first: u64, pages: u64) {
        let (mut start, mut len) = (first, pages);
        if let Some((&prev, &plen)) = self.free.range(..first).next_back() {
            if prev + plen == first {
                self.free.remove(&prev);
                start = prev;
                len += plen;
            }
        }
        if let Some(next_len) = self.free.remove(&(first + pages)) {
            len += next_len;
        }
        self.free.insert(start, len);
    }

    /// Records `[first, first + pages)` as mapped.
    pub(super) fn mark_mapped(&mut self, first: u64, pages: u64) {
        self.mapped.insert(first, pages);
    }

    /// Forgets the mapping of exactly `[first, first + pages)`; false if no MAP operation
    /// mapped that range (an UNMAP of it would unmap something never mapped).
    pub(super) fn take_mapped(&mut self, first: u64, pages: u64) -> bool {
        if self.mapped.get(&first) == Some(&pages) {
            self.mapped.remove(&first);
            true
        } else {
            false
        }
    }

    /// Pages currently mapped.
    pub(super) fn mapped_pages(&self) -> u64 {
        self.mapped.values().sum()
    }
}

/// An MDL VidMm built over physical pages for one MAP_APERTURE_SEGMENT (locked, no system VA,
/// `ByteOffset` 0), freed on drop. The pages stay owned by whoever owns them.
#[derive(Debug)]
pub(super) struct VidmmMdl {
    mdl: *mut MDL,
    pages: usize,
}

impl VidmmMdl {
    /// An MDL listing `pfns` (1 ..= [`MDL_MAX_PAGES`] of them).
    pub(super) fn new(pfns: &[u64]) -> Self {
        let pages = pfns.len();
        assert!((1..=MDL_MAX_PAGES).contains(&pages), "MDL of {pages} pages");
        let mdl = alloc_locked_mdl(pages);
        // SAFETY: a live MDL with room for `pages` PFNs.
        unsafe { write_pfn_array(mdl, pfns) };
        Self { mdl, pages }
    }

    /// The pointer VidMm passes as `pMdl`.
    pub(super) fn as_ptr(&self) -> *mut MDL {
        self.mdl
    }
}

impl Drop for VidmmMdl {
    fn drop(&mut self) {
        free_mdl(self.mdl, self.pages);
    }
}

// SAFETY: the MDL block is owned by this value alone; the driver reads it only during the
// BuildPagingBuffer call VidMm makes with it.
unsafe impl Send for VidmmMdl {}

/// How one aperture range is mapped: its place, and what the MAP operations carried (freed
/// once the range is unmapped).
#[derive(Debug)]
pub(super) struct ApertureMapping {
    pub(super) segment: u32,
    pub(super) first: u64,
    pub(super) pages: u64,
    /// The MDLs of the MAP_APERTURE_SEGMENT operations (MDL path; one per chunk of at most
    /// [`MDL_MAX_PAGES`]).
    pub(super) mdls: Vec<VidmmMdl>,
    /// The ADL of the MAP_APERTURE_SEGMENT2 operation (remapping path): its address.
    pub(super) adl: Option<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_fit_allocates_and_release_merges() {
        let mut s = ApertureSegment::new(1, 16, true);
        assert_eq!(s.allocate(4), Some(0));
        assert_eq!(s.allocate(4), Some(4));
        assert_eq!(s.allocate(8), Some(8));
        assert_eq!(s.allocate(1), None, "full");
        s.release(4, 4);
        assert_eq!(s.allocate(5), None, "a 4-page hole does not hold 5");
        s.release(0, 4);
        s.release(8, 8);
        assert_eq!(s.allocate(16), Some(0), "everything merged back");
    }

    #[test]
    fn only_a_mapped_range_can_be_unmapped() {
        let mut s = ApertureSegment::new(1, 16, false);
        s.mark_mapped(2, 3);
        assert!(!s.take_mapped(2, 2), "part of a mapping");
        assert!(!s.take_mapped(5, 1), "never mapped");
        assert_eq!(s.mapped_pages(), 3);
        assert!(s.take_mapped(2, 3));
        assert!(!s.take_mapped(2, 3), "twice");
    }
}
