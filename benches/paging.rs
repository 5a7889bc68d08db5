//! Paging benchmarks, each reported as a ratio against a baseline measured in the same run, in
//! alternating pairs (never asserted in a test: the machines are noisy). The printed ratio is
//! the median of the pairs' ratios, with their range. Next to each ratio: the instructions per
//! unit of work from a callgrind run of the same code (repeatable where the times are not; the
//! bench runs itself under `valgrind --tool=callgrind` for them, and CI guards them with
//! `tools/bench/insn-guard.sh`).
//!
//! * `update_page_table_bulk`: DxgkDdiBuildPagingBuffer(UPDATE_PAGE_TABLE, GPU_VIRTUAL) over 64
//!   MiB of DXGK_PTEs (8192 calls of 512 entries, one after another into one 32 MiB DMA buffer,
//!   as VidMm fills a paging buffer: `pDmaBuffer` advances, `DmaSize` is what is left) against
//!   `memcpy` of the same 64 MiB. Memory-bound. Per entry rgpu reads 16 bytes and writes 8;
//!   a memcpy this large moves 32 (glibc streams it: no read-for-ownership). A DMA buffer this
//!   large is written with non-temporal stores (`src/paging/simd.rs`), so rgpu pays no
//!   read-for-ownership either and its ceiling is 32/24 ≈ 1.33×. Target ≥ 1.2×.
//! * `update_page_table` (L1): one call of 512 entries with everything in L1, in a 64 KiB DMA
//!   buffer (rgpu's paging-buffer size: cached stores). Bound by the core: glibc's memcpy moves
//!   32–64 bytes per instruction here, the driver may use only SSE2 (AVX needs
//!   KeSaveExtendedProcessorState), so the time ratio stays far below 1 and is no target; the
//!   target is the instruction count: ≤ 6 instructions per entry for the whole DDI call
//!   (counted with the bench's own argument setup, as VidMm would make it).
//! * `callback_round_trips`: Dxgkrnl memory-callback calls per MiB paged (map, fill, transfer,
//!   unmap through VidMm and the real driver) in steady state after warm-up, counted by
//!   dxgk-sim. Target: 0 (rgpu's paging path never allocates or maps memory).
//! * `gpu_va_transfer`: a 64 MiB COPY between GPU virtual addresses executed by the rgpu device
//!   model through its MMU (page walks, TLB; 64 KiB pages) and the simulated IOMMU, submitted
//!   through the real driver (SubmitCommandVirtual, fence interrupt), against `memcpy` of the
//!   same bytes. Target ≥ 0.6×.
//! * the scaling table: UPDATE_PAGE_TABLE (driver only, the entries of a mapping of that size)
//!   and GPU-VA COPY (device, that many bytes) throughput for 1 MiB … 1 GiB, and the driver's
//!   nonpaged pool per mapped 4 KiB page while both sides of the copy are mapped (dxgk-sim's
//!   pool accounting). dxgk-sim's machine has 1 GiB of memory, so above 256 MiB each side is a
//!   256 MiB allocation mapped several times in a row (the copy still moves that many bytes).
//!   The COPY and its memcpy are timed with the caches evicted before each call (so that every
//!   size runs from memory: on a host whose last-level cache holds a 16 MiB copy's 32 MiB, the
//!   16 MiB row would otherwise run from cache and the larger ones could not), and back to
//!   back for information (see [`scaling`]). Goals: throughput flat within 20 % from 16 MiB to
//!   1 GiB (also against the same row's memcpy), ≤ 16 B of pool per mapped page.
//!
//! Run: `cargo bench --bench paging` (`-- --quick` for fewer samples, `-- gpu_va` to run only
//! the benchmarks whose name contains `gpu_va`, `-- --insn-only` for just the instruction
//! counts, `-- --no-insn` to skip them, `-- --no-scaling` to skip the table).
//!
//! Measured (this is the record; rerun and update it when the code or the machine changes):
//! see `docs/performance.md` for the figures, the CPUs they were taken on, and which hosts the
//! targets were checked on.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::hint::black_box;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use dxgk::paging::BuildPagingBuffer;
use dxgk_sim::devices::RgpuDevice;
use dxgk_sim::{AdapterConfig, Machine, MachineConfig, Vidmm};
use dxgk_sys as sys;
use rgpu::paging::{PagingContext, MAX_TABLE_ENTRIES};

/// Valgrind client requests (the protocol of `valgrind.h` / `callgrind.h`), so that the
/// instruction counts cover exactly the measured work. Outside Valgrind they do nothing.
mod valgrind {
    use std::ffi::CStr;

