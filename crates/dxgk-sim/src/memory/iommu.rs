//! The IOMMU: one logical address space per [`DomainId`], strict map/unmap with per-page
//! reference counts, the mappings of MDLs, and the translation every device access goes through
//! (a miss or a write to a read-only page is a fault, never a memory access).
//!
//! Domains are created on first use, in the machine's [`IommuMode`]. Who owns a domain is not
//! this layer's business: Dxgkrnl gives each adapter one ([`crate::AdapterId::domain`]).

use std::collections::{BTreeMap, HashMap};

use super::{scattered_runs, PAGE, REMAPPED_LOGICAL_BASE};

/// How the IOMMU translates the device's (logical) addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IommuMode {
    /// WDDM 2.4 IOMMU isolation: logical page == physical page.
    Identity,
    /// WDDM 3.0 DMA remapping: logical pages come from a separate range (starting at
    /// [`REMAPPED_LOGICAL_BASE`]) and never equal a physical page.
    Remapped,
}

/// One logical address space of the IOMMU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DomainId(pub u32);

/// Why the IOMMU refused a device access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IommuFaultKind {
    /// No mapping for the logical page.
    NotMapped,
    /// A write to a page mapped read-only.
    ReadOnly,
}

/// A piece of a device access within one page: (host address, offset in the access, length).
pub(crate) type Piece = (usize, usize, usize);
/// A refused access: the first faulting logical address and why.
pub(crate) type Miss = (u64, IommuFaultKind);

#[derive(Clone, Copy)]
pub(crate) struct PageEntry {
    pub(crate) host: usize,
    pub(crate) writable: bool,
    refs: u32,
}

/// One logical address space.
pub(crate) struct Domain {
    mode: IommuMode,
    next_logical: u64,
    pub(crate) pages: BTreeMap<u64, PageEntry>,
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
    pub(crate) fn map(&mut self, pages: &[(u64, usize)]) -> Vec<u64> {
        self.map_runs(pages, 1)
    }

    /// [`Domain::map`] keeping runs of `run` pages logically contiguous and `run`-aligned (a
    /// 64 KiB page needs one logical range; identity mode keeps the physical runs).
    pub(crate) fn map_runs(&mut self, pages: &[(u64, usize)], run: u64) -> Vec<u64> {
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

    /// Maps host pages at one contiguous logical range (remapped mode; identity mode keeps
    /// the physical pages, contiguous or not) and returns the logical PFNs.
    pub(crate) fn map_contiguous(&mut self, pages: &[(u64, usize)]) -> Vec<u64> {
        if self.mode == IommuMode::Identity {
            return self.map(pages);
        }
        let base = self.next_logical;
        // One unmapped page after the range, as between the scattered ranges.
        self.next_logical = base + pages.len() as u64 + 1;
        let logical: Vec<u64> = (base..base + pages.len() as u64).collect();
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

    pub(crate) fn unmap(&mut self, logical: &[u64]) {
        for l in logical {
            if let Some(e) = self.pages.get_mut(l) {
                e.refs -= 1;
                if e.refs == 0 {
                    self.pages.remove(l);
                }
            }
        }
    }

    /// Makes mapped page `logical` read-only or writable; false if it is not mapped.
    pub(crate) fn set_writable(&mut self, logical: u64, writable: bool) -> bool {
        match self.pages.get_mut(&(logical >> 12)) {
            Some(e) => {
                e.writable = writable;
                true
            }
            None => false,
        }
    }

    /// Checks every page of a device access of `len` bytes at `logical`; returns the host
    /// address, offset in the access and length of each page piece, or the faulting address
    /// and why.
    pub(crate) fn translate(
        &self,
        logical: u64,
        len: usize,
        write: bool,
    ) -> Result<Vec<Piece>, Miss> {
        let mut pieces = Vec::new();
        let mut addr = logical;
        let mut done = 0usize;
        while done < len {
            let off = (addr as usize) & (PAGE - 1);
            let n = (PAGE - off).min(len - done);
            pieces.push((self.host_of(addr, write)?, done, n));
            addr += n as u64;
            done += n;
        }
        Ok(pieces)
    }

    /// The pages from `logical`'s upwards, for lookups in increasing order.
    pub(crate) fn pages_from(&self, logical: u64) -> PagesFrom<'_> {
        PagesFrom {
            pages: self.pages.range(logical >> 12..).peekable(),
        }
    }

    /// The host address of logical byte `logical` for a read (or a write, `write`).
    pub(crate) fn host_of(&self, logical: u64, write: bool) -> Result<usize, Miss> {
        match self.pages.get(&(logical >> 12)) {
            None => Err((logical, IommuFaultKind::NotMapped)),
            Some(e) if write && !e.writable => Err((logical, IommuFaultKind::ReadOnly)),
            Some(e) => Ok(e.host + ((logical as usize) & (PAGE - 1))),
        }
    }
}

/// The pages of a domain from some logical address upwards, looked up in increasing order
/// ([`Domain::pages_from`]): one B-tree walk for a run of pages instead of one per page.
pub(crate) struct PagesFrom<'a> {
    pages: std::iter::Peekable<std::collections::btree_map::Range<'a, u64, PageEntry>>,
}

