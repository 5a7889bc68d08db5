//! The WDDM 3.0 DMA remapping wrappers (physical memory objects, ADLs, CPU mappings) against
//! dxgk-sim: CPU and device visibility in both IOMMU modes, both ADL forms, sub-ranges,
//! version gating, the failure of every wrapped callback — and every misuse rule of the
//! simulator firing on a deliberately bad caller that uses the raw callbacks.

use dxgk::interface::{DxgkInterface, Unavailable};
use dxgk::irql::Passive;
use dxgk::memory::PAGE_SIZE;
use dxgk::pmo::{Adl, Backing, Contiguity, CpuMapping, PhysicalMemoryObject};
use dxgk::NtError;
use dxgk_sim::{IommuMode, Machine, MachineConfig, Rule};
use dxgk_sys as sys;

const CACHED: sys::DXGK_MEMORY_CACHING_TYPE = sys::DXGK_MEMORY_CACHING_TYPE_CACHED;

/// WDDM 3.1 machines in both IOMMU modes.
fn machines() -> Vec<Machine> {
    vec![
        Machine::new(MachineConfig::windows_11_22h2().with_iommu(IommuMode::Remapped)),
        Machine::new(MachineConfig::windows_11_22h2().with_iommu(IommuMode::Identity)),
    ]
}

fn interface(m: &Machine, version: u32) -> DxgkInterface {
    let raw = m.interface_for_tests(version);
    // SAFETY: a valid, version-sized interface from the simulator.
    unsafe { DxgkInterface::copy_from(&raw, sys::DXGKDDI_INTERFACE_VERSION_WDDM2_4) }.unwrap()
}

fn newest(m: &Machine) -> DxgkInterface {
    interface(m, m.config().max_interface_version)
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 13 % 251) as u8).collect()
}

/// Reads every page of `adl` through the device and compares it with `expected`.
fn device_sees(m: &Machine, iface: &DxgkInterface, adl: &Adl<'_>, expected: &[u8]) {
    let adapter = m.adapter_of(iface.device_handle()).unwrap();
    let mut dma = m.dma(adapter);
    assert_eq!(adl.pages().len(), adl.page_count());
    for (i, addr) in adl.pages().enumerate() {
        let mut page = vec![0u8; PAGE_SIZE];
        dma.read(addr.0, &mut page, "test")
            .expect("ADL page readable by the device");
        assert_eq!(
            page,
            expected[i * PAGE_SIZE..(i + 1) * PAGE_SIZE],
            "page {i}"
        );
    }
}

#[test]
fn objects_are_cpu_writable_and_device_readable_through_both_adl_forms() {
    for m in machines() {
        m.enter(|| {
            let iface = newest(&m);
            let passive = Passive::check().unwrap();
            let remapped = m.config().iommu == IommuMode::Remapped;
            let object = PhysicalMemoryObject::create(
                &iface,
                &passive,
                3 * PAGE_SIZE + 1,
                CACHED,
                Backing::ANYWHERE,
            )
            .unwrap();
            assert_eq!(object.len(), 4 * PAGE_SIZE, "rounded up to whole pages");
            let data = pattern(object.len());
            {
                let mut cpu = CpuMapping::map(&iface, &passive, &object, 0, object.len()).unwrap();
                assert!(
                    cpu.as_slice().iter().all(|&b| b == 0),
                    "fresh pages are zeroed"
                );
                cpu.as_mut_slice().copy_from_slice(&data);
                assert_eq!(m.live_physical_memory_mappings(), 1);
            }
            assert_eq!(
                m.live_physical_memory_mappings(),
                0,
                "mapping dropped → unmapped"
            );

            let preferred = Adl::allocate(
                &iface,
                &passive,
                &object,
                0,
                object.len(),
                Contiguity::Prefer,
            )
            .unwrap();
            let any =
                Adl::allocate(&iface, &passive, &object, 0, object.len(), Contiguity::Any).unwrap();
            // Remapped: one logical range when asked, a page list otherwise. Identity: the
            // object's pages are physically scattered, so a page list either way.
            assert_eq!(preferred.is_contiguous(), remapped, "{}", m.config().name);
            assert!(!any.is_contiguous());
            assert_eq!(m.live_adls(), 2);
            for adl in [&preferred, &any] {
                assert_eq!(adl.page_count(), 4);
                assert!(adl.page_address(4).is_none(), "bounds-checked");
                device_sees(&m, &iface, adl, &data);
                let physical = m.adl_physical_pfns(adl.as_raw()).unwrap();
                let device: Vec<u64> = (0..4).map(|i| adl.page_number(i).unwrap()).collect();
                // Never physical pages under remapping; exactly them under identity.
                assert_eq!(device == physical, !remapped, "{}", m.config().name);
            }
            if remapped {
                let base = preferred.page_number(0).unwrap();
                assert!(base >= dxgk_sim::memory::REMAPPED_LOGICAL_BASE);
                assert_eq!(
                    preferred.address_of(PAGE_SIZE + 5).unwrap().0,
                    (base + 1) * PAGE_SIZE as u64 + 5
                );
            }
            drop(any);
            drop(preferred);
            assert_eq!(m.live_adls(), 0);
            drop(object);
            assert_eq!(m.live_physical_memory_objects(), 0);
        });
        m.check_leaks();
        m.assert_clean();
    }
}

