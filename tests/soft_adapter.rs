//! Soft rgpu in the driver: a root-enumerated adapter (no resources at all) starts in soft mode,
//! its engine thread consumes the ring the driver writes when the doorbell wakes it and raises
//! completion through DxgkCbSynchronizeExecution → the driver's own ISR logic → DPC; an injected hang
//! stops the engine until the TDR reset; stop and remove join the thread and leak nothing —
//! in both IOMMU modes, verifier clean.

use dxgk_sim::{AdapterId, InterruptNotification, Machine, PnpState};
use dxgk_sys as sys;

mod support;
use support::{boot_soft, machines, set_adapter_power};

/// Loads rgpu and starts one root-enumerated adapter.
/// The driver's adapter behind `id`'s MiniportDeviceContext.
fn adapter(m: &Machine, id: AdapterId) -> &rgpu::adapter::Adapter {
    let ctx = m.adapter(id).context as *const rgpu::adapter::Adapter;
    // SAFETY: the context AddDevice returned, live until RemoveDevice (the tests stop using
    // it before removing); only shared access.
    unsafe { &*ctx }
}

fn preempt(m: &Machine, id: AdapterId, preemption_fence: u32) -> sys::NTSTATUS {
    let f = m
        .registered_driver()
        .unwrap()
        .DxgkDdiPreemptCommand
        .unwrap();
    let ctx = m.adapter(id).context;
    let args = sys::DXGKARG_PREEMPTCOMMAND {
        PreemptionFenceId: preemption_fence,
        ..Default::default()
    };
    // SAFETY: the adapter's context and a valid argument block.
    m.enter(|| unsafe { f(ctx, &args) })
}

