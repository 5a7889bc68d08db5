//! The UPDATE_PAGE_TABLE conversion kernels: [`convert`] turns a batch of `DXGK_PTE`s into rgpu
//! entries as `pte::translate_fast` does, with SSE2 intrinsics on x86-64 (the only `unsafe`
//! under `src/paging`) and a portable loop beside it for other targets. The instruction
//! sequences and the store kind are tuned against the `update_page_table`
//! benchmarks and their instruction counts (`benches/paging.rs`, `tools/bench/insn-guard.sh`):
//! change them only with a measurement.
//!
//! Two kernels on x86-64:
//! * the **leaf kernel** for the common case — a 4 KiB-page leaf table whose entries are valid
//!   system-memory pages with no flag bits above bit 11: `((page << 12) | flags) & MASK` per
//!   entry, five instructions per entry (loads, two accumulators, shift, or, and; one store per
//!   two entries). It accepts a batch only if every entry met that condition (checked once, at
//!   the end, from an OR and an AND of the flag words) — no per-entry branch — and otherwise
//!   leaves the batch to
//! * the **exact kernel**, which masks every entry by its Valid bit and computes the "slow"
//!   word that sends entries to the general path (every table kind, any flags).
//!
//! Stores: [`Stores::Cached`] (MOVDQU) keeps the DMA buffer in the cache, where the device's
//! snooped DMA read finds it — right for rgpu's 64 KiB paging buffers. [`Stores::Streaming`]
//! (MOVNTDQ, SSE2: usable in x64 kernel mode without saving extended state) writes a DMA buffer
//! larger than the cache straight to memory: no read-for-ownership of lines that are only ever
//! written, no eviction of the source entries. The SFENCE that makes those weakly ordered stores
//! visible to the device is in `convert`, right after the bulk write
//! (`fence_streaming_stores` says why one there suffices).

#[cfg(not(target_arch = "x86_64"))]
pub(super) use portable::convert;
#[cfg(target_arch = "x86_64")]
pub(super) use sse2::convert;

/// How a batch's rgpu entries are stored into the DMA buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stores {
    /// Ordinary stores.
    Cached,
    /// Non-temporal stores, then SFENCE (x86-64; elsewhere ordinary stores).
    Streaming,
}

impl Stores {
    /// Free DMA-buffer bytes from which a call streams: larger than a core's L2 (1–2 MiB on
    /// current x86 parts), so what the driver writes would leave the cache before the device
    /// reads it anyway. rgpu's own paging buffers (`caps::PAGING_BUFFER_SIZE`, 64 KiB) stay
    /// below it and use cached stores.
    pub(super) const STREAM_FROM_BYTES: usize = 1 << 20;

