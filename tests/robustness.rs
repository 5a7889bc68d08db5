//! rgpu's own Device Fundamentals equivalents: PnP (disable/enable, surprise removal, remove
//! with work pending), power (D0 → D3 → D0 and the exclusive-access bracket of IOMMU
//! isolation), TDR, concurrency, and systematic fault injection over each — in both IOMMU
//! modes, with the simulator's verifier watching. Every scenario ends with no leak, no live
//! IOMMU mapping and no finding.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use dxgk_sim::{AdapterId, AllocSpec, Machine, MachineConfig, PnpState, Vidmm, VidmmError};
use dxgk_sys as sys;

const MIB: u64 = 1 << 20;

mod support;
use support::{boot, boot_soft, long_fill, machines, set_adapter_power, soft_machines};

/// The adapters the PnP and power scenarios run on: hardware in both IOMMU modes, then a soft
/// adapter (WDDM 3.1, identity: a soft adapter does not opt in to remapping), with `true`.
fn rigs() -> Vec<(MachineConfig, bool)> {
    let soft = soft_machines().pop().map(|c| (c, true));
    machines()
        .into_iter()
        .map(|c| (c, false))
        .chain(soft)
        .collect()
}

/// Boots a rig from [`rigs`].
fn boot_rig(config: MachineConfig, soft: bool) -> (Machine, AdapterId) {
    if soft {
        boot_soft(config)
    } else {
        boot(config)
    }
}

/// Where a rig's allocations go: system memory on hardware, the aperture on a soft adapter
/// (the only memory its engine reaches).
fn place(soft: bool, bytes: u64) -> AllocSpec {
    AllocSpec {
        segment: if soft {
            rgpu::caps::APERTURE_SEGMENT_ID
        } else {
            0
        },
        ..AllocSpec::system(bytes)
    }
}

/// Fill + transfer + verify in a fresh process: proves the adapter works.
fn paging_works(v: &mut Vidmm, soft: bool, pattern: u32) {
    let p = v.create_process().expect("process");
    let a = v.allocate_placed(place(soft, MIB)).expect("alloc a");
    let b = v.allocate_placed(place(soft, MIB)).expect("alloc b");
    v.map(p, a, 0x10_0000_0000).expect("map a");
    v.map(p, b, 0x20_0000_0000).expect("map b");
    v.fill(a, 0, MIB, pattern).expect("fill");
    v.transfer(a, b, MIB).expect("transfer");
    let got = v.read(b, 0, MIB as usize).expect("read");
    let want = pattern.to_le_bytes();
    assert!(
        got.chunks_exact(4).all(|c| c == want),
        "transferred bytes exact"
    );
    v.unmap(p, a, 0x10_0000_0000).expect("unmap a");
    v.unmap(p, b, 0x20_0000_0000).expect("unmap b");
    v.free(a).expect("free a");
    v.free(b).expect("free b");
    v.destroy_process(p).expect("destroy process");
}

fn finish(m: &Machine, id: AdapterId) {
    if m.adapter(id).state == PnpState::Started {
        assert_eq!(m.stop_adapter(id), sys::STATUS_SUCCESS);
    }
    if m.adapter(id).state != PnpState::Removed {
        assert_eq!(m.remove_adapter(id), sys::STATUS_SUCCESS);
    }
    m.unload_driver();
    assert_eq!((m.live_iommu_mappings(), m.live_mdl_allocations()), (0, 0));
}

/// Calls a DDI of the registered table on the adapter's context.
fn ddis(m: &Machine) -> sys::DRIVER_INITIALIZATION_DATA {
    m.registered_driver().expect("driver registered")
}

#[test]
fn pnp_disable_enable_repeatedly_with_paging_between() {
    for (config, soft) in rigs() {
        let (m, id) = boot_rig(config, soft);
        for round in 0..3u32 {
            let mut v = Vidmm::new(&m, id).expect("vidmm");
            paging_works(&mut v, soft, 0x1000_0000 + round);
            v.destroy().expect("vidmm teardown");
            assert_eq!(m.stop_adapter(id), sys::STATUS_SUCCESS);
            assert_eq!(
                (m.live_iommu_mappings(), m.live_mdl_allocations()),
                (0, 0),
                "stopped: nothing held"
            );
            assert_eq!(m.start_adapter(id), sys::STATUS_SUCCESS);
        }
        finish(&m, id);
        m.assert_clean();
    }
}

