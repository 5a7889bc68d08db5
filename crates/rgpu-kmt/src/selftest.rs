//! `rgpu-kmt selftest`: drives rgpu through the D3DKMT calls a real client makes and checks
//! every result, the same code on every backend.
//!
//! 1. **Adapter**: D3DKMTEnumAdapters2, the adapter with rgpu's PCI IDs, confirmed by the
//!    identity escape (escape version, the device's ID register value, adapter started).
//! 2. **Devices**: the adapter opened a second time (D3DKMTOpenAdapterFromLuid), a device, a
//!    context and a monitored fence on each; a 4 KiB command allocation per device, written
//!    through Lock2.
//! 3. **Sizes** 4 KiB … 64 MiB: a GPU buffer (no CPU access) and a staging allocation,
//!    mapped in a fresh GPU VA reservation, made resident; one DMA buffer that FILLs the
//!    staging allocation, FILLs the buffer with another pattern and COPYs the buffer over the
//!    staging allocation's upper half; submitted on the context, the fence signalled after it
//!    (and first a wait for it that must time out), waited for from the CPU; every byte of
//!    the staging allocation read back through Lock2 and compared.
//! 4. **Sharing**: device A creates a shared staging allocation and writes a byte ramp into
//!    it through Lock2; device B opens it by its global share handle (the private data comes
//!    back unchanged), COPYs it into its own staging allocation and FILLs its upper half; B
//!    reads its copy, A reads the shared allocation — every byte; A's handle outlives B's.
//! 5. **Cleanup**: every allocation destroyed, reservations freed, fences and devices
//!    destroyed, adapters closed; the driver's counters (escape) show as many allocations
//!    destroyed as were created and none left.
//!
//! The verdict is [`Verdict::Pass`], [`Verdict::Fail`] (the step and the cause) or
//! [`Verdict::NoAdapter`]; [`Verdict::exit_code`] maps them to 0, 1 and [`EXIT_NO_ADAPTER`].

use std::fmt;
use std::io::Write;
use std::time::Duration;

use rgpu_abi::escape::{EscapeRequest, COUNTERS_BYTES, IDENTITY_BYTES, IDENTITY_STARTED};
use rgpu_abi::{AllocationData, Counters, Identity};
use rgpu_hw::cmd::{Encoder, Target};

use crate::{
    allocation_bytes, Adapter, Allocation, Context, Device, Fence, Kmt, KmtError, Luid, Wait,
    PAGE_BYTES,
};

/// Exit code of a run that passed.
pub const EXIT_PASS: u8 = 0;
/// Exit code of a run that failed.
pub const EXIT_FAIL: u8 = 1;
/// Exit code of a usage error (the CLI's).
pub const EXIT_USAGE: u8 = 2;
/// Exit code when the system has no rgpu adapter (nothing was tested).
pub const EXIT_NO_ADAPTER: u8 = 3;

/// The allocation sizes the selftest uses by default: 4 KiB to 64 MiB, one not a multiple of
/// 64 KiB.
pub const DEFAULT_SIZES: [u64; 5] = [4 << 10, 20 << 10, 1 << 20, 16 << 20, 64 << 20];

/// Bytes of the shared allocation.
const SHARED_BYTES: u64 = 64 << 10;
/// GPU VA reservations are whole multiples of this.
const VA_GRANULE: u64 = 64 << 10;
/// How long a fence wait that must succeed may take.
const WAIT: Duration = Duration::from_secs(20);
/// How long the wait that must time out waits.
const SHORT_WAIT: Duration = Duration::from_millis(50);

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Allocation sizes of step 3, in bytes (each ≥ 8 and a multiple of 8).
    pub sizes: Vec<u64>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            sizes: DEFAULT_SIZES.to_vec(),
        }
    }
}

/// Why the selftest failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cause {
    /// A D3DKMT call failed.
    Call(KmtError),
    /// Bytes read back differ from what the GPU or CPU wrote.
    Mismatch {
        /// Which allocation.
        what: String,
        /// Offset of the first differing byte.
        offset: u64,
        /// Expected byte there.
        expected: u8,
        /// Byte read.
        got: u8,
        /// How many bytes differ in all.
        count: u64,
    },
    /// Anything else that was not as expected.
    Unexpected(String),
}

