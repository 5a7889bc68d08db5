//! The first time rgpu runs (driver-core scenario): DriverEntry → AddDevice → StartDevice →
//! every QueryAdapterInfo Windows asks at start → StopDevice → RemoveDevice → Unload, through
//! dxgk-sim with the rgpu device model behind the BAR, on Windows versions whose newest
//! interface is 2.4 (identity IOMMU) and 3.1 (remapped IOMMU), with zero verifier findings.

mod support;
use dxgk_sim::{AdapterConfig, AdapterId, IommuMode, Machine, MachineConfig, PnpState};
use dxgk_sys as sys;

fn supported_machines() -> Vec<(MachineConfig, u32)> {
    vec![
        (
            MachineConfig::windows_10_1803().with_iommu(IommuMode::Identity),
            sys::DXGKDDI_INTERFACE_VERSION_WDDM2_4,
        ),
        (
            MachineConfig::windows_11_22h2().with_iommu(IommuMode::Remapped),
            sys::DXGKDDI_INTERFACE_VERSION_WDDM3_1,
        ),
    ]
}

fn load_and_start(m: &Machine) -> AdapterId {
    assert_eq!(m.load_driver(rgpu::ddi::DriverEntry), sys::STATUS_SUCCESS);
    let id = m.add_adapter(support::rgpu_adapter());
    let status = m.start_adapter(id);
    assert_eq!(
        status,
        sys::STATUS_SUCCESS,
        "start on {}: {:?}",
        m.config().name,
        m.findings()
    );
    id
}

#[test]
fn start_answer_the_start_queries_stop_remove_unload_on_2_4_and_3_1() {
    for (config, expected_version) in supported_machines() {
        let m = Machine::new(config);
        let id = load_and_start(&m);
        let view = m.adapter(id);
        assert_eq!(view.state, PnpState::Started);
        assert_eq!(
            view.info.interface_version,
            expected_version,
            "{}",
            m.config().name
        );
        println!(
            "{}: negotiated interface {:#x}",
            m.config().name,
            view.info.interface_version
        );
        assert_eq!(
            (
                view.info.number_of_video_present_sources,
                view.info.number_of_children
            ),
            (0, 0)
        );
        let caps = view.driver_caps().expect("DRIVERCAPS answered");
        let mm = caps.MemoryManagementCaps;
        assert_eq!(
            (
                mm.VirtualAddressingSupported(),
                mm.GpuMmuSupported(),
                mm.IoMmuSecureModeSupported()
            ),
            (1, 1, 1)
        );
        assert_eq!(caps.WDDMVersion, rgpu::caps::wddm_version(expected_version));
        let gpummu = view.info.gpummu_caps.expect("GPUMMUCAPS answered");
        assert_eq!(gpummu.PageTableLevelCount, 4);
        assert_eq!(view.info.page_table_levels.len(), 4);
        assert!(view.info.physical_adapter_caps.is_some());
        assert_eq!(view.info.framebuffer_save_size, Some(0));
        assert_eq!(
            view.info
                .hardware_reserved_ranges
                .as_deref()
                .map(<[_]>::len),
            Some(0)
        );
        // Ring + fence page are device-visible memory; the GART is CPU-only. WDDM 3.x (the
        // remapping opt-in accepted): physical memory objects, ADLs for the two device pages.
        let remapping = expected_version >= sys::DXGKDDI_INTERFACE_VERSION_WDDM3_0;
        let pmo = |m: &Machine| {
            [
                "DxgkCbCreatePhysicalMemoryObject",
                "DxgkCbAllocateAdl",
                "DxgkCbFreeAdl",
                "DxgkCbDestroyPhysicalMemoryObject",
            ]
            .map(|c| m.callback_calls(c))
        };
        if remapping {
            assert_eq!(pmo(&m), [3, 2, 0, 0]);
            assert_eq!((m.live_iommu_mappings(), m.live_mdl_allocations()), (0, 0));
        } else {
            assert_eq!(pmo(&m), [0; 4]);
            assert_eq!(m.live_iommu_mappings(), 2);
            assert_eq!(m.live_mdl_allocations(), 3);
        }
        assert!(m.debug_contains("rgpu: started: interface"));

        assert_eq!(m.stop_adapter(id), sys::STATUS_SUCCESS);
        assert_eq!(
            (m.live_iommu_mappings(), m.live_mdl_allocations()),
            (0, 0),
            "stop releases everything"
        );
        if remapping {
            assert_eq!(pmo(&m), [3, 2, 2, 3], "stop releases every object and ADL");
        }
        assert!(
            m.debug_contains("stopped: page pool trimmed 2 page(s)"),
            "ring and fence page went back to the pool, which StopDevice trims"
        );
        assert_eq!(m.remove_adapter(id), sys::STATUS_SUCCESS);
        m.unload_driver();
        m.assert_clean();
    }
}

#[test]
fn disable_enable_cycles_restart_the_adapter_without_leaks() {
    for (config, _) in supported_machines() {
        let m = Machine::new(config);
        let id = load_and_start(&m);
        for _ in 0..3 {
            assert_eq!(m.stop_adapter(id), sys::STATUS_SUCCESS);
            assert_eq!(m.start_adapter(id), sys::STATUS_SUCCESS);
        }
        assert_eq!(m.stop_adapter(id), sys::STATUS_SUCCESS);
        assert_eq!(m.remove_adapter(id), sys::STATUS_SUCCESS);
        m.unload_driver();
        m.assert_clean();
    }
}

