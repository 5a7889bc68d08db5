//! The GPU MMU: per-ASID roots, the page-table walker and the TLB.
//!
//! The TLB really caches translations: after a leaf entry changes in memory, the device keeps
//! using the cached translation until a FLUSH_TLB (or SET_ROOT, a root-register write or
//! reset) removes it. Only successful translations are cached; intermediate levels are not
//! (apart from the page-walk cache of leaf tables, flushed by the same commands).

use crate::bus::{DmaBus, DmaFault, DmaSource};
use crate::pte::{
    self, Pte, ENTRIES_PER_TABLE, LEVELS, PAGE_64K_SHIFT, PAGE_SHIFT, PTE_SIZE, VA_LIMIT,
};

/// What a level-1 entry points at: the leaf table of a 2 MiB region and its kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
struct LeafTable {
    /// Logical address of the table.
    addr: u64,
    /// 64 KiB-page table ([`pte::TABLE_64K`]): 32 entries indexed by VA bits 20:16.
    pages_64k: bool,
}

impl LeafTable {
    fn of(level1: Pte) -> Self {
        LeafTable {
            addr: level1.addr(),
            pages_64k: level1.is_table_64k(),
        }
    }
    fn page_shift(self) -> u32 {
        if self.pages_64k {
            PAGE_64K_SHIFT
        } else {
            PAGE_SHIFT
        }
    }
    fn index(self, va: u64) -> usize {
        if self.pages_64k {
            pte::index_64k(va)
        } else {
            pte::index(va, 0)
        }
    }
}
use crate::regs::NUM_ASIDS;

/// Number of TLB entries (fully associative, FIFO replacement).
pub const TLB_ENTRIES: usize = 32;

/// An ASID's root: what SET_ROOT / the `ASIDn_*` registers program.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Root {
    /// Logical address of the root table (4 KiB-aligned).
    pub addr: u64,
    /// Valid root entries (0 = the ASID is disabled).
    pub entries: u32,
}

/// One cached translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TlbEntry {
    /// Slot in use.
    pub valid: bool,
    /// Address space.
    pub asid: u8,
    /// `va >> shift` of the page.
    pub tag: u64,
    /// 12 (4 KiB page) or 16 (64 KiB page, from a 64 KiB-page leaf table).
    pub shift: u32,
    /// The leaf entry the translation came from.
    pub pte: Pte,
}

impl TlbEntry {
    fn covers(&self, asid: u8, va: u64) -> bool {
        self.valid && self.asid == asid && self.tag == va >> self.shift
    }
    fn overlaps(&self, asid: u8, start: u64, end_incl: u64) -> bool {
        let first = self.tag << self.shift;
        let last = first | ((1u64 << self.shift) - 1);
        self.valid && self.asid == asid && first <= end_incl && start <= last
    }
}

/// Leaf-table entries of the page-walk cache (paging-structure cache).
pub const WALK_CACHE_ENTRIES: usize = 8;

/// A cached walk: the leaf table that maps the 2 MiB region `tag << 21` of `asid`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
struct WalkEntry {
    valid: bool,
    asid: u8,
    tag: u64,
    leaf_table: LeafTable,
}

/// Span of one leaf table (512 × 4 KiB).
const LEAF_SPAN_SHIFT: u32 = 21;

/// A fully associative TLB with FIFO replacement (deterministic), plus a small page-walk cache
/// of leaf-table addresses (the upper three levels of a walk are skipped on a hit). Both are
/// invalidated by the same flushes: a change to any level of a page table needs FLUSH_TLB.
#[derive(Clone, Debug)]
pub struct Tlb {
    entries: [TlbEntry; TLB_ENTRIES],
    next: usize,
    walks: [WalkEntry; WALK_CACHE_ENTRIES],
    next_walk: usize,
}

impl Default for Tlb {
    fn default() -> Self {
        Tlb {
            entries: [TlbEntry::default(); TLB_ENTRIES],
            next: 0,
            walks: [WalkEntry::default(); WALK_CACHE_ENTRIES],
            next_walk: 0,
        }
    }
}

