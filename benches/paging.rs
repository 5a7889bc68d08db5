//! Paging benchmarks, each reported as a ratio against a baseline measured in the same run
//! (never asserted in a test: the machines are noisy; `valgrind --tool=callgrind` gives
//! repeatable instruction counts when needed).
//!
//! * `update_page_table`: DxgkDdiBuildPagingBuffer(UPDATE_PAGE_TABLE, 512 entries, GPU_VIRTUAL)
//!   against `memcpy` of the same 512 DXGK_PTEs (8 KiB). rgpu reads 16 bytes and writes 8 per
//!   entry; memcpy reads and writes 16, so ≥ 1.0× is the target.
//!
//!   Measured twice: 512 entries (everything in L1, where an AVX-512 memcpy of 8 KiB is hard to
//!   match with the SSE2 baseline a Windows x64 driver may assume) and 64 MiB of entries (both
//!   bound by memory bandwidth).
//!
//! Run: `cargo bench --bench paging` (or `-- --quick` for fewer samples).

use std::hint::black_box;
use std::time::{Duration, Instant};

use dxgk_sim::{Machine, MachineConfig};
use dxgk_sys as sys;
use rgpu::paging::PagingContext;

/// Median time per iteration of `f` over `samples` samples of `iters` iterations each.
fn measure(samples: usize, iters: u32, mut f: impl FnMut()) -> Duration {
    for _ in 0..iters {
        f(); // warm-up
    }
    let mut times: Vec<Duration> = (0..samples)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            t.elapsed() / iters
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

fn report(name: &str, ours: Duration, baseline: Duration, bytes: usize, target: f64) {
    let ratio = baseline.as_secs_f64() / ours.as_secs_f64();
    let gbps = |d: Duration| bytes as f64 / d.as_secs_f64() / 1e9;
    println!(
        "{name}: {:.1} ns/op ({:.2} GB/s) vs baseline {:.1} ns/op ({:.2} GB/s): ratio {:.2}x (target >= {:.1}x) {}",
        ours.as_nanos() as f64,
        gbps(ours),
        baseline.as_nanos() as f64,
        gbps(baseline),
        ratio,
        target,
        if ratio >= target { "MET" } else { "NOT MET" }
    );
}

fn update_page_table(samples: usize) {
    const N: usize = 512;
    let mut entries: Vec<sys::DXGK_PTE> = (0..N as u64)
        .map(|i| {
            let mut p = sys::DXGK_PTE::default();
            p.set_Valid(1);
            p.set_ReadOnly(i & 1);
            p.u.PageAddress = 0x10_0000 + i;
            p
        })
        .collect();
    let mut dma = vec![0u8; 64 * 1024];
    let ctx = PagingContext { aperture: None };
    let ours = measure(samples, 2000, || {
        let mut a = sys::DXGKARG_BUILDPAGINGBUFFER {
            pDmaBuffer: dma.as_mut_ptr().cast(),
            DmaSize: dma.len() as u32,
            Operation: sys::DXGK_OPERATION_UPDATE_PAGE_TABLE,
            ..Default::default()
        };
        let mut u = sys::DXGK_BUILDPAGINGBUFFER_UPDATEPAGETABLE {
            pPageTableEntries: entries.as_mut_ptr(),
            NumPageTableEntries: N as u32,
            UpdateMode: sys::DXGK_PAGETABLEUPDATE_GPU_VIRTUAL,
            ..Default::default()
        };
        u.PageTableAddress.u.GpuVirtual = 0x7000_0000;
        a.u.UpdatePageTable = u;
        // SAFETY: the DMA buffer and the entries are valid for the call.
        let r = unsafe { ctx.build(black_box(&mut a)) };
        assert!(r.is_ok());
        black_box(&dma);
    });
    let src: Vec<u8> = vec![0x5A; N * 16];
    let mut dst = vec![0u8; N * 16];
    let baseline = measure(samples, 2000, || {
        dst.copy_from_slice(black_box(&src));
        black_box(&dst);
    });
    report("update_page_table (512 PTEs)", ours, baseline, N * 16, 1.0);
}

/// The same conversion over 64 MiB of DXGK_PTEs (8192 tables), where both it and memcpy are
/// bound by memory bandwidth rather than by the core.
fn update_page_table_bulk(samples: usize) {
    const TABLES: usize = 8192;
    const N: usize = 512;
    let mut entries: Vec<sys::DXGK_PTE> = (0..(TABLES * N) as u64)
        .map(|i| {
            let mut p = sys::DXGK_PTE::default();
            p.set_Valid(1);
            p.u.PageAddress = 0x10_0000 + i;
            p
        })
        .collect();
    let per_table = rgpu_hw::cmd::write_ptes_bytes(N);
    let mut dma = vec![0u8; TABLES * per_table];
    let ctx = PagingContext { aperture: None };
    let ours = measure(samples, 1, || {
        for t in 0..TABLES {
            let mut a = sys::DXGKARG_BUILDPAGINGBUFFER {
                pDmaBuffer: dma[t * per_table..].as_mut_ptr().cast(),
                DmaSize: per_table as u32,
                Operation: sys::DXGK_OPERATION_UPDATE_PAGE_TABLE,
                ..Default::default()
            };
            let mut u = sys::DXGK_BUILDPAGINGBUFFER_UPDATEPAGETABLE {
                pPageTableEntries: entries[t * N..].as_mut_ptr(),
                NumPageTableEntries: N as u32,
                UpdateMode: sys::DXGK_PAGETABLEUPDATE_GPU_VIRTUAL,
                ..Default::default()
            };
            u.PageTableAddress.u.GpuVirtual = 0x7000_0000 + (t as u64) * 4096;
            a.u.UpdatePageTable = u;
            // SAFETY: the DMA buffer slice and the entries are valid for the call.
            let r = unsafe { ctx.build(black_box(&mut a)) };
            assert!(r.is_ok());
        }
        black_box(&dma);
    });
    let src: Vec<u8> = vec![0x5A; TABLES * N * 16];
    let mut dst = vec![0u8; TABLES * N * 16];
    let baseline = measure(samples, 1, || {
        dst.copy_from_slice(black_box(&src));
        black_box(&dst);
    });
    report(
        "update_page_table (64 MiB of PTEs)",
        ours,
        baseline,
        TABLES * N * 16,
        1.0,
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let samples = if quick { 5 } else { 31 };
    let m = Machine::new(MachineConfig::windows_11_22h2());
    m.enter(|| {
        update_page_table(samples);
        update_page_table_bulk(samples.min(9));
    });
    m.assert_clean();
}
