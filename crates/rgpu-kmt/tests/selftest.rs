//! The selftest on the simulator backend: it passes on both IOMMU models with a clean
//! verifier, says "no rgpu adapter" (exit code 3) on a machine without rgpu hardware, and
//! fails — naming the step and the cause, still cleaning up — when the system misbehaves
//! (bytes corrupted on read-back, a fence that is never signalled, a wait that does not wait).

// The simulator backend (and these options of the CLI) exist only off Windows.
#![cfg(not(windows))]

use std::time::Duration;

use rgpu_kmt::selftest::{self, Cause, Options, Verdict, DEFAULT_SIZES, EXIT_NO_ADAPTER};
use rgpu_kmt::sim::{IommuMode, SimConfig, SimKmt};
use rgpu_kmt::*;

fn boot(iommu: IommuMode) -> SimKmt {
    SimKmt::boot(SimConfig {
        iommu,
        rgpu_hardware: true,
        soft: false,
    })
    .expect("boot")
}

fn run(k: &mut dyn Kmt, opts: &Options) -> (Verdict, String) {
    let mut log = Vec::new();
    let v = selftest::run(k, opts, &mut log);
    (v, String::from_utf8(log).unwrap())
}

fn assert_clean(k: SimKmt) {
    let end = k.shutdown();
    assert!(end.clean(), "teardown: {:?}", end);
}

#[test]
fn the_selftest_passes_on_both_iommu_models_and_leaves_the_verifier_clean() {
    for iommu in [IommuMode::Identity, IommuMode::Remapped] {
        let mut k = boot(iommu);
        let (v, log) = run(&mut k, &Options::default());
        let Verdict::Pass(s) = &v else {
            panic!("{iommu:?}: {v}\n{log}");
        };
        assert_eq!(v.exit_code(), 0);
        // Two allocations per size, a command allocation per device, shared + B's copy.
        assert_eq!(s.allocations, 2 * DEFAULT_SIZES.len() as u64 + 4, "{log}");
        // Every staging byte per size; B's copy, then A's shared allocation twice.
        let want: u64 = DEFAULT_SIZES.iter().sum::<u64>() + 3 * 64 * 1024;
        assert_eq!(s.bytes_verified, want, "{log}");
        assert_eq!(s.submissions as usize, DEFAULT_SIZES.len() + 1);
        for size in ["4 KiB", "20 KiB", "1 MiB", "16 MiB", "64 MiB"] {
            assert!(
                log.contains(&format!("ok    {size}: ")),
                "{size} missing:\n{log}"
            );
        }
        assert!(log.contains("shared: 64 KiB written by A's CPU"), "{log}");
        assert!(
            v.to_string().starts_with("rgpu-kmt selftest: PASS ("),
            "{v}"
        );
        assert_clean(k);
    }
}

#[test]
fn a_machine_without_rgpu_hardware_is_no_rgpu_adapter_not_a_failure() {
    let mut k = SimKmt::boot(SimConfig {
        iommu: IommuMode::Remapped,
        rgpu_hardware: false,
        soft: false,
    })
    .unwrap();
    assert!(!k.start_status().is_success(), "the start must fail");
    let (v, _) = run(&mut k, &Options::default());
    assert!(matches!(v, Verdict::NoAdapter(_)), "{v}");
    assert_eq!(v.exit_code(), EXIT_NO_ADAPTER);
    assert_eq!(
        v.to_string(),
        "rgpu-kmt selftest: no rgpu adapter (D3DKMTEnumAdapters2 found no adapters)"
    );
    assert_clean(k);
}

/// A backend that delegates to the simulator and misbehaves in one way.
struct Faulty {
    inner: SimKmt,
    fault: Fault,
    reads: u32,
    escapes: u32,
}

