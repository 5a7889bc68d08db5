//! WDDM 3.0 IOMMU DMA remapping: the opt-in handshake before StartDevice, the memory path the
//! driver chooses from it (physical memory objects + ADLs, or the WDDM 2.4 MDL callbacks), and
//! the verifier rule against a remapping driver that uses the 2.4 callbacks anyway.

mod support;
use dxgk_sim::{IommuMode, Machine, MachineConfig, Rule};
use dxgk_sys as sys;

const PMO_CALLBACKS: [&str; 6] = [
    "DxgkCbCreatePhysicalMemoryObject",
    "DxgkCbMapPhysicalMemory",
    "DxgkCbAllocateAdl",
    "DxgkCbFreeAdl",
    "DxgkCbUnmapPhysicalMemory",
    "DxgkCbDestroyPhysicalMemoryObject",
];
const MDL_CALLBACKS: [&str; 4] = [
    "DxgkCbAllocatePagesForMdl",
    "DxgkCbMapMdlToIoMmu",
    "DxgkCbUnmapMdlFromIoMmu",
    "DxgkCbFreePagesFromMdl",
];

fn with_interface(version: u32) -> MachineConfig {
    let mut c = MachineConfig::windows_11_22h2();
    c.max_interface_version = version;
    c
}

fn calls(m: &Machine, names: &[&str]) -> Vec<u64> {
    names.iter().map(|n| m.callback_calls(n)).collect()
}

fn stop_and_check(m: &Machine, id: dxgk_sim::AdapterId) {
    assert_eq!(m.stop_adapter(id), sys::STATUS_SUCCESS);
    assert_eq!(m.remove_adapter(id), sys::STATUS_SUCCESS);
    m.unload_driver();
    m.check_leaks();
    m.assert_clean();
}

#[test]
fn wddm_3_1_asks_both_caps_before_start_and_the_driver_uses_physical_memory_objects() {
    for iommu in [IommuMode::Remapped, IommuMode::Identity] {
        let (m, id) = support::boot(MachineConfig::windows_11_22h2().with_iommu(iommu));
        let info = m.adapter(id).info;
        // Both remapping caps were the first queries: Windows asks them after AddDevice, before
        // StartDevice; everything else (DRIVERCAPS first) comes after StartDevice.
        assert_eq!(
            info.queries[..3],
            [
                sys::DXGKQAITYPE_PHYSICAL_MEMORY_CAPS.0,
                sys::DXGKQAITYPE_IOMMU_CAPS.0,
                sys::DXGKQAITYPE_DRIVERCAPS.0
            ]
        );
        // Accepted only where the IOMMU remaps; the driver opted in either way.
        assert_eq!(info.dma_remapping, iommu == IommuMode::Remapped);
        assert_eq!(
            info.highest_visible_address,
            Some(rgpu::caps::HIGHEST_DEVICE_ADDRESS)
        );
        assert_eq!(
            rgpu::caps::HIGHEST_DEVICE_ADDRESS,
            (1i64 << 40) - 1,
            "the rgpu device has 40 DMA address lines"
        );
        let pmo = calls(&m, &PMO_CALLBACKS);
        // Ring + fence page + GART table; ring and fence are device-visible (2 ADLs).
        assert_eq!(pmo, vec![3, 3, 2, 0, 0, 0], "{iommu:?}");
        assert_eq!(calls(&m, &MDL_CALLBACKS), vec![0; 4], "{iommu:?}");
        stop_and_check(&m, id);
        // Everything created was released again, in the order Dxgkrnl requires (the verifier
        // is clean: no object destroyed with a live ADL or mapping).
        assert_eq!(calls(&m, &PMO_CALLBACKS), vec![3, 3, 2, 2, 3, 3]);
    }
}

#[test]
fn before_wddm_3_0_or_without_the_query_the_driver_keeps_the_2_4_callbacks() {
    for version in [
        sys::DXGKDDI_INTERFACE_VERSION_WDDM2_7,
        sys::DXGKDDI_INTERFACE_VERSION_WDDM2_9,
    ] {
        let (m, id) = support::boot(with_interface(version));
        let info = m.adapter(id).info;
        assert!(!info.dma_remapping, "{version:#x}: no remapping before 3.0");
        // 2.9 asks the caps (the types exist), 2.7 does not.
        assert_eq!(
            info.iommu_caps.is_some(),
            version >= sys::DXGKDDI_INTERFACE_VERSION_WDDM2_9,
            "{version:#x}"
        );
        assert_eq!(calls(&m, &PMO_CALLBACKS), vec![0; 6], "{version:#x}");
        assert_eq!(calls(&m, &MDL_CALLBACKS), vec![3, 2, 0, 0], "{version:#x}");
        stop_and_check(&m, id);
    }
}

