//! The step table and the checks. Each step prints one line:
//!
//! `wine-dxgkrnl: STEP <name> <PASS|FAIL|PENDING|SKIP> expect=<live|pending> <detail>`
//!
//! and the run ends with `wine-dxgkrnl: VERDICT <PASS|FAIL> live=… pending=… skipped=… failed=…`.
//!
//! **Tightening**: [`EXPECTED`] says which steps rgpu implements today. A `Pending` step accepts
//! "not implemented" (DDI absent from the DRIVER_INITIALIZATION_DATA, or STATUS_NOT_SUPPORTED /
//! STATUS_NOT_IMPLEMENTED) and reports PENDING; if rgpu answers for real, the step's checks run
//! and must pass (it reports `PASS … (now live: tighten EXPECTED)`). Once a step is live, move
//! it to `Live` so a regression to "not implemented" fails the run. `HarnessRequireAllLive=1`
//! treats every step as `Live`.

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use dxgk_sys::{
    DRIVER_INITIALIZATION_DATA, DXGKARG_BUILDPAGINGBUFFER, DXGKARG_QUERYADAPTERINFO,
    DXGK_QUERYADAPTERINFOTYPE, DXGK_START_INFO, HANDLE, NTSTATUS, PVOID, STATUS_NOT_IMPLEMENTED,
    STATUS_NOT_SUPPORTED, STATUS_SUCCESS,
};

use crate::callbacks;
use crate::port::PORT;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// rgpu implements it: anything but success (and passing checks) fails the run.
    Live,
    /// rgpu does not implement it yet: "not implemented" is accepted and reported PENDING.
    #[allow(dead_code)] // no step is pending at the moment; kept for new steps
    Pending,
}

/// What rgpu implements today. Steps not listed are `Live`.
///
/// History: at issue 8's start only DriverEntry/DxgkInitialize/AddDevice/RemoveDevice/Unload
/// were real (StartDevice answered STATUS_NOT_SUPPORTED; QueryAdapterInfo and
/// BuildPagingBuffer were absent from the DDI table), so those three rows and StopDevice were
/// `Pending`. Commits c0b214a (adapter lifecycle) and 3d13d12 (BuildPagingBuffer) made every
/// step live under Wine (with the KeStallExecutionProcessor shim), so the table is tightened.
pub const EXPECTED: &[(&str, Expect)] = &[
    ("DriverEntry", Expect::Live),
    ("DxgkInitialize", Expect::Live),
    ("AddDevice", Expect::Live),
    ("StartDevice", Expect::Live),
    ("QueryAdapterInfo", Expect::Live),
    ("BuildPagingBuffer", Expect::Live),
    ("StopDevice", Expect::Live),
    ("RemoveDevice", Expect::Live),
    ("Unload", Expect::Live),
];

/// Expectation for `name` (`QueryAdapterInfo/DRIVERCAPS` uses the `QueryAdapterInfo` row).
fn expect_of(name: &str) -> Expect {
    if crate::port::settings().require_all_live {
        return Expect::Live;
    }
    let group = name.split('/').next().unwrap_or(name);
    EXPECTED
        .iter()
        .find(|(n, _)| *n == group)
        .map_or(Expect::Live, |&(_, e)| e)
}

/// What a step observed.
pub enum Got {
    /// Ran, succeeded, every check passed.
    Done,
    /// rgpu does not implement it (DDI absent, or a "not implemented" status).
    NotImplemented(NTSTATUS),
    /// Ran and a status or check was wrong.
    Failed,
    /// Could not run: a prerequisite step is not live.
    Blocked(&'static str),
}

static PASSED: AtomicU32 = AtomicU32::new(0);
static FAILED: AtomicU32 = AtomicU32::new(0);
static PENDING: AtomicU32 = AtomicU32::new(0);
static SKIPPED: AtomicU32 = AtomicU32::new(0);
/// Set when a scenario made StartDevice fail on purpose: later steps cannot run and are SKIPs.
static NEGATIVE_START: AtomicBool = AtomicBool::new(false);

fn is_not_implemented(status: NTSTATUS) -> bool {
    status == STATUS_NOT_SUPPORTED || status == STATUS_NOT_IMPLEMENTED
}

/// "DDI absent" for 0, else the status.
struct Why(NTSTATUS);

impl core::fmt::Display for Why {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.0 == 0 {
            f.write_str("DDI absent from its DRIVER_INITIALIZATION_DATA;")
        } else {
            write!(f, "status {:#010x};", self.0 as u32)
        }
    }
}

/// Reports one step; returns true when it ran successfully (live).
pub(crate) fn record(name: &str, got: Got, detail: core::fmt::Arguments<'_>) -> bool {
    crate::device::tick(); // control is back from rgpu: let the device catch up
    let expect = match got {
        Got::Blocked(_) if NEGATIVE_START.load(Ordering::Relaxed) => Expect::Pending,
        _ => expect_of(name),
    };
    let e = if expect == Expect::Live {
        "live"
    } else {
        "pending"
    };
    match (got, expect) {
        (Got::Done, Expect::Live) => {
            PASSED.fetch_add(1, Ordering::Relaxed);
            say!("STEP {} PASS expect={} {}", name, e, detail);
            true
        }
        (Got::Done, Expect::Pending) => {
            PASSED.fetch_add(1, Ordering::Relaxed);
            say!(
                "STEP {} PASS expect={} {} (now live: tighten EXPECTED)",
                name,
                e,
                detail
            );
            true
        }
        (Got::NotImplemented(s), Expect::Pending) => {
            PENDING.fetch_add(1, Ordering::Relaxed);
            say!(
                "STEP {} PENDING expect={} not implemented by rgpu yet: {} {}",
                name,
                e,
                Why(s),
                detail
            );
            false
        }
        (Got::NotImplemented(s), Expect::Live) => {
            FAILED.fetch_add(1, Ordering::Relaxed);
            say!(
                "STEP {} FAIL expect={} not implemented: {} {}",
                name,
                e,
                Why(s),
                detail
            );
            false
        }
        (Got::Blocked(why), Expect::Pending) => {
            SKIPPED.fetch_add(1, Ordering::Relaxed);
            say!("STEP {} SKIP expect={} {}", name, e, why);
            false
        }
        (Got::Blocked(why), Expect::Live) => {
            FAILED.fetch_add(1, Ordering::Relaxed);
            say!("STEP {} FAIL expect={} could not run: {}", name, e, why);
            false
        }
        (Got::Failed, _) => {
            FAILED.fetch_add(1, Ordering::Relaxed);
            say!("STEP {} FAIL expect={} {}", name, e, detail);
            false
        }
    }
}

