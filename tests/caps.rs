//! DxgkDdiQueryAdapterInfo answers: the caps rgpu declares, and the size rules a Windows
//! engineer expects (DRIVERCAPS grows with every WDK; everything else needs its full size).

use core::mem::size_of;

use dxgk_sim as _; // defines the kernel imports the driver links against
use dxgk_sys as sys;
use rgpu::caps;

fn query(
    interface: u32,
    ty: sys::DXGK_QUERYADAPTERINFOTYPE,
    input: &mut [u8],
    output: &mut [u8],
) -> Result<(), sys::NTSTATUS> {
    query_as(false, interface, ty, input, output)
}

/// `query` for a soft adapter (`soft`) or a hardware one.
fn query_as(
    soft: bool,
    interface: u32,
    ty: sys::DXGK_QUERYADAPTERINFOTYPE,
    input: &mut [u8],
    output: &mut [u8],
) -> Result<(), sys::NTSTATUS> {
    let args = sys::DXGKARG_QUERYADAPTERINFO {
        Type: ty,
        pInputData: if input.is_empty() {
            std::ptr::null_mut()
        } else {
            input.as_mut_ptr().cast()
        },
        InputDataSize: input.len() as u32,
        pOutputData: output.as_mut_ptr().cast(),
        OutputDataSize: output.len() as u32,
        ..Default::default()
    };
    // SAFETY: input and output buffers are valid for the sizes passed.
    let request = unsafe { dxgk::query::Request::decode(&args, interface) };
    request
        .and_then(|r| caps::answer(interface, soft, r))
        .map_err(|e| e.raw())
}

fn read<T: Copy>(bytes: &[u8]) -> T {
    assert!(bytes.len() >= size_of::<T>());
    // SAFETY: length checked; T is plain data.
    unsafe { bytes.as_ptr().cast::<T>().read_unaligned() }
}

#[test]
fn driver_caps_declare_gpummu_with_iommu_isolation_and_the_negotiated_wddm_version() {
    for (interface, wddm) in [
        (
            sys::DXGKDDI_INTERFACE_VERSION_WDDM2_4,
            sys::DXGKDDI_WDDMv2_4,
        ),
        (
            sys::DXGKDDI_INTERFACE_VERSION_WDDM2_7,
            sys::DXGKDDI_WDDMv2_7,
        ),
        (
            sys::DXGKDDI_INTERFACE_VERSION_WDDM3_1,
            sys::DXGKDDI_WDDMv3_1,
        ),
    ] {
        let mut out = vec![0xAAu8; size_of::<sys::DXGK_DRIVERCAPS>()];
        query(interface, sys::DXGKQAITYPE_DRIVERCAPS, &mut [], &mut out).unwrap();
        let c: sys::DXGK_DRIVERCAPS = read(&out);
        assert_eq!(c.WDDMVersion, wddm);
        let mm = c.MemoryManagementCaps;
        assert_eq!(
            (
                mm.VirtualAddressingSupported(),
                mm.GpuMmuSupported(),
                mm.IoMmuSupported()
            ),
            (1, 1, 0)
        );
        assert_eq!(mm.IoMmuSecureModeSupported(), 1);
        // MAP_APERTURE_SEGMENT2 is handled; the bit exists from 2.9.
        let map2 = u32::from(interface >= sys::DXGKDDI_INTERFACE_VERSION_WDDM2_9);
        assert_eq!(mm.MapAperture2Supported(), map2, "interface {interface:#x}");
        assert_eq!(c.GpuEngineTopology.NbAsymetricProcessingNodes, 1);
    }
}

