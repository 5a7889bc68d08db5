//! The safe memory wrappers against dxgk-sim: allocation, CPU access, IOMMU visibility, the
//! teardown order, version gating, and the failure of every callback they wrap — in both IOMMU
//! modes.

use dxgk::interface::{DxgkInterface, Unavailable};
use dxgk::irql::Passive;
use dxgk::memory::{
    ContiguousMemory, DeviceMemory, IoMmuMapping, MdlPages, MAX_BYTES_PER_MDL, PAGE_SIZE,
};
use dxgk::NtError;
use dxgk_sim::{IommuMode, Machine, MachineConfig};
use dxgk_sys as sys;

const CACHED: sys::DXGK_MEMORY_CACHING_TYPE = sys::DXGK_MEMORY_CACHING_TYPE_CACHED;

fn machines() -> Vec<Machine> {
    vec![
        Machine::new(MachineConfig::windows_10_1803().with_iommu(IommuMode::Identity)),
        Machine::new(MachineConfig::windows_11_22h2().with_iommu(IommuMode::Remapped)),
    ]
}

fn interface(m: &Machine, version: u32) -> DxgkInterface {
    let raw = m.interface_for_tests(version);
    // SAFETY: a valid, version-sized interface from the simulator.
    unsafe { DxgkInterface::copy_from(&raw, sys::DXGKDDI_INTERFACE_VERSION_WDDM2_4) }.unwrap()
}

#[test]
fn pages_round_trip_through_the_cpu_and_are_visible_to_the_device_only_while_mapped() {
    for m in machines() {
        m.enter(|| {
            let iface = interface(&m, m.config().max_interface_version);
            let passive = Passive::check().unwrap();
            let adapter = m.adapter_of(iface.device_handle()).unwrap();
            let mut pages =
                MdlPages::allocate(&iface, &passive, 3 * PAGE_SIZE + 1, CACHED).unwrap();
            assert_eq!(pages.len(), 4 * PAGE_SIZE, "rounded up to whole pages");
            let pattern: Vec<u8> = (0..pages.len()).map(|i| (i * 7 % 251) as u8).collect();
            pages.write(0, &pattern).unwrap();
            let mut back = vec![0u8; pattern.len()];
            pages.read(0, &mut back).unwrap();
            assert_eq!(back, pattern);

            let logical: Vec<u64>;
            {
                let mapping = IoMmuMapping::map(&iface, &passive, &pages).unwrap();
                logical = (0..4).map(|i| mapping.page_address(i).unwrap().0).collect();
                assert!(mapping.page_address(4).is_none());
                let mut dma = m.dma(adapter);
                for (i, &addr) in logical.iter().enumerate() {
                    let mut page = vec![0u8; PAGE_SIZE];
                    dma.read(addr, &mut page, "test")
                        .expect("mapped page readable by the device");
                    assert_eq!(
                        page,
                        pattern[i * PAGE_SIZE..(i + 1) * PAGE_SIZE],
                        "page {i} ({})",
                        m.config().name
                    );
                }
                assert_eq!(m.live_iommu_mappings(), 1);
            }
            assert_eq!(m.live_iommu_mappings(), 0, "mapping dropped → unmapped");
            drop(pages);
            assert_eq!(m.live_mdl_allocations(), 0, "pages dropped → freed");
        });
        m.check_leaks();
        m.assert_clean();
    }
}

#[test]
fn device_memory_unmaps_before_it_frees() {
    for m in machines() {
        m.enter(|| {
            let iface = interface(&m, m.config().max_interface_version);
            let passive = Passive::check().unwrap();
            let mem = DeviceMemory::allocate(&iface, &passive, 2 * PAGE_SIZE, CACHED).unwrap();
            assert!(mem.address_of(PAGE_SIZE + 8).unwrap().0 % PAGE_SIZE as u64 == 8);
            assert_eq!((m.live_mdl_allocations(), m.live_iommu_mappings()), (1, 1));
            drop(mem);
            assert_eq!((m.live_mdl_allocations(), m.live_iommu_mappings()), (0, 0));
        });
        // The simulator reports "free while mapped" if the order were wrong.
        m.check_leaks();
        m.assert_clean();
    }
}

#[test]
fn logical_addresses_differ_from_physical_ones_only_when_remapped() {
    for m in machines() {
        m.enter(|| {
            let iface = interface(&m, m.config().max_interface_version);
            let passive = Passive::check().unwrap();
            let mem = DeviceMemory::allocate(&iface, &passive, PAGE_SIZE, CACHED).unwrap();
            let logical = mem.page_address(0).unwrap().0;
            let remapped = m.config().iommu == IommuMode::Remapped;
            assert_eq!(
                (logical >> 12) >= dxgk_sim::memory::REMAPPED_LOGICAL_BASE,
                remapped,
                "{}",
                m.config().name
            );
        });
        m.check_leaks();
        m.assert_clean();
    }
}