impl From<KmtError> for Cause {
    fn from(e: KmtError) -> Self {
        Cause::Call(e)
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Call(e) => write!(f, "{e}"),
            Cause::Mismatch {
                what,
                offset,
                expected,
                got,
                count,
            } => write!(
                f,
                "{what}: {count} byte(s) differ; first at {offset:#x}: expected {expected:#04x}, read {got:#04x}"
            ),
            Cause::Unexpected(s) => f.write_str(s),
        }
    }
}

/// A failed step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The step that failed ("16 MiB: read-back", "shared: open on device B", ...).
    pub step: String,
    /// Why.
    pub cause: Cause,
}

/// What a passing run verified.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Checks that passed.
    pub checks: u32,
    /// Bytes read back and compared.
    pub bytes_verified: u64,
    /// Allocations created (and destroyed).
    pub allocations: u64,
    /// Submissions made.
    pub submissions: u32,
}

/// The outcome of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Everything was as expected.
    Pass(Summary),
    /// A step failed (cleanup was still attempted).
    Fail(Failure),
    /// No rgpu adapter: nothing was tested. Says what was found instead.
    NoAdapter(String),
}

impl Verdict {
    /// The process exit code: [`EXIT_PASS`], [`EXIT_FAIL`] or [`EXIT_NO_ADAPTER`].
    pub fn exit_code(&self) -> u8 {
        match self {
            Verdict::Pass(_) => EXIT_PASS,
            Verdict::Fail(_) => EXIT_FAIL,
            Verdict::NoAdapter(_) => EXIT_NO_ADAPTER,
        }
    }
}

impl fmt::Display for Verdict {
    /// The verdict line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Pass(s) => write!(
                f,
                "rgpu-kmt selftest: PASS ({} checks, {} allocations, {} submissions, {} bytes verified)",
                s.checks, s.allocations, s.submissions, s.bytes_verified
            ),
            Verdict::Fail(x) => write!(f, "rgpu-kmt selftest: FAIL at {}: {}", x.step, x.cause),
            Verdict::NoAdapter(why) => write!(f, "rgpu-kmt selftest: no rgpu adapter ({why})"),
        }
    }
}

/// Finds the rgpu adapter: the first enumerated adapter with rgpu's PCI IDs or, failing those,
/// a driver description from rgpu's INF (the root-enumerated soft device; see
/// [`crate::RGPU_DRIVER_DESCRIPTION_PREFIX`]) whose identity escape answers as rgpu. Every other enumerated adapter is closed again. `Err` is the
/// "no rgpu adapter" explanation (what was found instead).
pub fn find_rgpu<K: Kmt + ?Sized>(
    k: &mut K,
    log: &mut dyn Write,
) -> Result<(Adapter, Luid, Identity), String> {
    let adapters = k
        .enum_adapters2()
        .map_err(|e| format!("adapter enumeration failed: {e}"))?;
    if adapters.is_empty() {
        return Err("D3DKMTEnumAdapters2 found no adapters".into());
    }
    let mut found = None;
    let mut others = Vec::new();
    for a in &adapters {
        if found.is_some() {
            let _ = k.close_adapter(a.adapter);
            continue;
        }
        match recognise(k, a.adapter) {
            Ok(why) => match identity(k, a.adapter) {
                Ok(id) => found = Some((a.adapter, a.luid, id, why)),
                Err(e) => {
                    others.push(format!("{} has {why} but {e}", a.luid));
                    let _ = k.close_adapter(a.adapter);
                }
            },
            Err(what) => {
                others.push(format!("{} {what}", a.luid));
                let _ = k.close_adapter(a.adapter);
            }
        }
    }
    match found {
        Some((adapter, luid, id, why)) => {
            let _ = writeln!(log, "  adapter {luid} ({why})");
            Ok((adapter, luid, id))
        }
        None => Err(format!(
            "{} adapter(s), none is rgpu: {}",
            adapters.len(),
            others.join("; ")
        )),
    }
}

