//! The six memory callbacks, MDLs and the IOMMU: Windows' rules fire on misuse and stay silent
//! on correct use, in both IOMMU modes.

mod common;

use common::{lower, machines, pfns, raise, sys_va, unmap_va, Cb};
use dxgk_sim::memory::{
    FREED_PAGE_FILL, FRESH_PAGE_FILL, MAX_MDL_BYTES, PHYSICAL_MEMORY_LIMIT, REMAPPED_LOGICAL_BASE,
};
use dxgk_sim::{IommuFaultKind, IommuMode, Machine, MachineConfig, Rule};
use dxgk_sys as sys;

const TAG: u32 = u32::from_le_bytes(*b"MemT");

fn only(m: &Machine, rule: Rule, needle: &str) {
    let all = m.findings();
    assert!(
        all.iter().all(|f| f.rule == rule),
        "{}: expected only {rule:?} findings, got {all:#?}",
        m.config().name
    );
    assert!(
        all.iter().any(|f| f.detail.contains(needle)),
        "{}: expected a {rule:?} finding containing {needle:?}, got {all:#?}",
        m.config().name
    );
}

#[test]
fn correct_use_of_every_memory_callback_is_silent_and_leaves_nothing() {
    for m in machines() {
        let mode = m.config().iommu;
        m.enter(|| {
            let cb = Cb::new(&m);
            let id = m.adapter_of(cb.i.DeviceHandle).unwrap();
            // Pages for an MDL: logical pages, never consecutive.
            let (s, h, mdl) = cb.alloc(8 * 4096);
            assert_eq!(s, sys::STATUS_SUCCESS);
            let logical = pfns(mdl);
            assert_eq!(logical.len(), 8);
            assert!(
                logical.windows(2).all(|w| w[1] != w[0] + 1),
                "not contiguous: {logical:x?}"
            );
            let physical = m.mdl_physical_pfns(mdl).unwrap();
            match mode {
                IommuMode::Identity => assert_eq!(
                    logical.iter().map(|&p| p as u64).collect::<Vec<_>>(),
                    physical
                ),
                IommuMode::Remapped => {
                    assert!(logical
                        .iter()
                        .all(|&l| l as u64 >= REMAPPED_LOGICAL_BASE
                            && !physical.contains(&(l as u64))));
                }
            }
            assert_eq!(
                m.mdl_cache_type(mdl),
                Some(sys::DXGK_MEMORY_CACHING_TYPE_CACHED)
            );
            // SAFETY: a live MDL.
            let flags = unsafe { (*mdl).MdlFlags };
            assert_eq!(flags & sys::MDL_MAPPED_TO_SYSTEM_VA, 0, "not pre-mapped");
            // CPU writes through the system VA; the device reads them through the IOMMU.
            let va = sys_va(mdl);
            assert!(!va.is_null());
            // SAFETY: 8 mapped pages.
            let bytes = unsafe { std::slice::from_raw_parts_mut(va, 8 * 4096) };
            assert!(bytes.iter().all(|&b| b == 0), "fresh pages are zeroed");
            bytes[3 * 4096 + 5] = 0x5A;
            let mut dma = m.dma(id);
            let mut got = [0u8; 1];
            dma.read(((logical[3] as u64) << 12) + 5, &mut got, "test read")
                .unwrap();
            assert_eq!(got[0], 0x5A);
            dma.write((logical[6] as u64) << 12, &[1, 2, 3], "test write")
                .unwrap();
            assert_eq!(&bytes[6 * 4096..6 * 4096 + 3], &[1, 2, 3]);
            // A second IOMMU mapping of the Dxgkrnl MDL (allowed), unmapped exactly.
            let (s, mh) = cb.map(mdl);
            assert_eq!(s, sys::STATUS_SUCCESS);
            assert_eq!(m.live_iommu_mappings(), 1);
            cb.unmap(mh);
            unmap_va(va, mdl);
            assert_eq!(cb.free(h), sys::STATUS_SUCCESS);

            // A driver-built MDL over pool, mapped for the device.
            // SAFETY: plain pool allocation.
            let p = unsafe { sys::ExAllocatePoolWithTag(sys::NonPagedPoolNx, 3 * 4096, TAG) };
            // SAFETY: MDL over the pool block.
            let dmdl = unsafe { sys::IoAllocateMdl(p, 3 * 4096, 0, 0, std::ptr::null_mut()) };
            assert!(!dmdl.is_null());
            // SAFETY: as above.
            unsafe { sys::MmBuildMdlForNonPagedPool(dmdl) };
            assert_eq!(sys_va(dmdl), p.cast(), "nonpaged pool MDLs carry their VA");
            let (s, mh) = cb.map(dmdl);
            assert_eq!(s, sys::STATUS_SUCCESS);
            if mode == IommuMode::Identity {
                let first = pfns(dmdl)[0] as u64;
                // SAFETY: 3 pages of pool.
                let off = unsafe { sys::MmGetMdlByteOffset(dmdl) } as u64;
                // SAFETY: as above.
                unsafe { p.cast::<u8>().write(0x77) };
                let mut b = [0u8];
                m.dma(id)
                    .read((first << 12) + off, &mut b, "pool read")
                    .unwrap();
                assert_eq!(b[0], 0x77);
            } else {
                let logical = m.mapping_logical_pages(mh).unwrap();
                assert!(logical.iter().all(|&l| l >= REMAPPED_LOGICAL_BASE));
            }
            cb.unmap(mh);
            // SAFETY: unmapped first, then freed, in order.
            unsafe { sys::IoFreeMdl(dmdl) };
            // SAFETY: as above.
            unsafe { sys::ExFreePoolWithTag(p, TAG) };

            // Contiguous memory: a kernel VA, IOMMU-mapped for its lifetime.
            let (s, ch, cva) = cb.contig(2 * 4096);
            assert_eq!(s, sys::STATUS_SUCCESS);
            assert!(!cva.is_null() && (cva as usize).is_multiple_of(4096));
            let clog = m.contiguous_logical_pages(ch).unwrap();
            assert_eq!(clog.len(), 2);
            // SAFETY: 2 pages.
            unsafe { cva.cast::<u8>().write(9) };
            let mut b = [0u8];
            m.dma(id)
                .read(clog[0] << 12, &mut b, "contig read")
                .unwrap();
            assert_eq!(b[0], 9);
            assert_eq!(cb.free_contig(ch), sys::STATUS_SUCCESS);
        });
        m.check_leaks();
        m.assert_clean();
        assert_eq!(
            (
                m.live_mdl_allocations(),
                m.live_iommu_mappings(),
                m.live_contiguous_allocations()
            ),
            (0, 0, 0)
        );
        assert_eq!(m.callback_calls("DxgkCbAllocatePagesForMdl"), 1);
        assert_eq!(m.callback_calls("DxgkCbMapMdlToIoMmu"), 2);
        assert!(m.iommu_faults().is_empty());
    }
}