/// A failed check inside a step: prints why, returns false.
pub(crate) fn check(ok: bool, what: core::fmt::Arguments<'_>) -> bool {
    if !ok {
        say!("  check failed: {}", what);
    }
    ok
}

/// DriverEntry and DxgkInitialize, as seen from DpiInitialize (called when it accepted).
pub fn record_driver_entry(version: u32, offers: u32, init: &DRIVER_INITIALIZATION_DATA) {
    record(
        "DriverEntry",
        Got::Done,
        format_args!(
            "rgpu's DriverEntry reached the port through \\Device\\DxgKrnl + IOCTL 0x0023003F"
        ),
    );
    let pnp = init.DxgkDdiAddDevice.is_some()
        && init.DxgkDdiStartDevice.is_some()
        && init.DxgkDdiStopDevice.is_some()
        && init.DxgkDdiRemoveDevice.is_some()
        && init.DxgkDdiUnload.is_some();
    let known = dxgk_sys::DRIVER_INITIALIZATION_DATA_SIZE_BY_VERSION
        .iter()
        .any(|&(v, _)| v == version);
    let ok = check(
        pnp,
        format_args!("AddDevice/StartDevice/StopDevice/RemoveDevice/Unload all present"),
    ) & check(
        known && version >= dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM2_4,
        format_args!("interface {:#x} is a known version >= WDDM 2.4", version),
    );
    record(
        "DxgkInitialize",
        if ok { Got::Done } else { Got::Failed },
        format_args!(
            "accepted interface {:#x} (offer #{}); QueryAdapterInfo={} BuildPagingBuffer={}",
            version,
            offers,
            if init.DxgkDdiQueryAdapterInfo.is_some() {
                "present"
            } else {
                "absent"
            },
            if init.DxgkDdiBuildPagingBuffer.is_some() {
                "present"
            } else {
                "absent"
            },
        ),
    );
}