/// Whether `adapter` may be rgpu's, and by what: rgpu's PCI IDs, or else a driver description
/// from rgpu's INF ([`crate::RGPU_DRIVER_DESCRIPTION_PREFIX`]: the root-enumerated soft
/// device). `Err` says what the adapter is instead; nothing is sent to such an adapter.
fn recognise<K: Kmt + ?Sized>(k: &mut K, adapter: Adapter) -> Result<String, String> {
    let ids = k.query_device_ids(adapter);
    if let Ok(ids) = &ids {
        if ids.is_rgpu() {
            return Ok(format!(
                "rgpu PCI IDs {:04x}:{:04x}",
                ids.vendor_id, ids.device_id
            ));
        }
    }
    let description = k.query_driver_description(adapter);
    if let Ok(d) = &description {
        if d.starts_with(crate::RGPU_DRIVER_DESCRIPTION_PREFIX) {
            return Ok(format!("driver description \"{d}\""));
        }
    }
    let ids = match ids {
        Ok(ids) => format!("is {:04x}:{:04x}", ids.vendor_id, ids.device_id),
        Err(e) => format!("has no PCI IDs ({e})"),
    };
    Err(match description {
        Ok(d) => format!("{ids}, \"{d}\""),
        Err(e) => format!("{ids}, no driver description ({e})"),
    })
}

/// The identity escape, checked: version, rgpu's ID register value, started.
pub fn identity<K: Kmt + ?Sized>(k: &mut K, adapter: Adapter) -> Result<Identity, Cause> {
    let mut b = vec![0u8; IDENTITY_BYTES];
    EscapeRequest::Identity
        .encode_into(&mut b)
        .map_err(|e| Cause::Unexpected(format!("encoding the identity escape: {e:?}")))?;
    k.escape(adapter, None, &mut b)?;
    let id = Identity::decode(&b)
        .map_err(|e| Cause::Unexpected(format!("the identity answer does not decode: {e:?}")))?;
    if id.escape_version != rgpu_abi::escape::ESCAPE_VERSION
        || id.device_id != rgpu_hw::regs::ID_VALUE
        || id.flags & IDENTITY_STARTED == 0
    {
        return Err(Cause::Unexpected(format!(
            "the identity escape does not answer as a started rgpu adapter: {id:?}"
        )));
    }
    Ok(id)
}

/// The counters escape.
pub fn counters<K: Kmt + ?Sized>(k: &mut K, adapter: Adapter) -> Result<Counters, Cause> {
    let mut b = vec![0u8; COUNTERS_BYTES];
    EscapeRequest::Counters
        .encode_into(&mut b)
        .map_err(|e| Cause::Unexpected(format!("encoding the counters escape: {e:?}")))?;
    k.escape(adapter, None, &mut b)?;
    Counters::decode(&b)
        .map_err(|e| Cause::Unexpected(format!("the counters answer does not decode: {e:?}")))
}

/// One device with what the selftest submits through.
struct Lane {
    name: &'static str,
    adapter: Adapter,
    device: Device,
    context: Context,
    fence: Fence,
    fence_value: u64,
    cmd: Allocation,
    /// The reservation that holds the command allocation: (base, size).
    cmd_reservation: (u64, u64),
}

struct Run<'a, K: Kmt + ?Sized> {
    k: &'a mut K,
    log: &'a mut dyn Write,
    summary: Summary,
    adapters: Vec<Adapter>,
    devices: Vec<Device>,
}

fn fail(step: impl Into<String>) -> impl FnOnce(Cause) -> Failure {
    let step = step.into();
    move |cause| Failure { step, cause }
}

fn call<T>(step: &str, r: Result<T, KmtError>) -> Result<T, Failure> {
    r.map_err(|e| Failure {
        step: step.to_string(),
        cause: Cause::Call(e),
    })
}

fn size_name(bytes: u64) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 10 && bytes.is_multiple_of(1 << 10) {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} B")
    }
}