impl Tlb {
    /// The cached translation for `va` in `asid`, if any.
    #[must_use]
    pub fn lookup(&self, asid: u8, va: u64) -> Option<TlbEntry> {
        self.entries.iter().find(|e| e.covers(asid, va)).copied()
    }
    /// Caches a translation, evicting the oldest slot.
    pub fn insert(&mut self, e: TlbEntry) {
        if let Some(slot) = self.entries.get_mut(self.next) {
            *slot = e;
        }
        self.next = (self.next + 1) % TLB_ENTRIES;
    }
    /// The cached leaf table for `va` in `asid`, if any.
    fn leaf_table(&self, asid: u8, va: u64) -> Option<LeafTable> {
        let tag = va >> LEAF_SPAN_SHIFT;
        self.walks
            .iter()
            .find(|w| w.valid && w.asid == asid && w.tag == tag)
            .map(|w| w.leaf_table)
    }
    /// Caches the leaf table of `va`'s 2 MiB region, evicting the oldest walk.
    fn insert_walk(&mut self, asid: u8, va: u64, leaf_table: LeafTable) {
        if let Some(slot) = self.walks.get_mut(self.next_walk) {
            *slot = WalkEntry {
                valid: true,
                asid,
                tag: va >> LEAF_SPAN_SHIFT,
                leaf_table,
            };
        }
        self.next_walk = (self.next_walk + 1) % WALK_CACHE_ENTRIES;
    }
    /// Drops everything.
    pub fn flush_all(&mut self) {
        self.entries = [TlbEntry::default(); TLB_ENTRIES];
        self.next = 0;
        self.walks = [WalkEntry::default(); WALK_CACHE_ENTRIES];
        self.next_walk = 0;
    }
    /// Drops every translation of `asid`.
    pub fn flush_asid(&mut self, asid: u8) {
        for e in self.entries.iter_mut().filter(|e| e.asid == asid) {
            e.valid = false;
        }
        for w in self.walks.iter_mut().filter(|w| w.asid == asid) {
            w.valid = false;
        }
    }
    /// Drops translations of `asid` overlapping `[va, va + size)` (no-op for size 0).
    pub fn flush_range(&mut self, asid: u8, va: u64, size: u64) {
        if size == 0 {
            return;
        }
        let end_incl = va.saturating_add(size - 1);
        for e in self.entries.iter_mut() {
            if e.overlaps(asid, va, end_incl) {
                e.valid = false;
            }
        }
        let (first, last) = (va >> LEAF_SPAN_SHIFT, end_incl >> LEAF_SPAN_SHIFT);
        for w in self.walks.iter_mut() {
            if w.asid == asid && first <= w.tag && w.tag <= last {
                w.valid = false;
            }
        }
    }
    /// Number of valid entries.
    #[must_use]
    pub fn occupancy(&self) -> usize {
        self.entries.iter().filter(|e| e.valid).count()
    }
}

/// Why a translation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmuFault {
    /// VA ≥ 2^48.
    VaRange,
    /// The ASID has no root (0 entries) or the root index ≥ its entry count.
    RootRange,
    /// An entry at `level` (3 = root … 0 = leaf) is not valid.
    Invalid {
        /// Level of the invalid entry.
        level: u8,
    },
    /// A write to a read-only page.
    WriteProtect,
    /// Reading a page-table entry at `level` faulted on the bus.
    Bus {
        /// Level of the table being read.
        level: u8,
        /// The bus fault.
        fault: DmaFault,
    },
}

/// A successful translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// Logical address of the byte at the translated VA.
    pub logical: u64,
    /// Bytes from that address to the end of the page.
    pub page_remaining: u64,
    /// The leaf entry.
    pub pte: Pte,
}

/// MMU counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MmuStats {
    /// Translations served by the TLB.
    pub tlb_hits: u64,
    /// Translations that needed a walk.
    pub tlb_misses: u64,
    /// Page-table entries read by walks.
    pub pte_reads: u64,
    /// FLUSH_TLB and SET_ROOT commands executed (MMIO root writes are not counted).
    pub flushes: u64,
}

/// Roots, TLB and counters.
#[derive(Clone, Debug, Default)]
pub struct Mmu {
    /// Per-ASID roots.
    pub roots: [Root; NUM_ASIDS],
    /// The TLB.
    pub tlb: Tlb,
    /// Counters (not architectural; survive reset).
    pub stats: MmuStats,
}

impl Mmu {
    /// Clears roots and TLB (reset); keeps the counters.
    pub fn reset(&mut self) {
        self.roots = [Root::default(); NUM_ASIDS];
        self.tlb.flush_all();
    }

    /// Programs `asid`'s root and drops its cached translations. Out-of-range ASIDs are ignored.
    pub fn set_root(&mut self, asid: u8, root: Root) {
        if let Some(r) = self.roots.get_mut(asid as usize) {
            *r = root;
            self.tlb.flush_asid(asid);
        }
    }