    /// The store kind for a call with `free` bytes of DMA buffer (`DmaSize`).
    pub(super) const fn for_dma_buffer(free: usize) -> Stores {
        if free >= Self::STREAM_FROM_BYTES {
            Stores::Streaming
        } else {
            Stores::Cached
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod sse2 {
    use core::arch::x86_64::*;

    use dxgk_sys::DXGK_PTE;
    use rgpu_hw::pte;

    use super::Stores;
    use crate::paging::pte::{
        slow_flags, translate_fast, KIND_DIRECTORY, KIND_LEAF, KIND_LEAF_64K, PAGE_TABLE_64KB,
    };

    /// Flag bits that keep a valid leaf entry out of the leaf kernel: the general path's (other
    /// segments, PageTablePageSize) and every bit from 12 up, which `((page << 12) | flags)`
    /// would carry into the address. Bits 5–11 are cleared by [`LEAF_OUT_MASK`].
    const LEAF_KERNEL_REJECT: u64 = slow_flags::<KIND_LEAF>() | !0xFFF;
    /// What the leaf kernel keeps of `(page << 12) | flags`.
    const LEAF_OUT_MASK: u64 = pte::ADDR_MASK | pte::LEAF_FLAGS_MASK;

    // No software prefetch: on the AMD EPYC host (Zen 4) the PREFETCHT0s 8 KiB ahead that the
    // streaming loop had cost 0.2–0.3x of memcpy on the bulk benchmark (1.04–1.08x with them,
    // 1.20–1.37x without, same build otherwise; docs/performance.md), and the hardware
    // prefetchers follow the source stream on their own.

    /// Converts `src` into `out` (`src.len() * 8` bytes) as `translate_fast` does; returns the
    /// OR of the entries' "slow" words (0 = every entry is what `translate_fast` wrote).
    pub(in crate::paging) fn convert<const KIND: u8>(
        src: &[DXGK_PTE],
        out: &mut [u8],
        table_64k: u64,
        stores: Stores,
    ) -> u64 {
        // A batch of invalid entries (an unmap) goes to the exact kernel at once.
        let leaf_candidate =
            KIND == KIND_LEAF && src.len() >= 4 && src.first().is_some_and(|p| p.Flags & 1 != 0);
        if leaf_candidate {
            let accepted = match stores {
                // SAFETY: SSE2 is part of the x86-64 baseline: every x86-64 CPU has it and
                // every x86-64 target enables it.
                Stores::Cached => unsafe { leaf_kernel_cached(src, out) },
                // SAFETY: as above.
                Stores::Streaming => unsafe { leaf_kernel_streamed(src, out) },
            };
            if accepted {
                return 0;
            }
        }
        // SAFETY: as above.
        unsafe { exact_kernel::<KIND>(src, out, table_64k) }
    }

    /// The flag words seen by the leaf kernel: their OR and their AND.
    #[derive(Clone, Copy)]
    struct Seen {
        or: __m128i,
        and: __m128i,
    }

    impl Seen {
        #[inline]
        #[target_feature(enable = "sse2")]
        fn new() -> Seen {
            Seen {
                or: _mm_setzero_si128(),
                and: _mm_set1_epi64x(-1),
            }
        }

        /// Notes flag words converted outside the vector loop: `or` (their OR) and `and`
        /// (their AND; all ones for none).
        #[inline]
        #[target_feature(enable = "sse2")]
        fn note(&mut self, or: u64, and: u64) {
            self.or = _mm_or_si128(self.or, _mm_set_epi64x(0, or as i64));
            self.and = _mm_and_si128(self.and, _mm_set_epi64x(-1, and as i64));
        }

        /// Every entry seen is valid and has no [`LEAF_KERNEL_REJECT`] bit: per lane, the OR's
        /// reject bits and the AND's missing Valid bit, combined, then the two lanes.
        #[inline]
        #[target_feature(enable = "sse2")]
        fn all_leaf_kernel(self) -> bool {
            let reject = _mm_and_si128(self.or, _mm_set1_epi64x(LEAF_KERNEL_REJECT as i64));
            let invalid = _mm_andnot_si128(self.and, _mm_set1_epi64x(pte::VALID as i64));
            let bad = _mm_or_si128(reject, invalid);
            let bad = _mm_or_si128(bad, _mm_unpackhi_epi64(bad, bad));
            _mm_cvtsi128_si64(bad) == 0
        }
    }

    /// Word `WORD` (0 = Flags, 1 = the page) of `a` and of `b` in one register: `a`'s in the
    /// low lane, `b`'s in the high one (MOVQ + MOVHPD: no shuffle needed).
    #[inline]
    #[target_feature(enable = "sse2")]
    fn load_word<const WORD: usize>(a: &DXGK_PTE, b: &DXGK_PTE) -> __m128i {
        const { assert!(WORD < 2) };
        let word = |p: &DXGK_PTE| core::ptr::from_ref(p).cast::<u64>().wrapping_add(WORD);
        // SAFETY: `word(a)` is an 8-byte-aligned word inside the live `*a` (a DXGK_PTE is two
        // u64); MOVQ has no alignment rule.
        let v = unsafe { _mm_loadl_epi64(word(a).cast()) };
        let v = _mm_castsi128_pd(v);
        // SAFETY: `word(b)` is an 8-byte-aligned word inside `*b`; MOVHPD reads it as 8 bytes
        // of bits (every bit pattern is an f64).
        let v = unsafe { _mm_loadh_pd(v, word(b).cast()) };
        _mm_castpd_si128(v)
    }

    /// The leaf kernel's two entries `[a, b]` → their rgpu entries, noting their flags in
    /// `seen`.
    #[inline]
    #[target_feature(enable = "sse2")]
    fn leaf_pair(p: &[DXGK_PTE; 2], seen: &mut Seen) -> __m128i {
        let [a, b] = p;
        let flags = load_word::<0>(a, b);
        let page = load_word::<1>(a, b);
        seen.or = in_register(_mm_or_si128(seen.or, flags));
        seen.and = in_register(_mm_and_si128(seen.and, flags));
        let entry = _mm_or_si128(_mm_slli_epi64::<12>(page), flags);
        _mm_and_si128(entry, _mm_set1_epi64x(LEAF_OUT_MASK as i64))
    }

    /// `v`, through an empty `asm!` the optimizer cannot see into: it emits no instruction,
    /// but keeps an accumulator's chain one POR / PAND per pair. Without it LLVM reassociates
    /// the chains into trees that need a register copy (MOVDQA) for every two pairs — 4 more
    /// instructions per 16 entries. Under Miri (which runs no `asm!`) `v` itself.
    #[inline(always)]
    fn in_register(#[allow(unused_mut)] mut v: __m128i) -> __m128i {
        #[cfg(not(miri))]
        // SAFETY: the template is empty (a comment naming the operand): nothing is executed,
        // no memory, stack or flag is touched; `v` goes in and comes out unchanged.
        unsafe {
            core::arch::asm!(
                "/* {0} */",
                inout(xmm_reg) v,
                options(pure, nomem, nostack, preserves_flags)
            )
        };
        v
    }

    /// One 16-byte store of the leaf kernel.
    trait Put {
        /// Stores `v` at `o`.
        fn put(o: &mut [u8; 16], v: __m128i);
    }

    /// MOVDQU.
    struct CachedStore;
    impl Put for CachedStore {
        #[inline(always)]
        fn put(o: &mut [u8; 16], v: __m128i) {
            // SAFETY: `o` is 16 writable bytes; MOVDQU has no alignment rule.
            unsafe { _mm_storeu_si128(o.as_mut_ptr().cast(), v) }
        }
    }

    /// MOVNTDQ into a 16-byte-aligned `o`.
    struct StreamStore;
    impl Put for StreamStore {
        #[inline(always)]
        fn put(o: &mut [u8; 16], v: __m128i) {
            debug_assert!(o.as_ptr().cast::<__m128i>().is_aligned());
            // SAFETY: `o` is 16 writable bytes, 16-byte aligned (`leaf_streamed` passes
            // 16-byte chunks starting at an aligned address); the store only bypasses the
            // cache, and `convert` fences it.
            unsafe { _mm_stream_si128(o.as_mut_ptr().cast(), v) }
        }
    }

    /// The leaf kernel over `src` into `out` with cached stores; true if every entry qualified
    /// (then `out` holds the batch), false if the exact kernel must redo it. `src.len() >= 4`.
    #[inline]
    #[target_feature(enable = "sse2")]
    fn leaf_kernel_cached(src: &[DXGK_PTE], out: &mut [u8]) -> bool {
        let mut seen = Seen::new();
        leaf_direct::<CachedStore>(src, out, &mut seen);
        seen.all_leaf_kernel()
    }

    /// [`leaf_kernel_cached`] with streaming stores, fenced before it returns (whether or not
    /// the batch is accepted: the exact kernel's ordinary stores to the same lines must not be
    /// overtaken by a streamed one). Out of line, so that the cached path keeps its registers.
    #[inline(never)]
    #[target_feature(enable = "sse2")]
    fn leaf_kernel_streamed(src: &[DXGK_PTE], out: &mut [u8]) -> bool {
        let mut seen = Seen::new();
        let (scalar_or, scalar_and) = match out.as_ptr() as usize % 16 {
            // The payload of a WRITE_PTES follows a 12-byte header, so every 4-byte phase
            // occurs: the stream is shifted into aligned 16-byte stores.
            0 => leaf_streamed::<0, 16>(src, out, &mut seen),
            // 8 mod 16: the first entry alone, then pairs from the second one are aligned
            // (the loads pair any two neighbours; no shifting needed).
            8 if src.len() > 4 => match src.split_first() {
                Some((first, rest)) => {
                    let (first_out, rest_out) = out.split_at_mut(8);
                    let f = leaf_single(first, first_out);
                    let (or, and) = leaf_streamed::<0, 16>(rest, rest_out, &mut seen);
                    (or | f, and & f)
                }
                None => (0, 0), // unreachable: not empty; (0, 0) refuses the batch
            },
            4 => leaf_streamed::<4, 12>(src, out, &mut seen),
            8 => leaf_streamed::<8, 8>(src, out, &mut seen),
            12 => leaf_streamed::<12, 4>(src, out, &mut seen),
            // A payload at an odd byte (VidMm's DMA buffers and rgpu's commands are dword
            // aligned, so never in practice): no aligned stores there; the exact kernel.
            _ => (0, 0),
        };
        fence_streaming_stores();
        seen.note(scalar_or, scalar_and);
        seen.all_leaf_kernel()
    }

    /// A last odd entry, by `translate_fast` (exact for any entry); returns its flag word for
    /// the acceptance check.
    #[inline]
    fn leaf_single(p: &DXGK_PTE, out: &mut [u8]) -> u64 {
        let (e, _) = translate_fast::<KIND_LEAF>(p.Flags, dxgk::paging::pte_page(p), 0);
        if let Some(o) = out.get_mut(..8) {
            o.copy_from_slice(&e.to_le_bytes());
        }
        p.Flags
    }

    /// Sixteen entries (four source lines) into 128 bytes of `out`: a loop of eight pairs,
    /// which the compiler unrolls completely.
    #[inline]
    #[target_feature(enable = "sse2")]
    fn leaf_block<S: Put>(s: &[DXGK_PTE; 16], o: &mut [u8; 128], seen: &mut Seen) {
        let (pairs, _) = s.as_chunks::<2>();
        let (o16, _) = o.as_chunks_mut::<16>();
        for (p, o) in pairs.iter().zip(o16) {
            S::put(o, leaf_pair(p, seen));
        }
    }

    /// The leaf kernel with each pair of entries stored at its own place in `out`, every flag
    /// word noted in `seen`.
    #[inline]
    #[target_feature(enable = "sse2")]
    fn leaf_direct<S: Put>(src: &[DXGK_PTE], out: &mut [u8], seen: &mut Seen) {
        // `out` is exactly `src`'s size here, so that one length bounds every loop below.
        let Some(out) = out.get_mut(..src.len() * 8) else {
            seen.note(0, 0); // unreachable (`convert`'s contract): refuses the batch
            return;
        };
        // Sixty-four entries (sixteen source lines, 512 output bytes) per iteration: the loop's
        // own three instructions are then 0.05 per entry. Then up to three blocks of sixteen.
        let (src64, src_rest) = src.as_chunks::<64>();
        let (out512, out_rest) = out.as_chunks_mut::<512>();
        for (s, o) in src64.iter().zip(out512) {
            let (s16, _) = s.as_chunks::<16>();
            let (o128, _) = o.as_chunks_mut::<128>();
            if let ([s0, s1, s2, s3], [o0, o1, o2, o3]) = (s16, o128) {
                leaf_block::<S>(s0, o0, seen);
                leaf_block::<S>(s1, o1, seen);
                leaf_block::<S>(s2, o2, seen);
                leaf_block::<S>(s3, o3, seen);
            }
        }
        // A whole table (512 entries) or any multiple of 64 has no tail: one test skips it.
        if src_rest.is_empty() {
            return;
        }
        let (src16, src_rest) = src_rest.as_chunks::<16>();
        let (out128, out_rest) = out_rest.as_chunks_mut::<128>();
        for (s, o) in src16.iter().zip(out128) {
            leaf_block::<S>(s, o, seen);
        }
        let (pairs, odd) = src_rest.as_chunks::<2>();
        let (o16, out_odd) = out_rest.as_chunks_mut::<16>();
        for (p, o) in pairs.iter().zip(o16) {
            S::put(o, leaf_pair(p, seen));
        }
        if let Some(p) = odd.first() {
            let f = leaf_single(p, out_odd);
            seen.note(f, f);
        }
    }

    /// The leaf kernel streaming into an `out` that starts `P` bytes past a 16-byte boundary
    /// (`Q = 16 - P`): pair `k`'s 16 bytes land across two aligned 16-byte stores, so each
    /// store is the last `P` bytes of the previous pair and the first `Q` of the next
    /// (PSRLDQ / PSLLDQ / POR; nothing to merge when `P` = 0). Only whole 64-byte lines are
    /// streamed: the partial lines at both ends (shared with the command header and the next
    /// command) get ordinary stores — a line written partly by each would be read for
    /// ownership and then flushed from the write-combining buffer, stalling the next store.
    #[inline]
    #[target_feature(enable = "sse2")]
    fn leaf_streamed<const P: i32, const Q: i32>(
        src: &[DXGK_PTE],
        out: &mut [u8],
        seen: &mut Seen,
    ) -> (u64, u64) {
        const { assert!(P + Q == 16 && P % 4 == 0 && P >= 0 && Q > 0) };
        // `src.len() >= 4` here: at least one pair besides the first.
        let bytes = |v: __m128i| {
            let mut b = [0u8; 16];
            // SAFETY: `b` is 16 writable bytes; MOVDQU has no alignment rule.
            unsafe { _mm_storeu_si128(b.as_mut_ptr().cast(), v) };
            b
        };
        let (pairs, odd) = src.as_chunks::<2>();
        let Some((first, pairs)) = pairs.split_first() else {
            return (0, !0); // unreachable: src.len() >= 4
        };
        let (head, rest) = out
            .split_at_mut_checked(Q as usize)
            .unwrap_or((&mut [], &mut []));
        let v = leaf_pair(first, seen);
        if let Some(h) = bytes(v).get(..Q as usize) {
            head.copy_from_slice(h);
        }
        let mut carry = _mm_srli_si128::<Q>(v);
        // Stores before the first line boundary, whole lines, stores after the last.
        let to_line = (64 - rest.as_ptr() as usize % 64) % 64 / 16;
        let (aligned, _) = rest.as_chunks_mut::<16>();
        // One aligned store per remaining pair (the last may have no pair: the tail's).
        let usable = aligned.len().min(pairs.len());
        let lead = to_line.min(usable);
        let lines = (usable - lead) / 4;
        let (lead_out, more) = aligned.split_at_mut(lead);
        let (lines_out, more) = more.split_at_mut(lines * 4);
        let trail_out = more.get_mut(..usable - lead - lines * 4).unwrap_or(&mut []);
        let (lead_pairs, more_pairs) = pairs.split_at(lead);
        let (line_pairs, trail_pairs) = more_pairs.split_at(lines * 4);
        // The accumulators stay in registers through the loops (a `&mut` would be stored back
        // on every iteration).
        let mut acc = *seen;
        shifted_stores::<P, Q, CachedStore>(lead_out, lead_pairs, &mut carry, &mut acc);
        // Two lines (128 output bytes, sixteen entries) per iteration, then one line.
        let (lines_out2, lines_out1) = lines_out.as_chunks_mut::<8>();
        let (line_pairs2, line_pairs1) = line_pairs.as_chunks::<8>();
        for (o8, s8) in lines_out2.iter_mut().zip(line_pairs2) {
            shifted_stores::<P, Q, StreamStore>(o8, s8, &mut carry, &mut acc);
        }
        shifted_stores::<P, Q, StreamStore>(lines_out1, line_pairs1, &mut carry, &mut acc);
        shifted_stores::<P, Q, CachedStore>(trail_out, trail_pairs, &mut carry, &mut acc);
        *seen = acc;
        // What is left after the `usable` aligned stores: the carry's P bytes, then the odd
        // entry's 8, as ordinary stores.
        let mut last = [0u8; 24];
        let (c, e) = last.split_at_mut(P as usize);
        c.copy_from_slice(bytes(carry).get(..P as usize).unwrap_or(&[]));
        let scalar = match odd.first() {
            Some(p) => {
                let f = leaf_single(p, e);
                (f, f)
            }
            None => (0, !0),
        };
        let tail = rest.get_mut(usable * 16..).unwrap_or(&mut []);
        let n = tail.len();
        tail.copy_from_slice(last.get(..n).unwrap_or(&[]));
        scalar
    }

    /// One aligned 16-byte store per pair of `pairs` into `out`, each the previous pair's last
    /// `P` bytes (`carry`) and this pair's first `Q`.
    #[inline]
    #[target_feature(enable = "sse2")]
    fn shifted_stores<const P: i32, const Q: i32, S: Put>(
        out: &mut [[u8; 16]],
        pairs: &[[DXGK_PTE; 2]],
        carry: &mut __m128i,
        seen: &mut Seen,
    ) {
        for (o, p) in out.iter_mut().zip(pairs) {
            let v = leaf_pair(p, seen);
            if P == 0 {
                S::put(o, v);
            } else {
                S::put(o, _mm_or_si128(*carry, _mm_slli_si128::<P>(v)));
                *carry = _mm_srli_si128::<Q>(v);
            }
        }
    }

    /// The exact kernel: every table kind, any entries; returns the OR of the slow words.
    #[target_feature(enable = "sse2")]
    fn exact_kernel<const KIND: u8>(src: &[DXGK_PTE], out: &mut [u8], table_64k: u64) -> u64 {
        let (quads, src_rest) = src.as_chunks::<4>();
        let (out_quads, out_rest) = out.as_chunks_mut::<32>();
        let mut flags = _mm_setzero_si128();
        let mut pages = _mm_setzero_si128();
        for (q, o) in quads.iter().zip(out_quads) {
            convert4::<KIND>(q, o, table_64k, &mut flags, &mut pages);
        }
        let or = |v: __m128i| _mm_cvtsi128_si64(_mm_or_si128(v, _mm_unpackhi_epi64(v, v))) as u64;
        let pages = if KIND == KIND_LEAF_64K {
            or(pages) & 0xF
        } else {
            0
        };
        let mut slow = (or(flags) & slow_flags::<KIND>()) | pages;
        for (p, o) in src_rest.iter().zip(out_rest.chunks_exact_mut(8)) {
            let (e, s) = translate_fast::<KIND>(p.Flags, dxgk::paging::pte_page(p), table_64k);
            slow |= s;
            o.copy_from_slice(&e.to_le_bytes());
        }
        slow
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

    /// Makes the batch's non-temporal stores globally visible before any later store.
    ///
    /// Where and why here: MOVNTDQ stores are weakly ordered — they sit in write-combining
    /// buffers, which the device's DMA read does not snoop, and may pass later stores. The
    /// driver only writes the DMA buffer; Dxgkrnl submits it after BuildPagingBuffer returns,
    /// and the ring write and doorbell that let the device read it are later stores (in
    /// program order on this CPU, or ordered after this CPU's stores by the locks and
    /// interlocked operations Dxgkrnl hands the buffer over with). One SFENCE at the end of the
    /// bulk write orders every streaming store of the batch before all of them, which is what
    /// the device needs; nothing between the stores and the fence reads the buffer back.
    #[inline]
    #[target_feature(enable = "sse2")]
    fn fence_streaming_stores() {
        _mm_sfence();
    }
}

/// The portable form of the conversion: `translate_fast` entry by entry (ordinary stores).
#[cfg(not(target_arch = "x86_64"))]
mod portable {
    use dxgk_sys::DXGK_PTE;

    use super::Stores;
    use crate::paging::pte::translate_fast;

    pub(in crate::paging) fn convert<const KIND: u8>(
        src: &[DXGK_PTE],
        out: &mut [u8],
        table_64k: u64,
        _stores: Stores,
    ) -> u64 {
        let mut slow = 0;
        for (p, o) in src.iter().zip(out.chunks_exact_mut(8)) {
            let (e, s) = translate_fast::<KIND>(p.Flags, dxgk::paging::pte_page(p), table_64k);
            slow |= s;
            o.copy_from_slice(&e.to_le_bytes());
        }
        slow
    }
}

#[cfg(test)]
mod tests {
    use std::boxed::Box;
    use std::vec::Vec;

    use dxgk_sys::DXGK_PTE;

    use super::{convert, Stores};
    use crate::paging::pte::{translate_fast, KIND_DIRECTORY, KIND_LEAF, KIND_LEAF_64K};

    /// A 16-byte-aligned buffer, so that every output phase can be chosen.
    #[repr(align(16))]
    struct Aligned([u8; 8 * 520 + 64]);

    /// Deterministic pseudo-random words (xorshift).
    fn words(seed: u64) -> impl FnMut() -> u64 {
        let mut x = seed | 1;
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        }
    }

    /// Entries the leaf kernel takes (valid, leaf flags, segment 0 or 2, any page), with entry
    /// `odd_one` (if any) replaced by one it must refuse (`how`).
    fn entries(n: usize, seed: u64, odd_one: Option<(usize, u64)>) -> Vec<DXGK_PTE> {
        let mut next = words(seed);
        (0..n)
            .map(|i| {
                let mut p = DXGK_PTE {
                    Flags: 1 | (next() & 0x1E) | (next() & (2 << 5)),
                    ..Default::default()
                };
                p.u.PageAddress = next() >> (next() % 40);
                if let Some((at, flags)) = odd_one {
                    if at == i {
                        p.Flags = flags;
                    }
                }
                p
            })
            .collect()
    }

    /// `convert` against `translate_fast` entry by entry: the same bytes, nothing written
    /// around them, and a zero slow word exactly when no entry needs the general path.
    fn check<const KIND: u8>(src: &[DXGK_PTE], phase: usize, stores: Stores) {
        let mut buf = Box::new(Aligned([0xEE; 8 * 520 + 64]));
        let out = &mut buf.0[16 + phase..16 + phase + src.len() * 8];
        let slow = convert::<KIND>(src, out, 0, stores);
        let mut expected_slow = 0;
        for (i, p) in src.iter().enumerate() {
            let (e, s) = translate_fast::<KIND>(p.Flags, dxgk::paging::pte_page(p), 0);
            expected_slow |= s;
            let got = &buf.0[16 + phase + i * 8..][..8];
            assert_eq!(
                got,
                &e.to_le_bytes(),
                "entry {i} of {} (phase {phase}, {stores:?}, flags {:#x})",
                src.len(),
                p.Flags
            );
        }
        assert_eq!(slow == 0, expected_slow == 0, "slow word (n {})", src.len());
        let end = 16 + phase + src.len() * 8;
        assert!(
            buf.0[..16 + phase]
                .iter()
                .chain(&buf.0[end..])
                .all(|&b| b == 0xEE),
            "bytes around the output untouched (n {}, phase {phase}, {stores:?})",
            src.len()
        );
    }

    #[test]
    fn every_size_phase_and_store_kind_matches_translate_fast() {
        let sizes = (0..40).chain([63, 64, 65, 255, 511, 512]);
        for n in sizes {
            for phase in [0, 4, 8, 12, 1, 6] {
                for stores in [Stores::Cached, Stores::Streaming] {
                    let seed = (n * 31 + phase) as u64;
                    check::<KIND_LEAF>(&entries(n, seed, None), phase, stores);
                    // Refused by the leaf kernel at the start, the middle and the end: an
                    // invalid entry with bits set, another segment, PageTablePageSize, a bit
                    // the kernel would carry into the address, a reserved top bit.
                    for how in [
                        0x1E | 0xFF << 5,
                        1 | 1 << 5,
                        1 | 1 << 17,
                        1 | 1 << 12,
                        1 << 63 | 1,
                    ] {
                        for at in [0, n / 2, n.saturating_sub(1)] {
                            let src = entries(n, seed, Some((at, how)));
                            check::<KIND_LEAF>(&src, phase, stores);
                        }
                    }
                    check::<KIND_LEAF_64K>(&entries(n, seed, None), phase, stores);
                    check::<KIND_DIRECTORY>(&entries(n, seed, None), phase, stores);
                }
            }
        }
    }
}