#[test]
fn surprise_removal_in_the_middle_of_paging_work() {
    for (config, soft) in rigs() {
        let (m, id) = boot_rig(config, soft);
        let mut v = Vidmm::new(&m, id).expect("vidmm");
        let p = v.create_process().unwrap();
        let a = v.allocate_placed(place(soft, 4 * MIB)).unwrap();
        v.map(p, a, 0x40_0000_0000).unwrap();
        v.fill(a, 0, 4 * MIB, 0xABCD_EF01).unwrap();
        let ctx = m.adapter(id).context;
        let remove = ddis(&m).DxgkDdiNotifySurpriseRemoval.expect("registered");
        let status = m.enter(|| {
            // SAFETY: the adapter context from AddDevice; removal type 0 (a surprise unplug).
            unsafe { remove(ctx, sys::DXGK_SURPRISE_REMOVAL_TYPE(0)) }
        });
        assert_eq!(status, sys::STATUS_SUCCESS);
        // Dxgkrnl tears the objects down; paging fails cleanly (no hardware), memory is freed.
        let _ = v.destroy();
        finish(&m, id);
        assert!(m.debug_contains("surprise removal"));
        m.assert_clean();
    }
}

#[test]
fn remove_while_work_is_pending() {
    for config in machines() {
        let (m, id) = boot(config);
        let mut v = Vidmm::new(&m, id).expect("vidmm");
        // The buffer is still executing when the adapter goes away.
        let work = long_fill(&mut v, 0x70_0000_0000, 0x5A5A_5A5A);
        // The submission DDI's return synchronizes the device once: half the FILL runs.
        let fence = v
            .submit_user_nowait(work.process, work.cmd_va, work.len)
            .unwrap();
        assert!(
            !m.interrupt_notifications(id)
                .iter()
                .any(|n| n.fence == fence),
            "the work is still pending"
        );
        // The adapter is stopped and removed with the work pending: the driver must quiesce
        // the device before it unmaps and frees the ring and fence page the device is still
        // using (otherwise the device's next ring read or fence write-back is an IOMMU fault).
        assert_eq!(m.stop_adapter(id), sys::STATUS_SUCCESS);
        m.service(id);
        m.service(id);
        assert_eq!(m.remove_adapter(id), sys::STATUS_SUCCESS);
        assert!(m.iommu_faults().is_empty(), "{:?}", m.iommu_faults());
        let _ = v.destroy();
        m.unload_driver();
        assert_eq!((m.live_iommu_mappings(), m.live_mdl_allocations()), (0, 0));
        m.assert_clean();
    }
}

#[test]
fn power_d0_d3_d0_rebuilds_the_device_and_work_after_resume_completes() {
    for (config, soft) in rigs() {
        let (m, id) = boot_rig(config, soft);
        let mut v = Vidmm::new(&m, id).expect("vidmm");
        paging_works(&mut v, soft, 0x2222_0001);
        let ctx = m.adapter(id).context;
        let set_power = ddis(&m).DxgkDdiSetPowerState.unwrap();
        let begin = ddis(&m).DxgkDdiBeginExclusiveAccess.unwrap();
        let end = ddis(&m).DxgkDdiEndExclusiveAccess.unwrap();
        m.enter(|| {
            for state in [sys::PowerDeviceD3, sys::PowerDeviceD0] {
                assert_eq!(set_adapter_power(&m, id, state), sys::STATUS_SUCCESS);
            }
            // The IOMMU-isolation bracket Dxgkrnl uses when it attaches the domain.
            let mut b = sys::DXGKARG_BEGINEXCLUSIVEACCESS::default();
            // SAFETY: the adapter handle and a valid argument block.
            assert_eq!(unsafe { begin(ctx, &mut b) }, sys::STATUS_SUCCESS);
            let mut e = sys::DXGKARG_ENDEXCLUSIVEACCESS::default();
            // SAFETY: as above.
            assert_eq!(unsafe { end(ctx, &mut e) }, sys::STATUS_SUCCESS);
            // A child uid is refused: rgpu has no children.
            // SAFETY: as above.
            let s = unsafe { set_power(ctx, 1, sys::PowerDeviceD3, sys::POWER_ACTION(0)) };
            assert_eq!(s, sys::STATUS_INVALID_PARAMETER);
        });
        // After power-up VidMm re-initializes the paging process's page tables (CPU_VIRTUAL,
        // NULL DMA buffer) and sets its root again; the driver reprogrammed the ring and
        // restored every ASID root, so existing and new processes work.
        let builds = v.stats().build_calls;
        v.power_up()
            .expect("paging-process re-initialization after power-up");
        assert!(
            v.stats().build_calls > builds,
            "re-initialization went through the driver"
        );
        paging_works(&mut v, soft, 0x2222_0002);
        v.destroy().unwrap();
        finish(&m, id);
        m.assert_clean();
    }
}

