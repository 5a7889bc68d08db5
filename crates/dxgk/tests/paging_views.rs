//! The borrowed views of DxgkDdiBuildPagingBuffer's argument (`dxgk::mdl::Mdl`,
//! `dxgk::paging::BuildPagingBuffer`): every malformed input each decode guards against is
//! refused with its precise error, well-formed ones decode to what they say, the DMA buffer's
//! bookkeeping is written only by `DmaBuffer::finish`, and the PFN iterator never leaves the
//! span its byte range covers.

use dxgk::interface::DxgkInterface;
use dxgk::irql::Passive;
use dxgk::mdl::{Mdl, MdlError};
use dxgk::memory::{IoMmuMapping, MdlPages, PAGE_SIZE};
use dxgk::paging::{
    BuildPagingBuffer, DecodeError, Op, Operation, OutOfRange, Progress, TransferSide, UpdateMode,
};
use dxgk::NtError;
use dxgk_sim::{Machine, MachineConfig};
use dxgk_sys as sys;

const HEADER: usize = std::mem::size_of::<sys::MDL>();

/// An MDL as a test builds it: a header with these fields, then room for `room` PFNs
/// (0x100, 0x101, ...).
struct RawMdl {
    words: Vec<u64>,
}

impl RawMdl {
    fn new(size: i16, byte_offset: u32, byte_count: u32, room: usize) -> Self {
        let mut words = vec![0u64; HEADER / 8 + room];
        for (i, w) in words[HEADER / 8..].iter_mut().enumerate() {
            *w = 0x100 + i as u64;
        }
        let header = sys::MDL {
            Size: size,
            ByteOffset: byte_offset,
            ByteCount: byte_count,
            StartVa: 0x4000_0000 as sys::PVOID,
            ..Default::default()
        };
        // SAFETY: `words` starts with an 8-aligned header's worth of bytes.
        unsafe { words.as_mut_ptr().cast::<sys::MDL>().write(header) };
        Self { words }
    }

    /// A well-formed MDL of `pages` whole pages.
    fn pages(pages: usize) -> Self {
        Self::new(
            (HEADER + 8 * pages) as i16,
            0,
            (pages * PAGE_SIZE) as u32,
            pages,
        )
    }

    fn ptr(&mut self) -> *mut sys::MDL {
        self.words.as_mut_ptr().cast()
    }
}

fn args(
    op: sys::DXGK_BUILDPAGINGBUFFER_OPERATION,
    dma: &mut [u8],
) -> sys::DXGKARG_BUILDPAGINGBUFFER {
    sys::DXGKARG_BUILDPAGINGBUFFER {
        pDmaBuffer: dma.as_mut_ptr().cast(),
        DmaSize: dma.len() as u32,
        Operation: op,
        ..Default::default()
    }
}

/// Decodes `a` with 512-entry tables; every pointer in it is valid for the call.
fn decode(a: &mut sys::DXGKARG_BUILDPAGINGBUFFER) -> Result<BuildPagingBuffer<'_>, DecodeError> {
    // SAFETY: the tests keep every pointer in `a` valid as the DDI documents (or NULL / never
    // dereferenced where the decode must refuse it first).
    unsafe { BuildPagingBuffer::from_raw(a, 512) }
}

fn upt_args(
    dma: &mut [u8],
    entries: *mut sys::DXGK_PTE,
    start: u32,
    count: u32,
) -> sys::DXGKARG_BUILDPAGINGBUFFER {
    let mut a = args(sys::DXGK_OPERATION_UPDATE_PAGE_TABLE, dma);
    let mut u = sys::DXGK_BUILDPAGINGBUFFER_UPDATEPAGETABLE {
        pPageTableEntries: entries,
        StartIndex: start,
        NumPageTableEntries: count,
        UpdateMode: sys::DXGK_PAGETABLEUPDATE_GPU_VIRTUAL,
        ..Default::default()
    };
    u.PageTableAddress.u.GpuVirtual = 0x7000_0000;
    a.u.UpdatePageTable = u;
    a
}

