//! DXGK_PTE → rgpu entry translation: what a table of each kind holds ([`TableKind`]), the
//! branch-free fast path for system memory (batched by `simd`), and the general path for the
//! aperture segment and for refusals ([`translate_pte`]).
//!
//! Page sizes: rgpu declares SysMem64KBPageSupported, so VidMm may make a leaf table a 64 KiB-page
//! table (WDDM's single-PTE mode). The level-1 entry says which kind a leaf table is
//! (`PageTablePageSize` → the device's TABLE_64K bit); an update of a 64 KiB-page table carries
//! `Use64KBPages`, has 32 entries, and each must name a 64 KiB-aligned page. Leaf entries have
//! the same format in both kinds, so only validation differs.

use core::mem::size_of;

use dxgk::paging::pte_page;
use dxgk_sys::DXGK_PTE;
use rgpu_hw::pte;

pub(super) use super::simd::Stores;
use super::Aperture;
use crate::caps::{APERTURE_SEGMENT_ID, SYSTEM_MEMORY_SEGMENT_ID};

/// Why a DXGK_PTE could not be translated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PteError {
    /// A segment rgpu does not have.
    UnknownSegment(u64),
    /// An aperture page that is not mapped.
    UnmappedAperture(u64),
    /// A PageTablePageSize that is not 4 KB or 64 KB, or that is set on an entry of a level
    /// other than 1 (the only level whose entries point at leaf tables).
    PageTablePageSize(u64),
    /// An entry of a 64 KiB-page table whose page number is not 64 KiB-aligned (VidMm
    /// guarantees VA/PA 64 KiB alignment for 64 KiB pages).
    Misaligned64KPage(u64),
    /// An aperture-segment page in a 64 KiB-page table: the aperture is managed in 4 KiB pages
    /// whose logical pages need not be contiguous.
    Aperture64KPage(u64),
}

/// Why an UPDATE_PAGE_TABLE names no table rgpu has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableError {
    /// A level rgpu's page tables do not have, or one without a 64 KiB form.
    NoSuchTable {
        /// PageTableLevel.
        level: u32,
        /// Flags.Use64KBPages.
        use_64k: bool,
    },
    /// Entries past the end of the table.
    OutsideTable {
        /// PageTableLevel.
        level: u32,
        /// StartIndex.
        start: u32,
        /// NumPageTableEntries.
        count: u32,
        /// Entries in a table of that kind.
        entries: usize,
    },
}

impl core::fmt::Display for TableError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            TableError::NoSuchTable {
                level,
                use_64k: true,
            } => write!(
                f,
                "level {level} with Use64KBPages (only leaf tables and level 1 have 64 KiB forms)"
            ),
            TableError::NoSuchTable { level, .. } => {
                write!(f, "level {level} does not exist (4 levels)")
            }
            TableError::OutsideTable {
                level,
                start,
                count,
                entries,
            } => write!(
                f,
                "level {level} entries {start}+{count} outside a {entries}-entry table"
            ),
        }
    }
}

/// What the entries of one UPDATE_PAGE_TABLE are to the device, from its level and flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableKind {
    /// Level 0, 4 KiB pages: 512 entries.
    Leaf,
    /// Level 0 with `Use64KBPages`: a 64 KiB-page leaf table, 32 entries.
    Leaf64K,
    /// Level 1: entries point at leaf tables of either kind (`PageTablePageSize`).
    /// `Use64KBPages` here says they point at 64 KiB-page tables (the DDI reference's reading
    /// of the flag), which rgpu honours like `PageTablePageSize` = 64 KB.
    Directory {
        /// Flags.Use64KBPages was set.
        all_64k: bool,
    },
    /// Levels 2 and 3.
    Upper,
}

impl TableKind {
    /// The kind of a table at `level` (with `Use64KBPages` = `use_64k`), after checking that
    /// entries `start..start + count` lie in one table of that kind.
    #[inline(always)]
    pub fn of(level: u32, use_64k: bool, start: u32, count: u32) -> Result<TableKind, TableError> {
        let kind = match (level, use_64k) {
            (0, false) => TableKind::Leaf,
            (0, true) => TableKind::Leaf64K,
            (1, all_64k) => TableKind::Directory { all_64k },
            (l, false) if (l as usize) < pte::LEVELS => TableKind::Upper,
            (level, use_64k) => return Err(TableError::NoSuchTable { level, use_64k }),
        };
        let end = start.checked_add(count);
        if !matches!(end, Some(e) if e as usize <= kind.entries()) {
            return Err(TableError::OutsideTable {
                level,
                start,
                count,
                entries: kind.entries(),
            });
        }
        Ok(kind)
    }