/// Waits (bounded: a hang detector, not a timing assertion) until `n` notifications past
/// `from` were recorded by the engine thread.
fn wait_notifications(
    m: &Machine,
    id: AdapterId,
    from: usize,
    n: usize,
) -> Vec<InterruptNotification> {
    for _ in 0..20_000 {
        let got = m.interrupt_notifications_since(id, from);
        if got.len() >= n {
            return got;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    panic!("the soft engine raised no interrupt: {:?}", m.findings());
}

fn finish(m: &Machine, id: AdapterId) {
    if m.adapter(id).state == PnpState::Started {
        assert_eq!(m.stop_adapter(id), sys::STATUS_SUCCESS);
    }
    assert_eq!(m.remove_adapter(id), sys::STATUS_SUCCESS);
    m.unload_driver();
    assert_eq!((m.live_iommu_mappings(), m.live_mdl_allocations()), (0, 0));
    m.assert_clean();
}

#[test]
fn a_root_enumerated_adapter_starts_soft_and_its_engine_thread_raises_preemption_through_the_isr() {
    for config in machines() {
        let (m, id) = boot_soft(config);
        let a = adapter(&m, id);
        assert!(a.started().unwrap().mmio().soft().is_some(), "soft mode");
        let dpcs = m.notified_dpcs(id);
        // The fence-only NOP of PreemptCommand: the engine reads it from the ring page,
        // writes the fence page and raises INT_FENCE; the ISR answers DMA_PREEMPTED.
        assert_eq!(preempt(&m, id, 77), sys::STATUS_SUCCESS);
        let got = wait_notifications(&m, id, 0, 1);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].kind, sys::DXGK_INTERRUPT_DMA_PREEMPTED.0);
        assert_eq!((got[0].preemption_fence, got[0].fence), (77, 0));
        let stats = m.enter(|| a.started().unwrap().mmio().soft().unwrap().stats());
        assert_eq!(stats.faults, 0);
        // The DPC the ISR queued ran (DxgkCbNotifyDpc).
        for _ in 0..20_000 {
            if m.notified_dpcs(id) > dpcs {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(m.notified_dpcs(id) > dpcs, "DPC ran");
        // Again: the engine thread is woken per doorbell.
        assert_eq!(preempt(&m, id, 78), sys::STATUS_SUCCESS);
        let got = wait_notifications(&m, id, 1, 1);
        assert_eq!(got[0].preemption_fence, 78);
        finish(&m, id);
    }
}

#[test]
fn an_injected_hang_stops_the_engine_until_the_tdr_reset_recovers_it() {
    for config in machines() {
        let (m, id) = boot_soft(config);
        let a = adapter(&m, id);
        let d = m.registered_driver().unwrap();
        let ctx = m.adapter(id).context;
        // An injected hang: the doorbell wakes the engine, which consumes nothing.
        a.started().unwrap().mmio().soft().unwrap().inject_hang();
        assert_eq!(preempt(&m, id, 5), sys::STATUS_SUCCESS);
        let before = m.interrupt_notifications(id).len();
        // The TDR's reset clears the hang; after the restart the engine runs again.
        let reset = d.DxgkDdiResetFromTimeout.unwrap();
        let restart = d.DxgkDdiRestartFromTimeout.unwrap();
        m.enter(|| {
            assert_eq!(a.soft_engine_running(), Some(true));
            // SAFETY: the adapter's context.
            assert_eq!(unsafe { reset(ctx) }, sys::STATUS_SUCCESS);
            assert_eq!(
                a.soft_engine_running(),
                Some(false),
                "the TDR reset ends the thread"
            );
            // SAFETY: as above.
            assert_eq!(unsafe { restart(ctx) }, sys::STATUS_SUCCESS);
            assert_eq!(
                a.soft_engine_running(),
                Some(true),
                "the restart starts a new one"
            );
        });
        assert_eq!(preempt(&m, id, 6), sys::STATUS_SUCCESS);
        let got = wait_notifications(&m, id, before, 1);
        assert_eq!(
            got.last().unwrap().kind,
            sys::DXGK_INTERRUPT_DMA_PREEMPTED.0,
            "{got:?}"
        );
        assert_eq!(got.last().unwrap().preemption_fence, 6);
        // The hung request was never answered: the engine consumed nothing before the reset,
        // which abandoned it with the old ring.
        assert!(m
            .interrupt_notifications(id)
            .iter()
            .all(|n| n.preemption_fence != 5));
        finish(&m, id);
    }
}

#[test]
fn power_down_and_up_and_surprise_removal_keep_the_soft_engine_consistent() {
    for config in machines() {
        let (m, id) = boot_soft(config);
        let ctx = m.adapter(id).context;
        let d = m.registered_driver().unwrap();
        m.enter(|| {
            for (state, running) in [(sys::PowerDeviceD3, false), (sys::PowerDeviceD0, true)] {
                assert_eq!(set_adapter_power(&m, id, state), sys::STATUS_SUCCESS);
                // D3 ends the engine's thread, D0 starts a new one.
                assert_eq!(adapter(&m, id).soft_engine_running(), Some(running));
            }
        });
        // D0 reset, identified and reprogrammed the soft device: the engine runs again.
        assert_eq!(preempt(&m, id, 9), sys::STATUS_SUCCESS);
        let got = wait_notifications(&m, id, 0, 1);
        assert_eq!(got[0].preemption_fence, 9);
        // Surprise removal: the device is not touched any more, nothing new is queued.
        let remove = d.DxgkDdiNotifySurpriseRemoval.unwrap();
        // SAFETY: the adapter context; removal type 0 (a surprise unplug).
        let s = m.enter(|| unsafe { remove(ctx, sys::DXGK_SURPRISE_REMOVAL_TYPE(0)) });
        assert_eq!(s, sys::STATUS_SUCCESS);
        assert_ne!(preempt(&m, id, 10), sys::STATUS_SUCCESS);
        // Stop and remove join the engine thread; nothing leaks (finish checks).
        finish(&m, id);
    }
}

#[test]
fn every_injected_failure_while_a_soft_adapter_starts_runs_and_stops_is_a_clean_ntstatus() {
    for config in machines() {
        let name = config.name.clone();
        let report = dxgk_sim::fault::systematic_on(config, |m| {
            // A doorbell for the engine thread, then stop joins it.
            support::soft_sweep_run(m, |m, id| {
                let _ = preempt(m, id, 3);
            })
        });
        println!("{name}: {}", report.summary().lines().next().unwrap_or(""));
        assert!(
            report.injection_points >= 5,
            "soft device pool block, ring, fence, GART, engine thread: {}",
            report.injection_points
        );
        report.assert_clean();
    }
}

/// A raw MDL in `raw` over `page` (one 4 KiB page of memory), as VidMm passes one to
/// MAP_APERTURE_SEGMENT: mapped (MDL_SOURCE_IS_NONPAGED_POOL + MappedSystemVa), PFN `pfn`.
fn one_page_mdl(raw: &mut [u64; 8], page: &mut [u8], pfn: usize) -> *mut sys::MDL {
    let mdl = raw.as_mut_ptr().cast::<sys::MDL>();
    let header = sys::MDL {
        Size: (std::mem::size_of::<sys::MDL>() + 8) as i16,
        MdlFlags: sys::MDL_SOURCE_IS_NONPAGED_POOL | sys::MDL_MAPPED_TO_SYSTEM_VA,
        MappedSystemVa: page.as_mut_ptr().cast(),
        StartVa: page.as_mut_ptr().cast(),
        ByteCount: 4096,
        ..Default::default()
    };
    // SAFETY: `raw` (64 bytes, 8-byte aligned) holds the 48-byte header and one PFN.
    unsafe { mdl.write(header) };
    // SAFETY: the PFN slot right after the header, inside `raw`.
    let pfns = unsafe { sys::MmGetMdlPfnArray(mdl) };
    // SAFETY: as above.
    unsafe { pfns.write(pfn) };
    mdl
}

/// One aperture paging operation (MAP or UNMAP of one page) through DxgkDdiBuildPagingBuffer.
fn aperture_op(
    m: &Machine,
    id: AdapterId,
    context: sys::HANDLE,
    map: Option<*mut sys::MDL>,
    aperture_page: usize,
) -> sys::NTSTATUS {
    let d = m.registered_driver().unwrap();
    let mut dma = [0u8; 64];
    let mut b = sys::DXGKARG_BUILDPAGINGBUFFER {
        pDmaBuffer: dma.as_mut_ptr().cast(),
        DmaSize: dma.len() as u32,
        hSystemContext: context,
        ..Default::default()
    };
    match map {
        Some(mdl) => {
            b.Operation = sys::DXGK_OPERATION_MAP_APERTURE_SEGMENT;
            b.u.MapApertureSegment.SegmentId = rgpu::caps::APERTURE_SEGMENT_ID;
            b.u.MapApertureSegment.OffsetInPages = aperture_page;
            b.u.MapApertureSegment.NumberOfPages = 1;
            b.u.MapApertureSegment.pMdl = mdl;
        }
        None => {
            b.Operation = sys::DXGK_OPERATION_UNMAP_APERTURE_SEGMENT;
            b.u.UnmapApertureSegment.SegmentId = rgpu::caps::APERTURE_SEGMENT_ID;
            b.u.UnmapApertureSegment.OffsetInPages = aperture_page;
            b.u.UnmapApertureSegment.NumberOfPages = 1;
        }
    }
    let ctx = m.adapter(id).context;
    // SAFETY: the adapter context; the MDL and the DMA buffer outlive the call.
    m.enter(|| unsafe { d.DxgkDdiBuildPagingBuffer.unwrap()(ctx, &mut b) })
}

#[test]
fn a_root_page_table_in_the_aperture_is_programmed_at_the_logical_page_the_gart_maps() {
    const PFN: usize = 0x12_3456;
    const APERTURE_PAGE: usize = 40;
    for config in machines() {
        let (m, id) = boot_soft(config);
        let a = adapter(&m, id);
        let d = m.registered_driver().unwrap();
        let ctx = m.adapter(id).context;
        // The system paging process, its device and context, as VidMm creates them.
        let mut pa = sys::DXGKARG_CREATEPROCESS::default();
        pa.Flags.set_SystemProcess(1);
        // SAFETY: the adapter context and a valid argument block.
        let st = m.enter(|| unsafe { d.DxgkDdiCreateProcess.unwrap()(ctx, &mut pa) });
        assert_eq!(st, sys::STATUS_SUCCESS);
        let mut da = sys::DXGKARG_CREATEDEVICE {
            hKmdProcess: pa.hKmdProcess,
            ..Default::default()
        };
        // SAFETY: as above.
        let st = m.enter(|| unsafe { d.DxgkDdiCreateDevice.unwrap()(ctx, &mut da) });
        assert_eq!(st, sys::STATUS_SUCCESS);
        let mut ca = sys::DXGKARG_CREATECONTEXT::default();
        ca.Flags.set_SystemContext(1);
        // SAFETY: the device just created and a valid argument block.
        let st = m.enter(|| unsafe { d.DxgkDdiCreateContext.unwrap()(da.hDevice, &mut ca) });
        assert_eq!(st, sys::STATUS_SUCCESS);

        let set_root = |offset: u64| {
            let mut args = sys::DXGKARG_SETROOTPAGETABLE {
                hContext: ca.hContext,
                NumEntries: 512,
                ..Default::default()
            };
            args.Address.SegmentId = rgpu::caps::APERTURE_SEGMENT_ID;
            args.Address.SegmentOffset = offset;
            // SAFETY: the adapter context and a valid argument block.
            m.enter(|| unsafe { d.DxgkDdiSetRootPageTable.unwrap()(ctx, &args) });
        };
        let asid = u32::from(rgpu::paging::PAGING_ASID);
        let root_register = || {
            let regs = a.started().unwrap().mmio();
            m.enter(|| {
                u64::from(regs.read(rgpu_hw::regs::asid_root_lo(asid)))
                    | (u64::from(regs.read(rgpu_hw::regs::asid_root_hi(asid))) << 32)
            })
        };
        // An aperture offset nothing is mapped at is refused: the root stays as it was.
        let before = root_register();
        set_root((APERTURE_PAGE * 4096) as u64);
        assert_eq!(root_register(), before);
        assert!(m.debug_contains("SetRootPageTable: "));
        // After MAP_APERTURE_SEGMENT the root at that aperture page is the MDL's page.
        let mut raw = [0u64; 8];
        let mut page = vec![0u8; 2 * 4096];
        let at = page.as_ptr().align_offset(4096);
        let mdl = one_page_mdl(&mut raw, &mut page[at..at + 4096], PFN);
        assert_eq!(
            aperture_op(&m, id, ca.hContext, Some(mdl), APERTURE_PAGE),
            0
        );
        set_root((APERTURE_PAGE * 4096) as u64);
        assert_eq!(root_register(), (PFN as u64) << 12);
        // Unmap, destroy in order, stop, remove: nothing leaks.
        assert_eq!(aperture_op(&m, id, ca.hContext, None, APERTURE_PAGE), 0);
        // SAFETY: the objects created above, each destroyed once, context first.
        let st = m.enter(|| unsafe { d.DxgkDdiDestroyContext.unwrap()(ca.hContext) });
        assert_eq!(st, sys::STATUS_SUCCESS);
        // SAFETY: as above.
        let st = m.enter(|| unsafe { d.DxgkDdiDestroyDevice.unwrap()(da.hDevice) });
        assert_eq!(st, sys::STATUS_SUCCESS);
        // SAFETY: as above.
        let st = m.enter(|| unsafe { d.DxgkDdiDestroyProcess.unwrap()(ctx, pa.hKmdProcess) });
        assert_eq!(st, sys::STATUS_SUCCESS);
        finish(&m, id);
    }
}

/// Where soft rgpu does not run, and how it says so. A soft adapter never opts in to DMA
/// remapping (root-enumerated: known at AddDevice), so:
/// * on a Windows 11 machine whose IOMMU remaps, it starts (its own memory from the WDDM 2.4
///   callbacks) but VidMm cannot place the paging process in the aperture: MDL pages are not
///   device addresses under a remapping IOMMU, a configuration Windows does not give an adapter
///   that did not opt in (it maps such an adapter 1:1). VidMm's set-up fails with a precise
///   error and stop / remove / unload leave nothing behind;
/// * on a machine with memory above the 40-bit reach rgpu reports, Dxgkrnl refuses the start
///   (STATUS_NOT_SUPPORTED), as for any adapter that cannot reach all memory without remapping.
#[test]
fn a_soft_adapter_is_refused_cleanly_where_it_would_need_dma_remapping() {
    use dxgk_sim::{IommuMode, MachineConfig, Vidmm, VidmmError};
    let config = MachineConfig::windows_11_22h2().with_iommu(IommuMode::Remapped);
    let (m, id) = boot_soft(config);
    assert!(
        m.debug_contains("WDDM 2.4 MDL pages"),
        "no remapping opt-in"
    );
    match Vidmm::new(&m, id) {
        Err(VidmmError::Unsupported(why)) => {
            assert!(
                why.contains("no DMA remapping, but the IOMMU remaps"),
                "{why}"
            )
        }
        Err(e) => panic!("{e:?}"),
        Ok(_) => panic!("VidMm set up a soft adapter on a remapping IOMMU"),
    }
    finish(&m, id);

    let config = MachineConfig::windows_11_22h2()
        .with_iommu(IommuMode::Identity)
        .with_physical_base(1 << 40);
    let m = Machine::new(config);
    assert_eq!(m.load_driver(rgpu::ddi::DriverEntry), sys::STATUS_SUCCESS);
    let id = m.add_root_adapter();
    assert_eq!(m.start_adapter(id), sys::STATUS_NOT_SUPPORTED);
    assert!(m.debug_contains("adapter refused"));
    m.unload_driver();
    m.check_leaks();
    m.assert_clean();
}
