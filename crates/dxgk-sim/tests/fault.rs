//! Low-resources simulation: fail_nth fails exactly the n-th injection point as Windows fails it,
//! and the systematic runner sweeps every point of a scenario.

mod common;

use common::{pfns, sys_va, unmap_va, Cb};
use dxgk_sim::fault::{systematic, Systematic};
use dxgk_sim::{IommuMode, Machine, MachineConfig, Rule};
use dxgk_sys as sys;

const TAG: u32 = u32::from_le_bytes(*b"Flt ");

/// A careful user of pool, MDL pages, a system-VA mapping, a driver MDL + IOMMU mapping and
/// contiguous memory that unwinds correctly from every failure.
fn careful(m: &Machine) -> sys::NTSTATUS {
    let cb = Cb::new(m);
    // SAFETY: pool allocation.
    let ctx = unsafe { sys::ExAllocatePoolWithTag(sys::NonPagedPoolNx, 3 * 4096, TAG) };
    if ctx.is_null() {
        return sys::STATUS_INSUFFICIENT_RESOURCES;
    }
    let status = (|| {
        let (s, h, mdl) = cb.alloc(4 * 4096);
        if s != sys::STATUS_SUCCESS {
            return s;
        }
        let s = (|| {
            let va = sys_va(mdl);
            if va.is_null() {
                return sys::STATUS_INSUFFICIENT_RESOURCES;
            }
            // SAFETY: 4 mapped pages.
            unsafe { va.write(pfns(mdl).len() as u8) };
            unmap_va(va, mdl);
            // SAFETY: MDL over the pool block.
            let dmdl = unsafe { sys::IoAllocateMdl(ctx, 3 * 4096, 0, 0, std::ptr::null_mut()) };
            if dmdl.is_null() {
                return sys::STATUS_INSUFFICIENT_RESOURCES;
            }
            // SAFETY: as above.
            unsafe { sys::MmBuildMdlForNonPagedPool(dmdl) };
            let (s, mh) = cb.map(dmdl);
            if s == sys::STATUS_SUCCESS {
                let (s2, ch, _) = cb.contig(4096);
                if s2 == sys::STATUS_SUCCESS {
                    cb.free_contig(ch);
                }
                cb.unmap(mh);
                // SAFETY: unmapped above.
                unsafe { sys::IoFreeMdl(dmdl) };
                return s2;
            }
            // SAFETY: never mapped.
            unsafe { sys::IoFreeMdl(dmdl) };
            s
        })();
        cb.free(h);
        s
    })();
    // SAFETY: the block allocated above.
    unsafe { sys::ExFreePoolWithTag(ctx, TAG) };
    status
}

#[test]
fn fail_nth_fails_exactly_the_nth_point_the_way_windows_does() {
    let m = Machine::new(MachineConfig::windows_10_1803());
    m.enter(|| {
        let cb = Cb::new(&m);
        m.fail_nth(2);
        let before = m.injection_points_reached();
        // SAFETY: point 1: succeeds.
        let p = unsafe { sys::ExAllocatePoolWithTag(sys::NonPagedPoolNx, 16, TAG) };
        assert!(!p.is_null());
        let (s, _, mdl) = cb.alloc(4096); // point 2: fails
        assert_eq!(s, sys::STATUS_INSUFFICIENT_RESOURCES);
        assert!(mdl.is_null());
        let (s, _, va) = cb.contig(4096); // point 3: succeeds again
        assert_eq!(s, sys::STATUS_SUCCESS);
        assert_eq!(m.injection_points_reached() - before, 3);
        m.fail_nth(1);
        let (s, h, _) = cb.contig(4096);
        assert_eq!((s, h.is_null()), (sys::STATUS_NO_MEMORY, true));
        let _ = va;
        // SAFETY: balanced free.
        unsafe { sys::ExFreePoolWithTag(p, TAG) };
    });
    let inj = m.injected_failures();
    assert_eq!(inj.len(), 2);
    assert_eq!(inj[0].call, "DxgkCbAllocatePagesForMdl");
    assert_eq!(inj[1].call, "DxgkCbAllocateContiguousMemory");
    assert!(
        inj[0].driver_site.contains("fault"),
        "{}",
        inj[0].driver_site
    );
    assert!(m.findings().is_empty());
}