    /// Entries in a table of this kind.
    pub const fn entries(self) -> usize {
        match self {
            TableKind::Leaf64K => pte::ENTRIES_PER_64K_TABLE,
            _ => pte::ENTRIES_PER_TABLE,
        }
    }
}

// Fast-path selectors (const generics keep one specialized, vectorizable loop per kind).
pub(super) const KIND_LEAF: u8 = 0;
pub(super) const KIND_LEAF_64K: u8 = 1;
pub(super) const KIND_DIRECTORY: u8 = 2;
pub(super) const KIND_UPPER: u8 = 3;

/// DXGK_PTE flag bits 5–9: Segment. Segment 0 and segment 2 (SYSTEM_MEMORY_SEGMENT_ID) both
/// mean system memory and differ only in the segment's bit 1; any other bit set is another
/// segment (the aperture), which the general path handles.
const OTHER_SEGMENT_BITS: u64 = (0x1F << 5) & !((SYSTEM_MEMORY_SEGMENT_ID as u64) << 5);
/// DXGK_PTE flag bits 17–18: PageTablePageSize.
const PAGE_TABLE_PAGE_SIZE_BITS: u64 = 0b11 << 17;
/// PageTablePageSize = DXGK_PTE_PAGE_TABLE_PAGE_64KB.
pub(super) const PAGE_TABLE_64KB: u64 = 1 << 17;

/// The hot path of [`translate_pte`]: valid entries of system memory (segment 0 or the
/// implicit system-memory segment), which is every entry rgpu's page tables hold outside the
/// aperture. rgpu's flag bits 0–4 are DXGK_PTE's, so a leaf is a mask and a shift — no table,
/// no branch, and a batch vectorizes with the SSE2 baseline. Returns the entry (0 for an invalid
/// one) and a "slow" word that is non-zero when a valid entry needs the general path (another
/// segment, a PageTablePageSize rgpu refuses here, a misaligned 64 KiB page).
/// `table_64k` is ORed into valid Directory entries ([`pte::TABLE_64K`] or 0).
#[inline(always)]
pub(super) const fn translate_fast<const KIND: u8>(
    flags: u64,
    page: u64,
    table_64k: u64,
) -> (u64, u64) {
    let mask = 0u64.wrapping_sub(flags & 1);
    let addr = (page << 12) & pte::ADDR_MASK;
    let (bits, slow) = match KIND {
        KIND_LEAF => (
            flags & pte::LEAF_FLAGS_MASK,
            flags & (OTHER_SEGMENT_BITS | PAGE_TABLE_PAGE_SIZE_BITS),
        ),
        KIND_LEAF_64K => (
            flags & pte::LEAF_FLAGS_MASK,
            flags & (OTHER_SEGMENT_BITS | PAGE_TABLE_PAGE_SIZE_BITS) | (page & 0xF),
        ),
        KIND_DIRECTORY => (
            // PageTablePageSize = 64 KB (bit 17) becomes TABLE_64K (bit 5).
            pte::VALID | ((flags & PAGE_TABLE_64KB) >> 12) | table_64k,
            flags & (OTHER_SEGMENT_BITS | (PAGE_TABLE_PAGE_SIZE_BITS & !PAGE_TABLE_64KB)),
        ),
        _ => (
            pte::VALID,
            flags & (OTHER_SEGMENT_BITS | PAGE_TABLE_PAGE_SIZE_BITS),
        ),
    };
    ((addr | bits) & mask, slow & mask)
}