#[test]
fn unknown_operation_codes_are_refused_as_not_supported() {
    let mut dma = [0u8; 64];
    for code in [18, 0xFFFF, -1, i32::MAX] {
        let mut a = args(sys::DXGK_BUILDPAGINGBUFFER_OPERATION(code), &mut dma);
        let e = decode(&mut a).unwrap_err();
        assert_eq!(e, DecodeError::UnknownOperation(code));
        assert_eq!(NtError::from(e), NtError::NOT_SUPPORTED);
    }
    for code in 0..18 {
        let op = Operation::from_raw(sys::DXGK_BUILDPAGINGBUFFER_OPERATION(code)).unwrap();
        assert_eq!(op.raw().0, code, "{op:?}");
    }
}

#[test]
fn a_missing_or_wrapping_dma_buffer_is_refused() {
    // SAFETY: NULL is refused before any read.
    let e = unsafe { BuildPagingBuffer::from_raw(core::ptr::null_mut(), 512) }.unwrap_err();
    assert_eq!(e, DecodeError::BadArguments);
    for size in [0, 64] {
        let mut a = sys::DXGKARG_BUILDPAGINGBUFFER {
            DmaSize: size,
            Operation: sys::DXGK_OPERATION_FLUSH_TLB,
            ..Default::default()
        };
        assert_eq!(
            decode(&mut a).unwrap_err(),
            DecodeError::NoDmaBuffer { size }
        );
    }
    // A buffer that would end past the top of the address space (never dereferenced).
    let mut a = sys::DXGKARG_BUILDPAGINGBUFFER {
        pDmaBuffer: (usize::MAX - 16) as sys::PVOID,
        DmaSize: 64,
        Operation: sys::DXGK_OPERATION_FLUSH_TLB,
        ..Default::default()
    };
    assert_eq!(
        decode(&mut a).unwrap_err(),
        DecodeError::DmaBufferWraps { size: 64 }
    );
    // Even an unknown code is refused for its buffer first (what rgpu always answered).
    let mut a = sys::DXGKARG_BUILDPAGINGBUFFER {
        Operation: sys::DXGK_BUILDPAGINGBUFFER_OPERATION(99),
        ..Default::default()
    };
    assert_eq!(
        decode(&mut a).unwrap_err(),
        DecodeError::NoDmaBuffer { size: 0 }
    );
}

#[test]
fn update_page_table_ranges_pointers_and_modes_are_checked() {
    let mut dma = [0u8; 64];
    let mut entries = vec![sys::DXGK_PTE::default(); 8];
    let e = entries.as_mut_ptr();
    let cases: [(u32, u32, DecodeError); 3] = [
        (
            u32::MAX,
            2,
            DecodeError::Overflow("StartIndex + NumPageTableEntries"),
        ),
        (
            510,
            4,
            DecodeError::TableRange {
                start: 510,
                count: 4,
                max: 512,
            },
        ),
        (
            0,
            u32::MAX,
            DecodeError::TableRange {
                start: 0,
                count: u32::MAX,
                max: 512,
            },
        ),
    ];
    for (start, count, expected) in cases {
        let mut a = upt_args(&mut dma, e, start, count);
        assert_eq!(decode(&mut a).unwrap_err(), expected, "{start}+{count}");
    }
    for count in [0, 3] {
        let mut a = upt_args(&mut dma, core::ptr::null_mut(), 0, count);
        assert_eq!(
            decode(&mut a).unwrap_err(),
            DecodeError::Null("pPageTableEntries")
        );
    }
    let misaligned = e.cast::<u8>().wrapping_add(4).cast();
    let mut a = upt_args(&mut dma, misaligned, 0, 2);
    assert_eq!(
        decode(&mut a).unwrap_err(),
        DecodeError::Misaligned("pPageTableEntries")
    );
    let mut a = upt_args(&mut dma, e, 0, 2);
    a.u.UpdatePageTable.UpdateMode = sys::DXGK_PAGETABLEUPDATEMODE(7);
    assert_eq!(
        decode(&mut a).unwrap_err(),
        DecodeError::UnknownUpdateMode(7)
    );

    // Well formed: all the entries, or one with Repeat (none for an empty update).
    let mut a = upt_args(&mut dma, e, 500, 8);
    let Op::UpdatePageTable(u) = decode(&mut a).unwrap().op else {
        panic!("not an update")
    };
    assert_eq!((u.start_index, u.count, u.entries.len()), (500, 8, 8));
    assert!(matches!(
        u.mode,
        UpdateMode::GpuVirtual {
            table_va: 0x7000_0000
        }
    ));
    for (count, provided) in [(8, 1), (0, 0)] {
        let mut a = upt_args(&mut dma, e, 0, count);
        // SAFETY: the member just written by upt_args.
        unsafe { a.u.UpdatePageTable.Flags.set_Repeat(1) };
        let Op::UpdatePageTable(u) = decode(&mut a).unwrap().op else {
            panic!("not an update")
        };
        assert_eq!(u.entries.len(), provided);
        assert_eq!(u.entry(7).is_some(), count == 8);
        assert!(u.entry(count as usize).is_none());
    }
}