impl PagesFrom<'_> {
    /// [`Domain::host_of`] for `logical`, which must not be below any address asked before.
    pub(crate) fn host_of(&mut self, logical: u64, write: bool) -> Result<usize, Miss> {
        let page = logical >> 12;
        while self.pages.next_if(|(p, _)| **p < page).is_some() {}
        match self.pages.peek() {
            Some((p, e)) if **p == page => {
                if write && !e.writable {
                    Err((logical, IommuFaultKind::ReadOnly))
                } else {
                    Ok(e.host + ((logical as usize) & (PAGE - 1)))
                }
            }
            _ => Err((logical, IommuFaultKind::NotMapped)),
        }
    }

    /// [`PagesFrom::host_of`] for `logical`, and how many bytes from there (at most `max`, at
    /// least the rest of `logical`'s page or `max`) are mapped (writable, for a `write`) at
    /// consecutive logical pages backed by consecutive host pages: one stretch a single
    /// `memcpy` may move. The simulator leaves an unmapped logical page after every
    /// allocation's pages (see [`super::mm`]), so a stretch never spans two host allocations:
    /// where it ends depends on the logical layout, never on where the host heap put things.
    pub(crate) fn stretch(
        &mut self,
        logical: u64,
        max: usize,
        write: bool,
    ) -> Result<(usize, usize), Miss> {
        let host = self.host_of(logical, write)?;
        let mut n = PAGE - (logical as usize & (PAGE - 1));
        // Look ahead on a copy: the caller may stop inside the last page and ask again.
        let mut ahead = self.pages.clone();
        let mut last = ahead.next().map(|(p, e)| (*p, e.host));
        while n < max {
            match (last, ahead.next()) {
                (Some((p, h)), Some((q, e)))
                    if *q == p + 1 && e.host == h + PAGE && (e.writable || !write) =>
                {
                    n += PAGE;
                    last = Some((*q, e.host));
                }
                _ => break,
            }
        }
        Ok((host, n.min(max)))
    }
}

/// An IOMMU mapping of an MDL's pages, under the handle its mapper was given.
pub(crate) struct MdlMapping {
    pub(crate) domain: DomainId,
    pub(crate) mdl: usize,
    /// CPU VA range the MDL describes (for "pool freed while mapped").
    pub(crate) va: (usize, usize),
    pub(crate) logical: Vec<u64>,
    /// [`super::mdl_checksum`] at map time.
    pub(crate) checksum: u64,
    pub(crate) span: usize,
    pub(crate) site: String,
}

/// Every domain of a machine and the MDL mappings in them.
#[derive(Default)]
pub(crate) struct Iommu {
    /// A handful of entries (one per adapter), looked up on every device access: a B-tree
    /// search is a few comparisons where hashing the key (SipHash) cost ~90 instructions.
    domains: BTreeMap<DomainId, Domain>,
    /// MDL mappings by handle.
    pub(crate) maps: HashMap<usize, MdlMapping>,
    /// The most entries `maps` held at once.
    pub(crate) peak_maps: usize,
}

impl Iommu {
    /// `id`'s address space (created, empty, on first use).
    pub(crate) fn domain(&mut self, id: DomainId, mode: IommuMode) -> &mut Domain {
        self.domains.entry(id).or_insert_with(|| Domain::new(mode))
    }

    /// Pages domain `id` maps now, and the most it mapped at once.
    pub(crate) fn mapped_pages(&self, id: DomainId) -> (usize, usize) {
        self.domains
            .get(&id)
            .map_or((0, 0), |d| (d.pages.len(), d.peak_pages))
    }

    /// Records an MDL mapping under handle `h`.
    pub(crate) fn insert_mapping(&mut self, h: usize, map: MdlMapping) {
        self.maps.insert(h, map);
        self.peak_maps = self.peak_maps.max(self.maps.len());
    }

    /// A live mapping of `mdl`, if any.
    pub(crate) fn mapping_of_mdl(&self, mdl: usize) -> Option<usize> {
        self.maps
            .iter()
            .find(|(_, m)| m.mdl == mdl)
            .map(|(h, _)| *h)
    }

    /// Removes mapping `h` and unmaps its pages.
    pub(crate) fn remove_mapping(&mut self, h: usize, mode: IommuMode) -> Option<MdlMapping> {
        let map = self.maps.remove(&h)?;
        self.domain(map.domain, mode).unmap(&map.logical);
        Some(map)
    }

    /// A live mapping whose MDL describes CPU VAs overlapping `[va, va + len)`.
    pub(crate) fn mapping_over(&self, va: usize, len: usize) -> Option<(usize, &MdlMapping)> {
        self.maps
            .iter()
            .find(|(_, map)| map.va.0 < va + len && va < map.va.1)
            .map(|(h, m)| (*h, m))
    }
}