/// A transfer from an evicted allocation is refused by VidMm before any paging buffer is
/// built (hardware and soft alike), and leaves the adapter working. On a soft adapter a paging
/// buffer that does reach the device with an address its engine was never given (VidMm's own
/// system memory: no MDL reached the driver) faults inside the paging buffer, and the TDR that
/// follows leaves the adapter working. (On hardware, device faults inside paging and DMA
/// buffers and their TDRs are `paging_e2e`'s isolation tests.)
#[test]
fn tdr_after_a_fault_inside_a_paging_buffer_and_the_adapter_works_afterwards() {
    for (config, soft) in rigs() {
        let (m, id) = boot_rig(config, soft);
        let mut v = Vidmm::new(&m, id).expect("vidmm");
        let p = v.create_process().unwrap();
        let a = v.allocate_placed(place(soft, MIB)).unwrap();
        v.map(p, a, 0x60_0000_0000).unwrap();
        v.evict(a).unwrap();
        let b = v.allocate_placed(place(soft, MIB)).unwrap();
        let r = v.transfer(a, b, MIB);
        assert!(
            matches!(r, Err(VidmmError::Evicted(x)) if x == a),
            "soft {soft}: {r:?}"
        );
        if soft {
            let foreign = v.allocate(4096).unwrap();
            v.map(p, foreign, 0x70_0000_0000).unwrap();
            let e = v.fill(foreign, 0, 4096, 0x1234_5678).unwrap_err();
            assert!(matches!(e, VidmmError::DeviceFault { .. }), "{e:?}");
            assert_eq!(
                v.stats().resets,
                1,
                "the paging buffer's fault was recovered by a TDR"
            );
            v.free(foreign).unwrap();
        }
        paging_works(&mut v, soft, 0x3333_0003);
        let _ = v.free(b);
        v.destroy().unwrap();
        finish(&m, id);
    }
}

#[test]
fn concurrent_ddis_while_paging_runs() {
    for (config, soft) in rigs() {
        let (m, id) = boot_rig(config, soft);
        let stop = Arc::new(AtomicBool::new(false));
        let ctx = m.adapter(id).context as usize;
        let d = ddis(&m);
        let (qai, create, destroy) = (
            d.DxgkDdiQueryAdapterInfo.unwrap(),
            d.DxgkDdiCreateProcess.unwrap(),
            d.DxgkDdiDestroyProcess.unwrap(),
        );
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let (m, stop) = (m.clone(), stop.clone());
                std::thread::spawn(move || {
                    m.enter(|| {
                        let mut iterations = 0u32;
                        while !stop.load(Ordering::Relaxed) && iterations < 2000 {
                            iterations += 1;
                            let mut caps = [0u8; 4096];
                            let args = sys::DXGKARG_QUERYADAPTERINFO {
                                Type: sys::DXGKQAITYPE_DRIVERCAPS,
                                pOutputData: caps.as_mut_ptr().cast(),
                                OutputDataSize: core::mem::size_of::<sys::DXGK_DRIVERCAPS>() as u32,
                                ..Default::default()
                            };
                            // SAFETY: the adapter handle and valid buffers.
                            let r = unsafe { qai(ctx as sys::PVOID, &args) };
                            assert_eq!(r, sys::STATUS_SUCCESS);
                            let mut cp = sys::DXGKARG_CREATEPROCESS::default();
                            // SAFETY: as above.
                            let s = unsafe { create(ctx as sys::PVOID, &mut cp) };
                            if s == sys::STATUS_SUCCESS {
                                // SAFETY: the process just created, destroyed once.
                                let r = unsafe { destroy(ctx as sys::PVOID, cp.hKmdProcess) };
                                assert_eq!(r, sys::STATUS_SUCCESS);
                            } else {
                                // All 15 user ASIDs may be taken by the other threads: a clean refusal.
                                assert_eq!(s, sys::STATUS_INSUFFICIENT_RESOURCES);
                            }
                        }
                        iterations
                    })
                })
            })
            .collect();
        // An "interrupt thread": synchronizes the device and delivers its interrupts and DPCs
        // while the main thread builds and submits paging buffers.
        let interrupts = {
            let (m, stop) = (m.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut rounds = 0u32;
                while !stop.load(Ordering::Relaxed) && rounds < 20_000 {
                    m.service(id);
                    rounds += 1;
                }
                rounds
            })
        };
        let mut v = Vidmm::new(&m, id).expect("vidmm");
        for i in 0..3 {
            paging_works(&mut v, soft, 0x4444_0000 + i);
        }
        stop.store(true, Ordering::Relaxed);
        assert!(interrupts.join().expect("interrupt thread") > 0);
        for w in workers {
            assert!(w.join().expect("worker") > 0);
        }
        v.destroy().unwrap();
        finish(&m, id);
        m.assert_clean();
    }
}

