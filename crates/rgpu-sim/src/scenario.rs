//! The default scenario: load rgpu, add and start an adapter with the rgpu device model, three
//! client processes (D3DKMT front end: adapter, device) each allocating through
//! D3DKMTCreateAllocation2 → DxgkDdiCreateAllocation (rgpu-abi private data) and mapping a
//! range of sizes (every other destination asks for the aperture segment, so VidMm maps it with
//! MAP_APERTURE_SEGMENT2 — MAP_APERTURE_SEGMENT without DMA remapping — and its PTEs name
//! aperture pages), fills, VidMm transfers and a copy on
//! the process's own context, every byte read back and compared with a host model, unmap and
//! evict, process and VidMm teardown, stop, remove, unload. Every step is recorded; the first
//! failing step ends the workload and the teardown that applies still runs (as Windows would
//! unwind), so that an injected failure shows how the driver copes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use dxgk_sim::devices::RgpuDevice;
use dxgk_sim::fault::InjectedFailure;
use dxgk_sim::kmt::{self, ClientId, CreateAllocation2, CreateDevice, D3dkmtHandle, Kmt};
use dxgk_sim::{
    AdapterConfig, AdapterId, AdapterInfo, AllocId, Finding, Machine, MachineConfig, PnpState,
    ProcessId, TraceEvent, Vidmm, VidmmConfig, VidmmError, VidmmStats,
};
use dxgk_sys as sys;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rgpu_hw::cmd::{Encoder, Target};

use crate::{Device, Size};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// Process VA of each process's command buffer.
const CMD_VA: u64 = 0x10_0000;
/// Destination allocations sit this far above their source.
const DST_OFFSET: u64 = 0x100_0000_0000;
/// Paging buffer size: small enough that large mappings need multipass.
const DMA_BUFFER_SIZE: u32 = 8 * 1024;

/// (size, process VA of the source): one page, an odd size across a 1 GiB boundary, one across
/// a leaf table and a 512 GiB root entry, then bigger ones.
fn sizes(size: Size) -> Vec<(u64, u64)> {
    let mut v = vec![
        (4 * KIB, 0x20_0000),
        (68 * KIB, 0x3FFF_0000),
        (2 * MIB + 12 * KIB, 0x7F_FFF0_0000),
    ];
    if size != Size::Small {
        v.push((16 * MIB, 0x2_0000_0000));
    }
    v
}

/// Whether workload `ci` of process `pi` puts its destination in the aperture segment.
fn aperture_dst(pi: usize, ci: usize) -> bool {
    (pi + ci) % 2 == 1
}

/// The 256 MiB allocation of `--size large` (first process only).
const LARGE: (u64, u64) = (256 * MIB, 0x40_0000_0000);

/// The expected contents of an allocation: ranges painted with 32-bit patterns (LE dwords
/// aligned to the allocation), zero elsewhere.
#[derive(Clone, Debug, Default)]
struct Paint {
    /// start → (end, pattern); non-overlapping.
    runs: BTreeMap<u64, (u64, u32)>,
}

impl Paint {
    fn paint(&mut self, start: u64, end: u64, pattern: u32) {
        if start >= end {
            return;
        }
        let overlapping: Vec<(u64, (u64, u32))> = self
            .runs
            .range(..end)
            .filter(|(_, (e, _))| *e > start)
            .map(|(s, x)| (*s, *x))
            .collect();
        for (s, (e, p)) in overlapping {
            self.runs.remove(&s);
            if s < start {
                self.runs.insert(s, (start, p));
            }
            if e > end {
                self.runs.insert(end, (e, p));
            }
        }
        self.runs.insert(start, (end, pattern));
    }

    /// Copies `[src_off, src_off + len)` of `src` to `dst_off` (offsets ≡ mod 4, so patterns keep
    /// their alignment).
    fn copy_from(&mut self, src: &Paint, src_off: u64, dst_off: u64, len: u64) {
        self.paint(dst_off, dst_off + len, 0);
        for (&s, &(e, p)) in src.runs.range(..src_off + len) {
            let (s, e) = (s.max(src_off), e.min(src_off + len));
            if s < e {
                self.paint(s - src_off + dst_off, e - src_off + dst_off, p);
            }
        }
    }

