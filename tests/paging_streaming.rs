//! UPDATE_PAGE_TABLE into a DMA buffer larger than the cache (≥ 1 MiB free), which rgpu writes
//! with streaming stores: the same WRITE_PTES as into a small buffer — at most a one-dword NOP
//! in front, which puts the payload at a multiple of 8 — at every alignment of `pDmaBuffer`,
//! with entries that take the leaf kernel and entries that do not.

use dxgk::paging::BuildPagingBuffer;
use dxgk_sim::{Machine, MachineConfig};
use dxgk_sys as sys;
use rgpu::paging::{translate_pte, PagingContext, TableKind, MAX_TABLE_ENTRIES};
use rgpu_hw::cmd::{Command, Decoder, Target};

const TABLE_VA: u64 = 0x7000_0000;

/// One 512-entry UPDATE_PAGE_TABLE into `dma`; returns the bytes written.
fn update(dma: &mut [u8], entries: &mut [sys::DXGK_PTE]) -> usize {
    let ctx = PagingContext {
        views: None,
        aperture: None,
        asid_of: None,
    };
    let mut a = sys::DXGKARG_BUILDPAGINGBUFFER {
        pDmaBuffer: dma.as_mut_ptr().cast(),
        DmaSize: dma.len() as u32,
        Operation: sys::DXGK_OPERATION_UPDATE_PAGE_TABLE,
        ..Default::default()
    };
    let mut u = sys::DXGK_BUILDPAGINGBUFFER_UPDATEPAGETABLE {
        pPageTableEntries: entries.as_mut_ptr(),
        NumPageTableEntries: entries.len() as u32,
        UpdateMode: sys::DXGK_PAGETABLEUPDATE_GPU_VIRTUAL,
        ..Default::default()
    };
    u.PageTableAddress.u.GpuVirtual = TABLE_VA;
    a.u.UpdatePageTable = u;
    // SAFETY: the DMA buffer and the entries are valid for the call.
    let req = unsafe { BuildPagingBuffer::from_raw(&mut a, MAX_TABLE_ENTRIES) }.expect("decode");
    ctx.build(req).expect("UPDATE_PAGE_TABLE");
    a.pDmaBuffer as usize - dma.as_ptr() as usize
}

/// The entries of the one WRITE_PTES in `written` (after at most a one-dword NOP), and the
/// payload's offset in the buffer.
fn written_entries(written: &[u8]) -> (Vec<u64>, usize) {
    let cmds: Vec<_> = Decoder::new(written)
        .map(|c| c.expect("valid commands"))
        .collect();
    match cmds.as_slice() {
        [(at, Command::WritePtes { dst, entries })]
        | [(_, Command::Nop { dwords: 1 }), (at, Command::WritePtes { dst, entries })] => {
            assert_eq!(*dst, Target::Virtual(TABLE_VA));
            (entries.iter().collect(), at + 12)
        }
        other => panic!("expected [NOP(1)] WRITE_PTES, got {other:?}"),
    }
}

#[test]
fn a_large_dma_buffer_gets_the_same_entries_at_every_alignment() {
    let m = Machine::new(MachineConfig::windows_11_22h2());
    m.enter(|| {
        let leaf_kernel: Vec<sys::DXGK_PTE> = (0..512u64)
            .map(|i| {
                let mut p = sys::DXGK_PTE::default();
                p.set_Valid(1);
                p.set_ReadOnly(i & 1);
                p.set_Segment(if i % 3 == 0 { 2 } else { 0 });
                p.u.PageAddress = 0x12_3456 + i * 7;
                p
            })
            .collect();
        // A flag bit the leaf kernel refuses (PhysicalAdapterIndex bit 1) in the middle, and
        // invalid entries: the exact kernel's batch.
        let mut exact = leaf_kernel.clone();
        exact[300].Flags |= 1 << 12;
        for p in exact.iter_mut().step_by(5) {
            p.set_Valid(0);
        }
        let mut big = vec![0u8; (2 << 20) + 64];
        let base = big.as_ptr().align_offset(64);
        for entries in [leaf_kernel, exact] {
            let expected: Vec<u64> = entries
                .iter()
                .map(|p| translate_pte(p, TableKind::Leaf, None).expect("system memory"))
                .collect();
            let mut small = vec![0u8; 64 * 1024];
            let n = update(&mut small, &mut entries.clone());
            assert_eq!(written_entries(&small[..n]).0, expected, "64 KiB buffer");
            for offset in [0, 4, 8, 12, 16, 20, 60] {
                let dma = &mut big[base + offset..];
                let n = update(dma, &mut entries.clone());
                let (got, payload) = written_entries(&dma[..n]);
                assert_eq!(got, expected, "2 MiB buffer at offset {offset}");
                let at = dma.as_ptr() as usize + payload;
                assert_eq!(
                    at % 8,
                    0,
                    "payload aligned for the streaming stores (offset {offset})"
                );
            }
        }
    });
}