#[test]
fn systematic_sweep_of_a_careful_scenario_is_clean_in_both_iommu_modes() {
    for config in [
        MachineConfig::windows_10_1803(),
        MachineConfig::windows_11_22h2(),
    ] {
        let mode = config.iommu;
        let report = dxgk_sim::fault::systematic_on(config, careful);
        assert_eq!(
            report.injection_points, 6,
            "pool, MDL pages, VA map, IoAllocateMdl, IOMMU map, contiguous ({mode:?})"
        );
        assert_eq!(report.runs.len(), 7);
        assert_eq!(report.runs[0].status, Some(sys::STATUS_SUCCESS));
        let calls: Vec<_> = report.runs[1..]
            .iter()
            .map(|r| r.failed_call.unwrap())
            .collect();
        assert_eq!(
            calls,
            [
                "ExAllocatePoolWithTag",
                "DxgkCbAllocatePagesForMdl",
                "MmMapLockedPagesSpecifyCache",
                "IoAllocateMdl",
                "DxgkCbMapMdlToIoMmu",
                "DxgkCbAllocateContiguousMemory"
            ]
        );
        assert_eq!(report.runs[6].status, Some(sys::STATUS_NO_MEMORY));
        assert!(report.runs[1..]
            .iter()
            .all(|r| r.status != Some(sys::STATUS_SUCCESS)));
    }
    let _ = IommuMode::Identity;
}

#[test]
fn default_runner_counts_and_prints_points() {
    let r = systematic(careful);
    assert!(r.summary().contains("6 injection point(s) exercised"));
}

#[test]
fn the_runner_catches_a_scenario_that_leaks_on_an_error_path() {
    let report = Systematic::default().run(|m: &Machine| {
        let cb = Cb::new(m);
        let (s, h, _) = cb.alloc(4096);
        if s != sys::STATUS_SUCCESS {
            return s;
        }
        let (s, ch, _) = cb.contig(4096);
        if s != sys::STATUS_SUCCESS {
            return s; // BUG: leaks the MDL pages
        }
        cb.free_contig(ch);
        cb.free(h);
        sys::STATUS_SUCCESS
    });
    assert_eq!(report.injection_points, 2);
    let bad = report.failures();
    assert_eq!(bad.len(), 1, "{}", report.summary());
    assert_eq!(bad[0].failed_call, Some("DxgkCbAllocateContiguousMemory"));
    assert!(
        bad[0].findings.iter().any(|f| f.rule == Rule::ResourceLeak),
        "{}",
        report.summary()
    );
    assert!(std::panic::catch_unwind(|| report.assert_clean()).is_err());
}

#[test]
fn the_runner_reports_crashes_and_hangs() {
    let report = Systematic {
        per_run_timeout: std::time::Duration::from_millis(500),
        ..Systematic::default()
    }
    .run(|m: &Machine| {
        let cb = Cb::new(m);
        let (s, h, mdl) = cb.alloc(4096);
        if s != sys::STATUS_SUCCESS {
            // BUG: "uses" the NULL MDL (a panic here stands in for the bugcheck).
            assert!(!mdl.is_null(), "NULL MDL dereferenced");
        }
        let (s, ch, _) = cb.contig(4096);
        if s != sys::STATUS_SUCCESS {
            std::thread::sleep(std::time::Duration::from_secs(3)); // BUG: waits forever
        } else {
            cb.free_contig(ch);
        }
        cb.free(h);
        sys::STATUS_SUCCESS
    });
    assert_eq!(report.injection_points, 2);
    assert!(
        report.runs[1]
            .crash
            .as_deref()
            .unwrap_or("")
            .contains("NULL MDL"),
        "{}",
        report.summary()
    );
    assert!(report.runs[2].hung, "{}", report.summary());
}