/// A systematic-runner scenario: returns the status the driver ended with.
type Scenario = fn(&Machine) -> sys::NTSTATUS;

#[test]
fn systematic_fault_injection_over_each_scenario() {
    let scenarios: [(&str, Scenario); 2] = [
        ("disable/enable with paging", |m| {
            let s = m.load_driver(rgpu::ddi::DriverEntry);
            if s < 0 {
                return s;
            }
            let id = m.add_adapter(support::rgpu_adapter());
            let mut status = m.start_adapter(id);
            if status >= 0 {
                if let Ok(mut v) = Vidmm::new(m, id) {
                    if let Ok(p) = v.create_process() {
                        if let Ok(a) = v.allocate(64 * 1024) {
                            let _ = v
                                .map(p, a, 0x10_0000_0000)
                                .and_then(|()| v.fill(a, 0, 64 * 1024, 9));
                        }
                    }
                    let _ = v.destroy();
                }
                m.stop_adapter(id);
                status = m.start_adapter(id);
                if m.adapter(id).state == PnpState::Started {
                    m.stop_adapter(id);
                }
            }
            if m.adapter(id).state != PnpState::Removed {
                m.remove_adapter(id);
            }
            m.unload_driver();
            status
        }),
        ("power cycle", |m| {
            let s = m.load_driver(rgpu::ddi::DriverEntry);
            if s < 0 {
                return s;
            }
            let id = m.add_adapter(support::rgpu_adapter());
            let status = m.start_adapter(id);
            if status >= 0 {
                m.enter(|| {
                    for state in [sys::PowerDeviceD3, sys::PowerDeviceD0] {
                        let _ = set_adapter_power(m, id, state);
                    }
                });
                m.stop_adapter(id);
            }
            if m.adapter(id).state != PnpState::Removed {
                m.remove_adapter(id);
            }
            m.unload_driver();
            status
        }),
    ];
    for (name, scenario) in scenarios {
        for config in machines() {
            let label = config.name.clone();
            let report = dxgk_sim::fault::systematic_on(config, scenario);
            println!(
                "{name} on {label}: {} injection point(s) exercised",
                report.injection_points
            );
            assert!(report.injection_points > 0);
            report.assert_clean();
        }
    }
}

#[test]
fn reset_engine_reports_the_last_aborted_fence_and_the_engine_runs_afterwards() {
    for config in machines() {
        let (m, id) = boot(config);
        let mut v = Vidmm::new(&m, id).expect("vidmm");
        paging_works(&mut v, false, 0x5555_0001);
        let last_fence = m
            .interrupt_notifications(id)
            .iter()
            .map(|n| n.fence)
            .max()
            .expect("fences completed");
        let ctx = m.adapter(id).context;
        let reset_engine = ddis(&m).DxgkDdiResetEngine.unwrap();
        m.enter(|| {
            let mut args = sys::DXGKARG_RESETENGINE::default();
            // SAFETY: the adapter handle and a valid argument block for node 0, engine 0.
            let s = unsafe { reset_engine(ctx, &mut args) };
            assert_eq!(s, sys::STATUS_SUCCESS);
            // Nothing was in flight: the last aborted fence is the last one submitted.
            assert_eq!(args.LastAbortedFenceId, last_fence);
            let mut bad = sys::DXGKARG_RESETENGINE {
                NodeOrdinal: 1,
                ..Default::default()
            };
            // SAFETY: as above; node 1 does not exist.
            let s = unsafe { reset_engine(ctx, &mut bad) };
            assert_eq!(s, sys::STATUS_INVALID_PARAMETER);
        });
        paging_works(&mut v, false, 0x5555_0002);
        v.destroy().unwrap();
        finish(&m, id);
        m.assert_clean();
    }
}