#[test]
fn contiguous_objects_give_contiguous_adls_in_both_modes() {
    for m in machines() {
        m.enter(|| {
            let iface = newest(&m);
            let passive = Passive::check().unwrap();
            let backing = Backing::Contiguous {
                low: 0,
                high: i64::MAX as u64,
                boundary: 0,
            };
            let object =
                PhysicalMemoryObject::create(&iface, &passive, 3 * PAGE_SIZE, CACHED, backing)
                    .unwrap();
            let adl = Adl::allocate(
                &iface,
                &passive,
                &object,
                0,
                object.len(),
                Contiguity::Require,
            )
            .unwrap();
            assert!(adl.is_contiguous(), "{}", m.config().name);
            let base = adl.page_number(0).unwrap();
            let all: Vec<u64> = adl.pages().map(|a| a.0 / PAGE_SIZE as u64).collect();
            assert_eq!(all, vec![base, base + 1, base + 2]);
        });
        m.check_leaks();
        m.assert_clean();
    }
}

#[test]
fn require_contiguous_over_scattered_pages_fails_cleanly_without_remapping() {
    let m = Machine::new(MachineConfig::windows_11_22h2().with_iommu(IommuMode::Identity));
    m.enter(|| {
        let iface = newest(&m);
        let passive = Passive::check().unwrap();
        let object = PhysicalMemoryObject::create(
            &iface,
            &passive,
            2 * PAGE_SIZE,
            CACHED,
            Backing::ANYWHERE,
        )
        .unwrap();
        let e = Adl::allocate(
            &iface,
            &passive,
            &object,
            0,
            object.len(),
            Contiguity::Require,
        )
        .unwrap_err();
        assert_eq!(e, NtError::INSUFFICIENT_RESOURCES);
        assert_eq!(m.live_adls(), 0);
        // A single page is contiguous by itself.
        let one = Adl::allocate(
            &iface,
            &passive,
            &object,
            PAGE_SIZE,
            PAGE_SIZE,
            Contiguity::Require,
        )
        .unwrap();
        assert!(one.is_contiguous());
    });
    m.check_leaks();
    m.assert_clean();
}

