//! DxgkDdiBuildPagingBuffer: VidMm's paging operations encoded as rgpu commands.
//!
//! rgpu declares `DXGK_PAGETABLEUPDATE_GPU_VIRTUAL`, so page-table writes travel inside the
//! paging buffer as WRITE_PTES commands executed by the device in the paging process's address
//! space (ASID [`PAGING_ASID`]). The one exception is the CPU_VIRTUAL update Windows forces for
//! the system paging process's own tables (NULL DMA buffer): those entries are written at once
//! with the CPU.
//!
//! Multipass: when the DMA buffer is full the operation returns
//! STATUS_GRAPHICS_INSUFFICIENT_DMA_BUFFER with `MultipassOffset` = the number of *units* done
//! (PTEs for UPDATE_PAGE_TABLE, pages for TRANSFER/FILL, ranges for COPY_PAGE_TABLE_ENTRIES);
//! VidMm submits what was written and calls again with the same operation and that offset, and
//! encoding resumes at exactly that unit: nothing duplicated, nothing lost. A unit is never
//! split between two buffers.
//!
//! Addresses: a DXGK_PTE's page number is a logical page when its `Segment` is 0 or the implicit
//! system-memory segment; for the aperture segment it indexes rgpu's GART ([`Aperture`]), which
//! MAP/UNMAP_APERTURE_SEGMENT fill from VidMm's MDLs — so the driver never computes a device
//! address itself.
//!
//! Operations that cannot occur with rgpu's caps (READ/WRITE_PHYSICAL: no memory segments;
//! SPECIAL_LOCK_TRANSFER: no swizzling; MAP_APERTURE_SEGMENT2: MapAperture2Supported is not
//! declared) return STATUS_NOT_SUPPORTED and log — VidMm treats that as fatal, which is right
//! for an operation the caps exclude.
//!
//! Page sizes: rgpu declares SysMem64KBPageSupported, so VidMm may make a leaf table a 64 KiB-page
//! table (WDDM's single-PTE mode). The level-1 entry says which kind a leaf table is
//! (`PageTablePageSize` → the device's TABLE_64K bit); an update of a 64 KiB-page table carries
//! `Use64KBPages`, has 32 entries, and each must name a 64 KiB-aligned page. Leaf entries have
//! the same format in both kinds, so only validation differs. See [`TableKind`].

use core::mem::size_of;

use dxgk::memory::MdlPages;
use dxgk::sync::SpinLock;
use dxgk::{NtError, NtResult};
use dxgk_sys as sys;
use dxgk_sys::{DXGKARG_BUILDPAGINGBUFFER, DXGK_PTE, MDL};
use rgpu_hw::cmd::{CmdError, Encoder, FlushScope, Target};
use rgpu_hw::pte::{self, Pte};

use crate::caps::{APERTURE_SEGMENT_ID, APERTURE_SEGMENT_SIZE, SYSTEM_MEMORY_SEGMENT_ID};

/// The device ASID the system paging process runs in.
pub const PAGING_ASID: u8 = 0;

const PAGE: u64 = 4096;

/// The aperture segment's translation table (a GART kept by the driver): aperture page →
/// logical page + 1 (0 = unmapped). CPU-only memory; the device never reads it.
pub struct Aperture {
    table: SpinLock<MdlPages>,
}

/// Number of pages in the aperture segment.
pub const APERTURE_PAGES: usize = APERTURE_SEGMENT_SIZE / PAGE as usize;

impl Aperture {
    /// Wraps a table of at least `APERTURE_PAGES * 8` zeroed bytes.
    pub fn new(table: MdlPages) -> NtResult<Self> {
        if table.len() < APERTURE_PAGES * 8 {
            return Err(NtError::INVALID_PARAMETER);
        }
        Ok(Self {
            table: SpinLock::new(table),
        })
    }

    /// Logical page of aperture page `page`, if mapped.
    pub fn lookup(&self, page: u64) -> Option<u64> {
        let index = usize::try_from(page).ok().filter(|&p| p < APERTURE_PAGES)?;
        let mut raw = [0u8; 8];
        self.table.lock().read(index * 8, &mut raw).ok()?;
        u64::from_le_bytes(raw).checked_sub(1)
    }