#[test]
fn the_opt_in_counts_only_before_start_device() {
    use dxgk_sim::PnpState;
    // Asking IOMMU_CAPS of a started adapter is not the opt-in: a restart keeps the path the
    // pre-start answer chose, and a 2.7 adapter stays on the 2.4 path across stop/start.
    let (m, id) = support::boot(with_interface(sys::DXGKDDI_INTERFACE_VERSION_WDDM2_7));
    assert_eq!(m.stop_adapter(id), sys::STATUS_SUCCESS);
    assert_eq!(m.start_adapter(id), sys::STATUS_SUCCESS);
    assert_eq!(m.adapter(id).state, PnpState::Started);
    assert_eq!(calls(&m, &PMO_CALLBACKS), vec![0; 6]);
    stop_and_check(&m, id);

    let (m, id) = support::boot(MachineConfig::windows_11_22h2());
    assert_eq!(m.stop_adapter(id), sys::STATUS_SUCCESS);
    assert_eq!(m.start_adapter(id), sys::STATUS_SUCCESS);
    // Two starts on the 3.0 path, no 2.4 call.
    assert_eq!(m.callback_calls("DxgkCbCreatePhysicalMemoryObject"), 6);
    assert_eq!(calls(&m, &MDL_CALLBACKS), vec![0; 4]);
    stop_and_check(&m, id);
}

/// A deliberately bad driver: it opted in to remapping (rgpu's answer) and then calls the WDDM
/// 2.4 callbacks on the adapter's own interface anyway.
#[test]
fn the_verifier_flags_2_4_memory_callbacks_on_a_remapping_adapter() {
    for (config, remapping) in [
        (MachineConfig::windows_11_22h2(), true),
        (
            with_interface(sys::DXGKDDI_INTERFACE_VERSION_WDDM2_7),
            false,
        ),
    ] {
        let (m, id) = support::boot(config);
        let iface = m.adapter_interface(id);
        m.enter(|| {
            let alloc = iface.DxgkCbAllocatePagesForMdl.unwrap();
            let map = iface.DxgkCbMapMdlToIoMmu.unwrap();
            let unmap = iface.DxgkCbUnmapMdlFromIoMmu.unwrap();
            let free = iface.DxgkCbFreePagesFromMdl.unwrap();
            let mut a = sys::DXGKARGCB_ALLOCATEPAGESFORMDL {
                HighAddress: sys::LARGE_INTEGER { QuadPart: i64::MAX },
                TotalBytes: 4096,
                ..Default::default()
            };
            // SAFETY: the adapter's own callbacks with valid argument blocks, at PASSIVE_LEVEL.
            assert_eq!(unsafe { alloc(iface.DeviceHandle, &mut a) }, 0);
            let mut mp = sys::DXGKARGCB_MAPMDLTOIOMMU {
                pMdl: a.pMdl,
                hMemoryHandle: std::ptr::null_mut(),
            };
            // SAFETY: as above; the MDL just allocated.
            assert_eq!(unsafe { map(iface.DeviceHandle, &mut mp) }, 0);
            let u = sys::DXGKARGCB_UNMAPMDLFROMIOMMU {
                hMemoryHandle: mp.hMemoryHandle,
            };
            // SAFETY: the live mapping, once.
            unsafe { unmap(iface.DeviceHandle, &u) };
            let f = sys::DXGKARGCB_FREEPAGESFROMMDL {
                hMemoryHandle: a.hMemoryHandle,
            };
            // SAFETY: the live allocation, once.
            assert_eq!(unsafe { free(iface.DeviceHandle, &f) }, 0);
        });
        let flagged: Vec<_> = m
            .findings_of(Rule::MdlMisuse)
            .into_iter()
            .filter(|f| f.detail.contains("DMA remapping"))
            .map(|f| f.call)
            .collect();
        if remapping {
            assert_eq!(
                flagged,
                ["DxgkCbAllocatePagesForMdl", "DxgkCbMapMdlToIoMmu"],
                "{:?}",
                m.findings()
            );
        } else {
            assert!(flagged.is_empty(), "{:?}", m.findings());
            stop_and_check(&m, id);
        }
    }
}

const ABOVE_REACH: u64 = 1 << 40;

#[test]
fn memory_above_the_gpu_reach_refuses_the_adapter_unless_remapping_was_accepted() {
    for (config, refused) in [
        (MachineConfig::windows_11_22h2(), false),
        (
            MachineConfig::windows_11_22h2().with_iommu(IommuMode::Identity),
            true,
        ),
        (with_interface(sys::DXGKDDI_INTERFACE_VERSION_WDDM2_7), true),
    ] {
        let config = config.with_physical_base(ABOVE_REACH);
        let name = format!("{} {:?}", config.name, config.iommu);
        assert!(config.highest_physical_address() > rgpu::caps::HIGHEST_DEVICE_ADDRESS as u64);
        let m = Machine::new(config);
        assert_eq!(m.load_driver(rgpu::ddi::DriverEntry), sys::STATUS_SUCCESS);
        let id = m.add_adapter(support::rgpu_adapter());
        let status = m.start_adapter(id);
        if refused {
            assert_eq!(status, sys::STATUS_NOT_SUPPORTED, "{name}");
            assert!(m.debug_contains("adapter refused"), "{name}");
            m.unload_driver();
        } else {
            assert_eq!(status, sys::STATUS_SUCCESS, "{name}: {:?}", m.findings());
            // Logical addresses inside the GPU's reach, physical pages above it.
            assert!(m.iommu_faults().is_empty());
            stop_and_check(&m, id);
            continue;
        }
        m.check_leaks();
        m.assert_clean();
    }
}