#[test]
fn driver_caps_fill_exactly_the_size_each_windows_passes() {
    for &(version, size) in sys::DXGK_DRIVERCAPS_SIZE_BY_VERSION {
        if version < sys::DXGKDDI_INTERFACE_VERSION_WDDM2_4 {
            continue;
        }
        // One canary byte past the size that Windows passes must stay untouched.
        let mut out = vec![0xAAu8; size + 1];
        query(
            version,
            sys::DXGKQAITYPE_DRIVERCAPS,
            &mut [],
            &mut out[..size],
        )
        .unwrap();
        assert_eq!(
            out[size], 0xAA,
            "wrote past OutputDataSize {size} (version {version:#x})"
        );
        // The expected bytes: the full caps with their C padding as zeros (a Rust value's
        // padding has no value, so reading it directly would be undefined behaviour).
        let full: sys::DXGK_DRIVERCAPS = caps::driver_caps(version);
        let mut expected = vec![0u8; size_of::<sys::DXGK_DRIVERCAPS>()];
        // SAFETY: `expected` holds one DXGK_DRIVERCAPS, written unaligned.
        unsafe {
            expected
                .as_mut_ptr()
                .cast::<sys::DXGK_DRIVERCAPS>()
                .write_unaligned(full)
        };
        for gap in <sys::DXGK_DRIVERCAPS as dxgk::query::Padding>::PADDING {
            expected[gap.clone()].fill(0);
        }
        assert_eq!(&out[..size], &expected[..size]);
    }
}

#[test]
fn driver_caps_reject_sizes_no_windows_passes() {
    let v = sys::DXGKDDI_INTERFACE_VERSION_WDDM3_1;
    let mut tiny = vec![0u8; 16];
    assert_eq!(
        query(v, sys::DXGKQAITYPE_DRIVERCAPS, &mut [], &mut tiny),
        Err(sys::STATUS_BUFFER_TOO_SMALL)
    );
    let odd = size_of::<sys::DXGK_DRIVERCAPS>() - 3;
    let mut out = vec![0xAAu8; odd];
    assert_eq!(
        query(v, sys::DXGKQAITYPE_DRIVERCAPS, &mut [], &mut out),
        Err(sys::STATUS_INVALID_PARAMETER)
    );
    assert!(out.iter().all(|&b| b == 0xAA), "nothing written on refusal");
}

#[test]
fn gpummu_caps_describe_rgpu_hw_and_gate_newer_bits_by_version() {
    let mut input = 0u32.to_le_bytes();
    let mut out = vec![0u8; size_of::<sys::DXGK_GPUMMUCAPS>()];
    query(
        sys::DXGKDDI_INTERFACE_VERSION_WDDM3_1,
        sys::DXGKQAITYPE_GPUMMUCAPS,
        &mut input,
        &mut out,
    )
    .unwrap();
    let c: sys::DXGK_GPUMMUCAPS = read(&out);
    assert_eq!(c.PageTableLevelCount, rgpu_hw::pte::LEVELS as u32);
    assert_eq!(c.VirtualAddressBitCount, rgpu_hw::pte::VA_BITS);
    assert_eq!(c.PageTableUpdateMode, sys::DXGK_PAGETABLEUPDATE_GPU_VIRTUAL);
    assert_eq!(
        (
            c.ReadOnlyMemorySupported(),
            c.NoExecuteMemorySupported(),
            c.ZeroInPteSupported()
        ),
        (1, 1, 1)
    );
    assert_eq!(c.InvalidTlbEntriesNotCached(), 1);
    // 64 KiB pages of system memory, in 64 KiB-page leaf tables that are 4 KiB tables (WDDM
    // requires a multiple of the CPU page size).
    assert_eq!(c.SysMem64KBPageSupported(), 1);
    assert_eq!(c.LeafPageTableSizeFor64KPagesInBytes, 4096);
    assert_eq!((c.DualPteSupported(), c.LargePageSupported()), (0, 0));
    query(
        sys::DXGKDDI_INTERFACE_VERSION_WDDM2_4,
        sys::DXGKQAITYPE_GPUMMUCAPS,
        &mut input,
        &mut out,
    )
    .unwrap();
    let old: sys::DXGK_GPUMMUCAPS = read(&out);
    assert_eq!(
        old.InvalidTlbEntriesNotCached(),
        0,
        "a 2.6 bit must not be set on a 2.4 interface"
    );
    assert_eq!(old.SysMem64KBPageSupported(), 1, "a 2.1 bit is");
    let mut bad_adapter = 1u32.to_le_bytes();
    assert_eq!(
        query(
            sys::DXGKDDI_INTERFACE_VERSION_WDDM3_1,
            sys::DXGKQAITYPE_GPUMMUCAPS,
            &mut bad_adapter,
            &mut out
        ),
        Err(sys::STATUS_INVALID_PARAMETER)
    );
}