#[test]
fn dont_zero_pages_carry_the_fresh_pattern() {
    let m = Machine::new(MachineConfig::windows_10_1803());
    m.enter(|| {
        let cb = Cb::new(&m);
        let mut a = Cb::alloc_args(4096);
        a.Flags = dxgk_sim::memory::MM_DONT_ZERO_ALLOCATION;
        assert_eq!(cb.alloc_with(&mut a), sys::STATUS_SUCCESS);
        let va = sys_va(a.pMdl);
        // SAFETY: one mapped page.
        assert!(unsafe { std::slice::from_raw_parts(va, 4096) }
            .iter()
            .all(|&b| b == FRESH_PAGE_FILL));
        unmap_va(va, a.pMdl);
        cb.free(a.hMemoryHandle);
    });
    m.check_leaks();
    m.assert_clean();
}

#[test]
fn memory_callbacks_above_passive_level_are_reported_and_refused() {
    for m in machines() {
        m.enter(|| {
            let cb = Cb::new(&m);
            let old = raise(sys::DISPATCH_LEVEL);
            let (s, _, mdl) = cb.alloc(4096);
            lower(old);
            assert_ne!(s, sys::STATUS_SUCCESS);
            assert!(mdl.is_null());
        });
        only(&m, Rule::IrqlTooHigh, "documented maximum 0");
        assert!(m.findings()[0].call == "DxgkCbAllocatePagesForMdl");
        assert!(
            m.findings()[0].driver_site.contains("memory"),
            "{}",
            m.findings()[0]
        );
    }
}

#[test]
fn total_bytes_zero_or_above_4gib_minus_a_page_is_rejected() {
    for m in machines() {
        for bytes in [0, MAX_MDL_BYTES + 1] {
            m.enter(|| {
                let (s, _, mdl) = Cb::new(&m).alloc(bytes);
                assert_eq!(s, sys::STATUS_INVALID_PARAMETER);
                assert!(mdl.is_null());
            });
        }
        only(&m, Rule::InvalidArgument, "TotalBytes");
        assert_eq!(m.findings().len(), 2);
    }
}

