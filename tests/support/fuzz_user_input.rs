//! Fuzz harness for what user mode hands rgpu directly: the escape buffer (DxgkDdiEscape) and
//! the allocation private data (DxgkDdiCreateAllocation), both through dxgk-sim's D3DKMT front
//! end (`dxgk_sim::kmt`) on a started adapter. Shared by the cargo-fuzz target
//! `fuzz/fuzz_targets/user_input.rs` (included with `#[path]`) and `tests/fuzz_user_input.rs`,
//! which replays `fuzz/seeds/user_input/` and `fuzz/regressions/user_input/` under
//! `cargo test`.
//!
//! # Input
//!
//! Byte 0 picks the call: even → D3DKMTCreateAllocation2 with bytes 1.. as one allocation's
//! private data; odd → D3DKMTEscape with bytes 1.. as the escape buffer. The rest is passed
//! as is: these bytes are exactly what an untrusted process controls.
//!
//! One bound keeps memory finite: an allocation size (bytes 17..25 of the input, the private
//! data's `size_bytes`) between [`MAX_FUZZ_BYTES`] and rgpu-abi's maximum is lowered to
//! [`MAX_FUZZ_BYTES`] before the call; sizes above the maximum stay (they must be refused).
//!
//! # Invariants checked per input
//!
//! * The status is exactly what `rgpu_abi`'s decoder says about the bytes, mapped by
//!   `rgpu::allocation::abi_status` (plus the aperture bound for allocations).
//! * A successful escape's answer decodes; a successful allocation has the size (rounded to
//!   pages) and CpuVisible the data asked for, and is destroyed again.
//! * No allocation stays alive, and the verifier has no findings (each input).
//!
//! # State
//!
//! One machine, adapter, front end and client per thread, rebuilt every [`RESET_EVERY`] inputs
//! with the simulator's leak checks.

#![allow(dead_code)]

use std::cell::RefCell;
use std::mem::ManuallyDrop;

use dxgk_sim::kmt::{self, ClientId, CreateAllocation2, CreateDevice, D3dkmtHandle, Kmt};
use dxgk_sim::{AdapterConfig, AdapterId, Machine, MachineConfig, Vidmm};
use dxgk_sys as sys;
use rgpu_abi::allocation::MAX_ALLOCATION_BYTES;
use rgpu_abi::{AllocationData, Counters, EscapeRequest, Identity, SegmentPreference};

/// Largest allocation the harness lets reach VidMm.
pub const MAX_FUZZ_BYTES: u64 = 16 << 20;
/// Inputs per machine before it is rebuilt.
pub const RESET_EVERY: u32 = 512;

/// A started adapter with the front end and one client with an adapter and a device.
pub struct UserFixture {
    m: Machine,
    id: AdapterId,
    /// Not dropped implicitly: a fixture still alive when the process exits (libFuzzer exits
    /// from `main`) is leaked there, since VidMm's teardown needs thread-locals that are gone
    /// by then. [`UserFixture::teardown`] takes it out and tears it down properly.
    k: Option<ManuallyDrop<Kmt>>,
    c: ClientId,
    adapter: D3dkmtHandle,
    device: D3dkmtHandle,
    inputs: u32,
}

impl UserFixture {
    fn new() -> Self {
        let m = Machine::new(MachineConfig::windows_11_22h2());
        assert_eq!(m.load_driver(rgpu::ddi::DriverEntry), sys::STATUS_SUCCESS);
        let id = m.add_adapter(AdapterConfig {
            device: Some(Box::new(dxgk_sim::devices::RgpuDevice::new())),
        });
        assert_eq!(m.start_adapter(id), sys::STATUS_SUCCESS);
        let mut k = Kmt::new(Vidmm::new(&m, id).expect("VidMm"));
        let c = k.create_client();
        let adapter = k.enum_adapters2(c).expect("adapters")[0].h_adapter;
        let mut dev = CreateDevice {
            h_adapter: adapter,
            ..Default::default()
        };
        k.create_device(c, &mut dev).expect("device");
        Self {
            m,
            id,
            k: Some(ManuallyDrop::new(k)),
            c,
            adapter,
            device: dev.h_device,
            inputs: 0,
        }
    }

    fn kmt(&mut self) -> &mut Kmt {
        self.k.as_mut().expect("front end")
    }

    fn teardown(mut self) {
        let k = ManuallyDrop::into_inner(self.k.take().expect("front end"));
        k.destroy()
            .expect("front end teardown")
            .destroy()
            .expect("VidMm teardown");
        assert_eq!(self.m.stop_adapter(self.id), sys::STATUS_SUCCESS);
        assert_eq!(self.m.remove_adapter(self.id), sys::STATUS_SUCCESS);
        self.m.unload_driver();
        self.m.check_leaks();
        let f = self.m.findings();
        assert!(f.is_empty(), "teardown: verifier findings: {f:#?}");
    }
}

thread_local! {
    static FIXTURE: RefCell<Option<UserFixture>> = const { RefCell::new(None) };
}

/// Tears down this thread's fixture (with the leak checks), if it has one.
pub fn finish_thread() {
    if let Some(fx) = FIXTURE.with(|cell| cell.borrow_mut().take()) {
        fx.teardown();
    }
}

/// What the harness did with one input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// An allocation: its status.
    Allocation(sys::NTSTATUS),
    /// An escape: its status.
    Escape(sys::NTSTATUS),
}

fn status(r: Result<(), i32>) -> sys::NTSTATUS {
    r.err().unwrap_or(sys::STATUS_SUCCESS)
}