#[test]
fn a_cpu_virtual_update_has_no_dma_buffer_and_writes_only_its_entries() {
    let mut table = vec![0u64; 512];
    let mut entries = vec![sys::DXGK_PTE::default(); 4];
    let mut a = upt_args(&mut [], entries.as_mut_ptr(), 100, 4);
    a.pDmaBuffer = core::ptr::null_mut();
    a.DmaSize = 0;
    a.u.UpdatePageTable.UpdateMode = sys::DXGK_PAGETABLEUPDATE_CPU_VIRTUAL;
    let mut null_table = a;
    null_table.u.UpdatePageTable.PageTableAddress.u.CpuVirtual = core::ptr::null_mut();
    a.u.UpdatePageTable.PageTableAddress.u.CpuVirtual = table.as_mut_ptr().cast();
    assert_eq!(
        decode(&mut null_table).unwrap_err(),
        DecodeError::Null("PageTableAddress.CpuVirtual")
    );
    let mut misaligned = a;
    misaligned.u.UpdatePageTable.PageTableAddress.u.CpuVirtual =
        table.as_mut_ptr().cast::<u8>().wrapping_add(1).cast();
    assert_eq!(
        decode(&mut misaligned).unwrap_err(),
        DecodeError::Misaligned("PageTableAddress.CpuVirtual")
    );
    let req = decode(&mut a).unwrap();
    assert!(req.dma.is_none(), "CPU_VIRTUAL carries no DMA buffer");
    let Op::UpdatePageTable(u) = req.op else {
        panic!("not an update")
    };
    let UpdateMode::CpuVirtual(mut t) = u.mode else {
        panic!("not CPU_VIRTUAL")
    };
    assert_eq!(t.range(), 100..104);
    t.write(100, 0xAA).unwrap();
    t.write(103, 0xBB).unwrap();
    assert_eq!(t.write(99, 1), Err(OutOfRange(99)));
    assert_eq!(t.write(104, 1), Err(OutOfRange(104)));
    assert_eq!((table[100], table[103]), (0xAA, 0xBB));
    assert_eq!(table.iter().filter(|&&e| e != 0).count(), 2);
}

fn map_args(
    dma: &mut [u8],
    mdl: *mut sys::MDL,
    offset: usize,
    pages: usize,
    mdl_offset: u32,
) -> sys::DXGKARG_BUILDPAGINGBUFFER {
    let mut a = args(sys::DXGK_OPERATION_MAP_APERTURE_SEGMENT, dma);
    a.u.MapApertureSegment = sys::DXGKARG_BUILDPAGINGBUFFER_MapApertureSegment {
        SegmentId: 1,
        OffsetInPages: offset,
        NumberOfPages: pages,
        pMdl: mdl,
        MdlOffset: mdl_offset,
        ..Default::default()
    };
    a
}