    /// The expected bytes of `[off, off + buf.len())`.
    fn fill(&self, off: u64, buf: &mut [u8]) {
        buf.fill(0);
        let end = off + buf.len() as u64;
        let first = self.runs.range(..=off).next_back().map_or(off, |(s, _)| *s);
        for (&s, &(e, p)) in self.runs.range(first..end) {
            let (a, b) = (s.max(off), e.min(end));
            // Bytes in pattern order starting at offset `a`.
            let rotated = p.rotate_right(8 * (a % 4) as u32).to_le_bytes();
            for chunk in buf[(a - off) as usize..(b - off) as usize].chunks_mut(4) {
                chunk.copy_from_slice(&rotated[..chunk.len()]);
            }
        }
    }
}

/// One allocation of the scenario.
#[derive(Debug)]
struct Alloc {
    id: AllocId,
    bytes: u64,
    expected: Paint,
    /// Where it is mapped (process, VA).
    mapped: Vec<(ProcessId, u64)>,
    evicted: bool,
}

/// One scenario step and how it went.
#[derive(Clone, Debug)]
pub struct StepRecord {
    pub name: String,
    pub phase: &'static str,
    pub duration: Duration,
    pub error: Option<String>,
}

/// Everything the report and the trace need.
pub struct Outcome {
    pub config: MachineConfig,
    /// The device the scenario ran on.
    pub device_kind: Device,
    pub size: Size,
    pub fail_nth: Option<u64>,
    pub steps: Vec<StepRecord>,
    /// The first step that failed (name, error).
    pub failed: Option<(String, String)>,
    pub offered_versions: Vec<u32>,
    pub info: Option<AdapterInfo>,
    pub final_state: Option<PnpState>,
    pub processes: usize,
    pub allocations: usize,
    pub allocated_bytes: u64,
    pub verified_bytes: u64,
    pub mismatches: Vec<String>,
    pub vidmm: Option<VidmmStats>,
    pub device: Vec<(&'static str, u64)>,
    pub calls: Vec<(&'static str, u64)>,
    pub iommu_maps_peak: usize,
    pub iommu_maps_end: usize,
    pub iommu_pages_peak: usize,
    pub iommu_pages_end: usize,
    pub injection_points: u64,
    pub injected: Vec<InjectedFailure>,
    pub findings: Vec<Finding>,
    pub events: Vec<TraceEvent>,
    pub total: Duration,
}

struct Run {
    m: Machine,
    id: Option<AdapterId>,
    /// The D3DKMT front end (and VidMm under it).
    k: Option<Kmt>,
    /// Per process: the client and its device.
    clients: Vec<(ClientId, D3dkmtHandle)>,
    procs: Vec<ProcessId>,
    cmds: Vec<AllocId>,
    allocs: Vec<Alloc>,
    steps: Vec<StepRecord>,
    failed: Option<(String, String)>,
    bar: ProgressBar,
    verified: u64,
    mismatches: Vec<String>,
    vidmm_stats: Option<VidmmStats>,
    iommu_pages_peak: usize,
    iommu_pages_end: usize,
}

type StepResult = Result<(), String>;

fn vidmm_err(e: VidmmError) -> String {
    match e {
        VidmmError::Ddi { ddi, status } => format!("{ddi} returned {:#010x}", status as u32),
        other => format!("{other:?}"),
    }
}

fn kmt_err(s: i32) -> String {
    format!("D3DKMT call returned {:#010x}", s as u32)
}

fn status_err(what: &str, s: i32) -> StepResult {
    if s == sys::STATUS_SUCCESS {
        Ok(())
    } else {
        Err(format!("{what} returned {:#010x}", s as u32))
    }
}

impl Run {
    /// Runs one step unless an earlier one failed (`always`: teardown steps run regardless).
    fn step(
        &mut self,
        phase: &'static str,
        name: impl Into<String>,
        always: bool,
        f: impl FnOnce(&mut Run) -> StepResult,
    ) {
        let name = name.into();
        self.bar.set_message(name.clone());
        if self.failed.is_some() && !always {
            self.bar.inc(1);
            return;
        }
        let t = Instant::now();
        let r = f(self);
        let duration = t.elapsed();
        if let Err(e) = &r {
            if self.failed.is_none() {
                self.failed = Some((name.clone(), e.clone()));
            }
        }
        self.steps.push(StepRecord {
            name,
            phase,
            duration,
            error: r.err(),
        });
        self.bar.inc(1);
    }

    fn kmt(&mut self) -> Result<&mut Kmt, String> {
        self.k.as_mut().ok_or_else(|| "no VidMm".to_string())
    }

    /// D3DKMTCreateAllocation2 of one allocation for process `pi`: DxgkDdiCreateAllocation
    /// decides its placement; returns VidMm's id of it.
    fn allocate(&mut self, pi: usize, data: rgpu_abi::AllocationData) -> Result<AllocId, String> {
        let (c, device) = self.clients[pi];
        let k = self.kmt()?;
        let mut args = CreateAllocation2 {
            h_device: device,
            allocations: vec![kmt::AllocationInfo2 {
                private_driver_data: data.encode().to_vec(),
                h_allocation: 0,
            }],
            ..Default::default()
        };
        k.create_allocation2(c, &mut args).map_err(kmt_err)?;
        k.vidmm_allocation(c, device, args.allocations[0].h_allocation)
            .map_err(kmt_err)
    }

    fn sample_iommu(&mut self) {
        if let Some(id) = self.id {
            let (now, peak) = self.m.iommu_mapped_pages(id);
            self.iommu_pages_peak = self.iommu_pages_peak.max(peak);
            self.iommu_pages_end = now;
        }
    }

    /// Allocates src + dst of `bytes` for process `pi`, maps both, fills src, transfers it to
    /// dst, fills part of dst, then copies dst back over src with a command buffer on the
    /// process's own context (through its page tables). dst asks for the aperture segment
    /// when `pi + ci` is odd ([`aperture_dst`]).
    fn workload(&mut self, pi: usize, ci: usize, bytes: u64, va: u64) -> StepResult {
        let p = self.procs[pi];
        let pattern = 0x5A00_0000 | (pi as u32) << 16 | (ci as u32) << 8 | 0x3C;
        let cmd = self.cmds[pi];
        let src = self.allocate(pi, rgpu_abi::AllocationData::buffer(bytes))?;
        let mut dst_data = rgpu_abi::AllocationData::buffer(bytes);
        if aperture_dst(pi, ci) {
            dst_data.segment = rgpu_abi::SegmentPreference::Aperture;
        }
        let dst = self.allocate(pi, dst_data)?;
        let v = self.kmt()?.vidmm();
        let mut a = Alloc {
            id: src,
            bytes,
            expected: Paint::default(),
            mapped: Vec::new(),
            evicted: false,
        };
        let mut b = Alloc {
            id: dst,
            bytes,
            expected: Paint::default(),
            mapped: Vec::new(),
            evicted: false,
        };
        let r = (|| {
            v.map(p, src, va).map_err(vidmm_err)?;
            a.mapped.push((p, va));
            v.map(p, dst, va + DST_OFFSET).map_err(vidmm_err)?;
            b.mapped.push((p, va + DST_OFFSET));
            v.fill(src, 0, bytes, pattern).map_err(vidmm_err)?;
            a.expected.paint(0, bytes, pattern);
            v.transfer(src, dst, bytes).map_err(vidmm_err)?;
            b.expected.copy_from(&a.expected, 0, 0, bytes);
            // A partial fill, unaligned within its page, leaves its neighbours alone.
            let part = if bytes > 8192 { 4096 + 8 } else { 8 };
            let len = (bytes - part).min(100 + bytes / 3) & !3;
            v.fill(dst, part, len, 0xDEAD_BEEF).map_err(vidmm_err)?;
            b.expected.paint(part, part + len, 0xDEAD_BEEF);
            // The process's own page tables: dst → src on its context.
            let mut buf = vec![0u8; 64];
            let mut enc = Encoder::new(&mut buf);
            enc.copy(Target::Virtual(va), Target::Virtual(va + DST_OFFSET), bytes)
                .map_err(|e| format!("encode COPY: {e:?}"))?;
            let cmds = enc.written().to_vec();
            v.write(cmd, 0, &cmds).map_err(vidmm_err)?;
            v.submit_user(p, CMD_VA, cmds.len() as u32)
                .map_err(vidmm_err)?;
            a.expected.copy_from(&b.expected, 0, 0, bytes);
            Ok(())
        })();
        self.allocs.push(a);
        self.allocs.push(b);
        self.sample_iommu();
        r
    }

    /// Reads back every byte of every live allocation and compares it with the model.
    fn verify(&mut self) -> StepResult {
        let v = self.k.as_mut().ok_or("no VidMm")?.vidmm();
        const CHUNK: u64 = MIB;
        let mut want = vec![0u8; CHUNK as usize];
        for a in self.allocs.iter().filter(|a| !a.evicted) {
            let mut off = 0;
            while off < a.bytes {
                let n = CHUNK.min(a.bytes - off);
                let got = v.read(a.id, off, n as usize).map_err(vidmm_err)?;
                let want = &mut want[..n as usize];
                a.expected.fill(off, want);
                if got != *want {
                    let i = got.iter().zip(want.iter()).position(|(x, y)| x != y);
                    let at = off + i.unwrap_or(0) as u64;
                    self.mismatches.push(format!(
                        "{:?} ({} bytes): byte {at:#x} is {:#04x}, expected {:#04x}",
                        a.id,
                        a.bytes,
                        got[(at - off) as usize],
                        want[(at - off) as usize]
                    ));
                    break;
                }
                self.verified += n;
                off += n;
            }
        }
        if self.mismatches.is_empty() {
            Ok(())
        } else {
            Err(format!("{} allocation(s) differ", self.mismatches.len()))
        }
    }
}

fn plan_len(procs: usize, sizes: usize, large: bool) -> u64 {
    // boot 3 + vidmm 1 + processes + workloads + large + verify + unmap + evict + verify evicted
    // + destroy processes + vidmm teardown + stop + remove + unload
    (3 + 1 + procs + procs * sizes + usize::from(large) + 1 + 1 + 1 + 1 + procs + 1 + 3) as u64
}

/// Runs the scenario on a fresh machine of `config`.
pub fn run(
    config: MachineConfig,
    device: Device,
    size: Size,
    fail_nth: Option<u64>,
    progress: bool,
) -> Outcome {
    const PROCS: usize = 3;
    let sizes = sizes(size);
    let large = size == Size::Large;
    let bar = if progress {
        let b = ProgressBar::with_draw_target(
            Some(plan_len(PROCS, sizes.len(), large)),
            ProgressDrawTarget::stderr(),
        );
        b.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}",
            )
            .expect("template"),
        );
        b
    } else {
        ProgressBar::hidden()
    };
    let t0 = Instant::now();
    let m = Machine::new(config.clone());
    m.enable_trace();
    if let Some(n) = fail_nth {
        m.fail_nth(n);
    }
    let mut r = Run {
        m: m.clone(),
        id: None,
        k: None,
        clients: Vec::new(),
        procs: Vec::new(),
        cmds: Vec::new(),
        allocs: Vec::new(),
        steps: Vec::new(),
        failed: None,
        bar,
        verified: 0,
        mismatches: Vec::new(),
        vidmm_stats: None,
        iommu_pages_peak: 0,
        iommu_pages_end: 0,
    };
    // ---- boot ----
    r.step("boot", "load driver (DriverEntry)", false, |r| {
        status_err("DriverEntry", r.m.load_driver(rgpu::ddi::DriverEntry))
    });
    let add = match device {
        Device::Hardware => "add adapter (rgpu device model behind its register BAR)",
        Device::Soft => "add root-enumerated adapter (no resources: soft rgpu)",
    };
    r.step("boot", add, false, |r| {
        r.id = Some(match device {
            Device::Hardware => r.m.add_adapter(AdapterConfig {
                device: Some(Box::new(RgpuDevice::new())),
            }),
            Device::Soft => r.m.add_root_adapter(),
        });
        Ok(())
    });
    r.step("boot", "start adapter", false, |r| {
        let id = r.id.expect("adapter");
        let s = r.m.start_adapter(id);
        r.sample_iommu();
        status_err("start (AddDevice + StartDevice + start queries)", s)
    });

    // ---- workload ----
    r.step("workload", "VidMm: system paging process", false, |r| {
        let id = r.id.expect("adapter");
        let cfg = VidmmConfig {
            dma_buffer_size: DMA_BUFFER_SIZE,
            ..VidmmConfig::default()
        };
        r.k = Some(Kmt::new(
            Vidmm::with_config(&r.m, id, cfg).map_err(vidmm_err)?,
        ));
        r.sample_iommu();
        Ok(())
    });
    for i in 0..PROCS {
        r.step("workload", format!("create process {i}"), false, |r| {
            let k = r.kmt()?;
            let c = k.create_client();
            let adapter = k.enum_adapters2(c).map_err(kmt_err)?[0].h_adapter;
            let mut dev = CreateDevice {
                h_adapter: adapter,
                ..Default::default()
            };
            k.create_device(c, &mut dev).map_err(kmt_err)?;
            let p = k.vidmm_process(c, dev.h_device).map_err(kmt_err)?;
            r.clients.push((c, dev.h_device));
            r.procs.push(p);
            let cmd = r.allocate(i, rgpu_abi::AllocationData::staging(4096))?;
            r.cmds.push(cmd);
            r.kmt()?.vidmm().map(p, cmd, CMD_VA).map_err(vidmm_err)
        });
    }
    for pi in 0..PROCS {
        for (ci, &(bytes, va)) in sizes.iter().enumerate() {
            let at = if aperture_dst(pi, ci) {
                " (dst in the aperture)"
            } else {
                ""
            };
            let name = format!("process {pi}: {} map/fill/transfer/copy{at}", human(bytes));
            r.step("workload", name, false, |r| r.workload(pi, ci, bytes, va));
        }
    }
    if large {
        let (bytes, va) = LARGE;
        let name = format!("process 0: {} map/fill/transfer/copy", human(bytes));
        r.step("workload", name, false, |r| {
            r.workload(0, sizes.len(), bytes, va)
        });
    }
    r.step(
        "verify",
        "read back and verify every byte",
        false,
        Run::verify,
    );
    r.step("workload", "process 0: unmap its allocations", false, |r| {
        let p0 = r.procs[0];
        let v = r.k.as_mut().ok_or("no VidMm")?.vidmm();
        for a in &mut r.allocs {
            for (p, va) in a.mapped.clone() {
                if p == p0 {
                    v.unmap(p, a.id, va).map_err(vidmm_err)?;
                    a.mapped.retain(|x| *x != (p, va));
                }
            }
        }
        Ok(())
    });
    r.step("workload", "process 1: evict its allocations", false, |r| {
        let p1 = r.procs[1];
        let v = r.k.as_mut().ok_or("no VidMm")?.vidmm();
        for a in &mut r.allocs {
            if a.mapped.iter().any(|x| x.0 == p1) {
                v.evict(a.id).map_err(vidmm_err)?;
                a.mapped.clear();
                a.evicted = true;
            }
        }
        r.sample_iommu();
        Ok(())
    });
    r.step(
        "verify",
        "verify again (unmapped and remaining allocations)",
        false,
        |r| {
            let v = r.k.as_mut().ok_or("no VidMm")?.vidmm();
            for a in r.allocs.iter().filter(|a| a.evicted) {
                if v.read(a.id, 0, 4) != Err(VidmmError::Evicted(a.id)) {
                    return Err(format!("{:?} still readable after eviction", a.id));
                }
            }
            // Verified bytes count once per allocation: this pass re-reads the live ones.
            let before = r.verified;
            let res = r.verify();
            r.verified = before;
            res
        },
    );

    // ---- teardown (runs whatever was set up) ----
    let clients = r.clients.clone();
    for (i, (c, _)) in clients.into_iter().enumerate() {
        // Process exit: Dxgkrnl destroys what the process left (DxgkDdiCloseAllocation,
        // DxgkDdiDestroyAllocation, unmaps), then its device and address space.
        r.step(
            "teardown",
            format!("destroy process {i}"),
            true,
            |r| match r.k.as_mut() {
                Some(k) => k.destroy_client(c).map_err(kmt_err),
                None => Ok(()),
            },
        );
    }
    r.step("teardown", "VidMm teardown", true, |r| {
        let Some(k) = r.k.take() else { return Ok(()) };
        let v = k.destroy().map_err(kmt_err)?;
        r.vidmm_stats = Some(v.stats());
        let res = v.destroy().map_err(vidmm_err);
        r.sample_iommu();
        res
    });
    r.step("teardown", "stop adapter", true, |r| match r.id {
        Some(id) if r.m.adapter(id).state == PnpState::Started => {
            status_err("DxgkDdiStopDevice", r.m.stop_adapter(id))
        }
        _ => Ok(()),
    });
    r.step("teardown", "remove adapter", true, |r| match r.id {
        Some(id) if matches!(r.m.adapter(id).state, PnpState::Started | PnpState::Stopped) => {
            status_err("DxgkDdiRemoveDevice", r.m.remove_adapter(id))
        }
        _ => Ok(()),
    });
    r.step("teardown", "unload driver (leak checks)", true, |r| {
        // Also when DriverEntry failed: the unload-time leak checks still apply.
        r.m.unload_driver();
        Ok(())
    });
    r.bar.finish_and_clear();
    r.sample_iommu();

    let info = r.id.map(|id| m.adapter(id).info);
    let final_state = r.id.map(|id| m.adapter(id).state);
    let device_kind = device;
    let device = r.id.map(|id| m.device_counters(id)).unwrap_or_default();
    let allocated_bytes =
        r.allocs.iter().map(|a| a.bytes).sum::<u64>() + r.cmds.len() as u64 * 4096;
    Outcome {
        config,
        device_kind,
        size,
        fail_nth,
        steps: r.steps,
        failed: r.failed,
        offered_versions: m.offered_interface_versions(),
        info,
        final_state,
        processes: r.procs.len(),
        allocations: r.allocs.len() + r.cmds.len(),
        allocated_bytes,
        verified_bytes: r.verified,
        mismatches: r.mismatches,
        vidmm: r.vidmm_stats,
        device,
        calls: m.call_counts(),
        iommu_maps_peak: m.peak_iommu_mappings(),
        iommu_maps_end: m.live_iommu_mappings(),
        iommu_pages_peak: r.iommu_pages_peak,
        iommu_pages_end: r.iommu_pages_end,
        injection_points: m.injection_points_reached(),
        injected: m.injected_failures(),
        findings: m.findings(),
        events: m.trace_events(),
        total: t0.elapsed(),
    }
}