#[test]
fn allocation_is_all_or_nothing_without_a_finding() {
    let m = Machine::new(MachineConfig::windows_10_1803());
    m.enter(|| {
        let (s, _, mdl) = Cb::new(&m).alloc(PHYSICAL_MEMORY_LIMIT + 4096);
        assert_eq!(s, sys::STATUS_INSUFFICIENT_RESOURCES);
        assert!(mdl.is_null());
    });
    assert_eq!(m.live_mdl_allocations(), 0);
    m.assert_clean();
}

#[test]
fn unknown_and_double_freed_handles_are_reported() {
    for m in machines() {
        m.enter(|| {
            let cb = Cb::new(&m);
            assert_eq!(
                cb.free(0x1234 as sys::HANDLE),
                sys::STATUS_INVALID_PARAMETER
            );
            let (_, h, _) = cb.alloc(4096);
            assert_eq!(cb.free(h), sys::STATUS_SUCCESS);
            assert_eq!(cb.free(h), sys::STATUS_INVALID_PARAMETER);
            let (_, ch, _) = cb.contig(4096);
            assert_eq!(
                cb.free(ch),
                sys::STATUS_INVALID_PARAMETER,
                "a contiguous handle is not an MDL handle"
            );
            assert_eq!(cb.free_contig(ch), sys::STATUS_SUCCESS);
            assert_eq!(cb.free_contig(ch), sys::STATUS_INVALID_PARAMETER);
        });
        let f = m.findings_of(Rule::MdlMisuse);
        assert_eq!(f.len(), 4, "{f:#?}");
        assert!(f[0].detail.contains("unknown handle"));
        assert!(f[1].detail.contains("double free"));
        assert!(f[2].detail.contains("belongs to another callback"));
        assert!(f[3].detail.contains("double free"));
        assert_eq!(m.findings().len(), 4);
    }
}

#[test]
fn double_unmap_and_unknown_unmap_are_reported() {
    for m in machines() {
        m.enter(|| {
            let cb = Cb::new(&m);
            let (_, h, mdl) = cb.alloc(4096);
            let (_, mh) = cb.map(mdl);
            cb.unmap(mh);
            cb.unmap(mh);
            cb.unmap(0x999 as sys::HANDLE);
            cb.free(h);
        });
        let f = m.findings_of(Rule::MdlMisuse);
        assert_eq!(f.len(), 2, "{f:#?}");
        assert!(f[0].detail.contains("double unmap"));
        assert!(f[1].detail.contains("unknown handle"));
    }
}

#[test]
fn freeing_pages_while_mapped_is_reported() {
    for m in machines() {
        m.enter(|| {
            let cb = Cb::new(&m);
            let (_, h, mdl) = cb.alloc(2 * 4096);
            let _va = sys_va(mdl);
            let (_, mh) = cb.map(mdl);
            cb.free(h); // still mapped to system VA and to the IOMMU
            cb.unmap(mh); // already torn down and reported: no second finding
        });
        let f = m.findings_of(Rule::MdlMisuse);
        assert_eq!(f.len(), 2, "{f:#?}");
        assert!(f
            .iter()
            .any(|x| x.detail.contains("freed while mapped to system VA")));
        assert!(f
            .iter()
            .any(|x| x.detail.contains("freed while mapped to the IOMMU")));
        m.check_leaks();
        assert_eq!(m.findings().len(), 2, "nothing left behind");
    }
}

#[test]
fn an_mdl_changed_while_mapped_is_reported_at_unmap() {
    for m in machines() {
        m.enter(|| {
            let cb = Cb::new(&m);
            // SAFETY: pool for a driver MDL.
            let p = unsafe { sys::ExAllocatePoolWithTag(sys::NonPagedPoolNx, 2 * 4096, TAG) };
            // SAFETY: as above.
            let mdl = unsafe { sys::IoAllocateMdl(p, 2 * 4096, 0, 0, std::ptr::null_mut()) };
            // SAFETY: as above.
            unsafe { sys::MmBuildMdlForNonPagedPool(mdl) };
            let (_, mh) = cb.map(mdl);
            // SAFETY: a live MDL.
            let array = unsafe { sys::MmGetMdlPfnArray(mdl) };
            // SAFETY: deliberately rewrites the MDL's first PFN while it is mapped.
            unsafe { *array += 2 };
            cb.unmap(mh);
            // SAFETY: balanced teardown.
            unsafe { sys::IoFreeMdl(mdl) };
            // SAFETY: as above.
            unsafe { sys::ExFreePoolWithTag(p, TAG) };
        });
        only(&m, Rule::MdlMisuse, "changed while mapped to the IOMMU");
    }
}