    /// Translates `va` in `asid` for a read or a write, through the TLB.
    pub fn translate(
        &mut self,
        bus: &mut impl DmaBus,
        asid: u8,
        va: u64,
        write: bool,
    ) -> Result<Translation, MmuFault> {
        if va >= VA_LIMIT {
            return Err(MmuFault::VaRange);
        }
        let (pte, shift) = if let Some(e) = self.tlb.lookup(asid, va) {
            self.stats.tlb_hits += 1;
            (e.pte, e.shift)
        } else {
            self.stats.tlb_misses += 1;
            let (pte, shift) = self.walk(bus, asid, va)?;
            self.tlb.insert(TlbEntry {
                valid: true,
                asid,
                tag: va >> shift,
                shift,
                pte,
            });
            (pte, shift)
        };
        if write && pte.is_read_only() {
            return Err(MmuFault::WriteProtect);
        }
        let size = 1u64 << shift;
        // A 64 KiB page's base is 64 KiB-aligned: ADDR bits 15:12 are ignored.
        let base = pte.addr() & !(size - 1);
        let off = va & (size - 1);
        Ok(Translation {
            logical: base + off,
            page_remaining: size - off,
            pte,
        })
    }

    /// Walks the tables for `va` without consulting or filling the TLB; returns the leaf entry
    /// and the shift of the page it maps (12, or 16 in a 64 KiB-page leaf table).
    pub fn walk(
        &mut self,
        bus: &mut impl DmaBus,
        asid: u8,
        va: u64,
    ) -> Result<(Pte, u32), MmuFault> {
        let root = self.roots.get(asid as usize).copied().unwrap_or_default();
        let top = LEVELS - 1;
        let root_index = pte::index(va, top);
        if va >= VA_LIMIT || root_index >= (root.entries as usize).min(ENTRIES_PER_TABLE) {
            return Err(if va >= VA_LIMIT {
                MmuFault::VaRange
            } else {
                MmuFault::RootRange
            });
        }
        // The page-walk cache skips the upper levels for a region walked before.
        let leaf = match self.tlb.leaf_table(asid, va) {
            Some(leaf) => leaf,
            None => {
                let mut table = root.addr;
                let mut level1 = Pte::INVALID;
                for level in (1..=top).rev() {
                    let e = self.read_entry(bus, table, pte::index(va, level), level)?;
                    table = e.addr();
                    level1 = e;
                }
                let leaf = LeafTable::of(level1);
                self.tlb.insert_walk(asid, va, leaf);
                leaf
            }
        };
        let e = self.read_entry(bus, leaf.addr, leaf.index(va), 0)?;
        Ok((e, leaf.page_shift()))
    }

    /// Reads entry `index` of the table at `table` (of `level`); faults if it is not valid.
    fn read_entry(
        &mut self,
        bus: &mut impl DmaBus,
        table: u64,
        index: usize,
        level: usize,
    ) -> Result<Pte, MmuFault> {
        let addr = table.wrapping_add((index * PTE_SIZE) as u64);
        let mut raw = [0u8; PTE_SIZE];
        self.stats.pte_reads += 1;
        bus.read(addr, &mut raw, DmaSource::PageWalk)
            .map_err(|fault| MmuFault::Bus {
                level: level as u8,
                fault,
            })?;
        let e = Pte(u64::from_le_bytes(raw));
        if !e.is_valid() {
            return Err(MmuFault::Invalid { level: level as u8 });
        }
        Ok(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tlb_fifo_and_flushes() {
        let mut t = Tlb::default();
        let mk = |asid, va: u64, shift| TlbEntry {
            valid: true,
            asid,
            tag: va >> shift,
            shift,
            pte: Pte::leaf(va, 0),
        };
        t.insert(mk(1, 0x1000, 12));
        t.insert(mk(1, 0x10000, 16));
        t.insert(mk(2, 0x1000, 12));
        assert!(t.lookup(1, 0x1FFF).is_some());
        assert!(
            t.lookup(1, 0x1F000).is_some(),
            "64 KiB entry covers the whole 64 KiB"
        );
        assert!(t.lookup(1, 0x20000).is_none());
        t.flush_range(1, 0x1F000, 1);
        assert!(t.lookup(1, 0x10000).is_none());
        assert!(t.lookup(1, 0x1000).is_some());
        t.flush_asid(1);
        assert!(t.lookup(1, 0x1000).is_none());
        assert!(t.lookup(2, 0x1000).is_some());
        for i in 0..TLB_ENTRIES as u64 {
            t.insert(mk(3, i << 12, 12));
        }
        assert!(t.lookup(2, 0x1000).is_none(), "FIFO evicted the oldest");
        assert_eq!(t.occupancy(), TLB_ENTRIES);
        t.flush_all();
        assert_eq!(t.occupancy(), 0);
    }
}