    fn set(&self, page: usize, logical_page: Option<u64>) -> NtResult<()> {
        let value = logical_page.map_or(0, |p| p + 1);
        self.table.lock().write(page * 8, &value.to_le_bytes())
    }
}

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
    /// The kind of the table `upt` updates, after checking that the entries it names lie in
    /// one table of that kind.
    pub fn of(upt: &sys::DXGK_BUILDPAGINGBUFFER_UPDATEPAGETABLE) -> NtResult<TableKind> {
        let use_64k = upt.Flags.Use64KBPages() != 0;
        let kind = match (upt.PageTableLevel, use_64k) {
            (0, false) => TableKind::Leaf,
            (0, true) => TableKind::Leaf64K,
            (1, all_64k) => TableKind::Directory { all_64k },
            (l, false) if (l as usize) < pte::LEVELS => TableKind::Upper,
            (l, _) => {
                rgpu_log!(
                    error,
                    "UpdatePageTable: level {} {}",
                    l,
                    if use_64k {
                        "with Use64KBPages (only leaf tables and level 1 have 64 KiB forms)"
                    } else {
                        "does not exist (4 levels)"
                    }
                );
                return Err(NtError::INVALID_PARAMETER);
            }
        };
        let end = upt.StartIndex.checked_add(upt.NumPageTableEntries);
        if !matches!(end, Some(e) if e as usize <= kind.entries()) {
            rgpu_log!(
                error,
                "UpdatePageTable: level {} entries {}+{} outside a {}-entry table",
                upt.PageTableLevel,
                upt.StartIndex,
                upt.NumPageTableEntries,
                kind.entries()
            );
            return Err(NtError::INVALID_PARAMETER);
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
const KIND_LEAF: u8 = 0;
const KIND_LEAF_64K: u8 = 1;
const KIND_DIRECTORY: u8 = 2;
const KIND_UPPER: u8 = 3;

/// DXGK_PTE flag bits 5–9: Segment. Segment 0 and segment 2 (SYSTEM_MEMORY_SEGMENT_ID) both
/// mean system memory and differ only in the segment's bit 1; any other bit set is another
/// segment (the aperture), which the general path handles.
const OTHER_SEGMENT_BITS: u64 = (0x1F << 5) & !((SYSTEM_MEMORY_SEGMENT_ID as u64) << 5);
/// DXGK_PTE flag bits 17–18: PageTablePageSize.
const PAGE_TABLE_PAGE_SIZE_BITS: u64 = 0b11 << 17;
/// PageTablePageSize = DXGK_PTE_PAGE_TABLE_PAGE_64KB.
const PAGE_TABLE_64KB: u64 = 1 << 17;

/// The hot path of [`translate_pte`]: valid entries of system memory (segment 0 or the
/// implicit system-memory segment), which is every entry rgpu's page tables hold outside the
/// aperture. rgpu's flag bits 0–4 are DXGK_PTE's, so a leaf is a mask and a shift — no table,
/// no branch, and a batch vectorizes with the SSE2 baseline. Returns the entry (0 for an invalid
/// one) and a "slow" word that is non-zero when a valid entry needs the general path (another
/// segment, a PageTablePageSize rgpu refuses here, a misaligned 64 KiB page).
/// `table_64k` is ORed into valid Directory entries ([`pte::TABLE_64K`] or 0).
#[inline(always)]
const fn translate_fast<const KIND: u8>(flags: u64, page: u64, table_64k: u64) -> (u64, u64) {
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

/// Converts `src` into rgpu entries in `out` (8 bytes each, little-endian) with the fast path;
/// returns false if some entry needs the general path. Same results as [`translate_fast`]
/// entry by entry.
#[inline(never)]
fn convert_batch<const KIND: u8>(src: &[DXGK_PTE], out: &mut [u8], table_64k: u64) -> bool {
    let n = src.len().min(out.len() / 8);
    let (Some(src), Some(out)) = (src.get(..n), out.get_mut(..n * 8)) else {
        return false;
    };
    let (quads, src_rest) = src.as_chunks::<4>();
    let (out_quads, out_rest) = out.as_chunks_mut::<32>();
    let mut slow = simd::convert_quads::<KIND>(quads, out_quads, table_64k);
    for (p, o) in src_rest.iter().zip(out_rest.chunks_exact_mut(8)) {
        // SAFETY: both union members are the same u64.
        let page = unsafe { p.u.PageAddress };
        let (e, s) = translate_fast::<KIND>(p.Flags, page, table_64k);
        slow |= s;
        o.copy_from_slice(&e.to_le_bytes());
    }
    slow == 0
}

/// The flag bits that send a valid entry of `KIND` to the general path (the "slow" word of
/// [`translate_fast`] for a valid entry of page 0).
#[cfg(target_arch = "x86_64")]
const fn slow_flags<const KIND: u8>() -> u64 {
    translate_fast::<KIND>(!0, 0, 0).1
}

/// [`convert_batch`]'s main loop with SSE2, the x86-64 baseline (no extended state to save in
/// kernel mode), four entries (one 64-byte line of DXGK_PTEs) at a time.
#[cfg(target_arch = "x86_64")]
mod simd {
    use super::*;
    use core::arch::x86_64::*;

    /// How far ahead of the conversion the source (4 KiB of DXGK_PTEs) and the output (2 KiB)
    /// are prefetched, in 4-entry lines. A large batch is bound by memory, and the hardware
    /// prefetchers stop at every 4 KiB page: prefetching ahead keeps enough misses in flight
    /// (`update_page_table_bulk` benchmark: about 0.8× → 1.2× memcpy's speed).
    const PREFETCH_AHEAD: usize = 64;

    /// Converts `src` into `out` as [`translate_fast`] does; returns the OR of the entries'
    /// "slow" words.
    pub(super) fn convert_quads<const KIND: u8>(
        src: &[[DXGK_PTE; 4]],
        out: &mut [[u8; 32]],
        table_64k: u64,
    ) -> u64 {
        // SAFETY: SSE2 is part of the x86-64 baseline: every x86-64 CPU has it and every
        // x86-64 target enables it.
        unsafe { convert_quads_sse2::<KIND>(src, out, table_64k) }
    }

    #[target_feature(enable = "sse2")]
    fn convert_quads_sse2<const KIND: u8>(
        src: &[[DXGK_PTE; 4]],
        out: &mut [[u8; 32]],
        table_64k: u64,
    ) -> u64 {
        // The first lines at once, then each line PREFETCH_AHEAD lines before it is
        // converted; never past the end of `src` and `out`. The output too: without its lines
        // in the cache, each store waits for a read-for-ownership.
        let out_at = out.as_mut_ptr();
        for (i, q) in src.get(..PREFETCH_AHEAD).unwrap_or(src).iter().enumerate() {
            prefetch(q);
            if i % 2 == 0 {
                prefetch_out(out_at.wrapping_add(i));
            }
        }
        let ahead = src.get(PREFETCH_AHEAD..).unwrap_or(&[]);
        let (near, far) = out.split_at_mut(ahead.len().min(out.len()));
        let mut flags = _mm_setzero_si128();
        let mut pages = _mm_setzero_si128();
        for (i, ((q, o), a)) in src.iter().zip(near).zip(ahead).enumerate() {
            prefetch(a);
            // In bounds: `ahead` (as long as `near`) starts PREFETCH_AHEAD lines later.
            if i % 2 == 0 {
                prefetch_out(out_at.wrapping_add(i + PREFETCH_AHEAD));
            }
            convert4::<KIND>(q, o, table_64k, &mut flags, &mut pages);
        }
        for (q, o) in src.get(ahead.len()..).unwrap_or(&[]).iter().zip(far) {
            convert4::<KIND>(q, o, table_64k, &mut flags, &mut pages);
        }
        let or = |v: __m128i| _mm_cvtsi128_si64(_mm_or_si128(v, _mm_unpackhi_epi64(v, v))) as u64;
        let pages = if KIND == KIND_LEAF_64K {
            or(pages) & 0xF
        } else {
            0
        };
        (or(flags) & slow_flags::<KIND>()) | pages
    }

    /// Four entries (one line of DXGK_PTEs) into 32 bytes of `out`, as [`convert2`].
    #[inline]
    #[target_feature(enable = "sse2")]
    fn convert4<const KIND: u8>(
        q: &[DXGK_PTE; 4],
        out: &mut [u8; 32],
        table_64k: u64,
        flags: &mut __m128i,
        pages: &mut __m128i,
    ) {
        let load = |p: &DXGK_PTE| {
            // SAFETY: `p` is 16 readable bytes (a DXGK_PTE); MOVDQU has no alignment rule.
            unsafe { _mm_loadu_si128(core::ptr::from_ref(p).cast()) }
        };
        let lo = convert2::<KIND>(load(&q[0]), load(&q[1]), table_64k, flags, pages);
        let hi = convert2::<KIND>(load(&q[2]), load(&q[3]), table_64k, flags, pages);
        let (o_lo, o_hi) = out.split_at_mut(16);
        // SAFETY: `o_lo` is 16 writable bytes; MOVDQU has no alignment rule.
        unsafe { _mm_storeu_si128(o_lo.as_mut_ptr().cast(), lo) };
        // SAFETY: as above for `o_hi`.
        unsafe { _mm_storeu_si128(o_hi.as_mut_ptr().cast(), hi) };
    }

    /// Hints the CPU to bring the line holding `q` into the caches.
    #[inline]
    #[target_feature(enable = "sse2")]
    fn prefetch(q: &[DXGK_PTE; 4]) {
        // PREFETCHT0 only hints the cache: it never faults and has no architectural effect.
        _mm_prefetch::<_MM_HINT_T0>(core::ptr::from_ref(q).cast());
    }

    /// Hints the CPU to bring the output line at `o` into the caches (for writing: no other
    /// agent shares a DMA buffer being built, so the line arrives exclusive).
    #[inline]
    #[target_feature(enable = "sse2")]
    fn prefetch_out(o: *const [u8; 32]) {
        // PREFETCHT0 only hints the cache: it never faults and has no architectural effect.
        _mm_prefetch::<_MM_HINT_T0>(o.cast());
    }

    /// Two entries: `a` and `b` are [Flags, page]; returns their rgpu entries [a, b] and ORs
    /// the flags of the valid ones into `flags`, their pages into `pages` (64 KiB leaves only).
    #[inline]
    #[target_feature(enable = "sse2")]
    fn convert2<const KIND: u8>(
        a: __m128i,
        b: __m128i,
        table_64k: u64,
        flags_acc: &mut __m128i,
        pages_acc: &mut __m128i,
    ) -> __m128i {
        let flags = _mm_unpacklo_epi64(a, b);
        let page = _mm_unpackhi_epi64(a, b);
        // All ones for a valid entry: flags bit 0 to every bit of both dwords.
        let one = _mm_set1_epi32(1);
        let valid = _mm_shuffle_epi32::<0b1010_0000>(flags);
        let valid = _mm_cmpeq_epi32(_mm_and_si128(valid, one), one);
        let flags = _mm_and_si128(flags, valid);
        *flags_acc = _mm_or_si128(*flags_acc, flags);
        if KIND == KIND_LEAF_64K {
            *pages_acc = _mm_or_si128(*pages_acc, _mm_and_si128(page, valid));
        }
        let addr = _mm_slli_epi64::<12>(page);
        let addr = _mm_and_si128(addr, _mm_set1_epi64x(pte::ADDR_MASK as i64));
        let addr = _mm_and_si128(addr, valid);
        let bits = match KIND {
            KIND_LEAF | KIND_LEAF_64K => {
                _mm_and_si128(flags, _mm_set1_epi64x(pte::LEAF_FLAGS_MASK as i64))
            }
            // PageTablePageSize = 64 KB (bit 17) becomes TABLE_64K (bit 5).
            KIND_DIRECTORY => _mm_or_si128(
                _mm_and_si128(valid, _mm_set1_epi64x((pte::VALID | table_64k) as i64)),
                _mm_srli_epi64::<12>(_mm_and_si128(
                    flags,
                    _mm_set1_epi64x(PAGE_TABLE_64KB as i64),
                )),
            ),
            _ => _mm_and_si128(valid, _mm_set1_epi64x(pte::VALID as i64)),
        };
        _mm_or_si128(addr, bits)
    }
}

/// The portable form of [`convert_batch`]'s main loop.
#[cfg(not(target_arch = "x86_64"))]
mod simd {
    use super::*;

    pub(super) fn convert_quads<const KIND: u8>(
        src: &[[DXGK_PTE; 4]],
        out: &mut [[u8; 32]],
        table_64k: u64,
    ) -> u64 {
        let mut slow = 0;
        for (p, o) in src
            .as_flattened()
            .iter()
            .zip(out.as_flattened_mut().chunks_exact_mut(8))
        {
            // SAFETY: both union members are the same u64.
            let page = unsafe { p.u.PageAddress };
            let (e, s) = translate_fast::<KIND>(p.Flags, page, table_64k);
            slow |= s;
            o.copy_from_slice(&e.to_le_bytes());
        }
        slow
    }
}

/// [`convert_batch`] for the Repeat flag: one source entry for every slot.
fn convert_repeat(p: &DXGK_PTE, out: &mut [u8], kind: TableKind) -> bool {
    let mut e = [0u8; 8];
    let all_fast = convert(core::slice::from_ref(p), &mut e, kind);
    for o in out.chunks_exact_mut(8) {
        o.copy_from_slice(&e);
    }
    all_fast
}

/// [`convert_batch`] for a table of `kind`.
fn convert(src: &[DXGK_PTE], out: &mut [u8], kind: TableKind) -> bool {
    match kind {
        TableKind::Leaf => convert_batch::<KIND_LEAF>(src, out, 0),
        TableKind::Leaf64K => convert_batch::<KIND_LEAF_64K>(src, out, 0),
        TableKind::Directory { all_64k } => {
            let table_64k = if all_64k { pte::TABLE_64K } else { 0 };
            convert_batch::<KIND_DIRECTORY>(src, out, table_64k)
        }
        TableKind::Upper => convert_batch::<KIND_UPPER>(src, out, 0),
    }
}

/// Translates one DXGK_PTE into rgpu's format for a table of `kind`.
pub fn translate_pte(
    p: &DXGK_PTE,
    kind: TableKind,
    aperture: Option<&Aperture>,
) -> Result<u64, PteError> {
    let mut e = [0u8; 8];
    if convert(core::slice::from_ref(p), &mut e, kind) {
        return Ok(u64::from_le_bytes(e));
    }
    // A valid entry the fast path does not handle.
    // SAFETY: both union members are the same u64 (page number of a page or a table).
    let page = unsafe { p.u.PageAddress };
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

/// What the DMA buffer looks like to an operation encoder.
struct Out<'a> {
    enc: Encoder<'a>,
}

/// Result of encoding an operation from a given unit.
enum Progress {
    Done,
    /// Stopped before unit `next`: the buffer is full.
    Full {
        next: u32,
    },
}

fn full(e: CmdError) -> bool {
    matches!(e, CmdError::BufferTooSmall { .. })
}

/// What BuildPagingBuffer needs from the adapter.
pub struct PagingContext<'a> {
    /// The adapter's GART (None before start).
    pub aperture: Option<&'a Aperture>,
    /// Maps a KMD process handle (`hProcess`) to the device ASID it runs in, so that TLB
    /// flushes hit one address space; None (or a handle it does not know) flushes every ASID.
    pub asid_of: Option<&'a dyn Fn(sys::HANDLE) -> Option<u8>>,
}

impl PagingContext<'_> {
    /// Runs DxgkDdiBuildPagingBuffer on `args`. Returns SUCCESS, INSUFFICIENT_DMA_BUFFER (with
    /// `MultipassOffset` and `pDmaBuffer` updated), or a failure for malformed input and
    /// operations rgpu's caps exclude.
    ///
    /// # Safety
    /// `args` must be Dxgkrnl's argument block: `pDmaBuffer` valid for `DmaSize` bytes (or NULL),
    /// and the pointers inside the operation's arguments valid as documented.
    pub unsafe fn build(&self, args: &mut DXGKARG_BUILDPAGINGBUFFER) -> NtResult<()> {
        let op = args.Operation;
        let start = args.MultipassOffset;
        // CPU-virtual page-table initialization has no DMA buffer at all.
        if op == sys::DXGK_OPERATION_UPDATE_PAGE_TABLE {
            // SAFETY: the operation says UpdatePageTable is the valid union member.
            let upt = unsafe { args.u.UpdatePageTable };
            if upt.UpdateMode == sys::DXGK_PAGETABLEUPDATE_CPU_VIRTUAL {
                // SAFETY: per the caller, the entries and the CPU address are valid.
                return unsafe { self.update_page_table_cpu(&upt) };
            }
        }
        if args.pDmaBuffer.is_null() {
            return Err(NtError::INVALID_PARAMETER);
        }
        // SAFETY: per the caller, pDmaBuffer is valid for DmaSize bytes and exclusively ours
        // for this call.
        let buf = unsafe {
            core::slice::from_raw_parts_mut(args.pDmaBuffer.cast::<u8>(), args.DmaSize as usize)
        };
        let mut out = Out {
            enc: Encoder::new(buf),
        };
        // SAFETY: each arm reads the union member its operation code names; pointer arguments
        // are valid per the caller.
        let progress = unsafe { self.encode(op, args, start, &mut out) }?;
        let written = out.enc.written().len();
        // SAFETY: `written <= DmaSize`: still inside the DMA buffer.
        args.pDmaBuffer = unsafe { args.pDmaBuffer.cast::<u8>().add(written) }.cast();
        args.DmaSize -= written as u32;
        match progress {
            Progress::Done => {
                args.MultipassOffset = 0;
                Ok(())
            }
            Progress::Full { next } => {
                args.MultipassOffset = next;
                Err(NtError::GRAPHICS_INSUFFICIENT_DMA_BUFFER)
            }
        }
    }

    /// # Safety
    /// As [`PagingContext::build`]; `op` selects the valid union member.
    unsafe fn encode(
        &self,
        op: sys::DXGK_BUILDPAGINGBUFFER_OPERATION,
        args: &DXGKARG_BUILDPAGINGBUFFER,
        start: u32,
        out: &mut Out<'_>,
    ) -> NtResult<Progress> {
        use sys::*;
        if op == DXGK_OPERATION_UPDATE_PAGE_TABLE {
            // SAFETY: union member named by the operation.
            let upt = unsafe { args.u.UpdatePageTable };
            // SAFETY: per the caller, pPageTableEntries holds the documented entries.
            unsafe { self.update_page_table_gpu(&upt, start, out) }
        } else if op == DXGK_OPERATION_FLUSH_TLB {
            // SAFETY: union member named by the operation.
            let f = unsafe { args.u.FlushTlb };
            let (start, end) = (f.StartVirtualAddress, f.EndVirtualAddress);
            if end < start {
                return Err(NtError::INVALID_PARAMETER);
            }
            // The process's own address space when the driver knows it (hProcess is the
            // process object rgpu created), else every ASID. Both 0 = the whole VA space; a range
            // is flushed inclusive of its end address (flushing one extra page is harmless).
            let scope = match self.asid_of.and_then(|asid_of| asid_of(f.hProcess)) {
                None => FlushScope::All,
                Some(asid) if start == 0 && end == 0 => FlushScope::Asid(asid),
                Some(asid) => FlushScope::Range {
                    asid,
                    va: start,
                    size: (end - start).saturating_add(1),
                },
            };
            once(out.enc.flush_tlb(scope))
        } else if op == DXGK_OPERATION_VIRTUAL_FILL {
            // SAFETY: union member named by the operation.
            let f = unsafe { args.u.FillVirtual };
            if f.FillSizeInBytes % 4 != 0 || f.DestinationVirtualAddress % 4 != 0 {
                return Err(NtError::INVALID_PARAMETER);
            }
            once(out.enc.fill(
                Target::Virtual(f.DestinationVirtualAddress),
                f.FillSizeInBytes,
                f.FillPattern,
            ))
        } else if op == DXGK_OPERATION_VIRTUAL_TRANSFER {
            // SAFETY: union member named by the operation.
            let t = unsafe { args.u.TransferVirtual };
            once(out.enc.copy(
                Target::Virtual(t.DestinationVirtualAddress),
                Target::Virtual(t.SourceVirtualAddress),
                t.TransferSizeInBytes,
            ))
        } else if op == DXGK_OPERATION_TRANSFER {
            // SAFETY: union member named by the operation.
            let t = unsafe { args.u.Transfer };
            // SAFETY: MDL pointers valid per the caller.
            unsafe { self.transfer(&t, start, out) }
        } else if op == DXGK_OPERATION_FILL {
            // SAFETY: union member named by the operation.
            let f = unsafe { args.u.Fill };
            self.fill(&f, start, out)
        } else if op == DXGK_OPERATION_SIGNAL_MONITORED_FENCE {
            // SAFETY: union member named by the operation.
            let s = unsafe { args.u.SignalMonitoredFence };
            let v = s.MonitoredFenceValue;
            once(out.enc.write_data(
                Target::Virtual(s.MonitoredFenceGpuVa),
                &[v as u32, (v >> 32) as u32],
            ))
        } else if op == DXGK_OPERATION_COPY_PAGE_TABLE_ENTRIES {
            // SAFETY: union member named by the operation.
            let c = unsafe { args.u.CopyPageTableEntries };
            // SAFETY: pRanges holds NumRanges ranges per the caller.
            unsafe { copy_page_table_entries(&c, start, out) }
        } else if op == DXGK_OPERATION_MAP_APERTURE_SEGMENT {
            // SAFETY: union member named by the operation.
            let m = unsafe { args.u.MapApertureSegment };
            // SAFETY: pMdl valid per the caller.
            unsafe { self.map_aperture(&m) }.map(|()| Progress::Done)
        } else if op == DXGK_OPERATION_UNMAP_APERTURE_SEGMENT {
            // SAFETY: union member named by the operation.
            let u = unsafe { args.u.UnmapApertureSegment };
            self.unmap_aperture(&u).map(|()| Progress::Done)
        } else if op == DXGK_OPERATION_DISCARD_CONTENT
            || op == DXGK_OPERATION_NOTIFY_RESIDENCY
            || op == DXGK_OPERATION_UPDATE_CONTEXT_ALLOCATION
            || op == DXGK_OPERATION_INIT_CONTEXT_RESOURCE
        {
            // Nothing for the device to do: no content to discard in system memory, no
            // residency bookkeeping (no AccessedPhysically allocations), no context
            // allocations or resources.
            Ok(Progress::Done)
        } else {
            rgpu_log!(
                error,
                "BuildPagingBuffer: operation {} cannot occur with rgpu's caps (no memory segments, no swizzling, no MapAperture2)",
                op.0
            );
            Err(NtError::NOT_SUPPORTED)
        }
    }

    /// CPU_VIRTUAL update (paging-process initialization): entries written at once.
    ///
    /// # Safety
    /// `upt.pPageTableEntries` holds the entries and `CpuVirtual` maps the table.
    unsafe fn update_page_table_cpu(
        &self,
        upt: &sys::DXGK_BUILDPAGINGBUFFER_UPDATEPAGETABLE,
    ) -> NtResult<()> {
        // SAFETY: CPU_VIRTUAL mode: CpuVirtual is the valid member.
        let table = unsafe { upt.PageTableAddress.u.CpuVirtual }.cast::<u64>();
        let kind = TableKind::of(upt)?;
        if table.is_null() || upt.pPageTableEntries.is_null() {
            return Err(NtError::INVALID_PARAMETER);
        }
        let entry = |i: usize| {
            let src_index = if upt.Flags.Repeat() != 0 { 0 } else { i };
            // SAFETY: `src_index < NumPageTableEntries` entries provided by VidMm.
            let src = unsafe { elem(upt.pPageTableEntries, src_index) };
            translate_pte(src, kind, self.aperture).map_err(|e| {
                rgpu_log!(error, "UpdatePageTable: entry {}: {:?}", i, e);
                NtError::INVALID_PARAMETER
            })
        };
        // Every entry is checked before the first is written: a refused update leaves the
        // table as it was.
        for i in 0..upt.NumPageTableEntries as usize {
            entry(i)?;
        }
        for i in 0..upt.NumPageTableEntries as usize {
            let value = entry(i)?;
            // SAFETY: StartIndex + i < 512 (TableKind::of): inside the 4 KiB table.
            let dst = unsafe { table.add(upt.StartIndex as usize + i) };
            // SAFETY: `dst` is an aligned entry of the CPU-mapped table.
            unsafe { dst.write_volatile(value) };
        }
        Ok(())
    }

    /// GPU_VIRTUAL update: WRITE_PTES into the table at its paging-process VA.
    ///
    /// # Safety
    /// `upt.pPageTableEntries` holds `NumPageTableEntries` entries (1 with Repeat).
    unsafe fn update_page_table_gpu(
        &self,
        upt: &sys::DXGK_BUILDPAGINGBUFFER_UPDATEPAGETABLE,
        start: u32,
        out: &mut Out<'_>,
    ) -> NtResult<Progress> {
        let kind = TableKind::of(upt)?;
        if upt.pPageTableEntries.is_null() {
            return Err(NtError::INVALID_PARAMETER);
        }
        // SAFETY: GPU_VIRTUAL mode: GpuVirtual is the valid member.
        let table_va = unsafe { upt.PageTableAddress.u.GpuVirtual };
        let total = upt.NumPageTableEntries;
        let repeat = upt.Flags.Repeat() != 0;
        let mut done = start;
        while done < total {
            let n = ((total - done) as usize)
                .min(rgpu_hw::cmd::MAX_PTES_PER_CMD)
                .min(rgpu_hw::cmd::ptes_fitting(out.enc.remaining()));
            if n == 0 {
                return Ok(Progress::Full { next: done });
            }
            let first = done as usize;
            // A table VA at the top of the address space would wrap (found by fuzzing).
            let dst = table_va
                .checked_add(u64::from(upt.StartIndex + done) * 8)
                .ok_or(NtError::INVALID_PARAMETER)?;
            let mut bad = None;
            let aperture = self.aperture;
            out.enc
                .write_ptes_into(Target::Virtual(dst), n, |payload| {
                    let (offset, len) = if repeat { (0, 1) } else { (first, n) };
                    // SAFETY: VidMm provides `NumPageTableEntries` entries (1 with Repeat), and
                    // `first + n <= NumPageTableEntries`.
                    let base = unsafe { upt.pPageTableEntries.add(offset) };
                    // SAFETY: `len` initialized entries start at `base` (see above).
                    let src = unsafe { core::slice::from_raw_parts(base, len) };
                    let all_fast = if repeat {
                        convert_repeat(&src[0], payload, kind)
                    } else {
                        convert(src, payload, kind)
                    };
                    if all_fast {
                        return;
                    }
                    // Some entries are aperture (or unknown) pages: redo those the slow way.
                    for (i, out) in payload.chunks_exact_mut(8).enumerate() {
                        let p = &src[if repeat { 0 } else { i }];
                        let e = translate_pte(p, kind, aperture).unwrap_or_else(|e| {
                            bad.get_or_insert((first + i, e));
                            Pte::INVALID.raw()
                        });
                        out.copy_from_slice(&e.to_le_bytes());
                    }
                })
                .map_err(|e| {
                    rgpu_log!(error, "UpdatePageTable: {:?}", e);
                    NtError::INVALID_PARAMETER
                })?;
            if let Some((i, e)) = bad {
                rgpu_log!(error, "UpdatePageTable: entry {}: {:?}", i, e);
                return Err(NtError::INVALID_PARAMETER);
            }
            done += n as u32;
        }
        Ok(Progress::Done)
    }

    /// Logical address of byte `offset` of an aperture-segment location.
    fn aperture_address(&self, offset: u64) -> NtResult<u64> {
        let page = self
            .aperture
            .and_then(|a| a.lookup(offset / PAGE))
            .ok_or(NtError::INVALID_PARAMETER)?;
        Ok((page << 12) | (offset % PAGE))
    }

    /// TRANSFER between MDL pages and aperture locations, one 4 KiB page per unit.
    ///
    /// # Safety
    /// MDL pointers (SegmentId 0) must be valid MDLs covering the transfer.
    unsafe fn transfer(
        &self,
        t: &sys::DXGKARG_BUILDPAGINGBUFFER_Transfer,
        start: u32,
        out: &mut Out<'_>,
    ) -> NtResult<Progress> {
        let size = t.TransferSize as u64;
        let pages = size.div_ceil(PAGE);
        let mut unit = u64::from(start);
        while unit < pages {
            let off = unit * PAGE;
            let len = (size - off).min(PAGE);
            // SAFETY: plain data read of the union (which member counts is decided by SegmentId).
            let src_address = unsafe { t.Source.u.SegmentAddress };
            // SAFETY: LARGE_INTEGER is plain data.
            let src_address = unsafe { src_address.QuadPart };
            // SAFETY: as above.
            let src_mdl = unsafe { t.Source.u.pMdl };
            // SAFETY: as above.
            let dst_address = unsafe { t.Destination.u.SegmentAddress };
            // SAFETY: LARGE_INTEGER is plain data.
            let dst_address = unsafe { dst_address.QuadPart };
            // SAFETY: as above.
            let dst_mdl = unsafe { t.Destination.u.pMdl };
            // SAFETY: MDLs valid per the caller.
            let src = unsafe { self.location(t.Source.SegmentId, src_address, src_mdl, t, off) }?;
            // SAFETY: as above.
            let dst =
                unsafe { self.location(t.Destination.SegmentId, dst_address, dst_mdl, t, off) }?;
            match out
                .enc
                .copy(Target::Logical(dst), Target::Logical(src), len)
            {
                Ok(_) => unit += 1,
                Err(e) if full(e) => return Ok(Progress::Full { next: unit as u32 }),
                Err(_) => return Err(NtError::INVALID_PARAMETER),
            }
        }
        Ok(Progress::Done)
    }

    /// Logical address of byte `off` of a transfer side.
    ///
    /// # Safety
    /// For `segment == 0`, `mdl` must be a valid MDL with enough pages after `MdlOffset`.
    unsafe fn location(
        &self,
        segment: u32,
        segment_address: i64,
        mdl: *mut MDL,
        t: &sys::DXGKARG_BUILDPAGINGBUFFER_Transfer,
        off: u64,
    ) -> NtResult<u64> {
        if segment == 0 {
            if mdl.is_null() {
                return Err(NtError::INVALID_PARAMETER);
            }
            let page = u64::from(t.MdlOffset) + off / PAGE;
            // SAFETY: valid MDL per the caller.
            let count = unsafe { mdl_page_count(mdl) };
            if page >= count as u64 {
                return Err(NtError::INVALID_PARAMETER);
            }
            // SAFETY: valid MDL per the caller.
            let pfns = unsafe { sys::MmGetMdlPfnArray(mdl) };
            // SAFETY: `page < count`.
            let pfn = *unsafe { elem(pfns, page as usize) } as u64;
            Ok((pfn << 12) | (off % PAGE))
        } else if segment == APERTURE_SEGMENT_ID {
            let base = u64::try_from(segment_address).map_err(|_| NtError::INVALID_PARAMETER)?;
            let start = base + u64::from(t.TransferOffset);
            // A unit is one page on both sides: from inside an aperture page, its COPY would run
            // into the next aperture page, whose logical page need not be adjacent (found by
            // fuzzing; tests/fuzz_regressions.rs).
            if start % PAGE != 0 {
                rgpu_log!(
                    error,
                    "Transfer: aperture address {:#x} is not page aligned",
                    start
                );
                return Err(NtError::INVALID_PARAMETER);
            }
            self.aperture_address(start + off)
        } else {
            Err(NtError::INVALID_PARAMETER)
        }
    }

    /// FILL of an aperture location, one page per unit.
    fn fill(
        &self,
        f: &sys::DXGKARG_BUILDPAGINGBUFFER_Fill,
        start: u32,
        out: &mut Out<'_>,
    ) -> NtResult<Progress> {
        if f.Destination.SegmentId != APERTURE_SEGMENT_ID || !f.FillSize.is_multiple_of(4) {
            return Err(NtError::INVALID_PARAMETER);
        }
        // SAFETY: LARGE_INTEGER is plain data.
        let base = u64::try_from(unsafe { f.Destination.SegmentAddress.QuadPart })
            .map_err(|_| NtError::INVALID_PARAMETER)?;
        let size = f.FillSize as u64;
        let mut unit = u64::from(start);
        loop {
            // Unit k is the part of the fill inside the k-th aperture page it touches (the
            // first one may start inside its page). Found by fuzzing: units used to start every
            // 4 KiB from `base`, skipping the tail of each page after an unaligned start.
            let off = (unit * PAGE).saturating_sub(base % PAGE);
            if off >= size {
                break;
            }
            let len = (size - off).min(PAGE - (base + off) % PAGE);
            let dst = self.aperture_address(base + off)?;
            match out.enc.fill(Target::Logical(dst), len, f.FillPattern) {
                Ok(_) => unit += 1,
                Err(e) if full(e) => return Ok(Progress::Full { next: unit as u32 }),
                Err(_) => return Err(NtError::INVALID_PARAMETER),
            }
        }
        Ok(Progress::Done)
    }

    /// MAP_APERTURE_SEGMENT: point aperture pages at the MDL's pages.
    ///
    /// # Safety
    /// `m.pMdl` must be a valid MDL with `MdlOffset + NumberOfPages` pages.
    unsafe fn map_aperture(
        &self,
        m: &sys::DXGKARG_BUILDPAGINGBUFFER_MapApertureSegment,
    ) -> NtResult<()> {
        let aperture = self.aperture.ok_or(NtError::INVALID_DEVICE_STATE)?;
        if m.SegmentId != APERTURE_SEGMENT_ID || m.pMdl.is_null() {
            return Err(NtError::INVALID_PARAMETER);
        }
        let end = m
            .OffsetInPages
            .checked_add(m.NumberOfPages)
            .ok_or(NtError::INVALID_PARAMETER)?;
        if end > APERTURE_PAGES {
            return Err(NtError::INVALID_PARAMETER);
        }
        // SAFETY: valid MDL per the caller.
        let count = unsafe { mdl_page_count(m.pMdl) };
        if (m.MdlOffset as usize).saturating_add(m.NumberOfPages) > count {
            return Err(NtError::INVALID_PARAMETER);
        }
        // SAFETY: valid MDL per the caller.
        let pfns = unsafe { sys::MmGetMdlPfnArray(m.pMdl) };
        for i in 0..m.NumberOfPages {
            // SAFETY: MdlOffset + i < count (checked above).
            let pfn = *unsafe { elem(pfns, m.MdlOffset as usize + i) } as u64;
            aperture.set(m.OffsetInPages + i, Some(pfn))?;
        }
        Ok(())
    }

    /// UNMAP_APERTURE_SEGMENT: point the pages at VidMm's dummy page (they must stay accessible).
    fn unmap_aperture(
        &self,
        u: &sys::DXGKARG_BUILDPAGINGBUFFER_UnmapApertureSegment,
    ) -> NtResult<()> {
        let aperture = self.aperture.ok_or(NtError::INVALID_DEVICE_STATE)?;
        if u.SegmentId != APERTURE_SEGMENT_ID {
            return Err(NtError::INVALID_PARAMETER);
        }
        let end = u
            .OffsetInPages
            .checked_add(u.NumberOfPages)
            .ok_or(NtError::INVALID_PARAMETER)?;
        if end > APERTURE_PAGES {
            return Err(NtError::INVALID_PARAMETER);
        }
        // SAFETY: LARGE_INTEGER is plain data.
        let dummy = unsafe { u.DummyPage.QuadPart } as u64 >> 12;
        for i in 0..u.NumberOfPages {
            aperture.set(u.OffsetInPages + i, Some(dummy))?;
        }
        Ok(())
    }
}

/// COPY_PAGE_TABLE_ENTRIES: one COPY per range.
///
/// # Safety
/// `c.pRanges` holds `c.NumRanges` ranges.
unsafe fn copy_page_table_entries(
    c: &sys::DXGK_BUILDPAGINGBUFFER_COPYPAGETABLEENTRIES,
    start: u32,
    out: &mut Out<'_>,
) -> NtResult<Progress> {
    if c.NumRanges > 0 && c.pRanges.is_null() {
        return Err(NtError::INVALID_PARAMETER);
    }
    let mut unit = start;
    while unit < c.NumRanges {
        // SAFETY: `unit < NumRanges`.
        let r = unsafe { elem(c.pRanges, unit as usize) };
        let n = u64::from(r.NumPageTableEntries);
        if u64::from(r.SrcStartPteIndex) + n > 512
            || u64::from(r.DstStartPteIndex) + n > 512
            || n == 0
        {
            return Err(NtError::INVALID_PARAMETER);
        }
        // Table VAs at the top of the address space would wrap (found by fuzzing).
        let (Some(src), Some(dst)) = (
            r.SrcPageTableAddress
                .checked_add(u64::from(r.SrcStartPteIndex) * 8),
            r.DstPageTableAddress
                .checked_add(u64::from(r.DstStartPteIndex) * 8),
        ) else {
            return Err(NtError::INVALID_PARAMETER);
        };
        match out
            .enc
            .copy(Target::Virtual(dst), Target::Virtual(src), n * 8)
        {
            Ok(_) => unit += 1,
            Err(e) if full(e) => return Ok(Progress::Full { next: unit }),
            Err(_) => return Err(NtError::INVALID_PARAMETER),
        }
    }
    Ok(Progress::Done)
}

fn once(r: Result<usize, CmdError>) -> NtResult<Progress> {
    match r {
        Ok(_) => Ok(Progress::Done),
        Err(e) if full(e) => Ok(Progress::Full { next: 0 }),
        Err(e) => {
            rgpu_log!(error, "BuildPagingBuffer: {:?}", e);
            Err(NtError::INVALID_PARAMETER)
        }
    }
}

/// Pages an MDL spans.
///
/// # Safety
/// `mdl` must be valid.
unsafe fn mdl_page_count(mdl: *mut MDL) -> usize {
    // SAFETY: valid MDL per the caller.
    let va = unsafe { sys::MmGetMdlVirtualAddress(mdl) } as usize;
    // SAFETY: as above.
    let bytes = unsafe { sys::MmGetMdlByteCount(mdl) } as usize;
    sys::ADDRESS_AND_SIZE_TO_SPAN_PAGES(va, bytes)
}

const _: () = assert!(size_of::<DXGK_PTE>() == 16);

/// Element `i` of a C array.
///
/// # Safety
/// `base` must point to an array of more than `i` initialized `T`s that outlives `'a`.
unsafe fn elem<'a, T>(base: *const T, i: usize) -> &'a T {
    // SAFETY: `i` is in bounds per the caller.
    let p = unsafe { base.add(i) };
    // SAFETY: `p` points to an initialized element per the caller.
    unsafe { &*p }
}