const _: () = assert!(
    pte::VALID == 1
        && pte::ZERO == 1 << 1
        && pte::CACHE_COHERENT == 1 << 2
        && pte::READ_ONLY == 1 << 3
        && pte::NO_EXECUTE == 1 << 4
        && pte::LEAF_FLAGS_MASK == 0x1F
        && pte::TABLE_64K == PAGE_TABLE_64KB >> 12
        && SYSTEM_MEMORY_SEGMENT_ID == 2,
    "translate_fast assumes rgpu's flag bits are DXGK_PTE's"
);

const _: () = assert!(
    size_of::<DXGK_PTE>() == 16,
    "DXGK_PTE is two u64: Flags, page"
);

/// Converts `src` into rgpu entries in `out` (8 bytes each, little-endian) with the fast path,
/// storing them as `stores` says; returns false if some entry needs the general path. Same
/// results as [`translate_fast`] entry by entry.
#[inline]
fn convert_batch<const KIND: u8>(
    src: &[DXGK_PTE],
    out: &mut [u8],
    table_64k: u64,
    stores: Stores,
) -> bool {
    let n = src.len().min(out.len() / 8);
    let (Some(src), Some(out)) = (src.get(..n), out.get_mut(..n * 8)) else {
        return false;
    };
    super::simd::convert::<KIND>(src, out, table_64k, stores) == 0
}

/// The flag bits that send a valid entry of `KIND` to the general path (the "slow" word of
/// [`translate_fast`] for a valid entry of page 0).
#[cfg(target_arch = "x86_64")]
pub(super) const fn slow_flags<const KIND: u8>() -> u64 {
    translate_fast::<KIND>(!0, 0, 0).1
}

/// [`convert_batch`] for the Repeat flag: one source entry for every slot.
pub(super) fn convert_repeat(p: &DXGK_PTE, out: &mut [u8], kind: TableKind) -> bool {
    let mut e = [0u8; 8];
    let all_fast = convert(core::slice::from_ref(p), &mut e, kind, Stores::Cached);
    for o in out.chunks_exact_mut(8) {
        o.copy_from_slice(&e);
    }
    all_fast
}

/// [`convert_batch`] for a table of `kind`.
#[inline]
pub(super) fn convert(src: &[DXGK_PTE], out: &mut [u8], kind: TableKind, stores: Stores) -> bool {
    match kind {
        TableKind::Leaf => convert_batch::<KIND_LEAF>(src, out, 0, stores),
        TableKind::Leaf64K => convert_batch::<KIND_LEAF_64K>(src, out, 0, stores),
        TableKind::Directory { all_64k } => {
            let table_64k = if all_64k { pte::TABLE_64K } else { 0 };
            convert_batch::<KIND_DIRECTORY>(src, out, table_64k, stores)
        }
        TableKind::Upper => convert_batch::<KIND_UPPER>(src, out, 0, stores),
    }
}

/// Translates one DXGK_PTE into rgpu's format for a table of `kind`.
pub fn translate_pte(
    p: &DXGK_PTE,
    kind: TableKind,
    aperture: Option<&Aperture>,
) -> Result<u64, PteError> {
    let mut e = [0u8; 8];
    if convert(core::slice::from_ref(p), &mut e, kind, Stores::Cached) {
        return Ok(u64::from_le_bytes(e));
    }
    // A valid entry the fast path does not handle.
    let page = pte_page(p);
    let page_size = p.PageTablePageSize();
    let directory = matches!(kind, TableKind::Directory { .. });
    if page_size > 1 || (page_size != 0 && !directory) {
        return Err(PteError::PageTablePageSize(page_size));
    }
    let segment = p.Segment();
    if segment == u64::from(APERTURE_SEGMENT_ID) {
        if kind == TableKind::Leaf64K {
            return Err(PteError::Aperture64KPage(page));
        }
        let logical_page = aperture
            .and_then(|a| a.lookup(page))
            .ok_or(PteError::UnmappedAperture(page))?;
        // The same entry with the GART's logical page in system memory.
        let mut system = *p;
        system.set_Segment(0);
        system.u.PageAddress = logical_page;
        return translate_pte(&system, kind, None);
    }
    if segment != 0 && segment != u64::from(SYSTEM_MEMORY_SEGMENT_ID) {
        return Err(PteError::UnknownSegment(segment));
    }
    // System memory that still missed the fast path: a misaligned 64 KiB page.
    Err(PteError::Misaligned64KPage(page))
}