    const RUNNING_ON_VALGRIND: u64 = 0x1001;
    /// `VG_USERREQ_TOOL_BASE('C', 'T')`.
    const CALLGRIND: u64 = (b'C' as u64) << 24 | (b'T' as u64) << 16;
    const ZERO_STATS: u64 = CALLGRIND + 1;
    const DUMP_STATS_AT: u64 = CALLGRIND + 3;
    const START_INSTRUMENTATION: u64 = CALLGRIND + 4;

    #[cfg(target_arch = "x86_64")]
    fn request(default: u64, code: u64, arg: u64) -> u64 {
        let args: [u64; 6] = [code, arg, 0, 0, 0, 0];
        let mut result = default;
        // SAFETY: Valgrind's "special instruction": four rotations of rdi that add up to 128
        // bits (rdi keeps its value) and `xchg rbx, rbx` — a no-op on a CPU. Under Valgrind it
        // performs the request `args` describes (read through rax) and sets rdx.
        unsafe {
            std::arch::asm!(
                "rol rdi, 3", "rol rdi, 13", "rol rdi, 61", "rol rdi, 51",
                "xchg rbx, rbx",
                in("rax") args.as_ptr(),
                inout("rdx") result,
                out("rdi") _,
                options(nostack),
            );
        }
        result
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn request(default: u64, _code: u64, _arg: u64) -> u64 {
        default
    }

    pub fn running_on_valgrind() -> bool {
        request(0, RUNNING_ON_VALGRIND, 0) != 0
    }
    pub fn start_instrumentation() {
        request(0, START_INSTRUMENTATION, 0);
    }
    pub fn zero_stats() {
        request(0, ZERO_STATS, 0);
    }
    pub fn dump_stats_at(name: &CStr) {
        request(0, DUMP_STATS_AT, name.as_ptr() as u64);
    }
}

/// Ours against the baseline, sampled in alternating pairs (the order flips every pair) so
/// that both see the same machine: the noisy shared hosts drift by tens of percent over
/// seconds, which separate measurement phases turn into a bias.
struct Comparison {
    /// Median time per iteration.
    ours: Duration,
    /// Median time per iteration.
    baseline: Duration,
    /// baseline / ours of each pair, sorted.
    ratios: Vec<f64>,
}

impl Comparison {
    fn median_ratio(&self) -> f64 {
        self.ratios[self.ratios.len() / 2]
    }
}

/// Times `iters` iterations of `ours` and of `baseline` in `samples` alternating pairs, after
/// one warm-up round of each.
fn compare(
    samples: usize,
    iters: u32,
    mut ours: impl FnMut(),
    mut baseline: impl FnMut(),
) -> Comparison {
    let time = |f: &mut dyn FnMut()| {
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        t.elapsed() / iters
    };
    time(&mut ours);
    time(&mut baseline);
    let mut pairs: Vec<(Duration, Duration)> = (0..samples)
        .map(|i| {
            if i % 2 == 0 {
                let o = time(&mut ours);
                (o, time(&mut baseline))
            } else {
                let b = time(&mut baseline);
                (time(&mut ours), b)
            }
        })
        .collect();
    let mut ratios: Vec<f64> = pairs
        .iter()
        .map(|(o, b)| b.as_secs_f64() / o.as_secs_f64())
        .collect();
    ratios.sort_by(f64::total_cmp);
    pairs.sort_by_key(|p| p.0);
    let ours = pairs[samples / 2].0;
    pairs.sort_by_key(|p| p.1);
    let baseline = pairs[samples / 2].1;
    Comparison {
        ours,
        baseline,
        ratios,
    }
}

/// Instruction counts from the callgrind run: probe name → instructions per unit.
type Insns = BTreeMap<String, (f64, &'static str)>;

/// `" | 5.4 insn/entry"` for probe `name`, or a note that there is no count.
fn insn_note(insns: &Option<Insns>, name: &str) -> String {
    match insns.as_ref().and_then(|i| i.get(name)) {
        Some((v, unit)) => format!(" | {v:.2} insn/{unit} (callgrind, besides memcpy)"),
        None => " | insn: n/a".to_string(),
    }
}

/// What a comparison's line ends with.
enum Target<'a> {
    /// The time ratio's target.
    Ratio(f64),
    /// No time target; the verdict of the instruction count's target instead.
    Insn(&'a str),
}

/// Prints one comparison, ending in its verdict.
fn report(name: &str, c: &Comparison, bytes: usize, insn: &str, target: Target<'_>) {
    let ratio = c.median_ratio();
    let gbps = |d: Duration| bytes as f64 / d.as_secs_f64() / 1e9;
    let verdict = match target {
        Target::Ratio(t) if ratio >= t => format!("target >= {t:.1}x MET"),
        Target::Ratio(t) => format!("target >= {t:.1}x NOT MET"),
        Target::Insn(v) => format!("no time target; {v}"),
    };
    println!(
        "{name}: {:.1} ns/op ({:.2} GB/s) vs baseline {:.1} ns/op ({:.2} GB/s): ratio {:.2}x (pairs {:.2}..{:.2}, n={}){insn} | {verdict}",
        c.ours.as_nanos() as f64,
        gbps(c.ours),
        c.baseline.as_nanos() as f64,
        gbps(c.baseline),
        ratio,
        c.ratios[0],
        c.ratios[c.ratios.len() - 1],
        c.ratios.len(),
    );
}

/// One DxgkDdiBuildPagingBuffer(UPDATE_PAGE_TABLE, GPU_VIRTUAL) of all of `entries` into `dma`
/// (`DmaSize` = its length), for the leaf table at paging-process VA `table_va`. Returns the
/// bytes written (how far the driver advanced `pDmaBuffer`).
fn update_table(
    ctx: &PagingContext<'_>,
    dma: &mut [u8],
    entries: &mut [sys::DXGK_PTE],
    table_va: u64,
) -> usize {
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
    u.PageTableAddress.u.GpuVirtual = table_va;
    a.u.UpdatePageTable = u;
    // SAFETY: the DMA buffer and the entries are valid for the call.
    let req = unsafe { BuildPagingBuffer::from_raw(black_box(&mut a), MAX_TABLE_ENTRIES) };
    let r = ctx.build(req.expect("well-formed arguments"));
    assert!(r.is_ok());
    a.pDmaBuffer as usize - dma.as_ptr() as usize
}

const NO_AUX: PagingContext<'static> = PagingContext {
    views: None,
    aperture: None,
    asid_of: None,
};

/// System-memory leaf entries for `n` pages (every other one read-only).
fn leaf_entries(n: usize) -> Vec<sys::DXGK_PTE> {
    (0..n as u64)
        .map(|i| {
            let mut p = sys::DXGK_PTE::default();
            p.set_Valid(1);
            p.set_ReadOnly(i & 1);
            p.u.PageAddress = 0x10_0000 + i;
            p
        })
        .collect()
}

/// The L1 case: one update of one 512-entry table into a 64 KiB DMA buffer.
struct L1Update {
    entries: Vec<sys::DXGK_PTE>,
    dma: Vec<u8>,
}

impl L1Update {
    const N: usize = 512;
    fn new() -> Self {
        L1Update {
            entries: leaf_entries(Self::N),
            dma: vec![0u8; rgpu::caps::PAGING_BUFFER_SIZE as usize],
        }
    }
    fn run(&mut self) {
        update_table(&NO_AUX, &mut self.dma, &mut self.entries, 0x7000_0000);
        black_box(&self.dma);
    }
}

/// `entries` updated table by table (512 entries each) into one DMA buffer that they fill one
/// after another, as VidMm fills a paging buffer. The buffer has [`STREAMING_SLACK`] bytes
/// more than the commands need, so every call sees a DMA buffer larger than the cache.
struct BulkUpdate {
    entries: Vec<sys::DXGK_PTE>,
    dma: Vec<u8>,
}

/// Spare DMA-buffer bytes of a [`BulkUpdate`]: every call's `DmaSize` is at least this.
const STREAMING_SLACK: usize = 1 << 20;

impl BulkUpdate {
    fn new(entries: usize) -> Self {
        let tables = entries.div_ceil(512);
        let per_table = rgpu_hw::cmd::write_ptes_bytes(512);
        BulkUpdate {
            entries: leaf_entries(entries),
            // + 4 per table: the NOP that aligns a streamed payload (src/paging/ops.rs).
            dma: vec![0u8; tables * (per_table + 4) + STREAMING_SLACK],
        }
    }
    fn run(&mut self) {
        let mut pos = 0;
        for (t, entries) in self.entries.chunks_mut(512).enumerate() {
            let dma = &mut self.dma[pos..];
            pos += update_table(&NO_AUX, dma, entries, 0x7000_0000 + (t as u64) * 4096);
        }
        black_box(&self.dma);
    }
}

fn update_page_table(samples: usize, insns: &Option<Insns>) {
    let mut l1 = L1Update::new();
    let src: Vec<u8> = vec![0x5A; L1Update::N * 16];
    let mut dst = vec![0u8; L1Update::N * 16];
    let c = compare(
        samples,
        2000,
        || l1.run(),
        || {
            dst.copy_from_slice(black_box(&src));
            black_box(&dst);
        },
    );
    let note = insn_note(insns, "update_page_table_l1");
    let verdict = match insns.as_ref().and_then(|i| i.get("update_page_table_l1")) {
        Some((v, _)) if *v <= 6.0 => "insn target <= 6/entry MET",
        Some(_) => "insn target <= 6/entry NOT MET",
        None => "insn target <= 6/entry not measured (no callgrind run) NOT MET",
    };
    report(
        "update_page_table (512 PTEs, in L1)",
        &c,
        L1Update::N * 16,
        &note,
        Target::Insn(verdict),
    );
}

/// 64 MiB of DXGK_PTEs, where both the conversion and memcpy are bound by memory bandwidth.
fn update_page_table_bulk(samples: usize, insns: &Option<Insns>) {
    const ENTRIES: usize = 8192 * 512;
    let mut bulk = BulkUpdate::new(ENTRIES);
    let src: Vec<u8> = vec![0x5A; ENTRIES * 16];
    let mut dst = vec![0u8; ENTRIES * 16];
    let c = compare(
        samples,
        1,
        || bulk.run(),
        || {
            dst.copy_from_slice(black_box(&src));
            black_box(&dst);
        },
    );
    report(
        "update_page_table_bulk (64 MiB of PTEs, memory-bound)",
        &c,
        ENTRIES * 16,
        &insn_note(insns, "update_page_table_bulk"),
        Target::Ratio(1.2),
    );
}

const MEMORY_CALLBACKS: [&str; 6] = [
    "DxgkCbAllocatePagesForMdl",
    "DxgkCbFreePagesFromMdl",
    "DxgkCbMapMdlToIoMmu",
    "DxgkCbUnmapMdlFromIoMmu",
    "DxgkCbAllocateContiguousMemory",
    "DxgkCbFreeContiguousMemory",
];

fn boot() -> (Machine, dxgk_sim::AdapterId) {
    let m = Machine::new(MachineConfig::windows_11_22h2());
    assert_eq!(m.load_driver(rgpu::ddi::DriverEntry), sys::STATUS_SUCCESS);
    let id = m.add_adapter(AdapterConfig {
        device: Some(Box::new(RgpuDevice::new())),
    });
    assert_eq!(m.start_adapter(id), sys::STATUS_SUCCESS);
    (m, id)
}

fn shutdown(m: Machine, id: dxgk_sim::AdapterId, v: Vidmm) {
    v.destroy().unwrap();
    m.stop_adapter(id);
    m.remove_adapter(id);
    m.unload_driver();
    m.assert_clean();
}

fn callback_round_trips() {
    let (m, id) = boot();
    let mut v = Vidmm::new(&m, id).expect("vidmm");
    let p = v.create_process().unwrap();
    const MIB: u64 = 1 << 20;
    let round = |v: &mut Vidmm| {
        let a = v.allocate(8 * MIB).unwrap();
        let b = v.allocate(8 * MIB).unwrap();
        v.map(p, a, 0x10_0000_0000).unwrap();
        v.map(p, b, 0x20_0000_0000).unwrap();
        v.fill(a, 0, 8 * MIB, 0x1234_5678).unwrap();
        v.transfer(a, b, 8 * MIB).unwrap();
        v.unmap(p, a, 0x10_0000_0000).unwrap();
        v.unmap(p, b, 0x20_0000_0000).unwrap();
        v.free(a).unwrap();
        v.free(b).unwrap();
    };
    round(&mut v); // warm-up
    let count = |m: &Machine| {
        MEMORY_CALLBACKS
            .iter()
            .map(|c| m.callback_calls(c))
            .sum::<u64>()
    };
    let before = count(&m);
    let rounds = 8;
    for _ in 0..rounds {
        round(&mut v);
    }
    let calls = count(&m) - before;
    let mib = rounds as f64 * 16.0; // 8 MiB filled + 8 MiB transferred per round
    println!(
        "callback_round_trips: {calls} memory-callback calls for {mib} MiB paged in steady state = {:.3} per MiB (target 0) {}",
        calls as f64 / mib,
        if calls == 0 { "MET" } else { "NOT MET" }
    );
    shutdown(m, id, v);
}

/// A machine with two mapped allocations of `size` bytes (A filled with a pattern) and a
/// command buffer holding one COPY of `size` bytes from A to B by GPU VA.
struct GpuCopy {
    m: Machine,
    id: dxgk_sim::AdapterId,
    v: Vidmm,
    p: dxgk_sim::vidmm::ProcessId,
    b: dxgk_sim::vidmm::AllocId,
    cmd_len: u32,
    /// Bytes of one side's allocation (≤ the copy's size).
    backing: u64,
    /// Bytes of the driver's live pool blocks with both allocations mapped.
    pool_bytes: usize,
}

const A_VA: u64 = 0x10_0000_0000;
const B_VA: u64 = 0x20_0000_0000;
const CMD_VA: u64 = 0x30_0000_0000;
const PATTERN: u32 = 0xA5A5_5A5A;

/// Most memory one side of a [`GpuCopy`] allocates: dxgk-sim's machine has 1 GiB
/// (`PHYSICAL_MEMORY_LIMIT`), so a larger copy maps the same allocation several times in a row.
const COPY_BACKING_MAX: u64 = 256 << 20;

impl GpuCopy {
    fn new(size: u64) -> Self {
        let (m, id) = boot();
        let mut v = Vidmm::new(&m, id).expect("vidmm");
        let p = v.create_process().unwrap();
        let backing = size.min(COPY_BACKING_MAX);
        let a = v.allocate(backing).unwrap();
        let b = v.allocate(backing).unwrap();
        let cmd = v.allocate(4096).unwrap();
        for k in 0..size / backing {
            v.map(p, a, A_VA + k * backing).unwrap();
            v.map(p, b, B_VA + k * backing).unwrap();
        }
        v.map(p, cmd, CMD_VA).unwrap();
        let pool_bytes = m.pool_in_use().iter().map(|b| b.1).sum();
        v.fill(a, 0, backing, PATTERN).unwrap();
        // One COPY through the process's page tables (device MMU + TLB) and the IOMMU,
        // submitted on the process's own context: the device's transfer, not VidMm's
        // bookkeeping.
        let mut buf = vec![0u8; 64];
        let mut enc = rgpu_hw::cmd::Encoder::new(&mut buf);
        enc.copy(
            rgpu_hw::cmd::Target::Virtual(B_VA),
            rgpu_hw::cmd::Target::Virtual(A_VA),
            size,
        )
        .unwrap();
        let cmds = enc.written().to_vec();
        v.write(cmd, 0, &cmds).unwrap();
        GpuCopy {
            m,
            id,
            v,
            p,
            b,
            cmd_len: cmds.len() as u32,
            backing,
            pool_bytes,
        }
    }
    fn run(&mut self) {
        self.v.submit_user(self.p, CMD_VA, self.cmd_len).unwrap();
    }
    /// Checks the copy's last page and tears the machine down.
    fn finish(self) {
        let got = self.v.read(self.b, self.backing - 4096, 4096).unwrap();
        assert!(
            got.chunks_exact(4).all(|c| c == PATTERN.to_le_bytes()),
            "transfer result"
        );
        shutdown(self.m, self.id, self.v);
    }
}

fn gpu_va_transfer(samples: usize, insns: &Option<Insns>) {
    const SIZE: u64 = 64 << 20;
    let mut g = GpuCopy::new(SIZE);
    let src = vec![0xA5u8; SIZE as usize];
    let mut dst = vec![0u8; SIZE as usize];
    let c = compare(
        samples,
        1,
        || g.run(),
        || {
            dst.copy_from_slice(black_box(&src));
            black_box(&dst);
        },
    );
    report(
        "gpu_va_transfer (64 MiB COPY via device MMU + IOMMU)",
        &c,
        SIZE as usize,
        &insn_note(insns, "gpu_va_transfer"),
        Target::Ratio(0.6),
    );
    g.finish();
}

/// Median seconds per call of `f` over `samples` samples of at least ~`min_s` each.
fn seconds_per_call(samples: usize, min_s: f64, mut f: impl FnMut()) -> f64 {
    f(); // warm-up
    let t = Instant::now();
    f();
    let once = t.elapsed().as_secs_f64().max(1e-9);
    let iters = ((min_s / once).ceil() as u32).max(1);
    let mut v: Vec<f64> = (0..samples)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            t.elapsed().as_secs_f64() / iters as f64
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The last-level cache's size from sysfs (the largest cache of CPU 0), if Linux says.
fn llc_bytes() -> Option<usize> {
    (0..8)
        .filter_map(|i| {
            let size = std::fs::read_to_string(format!(
                "/sys/devices/system/cpu/cpu0/cache/index{i}/size"
            ))
            .ok()?;
            let size = size.trim();
            let (n, unit) = size.split_at(size.find(|c: char| !c.is_ascii_digit())?);
            let n: usize = n.parse().ok()?;
            Some(match unit {
                "K" => n << 10,
                "M" => n << 20,
                _ => n,
            })
        })
        .max()
}

/// Puts the caches in the state a long copy is in after its first cache-full of bytes:
/// writing one word per 64-byte line of a buffer twice the last-level cache (at least 64
/// MiB), with ordinary stores, leaves every level full of the buffer's own dirty lines — so
/// nothing a timed copy then touches is cached, and each line it brings in evicts a dirty
/// one, as in the middle of a 256 MiB copy.
struct Evict(Vec<u64>);

impl Evict {
    fn new() -> Self {
        let bytes = (2 * llc_bytes().unwrap_or(32 << 20)).max(64 << 20);
        Evict(vec![1; bytes / 8])
    }
    fn bytes(&self) -> usize {
        self.0.len() * 8
    }
    fn run(&mut self) {
        for line in self.0.chunks_exact_mut(8) {
            line[0] = line[0].wrapping_add(1);
        }
        black_box(&mut self.0);
    }
}

/// `ours` against `baseline` cold: `pairs` alternating pairs of single calls (the order flips
/// every pair), each call timed alone right after `evict` (untimed), after one untimed call of
/// each (first touch of fresh memory). Returns the median seconds of each and the median of
/// the pairs' baseline/ours ratios.
fn cold_pairs(
    pairs: usize,
    evict: &mut Evict,
    mut ours: impl FnMut(),
    mut baseline: impl FnMut(),
) -> (f64, f64, f64) {
    ours();
    baseline();
    let mut time = |f: &mut dyn FnMut()| {
        evict.run();
        let t = Instant::now();
        f();
        t.elapsed().as_secs_f64()
    };
    let mut o = Vec::new();
    let mut b = Vec::new();
    let mut r = Vec::new();
    for i in 0..pairs {
        let (ot, bt) = if i % 2 == 0 {
            let ot = time(&mut ours);
            (ot, time(&mut baseline))
        } else {
            let bt = time(&mut baseline);
            (time(&mut ours), bt)
        };
        o.push(ot);
        b.push(bt);
        r.push(bt / ot);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (median(o), median(b), median(r))
}

/// Slowest / fastest of `r` from the 16 MiB row up, and whether it is within 20 %.
fn flatness(r: &[f64]) -> (f64, bool) {
    let r = &r[1..];
    let (lo, hi) = r
        .iter()
        .fold((f64::MAX, 0f64), |(l, h), &x| (l.min(x), h.max(x)));
    (lo / hi, lo >= 0.8 * hi)
}

/// How throughput and the driver's pool grow with the size mapped / copied.
///
/// The COPY and its memcpy baseline are timed in two states. **Cold** (the goal's figures):
/// each timed call starts with the caches full of other dirty lines ([`Evict`]), so every
/// size runs from memory, the state a 256 MiB or 1 GiB copy is in anyway. **Warm** (for
/// information): calls back to back, as before — a 16 MiB copy's 32 MiB of source and
/// destination then sits largely in a 32 MiB L3 and runs from cache, which the larger sizes
/// cannot, so the warm rows mix two memory states and say little about how rgpu's cost grows.
/// UPDATE_PAGE_TABLE is timed warm: its working set (16 B of entries read, 8 written per 4 KiB
/// mapped: 6 MiB at 1 GiB) fits in the cache at every size, so its rows share one state.
fn scaling(samples: usize) {
    const MIB: u64 = 1 << 20;
    let sizes = [MIB, 16 * MIB, 256 * MIB, 1024 * MIB];
    let mut evict = Evict::new();
    let cold_pairs_n = 3 * samples;
    println!(
        "scaling (GB = 1e9 bytes; UPDATE and warm: median of {samples} samples; cold: medians of {cold_pairs_n} alternating COPY/memcpy pairs of single calls, each after writing {} MiB to evict the caches, {} MiB LLC):",
        evict.bytes() >> 20,
        llc_bytes().map_or("unknown".to_string(), |b| (b >> 20).to_string()),
    );
    println!(
        "  {:>8} | {:>12} {:>8} | {:>9} {:>11} {:>8} | {:>9} {:>11} | {:>16}",
        "size",
        "UPDATE Mpte/s",
        "ns/pte",
        "COPY cold",
        "memcpy cold",
        "ratio",
        "COPY warm",
        "memcpy warm",
        "pool B/4KiB page"
    );
    let mut update_rates = Vec::new();
    let mut copy_cold = Vec::new();
    let mut copy_vs_memcpy_cold = Vec::new();
    let mut copy_warm = Vec::new();
    let mut copy_vs_memcpy_warm = Vec::new();
    let mut pool_per_page = Vec::new();
    for size in sizes {
        // UPDATE_PAGE_TABLE: the entries that map `size` bytes of 4 KiB pages.
        let entries = (size / 4096) as usize;
        let mut bulk = BulkUpdate::new(entries);
        let update_s = seconds_per_call(samples, 0.05, || bulk.run());
        drop(bulk);
        let mpte = entries as f64 / update_s / 1e6;
        // GPU-VA COPY of `size` bytes, and the pool while two such allocations are mapped.
        let mut g = GpuCopy::new(size);
        let src = vec![0xA5u8; size as usize];
        let mut dst = vec![0u8; size as usize];
        let mut memcpy = || {
            dst.copy_from_slice(black_box(&src));
            black_box(&dst);
        };
        let (copy_cold_s, memcpy_cold_s, cold_ratio) =
            cold_pairs(cold_pairs_n, &mut evict, || g.run(), &mut memcpy);
        let copy_warm_s = seconds_per_call(samples, 0.05, || g.run());
        let memcpy_warm_s = seconds_per_call(samples, 0.05, &mut memcpy);
        drop((src, dst));
        let pages = 2 * size / 4096 + 1;
        let per_page = g.pool_bytes as f64 / pages as f64;
        g.finish();
        let gbps = |s: f64| size as f64 / s / 1e9;
        println!(
            "  {:>5} MiB | {:>12.0} {:>8.2} | {:>9.2} {:>11.2} {:>8.2} | {:>9.2} {:>11.2} | {:>16.2}",
            size / MIB,
            mpte,
            update_s * 1e9 / entries as f64,
            gbps(copy_cold_s),
            gbps(memcpy_cold_s),
            cold_ratio,
            gbps(copy_warm_s),
            gbps(memcpy_warm_s),
            per_page,
        );
        update_rates.push(mpte);
        copy_cold.push(gbps(copy_cold_s));
        copy_vs_memcpy_cold.push(cold_ratio);
        copy_warm.push(gbps(copy_warm_s));
        copy_vs_memcpy_warm.push(memcpy_warm_s / copy_warm_s);
        pool_per_page.push(per_page);
    }
    // Flatness from 16 MiB up: the slowest within 20 % of the fastest.
    let verdict = |ok: bool| if ok { "MET" } else { "NOT MET" };
    let (u, u_ok) = flatness(&update_rates);
    let (c, c_ok) = flatness(&copy_cold);
    println!(
        "  16 MiB..1 GiB: UPDATE slowest/fastest {u:.2}, COPY (cold) {c:.2} (goal >= 0.80) {}",
        verdict(u_ok && c_ok)
    );
    let (r, r_ok) = flatness(&copy_vs_memcpy_cold);
    println!(
        "  16 MiB..1 GiB: COPY/memcpy (cold) slowest/fastest {r:.2} (the same goal against the same-size memcpy) {}",
        verdict(r_ok)
    );
    let (cw, _) = flatness(&copy_warm);
    let (rw, _) = flatness(&copy_vs_memcpy_warm);
    println!(
        "  16 MiB..1 GiB warm, for information (a 16 MiB copy may run from the LLC): COPY slowest/fastest {cw:.2}, COPY/memcpy {rw:.2}"
    );
    let worst = pool_per_page[1..].iter().copied().fold(0f64, f64::max);
    println!(
        "  driver pool per mapped 4 KiB page from 16 MiB up: at most {worst:.2} B (goal <= 16 B) {}",
        verdict(worst <= 16.0)
    );
}

/// An instruction-count probe: name, units of work, unit, the work.
type Probe = (&'static str, u64, &'static str, Box<dyn FnMut()>);

/// The instruction-count probes: each runs its work once to warm up, then once counted.
fn probes() -> Vec<Probe> {
    const L1_CALLS: u64 = 64;
    const BULK_ENTRIES: usize = 256 * 512;
    const COPY: u64 = 4 << 20;
    let mut l1 = L1Update::new();
    let mut bulk = BulkUpdate::new(BULK_ENTRIES);
    let mut copy = Some(GpuCopy::new(COPY));
    vec![
        (
            "update_page_table_l1",
            L1_CALLS * L1Update::N as u64,
            "entry",
            Box::new(move || {
                for _ in 0..L1_CALLS {
                    l1.run();
                }
            }),
        ),
        (
            "update_page_table_bulk",
            BULK_ENTRIES as u64,
            "entry",
            Box::new(move || bulk.run()),
        ),
        (
            "gpu_va_transfer",
            COPY / 1024,
            "KiB",
            Box::new(move || {
                if let Some(c) = copy.as_mut() {
                    c.run();
                }
            }),
        ),
    ]
}

/// `--insn-probe` (run under callgrind by [`instruction_counts`]): each probe's counted run
/// is dumped as `rgpu-probe <name> <units> <unit>`.
fn run_probes() {
    valgrind::start_instrumentation();
    let m = Machine::new(MachineConfig::windows_11_22h2());
    // The driver-only probes need a current machine (pool, logging); the COPY brings its own.
    for (name, units, unit, mut work) in probes() {
        let mut run = || m.enter(&mut work);
        let tag = CString::new(format!("rgpu-probe {name} {units} {unit}")).unwrap();
        run(); // warm-up: first-touch page faults, lazily built state
        valgrind::zero_stats();
        run();
        valgrind::dump_stats_at(&tag);
    }
}

/// Runs this benchmark under `valgrind --tool=callgrind` with `--insn-probe` and reads the
/// probes' dumps. None (with the reason printed) when valgrind is not available.
fn instruction_counts() -> Option<Insns> {
    let exe = std::env::current_exe().ok()?;
    let dir = std::env::temp_dir().join(format!("rgpu-insn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    let out = dir.join("cg.out");
    let status = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg("--instr-atstart=no")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg("-q")
        .arg(&exe)
        .arg("--insn-probe")
        .status();
    let counts = match status {
        Ok(s) if s.success() => parse_dumps(&dir),
        Ok(s) => {
            println!("instruction counts: callgrind run failed ({s})");
            None
        }
        Err(e) => {
            println!("instruction counts: n/a (valgrind: {e}; apt-get install valgrind)");
            None
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    counts
}

/// The `rgpu-probe` dumps in `dir`: their instructions per unit, not counting the self cost
/// of libc's `memcpy`/`memmove` (which implementation runs depends on the CPU valgrind
/// presents, and its count on how valgrind counts `rep movsb`: the data move is the baseline's
/// work too, the instructions around it are the model's).
fn parse_dumps(dir: &Path) -> Option<Insns> {
    let mut insns = Insns::new();
    for f in std::fs::read_dir(dir).ok()?.flatten() {
        let text = std::fs::read_to_string(f.path()).unwrap_or_default();
        let probe = text
            .lines()
            .find_map(|l| l.split_once("Client Request: rgpu-probe ").map(|p| p.1));
        let total = text.lines().find_map(|l| {
            l.strip_prefix("summary: ")
                .or_else(|| l.strip_prefix("totals: "))
                .and_then(|v| v.trim().parse::<u64>().ok())
        });
        let (Some(probe), Some(total)) = (probe, total) else {
            continue;
        };
        let mut it = probe.split_whitespace();
        let (Some(name), Some(units), Some(unit)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        let units: f64 = units.parse().ok()?;
        let unit: &'static str = match unit {
            "entry" => "entry",
            _ => "KiB",
        };
        let memcpy = memcpy_self_cost(&text);
        insns.insert(
            name.to_string(),
            ((total.saturating_sub(memcpy)) as f64 / units, unit),
        );
    }
    Some(insns)
}

/// Self cost of the functions named `*memcpy*` / `*memmove*` in a callgrind dump (format:
/// `fn=(id) name` starts a function, `<position> <cost>` lines are its self cost, except the
/// line after `calls=`, which is a call's inclusive cost).
fn memcpy_self_cost(text: &str) -> u64 {
    let mut names: BTreeMap<String, bool> = BTreeMap::new();
    let mut in_memcpy = false;
    let mut after_calls = false;
    let mut cost = 0;
    for l in text.lines() {
        if let Some(f) = l.strip_prefix("fn=") {
            let (id, name) = match f.split_once(' ') {
                Some((id, name)) => (id.to_string(), Some(name)),
                None => (f.to_string(), None),
            };
            let is = match name {
                Some(n) => {
                    let is = n.contains("memcpy") || n.contains("memmove");
                    names.insert(id, is);
                    is
                }
                None => names.get(&id).copied().unwrap_or(false),
            };
            in_memcpy = is;
            after_calls = false;
        } else if l.starts_with("calls=") {
            after_calls = true;
        } else if l.starts_with(|c: char| c.is_ascii_digit() || c == '+' || c == '-' || c == '*') {
            if !after_calls && in_memcpy {
                cost += l
                    .split_whitespace()
                    .nth(1)
                    .and_then(|c| c.parse::<u64>().ok())
                    .unwrap_or(0);
            }
            after_calls = false;
        }
    }
    cost
}

fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown".to_string());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{model} ({cpus} CPUs available)")
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |f: &str| args.iter().any(|a| a == f);
    if flag("--insn-probe") {
        if !valgrind::running_on_valgrind() {
            eprintln!("--insn-probe is for callgrind (the bench starts it itself)");
        }
        run_probes();
        return;
    }
    println!("CPU: {}", cpu_model());
    let insns = if flag("--no-insn") {
        None
    } else {
        instruction_counts()
    };
    if flag("--insn-only") {
        // The CI guard's input (tools/bench/insn-guard.sh): one `insn <name> <value>` a line.
        for (name, (v, unit)) in insns.iter().flatten() {
            println!("insn {name} {v:.3} per {unit}");
        }
        return;
    }
    let quick = flag("--quick");
    // Other non-flag arguments select benchmarks by substring (`-- gpu_va`); none runs all.
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let wanted =
        |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()));
    let samples = if quick { 5 } else { 31 };
    let m = Machine::new(MachineConfig::windows_11_22h2());
    m.enter(|| {
        if wanted("update_page_table") {
            update_page_table(samples, &insns);
        }
        if wanted("update_page_table_bulk") {
            update_page_table_bulk(samples.min(21), &insns);
        }
    });
    m.assert_clean();
    if wanted("callback_round_trips") {
        callback_round_trips();
    }
    if wanted("gpu_va_transfer") {
        gpu_va_transfer(samples.min(9), &insns);
    }
    if wanted("scaling") && !flag("--no-scaling") {
        m.enter(|| scaling(if quick { 3 } else { 5 }));
    }
}