/// The adapter's life, as PnP + Dxgkrnl + VidMm would drive it.
pub fn run_adapter_sequence() {
    let (init, version, pdo, settings) = {
        // SAFETY: short read; DpiInitialize finished writing before this thread was created.
        let p = unsafe { PORT.get() };
        (p.init, p.version, p.pdo, p.settings)
    };

    // --- AddDevice ------------------------------------------------------------------------
    let mut context: PVOID = core::ptr::null_mut();
    let added = match init.DxgkDdiAddDevice {
        None => record("AddDevice", Got::NotImplemented(0), format_args!("")),
        Some(add) => {
            // SAFETY: rgpu's AddDevice with our PDO and a context slot, PASSIVE_LEVEL.
            let s = unsafe { add(pdo, &mut context) };
            let ok = check(
                s == STATUS_SUCCESS,
                format_args!("status {:#010x} == STATUS_SUCCESS", s as u32),
            ) & check(
                !context.is_null(),
                format_args!("MiniportDeviceContext is not NULL"),
            );
            record(
                "AddDevice",
                if ok { Got::Done } else { Got::Failed },
                format_args!("status={:#010x} context={:p}", s as u32, context),
            )
        }
    };

    // --- StartDevice ----------------------------------------------------------------------
    let mut started = false;
    if !added {
        record(
            "StartDevice",
            Got::Blocked("AddDevice did not succeed"),
            format_args!(""),
        );
    } else if let Some(start) = init.DxgkDdiStartDevice {
        callbacks::prepare(context, settings.soft);
        crate::interrupt::prepare(init.DxgkDdiDpcRoutine, context);
        let iface_version = settings.start_interface.unwrap_or(version);
        let mut iface = callbacks::interface(iface_version);
        let mut start_info = DXGK_START_INFO {
            RequiredDmaQueueEntry: 0,
            AdapterGuid: dxgk_sys::GUID {
                Data1: 0x7267_7075,
                ..Default::default()
            },
            AdapterLuid: dxgk_sys::LUID {
                LowPart: 0x1234,
                HighPart: 0,
            },
        };
        let mut sources = u32::MAX;
        let mut children = u32::MAX;
        // SAFETY: rgpu's StartDevice with live arguments, PASSIVE_LEVEL.
        let s = unsafe {
            start(
                context,
                &mut start_info,
                &mut iface,
                &mut sources,
                &mut children,
            )
        };
        let must_refuse = iface_version < dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM2_4;
        NEGATIVE_START.store(must_refuse, Ordering::Relaxed);
        let got = if must_refuse {
            // Negative scenario: an interface older than WDDM 2.4 must be refused.
            if s < 0 {
                Got::Done
            } else {
                Got::Failed
            }
        } else if is_not_implemented(s) {
            Got::NotImplemented(s)
        } else {
            let ok = check(
                s == STATUS_SUCCESS,
                format_args!("status {:#010x} == STATUS_SUCCESS", s as u32),
            ) && check(
                sources == 0 && children == 0,
                format_args!(
                    "render-only: 0 sources / 0 children (got {} / {})",
                    sources, children
                ),
            );
            started = ok;
            if ok {
                Got::Done
            } else {
                Got::Failed
            }
        };
        if must_refuse && s >= 0 {
            say!(
                "  check failed: StartDevice accepted DXGKRNL_INTERFACE version {:#x} < WDDM 2.4",
                iface_version
            );
        }
        started = started && !must_refuse;
        record(
            "StartDevice",
            got,
            format_args!(
                "DXGKRNL_INTERFACE {:#x} status={:#010x}",
                iface_version, s as u32
            ),
        );
    } else {
        record("StartDevice", Got::NotImplemented(0), format_args!(""));
    }

    // --- QueryAdapterInfo -----------------------------------------------------------------
    let mut geometry = Geometry::default();
    match (started, init.DxgkDdiQueryAdapterInfo) {
        (_, None) => {
            record("QueryAdapterInfo", Got::NotImplemented(0), format_args!(""));
        }
        (false, Some(_)) => {
            record(
                "QueryAdapterInfo",
                Got::Blocked("adapter not started"),
                format_args!(""),
            );
        }
        (true, Some(qai)) => query_adapter_info(qai, context, version, &mut geometry),
    }

    // --- BuildPagingBuffer ----------------------------------------------------------------
    match (started && geometry.valid, init.DxgkDdiBuildPagingBuffer) {
        (_, None) => {
            record(
                "BuildPagingBuffer",
                Got::NotImplemented(0),
                format_args!(""),
            );
        }
        (false, Some(_)) => {
            record(
                "BuildPagingBuffer",
                Got::Blocked("adapter not started or its GpuMmu caps were not read"),
                format_args!(""),
            );
        }
        (true, Some(bpb)) => build_paging_buffer(bpb, context, &geometry),
    }

    // --- the soft engine (a root-enumerated adapter) -----------------------------------------
    if settings.soft {
        crate::soft::run(&init, context, started && geometry.valid, &geometry);
    }

    // --- StopDevice / RemoveDevice ---------------------------------------------------------
    if !started {
        record(
            "StopDevice",
            Got::Blocked(
                "adapter not started (Windows does not stop an adapter that failed to start)",
            ),
            format_args!(""),
        );
    } else if let Some(stop) = init.DxgkDdiStopDevice {
        // SAFETY: rgpu's StopDevice on its started adapter, PASSIVE_LEVEL.
        let s = unsafe { stop(context) };
        let got = if s == STATUS_SUCCESS {
            Got::Done
        } else {
            Got::Failed
        };
        record("StopDevice", got, format_args!("status={:#010x}", s as u32));
    }
    if !added {
        record(
            "RemoveDevice",
            Got::Blocked("AddDevice did not succeed"),
            format_args!(""),
        );
    } else if let Some(remove) = init.DxgkDdiRemoveDevice {
        // SAFETY: rgpu's RemoveDevice with the context AddDevice returned; its last use.
        let s = unsafe { remove(context) };
        let (pages, contiguous, mapped) = callbacks::outstanding();
        let ok = check(
            s == STATUS_SUCCESS,
            format_args!("status {:#010x} == STATUS_SUCCESS", s as u32),
        ) & check(
            pages == 0 && contiguous == 0 && mapped == 0,
            format_args!(
                "no memory left after RemoveDevice (MDL pages {}, contiguous {}, IOMMU-mapped {})",
                pages, contiguous, mapped
            ),
        );
        record(
            "RemoveDevice",
            if ok { Got::Done } else { Got::Failed },
            format_args!("status={:#010x}", s as u32),
        );
    }
}

/// Called from rgpu's DriverUnload (ours): DxgkDdiUnload, then the verdict.
pub fn run_unload(wait: NTSTATUS) {
    if wait != STATUS_SUCCESS {
        record(
            "Unload",
            Got::Failed,
            format_args!("adapter sequence did not finish ({:#010x})", wait as u32),
        );
    } else {
        // SAFETY: short read; the adapter thread is done.
        let unload = unsafe { PORT.get() }.init.DxgkDdiUnload;
        match unload {
            None => {
                record("Unload", Got::NotImplemented(0), format_args!(""));
            }
            Some(f) => {
                // SAFETY: rgpu's DxgkDdiUnload after RemoveDevice, PASSIVE_LEVEL.
                unsafe { f() };
                record("Unload", Got::Done, format_args!("DxgkDdiUnload returned"));
            }
        }
    }
    let errors = callbacks::ERRORS.load(Ordering::Relaxed);
    if errors != 0 {
        FAILED.fetch_add(1, Ordering::Relaxed);
        say!(
            "STEP Callbacks FAIL expect=live {} callback misuse(s), see above",
            errors
        );
    }
    let (p, f, n, s) = (
        PASSED.load(Ordering::Relaxed),
        FAILED.load(Ordering::Relaxed),
        PENDING.load(Ordering::Relaxed),
        SKIPPED.load(Ordering::Relaxed),
    );
    say!(
        "VERDICT {} live={} pending={} skipped={} failed={} callbacks={}",
        if f == 0 { "PASS" } else { "FAIL" },
        p,
        n,
        s,
        f,
        callbacks::CALLS.load(Ordering::Relaxed)
    );
}

// --- QueryAdapterInfo ------------------------------------------------------------------------