#[test]
fn sub_ranges_line_up_between_cpu_mapping_and_adl() {
    for m in machines() {
        m.enter(|| {
            let iface = newest(&m);
            let passive = Passive::check().unwrap();
            let object = PhysicalMemoryObject::create(
                &iface,
                &passive,
                4 * PAGE_SIZE,
                CACHED,
                Backing::ANYWHERE,
            )
            .unwrap();
            // An unaligned CPU range: Dxgkrnl widens it to pages; the wrapper hides that.
            let mut cpu =
                CpuMapping::map(&iface, &passive, &object, PAGE_SIZE + 100, 5000).unwrap();
            assert_eq!(cpu.len(), 5000);
            let data = pattern(5000);
            cpu.as_mut_slice().copy_from_slice(&data);
            let adl = Adl::allocate(
                &iface,
                &passive,
                &object,
                PAGE_SIZE,
                2 * PAGE_SIZE,
                Contiguity::Any,
            )
            .unwrap();
            assert_eq!((adl.offset(), adl.page_count()), (PAGE_SIZE, 2));
            let adapter = m.adapter_of(iface.device_handle()).unwrap();
            let mut dma = m.dma(adapter);
            // Byte 100 of the ADL's range is the first byte written; it straddles a page.
            let mut back = vec![0u8; 5000];
            let split = PAGE_SIZE - 100;
            dma.read(adl.address_of(100).unwrap().0, &mut back[..split], "t")
                .unwrap();
            dma.read(
                adl.address_of(PAGE_SIZE).unwrap().0,
                &mut back[split..],
                "t",
            )
            .unwrap();
            assert_eq!(back, data);
            for (off, len) in [
                (1, PAGE_SIZE),
                (0, 0),
                (0, 5 * PAGE_SIZE),
                (4 * PAGE_SIZE, PAGE_SIZE),
            ] {
                assert_eq!(
                    Adl::allocate(&iface, &passive, &object, off, len, Contiguity::Any)
                        .unwrap_err(),
                    NtError::INVALID_PARAMETER,
                    "ADL ({off:#x}, {len:#x})"
                );
            }
            for (off, len) in [(0, 0), (4 * PAGE_SIZE - 1, 2), (usize::MAX, 2)] {
                assert_eq!(
                    CpuMapping::map(&iface, &passive, &object, off, len).unwrap_err(),
                    NtError::INVALID_PARAMETER,
                    "mapping ({off:#x}, {len:#x})"
                );
            }
        });
        m.check_leaks();
        m.assert_clean();
    }
}

#[test]
fn the_callbacks_exist_only_from_wddm_3_0() {
    let m = Machine::new(MachineConfig::windows_11_22h2());
    m.enter(|| {
        let passive = Passive::check().unwrap();
        // 2.9: the members are inside the interface (header gate) but Dxgkrnl leaves them NULL.
        let at_2_9 = interface(&m, sys::DXGKDDI_INTERFACE_VERSION_WDDM2_9);
        let e: Unavailable = at_2_9.create_physical_memory_object().unwrap_err();
        assert_eq!(e.callback, "DxgkCbCreatePhysicalMemoryObject");
        assert!(at_2_9.allocate_adl().is_err());
        // 2.7: below the header gate.
        let at_2_7 = interface(&m, sys::DXGKDDI_INTERFACE_VERSION_WDDM2_7);
        let e = at_2_7.free_adl().unwrap_err();
        assert_eq!(
            (e.callback, e.since),
            ("DxgkCbFreeAdl", sys::DXGKDDI_INTERFACE_VERSION_WDDM2_9)
        );
        for iface in [at_2_9, at_2_7] {
            assert_eq!(
                PhysicalMemoryObject::create(
                    &iface,
                    &passive,
                    PAGE_SIZE,
                    CACHED,
                    Backing::ANYWHERE
                )
                .unwrap_err(),
                NtError::PROCEDURE_NOT_FOUND
            );
        }
        let at_3_0 = interface(&m, sys::DXGKDDI_INTERFACE_VERSION_WDDM3_0);
        assert!(at_3_0.create_physical_memory_object().is_ok());
        assert!(at_3_0.free_adl().is_ok());
    });
    assert_eq!(m.callback_calls("DxgkCbCreatePhysicalMemoryObject"), 0);
    m.assert_clean();
}