/// "4 KiB", "2 MiB + 12 KiB", "256 MiB".
pub fn human(bytes: u64) -> String {
    let (m, k) = (bytes / MIB, (bytes % MIB) / KIB);
    match (m, k) {
        (0, k) => format!("{k} KiB"),
        (m, 0) => format!("{m} MiB"),
        (m, k) => format!("{m} MiB + {k} KiB"),
    }
}

#[cfg(test)]
mod tests {
    use super::Paint;

    #[test]
    fn paint_overrides_and_copies_keep_alignment() {
        let mut a = Paint::default();
        a.paint(0, 16, 0x1122_3344);
        a.paint(4, 8, 0xAABB_CCDD);
        let mut buf = [0u8; 20];
        a.fill(0, &mut buf);
        assert_eq!(&buf[..4], &0x1122_3344u32.to_le_bytes());
        assert_eq!(&buf[4..8], &0xAABB_CCDDu32.to_le_bytes());
        assert_eq!(
            &buf[8..16],
            &[0x44, 0x33, 0x22, 0x11, 0x44, 0x33, 0x22, 0x11]
        );
        assert_eq!(&buf[16..], &[0; 4]);
        let mut b = Paint::default();
        b.paint(0, 20, 0xFFFF_FFFF);
        b.copy_from(&a, 4, 8, 8);
        let mut got = [0u8; 20];
        b.fill(0, &mut got);
        assert_eq!(&got[..8], &[0xFF; 8]);
        assert_eq!(&got[8..12], &0xAABB_CCDDu32.to_le_bytes());
        assert_eq!(&got[12..16], &0x1122_3344u32.to_le_bytes());
        assert_eq!(&got[16..], &[0xFF; 4]);
        let mut tail = [0u8; 3];
        b.fill(13, &mut tail);
        assert_eq!(tail, [0x33, 0x22, 0x11]);
    }
}