#[test]
fn map_aperture_segment_offsets_and_mdls_are_checked() {
    let mut dma = [0u8; 16];
    let mut mdl = RawMdl::pages(4);
    let m = mdl.ptr();
    let mut a = map_args(&mut dma, m, usize::MAX, 2, 0);
    assert_eq!(
        decode(&mut a).unwrap_err(),
        DecodeError::Overflow("OffsetInPages + NumberOfPages")
    );
    let mut a = map_args(&mut dma, m, 0, usize::MAX, u32::MAX);
    assert_eq!(
        decode(&mut a).unwrap_err(),
        DecodeError::Overflow("MdlOffset + NumberOfPages")
    );
    let mut a = map_args(&mut dma, m, 0, 2, 3);
    assert_eq!(
        decode(&mut a).unwrap_err(),
        DecodeError::MdlTooShort {
            mdl_offset: 3,
            pages: 2,
            mdl_pages: 4
        }
    );
    let mut a = map_args(&mut dma, core::ptr::null_mut(), 0, 0, 0);
    assert_eq!(
        decode(&mut a).unwrap_err(),
        DecodeError::Mdl {
            field: "pMdl",
            error: MdlError::Null
        }
    );
    // Byte count exceeding the PFN array, and a ByteOffset past the first page.
    let mut short = RawMdl::new((HEADER + 8 * 3) as i16, 0, 4 * 4096, 4);
    let mut a = map_args(&mut dma, short.ptr(), 0, 1, 0);
    assert_eq!(
        decode(&mut a).unwrap_err(),
        DecodeError::Mdl {
            field: "pMdl",
            error: MdlError::PfnArrayTooShort {
                size: (HEADER + 24) as u16,
                needed: (HEADER + 32) as u64
            }
        }
    );
    let mut far = RawMdl::new((HEADER + 8) as i16, 4096, 16, 2);
    let mut a = map_args(&mut dma, far.ptr(), 0, 1, 0);
    assert!(matches!(
        decode(&mut a),
        Err(DecodeError::Mdl {
            error: MdlError::ByteOffset(4096),
            ..
        })
    ));

    let mut a = map_args(&mut dma, m, 7, 2, 2);
    let Op::MapApertureSegment(map) = decode(&mut a).unwrap().op else {
        panic!("not a map")
    };
    assert_eq!((map.offset_in_pages, map.pages), (7, 2));
    assert_eq!(map.mdl_pages().unwrap().collect::<Vec<_>>(), [0x102, 0x103]);
}