/// Compares `got` with `expected(offset)` for every byte.
fn compare(what: &str, got: &[u8], expected: impl Fn(u64) -> u8) -> Result<(), Cause> {
    let mut first = None;
    let mut count = 0u64;
    for (i, &b) in got.iter().enumerate() {
        let want = expected(i as u64);
        if b != want {
            count += 1;
            if first.is_none() {
                first = Some((i as u64, want, b));
            }
        }
    }
    match first {
        None => Ok(()),
        Some((offset, expected, got)) => Err(Cause::Mismatch {
            what: what.to_string(),
            offset,
            expected,
            got,
            count,
        }),
    }
}

fn pattern_byte(pattern: u32, offset: u64) -> u8 {
    pattern.to_le_bytes()[(offset % 4) as usize]
}

/// The byte ramp the shared test writes from the CPU.
fn ramp(offset: u64) -> u8 {
    (offset.wrapping_mul(7).wrapping_add(13) % 251) as u8
}

impl<K: Kmt + ?Sized> Run<'_, K> {
    fn ok(&mut self, what: impl fmt::Display) {
        self.summary.checks += 1;
        let _ = writeln!(self.log, "  ok    {what}");
    }

    fn create(
        &mut self,
        step: &str,
        lane: Device,
        data: AllocationData,
    ) -> Result<Allocation, Failure> {
        let bytes = data.encode();
        let c = call(step, self.k.create_allocation2(lane, &[&bytes], false))?;
        self.summary.allocations += 1;
        single(step, c.allocations)
    }

    fn reserve(&mut self, step: &str, adapter: Adapter, bytes: u64) -> Result<(u64, u64), Failure> {
        let size = bytes.div_ceil(VA_GRANULE) * VA_GRANULE;
        let base = call(step, self.k.reserve_gpu_virtual_address(adapter, 0, size))?;
        if base == 0 || !base.is_multiple_of(VA_GRANULE) {
            return Err(fail(step)(Cause::Unexpected(format!(
                "the reservation is at {base:#x}, not a non-zero multiple of 64 KiB"
            ))));
        }
        Ok((base, size))
    }

    fn map(
        &mut self,
        step: &str,
        device: Device,
        va: u64,
        a: Allocation,
        bytes: u64,
    ) -> Result<(), Failure> {
        let got = call(
            step,
            self.k
                .map_gpu_virtual_address(device, va, a, bytes / PAGE_BYTES),
        )?;
        if got != va {
            return Err(fail(step)(Cause::Unexpected(format!(
                "mapped at {got:#x}, asked for {va:#x}"
            ))));
        }
        Ok(())
    }

    /// Locks, reads all `bytes`, unlocks; checks Lock2 covers at least `bytes`.
    fn read_back(
        &mut self,
        step: &str,
        device: Device,
        a: Allocation,
        bytes: u64,
    ) -> Result<Vec<u8>, Failure> {
        let covered = call(step, self.k.lock2(device, a))?;
        let mut out = vec![0u8; bytes as usize];
        let r = self.k.read_locked(device, a, 0, &mut out);
        let u = self.k.unlock2(device, a);
        call(step, r)?;
        call(step, u)?;
        if covered < bytes {
            return Err(fail(step)(Cause::Unexpected(format!(
                "Lock2 covers {covered} bytes of a {bytes}-byte allocation"
            ))));
        }
        self.summary.bytes_verified += bytes;
        Ok(out)
    }

    fn write_through_lock(
        &mut self,
        step: &str,
        device: Device,
        a: Allocation,
        data: &[u8],
    ) -> Result<(), Failure> {
        call(step, self.k.lock2(device, a))?;
        let r = self.k.write_locked(device, a, 0, data);
        let u = self.k.unlock2(device, a);
        call(step, r)?;
        call(step, u)
    }

    fn lane(&mut self, name: &'static str, adapter: Adapter) -> Result<Lane, Failure> {
        let step = format!("device {name}: set-up");
        let device = call(&step, self.k.create_device(adapter))?;
        self.devices.push(device);
        let context = call(&step, self.k.create_context_virtual(device, 0))?;
        let fence = call(&step, self.k.create_monitored_fence(device, 0))?;
        let cmd = self.create(&step, device, AllocationData::staging(PAGE_BYTES))?;
        let cmd_reservation = self.reserve(&step, adapter, PAGE_BYTES)?;
        self.map(&step, device, cmd_reservation.0, cmd, PAGE_BYTES)?;
        self.ok(format_args!(
            "device {name}: device, virtual context on node 0, monitored fence, 4 KiB command allocation mapped at {:#x}",
            cmd_reservation.0
        ));
        Ok(Lane {
            name,
            adapter,
            device,
            context,
            fence,
            fence_value: 0,
            cmd,
            cmd_reservation,
        })
    }

    /// Writes `commands` into the lane's command allocation, submits them, signals the fence
    /// after them and waits for it (after checking that a wait for it times out first).
    fn submit(&mut self, step: &str, lane: &mut Lane, commands: &[u8]) -> Result<(), Failure> {
        self.write_through_lock(step, lane.device, lane.cmd, commands)?;
        let next = lane.fence_value + 1;
        let early = call(
            step,
            self.k
                .wait_from_cpu(lane.device, &[(lane.fence, next)], SHORT_WAIT),
        )?;
        if early != Wait::TimedOut {
            return Err(fail(step)(Cause::Unexpected(format!(
                "a wait for fence value {next} ended ({early:?}) before anything signalled it"
            ))));
        }
        call(
            step,
            self.k
                .submit_command(lane.context, lane.cmd_reservation.0, commands.len() as u32),
        )?;
        self.summary.submissions += 1;
        call(
            step,
            self.k.signal_from_gpu2(lane.context, &[lane.fence], next),
        )?;
        lane.fence_value = next;
        match call(
            step,
            self.k
                .wait_from_cpu(lane.device, &[(lane.fence, next)], WAIT),
        )? {
            Wait::Reached => Ok(()),
            Wait::TimedOut => Err(fail(step)(Cause::Unexpected(format!(
                "fence value {next} not reached within {WAIT:?} of the submission"
            )))),
        }
    }

    fn one_size(&mut self, lane: &mut Lane, bytes: u64) -> Result<(), Failure> {
        let name = size_name(bytes);
        let step = format!("{name}: allocate and map");
        let buffer = self.create(&step, lane.device, AllocationData::buffer(bytes))?;
        let staging = self.create(&step, lane.device, AllocationData::staging(bytes))?;
        let placed = allocation_bytes(&AllocationData::buffer(bytes).encode()).unwrap_or(bytes);
        let (base, size) = self.reserve(
            &step,
            lane.adapter,
            2 * placed.div_ceil(VA_GRANULE) * VA_GRANULE,
        )?;
        let (buf_va, stg_va) = (base, base + size / 2);
        self.map(&step, lane.device, buf_va, buffer, placed)?;
        self.map(&step, lane.device, stg_va, staging, placed)?;
        call(&step, self.k.make_resident(lane.device, &[buffer, staging]))?;

        let step = format!("{name}: FILL, FILL, COPY on device {}", lane.name);
        let (under, over) = (
            0x5A00_0000 | (bytes >> 12) as u32,
            0xC3A5_0000 ^ bytes as u32,
        );
        let half = (bytes / 2) & !7;
        let mut cmds = [0u8; 128];
        let mut enc = Encoder::new(&mut cmds);
        let encoded = enc
            .fill(Target::Virtual(stg_va), bytes, under)
            .and_then(|_| enc.fill(Target::Virtual(buf_va), bytes, over))
            .and_then(|_| {
                enc.copy(
                    Target::Virtual(stg_va + half),
                    Target::Virtual(buf_va),
                    bytes - half,
                )
            });
        encoded.map_err(|e| fail(&step)(Cause::Unexpected(format!("encoding: {e:?}"))))?;
        let cmds = enc.written().to_vec();
        self.submit(&step, lane, &cmds)?;

        let step = format!("{name}: read-back through Lock2");
        let got = self.read_back(&step, lane.device, staging, bytes)?;
        compare(&format!("{name} staging allocation"), &got, |i| {
            if i < half {
                pattern_byte(under, i)
            } else {
                pattern_byte(over, i - half)
            }
        })
        .map_err(fail(&step))?;
        self.ok(format_args!(
            "{name}: buffer + staging mapped at {buf_va:#x}/{stg_va:#x}, FILL/FILL/COPY submitted, fence {} waited for, {bytes} bytes read back and verified",
            lane.fence_value
        ));

        let step = format!("{name}: destroy");
        call(
            &step,
            self.k.destroy_allocation2(lane.device, &[buffer, staging]),
        )?;
        call(
            &step,
            self.k.free_gpu_virtual_address(lane.adapter, base, size),
        )
    }

    fn shared(&mut self, a: &mut Lane, b: &mut Lane) -> Result<(), Failure> {
        let step = "shared: create on device A";
        let data = AllocationData::staging(SHARED_BYTES).encode();
        let created = call(step, self.k.create_allocation2(a.device, &[&data], true))?;
        self.summary.allocations += 1;
        let share = created.share.ok_or_else(|| {
            fail(step)(Cause::Unexpected("no global share handle returned".into()))
        })?;
        let sa = single(step, created.allocations)?;
        let ramp_bytes: Vec<u8> = (0..SHARED_BYTES).map(ramp).collect();
        self.write_through_lock("shared: CPU upload on device A", a.device, sa, &ramp_bytes)?;

        let step = "shared: open on device B";
        let opened = call(step, self.k.open_resource(b.device, share))?;
        let [opened] = &opened[..] else {
            return Err(fail(step)(Cause::Unexpected(format!(
                "{} allocations opened, created 1",
                opened.len()
            ))));
        };
        if opened.private_data != data {
            return Err(fail(step)(Cause::Unexpected(
                "the opened allocation's private data differs from the creator's".into(),
            )));
        }
        let sb = opened.allocation;
        let copy = self.create(step, b.device, AllocationData::staging(SHARED_BYTES))?;
        let (base, size) = self.reserve(step, b.adapter, 2 * SHARED_BYTES)?;
        self.map(step, b.device, base, sb, SHARED_BYTES)?;
        self.map(step, b.device, base + SHARED_BYTES, copy, SHARED_BYTES)?;

        let step = "shared: COPY and FILL on device B";
        let fill = 0x0BAD_F00D;
        let half = SHARED_BYTES / 2;
        let mut cmds = [0u8; 128];
        let mut enc = Encoder::new(&mut cmds);
        enc.copy(
            Target::Virtual(base + SHARED_BYTES),
            Target::Virtual(base),
            SHARED_BYTES,
        )
        .and_then(|_| enc.fill(Target::Virtual(base + half), half, fill))
        .map_err(|e| fail(step)(Cause::Unexpected(format!("encoding: {e:?}"))))?;
        let cmds = enc.written().to_vec();
        self.submit(step, b, &cmds)?;

        let step = "shared: read-back on device B";
        let got = self.read_back(step, b.device, copy, SHARED_BYTES)?;
        compare("device B's copy of the shared allocation", &got, ramp).map_err(fail(step))?;
        let step = "shared: read-back on device A";
        let got = self.read_back(step, a.device, sa, SHARED_BYTES)?;
        let expect = |i: u64| {
            if i < half {
                ramp(i)
            } else {
                pattern_byte(fill, i - half)
            }
        };
        compare("the shared allocation (device A)", &got, expect).map_err(fail(step))?;
        self.ok(format_args!(
            "shared: 64 KiB written by A's CPU, opened by B through its share handle, copied and half-filled by B's GPU; both read back and verified"
        ));

        let step = "shared: device B closes it, A still reads it";
        call(step, self.k.destroy_allocation2(b.device, &[sb, copy]))?;
        call(step, self.k.free_gpu_virtual_address(b.adapter, base, size))?;
        let got = self.read_back(step, a.device, sa, SHARED_BYTES)?;
        compare("the shared allocation after B closed it", &got, expect).map_err(fail(step))?;
        call(step, self.k.destroy_allocation2(a.device, &[sa]))?;
        self.ok("shared: B's handles destroyed, A's still valid and unchanged, then destroyed");
        Ok(())
    }

    fn body(&mut self, adapter: Adapter, luid: Luid, opts: &Options) -> Result<(), Failure> {
        let before = counters(self.k, adapter).map_err(fail("counters before"))?;
        let second = call(
            "open the adapter again",
            self.k.open_adapter_from_luid(luid),
        )?;
        self.adapters.push(second);
        let mut a = self.lane("A", adapter)?;
        let mut b = self.lane("B", second)?;
        for &bytes in &opts.sizes {
            self.one_size(&mut a, bytes)?;
        }
        self.shared(&mut a, &mut b)?;

        let step = "cleanup";
        for lane in [&a, &b] {
            call(step, self.k.destroy_allocation2(lane.device, &[lane.cmd]))?;
            let (base, size) = lane.cmd_reservation;
            call(
                step,
                self.k.free_gpu_virtual_address(lane.adapter, base, size),
            )?;
            call(step, self.k.destroy_synchronization_object(lane.fence))?;
        }
        let after = counters(self.k, adapter).map_err(fail("counters after"))?;
        let (created, destroyed) = (
            after.values[0] - before.values[0].min(after.values[0]),
            after.values[1] - before.values[1].min(after.values[1]),
        );
        if created != self.summary.allocations
            || destroyed != created
            || after.values[2] != before.values[2]
        {
            return Err(fail(step)(Cause::Unexpected(format!(
                "the driver counted {created} allocations created and {destroyed} destroyed during the run ({} made), {} live after, {} before (another client using rgpu at the same time?)",
                self.summary.allocations, after.values[2], before.values[2]
            ))));
        }
        self.ok(format_args!(
            "cleanup: the driver counted {created} allocations created and as many destroyed, {} live as before",
            after.values[2]
        ));
        Ok(())
    }
}