#[test]
fn every_wrapped_callback_failing_leaves_nothing_behind() {
    fn run(iface: &DxgkInterface) -> [Option<NtError>; 3] {
        let passive = Passive::check().unwrap();
        let object = match PhysicalMemoryObject::create(
            iface,
            &passive,
            2 * PAGE_SIZE,
            CACHED,
            Backing::ANYWHERE,
        ) {
            Ok(o) => o,
            Err(e) => return [Some(e), None, None],
        };
        let cpu = CpuMapping::map(iface, &passive, &object, 0, PAGE_SIZE);
        let adl = Adl::allocate(
            iface,
            &passive,
            &object,
            0,
            2 * PAGE_SIZE,
            Contiguity::Prefer,
        );
        [None, cpu.err(), adl.err()]
    }
    let reached = {
        let m = Machine::new(MachineConfig::windows_11_22h2());
        m.enter(|| {
            let iface = newest(&m);
            let before = m.injection_points_reached();
            assert_eq!(run(&iface), [None, None, None]);
            m.injection_points_reached() - before
        })
    };
    assert!(reached >= 3, "create, map, allocate ADL: {reached}");
    for n in 1..=reached {
        let m = Machine::new(MachineConfig::windows_11_22h2());
        m.enter(|| {
            let iface = newest(&m);
            m.fail_nth(n);
            let failed = run(&iface);
            assert_eq!(failed.iter().flatten().count(), 1, "n={n}: {failed:?}");
            assert!(failed.iter().flatten().all(|e| e.raw() < 0));
        });
        assert_eq!(
            (
                m.live_physical_memory_objects(),
                m.live_adls(),
                m.live_physical_memory_mappings()
            ),
            (0, 0, 0)
        );
        m.check_leaks();
        m.assert_clean();
    }
}

/// A deliberately bad caller: the raw callbacks, with handles it keeps after freeing.
struct Raw {
    iface: DxgkInterface,
}

impl Raw {
    fn create(&self, pages: usize) -> (sys::HANDLE, sys::HANDLE) {
        let mut a = sys::DXGKARGCB_CREATE_PHYSICAL_MEMORY_OBJECT {
            hAdapter: self.iface.device_handle(),
            Size: pages * PAGE_SIZE,
            Type: sys::DXGK_PHYSICAL_MEMORY_TYPE_MDL,
            CacheType: CACHED,
            ..Default::default()
        };
        a.u.Mdl.HighAddress.QuadPart = i64::MAX;
        let f = self.iface.create_physical_memory_object().unwrap();
        // SAFETY: a valid argument block.
        assert_eq!(unsafe { f(&mut a) }, sys::STATUS_SUCCESS);
        (a.hPhysicalMemoryObject, a.hAdapterMemoryObject)
    }

    fn destroy(&self, object: sys::HANDLE, adapter_object: sys::HANDLE) {
        let a = sys::DXGKARGCB_DESTROY_PHYSICAL_MEMORY_OBJECT {
            hPhysicalMemoryObject: object,
            hAdapterMemoryObject: adapter_object,
        };
        let f = self.iface.destroy_physical_memory_object().unwrap();
        // SAFETY: a valid argument block (the handles may be bad: that is the test).
        unsafe { f(&a) };
    }

    fn allocate_adl(&self, adapter_object: sys::HANDLE, pages: usize) -> (i32, *mut sys::DXGK_ADL) {
        let mut a = sys::DXGKARGCB_ALLOCATE_ADL {
            hAdapterMemoryObject: adapter_object,
            Size: pages * PAGE_SIZE,
            ..Default::default()
        };
        let f = self.iface.allocate_adl().unwrap();
        // SAFETY: a valid argument block.
        let s = unsafe { f(&mut a) };
        (s, a.pAdl)
    }

    fn free_adl(&self, adapter_object: sys::HANDLE, adl: *mut sys::DXGK_ADL) {
        let a = sys::DXGKARGCB_FREE_ADL {
            hAdapterMemoryObject: adapter_object,
            pAdl: adl,
        };
        let f = self.iface.free_adl().unwrap();
        // SAFETY: a valid argument block (the ADL may be stale: that is the test).
        unsafe { f(&a) };
    }