#[test]
fn freeing_a_driver_mdl_or_its_pool_while_mapped_is_reported() {
    for m in machines() {
        m.enter(|| {
            let cb = Cb::new(&m);
            // SAFETY: pool for a driver MDL.
            let p = unsafe { sys::ExAllocatePoolWithTag(sys::NonPagedPoolNx, 4096, TAG) };
            // SAFETY: as above.
            let mdl = unsafe { sys::IoAllocateMdl(p, 4096, 0, 0, std::ptr::null_mut()) };
            // SAFETY: as above.
            unsafe { sys::MmBuildMdlForNonPagedPool(mdl) };
            let (_, _mh) = cb.map(mdl);
            // SAFETY: deliberately frees the pool under a live mapping.
            unsafe { sys::ExFreePoolWithTag(p, TAG) };
            // SAFETY: deliberately frees the mapped MDL.
            unsafe { sys::IoFreeMdl(mdl) };
        });
        let f = m.findings_of(Rule::MdlMisuse);
        assert_eq!(f.len(), 2, "{f:#?}");
        assert_eq!(f[0].call, "ExFreePoolWithTag");
        assert!(f[1].detail.contains("freed while mapped to the IOMMU"));
        m.check_leaks();
        assert_eq!(m.findings().len(), 2);
    }
}

#[test]
fn iofreemdl_on_a_dxgkrnl_mdl_and_unmapping_a_never_mapped_va_are_reported() {
    for m in machines() {
        m.enter(|| {
            let cb = Cb::new(&m);
            let (_, h, mdl) = cb.alloc(4096);
            // SAFETY: deliberately the wrong free routine (the simulator refuses it).
            unsafe { sys::IoFreeMdl(mdl) };
            let mut local = 0u8;
            unmap_va(&mut local, mdl);
            cb.free(h);
        });
        let f = m.findings_of(Rule::MdlMisuse);
        assert_eq!(f.len(), 2, "{f:#?}");
        assert!(f[0].detail.contains("DxgkCbFreePagesFromMdl"));
        assert!(f[1].detail.contains("never mapped"));
    }
}

#[test]
fn leftovers_are_reported_as_leaks_with_their_allocation_site() {
    for m in machines() {
        m.enter(|| {
            let cb = Cb::new(&m);
            let (_, _h, mdl) = cb.alloc(4096);
            let _ = cb.map(mdl);
            let _ = cb.contig(4096);
        });
        m.check_resource_leaks();
        let f = m.findings_of(Rule::ResourceLeak);
        assert_eq!(f.len(), 3, "{f:#?}");
        assert!(f.iter().all(|x| x.driver_site.contains("memory")), "{f:#?}");
    }
}

#[test]
fn device_access_to_unmapped_or_read_only_pages_faults_without_touching_memory() {
    for m in machines() {
        let id = m.enter(|| {
            let cb = Cb::new(&m);
            let id = m.adapter_of(cb.i.DeviceHandle).unwrap();
            let (_, h, mdl) = cb.alloc(2 * 4096);
            let logical = pfns(mdl);
            let va = sys_va(mdl);
            let mut dma = m.dma(id);
            // The page after the MDL's first logical page is a hole (never contiguous).
            let hole = ((logical[0] as u64) + 1) << 12;
            let mut b = [0u8; 4];
            let e = dma.read(hole, &mut b, "RingFetch").unwrap_err();
            assert_eq!((e.kind, e.logical_addr), (IommuFaultKind::NotMapped, hole));
            // Read-only page: the write faults and memory is unchanged.
            let ro = (logical[1] as u64) << 12;
            assert!(m.set_logical_page_writable(id, ro, false));
            assert_eq!(
                dma.write(ro, &[0xEE; 8], "Write").unwrap_err().kind,
                IommuFaultKind::ReadOnly
            );
            // SAFETY: page 1 of the mapped MDL.
            let r = unsafe { va.wrapping_add(4096).read() };
            assert_eq!(r, 0);
            // A cross-page access that starts mapped and ends in a hole touches nothing.
            let last = ((logical[0] as u64) << 12) + 4092;
            assert!(dma.write(last, &[7; 8], "Write").is_err());
            // SAFETY: page 0.
            let r = unsafe { va.wrapping_add(4092).read() };
            assert_eq!(r, 0);
            // After free, the logical pages are gone.
            unmap_va(va, mdl);
            cb.free(h);
            assert!(dma
                .read((logical[0] as u64) << 12, &mut b, "after free")
                .is_err());
            id
        });
        let faults = m.iommu_faults();
        assert_eq!(faults.len(), 4, "{faults:#?}");
        assert!(faults.iter().all(|f| f.adapter == id));
        assert_eq!(faults[0].source, "\"RingFetch\"");
        only(&m, Rule::IommuFault, "IOMMU fault");
        let _ = FREED_PAGE_FILL;
    }
}

