//! `Dma::copy_pieces` (a device COPY's run of page pieces under one lock, coalesced into large
//! memcpys) has exactly the effect of one `Dma::copy` per piece, in order: the same bytes,
//! forward piece-by-piece semantics when source and destination overlap, and on a fault the
//! pieces before it copied, nothing after, the same fault recorded.

mod common;

use common::machines;
use dxgk_sim::{AdapterConfig, IommuFaultKind, Machine, VidmmMemory};

const PAGE: usize = 4096;

/// The pieces a COPY issues: each ends at a 4 KiB boundary of either side.
fn pieces(dst: u64, src: u64, len: usize) -> Vec<(u64, u64, usize)> {
    let mut v = Vec::new();
    let mut done = 0;
    while done < len {
        let (s, d) = (src + done as u64, dst + done as u64);
        let b = |a: u64| PAGE - (a as usize % PAGE);
        let n = (len - done).min(b(s)).min(b(d));
        v.push((d, s, n));
        done += n;
    }
    v
}

/// 64 pages in four 64 KiB runs (logically contiguous inside a run), filled with a pattern.
fn memory(m: &Machine) -> (dxgk_sim::AdapterId, VidmmMemory) {
    let id = m.add_adapter(AdapterConfig { device: None });
    let mem = m.vidmm_allocate_64k(id, 64, false).expect("memory");
    let pattern: Vec<u8> = (0..64 * PAGE).map(|i| (i ^ (i >> 9)) as u8).collect();
    mem.write(0, &pattern);
    (id, mem)
}

fn snapshot(mem: &VidmmMemory) -> Vec<u8> {
    let mut all = vec![0u8; mem.pages() * PAGE];
    mem.read(0, &mut all);
    all
}

/// CPU offset of logical byte `a` of `mem`.
fn offset_of(mem: &VidmmMemory, a: u64) -> usize {
    let page = mem
        .logical_pages()
        .iter()
        .position(|&p| p == a >> 12)
        .expect("a page of the memory");
    page * PAGE + (a as usize % PAGE)
}

/// Logical byte `off` of 64 KiB run `run`.
fn at(mem: &VidmmMemory, run: usize, off: usize) -> u64 {
    (mem.logical_page(run * 16) << 12) + off as u64
}

/// Applies the first `count` pieces of a copy to `model`, one memmove each.
fn apply(model: &mut [u8], mem: &VidmmMemory, p: &[(u64, u64, usize)]) {
    for &(d, s, n) in p {
        let (s, d) = (offset_of(mem, s), offset_of(mem, d));
        model.copy_within(s..s + n, d);
    }
}

#[test]
fn runs_copy_like_one_copy_per_piece_also_when_overlapping() {
    for m in machines() {
        let name = m.config().name.clone();
        let (id, mem) = memory(&m);
        let mut dma = m.dma(id);
        // Disjoint, unaligned on both sides, across many pieces; then forward and backward
        // overlaps inside one run (where one memmove of the whole would differ).
        for (dst, src, len) in [
            (at(&mem, 1, 0x123), at(&mem, 0, 0x456), 15 * PAGE + 0x77),
            (at(&mem, 2, 0x810), at(&mem, 2, 0x10), 3 * PAGE),
            (at(&mem, 3, 0x10), at(&mem, 3, 0x1810), 5 * PAGE + 4),
        ] {
            let mut model = snapshot(&mem);
            apply(&mut model, &mem, &pieces(dst, src, len));
            dma.copy_pieces(dst, src, len).expect("mapped");
            assert!(
                snapshot(&mem) == model,
                "{name}: copy {src:#x} -> {dst:#x} +{len:#x}"
            );
        }
        assert!(m.iommu_faults().is_empty(), "{name}");
        m.vidmm_free(mem);
    }
}

#[test]
fn a_fault_mid_run_copies_the_pieces_before_it_and_records_the_same_fault() {
    for m in machines() {
        let name = m.config().name.clone();
        let (id, mem) = memory(&m);
        let mut dma = m.dma(id);
        // The source runs off the end of run 0 into an unmapped page (runs are scattered).
        let src = at(&mem, 0, 14 * PAGE + 0x800);
        let dst = at(&mem, 1, 0x100);
        let p = pieces(dst, src, 3 * PAGE);
        let unmapped = at(&mem, 0, 16 * PAGE);
        assert!(!dma.is_mapped(unmapped), "{name}: test layout");
        let before = p.iter().take_while(|x| x.1 < unmapped).count();
        let mut model = snapshot(&mem);
        apply(&mut model, &mem, &p[..before]);
        let (copied, f, write) = dma.copy_pieces(dst, src, 3 * PAGE).unwrap_err();
        let expected: usize = p[..before].iter().map(|x| x.2).sum();
        assert_eq!(copied, expected, "{name}: bytes before the fault");
        assert_eq!(
            (f.logical_addr, f.kind, write),
            (unmapped, IommuFaultKind::NotMapped, false)
        );
        assert!(
            snapshot(&mem) == model,
            "{name}: memory after the read fault"
        );
        // A read-only destination page in the middle of a run.
        let ro = at(&mem, 2, 3 * PAGE);
        assert!(m.set_logical_page_writable(id, ro, false));
        let (src, dst) = (at(&mem, 3, 0x40), at(&mem, 2, PAGE + 0x20));
        let p = pieces(dst, src, 4 * PAGE);
        let before = p.iter().take_while(|x| x.0 + x.2 as u64 <= ro).count();
        let mut model = snapshot(&mem);
        apply(&mut model, &mem, &p[..before]);
        let (copied, f, write) = dma.copy_pieces(dst, src, 4 * PAGE).unwrap_err();
        assert_eq!(
            copied,
            p[..before].iter().map(|x| x.2).sum::<usize>(),
            "{name}"
        );
        assert_eq!(
            (f.logical_addr, f.kind, write),
            (ro, IommuFaultKind::ReadOnly, true)
        );
        assert!(
            snapshot(&mem) == model,
            "{name}: memory after the write fault"
        );
        let faults = m.iommu_faults();
        assert_eq!(
            faults.len(),
            2,
            "{name}: one fault recorded per failed copy"
        );
        assert_eq!(
            (faults[0].source.as_str(), faults[1].source.as_str()),
            ("Read", "Write")
        );
        assert_eq!(m.findings_of(dxgk_sim::Rule::IommuFault).len(), 2, "{name}");
        m.vidmm_free(mem);
    }
}
