//! The shape of the driver's page tables (from PAGETABLELEVELDESC) and the one walker every
//! VidMm page-table operation goes through, as Asahi's `pgtable.rs` walks its tables: given a
//! level, an entry size and a VA range, [`Geometry::runs`] yields the consecutive entries of
//! each table the range covers. Mapping, unmapping, invalidating, linking tables into their
//! parents, rewriting a leaf table in the other page size, and finding which tables a range
//! needs (to create the missing ones) are all walks; no operation has a loop of its own over
//! tables or entries.

use super::{bad, VidmmResult, PAGE64, PAGES_PER_64K};

/// Geometry of the driver's page tables, from PAGETABLELEVELDESC.
#[derive(Clone, Debug)]
pub(super) struct Geometry {
    pub(super) bits: Vec<u32>,
    pub(super) va_bits: u32,
    pub(super) table_segment: u32,
    pub(super) paging_table_segment: u32,
    /// Entries of a 64 KiB-page leaf table, when VidMm uses 64 KiB pages.
    pub(super) entries_64k: Option<u32>,
}

/// Consecutive entries of one page table that a walk covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct TableRun {
    /// The table: (level, key), as [`super::Process::tables`] is keyed.
    pub(super) table: (usize, u64),
    /// Index in the table of the first entry.
    pub(super) index: u32,
    /// Entries in the run.
    pub(super) count: u64,
    /// The VA the first entry maps.
    pub(super) va: u64,
    /// Entries of the walk before this run.
    pub(super) offset: u64,
}

/// The walk [`Geometry::runs`] returns.
pub(super) struct Runs {
    level: usize,
    per_table: u64,
    entry_span: u64,
    key_shift: u32,
    va: u64,
    count: u64,
    done: u64,
}

impl Iterator for Runs {
    type Item = TableRun;

    fn next(&mut self) -> Option<TableRun> {
        if self.done >= self.count {
            return None;
        }
        let at = self.va + self.done * self.entry_span;
        let index = (at / self.entry_span) % self.per_table;
        let count = (self.per_table - index).min(self.count - self.done);
        let run = TableRun {
            table: (self.level, at >> self.key_shift),
            index: index as u32,
            count,
            va: at,
            offset: self.done,
        };
        self.done += count;
        Some(run)
    }
}

impl Geometry {
    pub(super) fn root(&self) -> usize {
        self.bits.len() - 1
    }
    /// Lowest VA bit indexed at `level`.
    pub(super) fn shift(&self, level: usize) -> u32 {
        12 + self.bits[..level].iter().sum::<u32>()
    }
    pub(super) fn entries(&self, level: usize) -> u32 {
        1 << self.bits[level]
    }
    /// Bytes one table of `level` covers.
    pub(super) fn table_span(&self, level: usize) -> u64 {
        1u64 << (self.shift(level) + self.bits[level])
    }

    /// The walker: `count` consecutive level-`level` entries from the one mapping `va`, as one
    /// [`TableRun`] per table, in VA order. `pages_64k`: the entries are those of 64 KiB-page
    /// leaf tables (level 0 only).
    pub(super) fn runs(
        &self,
        level: usize,
        pages_64k: bool,
        va: u64,
        count: u64,
    ) -> VidmmResult<Runs> {
        let (per_table, entry_span) = match self.entries_64k {
            Some(n) if pages_64k && level == 0 => (u64::from(n), PAGE64 * PAGES_PER_64K as u64),
            _ if pages_64k => return Err(bad("64 KiB entries outside a 64 KiB-page leaf table")),
            _ => (u64::from(self.entries(level)), 1u64 << self.shift(level)),
        };
        Ok(Runs {
            level,
            per_table,
            entry_span,
            key_shift: self.shift(level) + self.bits[level],
            va,
            count,
            done: 0,
        })
    }

    /// The level-`level` entry mapping `va`: a walk of one entry.
    pub(super) fn entry(&self, level: usize, va: u64) -> TableRun {
        let shift = self.shift(level);
        self.runs(level, false, va >> shift << shift, 1)
            .expect("4 KiB-page entries exist at every level")
            .next()
            .expect("a walk of one entry has one run")
    }

    /// The keys of the level-`level` tables that `[va, va + len)` needs (`len` > 0), in order:
    /// a walk over the level's entries covering the range, one key per run.
    pub(super) fn tables_covering(
        &self,
        level: usize,
        va: u64,
        len: u64,
    ) -> impl Iterator<Item = u64> {
        let shift = self.shift(level);
        let first = va >> shift;
        let last = (va + len - 1) >> shift;
        self.runs(level, false, first << shift, last - first + 1)
            .expect("4 KiB-page entries exist at every level")
            .map(|r| r.table.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Four levels of 9 bits (x86-64 style), 64 KiB leaf tables of 32 entries.
    fn geo() -> Geometry {
        Geometry {
            bits: vec![9, 9, 9, 9],
            va_bits: 48,
            table_segment: 1,
            paging_table_segment: 1,
            entries_64k: Some(32),
        }
    }

    #[test]
    fn a_walk_splits_at_table_boundaries_and_keeps_offsets() {
        let g = geo();
        // 3 entries before the end of leaf table 0, then 5 in table 1.
        let runs: Vec<TableRun> = g.runs(0, false, 509 * PAGE64, 8).unwrap().collect();
        assert_eq!(
            runs,
            [
                TableRun {
                    table: (0, 0),
                    index: 509,
                    count: 3,
                    va: 509 * PAGE64,
                    offset: 0
                },
                TableRun {
                    table: (0, 1),
                    index: 0,
                    count: 5,
                    va: 512 * PAGE64,
                    offset: 3
                },
            ]
        );
        // Level 1 entries are 2 MiB each.
        let r: Vec<TableRun> = g.runs(1, false, 511 << 21, 2).unwrap().collect();
        assert_eq!(
            r.iter().map(|r| (r.table, r.index)).collect::<Vec<_>>(),
            [((1, 0), 511), ((1, 1), 0)]
        );
    }

    #[test]
    fn a_64k_walk_uses_64k_entries_and_only_at_the_leaves() {
        let g = geo();
        let r: Vec<TableRun> = g
            .runs(0, true, (2 << 20) - 2 * 0x1_0000, 3)
            .unwrap()
            .collect();
        assert_eq!(
            r.iter()
                .map(|r| (r.table, r.index, r.count))
                .collect::<Vec<_>>(),
            [((0, 0), 30, 2), ((0, 1), 0, 1)]
        );
        assert!(g.runs(1, true, 0, 1).is_err());
        let mut no64 = geo();
        no64.entries_64k = None;
        assert!(no64.runs(0, true, 0, 1).is_err());
    }

    #[test]
    fn tables_covering_names_each_needed_table_once() {
        let g = geo();
        // [2 MiB - 4 KiB, 4 MiB + 4 KiB): leaf tables 0, 1, 2; one level-1 table.
        let (va, len) = ((2 << 20) - PAGE64, (2 << 20) + 2 * PAGE64);
        assert_eq!(g.tables_covering(0, va, len).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(g.tables_covering(1, va, len).collect::<Vec<_>>(), [0]);
        assert_eq!(g.tables_covering(2, 1 << 39, 1).collect::<Vec<_>>(), [1]);
        let e = g.entry(1, (3 << 21) + 5 * PAGE64);
        assert_eq!((e.table, e.index, e.va), ((1, 0), 3, 3 << 21));
    }
}