#[test]
fn unmap_transfer_copy_flush_and_private_data_are_checked() {
    let mut dma = [0u8; 16];
    let mut a = args(sys::DXGK_OPERATION_UNMAP_APERTURE_SEGMENT, &mut dma);
    a.u.UnmapApertureSegment.OffsetInPages = 1;
    a.u.UnmapApertureSegment.NumberOfPages = usize::MAX;
    assert_eq!(
        decode(&mut a).unwrap_err(),
        DecodeError::Overflow("OffsetInPages + NumberOfPages")
    );

    // TRANSFER: segment 0 sides are MDLs, validated; others are segment addresses.
    let mut mdl = RawMdl::pages(2);
    let mut bad = RawMdl::new(0, 0, 4096, 1);
    let mut a = args(sys::DXGK_OPERATION_TRANSFER, &mut dma);
    let mut t = sys::DXGKARG_BUILDPAGINGBUFFER_Transfer {
        TransferSize: 8192,
        ..Default::default()
    };
    t.Source.u.pMdl = mdl.ptr();
    t.Destination.SegmentId = 1;
    t.Destination.u.SegmentAddress.QuadPart = 0x5000;
    a.u.Transfer = t;
    let Op::Transfer(x) = decode(&mut a).unwrap().op else {
        panic!("not a transfer")
    };
    assert!(matches!(x.source, TransferSide::Mdl { mdl } if mdl.page_count() == 2));
    assert!(matches!(
        x.destination,
        TransferSide::Segment {
            id: 1,
            address: 0x5000
        }
    ));
    t.Destination.SegmentId = 0;
    t.Destination.u.pMdl = bad.ptr();
    a.u.Transfer = t;
    assert!(matches!(
        decode(&mut a),
        Err(DecodeError::Mdl {
            field: "Destination.pMdl",
            error: MdlError::PfnArrayTooShort { .. }
        })
    ));

    // COPY_PAGE_TABLE_ENTRIES: NULL ranges only with no ranges.
    let mut a = args(sys::DXGK_OPERATION_COPY_PAGE_TABLE_ENTRIES, &mut dma);
    a.u.CopyPageTableEntries.NumRanges = 2;
    assert_eq!(decode(&mut a).unwrap_err(), DecodeError::Null("pRanges"));
    a.u.CopyPageTableEntries.NumRanges = 0;
    assert!(
        matches!(decode(&mut a).unwrap().op, Op::CopyPageTableEntries(c) if c.ranges.is_empty())
    );

    // FLUSH_TLB: a range that ends before it starts.
    let mut a = args(sys::DXGK_OPERATION_FLUSH_TLB, &mut dma);
    a.u.FlushTlb.StartVirtualAddress = 0x2000;
    a.u.FlushTlb.EndVirtualAddress = 0x1000;
    assert_eq!(
        decode(&mut a).unwrap_err(),
        DecodeError::FlushRange {
            start: 0x2000,
            end: 0x1000
        }
    );
    a.u.FlushTlb.hProcess = 0x1234 as sys::HANDLE;
    a.u.FlushTlb.EndVirtualAddress = 0x2FFF;
    let Op::FlushTlb(f) = decode(&mut a).unwrap().op else {
        panic!("not a flush")
    };
    assert_eq!(f.process.unwrap().as_raw(), 0x1234 as sys::HANDLE);
    assert!(!f.whole_address_space());

    // UPDATE_CONTEXT_ALLOCATION: NULL private data with a size.
    let mut a = args(sys::DXGK_OPERATION_UPDATE_CONTEXT_ALLOCATION, &mut dma);
    a.u.UpdateContextAllocation.DriverPrivateDataSize = 16;
    assert_eq!(
        decode(&mut a).unwrap_err(),
        DecodeError::Null("pDriverPrivateData")
    );
}

#[test]
fn only_finish_writes_the_dma_bookkeeping() {
    let mut dma = [0u8; 64];
    let base = dma.as_mut_ptr();
    let mut a = args(sys::DXGK_OPERATION_FLUSH_TLB, &mut dma);
    a.MultipassOffset = 7;
    let mut buf = decode(&mut a).unwrap().dma.unwrap();
    assert_eq!((buf.resume_offset(), buf.len()), (7, 64));
    buf.as_mut_slice()[..4].copy_from_slice(&[1, 2, 3, 4]);
    assert_eq!(
        buf.finish(65, Progress::Done),
        Err(NtError::INVALID_PARAMETER)
    );
    assert_eq!(
        (a.pDmaBuffer, a.DmaSize, a.MultipassOffset),
        (base.cast(), 64, 7),
        "a refused finish changes nothing"
    );
    let buf = decode(&mut a).unwrap().dma.unwrap();
    assert_eq!(
        buf.finish(16, Progress::Full { next: 9 }),
        Err(NtError::GRAPHICS_INSUFFICIENT_DMA_BUFFER)
    );
    assert_eq!(
        (a.pDmaBuffer, a.DmaSize, a.MultipassOffset),
        (base.wrapping_add(16).cast(), 48, 9)
    );
    let buf = decode(&mut a).unwrap().dma.unwrap();
    assert_eq!(buf.finish(48, Progress::Done), Ok(()));
    assert_eq!(
        (a.pDmaBuffer, a.DmaSize, a.MultipassOffset),
        (base.wrapping_add(64).cast(), 0, 0)
    );
    assert_eq!(dma[..4], [1, 2, 3, 4]);
}

