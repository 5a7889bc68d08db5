//! The UPDATE_PAGE_TABLE conversion kernel: `convert_quads` turns lines of four `DXGK_PTE`s
//! into rgpu entries as `pte::translate_fast` does, with SSE2 intrinsics on x86-64 (the only
//! `unsafe` under `src/paging`) and a portable loop beside it for other targets. The
//! instruction sequence and the prefetch distance are tuned against the `update_page_table`
//! benchmarks (`benches/paging.rs`): change them only with a measurement.

#[cfg(not(target_arch = "x86_64"))]
pub(super) use portable::convert_quads;
#[cfg(target_arch = "x86_64")]
pub(super) use sse2::convert_quads;

/// `pte::convert_batch`'s main loop with SSE2, the x86-64 baseline (no extended state to save in
/// kernel mode), four entries (one 64-byte line of DXGK_PTEs) at a time.
#[cfg(target_arch = "x86_64")]
mod sse2 {
    use core::arch::x86_64::*;

    use dxgk_sys::DXGK_PTE;
    use rgpu_hw::pte;

    use crate::paging::pte::{
        slow_flags, KIND_DIRECTORY, KIND_LEAF, KIND_LEAF_64K, PAGE_TABLE_64KB,
    };

    /// How far ahead of the conversion the source (4 KiB of DXGK_PTEs) and the output (2 KiB)
    /// are prefetched, in 4-entry lines. A large batch is bound by memory, and the hardware
    /// prefetchers stop at every 4 KiB page: prefetching ahead keeps enough misses in flight
    /// (`update_page_table_bulk` benchmark: about 0.8× → 1.2× memcpy's speed).
    const PREFETCH_AHEAD: usize = 64;

    /// Converts `src` into `out` as `translate_fast` does; returns the OR of the entries'
    /// "slow" words.
    pub(in crate::paging) fn convert_quads<const KIND: u8>(
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

/// The portable form of `pte::convert_batch`'s main loop.
#[cfg(not(target_arch = "x86_64"))]
mod portable {
    use dxgk_sys::DXGK_PTE;

    use crate::paging::pte::translate_fast;

    pub(in crate::paging) fn convert_quads<const KIND: u8>(
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
            let (e, s) = translate_fast::<KIND>(p.Flags, dxgk::paging::pte_page(p), table_64k);
            slow |= s;
            o.copy_from_slice(&e.to_le_bytes());
        }
        slow
    }
}