#[test]
fn interface_is_sized_by_version_and_newer_members_are_null() {
    let m = Machine::new(MachineConfig::windows_11_22h2());
    let i23 = m.interface_for_tests(sys::DXGKDDI_INTERFACE_VERSION_WDDM2_3);
    assert_eq!(i23.Size, 368);
    assert!(i23.DxgkCbAllocatePagesForMdl.is_none() && i23.DxgkCbMapMdlToIoMmu.is_none());
    assert!(i23.DxgkCbMapMemory.is_some());
    let i24 = m.interface_for_tests(sys::DXGKDDI_INTERFACE_VERSION_WDDM2_4);
    assert_eq!(
        (i24.Size, i24.Version),
        (456, sys::DXGKDDI_INTERFACE_VERSION_WDDM2_4)
    );
    assert!(i24.DxgkCbAllocatePagesForMdl.is_some() && i24.DxgkCbUnmapMdlFromIoMmu.is_some());
    assert_ne!(i23.DeviceHandle, i24.DeviceHandle);
}

#[test]
fn a_foreign_device_handle_is_rejected() {
    let m = Machine::new(MachineConfig::windows_10_1803());
    m.enter(|| {
        let cb = Cb::new(&m);
        let mut a = Cb::alloc_args(4096);
        // SAFETY: the simulator validates the handle.
        let s = unsafe { cb.i.DxgkCbAllocatePagesForMdl.unwrap()(0x42 as sys::HANDLE, &mut a) };
        assert_eq!(s, sys::STATUS_INVALID_PARAMETER);
    });
    only(&m, Rule::InvalidArgument, "unknown DeviceHandle");
}

#[test]
fn machines_are_independent_in_parallel() {
    // Allocations per machine (fewer under Miri, which interprets every one).
    const ROUNDS: u64 = if cfg!(miri) { 3 } else { 20 };
    let hs: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(|| {
                let m = Machine::new(MachineConfig::windows_11_22h2());
                m.enter(|| {
                    let cb = Cb::new(&m);
                    for _ in 0..ROUNDS {
                        let (_, h, _) = cb.alloc(4096);
                        cb.free(h);
                    }
                });
                m.check_leaks();
                m.assert_clean();
                m.callback_calls("DxgkCbAllocatePagesForMdl")
            })
        })
        .collect();
    for h in hs {
        assert_eq!(h.join().unwrap(), ROUNDS);
    }
}

#[cfg(feature = "rgpu-hw")]
#[test]
fn the_dma_handle_is_an_rgpu_hw_dma_bus() {
    use rgpu_hw::{DmaBus, DmaFaultKind, DmaSource};
    let m = Machine::new(MachineConfig::windows_11_22h2());
    m.enter(|| {
        let cb = Cb::new(&m);
        let id = m.adapter_of(cb.i.DeviceHandle).unwrap();
        let (_, h, mdl) = cb.alloc(4096);
        let mut bus = m.dma(id);
        let page = (pfns(mdl)[0] as u64) << 12;
        DmaBus::write(&mut bus, page, &[1, 2], DmaSource::FenceWriteback).unwrap();
        let e =
            DmaBus::read(&mut bus, page + 4096, &mut [0u8; 4], DmaSource::RingFetch).unwrap_err();
        assert_eq!(e.kind, DmaFaultKind::NotMapped);
        cb.free(h);
    });
    assert_eq!(m.iommu_faults()[0].source, "RingFetch");
}