#[test]
fn preempt_command_is_answered_with_dma_preempted_once_the_ring_drains() {
    for config in machines() {
        let (m, id) = boot(config);
        let mut v = Vidmm::new(&m, id).expect("vidmm");
        paging_works(&mut v, false, 0x5555_0003);
        let ctx = m.adapter(id).context;
        let preempt = ddis(&m).DxgkDdiPreemptCommand.unwrap();
        let call = |args: Option<&sys::DXGKARG_PREEMPTCOMMAND>| {
            let ptr = args.map_or(std::ptr::null(), |a| a as *const _);
            // SAFETY: the adapter handle and an argument block (or NULL, refused).
            m.enter(|| unsafe { preempt(ctx, ptr) })
        };
        let preempted = |from: usize| -> Vec<_> {
            m.interrupt_notifications(id)[from..]
                .iter()
                .filter(|n| n.kind == sys::DXGK_INTERRUPT_DMA_PREEMPTED.0)
                .copied()
                .collect()
        };

        // Bad requests are refused and leave nothing pending.
        let before = m.interrupt_notifications(id).len();
        let other_node = sys::DXGKARG_PREEMPTCOMMAND {
            PreemptionFenceId: 900,
            NodeOrdinal: 1,
            ..Default::default()
        };
        assert_eq!(call(Some(&other_node)), sys::STATUS_INVALID_PARAMETER);
        assert_eq!(call(None), sys::STATUS_INVALID_PARAMETER);
        m.service(id);
        assert!(preempted(before).is_empty());

        // Idle ring: answered at once with the last completed fence, and no fence is reported
        // completed twice.
        let last = m
            .interrupt_notifications(id)
            .iter()
            .filter(|n| n.kind == sys::DXGK_INTERRUPT_DMA_COMPLETED.0)
            .map(|n| n.fence)
            .max()
            .expect("fences completed");
        let request = sys::DXGKARG_PREEMPTCOMMAND {
            PreemptionFenceId: 1000,
            ..Default::default()
        };
        assert_eq!(call(Some(&request)), sys::STATUS_SUCCESS);
        m.service(id);
        let new = &m.interrupt_notifications(id)[before..];
        assert_eq!(
            new.iter()
                .map(|n| (n.kind, n.preemption_fence, n.fence))
                .collect::<Vec<_>>(),
            vec![(sys::DXGK_INTERRUPT_DMA_PREEMPTED.0, 1000, last)],
            "{new:?}"
        );

        // Work in flight: nothing is abandoned; the answer follows the buffer's completion.
        let work = long_fill(&mut v, 0x70_0000_0000, 0x0BAD_F00D);
        let before = m.interrupt_notifications(id).len();
        let fence = v
            .submit_user_nowait(work.process, work.cmd_va, work.len)
            .unwrap();
        assert!(
            !m.interrupt_notifications(id)
                .iter()
                .any(|n| n.fence == fence),
            "the FILL is still executing when PreemptCommand comes"
        );
        let request = sys::DXGKARG_PREEMPTCOMMAND {
            PreemptionFenceId: 1001,
            ..Default::default()
        };
        assert_eq!(call(Some(&request)), sys::STATUS_SUCCESS);
        let mut rounds = 0;
        while preempted(before).is_empty() {
            rounds += 1;
            assert!(rounds < 1000, "no DMA_PREEMPTED");
            m.service(id);
        }
        let new = &m.interrupt_notifications(id)[before..];
        let kinds: Vec<_> = new
            .iter()
            .map(|n| (n.kind, n.preemption_fence, n.fence))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (sys::DXGK_INTERRUPT_DMA_COMPLETED.0, 0, fence),
                (sys::DXGK_INTERRUPT_DMA_PREEMPTED.0, 1001, fence),
            ]
        );
        assert_eq!(
            v.read(work.page, 0, 4).unwrap(),
            0x0BAD_F00Du32.to_le_bytes()
        );

        paging_works(&mut v, false, 0x5555_0004);
        v.destroy().unwrap();
        finish(&m, id);
        m.assert_clean();
    }
}