#[derive(Clone, Copy)]
enum Fault {
    /// Flip byte `offset` of the `nth` (0-based) read through Lock2.
    CorruptRead { nth: u32, offset: usize },
    /// SignalSynchronizationObjectFromGpu2 succeeds without signalling anything.
    NeverSignal,
    /// Every CPU wait reports the fences reached.
    WaitNeverWaits,
    /// The adapter's PCI IDs and driver description are some other vendor's.
    NotRgpu,
    /// The adapter has no PCI IDs (Windows' answer for a root-enumerated device is not
    /// documented: here zeros) and reports this driver description.
    RootEnumerated(&'static str),
}

impl Kmt for Faulty {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn enum_adapters2(&mut self) -> KmtResult<Vec<AdapterInfo>> {
        self.inner.enum_adapters2()
    }
    fn open_adapter_from_luid(&mut self, luid: Luid) -> KmtResult<Adapter> {
        self.inner.open_adapter_from_luid(luid)
    }
    fn query_device_ids(&mut self, adapter: Adapter) -> KmtResult<DeviceIds> {
        let ids = self.inner.query_device_ids(adapter)?;
        Ok(match self.fault {
            Fault::NotRgpu => DeviceIds {
                vendor_id: 0x1414,
                device_id: 0x8c,
                ..ids
            },
            Fault::RootEnumerated(_) => DeviceIds::default(),
            _ => ids,
        })
    }
    fn query_driver_description(&mut self, adapter: Adapter) -> KmtResult<String> {
        let d = self.inner.query_driver_description(adapter)?;
        Ok(match self.fault {
            Fault::NotRgpu => "Microsoft Basic Render Driver".to_owned(),
            Fault::RootEnumerated(d) => d.to_owned(),
            _ => d,
        })
    }
    fn close_adapter(&mut self, adapter: Adapter) -> KmtResult<()> {
        self.inner.close_adapter(adapter)
    }
    fn create_device(&mut self, adapter: Adapter) -> KmtResult<Device> {
        self.inner.create_device(adapter)
    }
    fn destroy_device(&mut self, device: Device) -> KmtResult<()> {
        self.inner.destroy_device(device)
    }
    fn create_allocation2(&mut self, d: Device, p: &[&[u8]], shared: bool) -> KmtResult<Created> {
        self.inner.create_allocation2(d, p, shared)
    }
    fn open_resource(&mut self, d: Device, s: GlobalShare) -> KmtResult<Vec<Opened>> {
        self.inner.open_resource(d, s)
    }
    fn destroy_allocation2(&mut self, d: Device, a: &[Allocation]) -> KmtResult<()> {
        self.inner.destroy_allocation2(d, a)
    }
    fn reserve_gpu_virtual_address(&mut self, a: Adapter, base: u64, size: u64) -> KmtResult<u64> {
        self.inner.reserve_gpu_virtual_address(a, base, size)
    }
    fn map_gpu_virtual_address(
        &mut self,
        d: Device,
        va: u64,
        a: Allocation,
        pages: u64,
    ) -> KmtResult<u64> {
        self.inner.map_gpu_virtual_address(d, va, a, pages)
    }
    fn free_gpu_virtual_address(&mut self, a: Adapter, base: u64, size: u64) -> KmtResult<()> {
        self.inner.free_gpu_virtual_address(a, base, size)
    }
    fn make_resident(&mut self, d: Device, a: &[Allocation]) -> KmtResult<()> {
        self.inner.make_resident(d, a)
    }
    fn evict(&mut self, d: Device, a: &[Allocation]) -> KmtResult<u64> {
        self.inner.evict(d, a)
    }
    fn create_context_virtual(&mut self, d: Device, node: u32) -> KmtResult<Context> {
        self.inner.create_context_virtual(d, node)
    }
    fn submit_command(&mut self, c: Context, commands: u64, length: u32) -> KmtResult<()> {
        self.inner.submit_command(c, commands, length)
    }
    fn create_monitored_fence(&mut self, d: Device, initial: u64) -> KmtResult<Fence> {
        self.inner.create_monitored_fence(d, initial)
    }
    fn signal_from_gpu2(&mut self, c: Context, f: &[Fence], value: u64) -> KmtResult<()> {
        match self.fault {
            Fault::NeverSignal => Ok(()),
            _ => self.inner.signal_from_gpu2(c, f, value),
        }
    }
    fn wait_from_cpu(&mut self, d: Device, f: &[(Fence, u64)], t: Duration) -> KmtResult<Wait> {
        match self.fault {
            Fault::WaitNeverWaits => Ok(Wait::Reached),
            _ => self.inner.wait_from_cpu(d, f, t),
        }
    }
    fn destroy_synchronization_object(&mut self, f: Fence) -> KmtResult<()> {
        self.inner.destroy_synchronization_object(f)
    }
    fn lock2(&mut self, d: Device, a: Allocation) -> KmtResult<u64> {
        self.inner.lock2(d, a)
    }
    fn read_locked(&mut self, d: Device, a: Allocation, off: u64, out: &mut [u8]) -> KmtResult<()> {
        self.inner.read_locked(d, a, off, out)?;
        if let Fault::CorruptRead { nth, offset } = self.fault {
            if self.reads == nth {
                out[offset] ^= 0x40;
            }
        }
        self.reads += 1;
        Ok(())
    }
    fn write_locked(&mut self, d: Device, a: Allocation, off: u64, data: &[u8]) -> KmtResult<()> {
        self.inner.write_locked(d, a, off, data)
    }
    fn unlock2(&mut self, d: Device, a: Allocation) -> KmtResult<()> {
        self.inner.unlock2(d, a)
    }
    fn escape(&mut self, a: Adapter, d: Option<Device>, data: &mut [u8]) -> KmtResult<()> {
        self.escapes += 1;
        self.inner.escape(a, d, data)
    }
}

/// Runs the selftest (sizes 4 KiB and 64 KiB) with `fault`; returns the verdict after checking
/// that the failed run still cleaned up (no leak, verifier clean).
fn faulty(fault: Fault) -> Verdict {
    faulty_run(fault).0
}

/// [`faulty`], also returning the log and how many escapes reached the adapter.
fn faulty_run(fault: Fault) -> (Verdict, String, u32) {
    let mut k = Faulty {
        inner: boot(IommuMode::Remapped),
        fault,
        reads: 0,
        escapes: 0,
    };
    let opts = Options {
        sizes: vec![4096, 64 * 1024],
    };
    let (v, log) = run(&mut k, &opts);
    let escapes = k.escapes;
    assert_clean(k.inner);
    (v, log, escapes)
}

#[test]
fn a_corrupted_byte_in_the_read_back_fails_at_that_size_and_offset() {
    // Reads: 0 = 4 KiB staging, 1 = 64 KiB staging. 64 KiB's upper half came from COPY.
    let v = faulty(Fault::CorruptRead {
        nth: 1,
        offset: 40000,
    });
    assert_eq!(v.exit_code(), 1);
    let Verdict::Fail(f) = &v else { panic!("{v}") };
    assert_eq!(f.step, "64 KiB: read-back through Lock2");
    let Cause::Mismatch {
        offset,
        count,
        expected,
        got,
        ..
    } = &f.cause
    else {
        panic!("{v}")
    };
    assert_eq!((*offset, *count, *expected ^ *got), (40000, 1, 0x40));
    assert!(
        v.to_string()
            .starts_with("rgpu-kmt selftest: FAIL at 64 KiB: read-back"),
        "{v}"
    );
}

#[test]
fn a_corrupted_byte_in_the_shared_allocation_is_caught_on_each_device() {
    // Reads 2 and 3: device B's copy, then device A's view of the shared allocation.
    for (nth, step) in [
        (2, "shared: read-back on device B"),
        (3, "shared: read-back on device A"),
    ] {
        let v = faulty(Fault::CorruptRead { nth, offset: 5 });
        let Verdict::Fail(f) = &v else { panic!("{v}") };
        assert_eq!(f.step, step, "{v}");
        assert!(matches!(f.cause, Cause::Mismatch { offset: 5, .. }), "{v}");
    }
}

#[test]
fn a_fence_that_is_never_signalled_fails_the_first_submission() {
    let v = faulty(Fault::NeverSignal);
    let Verdict::Fail(f) = &v else { panic!("{v}") };
    assert_eq!(f.step, "4 KiB: FILL, FILL, COPY on device A");
    assert!(
        f.cause.to_string().contains("fence value 1 not reached"),
        "{v}"
    );
}

#[test]
fn a_wait_that_returns_before_the_fence_is_signalled_is_caught() {
    let v = faulty(Fault::WaitNeverWaits);
    let Verdict::Fail(f) = &v else { panic!("{v}") };
    assert!(
        f.cause
            .to_string()
            .contains("ended (Reached) before anything signalled it"),
        "{v}"
    );
}

#[test]
fn an_adapter_without_rgpu_pci_ids_is_not_used() {
    let (v, _, escapes) = faulty_run(Fault::NotRgpu);
    assert_eq!(v.exit_code(), EXIT_NO_ADAPTER);
    assert!(
        v.to_string().contains("none is rgpu")
            && v.to_string().contains("1414:008c")
            && v.to_string().contains("\"Microsoft Basic Render Driver\""),
        "{v}"
    );
    assert_eq!(escapes, 0, "no escape may reach another vendor's adapter");
}

#[test]
fn a_root_enumerated_adapter_is_recognised_by_its_inf_description_then_the_identity_escape() {
    // The INF's description of ROOT\RGPU (checked against inf/rgpu.inx below).
    let root = "rgpu render-only GPU (root-enumerated test device)";
    let (v, log, escapes) = faulty_run(Fault::RootEnumerated(root));
    assert_eq!(v.exit_code(), 0, "{v}\n{log}");
    assert!(
        log.contains(&format!("(driver description \"{root}\")")),
        "{log}"
    );
    assert!(escapes > 0);

    // Without rgpu's PCI IDs, another description is not rgpu, and gets no escape.
    let (v, _, escapes) = faulty_run(Fault::RootEnumerated("Microsoft Basic Render Driver"));
    assert_eq!(v.exit_code(), EXIT_NO_ADAPTER, "{v}");
    assert!(v.to_string().contains("is 0000:0000"), "{v}");
    assert_eq!(escapes, 0);
}

#[test]
fn the_selftest_passes_on_a_root_enumerated_soft_adapter_found_by_its_driver_description() {
    let mut k = SimKmt::boot(SimConfig {
        iommu: IommuMode::Identity,
        rgpu_hardware: false,
        soft: true,
    })
    .expect("boot");
    assert!(k.start_status().is_success(), "a root device starts soft");
    assert!(k.machine().debug_contains("soft rgpu"));
    let (v, log) = run(&mut k, &Options::default());
    assert_eq!(v.exit_code(), 0, "{v}\n{log}");
    assert!(
        log.contains(&format!(
            "(driver description \"{}\")",
            rgpu_kmt::sim::SIM_ROOT_DRIVER_DESCRIPTION
        )),
        "{log}"
    );
    let Verdict::Pass(s) = &v else { panic!("{v}") };
    let want: u64 = DEFAULT_SIZES.iter().sum::<u64>() + 3 * 64 * 1024;
    assert_eq!(s.bytes_verified, want, "{log}");
    assert_clean(k);
}

#[test]
fn every_inf_device_description_starts_with_the_prefix_clients_match() {
    let inf = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../inf/rgpu.inx"))
        .unwrap();
    let descriptions: Vec<&str> = inf
        .lines()
        .filter(|l| l.trim_start().starts_with("rgpu.") && l.contains("DeviceDesc"))
        .filter_map(|l| l.split('"').nth(1))
        .collect();
    assert_eq!(descriptions.len(), 2, "{descriptions:?}");
    for d in descriptions {
        assert!(d.starts_with(RGPU_DRIVER_DESCRIPTION_PREFIX), "{d}");
    }
    assert!(inf.contains("rgpu render-only GPU (root-enumerated test device)"));
    assert_eq!(
        rgpu_kmt::sim::SIM_DRIVER_DESCRIPTION,
        "rgpu render-only GPU"
    );
}

#[test]
fn sizes_that_are_not_multiples_of_8_are_refused_before_anything_runs() {
    let mut k = boot(IommuMode::Identity);
    let (v, log) = run(&mut k, &Options { sizes: vec![4092] });
    assert!(log.is_empty(), "{log}");
    let Verdict::Fail(f) = &v else { panic!("{v}") };
    assert_eq!(f.step, "options");
    assert_clean(k);
}

#[test]
fn the_pci_ids_are_the_ones_the_inf_binds() {
    let inf = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../inf/rgpu.inx"))
        .unwrap();
    let id = format!("PCI\\VEN_{RGPU_PCI_VENDOR_ID:04X}&DEV_{RGPU_PCI_DEVICE_ID:04X}");
    assert!(inf.contains(&id), "inf/rgpu.inx does not bind {id}");
}