/// Raw offsets from ../shared/reference/layouts.json (WDK 10.0.22621, x64), read as Dxgkrnl
/// reads them: bytes, not the Rust structs.
mod off {
    // DXGK_DRIVERCAPS
    pub const CAPS_HIGHEST_ACCEPTABLE_ADDRESS: usize = 0;
    pub const CAPS_MEMORY_MANAGEMENT: usize = 68; // bit 5 VirtualAddressingSupported, 6 GpuMmuSupported, 11 IoMmuSecureModeSupported
    pub const CAPS_NB_ASYMETRIC_PROCESSING_NODES: usize = 76;
    pub const CAPS_WDDM_VERSION: usize = 336;
    // DXGK_GPUMMUCAPS
    pub const MMU_FLAGS: usize = 0;
    pub const MMU_UPDATE_MODE: usize = 4;
    pub const MMU_VA_BITS: usize = 8;
    pub const MMU_LEVELS: usize = 16;
    // DXGK_PAGE_TABLE_LEVEL_DESC
    pub const LEVEL_INDEX_BITS: usize = 0;
    pub const LEVEL_PAGING_SEGMENT: usize = 8;
    pub const LEVEL_SIZE: usize = 12;
    pub const LEVEL_ALIGNMENT: usize = 16;
    // DXGK_QUERYSEGMENTOUT4 (40 bytes) / DXGK_SEGMENTDESCRIPTOR4 (96 bytes)
    pub const SEG_NB_SEGMENT: usize = 0;
    pub const SEG_DESCRIPTOR_PTR: usize = 8;
    pub const SEG_PAGING_BUFFER_SEGMENT_ID: usize = 16;
    pub const SEG_PAGING_BUFFER_SIZE: usize = 20;
    pub const SEG_STRIDE: usize = 32;
    pub const SEGDESC_SIZE_OF: usize = 96;
    pub const SEGDESC_SIZE: usize = 16;
    // DXGK_PHYSICALADAPTERCAPS
    pub const PHYS_NUM_EXECUTION_NODES: usize = 0;
    pub const PHYS_PAGING_NODE_INDEX: usize = 2;
    pub const PHYS_FLAGS: usize = 16; // bit 1 GpuMmuSupported
}

#[derive(Default)]
pub(crate) struct Geometry {
    valid: bool,
    update_mode: u32,
    va_bits: u32,
    pub(crate) levels: u32,
    paging_buffer_size: u32,
    /// PageTableIndexBitCount per level, leaf first.
    pub(crate) bits: [u32; 6],
    /// PagingProcessPageTableSegmentId per level, leaf first.
    pub(crate) paging_table_segment: [u32; 6],
}

#[repr(C, align(16))]
struct Buf([u8; 1024]);

impl Buf {
    const CANARY: u8 = 0xCC;
    /// Zero `size` bytes, canary the rest.
    fn new(size: usize) -> Self {
        let mut b = Buf([Self::CANARY; 1024]);
        b.0[..size].fill(0);
        b
    }
    fn u16(&self, o: usize) -> u16 {
        u16::from_le_bytes([self.0[o], self.0[o + 1]])
    }
    fn u32(&self, o: usize) -> u32 {
        u32::from_le_bytes(self.0[o..o + 4].try_into().unwrap_or([0; 4]))
    }
    fn u64(&self, o: usize) -> u64 {
        u64::from_le_bytes(self.0[o..o + 8].try_into().unwrap_or([0; 8]))
    }
    fn canary_intact(&self, size: usize) -> bool {
        self.0[size..].iter().all(|&b| b == Self::CANARY)
    }
}

fn size_for(table: &[(u32, usize)], version: u32, fallback: usize) -> usize {
    table
        .iter()
        .rev()
        .find(|(v, _)| *v <= version)
        .map_or(fallback, |&(_, s)| s)
}

fn call_qai(
    qai: dxgk_sys::PFN_DXGKDDI_QUERYADAPTERINFO,
    h: HANDLE,
    ty: DXGK_QUERYADAPTERINFOTYPE,
    input: &mut [u8],
    out: &mut Buf,
    out_size: usize,
) -> NTSTATUS {
    let args = DXGKARG_QUERYADAPTERINFO {
        Type: ty,
        pInputData: if input.is_empty() {
            core::ptr::null_mut()
        } else {
            input.as_mut_ptr().cast()
        },
        InputDataSize: input.len() as u32,
        pOutputData: out.0.as_mut_ptr().cast(),
        OutputDataSize: out_size as u32,
        ..Default::default()
    };
    // SAFETY: rgpu's QueryAdapterInfo on its started adapter; buffers live for the call.
    unsafe { qai(h, &args) }
}

/// Reports one QueryAdapterInfo type. `checks` runs only on success.
fn qai_step(
    name: &str,
    status: NTSTATUS,
    out: &Buf,
    size: usize,
    checks: impl FnOnce(&Buf) -> bool,
) -> bool {
    let got = if is_not_implemented(status) {
        Got::NotImplemented(status)
    } else if check(
        status == STATUS_SUCCESS,
        format_args!("status {:#010x} == STATUS_SUCCESS", status as u32),
    ) & check(
        out.canary_intact(size),
        format_args!("nothing written past OutputDataSize {}", size),
    ) && checks(out)
    {
        Got::Done
    } else {
        Got::Failed
    };
    record(
        name,
        got,
        format_args!("status={:#010x} size={}", status as u32, size),
    )
}

fn expected_wddm_version(interface: u32) -> u32 {
    use dxgk_sys as s;
    let table = [
        (s::DXGKDDI_INTERFACE_VERSION_WDDM3_1, s::DXGKDDI_WDDMv3_1),
        (s::DXGKDDI_INTERFACE_VERSION_WDDM3_0, s::DXGKDDI_WDDMv3_0),
        (s::DXGKDDI_INTERFACE_VERSION_WDDM2_9, s::DXGKDDI_WDDMv2_9),
        (s::DXGKDDI_INTERFACE_VERSION_WDDM2_8, s::DXGKDDI_WDDMv2_8),
        (s::DXGKDDI_INTERFACE_VERSION_WDDM2_7, s::DXGKDDI_WDDMv2_7),
        (s::DXGKDDI_INTERFACE_VERSION_WDDM2_6, s::DXGKDDI_WDDMv2_6),
        (s::DXGKDDI_INTERFACE_VERSION_WDDM2_5, s::DXGKDDI_WDDMv2_5),
        (s::DXGKDDI_INTERFACE_VERSION_WDDM2_4, s::DXGKDDI_WDDMv2_4),
    ];
    table
        .iter()
        .find(|(v, _)| interface >= *v)
        .map_or(0, |&(_, w)| w.0 as u32)
}