fn single(step: &str, list: Vec<Allocation>) -> Result<Allocation, Failure> {
    match list[..] {
        [a] => Ok(a),
        _ => Err(fail(step)(Cause::Unexpected(format!(
            "{} allocation handles for 1 allocation",
            list.len()
        )))),
    }
}

/// Runs the selftest on `k`, logging each check to `log`; the caller prints the verdict.
pub fn run<K: Kmt + ?Sized>(k: &mut K, opts: &Options, log: &mut dyn Write) -> Verdict {
    if let Some(&bad) = opts.sizes.iter().find(|&&s| s < 8 || !s.is_multiple_of(8)) {
        return Verdict::Fail(Failure {
            step: "options".into(),
            cause: Cause::Unexpected(format!("size {bad} is not a non-zero multiple of 8")),
        });
    }
    let _ = writeln!(log, "rgpu-kmt selftest on {}", k.describe());
    let (adapter, luid, id) = match find_rgpu(k, log) {
        Ok(f) => f,
        Err(why) => return Verdict::NoAdapter(why),
    };
    let mut r = Run {
        k,
        log,
        summary: Summary::default(),
        adapters: vec![adapter],
        devices: Vec::new(),
    };
    r.ok(format_args!(
        "identity escape: rgpu device {:#010x} version {:#x}, driver {:#x}, DXGK interface {:#x}, {} segment(s), aperture {}",
        id.device_id,
        id.device_version,
        id.driver_version,
        id.interface_version,
        id.segment_count,
        size_name(id.aperture_bytes)
    ));
    let result = r.body(adapter, luid, opts);
    // Devices take what they still hold with them (also after a failure), then the adapters.
    let mut cleanup = Ok(());
    for d in std::mem::take(&mut r.devices).into_iter().rev() {
        cleanup = cleanup.and(call("cleanup: destroy device", r.k.destroy_device(d)));
    }
    for a in std::mem::take(&mut r.adapters).into_iter().rev() {
        cleanup = cleanup.and(call("cleanup: close adapter", r.k.close_adapter(a)));
    }
    match result.and(cleanup) {
        Ok(()) => {
            r.ok("devices destroyed, adapters closed");
            Verdict::Pass(r.summary)
        }
        Err(f) => Verdict::Fail(f),
    }
}