#[test]
fn an_owned_mdl_lends_the_view_of_its_pages() {
    let m = Machine::new(MachineConfig::windows_11_22h2());
    m.enter(|| {
        let raw = m.interface_for_tests(sys::DXGKDDI_INTERFACE_VERSION_WDDM3_1);
        // SAFETY: a valid interface from the simulator.
        let iface =
            unsafe { DxgkInterface::copy_from(&raw, sys::DXGKDDI_INTERFACE_VERSION_WDDM2_4) }
                .unwrap();
        let passive = Passive::check().unwrap();
        let pages = MdlPages::allocate(
            &iface,
            &passive,
            3 * PAGE_SIZE,
            sys::DXGK_MEMORY_CACHING_TYPE_CACHED,
        )
        .unwrap();
        let view = pages.mdl(0).expect("the simulator builds well-formed MDLs");
        assert!(pages.mdl(1).is_none());
        assert_eq!((view.page_count(), view.byte_count()), (3, 3 * 4096));
        let mapping = IoMmuMapping::map(&iface, &passive, &pages).unwrap();
        let logical: Vec<u64> = (0..3)
            .map(|i| mapping.page_address(i).unwrap().0 >> 12)
            .collect();
        assert_eq!(view.pfns().collect::<Vec<_>>(), logical);
    });
    m.check_leaks();
    m.assert_clean();
}

/// What `Mdl::from_raw` should make of a header: the pages `(offset, count)` span, if the
/// MDL can be what it says.
fn reference_span(size: u16, offset: u32, count: u32) -> Option<usize> {
    if offset >= 4096 {
        return None;
    }
    let pages = (offset as usize + count as usize).div_ceil(4096);
    let needed = HEADER + 8 * pages;
    let ok = if needed <= 0xFFFF {
        size as usize >= needed
    } else {
        size == needed as u16
    };
    ok.then_some(pages)
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config::with_cases(512))]

    /// Random headers (Size, ByteOffset, ByteCount up to 64 pages) over an allocation of
    /// exactly `max(Size, what the span needs)` bytes: the view accepts exactly the headers the
    /// reference accepts, and its iterators yield the reference's PFNs — never more than the
    /// span, never past the allocation.
    #[test]
    fn the_pfn_iterator_never_leaves_the_span(
        size in 0u16..(HEADER as u16 + 8 * 70),
        offset in proptest::prop_oneof![0u32..4096, 4096u32..=u32::MAX],
        count in 0u32..(64 * 4096),
        first in 0usize..80,
        n in 0usize..80,
    ) {
        let span = (offset as usize).saturating_add(count as usize).div_ceil(4096);
        let room = (size as usize).saturating_sub(HEADER).div_ceil(8).max(span.min(70));
        let mut raw = RawMdl::new(size as i16, offset, count, room);
        let expected = reference_span(size, offset, count);
        // SAFETY: the header is followed by `room` PFNs, at least Size bytes in all or the
        // whole span.
        let got = unsafe { Mdl::from_raw(raw.ptr()) };
        match (got, expected) {
            (Ok(mdl), Some(pages)) => {
                let reference: Vec<u64> = (0..pages as u64).map(|i| 0x100 + i).collect();
                proptest::prop_assert_eq!(mdl.page_count(), pages);
                proptest::prop_assert_eq!(mdl.pfns().collect::<Vec<_>>(), reference.clone());
                proptest::prop_assert_eq!(mdl.pfns().len(), pages);
                proptest::prop_assert_eq!(mdl.pfn(first), reference.get(first).copied());
                let window = mdl.pfns_from(first, n).map(|p| p.collect::<Vec<_>>());
                let expected_window = reference.get(first..first + n).map(<[u64]>::to_vec);
                proptest::prop_assert_eq!(window, expected_window);
            }
            (Err(_), None) => {}
            (got, expected) => proptest::prop_assert!(false, "view {got:?}, reference {expected:?}"),
        }
    }
}