fn query_adapter_info(
    qai: dxgk_sys::PFN_DXGKDDI_QUERYADAPTERINFO,
    h: HANDLE,
    version: u32,
    geo: &mut Geometry,
) {
    use dxgk_sys as s;

    // DRIVERCAPS, at the size this interface's Dxgkrnl passes.
    let size = size_for(s::DXGK_DRIVERCAPS_SIZE_BY_VERSION, version, 592);
    let mut out = Buf::new(size);
    let st = call_qai(qai, h, s::DXGKQAITYPE_DRIVERCAPS, &mut [], &mut out, size);
    let wddm = expected_wddm_version(version);
    let caps_ok = qai_step("QueryAdapterInfo/DRIVERCAPS", st, &out, size, |b| {
        let mm = b.u32(off::CAPS_MEMORY_MANAGEMENT);
        check(
            b.u64(off::CAPS_HIGHEST_ACCEPTABLE_ADDRESS) != 0,
            format_args!("HighestAcceptableAddress != 0"),
        ) & check(
            mm & (1 << 5) != 0,
            format_args!(
                "MemoryManagementCaps.VirtualAddressingSupported (bit 5 @68), value {:#x}",
                mm
            ),
        ) & check(
            mm & (1 << 6) != 0,
            format_args!("MemoryManagementCaps.GpuMmuSupported (bit 6 @68)"),
        ) & check(
            mm & (1 << 11) != 0,
            format_args!("MemoryManagementCaps.IoMmuSecureModeSupported (bit 11 @68)"),
        ) & check(
            b.u32(off::CAPS_NB_ASYMETRIC_PROCESSING_NODES) >= 1,
            format_args!("GpuEngineTopology.NbAsymetricProcessingNodes >= 1 (@76)"),
        ) & check(
            b.u32(off::CAPS_WDDM_VERSION) == wddm,
            format_args!(
                "WDDMVersion @336 = {:#x}, expected {:#x}",
                b.u32(off::CAPS_WDDM_VERSION),
                wddm
            ),
        )
    });

    // QUERYSEGMENT4: first the count (no descriptor array), then the descriptors.
    let size = 40;
    let mut out = Buf::new(size);
    let st = call_qai(
        qai,
        h,
        s::DXGKQAITYPE_QUERYSEGMENT4,
        &mut [],
        &mut out,
        size,
    );
    let nb = out.u32(off::SEG_NB_SEGMENT);
    let mut paging = 0;
    if qai_step(
        "QueryAdapterInfo/QUERYSEGMENT4(count)",
        st,
        &out,
        size,
        |b| {
            check(
                (1..=8).contains(&b.u32(off::SEG_NB_SEGMENT)),
                format_args!("1 <= NbSegment <= 8 (got {})", nb),
            )
        },
    ) {
        let mut descriptors = Buf::new(off::SEGDESC_SIZE_OF * nb as usize);
        let mut out = Buf::new(size);
        out.0[off::SEG_NB_SEGMENT..off::SEG_NB_SEGMENT + 4].copy_from_slice(&nb.to_le_bytes());
        let ptr = descriptors.0.as_mut_ptr() as u64;
        out.0[off::SEG_DESCRIPTOR_PTR..off::SEG_DESCRIPTOR_PTR + 8]
            .copy_from_slice(&ptr.to_le_bytes());
        out.0[off::SEG_STRIDE..off::SEG_STRIDE + 8]
            .copy_from_slice(&(off::SEGDESC_SIZE_OF as u64).to_le_bytes());
        let st = call_qai(
            qai,
            h,
            s::DXGKQAITYPE_QUERYSEGMENT4,
            &mut [],
            &mut out,
            size,
        );
        paging = out.u32(off::SEG_PAGING_BUFFER_SIZE);
        let used = off::SEGDESC_SIZE_OF * nb as usize;
        qai_step(
            "QueryAdapterInfo/QUERYSEGMENT4(descriptors)",
            st,
            &out,
            size,
            |b| {
                let id = b.u32(off::SEG_PAGING_BUFFER_SEGMENT_ID);
                check(
                    (1..=nb + 1).contains(&id),
                    format_args!("PagingBufferSegmentId {} in 1..={}", id, nb + 1),
                ) & check(
                    paging >= 4096,
                    format_args!("PagingBufferSize {} >= 4096", paging),
                ) & check(
                    descriptors.u64(off::SEGDESC_SIZE) != 0,
                    format_args!("segment 1 Size != 0"),
                ) & check(
                    descriptors.canary_intact(used),
                    format_args!("nothing written past the descriptor array"),
                )
            },
        );
    }

    // GPUMMUCAPS.
    let size = 24;
    let mut out = Buf::new(size);
    let mut input = [0u8; 4]; // DXGK_QUERYGPUMMUCAPSIN.PhysicalAdapterIndex = 0
    let st = call_qai(
        qai,
        h,
        s::DXGKQAITYPE_GPUMMUCAPS,
        &mut input,
        &mut out,
        size,
    );
    let mmu_ok = qai_step("QueryAdapterInfo/GPUMMUCAPS", st, &out, size, |b| {
        let mode = b.u32(off::MMU_UPDATE_MODE);
        check(
            mode == s::DXGK_PAGETABLEUPDATE_CPU_VIRTUAL.0 as u32
                || mode == s::DXGK_PAGETABLEUPDATE_GPU_VIRTUAL.0 as u32,
            format_args!("PageTableUpdateMode {} is CPU_VIRTUAL or GPU_VIRTUAL", mode),
        ) & check(
            (32..=64).contains(&b.u32(off::MMU_VA_BITS)),
            format_args!("32 <= VirtualAddressBitCount <= 64"),
        ) & check(
            (2..=6).contains(&b.u32(off::MMU_LEVELS)),
            format_args!("2 <= PageTableLevelCount <= 6"),
        )
    });
    say!("  GPUMMUCAPS flags={:#x}", out.u32(off::MMU_FLAGS));
    geo.update_mode = out.u32(off::MMU_UPDATE_MODE);
    geo.va_bits = out.u32(off::MMU_VA_BITS);
    geo.levels = out.u32(off::MMU_LEVELS);

    // PAGETABLELEVELDESC for every level, leaf first.
    let mut bits_total = 12;
    let mut levels_ok = mmu_ok;
    for level in 0..if mmu_ok { geo.levels } else { 0 } {
        let size = 20;
        let mut out = Buf::new(size);
        let mut input = [0u8; 4]; // LevelIndex (WORD), PhysicalAdapterIndex (WORD)
        input[..2].copy_from_slice(&(level as u16).to_le_bytes());
        let st = call_qai(
            qai,
            h,
            s::DXGKQAITYPE_PAGETABLELEVELDESC,
            &mut input,
            &mut out,
            size,
        );
        let bits = out.u32(off::LEVEL_INDEX_BITS);
        bits_total += bits;
        if let Some(slot) = geo.bits.get_mut(level as usize) {
            *slot = bits;
        }
        if let Some(slot) = geo.paging_table_segment.get_mut(level as usize) {
            *slot = out.u32(off::LEVEL_PAGING_SEGMENT);
        }
        levels_ok &= qai_step("QueryAdapterInfo/PAGETABLELEVELDESC", st, &out, size, |b| {
            let sz = b.u32(off::LEVEL_SIZE);
            let al = b.u32(off::LEVEL_ALIGNMENT);
            check(
                (1..=12).contains(&bits),
                format_args!("level {} PageTableIndexBitCount {} in 1..=12", level, bits),
            ) & check(
                u64::from(sz) >= 8u64 << bits,
                format_args!("level {} PageTableSizeInBytes {} >= 8 << bits", level, sz),
            ) & check(
                al.is_power_of_two(),
                format_args!("level {} alignment {} is a power of two", level, al),
            )
        });
    }
    if mmu_ok && levels_ok {
        levels_ok = check(
            bits_total == geo.va_bits,
            format_args!(
                "12 + sum(index bits) = {} == VirtualAddressBitCount {}",
                bits_total, geo.va_bits
            ),
        );
        if !levels_ok {
            record(
                "QueryAdapterInfo/PAGETABLELEVELDESC",
                Got::Failed,
                format_args!("geometry"),
            );
        }
    }

    // PHYSICALADAPTERCAPS.
    let size = size_for(s::DXGK_PHYSICALADAPTERCAPS_SIZE_BY_VERSION, version, 32);
    let mut out = Buf::new(size);
    let mut input = [0u8; 4];
    let st = call_qai(
        qai,
        h,
        s::DXGKQAITYPE_PHYSICALADAPTERCAPS,
        &mut input,
        &mut out,
        size,
    );
    qai_step(
        "QueryAdapterInfo/PHYSICALADAPTERCAPS",
        st,
        &out,
        size,
        |b| {
            let nodes = b.u16(off::PHYS_NUM_EXECUTION_NODES);
            check(nodes >= 1, format_args!("NumExecutionNodes {} >= 1", nodes))
                & check(
                    b.u16(off::PHYS_PAGING_NODE_INDEX) < nodes,
                    format_args!("PagingNodeIndex < NumExecutionNodes"),
                )
                & check(
                    b.u32(off::PHYS_FLAGS) & (1 << 1) != 0,
                    format_args!("Flags.GpuMmuSupported (bit 1 @16)"),
                )
        },
    );

    // The small ones: success and no overrun.
    for (name, ty, size) in [
        (
            "QueryAdapterInfo/NUMPOWERCOMPONENTS",
            s::DXGKQAITYPE_NUMPOWERCOMPONENTS,
            4,
        ),
        (
            "QueryAdapterInfo/FRAMEBUFFERSAVESIZE",
            s::DXGKQAITYPE_FRAMEBUFFERSAVESIZE,
            core::mem::size_of::<s::DXGK_FRAMEBUFFERSAVEAREA>(),
        ),
        (
            "QueryAdapterInfo/HARDWARERESERVEDRANGES",
            s::DXGKQAITYPE_HARDWARERESERVEDRANGES,
            core::mem::size_of::<s::DXGK_HARDWARERESERVEDRANGES>(),
        ),
    ] {
        let mut out = Buf::new(size);
        let st = call_qai(qai, h, ty, &mut [], &mut out, size);
        qai_step(name, st, &out, size, |_| true);
    }

    geo.paging_buffer_size = paging;
    geo.valid = caps_ok && mmu_ok && levels_ok;
}