#[test]
fn requests_above_the_per_mdl_limit_are_split_and_addressed_across_mdls() {
    for m in machines() {
        m.enter(|| {
            let iface = interface(&m, m.config().max_interface_version);
            let passive = Passive::check().unwrap();
            // 5 pages in MDLs of at most 2 pages: 3 MDLs (the real limit, 4 GiB - 4 KiB, is
            // too large for a test machine; the splitting code is the same).
            let mut pages = MdlPages::allocate_in_mdls_of(
                &iface,
                &passive,
                5 * PAGE_SIZE,
                CACHED,
                2 * PAGE_SIZE,
            )
            .unwrap();
            assert_eq!((pages.mdl_count(), pages.page_count()), (3, 5));
            assert_eq!(m.live_mdl_allocations(), 3);
            // A write straddling the MDL boundary lands in both MDLs.
            let data: Vec<u8> = (0..64).collect();
            pages.write(2 * PAGE_SIZE - 32, &data).unwrap();
            assert!(
                pages.write(5 * PAGE_SIZE - 1, &[0, 0]).is_err(),
                "past the end"
            );
            let mapping = IoMmuMapping::map(&iface, &passive, &pages).unwrap();
            let adapter = m.adapter_of(iface.device_handle()).unwrap();
            let mut dma = m.dma(adapter);
            let mut tail = [0u8; 32];
            dma.read(
                mapping.address_of(2 * PAGE_SIZE - 32).unwrap().0,
                &mut tail,
                "test",
            )
            .unwrap();
            let mut head = [0u8; 32];
            dma.read(mapping.page_address(2).unwrap().0, &mut head, "test")
                .unwrap();
            assert_eq!([&tail[..], &head[..]].concat(), data);
            assert_eq!(m.live_iommu_mappings(), 3, "one mapping per MDL");
        });
        m.check_leaks();
        m.assert_clean();
    }
    let m = Machine::new(MachineConfig::windows_11_22h2());
    m.enter(|| {
        let iface = interface(&m, sys::DXGKDDI_INTERFACE_VERSION_WDDM3_1);
        let passive = Passive::check().unwrap();
        for bad in [0, 100, MAX_BYTES_PER_MDL + PAGE_SIZE] {
            assert_eq!(
                MdlPages::allocate_in_mdls_of(&iface, &passive, PAGE_SIZE, CACHED, bad)
                    .unwrap_err(),
                NtError::INVALID_PARAMETER
            );
        }
    });
}

#[test]
fn zero_and_oversized_requests_are_refused_before_any_callback() {
    let m = Machine::new(MachineConfig::windows_11_22h2());
    m.enter(|| {
        let iface = interface(&m, sys::DXGKDDI_INTERFACE_VERSION_WDDM3_1);
        let passive = Passive::check().unwrap();
        assert_eq!(
            MdlPages::allocate(&iface, &passive, 0, CACHED).unwrap_err(),
            NtError::INVALID_PARAMETER
        );
        assert_eq!(
            MdlPages::allocate(&iface, &passive, usize::MAX - 10, CACHED).unwrap_err(),
            NtError::INVALID_PARAMETER
        );
        assert_eq!(
            ContiguousMemory::allocate(&iface, &passive, 0, CACHED).unwrap_err(),
            NtError::INVALID_PARAMETER
        );
    });
    assert_eq!(m.callback_calls("DxgkCbAllocatePagesForMdl"), 0);
    m.assert_clean();
}