/// Runs one input (see the module documentation) and checks its invariants.
pub fn run_user_input(data: &[u8]) -> Outcome {
    FIXTURE.with(|cell| {
        let mut slot = cell.borrow_mut();
        let fx = slot.get_or_insert_with(UserFixture::new);
        fx.inputs += 1;
        let out = match data.split_first() {
            Some((sel, rest)) if sel % 2 == 1 => escape(fx, rest),
            Some((_, rest)) => allocation(fx, rest),
            None => allocation(fx, &[]),
        };
        let f = fx.m.findings();
        assert!(f.is_empty(), "{out:?}: verifier findings: {f:#?}");
        if fx.inputs >= RESET_EVERY {
            if let Some(old) = slot.take() {
                old.teardown();
            }
        }
        out
    })
}

fn allocation(fx: &mut UserFixture, bytes: &[u8]) -> Outcome {
    let mut data = bytes.to_vec();
    if data.len() >= 24 {
        let mut w = [0u8; 8];
        w.copy_from_slice(&data[16..24]);
        let size = u64::from_le_bytes(w);
        if size > MAX_FUZZ_BYTES && size <= MAX_ALLOCATION_BYTES {
            data[16..24].copy_from_slice(&MAX_FUZZ_BYTES.to_le_bytes());
        }
    }
    let expected = match AllocationData::decode(&data) {
        Err(e) => Err(rgpu::allocation::abi_status(e).raw()),
        Ok(d)
            if d.segment == SegmentPreference::Aperture
                && d.size_bytes > rgpu::caps::APERTURE_SEGMENT_SIZE as u64 =>
        {
            Err(sys::STATUS_INVALID_PARAMETER)
        }
        Ok(d) => Ok(d),
    };
    let (c, device) = (fx.c, fx.device);
    let k = fx.kmt();
    let mut args = CreateAllocation2 {
        h_device: device,
        allocations: vec![kmt::AllocationInfo2 {
            private_driver_data: data,
            h_allocation: 0,
        }],
        ..Default::default()
    };
    let r = k.create_allocation2(c, &mut args);
    let s = status(r);
    match expected {
        Err(want) => assert_eq!(s, want, "refused with the decoder's status"),
        Ok(d) => {
            assert_eq!(s, sys::STATUS_SUCCESS, "{d:?} accepted");
            let h = args.allocations[0].h_allocation;
            let p = k.placement(c, device, h).expect("placement");
            assert_eq!(p.size, d.size_bytes.div_ceil(4096) * 4096, "{d:?}");
            assert_eq!(p.cpu_visible, d.cpu_access.any(), "{d:?}");
            k.destroy_allocation2(
                c,
                &kmt::DestroyAllocation2 {
                    h_device: device,
                    allocations: vec![h],
                    flags: Default::default(),
                },
            )
            .expect("destroy");
        }
    }
    assert_eq!(k.live_allocations(), 0, "nothing stays alive");
    Outcome::Allocation(s)
}

fn escape(fx: &mut UserFixture, bytes: &[u8]) -> Outcome {
    let expected = EscapeRequest::decode(bytes).map_err(|e| rgpu::allocation::abi_status(e).raw());
    let (c, adapter) = (fx.c, fx.adapter);
    let mut args = kmt::Escape {
        h_adapter: adapter,
        h_device: 0,
        private_driver_data: bytes.to_vec(),
    };
    let s = status(fx.kmt().escape(c, &mut args));
    match expected {
        Err(want) => {
            assert_eq!(s, want, "refused with the decoder's status");
            assert_eq!(
                args.private_driver_data, bytes,
                "a refused buffer is untouched"
            );
        }
        Ok(req) => {
            assert_eq!(s, sys::STATUS_SUCCESS, "{req:?} answered");
            let answer = &args.private_driver_data;
            match req {
                EscapeRequest::Identity => {
                    Identity::decode(answer).expect("identity answer");
                }
                EscapeRequest::Counters => {
                    let n = Counters::decode(answer).expect("counters answer");
                    assert_eq!(n.values[2], 0, "no allocation alive between inputs");
                }
            }
        }
    }
    Outcome::Escape(s)
}

/// Hand-made seeds: (name, input bytes).
pub fn user_input_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let with = |sel: u8, body: &[u8]| {
        let mut v = vec![sel];
        v.extend_from_slice(body);
        v
    };
    let mut ident = vec![0u8; rgpu_abi::escape::IDENTITY_BYTES];
    EscapeRequest::Identity.encode_into(&mut ident).unwrap();
    let mut counters = vec![0u8; rgpu_abi::escape::COUNTERS_BYTES];
    EscapeRequest::Counters.encode_into(&mut counters).unwrap();
    let mut bad_version = ident.clone();
    bad_version[0] = 2;
    let mut ring = AllocationData::buffer(70_000);
    ring.kind = rgpu_abi::AllocationKind::RingVisible;
    ring.segment = SegmentPreference::Aperture;
    vec![
        (
            "alloc_buffer",
            with(0, &AllocationData::buffer(4096).encode()),
        ),
        (
            "alloc_staging",
            with(0, &AllocationData::staging(65536).encode()),
        ),
        ("alloc_ring_aperture", with(0, &ring.encode())),
        (
            "alloc_short",
            with(0, &AllocationData::buffer(4096).encode()[..20]),
        ),
        ("escape_identity", with(1, &ident)),
        ("escape_counters", with(1, &counters)),
        ("escape_bad_version", with(1, &bad_version)),
        ("escape_empty", vec![1]),
    ]
}