#[test]
fn remove_without_stop_releases_everything() {
    let m = Machine::new(MachineConfig::windows_11_22h2());
    let id = load_and_start(&m);
    assert_eq!(m.remove_adapter(id), sys::STATUS_SUCCESS);
    m.unload_driver();
    m.assert_clean();
}

#[test]
fn a_root_enumerated_device_without_rgpu_hardware_fails_start_cleanly() {
    // No device model: the BAR is plain memory reading 0, as a device that is not there.
    let m = Machine::new(MachineConfig::windows_11_22h2());
    assert_eq!(m.load_driver(rgpu::ddi::DriverEntry), sys::STATUS_SUCCESS);
    let id = m.add_adapter(AdapterConfig::default());
    assert_eq!(m.start_adapter(id), sys::STATUS_DEVICE_HARDWARE_ERROR);
    assert!(m.debug_contains("not an rgpu device (ID 0x00000000"));
    // Dxgkrnl undoes a failed start itself (StopDevice + RemoveDevice).
    assert_eq!(m.adapter(id).state, PnpState::Removed);
    assert_eq!((m.live_iommu_mappings(), m.live_mdl_allocations()), (0, 0));
    m.unload_driver();
    m.assert_clean();
}

#[test]
fn wddm_2_3_windows_refuses_rgpu_cleanly() {
    let m = Machine::new(MachineConfig::windows_10_1709());
    assert_eq!(
        m.load_driver(rgpu::ddi::DriverEntry),
        sys::STATUS_REVISION_MISMATCH
    );
    assert!(m.debug_contains("no supported interface version (WDDM 2.4 or newer) was accepted"));
    m.check_leaks();
    m.assert_clean();
}

#[test]
fn start_device_refuses_an_interface_older_than_2_4() {
    let m = Machine::new(MachineConfig::windows_11_22h2());
    assert_eq!(m.load_driver(rgpu::ddi::DriverEntry), sys::STATUS_SUCCESS);
    let ddis = m.registered_driver().unwrap();
    let pdo = m.pdo(m.add_adapter(AdapterConfig { device: None }));
    m.enter(|| {
        let mut ctx: sys::PVOID = std::ptr::null_mut();
        // SAFETY: valid PDO and context slot.
        let r = unsafe { ddis.DxgkDdiAddDevice.unwrap()(pdo, &mut ctx) };
        assert_eq!(r, sys::STATUS_SUCCESS);
        let mut iface = m.interface_for_tests(sys::DXGKDDI_INTERFACE_VERSION_WDDM2_3);
        let mut start_info = sys::DXGK_START_INFO::default();
        let (mut sources, mut children) = (7u32, 7u32);
        // SAFETY: all pointers valid; the interface is a real 2.3-sized one.
        let status = unsafe {
            ddis.DxgkDdiStartDevice.unwrap()(
                ctx,
                &mut start_info,
                &mut iface,
                &mut sources,
                &mut children,
            )
        };
        assert_eq!(status, sys::STATUS_NOT_SUPPORTED);
        assert_eq!((sources, children), (7, 7), "outputs untouched on failure");
        // SAFETY: the context from AddDevice, removed once.
        let r = unsafe { ddis.DxgkDdiRemoveDevice.unwrap()(ctx) };
        assert_eq!(r, sys::STATUS_SUCCESS);
    });
    assert!(m.debug_contains("older than WDDM 2.4"));
    m.unload_driver();
    m.assert_clean();
}

#[test]
fn every_injected_failure_during_start_stop_is_a_clean_ntstatus() {
    for (config, _) in supported_machines() {
        let report = dxgk_sim::fault::systematic_on(config.clone(), |m| {
            let status = m.load_driver(rgpu::ddi::DriverEntry);
            if status < 0 {
                return status;
            }
            let id = m.add_adapter(support::rgpu_adapter());
            let status = m.start_adapter(id);
            if status >= 0 {
                m.stop_adapter(id);
            }
            // A failed start is undone by Dxgkrnl itself (StopDevice + RemoveDevice).
            if m.adapter(id).state != PnpState::Removed {
                m.remove_adapter(id);
            }
            m.unload_driver();
            status
        });
        println!(
            "{}: {}",
            config.name,
            report.summary().lines().next().unwrap_or("")
        );
        assert!(
            report.injection_points >= 5,
            "pool, ring, fence, GART, mappings, MMIO: {}",
            report.injection_points
        );
        report.assert_clean();
    }
}

#[test]
fn an_unsupported_ddi_returns_not_supported_and_logs_once_per_adapter() {
    let m = Machine::new(MachineConfig::windows_11_22h2());
    let id = load_and_start(&m);
    let ctx = m.adapter(id).context;
    let create = m
        .registered_driver()
        .unwrap()
        .DxgkDdiDescribeAllocation
        .unwrap();
    m.enter(|| {
        for _ in 0..3 {
            let mut args = sys::DXGKARG_DESCRIBEALLOCATION::default();
            // SAFETY: the adapter handle and a valid (empty) argument block.
            let s = unsafe { create(ctx, &mut args) };
            assert_eq!(s, sys::STATUS_NOT_SUPPORTED);
        }
    });
    let lines = m
        .debug_output()
        .into_iter()
        .filter(|l| l.text.contains("DescribeAllocation: not supported"))
        .count();
    assert_eq!(lines, 1, "logged once, not per call");
    m.stop_adapter(id);
    m.remove_adapter(id);
    m.unload_driver();
    m.assert_clean();
}