#[test]
fn every_wrapped_callback_failing_leaves_nothing_behind() {
    // Fail the n-th failable call for every n a DeviceMemory + ContiguousMemory allocation
    // reaches: each failure is a clean NtError and nothing stays allocated or mapped.
    let reached = {
        let m = Machine::new(MachineConfig::windows_11_22h2());
        m.enter(|| {
            let iface = interface(&m, sys::DXGKDDI_INTERFACE_VERSION_WDDM3_1);
            let passive = Passive::check().unwrap();
            let before = m.injection_points_reached();
            let _a = DeviceMemory::allocate(&iface, &passive, 2 * PAGE_SIZE, CACHED).unwrap();
            let _b = ContiguousMemory::allocate(&iface, &passive, PAGE_SIZE, CACHED).unwrap();
            m.injection_points_reached() - before
        })
    };
    assert!(
        reached >= 3,
        "allocate pages, map, allocate contiguous: {reached}"
    );
    for n in 1..=reached {
        let m = Machine::new(MachineConfig::windows_11_22h2());
        m.enter(|| {
            let iface = interface(&m, sys::DXGKDDI_INTERFACE_VERSION_WDDM3_1);
            let passive = Passive::check().unwrap();
            m.fail_nth(n);
            let a = DeviceMemory::allocate(&iface, &passive, 2 * PAGE_SIZE, CACHED);
            let b = ContiguousMemory::allocate(&iface, &passive, PAGE_SIZE, CACHED);
            let failed = [a.as_ref().err().copied(), b.as_ref().err().copied()];
            assert_eq!(
                failed.iter().flatten().count(),
                1,
                "exactly one failure for n={n}: {failed:?}"
            );
            assert!(failed.iter().flatten().all(|e| e.raw() < 0));
        });
        m.check_leaks();
        m.assert_clean();
    }
}

#[test]
fn callbacks_missing_from_an_old_interface_are_typed_errors() {
    let m = Machine::new(MachineConfig::windows_10_1803());
    m.enter(|| {
        // A 2.3-sized interface: the 2.4 memory callbacks are not there.
        let raw = m.interface_for_tests(sys::DXGKDDI_INTERFACE_VERSION_WDDM2_3);
        // SAFETY: a valid interface from the simulator.
        let old = unsafe { DxgkInterface::copy_from(&raw, sys::DXGKDDI_INTERFACE_VERSION_WDDM2_3) }
            .unwrap();
        let e: Unavailable = old.allocate_pages_for_mdl().unwrap_err();
        assert_eq!(e.callback, "DxgkCbAllocatePagesForMdl");
        assert_eq!(e.since, sys::DXGKDDI_INTERFACE_VERSION_WDDM2_4);
        let passive = Passive::check().unwrap();
        assert_eq!(
            MdlPages::allocate(&old, &passive, PAGE_SIZE, CACHED).unwrap_err(),
            NtError::PROCEDURE_NOT_FOUND
        );
        // And rgpu's minimum refuses such an interface outright.
        // SAFETY: as above.
        let refused =
            unsafe { DxgkInterface::copy_from(&raw, sys::DXGKDDI_INTERFACE_VERSION_WDDM2_4) };
        assert!(matches!(
            refused,
            Err(dxgk::interface::InterfaceError::TooOld { .. })
        ));
    });
    assert_eq!(m.callback_calls("DxgkCbAllocatePagesForMdl"), 0);
    m.assert_clean();
}

#[test]
fn a_truncated_interface_is_refused() {
    let m = Machine::new(MachineConfig::windows_11_22h2());
    m.enter(|| {
        let mut raw = m.interface_for_tests(sys::DXGKDDI_INTERFACE_VERSION_WDDM3_1);
        raw.Size = 64;
        // SAFETY: a valid interface whose Size lies about its length (smaller than real).
        let r = unsafe { DxgkInterface::copy_from(&raw, sys::DXGKDDI_INTERFACE_VERSION_WDDM2_4) };
        assert!(matches!(
            r,
            Err(dxgk::interface::InterfaceError::TooSmall { size: 64, .. })
        ));
    });
}

#[test]
fn passive_token_is_refused_at_dispatch_level() {
    let m = Machine::new(MachineConfig::windows_11_22h2());
    m.enter(|| {
        // SAFETY: simulated raise, lowered below.
        let old = unsafe { sys::KeRaiseIrql(sys::DISPATCH_LEVEL) };
        assert_eq!(Passive::check().unwrap_err(), NtError::INVALID_DEVICE_STATE);
        // SAFETY: restores the raise above.
        unsafe { sys::KeLowerIrql(old) };
        assert!(Passive::check().is_ok());
    });
}

#[test]
fn contiguous_memory_is_cpu_usable_and_freed() {
    for m in machines() {
        m.enter(|| {
            let iface = interface(&m, m.config().max_interface_version);
            let passive = Passive::check().unwrap();
            let mut c =
                ContiguousMemory::allocate(&iface, &passive, 3 * PAGE_SIZE, CACHED).unwrap();
            c.as_mut_slice().fill(0x5A);
            assert!(c.as_mut_slice().iter().all(|&b| b == 0x5A));
            assert_eq!(m.live_contiguous_allocations(), 1);
        });
        assert_eq!(m.live_contiguous_allocations(), 0);
        m.check_leaks();
        m.assert_clean();
    }
}