#[test]
fn page_table_levels_are_4_kib_tables_of_512_entries_and_level_4_does_not_exist() {
    let v = sys::DXGKDDI_INTERFACE_VERSION_WDDM3_1;
    let mut out = vec![0u8; size_of::<sys::DXGK_PAGE_TABLE_LEVEL_DESC>()];
    for level in 0..4u16 {
        let mut input = [level.to_le_bytes(), 0u16.to_le_bytes()].concat();
        query(v, sys::DXGKQAITYPE_PAGETABLELEVELDESC, &mut input, &mut out).unwrap();
        let d: sys::DXGK_PAGE_TABLE_LEVEL_DESC = read(&out);
        assert_eq!(
            (
                d.PageTableIndexBitCount,
                d.PageTableSizeInBytes,
                d.PageTableAlignmentInBytes
            ),
            (9, 4096, 4096)
        );
        assert_eq!(d.PageTableSegmentId, caps::SYSTEM_MEMORY_SEGMENT_ID);
        assert_eq!(
            d.PagingProcessPageTableSegmentId,
            caps::SYSTEM_MEMORY_SEGMENT_ID
        );
        // Soft rgpu: page tables in the aperture, where each page arrives with its MDL.
        query_as(
            true,
            v,
            sys::DXGKQAITYPE_PAGETABLELEVELDESC,
            &mut input,
            &mut out,
        )
        .unwrap();
        let d: sys::DXGK_PAGE_TABLE_LEVEL_DESC = read(&out);
        assert_eq!(
            (d.PageTableSegmentId, d.PagingProcessPageTableSegmentId),
            (caps::APERTURE_SEGMENT_ID, caps::APERTURE_SEGMENT_ID)
        );
    }
    let mut input = [4u16.to_le_bytes(), 0u16.to_le_bytes()].concat();
    assert_eq!(
        query(v, sys::DXGKQAITYPE_PAGETABLELEVELDESC, &mut input, &mut out),
        Err(sys::STATUS_INVALID_PARAMETER)
    );
}

#[test]
fn querysegment4_counts_then_fills_one_aperture_segment() {
    let v = sys::DXGKDDI_INTERFACE_VERSION_WDDM3_1;
    let mut out = vec![0u8; size_of::<sys::DXGK_QUERYSEGMENTOUT4>()];
    query(v, sys::DXGKQAITYPE_QUERYSEGMENT4, &mut [], &mut out).unwrap();
    let first: sys::DXGK_QUERYSEGMENTOUT4 = read(&out);
    assert_eq!(first.NbSegment, 1);
    assert_eq!(first.PagingBufferSegmentId, caps::APERTURE_SEGMENT_ID);

    let mut descriptors = vec![0u8; size_of::<sys::DXGK_SEGMENTDESCRIPTOR4>()];
    let second = sys::DXGK_QUERYSEGMENTOUT4 {
        NbSegment: 1,
        pSegmentDescriptor: descriptors.as_mut_ptr(),
        SegmentDescriptorStride: size_of::<sys::DXGK_SEGMENTDESCRIPTOR4>(),
        ..Default::default()
    };
    // SAFETY: plain data copied into the output buffer.
    unsafe {
        out.as_mut_ptr()
            .cast::<sys::DXGK_QUERYSEGMENTOUT4>()
            .write_unaligned(second)
    };
    query(v, sys::DXGKQAITYPE_QUERYSEGMENT4, &mut [], &mut out).unwrap();
    let d: sys::DXGK_SEGMENTDESCRIPTOR4 = read(&descriptors);
    assert_eq!((d.Flags.Aperture(), d.Flags.CacheCoherent()), (1, 1));
    assert_eq!(d.Size, caps::APERTURE_SEGMENT_SIZE);
}

#[test]
fn isolation_queries_report_nothing_to_save_and_no_reserved_ranges() {
    let v = sys::DXGKDDI_INTERFACE_VERSION_WDDM2_4;
    let mut out = vec![0xAAu8; size_of::<sys::DXGK_FRAMEBUFFERSAVEAREA>()];
    query(v, sys::DXGKQAITYPE_FRAMEBUFFERSAVESIZE, &mut [], &mut out).unwrap();
    assert!(out.iter().all(|&b| b == 0));
    let mut out = vec![0xAAu8; size_of::<sys::DXGK_HARDWARERESERVEDRANGES>()];
    query(
        v,
        sys::DXGKQAITYPE_HARDWARERESERVEDRANGES,
        &mut [],
        &mut out,
    )
    .unwrap();
    let r: sys::DXGK_HARDWARERESERVEDRANGES = read(&out);
    assert_eq!(r.NumRanges, 0);
}