    fn map(&self, object: sys::HANDLE) -> (i32, sys::PVOID, usize) {
        let mut a = sys::DXGKARGCB_MAP_PHYSICAL_MEMORY {
            hPhysicalMemoryObject: object,
            AccessMode: sys::DXGK_ACCESS_MODE_KERNEL_MODE,
            Size: PAGE_SIZE,
            ..Default::default()
        };
        let f = self.iface.map_physical_memory().unwrap();
        // SAFETY: a valid argument block.
        let s = unsafe { f(&mut a) };
        (s, a.pMappedAddress, a.Size)
    }

    fn unmap(&self, object: sys::HANDLE, va: sys::PVOID, size: usize) {
        let a = sys::DXGKARGCB_UNMAP_PHYSICAL_MEMORY {
            hPhysicalMemoryObject: object,
            pBaseAddress: va,
            Size: size,
        };
        let f = self.iface.unmap_physical_memory().unwrap();
        // SAFETY: a valid argument block (the mapping may be bad: that is the test).
        unsafe { f(&a) };
    }
}

fn misuse_details(m: &Machine) -> Vec<String> {
    m.findings_of(Rule::MdlMisuse)
        .into_iter()
        .map(|f| format!("{}: {}", f.call, f.detail))
        .collect()
}

#[test]
fn an_adl_used_after_free_adl_is_reported_and_its_addresses_fault() {
    let m = Machine::new(MachineConfig::windows_11_22h2());
    m.enter(|| {
        let raw = Raw { iface: newest(&m) };
        let (obj, ao) = raw.create(2);
        let (s, adl) = raw.allocate_adl(ao, 2);
        assert_eq!(s, sys::STATUS_SUCCESS);
        // SAFETY: the live ADL the simulator returned.
        let first = unsafe { adl.read() }.u;
        // SAFETY: 2 scattered pages: the page-list arm.
        let pages = unsafe { first.Pages };
        // SAFETY: the list has 2 entries.
        let logical = unsafe { pages.read() } as u64 * PAGE_SIZE as u64;
        raw.free_adl(ao, adl);
        assert!(misuse_details(&m).is_empty());
        raw.free_adl(ao, adl);
        assert!(!m.check_adl_for_tests("DxgkDdiBuildPagingBuffer", adl));
        let found = misuse_details(&m);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[0].starts_with("DxgkCbFreeAdl: ")
                && found[0].contains("used after DxgkCbFreeAdl")
        );
        assert!(found[1].starts_with("DxgkDdiBuildPagingBuffer: "));
        // The freed ADL reads as poison, and the device can no longer reach its old pages.
        // SAFETY: the simulator keeps freed ADLs allocated (quarantine).
        let stale = unsafe { adl.read() };
        assert_eq!(stale.Flags.Contiguous(), 1);
        // SAFETY: the poisoned ADL is marked contiguous: the BasePageNumber arm.
        let base = unsafe { stale.u.BasePageNumber } as u64;
        assert_eq!(base, dxgk_sim::dxgkrnl::physical_memory::FREED_ADL_PAGE);
        let adapter = m.adapter_of(raw.iface.device_handle()).unwrap();
        assert!(m
            .dma(adapter)
            .read(logical, &mut [0u8; 8], "stale ADL")
            .is_err());
        assert_eq!(m.findings_of(Rule::IommuFault).len(), 1);
        raw.destroy(obj, ao);
    });
    m.check_leaks();
    assert_eq!(m.findings_of(Rule::ResourceLeak), vec![]);
}