// --- BuildPagingBuffer -----------------------------------------------------------------------

/// DMA buffer bytes the operation wrote: `[start, returned pDmaBuffer)`, checked in bounds.
fn emitted(start: *mut u8, size: usize, args: &DXGKARG_BUILDPAGINGBUFFER) -> Option<&'static [u8]> {
    let end = args.pDmaBuffer as usize;
    let s = start as usize;
    if end < s || end > s + size {
        say!(
            "  check failed: returned pDmaBuffer {:#x} outside [{:#x}, {:#x}]",
            end,
            s,
            s + size
        );
        return None;
    }
    // SAFETY: `[start, end)` lies inside the DMA buffer the port allocated (checked above), which
    // is never freed (a leak of one block per run, by design).
    Some(unsafe { core::slice::from_raw_parts(start, end - s) })
}

fn contains_qword(bytes: &[u8], v: u64) -> bool {
    bytes.windows(8).any(|w| w == v.to_le_bytes())
}

fn contains_dword(bytes: &[u8], v: u32) -> bool {
    bytes.windows(4).any(|w| w == v.to_le_bytes())
}

fn build_paging_buffer(bpb: dxgk_sys::PFN_DXGKDDI_BUILDPAGINGBUFFER, h: HANDLE, geo: &Geometry) {
    use dxgk_sys as s;
    use rgpu_hw::pte;

    let dma_size = (geo.paging_buffer_size as usize).clamp(4096, 1 << 20);
    // SAFETY: plain pool allocations owned by the port for the rest of the run.
    let dma =
        unsafe { s::ExAllocatePoolWithTag(s::NonPagedPoolNx, dma_size, 0x6778_4457) }.cast::<u8>();
    // SAFETY: as above; 2 pages so one 4 KiB-aligned page table fits.
    let pt_raw =
        unsafe { s::ExAllocatePoolWithTag(s::NonPagedPoolNx, 2 * 4096, 0x6778_4457) }.cast::<u8>();
    if dma.is_null() || pt_raw.is_null() {
        record(
            "BuildPagingBuffer",
            Got::Failed,
            format_args!("harness out of pool"),
        );
        return;
    }
    let pt = pt_raw.wrapping_add(pt_raw.align_offset(4096));
    // SAFETY: `pt` has 4096 bytes inside the 8 KiB block.
    unsafe { core::ptr::write_bytes(pt, 0, 4096) };
    // SAFETY: `dma` has `dma_size` bytes.
    unsafe { core::ptr::write_bytes(dma, 0, dma_size) };

    let cpu_mode = geo.update_mode == s::DXGK_PAGETABLEUPDATE_CPU_VIRTUAL.0 as u32;
    let base_args = |cursor: usize| DXGKARG_BUILDPAGINGBUFFER {
        pDmaBuffer: dma.wrapping_add(cursor).cast(),
        DmaSize: (dma_size - cursor) as u32,
        DmaBufferGpuVirtualAddress: 0x0000_7000_0000_0000 + cursor as u64,
        ..Default::default()
    };
    let mut cursor = 0usize;

    // UPDATE_PAGE_TABLE: 4 leaf PTEs at index 8 of a page table the port owns.
    const START: u32 = 8;
    let mut ptes = [s::DXGK_PTE::default(); 4];
    let mut expected = [0u64; 4];
    for (i, p) in ptes.iter_mut().enumerate() {
        let page = 0x8_0000u64 + 3 * i as u64; // logical page numbers
        p.set_Valid(1);
        p.set_ReadOnly((i == 1) as u64);
        p.set_NoExecute((i == 2) as u64);
        p.set_CacheCoherent((i == 3) as u64);
        p.u.PageAddress = page;
        let flags = [0, pte::READ_ONLY, pte::NO_EXECUTE, pte::CACHE_COHERENT][i];
        expected[i] = pte::Pte::leaf(page << 12, flags).raw();
    }
    let mut a = base_args(cursor);
    a.Operation = s::DXGK_OPERATION_UPDATE_PAGE_TABLE;
    a.u.UpdatePageTable = s::DXGK_BUILDPAGINGBUFFER_UPDATEPAGETABLE {
        PageTableLevel: 0,
        pPageTableEntries: ptes.as_mut_ptr(),
        StartIndex: START,
        NumPageTableEntries: ptes.len() as u32,
        UpdateMode: s::DXGK_PAGETABLEUPDATEMODE(geo.update_mode as i32),
        FirstPteVirtualAddress: u64::from(START) << 12,
        ..Default::default()
    };
    let gpu_pt_va = 0x0000_7F00_0000_0000u64;
    if cpu_mode {
        a.u.UpdatePageTable.PageTableAddress.u.CpuVirtual = pt.cast();
    } else {
        a.u.UpdatePageTable.PageTableAddress.u.GpuVirtual = gpu_pt_va;
    }
    let start = dma.wrapping_add(cursor);
    // SAFETY: rgpu's BuildPagingBuffer with live arguments; DMA buffer and PTE array outlive it.
    let st = unsafe { bpb(h, &mut a) };
    let got = if is_not_implemented(st) {
        Got::NotImplemented(st)
    } else if !check(
        st == STATUS_SUCCESS,
        format_args!("status {:#010x}", st as u32),
    ) {
        Got::Failed
    } else if let Some(out) = emitted(start, dma_size - cursor, &a) {
        cursor += out.len();
        let ok = if cpu_mode {
            // SAFETY: `pt` is our 4 KiB page table; entries START..START+4 are in bounds.
            let table = unsafe { core::slice::from_raw_parts(pt.cast::<u64>(), 512) };
            (0..4).fold(true, |ok, i| {
                let got = table[START as usize + i];
                ok & check(
                    got == expected[i],
                    format_args!(
                        "PTE[{}] = {:#018x}, hardware format wants {:#018x}",
                        START as usize + i,
                        got,
                        expected[i]
                    ),
                )
            })
        } else {
            (0..4).fold(true, |ok, i| {
                ok & check(
                    contains_qword(out, expected[i]),
                    format_args!(
                        "paging buffer carries PTE {:#018x} (rgpu-hw format)",
                        expected[i]
                    ),
                )
            })
        };
        if ok {
            Got::Done
        } else {
            Got::Failed
        }
    } else {
        Got::Failed
    };
    record(
        "BuildPagingBuffer/UPDATE_PAGE_TABLE",
        got,
        format_args!(
            "{} mode status={:#010x}",
            if cpu_mode {
                "CPU_VIRTUAL"
            } else {
                "GPU_VIRTUAL"
            },
            st as u32
        ),
    );

    // UPDATE_PAGE_TABLE as Windows forces it for the system paging process's own tables,
    // whatever mode the driver declared: CPU_VIRTUAL with a NULL DMA buffer. The entries must
    // land in the port's table at once, in the rgpu-hw format, read back as raw bytes.
    // SAFETY: `pt` has 4096 bytes inside the 8 KiB block.
    unsafe { core::ptr::write_bytes(pt, 0, 4096) };
    let mut a = DXGKARG_BUILDPAGINGBUFFER {
        Operation: s::DXGK_OPERATION_UPDATE_PAGE_TABLE,
        ..Default::default()
    };
    a.u.UpdatePageTable = s::DXGK_BUILDPAGINGBUFFER_UPDATEPAGETABLE {
        PageTableLevel: 0,
        pPageTableEntries: ptes.as_mut_ptr(),
        StartIndex: START,
        NumPageTableEntries: ptes.len() as u32,
        UpdateMode: s::DXGK_PAGETABLEUPDATE_CPU_VIRTUAL,
        FirstPteVirtualAddress: u64::from(START) << 12,
        ..Default::default()
    };
    a.u.UpdatePageTable.PageTableAddress.u.CpuVirtual = pt.cast();
    // SAFETY: rgpu's BuildPagingBuffer with live arguments; the table and PTEs outlive it.
    let st = unsafe { bpb(h, &mut a) };
    let got = if is_not_implemented(st) {
        Got::NotImplemented(st)
    } else if check(
        st == STATUS_SUCCESS,
        format_args!("status {:#010x}", st as u32),
    ) {
        // SAFETY: `pt` is our 4 KiB page table, read as bytes as the hardware would.
        let bytes = unsafe { core::slice::from_raw_parts(pt.cast_const(), 4096) };
        let ok = (0..4).fold(true, |ok, i| {
            let at = (START as usize + i) * 8;
            let mut raw = [0u8; 8];
            raw.copy_from_slice(&bytes[at..at + 8]);
            let got = u64::from_le_bytes(raw);
            ok & check(
                got == expected[i],
                format_args!(
                    "table bytes @{:#x} = {:#018x}, rgpu-hw wants {:#018x}",
                    at, got, expected[i]
                ),
            )
        });
        let untouched = bytes[..START as usize * 8].iter().all(|&b| b == 0)
            && bytes[(START as usize + 4) * 8..].iter().all(|&b| b == 0);
        if ok & check(untouched, format_args!("no other table byte written")) {
            Got::Done
        } else {
            Got::Failed
        }
    } else {
        Got::Failed
    };
    record(
        "BuildPagingBuffer/UPDATE_PAGE_TABLE(CPU_VIRTUAL init)",
        got,
        format_args!("NULL DMA buffer status={:#010x}", st as u32),
    );

    // FLUSH_TLB for the paging process's root.
    let mut a = base_args(cursor);
    a.Operation = s::DXGK_OPERATION_FLUSH_TLB;
    a.u.FlushTlb = s::DXGK_BUILDPAGINGBUFFER_FLUSHTLB {
        RootPageTableAddress: s::D3DGPU_PHYSICAL_ADDRESS {
            SegmentId: 0,
            Padding: 0,
            SegmentOffset: 0x8_0000 << 12,
        },
        hProcess: core::ptr::null_mut(),
        StartVirtualAddress: 0,
        EndVirtualAddress: 1 << 21,
    };
    let start = dma.wrapping_add(cursor);
    // SAFETY: as above.
    let st = unsafe { bpb(h, &mut a) };
    let got = if is_not_implemented(st) {
        Got::NotImplemented(st)
    } else if check(
        st == STATUS_SUCCESS,
        format_args!("status {:#010x}", st as u32),
    ) {
        match emitted(start, dma_size - cursor, &a) {
            Some(out) => {
                cursor += out.len();
                Got::Done
            }
            None => Got::Failed,
        }
    } else {
        Got::Failed
    };
    record(
        "BuildPagingBuffer/FLUSH_TLB",
        got,
        format_args!("status={:#010x}", st as u32),
    );

    // VIRTUAL_FILL of one page with a pattern.
    const PATTERN: u32 = 0xA5C3_3C5A;
    let mut a = base_args(cursor);
    a.Operation = s::DXGK_OPERATION_VIRTUAL_FILL;
    a.u.FillVirtual = s::DXGK_BUILDPAGINGBUFFER_FILLVIRTUAL {
        hAllocation: 0x1000 as HANDLE,
        AllocationOffsetInBytes: 0,
        FillSizeInBytes: 4096,
        FillPattern: PATTERN,
        DestinationVirtualAddress: u64::from(START) << 12,
    };
    let start = dma.wrapping_add(cursor);
    // SAFETY: as above.
    let st = unsafe { bpb(h, &mut a) };
    let got = if is_not_implemented(st) {
        Got::NotImplemented(st)
    } else if check(
        st == STATUS_SUCCESS,
        format_args!("status {:#010x}", st as u32),
    ) {
        match emitted(start, dma_size - cursor, &a) {
            Some(out)
                if check(
                    contains_dword(out, PATTERN),
                    format_args!("paging buffer carries the fill pattern"),
                ) =>
            {
                Got::Done
            }
            _ => Got::Failed,
        }
    } else {
        Got::Failed
    };
    record(
        "BuildPagingBuffer/FILL",
        got,
        format_args!("status={:#010x}", st as u32),
    );
}