#[test]
fn unknown_and_legacy_segment_queries_are_not_supported() {
    let mut out = vec![0u8; 64];
    for ty in [
        sys::DXGKQAITYPE_QUERYSEGMENT,
        sys::DXGKQAITYPE_QUERYSEGMENT3,
        sys::DXGK_QUERYADAPTERINFOTYPE(999),
    ] {
        assert_eq!(
            query(
                sys::DXGKDDI_INTERFACE_VERSION_WDDM3_1,
                ty,
                &mut [],
                &mut out
            ),
            Err(sys::STATUS_NOT_SUPPORTED)
        );
    }
}

#[test]
fn remapping_caps_match_drivercaps_and_opt_in_to_dma_remapping() {
    // Asked before StartDevice: the interface may still be unknown (0).
    for interface in [0, sys::DXGKDDI_INTERFACE_VERSION_WDDM3_1] {
        let mut out = vec![0xAAu8; size_of::<sys::DXGK_DRIVERCAPS>()];
        query(
            sys::DXGKDDI_INTERFACE_VERSION_WDDM3_1,
            sys::DXGKQAITYPE_DRIVERCAPS,
            &mut [],
            &mut out,
        )
        .unwrap();
        let d: sys::DXGK_DRIVERCAPS = read(&out);
        let mut out = vec![0xAAu8; size_of::<sys::DXGK_IOMMU_CAPS>()];
        query(interface, sys::DXGKQAITYPE_IOMMU_CAPS, &mut [], &mut out).unwrap();
        let c: sys::DXGK_IOMMU_CAPS = read(&out);
        assert_eq!(
            c.IommuIsolationSupported(),
            d.MemoryManagementCaps.IoMmuSecureModeSupported()
        );
        assert_eq!(c.IommuIsolationSupported(), 1);
        assert_eq!(
            c.IommuIsolationRequired(),
            d.MemoryManagementCaps.IoMmuSecureModeRequired()
        );
        assert_eq!(
            c.DmaRemappingSupported(),
            1,
            "the WDDM 3.0 memory path exists"
        );
        assert_eq!(c.Reserved(), 0);
        // A soft (root-enumerated) adapter does not opt in: MAP_APERTURE_SEGMENT2 would give
        // no CPU view of VidMm's page tables and paging buffers.
        query_as(
            true,
            interface,
            sys::DXGKQAITYPE_IOMMU_CAPS,
            &mut [],
            &mut out,
        )
        .unwrap();
        let soft: sys::DXGK_IOMMU_CAPS = read(&out);
        assert_eq!(soft.DmaRemappingSupported(), 0);
        assert_eq!(soft.IommuIsolationSupported(), c.IommuIsolationSupported());
        let mut out = vec![0xAAu8; size_of::<sys::DXGK_PHYSICAL_MEMORY_CAPS>()];
        query(
            interface,
            sys::DXGKQAITYPE_PHYSICAL_MEMORY_CAPS,
            &mut [],
            &mut out,
        )
        .unwrap();
        let p: sys::DXGK_PHYSICAL_MEMORY_CAPS = read(&out);
        // SAFETY: every bit pattern of the union is a valid i64.
        let highest = unsafe { p.HighestVisibleAddress.QuadPart };
        assert_eq!(highest, caps::HIGHEST_DEVICE_ADDRESS);
        // SAFETY: as above.
        assert_eq!(highest, unsafe { d.HighestAcceptableAddress.QuadPart });
        let mut short = vec![0u8; size_of::<sys::DXGK_PHYSICAL_MEMORY_CAPS>() - 1];
        assert_eq!(
            query(
                interface,
                sys::DXGKQAITYPE_PHYSICAL_MEMORY_CAPS,
                &mut [],
                &mut short
            ),
            Err(sys::STATUS_BUFFER_TOO_SMALL)
        );
    }
}
