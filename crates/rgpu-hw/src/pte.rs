//! Page-table geometry and the 64-bit page-table entry (PTE).
//!
//! Four levels of 512 × 8-byte entries (one 4 KiB table each) translate a 48-bit GPU virtual
//! address, x86-64/AArch64 style. Levels are numbered as in WDDM: level 0 is the leaf, level 3
//! the root. A level-1 entry points either at a 4 KiB-page leaf table (512 entries, each mapping
//! a 4 KiB page) or — with [`TABLE_64K`] — at a 64 KiB-page leaf table (32 entries, each mapping
//! a 64 KiB page); both kinds cover the same 2 MiB and are 4 KiB tables. See
//! `docs/rgpu-device.md` §6.
//!
//! The low five bits are WDDM's `DXGK_PTE` flag bits at the same positions, so a driver turns a
//! `DXGK_PTE` into a leaf entry with a mask and a shift.
//!
//! ```text
//!  63      52 51                       12 11   6    5    4    3    2    1     0
//! +----------+---------------------------+------+-----+----+----+----+----+-----+
//! | reserved |  logical address [51:12]  | rsvd |T64K | NX | RO | CC |ZERO|VALID|
//! +----------+---------------------------+------+-----+----+----+----+----+-----+
//! ```

/// Number of page-table levels (WDDM `PageTableLevelCount`).
pub const LEVELS: usize = 4;
/// Index bits per level (WDDM `PageTableIndexBitCount`).
pub const INDEX_BITS: u32 = 9;
/// Entries per table (`1 << INDEX_BITS`).
pub const ENTRIES_PER_TABLE: usize = 1 << INDEX_BITS;
/// Size of one entry in bytes.
pub const PTE_SIZE: usize = 8;
/// Size (and required alignment) of every page table, root and 64 KiB-page leaf tables
/// included, in bytes.
pub const TABLE_SIZE: usize = ENTRIES_PER_TABLE * PTE_SIZE;
/// Number of GPU virtual-address bits (WDDM `VirtualAddressBitCount`).
pub const VA_BITS: u32 = 48;
/// One past the highest GPU virtual address.
pub const VA_LIMIT: u64 = 1 << VA_BITS;
/// Shift of a 4 KiB page.
pub const PAGE_SHIFT: u32 = 12;
/// Size of a 4 KiB page.
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;
/// Shift of a 64 KiB page.
pub const PAGE_64K_SHIFT: u32 = 16;
/// Size of a 64 KiB page.
pub const PAGE_64K_SIZE: u64 = 1 << PAGE_64K_SHIFT;
/// Entries a 64 KiB-page leaf table uses (VA bits 20:16); the rest of its 4 KiB is ignored.
pub const ENTRIES_PER_64K_TABLE: usize = 1 << (level_shift(1) - PAGE_64K_SHIFT);

/// Entry bit 0: the entry is valid (translation continues / the page is mapped).
pub const VALID: u64 = 1 << 0;
/// Entry bit 1 (leaf): reads return zeros and writes are discarded; memory is not accessed.
pub const ZERO: u64 = 1 << 1;
/// Entry bit 2 (leaf): accesses snoop CPU caches (no behavioural effect in the model).
pub const CACHE_COHERENT: u64 = 1 << 2;
/// Entry bit 3 (leaf): writes fault with `WRITE_PROTECT`.
pub const READ_ONLY: u64 = 1 << 3;
/// Entry bit 4 (leaf): not executable by shader units; the command processor ignores it.
pub const NO_EXECUTE: u64 = 1 << 4;
/// Entry bit 5 (level 1 only): the next table is a 64 KiB-page leaf table.
pub const TABLE_64K: u64 = 1 << 5;
/// Entry bits 51:12: the logical address of the page or next-level table.
pub const ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;
/// Bits of a leaf entry that carry meaning; all others must be zero (the device ignores them).
pub const LEAF_FLAGS_MASK: u64 = VALID | ZERO | CACHE_COHERENT | READ_ONLY | NO_EXECUTE;

/// Bit position of the lowest VA bit that indexes `level` (12, 21, 30, 39) in 4 KiB-page
/// tables.
#[must_use]
pub const fn level_shift(level: usize) -> u32 {
    PAGE_SHIFT + INDEX_BITS * level as u32
}

/// Index into the table at `level` for `va` (only the 9 relevant bits are used).
#[must_use]
pub const fn index(va: u64, level: usize) -> usize {
    ((va >> level_shift(level)) as usize) & (ENTRIES_PER_TABLE - 1)
}

/// Index into a 64 KiB-page leaf table for `va` (VA bits 20:16).
#[must_use]
pub const fn index_64k(va: u64) -> usize {
    ((va >> PAGE_64K_SHIFT) as usize) & (ENTRIES_PER_64K_TABLE - 1)
}

/// Bytes of VA covered by one entry at `level` (4 KiB, 2 MiB, 1 GiB, 512 GiB).
#[must_use]
pub const fn entry_span(level: usize) -> u64 {
    1 << level_shift(level)
}