#[test]
fn destroying_an_object_with_live_adls_or_mappings_is_reported() {
    let m = Machine::new(MachineConfig::windows_11_22h2());
    m.enter(|| {
        let raw = Raw { iface: newest(&m) };
        let (obj, ao) = raw.create(1);
        let (_, adl) = raw.allocate_adl(ao, 1);
        let (s, va, size) = raw.map(obj);
        assert_eq!(s, sys::STATUS_SUCCESS);
        raw.destroy(obj, ao);
        let found = misuse_details(&m);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found
            .iter()
            .any(|d| d.contains("destroyed with a live ADL")));
        assert!(found.iter().any(|d| d.contains("destroyed while mapped")));
        assert_eq!(
            (m.live_adls(), m.live_physical_memory_mappings()),
            (0, 0),
            "torn down"
        );
        // Using the orphaned ADL is reported as such; the late cleanup is not reported twice,
        // but any use after it is.
        assert!(!m.check_adl_for_tests("DxgkDdiBuildPagingBuffer", adl));
        assert!(misuse_details(&m)[2].contains("after its physical memory object was destroyed"));
        raw.free_adl(ao, adl);
        raw.unmap(obj, va, size);
        assert_eq!(misuse_details(&m).len(), 3);
        assert!(!m.check_adl_for_tests("DxgkDdiBuildPagingBuffer", adl));
        assert!(misuse_details(&m)[3].contains("used after DxgkCbFreeAdl"));
    });
    m.check_leaks();
    assert_eq!(m.findings_of(Rule::ResourceLeak), vec![]);
}

#[test]
fn unknown_stale_and_mismatched_handles_are_reported() {
    let m = Machine::new(MachineConfig::windows_11_22h2());
    m.enter(|| {
        let raw = Raw { iface: newest(&m) };
        let bogus = 0x1234_5670 as sys::HANDLE;
        let (obj, ao) = raw.create(1);
        let (obj2, ao2) = raw.create(1);
        // Each line is one bad call and one finding.
        raw.destroy(bogus, core::ptr::null_mut());
        assert_eq!(raw.allocate_adl(bogus, 1).0, sys::STATUS_INVALID_PARAMETER);
        assert_eq!(raw.allocate_adl(obj, 1).0, sys::STATUS_INVALID_PARAMETER); // wrong kind
        assert_eq!(raw.map(ao).0, sys::STATUS_INVALID_PARAMETER); // wrong kind
        raw.free_adl(ao, 0x5555_0000 as *mut sys::DXGK_ADL);
        let (_, adl) = raw.allocate_adl(ao, 1);
        raw.free_adl(ao2, adl); // another object's adapter object
        let (_, va, size) = raw.map(obj);
        raw.unmap(obj, va, size + PAGE_SIZE); // not the size Dxgkrnl returned
        raw.destroy(obj2, ao); // another object's adapter object
        let found = misuse_details(&m);
        assert_eq!(found.len(), 8, "{found:#?}");
        for (i, want) in [
            "unknown physical memory object",
            "unknown adapter memory object",
            "not of the kind this call takes (adapter memory object)",
            "not of the kind this call takes (physical memory object)",
            "unknown ADL",
            "belongs to adapter memory object",
            "no live mapping",
            "is not the adapter memory object",
        ]
        .iter()
        .enumerate()
        {
            assert!(
                found[i].contains(want),
                "finding {i}: {} (wanted {want})",
                found[i]
            );
        }
        // Clean up properly; then a double destroy is reported as such.
        raw.unmap(obj, va, size);
        raw.free_adl(ao, adl);
        raw.destroy(obj, ao);
        raw.destroy(obj2, ao2);
        raw.destroy(obj, ao);
        let found = misuse_details(&m);
        assert_eq!(found.len(), 9);
        assert!(found[8].contains("already destroyed"), "{}", found[8]);
    });
    m.check_leaks();
    assert_eq!(m.findings_of(Rule::ResourceLeak), vec![]);
}

#[test]
fn objects_adls_and_mappings_never_released_are_leaks() {
    let m = Machine::new(MachineConfig::windows_11_22h2());
    m.enter(|| {
        let raw = Raw { iface: newest(&m) };
        let (obj, ao) = raw.create(1);
        raw.allocate_adl(ao, 1);
        raw.map(obj);
    });
    m.check_leaks();
    let leaks: Vec<String> = m
        .findings_of(Rule::ResourceLeak)
        .into_iter()
        .map(|f| f.detail)
        .collect();
    assert_eq!(leaks.len(), 3, "{leaks:#?}");
    assert!(leaks.iter().any(|d| d.contains("physical memory object")));
    assert!(leaks.iter().any(|d| d.contains("DxgkCbFreeAdl")));
    assert!(leaks.iter().any(|d| d.contains("DxgkCbMapPhysicalMemory")));
}