/// A 64-bit page-table entry with named accessors. The raw value is what lives in memory
/// (little-endian).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Pte(pub u64);

impl core::fmt::Debug for Pte {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Pte({:#018x}", self.0)?;
        if self.is_valid() {
            write!(f, " addr={:#x}", self.addr())?;
        } else {
            f.write_str(" invalid")?;
        }
        for (bit, name) in [
            (ZERO, "ZERO"),
            (CACHE_COHERENT, "CC"),
            (READ_ONLY, "RO"),
            (NO_EXECUTE, "NX"),
            (TABLE_64K, "T64K"),
        ] {
            if self.0 & bit != 0 {
                write!(f, " {name}")?;
            }
        }
        f.write_str(")")
    }
}

impl Pte {
    /// The all-zero, invalid entry (what VidMm's "initialized to invalid" tables contain).
    pub const INVALID: Pte = Pte(0);

    /// A valid non-leaf entry pointing at the next-level table at logical `table_addr`
    /// (4 KiB-aligned; low bits are dropped). For a level-1 entry this is a 4 KiB-page leaf
    /// table.
    #[must_use]
    pub const fn table(table_addr: u64) -> Pte {
        Pte((table_addr & ADDR_MASK) | VALID)
    }

    /// A valid level-1 entry pointing at a 64 KiB-page leaf table at logical `table_addr`.
    #[must_use]
    pub const fn table_64k(table_addr: u64) -> Pte {
        Pte((table_addr & ADDR_MASK) | TABLE_64K | VALID)
    }

    /// A valid leaf entry for the page at logical `page_addr` (4 KiB-aligned in a 4 KiB-page
    /// table, 64 KiB-aligned in a 64 KiB-page table) with extra `flags` (any of [`ZERO`],
    /// [`CACHE_COHERENT`], [`READ_ONLY`], [`NO_EXECUTE`]; other bits are dropped).
    #[must_use]
    pub const fn leaf(page_addr: u64, flags: u64) -> Pte {
        Pte((page_addr & ADDR_MASK) | (flags & LEAF_FLAGS_MASK) | VALID)
    }

    /// The raw 64-bit value.
    #[must_use]
    pub const fn raw(self) -> u64 {
        self.0
    }
    /// Is [`VALID`] set?
    #[must_use]
    pub const fn is_valid(self) -> bool {
        self.0 & VALID != 0
    }
    /// Is [`READ_ONLY`] set?
    #[must_use]
    pub const fn is_read_only(self) -> bool {
        self.0 & READ_ONLY != 0
    }
    /// Is [`NO_EXECUTE`] set?
    #[must_use]
    pub const fn is_no_execute(self) -> bool {
        self.0 & NO_EXECUTE != 0
    }
    /// Is [`CACHE_COHERENT`] set?
    #[must_use]
    pub const fn is_cache_coherent(self) -> bool {
        self.0 & CACHE_COHERENT != 0
    }
    /// Is [`ZERO`] set?
    #[must_use]
    pub const fn is_zero(self) -> bool {
        self.0 & ZERO != 0
    }
    /// Level 1: does the entry point at a 64 KiB-page leaf table ([`TABLE_64K`])?
    #[must_use]
    pub const fn is_table_64k(self) -> bool {
        self.0 & TABLE_64K != 0
    }
    /// The logical address field (bits 51:12).
    #[must_use]
    pub const fn addr(self) -> u64 {
        self.0 & ADDR_MASK
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry() {
        assert_eq!(TABLE_SIZE, 4096);
        assert_eq!(level_shift(3) + INDEX_BITS, VA_BITS);
        let va = (5u64 << 39) | (6 << 30) | (7 << 21) | (8 << 12) | 0x123;
        assert_eq!(
            [index(va, 3), index(va, 2), index(va, 1), index(va, 0)],
            [5, 6, 7, 8]
        );
        assert_eq!(entry_span(1), 2 << 20);
        // A 64 KiB-page table covers what a 4 KiB-page table covers.
        assert_eq!(ENTRIES_PER_64K_TABLE as u64 * PAGE_64K_SIZE, entry_span(1));
        assert_eq!(index_64k((7 << 21) | (31 << 16) | 0xFFFF), 31);
    }

    #[test]
    fn entry_encoding() {
        let p = Pte::leaf(
            0x1234_5678_9FFF,
            READ_ONLY | CACHE_COHERENT | TABLE_64K | (1 << 60),
        );
        assert_eq!(
            p.raw(),
            0x1234_5678_9000 | READ_ONLY | CACHE_COHERENT | VALID
        );
        assert!(p.is_valid() && p.is_read_only() && p.is_cache_coherent());
        assert!(!p.is_no_execute() && !p.is_zero() && !p.is_table_64k());
        assert_eq!(Pte::table(0xABC_DEF0_0FFF).raw(), 0xABC_DEF0_0000 | VALID);
        let t = Pte::table_64k(0x5000);
        assert!(t.is_valid() && t.is_table_64k());
        assert_eq!(t.addr(), 0x5000);
        assert!(!Pte::INVALID.is_valid());
    }
}
