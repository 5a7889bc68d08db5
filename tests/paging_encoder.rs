//! DxgkDdiBuildPagingBuffer as an encoder: what lands in the DMA buffer for each operation,
//! multipass resumption (nothing duplicated, nothing lost), the CPU-virtual initialization
//! path, the aperture GART, and refusal of malformed input. The device side is tested in the
//! end-to-end suites.

use dxgk::aperture_views::ApertureViews;
use dxgk::device_memory::{MemoryPath, SystemMemory};
use dxgk::handle::ProcessHandle;
use dxgk::interface::DxgkInterface;
use dxgk::irql::Passive;
use dxgk::memory::MdlPages;
use dxgk::paging::BuildPagingBuffer;
use dxgk::pool::{Pool, PoolTag};
use dxgk::NtError;
use dxgk_sim::{Machine, MachineConfig};
use dxgk_sys as sys;
use rgpu::paging::{Aperture, PagingContext, APERTURE_PAGES, MAX_TABLE_ENTRIES};
use rgpu_hw::cmd::{Command, Decoder, FlushScope, Target};
use rgpu_hw::pte;

/// DxgkDdiBuildPagingBuffer on a raw argument block as the DDI entry layer runs it: decoded
/// once by dxgk, then built by the driver.
trait BuildRaw {
    /// # Safety
    /// `a` and the pointers in it are valid as the DDI documents.
    unsafe fn build_raw(&self, a: &mut sys::DXGKARG_BUILDPAGINGBUFFER) -> Result<(), NtError>;
}

impl BuildRaw for PagingContext<'_> {
    unsafe fn build_raw(&self, a: &mut sys::DXGKARG_BUILDPAGINGBUFFER) -> Result<(), NtError> {
        // SAFETY: per the caller.
        let req = unsafe { BuildPagingBuffer::from_raw(a, MAX_TABLE_ENTRIES) }
            .map_err(|e| rgpu::paging::report(e.into()))?;
        self.build(req)
    }
}

fn dxgk_pte(page: u64, segment: u64, read_only: bool) -> sys::DXGK_PTE {
    let mut p = sys::DXGK_PTE::default();
    p.set_Valid(1);
    p.set_Segment(segment);
    p.set_ReadOnly(read_only as u64);
    p.u.PageAddress = page;
    p
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

fn update_args(
    entries: &mut [sys::DXGK_PTE],
    start: u32,
    count: u32,
    table_va: u64,
    level: u32,
) -> sys::DXGK_BUILDPAGINGBUFFER_UPDATEPAGETABLE {
    let mut u = sys::DXGK_BUILDPAGINGBUFFER_UPDATEPAGETABLE {
        PageTableLevel: level,
        pPageTableEntries: entries.as_mut_ptr(),
        StartIndex: start,
        NumPageTableEntries: count,
        UpdateMode: sys::DXGK_PAGETABLEUPDATE_GPU_VIRTUAL,
        ..Default::default()
    };
    u.PageTableAddress.u.GpuVirtual = table_va;
    u
}

/// Runs one operation to completion through buffers of `dma_size` bytes, as VidMm does on
/// STATUS_GRAPHICS_INSUFFICIENT_DMA_BUFFER; returns every buffer's bytes.
fn run_multipass(
    ctx: &PagingContext<'_>,
    mut a: sys::DXGKARG_BUILDPAGINGBUFFER,
    dma_size: usize,
) -> Vec<Vec<u8>> {
    let mut buffers = Vec::new();
    for _ in 0..10_000 {
        let mut dma = vec![0u8; dma_size];
        a.pDmaBuffer = dma.as_mut_ptr().cast();
        a.DmaSize = dma_size as u32;
        // SAFETY: the DMA buffer and the argument pointers are valid.
        let r = unsafe { ctx.build_raw(&mut a) };
        let used = dma_size - a.DmaSize as usize;
        dma.truncate(used);
        buffers.push(dma);
        match r {
            Ok(()) => return buffers,
            Err(e) => {
                assert_eq!(e, NtError::GRAPHICS_INSUFFICIENT_DMA_BUFFER);
                assert!(
                    used > 0 || a.MultipassOffset > 0 || buffers.len() == 1,
                    "progress each pass"
                );
            }
        }
    }
    panic!("no completion");
}

/// Flattens the WRITE_PTES of `buffers` into (virtual address, entry) pairs.
fn written_ptes(buffers: &[Vec<u8>]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for b in buffers {
        for item in Decoder::new(b) {
            let (_, cmd) = item.expect("valid commands");
            match cmd {
                Command::WritePtes {
                    dst: Target::Virtual(va),
                    entries,
                } => out.extend(
                    entries
                        .iter()
                        .enumerate()
                        .map(|(i, e)| (va + 8 * i as u64, e)),
                ),
                other => panic!("unexpected command {other:?}"),
            }
        }
    }
    out
}

fn with_machine<R>(f: impl FnOnce(&Machine) -> R) -> R {
    let m = Machine::new(MachineConfig::windows_11_22h2());
    let r = m.enter(|| f(&m));
    m.check_leaks();
    m.assert_clean();
    r
}

#[test]
fn update_page_table_becomes_write_ptes_in_the_rgpu_format() {
    with_machine(|_| {
        let ctx = PagingContext {
            views: None,
            aperture: None,
            asid_of: None,
        };
        let mut entries: Vec<_> = (0..3).map(|i| dxgk_pte(0x1000 + i, 0, i == 1)).collect();
        let mut dma = vec![0u8; 4096];
        let mut a = args(sys::DXGK_OPERATION_UPDATE_PAGE_TABLE, &mut dma);
        a.u.UpdatePageTable = update_args(&mut entries, 5, 3, 0x7000_0000, 0);
        // SAFETY: valid buffers.
        unsafe { ctx.build_raw(&mut a) }.unwrap();
        let used = 4096 - a.DmaSize as usize;
        let ptes = written_ptes(&[dma[..used].to_vec()]);
        assert_eq!(ptes.len(), 3);
        for (i, (va, e)) in ptes.iter().enumerate() {
            assert_eq!(*va, 0x7000_0000 + 8 * (5 + i as u64));
            let e = pte::Pte(*e);
            assert!(e.is_valid());
            assert_eq!(e.addr(), (0x1000 + i as u64) << 12);
            assert_eq!(e.is_read_only(), i == 1);
        }
        assert_eq!(
            a.pDmaBuffer,
            dma[used..].as_mut_ptr().cast(),
            "pDmaBuffer advanced past what was written"
        );
    });
}

#[test]
fn multipass_resumes_exactly_where_it_stopped() {
    with_machine(|_| {
        let ctx = PagingContext {
            views: None,
            aperture: None,
            asid_of: None,
        };
        let mut entries: Vec<_> = (0..512)
            .map(|i| dxgk_pte(0x10_0000 + i, 0, false))
            .collect();
        let mut dummy = [0u8; 0];
        let mut a = args(sys::DXGK_OPERATION_UPDATE_PAGE_TABLE, &mut dummy);
        a.u.UpdatePageTable = update_args(&mut entries, 0, 512, 0x4000_0000, 0);
        for dma_size in [64usize, 100, 256, 1000, 4096] {
            let buffers = run_multipass(&ctx, a, dma_size);
            let ptes = written_ptes(&buffers);
            let expected: Vec<(u64, u64)> = (0..512u64)
                .map(|i| {
                    (
                        0x4000_0000 + 8 * i,
                        pte::Pte::leaf((0x10_0000 + i) << 12, 0).raw(),
                    )
                })
                .collect();
            assert_eq!(
                ptes, expected,
                "DMA size {dma_size}: every entry exactly once, in order"
            );
            assert!(
                buffers.len() > 1 || dma_size == 4096,
                "DMA size {dma_size} forces multipass"
            );
        }
    });
}

#[test]
fn repeat_replicates_one_entry() {
    with_machine(|_| {
        let ctx = PagingContext {
            views: None,
            aperture: None,
            asid_of: None,
        };
        let mut entries = vec![dxgk_pte(0x42, 0, false)];
        let mut dummy = [0u8; 0];
        let mut a = args(sys::DXGK_OPERATION_UPDATE_PAGE_TABLE, &mut dummy);
        let mut u = update_args(&mut entries, 10, 20, 0x9000, 0);
        u.Flags.set_Repeat(1);
        a.u.UpdatePageTable = u;
        let ptes = written_ptes(&run_multipass(&ctx, a, 4096));
        assert_eq!(ptes.len(), 20);
        assert!(ptes.iter().all(|&(_, e)| pte::Pte(e).addr() == 0x42 << 12));
    });
}

#[test]
fn cpu_virtual_initialization_writes_the_table_at_once() {
    with_machine(|_| {
        let ctx = PagingContext {
            views: None,
            aperture: None,
            asid_of: None,
        };
        let mut table = vec![0u64; 512];
        let mut entries: Vec<_> = (0..4).map(|i| dxgk_pte(0x500 + i, 0, false)).collect();
        let mut a = sys::DXGKARG_BUILDPAGINGBUFFER {
            Operation: sys::DXGK_OPERATION_UPDATE_PAGE_TABLE,
            ..Default::default()
        };
        let mut u = update_args(&mut entries, 100, 4, 0, 1);
        u.UpdateMode = sys::DXGK_PAGETABLEUPDATE_CPU_VIRTUAL;
        u.PageTableAddress.u.CpuVirtual = table.as_mut_ptr().cast();
        a.u.UpdatePageTable = u;
        // SAFETY: the table and entries are valid; pDmaBuffer is NULL as Windows passes it.
        unsafe { ctx.build_raw(&mut a) }.unwrap();
        for i in 0..4 {
            assert_eq!(
                table[100 + i],
                pte::Pte::table((0x500 + i as u64) << 12).raw(),
                "level 1 → table entries"
            );
        }
        assert!(
            table[..100].iter().chain(&table[104..]).all(|&e| e == 0),
            "nothing else touched"
        );
    });
}

#[test]
fn out_of_table_updates_and_unknown_segments_are_refused() {
    with_machine(|m| {
        let ctx = PagingContext {
            views: None,
            aperture: None,
            asid_of: None,
        };
        let mut entries = vec![dxgk_pte(1, 0, false); 4];
        let mut dma = vec![0u8; 4096];
        for (start, count, level) in [(510u32, 4u32, 0u32), (0, 1, 4), (u32::MAX, 2, 0)] {
            let mut a = args(sys::DXGK_OPERATION_UPDATE_PAGE_TABLE, &mut dma);
            a.u.UpdatePageTable = update_args(&mut entries, start, count, 0x1000, level);
            // SAFETY: valid buffers.
            let r = unsafe { ctx.build_raw(&mut a) };
            assert_eq!(r, Err(NtError::INVALID_PARAMETER));
            assert_eq!(a.DmaSize, 4096, "nothing written on refusal");
        }
        let mut bad = vec![dxgk_pte(1, 7, false)];
        let mut a = args(sys::DXGK_OPERATION_UPDATE_PAGE_TABLE, &mut dma);
        a.u.UpdatePageTable = update_args(&mut bad, 0, 1, 0x1000, 0);
        // SAFETY: valid buffers.
        let r = unsafe { ctx.build_raw(&mut a) };
        assert_eq!(r, Err(NtError::INVALID_PARAMETER));
        assert!(m.debug_contains("UnknownSegment(7)"));
    });
}

#[test]
fn flush_fill_transfer_and_fence_encode_one_command_each() {
    with_machine(|_| {
        let ctx = PagingContext {
            views: None,
            aperture: None,
            asid_of: None,
        };
        let mut dma = vec![0u8; 4096];
        let mut a = args(sys::DXGK_OPERATION_FLUSH_TLB, &mut dma);
        // SAFETY: valid buffers.
        unsafe { ctx.build_raw(&mut a) }.unwrap();
        let flush: Vec<_> = Decoder::new(&dma[..4096 - a.DmaSize as usize])
            .map(|c| c.unwrap().1)
            .collect();
        assert!(matches!(flush[..], [Command::FlushTlb(FlushScope::All)]));
        let mut a2 = args(sys::DXGK_OPERATION_VIRTUAL_FILL, &mut dma[16..]);
        a2.u.FillVirtual.DestinationVirtualAddress = 0x10_0000;
        a2.u.FillVirtual.FillSizeInBytes = 0x3000;
        a2.u.FillVirtual.FillPattern = 0xDEAD_BEEF;
        // SAFETY: valid buffers.
        unsafe { ctx.build_raw(&mut a2) }.unwrap();
        let used_fill = 4096 - 16 - a2.DmaSize as usize;
        let cmds: Vec<_> = Decoder::new(&dma[16..16 + used_fill])
            .map(|c| c.unwrap().1)
            .collect();
        assert!(matches!(
            cmds[..],
            [Command::Fill {
                dst: Target::Virtual(0x10_0000),
                size: 0x3000,
                pattern: 0xDEAD_BEEF
            }]
        ));

        let mut dma = vec![0u8; 4096];
        let mut t = args(sys::DXGK_OPERATION_VIRTUAL_TRANSFER, &mut dma);
        t.u.TransferVirtual.SourceVirtualAddress = 0x1000;
        t.u.TransferVirtual.DestinationVirtualAddress = 0x9000;
        t.u.TransferVirtual.TransferSizeInBytes = 0x2000;
        // SAFETY: valid buffers.
        unsafe { ctx.build_raw(&mut t) }.unwrap();
        let mut f = args(
            sys::DXGK_OPERATION_SIGNAL_MONITORED_FENCE,
            &mut dma[4096 - t.DmaSize as usize..],
        );
        f.u.SignalMonitoredFence.MonitoredFenceGpuVa = 0x8000;
        f.u.SignalMonitoredFence.MonitoredFenceValue = 0x1_0000_0002;
        // SAFETY: valid buffers.
        unsafe { ctx.build_raw(&mut f) }.unwrap();
        let used = 4096 - f.DmaSize as usize;
        let cmds: Vec<_> = Decoder::new(&dma[..used]).map(|c| c.unwrap().1).collect();
        match &cmds[..] {
            [Command::Copy {
                dst: Target::Virtual(0x9000),
                src: Target::Virtual(0x1000),
                size: 0x2000,
            }, Command::WriteData {
                dst: Target::Virtual(0x8000),
                data,
            }] => {
                assert_eq!(data.iter().collect::<Vec<_>>(), vec![2, 1]);
            }
            other => panic!("unexpected {other:?}"),
        }
    });
}

#[test]
fn a_buffer_too_small_for_one_command_asks_for_a_new_one_without_writing() {
    with_machine(|_| {
        let ctx = PagingContext {
            views: None,
            aperture: None,
            asid_of: None,
        };
        let mut dma = vec![0u8; 8];
        let mut a = args(sys::DXGK_OPERATION_VIRTUAL_FILL, &mut dma);
        a.u.FillVirtual.DestinationVirtualAddress = 0x1000;
        a.u.FillVirtual.FillSizeInBytes = 0x1000;
        // SAFETY: valid buffers.
        let r = unsafe { ctx.build_raw(&mut a) };
        assert_eq!(r, Err(NtError::GRAPHICS_INSUFFICIENT_DMA_BUFFER));
        assert_eq!((a.DmaSize, a.MultipassOffset), (8, 0));
    });
}

#[test]
fn aperture_pages_translate_through_the_gart_and_unmapped_ones_are_refused() {
    with_machine(|m| {
        let raw = m.interface_for_tests(sys::DXGKDDI_INTERFACE_VERSION_WDDM3_1);
        // SAFETY: a valid interface from the simulator.
        let iface =
            unsafe { DxgkInterface::copy_from(&raw, sys::DXGKDDI_INTERFACE_VERSION_WDDM2_4) }
                .unwrap();
        let passive = Passive::check().unwrap();
        let gart = SystemMemory::allocate_cpu_only(
            &iface,
            &passive,
            MemoryPath::Mdl,
            APERTURE_PAGES * 8,
            sys::DXGK_MEMORY_CACHING_TYPE_CACHED,
        )
        .unwrap();
        let aperture = Aperture::new(gart).unwrap();
        let ctx = PagingContext {
            views: None,
            aperture: Some(&aperture),
            asid_of: None,
        };
        // VidMm's MDL for the allocation: 3 pages of driver-visible memory.
        let backing = MdlPages::allocate(
            &iface,
            &passive,
            3 * 4096,
            sys::DXGK_MEMORY_CACHING_TYPE_CACHED,
        )
        .unwrap();
        let mapping = dxgk::memory::IoMmuMapping::map(&iface, &passive, &backing).unwrap();
        let logical: Vec<u64> = (0..3)
            .map(|i| mapping.page_address(i).unwrap().0 >> 12)
            .collect();
        drop(mapping);
        // Map aperture pages 100..103 to MDL pages 0..3 — use a raw MDL the same way VidMm would.
        let mut raw_mdl = vec![0u8; std::mem::size_of::<sys::MDL>() + 3 * 8];
        let mdl = raw_mdl.as_mut_ptr().cast::<sys::MDL>();
        // SAFETY: `raw_mdl` has room for the header and 3 PFNs; plain data writes.
        unsafe {
            (*mdl).ByteCount = 3 * 4096;
        }
        // SAFETY: as above. Size: the header and the 3 PFNs, as Mm records it.
        unsafe {
            (*mdl).Size = (std::mem::size_of::<sys::MDL>() + 3 * 8) as i16;
        }
        // SAFETY: `mdl` has room for its 3 PFNs right after the header.
        let pfns = unsafe { sys::MmGetMdlPfnArray(mdl) };
        for (i, l) in logical.iter().enumerate() {
            // SAFETY: PFN slot i < 3 of the array allocated after the header.
            let slot = unsafe { pfns.add(i) };
            // SAFETY: `slot` is in bounds and writable.
            unsafe { *slot = *l as usize };
        }
        let mut dma = vec![0u8; 64];
        let mut a = args(sys::DXGK_OPERATION_MAP_APERTURE_SEGMENT, &mut dma);
        a.u.MapApertureSegment.SegmentId = rgpu::caps::APERTURE_SEGMENT_ID;
        a.u.MapApertureSegment.OffsetInPages = 100;
        a.u.MapApertureSegment.NumberOfPages = 3;
        a.u.MapApertureSegment.pMdl = mdl;
        // SAFETY: valid MDL and buffers.
        unsafe { ctx.build_raw(&mut a) }.unwrap();
        assert_eq!(a.DmaSize, 64, "a GART update needs no DMA");
        assert_eq!(
            (0..3)
                .map(|i| aperture.lookup(100 + i).unwrap())
                .collect::<Vec<_>>(),
            logical
        );
        assert_eq!(aperture.lookup(99), None);

        let mut entries = vec![dxgk_pte(
            101,
            u64::from(rgpu::caps::APERTURE_SEGMENT_ID),
            false,
        )];
        let mut dummy = [0u8; 0];
        let mut u = args(sys::DXGK_OPERATION_UPDATE_PAGE_TABLE, &mut dummy);
        u.u.UpdatePageTable = update_args(&mut entries, 0, 1, 0x5000, 0);
        let ptes = written_ptes(&run_multipass(&ctx, u, 256));
        assert_eq!(pte::Pte(ptes[0].1).addr(), logical[1] << 12);

        entries[0] = dxgk_pte(5000, u64::from(rgpu::caps::APERTURE_SEGMENT_ID), false);
        let mut dma = vec![0u8; 256];
        let mut u = args(sys::DXGK_OPERATION_UPDATE_PAGE_TABLE, &mut dma);
        u.u.UpdatePageTable = update_args(&mut entries, 0, 1, 0x5000, 0);
        // SAFETY: valid buffers.
        let r = unsafe { ctx.build_raw(&mut u) };
        assert_eq!(r, Err(NtError::INVALID_PARAMETER));
        assert!(m.debug_contains("UnmappedAperture(5000)"));

        let mut a = args(sys::DXGK_OPERATION_MAP_APERTURE_SEGMENT, &mut dma);
        a.u.MapApertureSegment.SegmentId = rgpu::caps::APERTURE_SEGMENT_ID;
        a.u.MapApertureSegment.OffsetInPages = APERTURE_PAGES - 1;
        a.u.MapApertureSegment.NumberOfPages = 3;
        a.u.MapApertureSegment.pMdl = mdl;
        // SAFETY: valid MDL and buffers.
        let r = unsafe { ctx.build_raw(&mut a) };
        assert_eq!(
            r,
            Err(NtError::INVALID_PARAMETER),
            "past the aperture's end"
        );
    });
}

#[test]
fn map_aperture_segment2_maps_contiguous_and_page_list_adls_from_their_offset() {
    use dxgk::pmo::{Adl, Backing, Contiguity, PhysicalMemoryObject};
    with_machine(|m| {
        let raw = m.interface_for_tests(sys::DXGKDDI_INTERFACE_VERSION_WDDM3_1);
        // SAFETY: a valid interface from the simulator.
        let iface =
            unsafe { DxgkInterface::copy_from(&raw, sys::DXGKDDI_INTERFACE_VERSION_WDDM2_4) }
                .unwrap();
        let passive = Passive::check().unwrap();
        let cached = sys::DXGK_MEMORY_CACHING_TYPE_CACHED;
        let gart = SystemMemory::allocate_cpu_only(
            &iface,
            &passive,
            MemoryPath::Adl,
            APERTURE_PAGES * 8,
            cached,
        )
        .unwrap();
        let aperture = Aperture::new(gart).unwrap();
        let ctx = PagingContext {
            views: None,
            aperture: Some(&aperture),
            asid_of: None,
        };
        // VidMm's memory for an allocation: 4 pages, as a contiguous ADL and as a page list.
        let object =
            PhysicalMemoryObject::create(&iface, &passive, 4 * 4096, cached, Backing::ANYWHERE)
                .unwrap();
        for contiguity in [Contiguity::Require, Contiguity::Any] {
            let adl = Adl::allocate(&iface, &passive, &object, 0, 4 * 4096, contiguity).unwrap();
            assert_eq!(adl.is_contiguous(), contiguity == Contiguity::Require);
            let pages: Vec<u64> = (0..4).map(|i| adl.page_number(i).unwrap()).collect();
            let mut dma = vec![0u8; 64];
            let mut a = args(sys::DXGK_OPERATION_MAP_APERTURE_SEGMENT2, &mut dma);
            // SAFETY: the ADL Dxgkrnl keeps valid while `adl` lives; plain data copy.
            a.u.MapApertureSegment2.Adl = unsafe { adl.as_raw().read() };
            a.u.MapApertureSegment2.SegmentId = rgpu::caps::APERTURE_SEGMENT_ID;
            a.u.MapApertureSegment2.OffsetInPages = 200;
            a.u.MapApertureSegment2.NumberOfPages = 3;
            a.u.MapApertureSegment2.AdlOffset = 1;
            let mut flags = sys::DXGK_MAPAPERTUREFLAGS::default();
            flags.set_CacheCoherent(1);
            a.u.MapApertureSegment2.Flags = flags;
            // SAFETY: a valid ADL and buffers.
            unsafe { ctx.build_raw(&mut a) }.unwrap();
            assert_eq!(a.DmaSize, 64, "a GART update needs no DMA");
            assert_eq!(
                (200..203).map(|p| aperture.lookup(p)).collect::<Vec<_>>(),
                pages[1..].iter().map(|&p| Some(p)).collect::<Vec<_>>(),
                "{contiguity:?}: aperture pages 200.. → ADL pages 1.."
            );
            // More pages than the ADL holds after AdlOffset: refused before anything changes.
            a.u.MapApertureSegment2.OffsetInPages = 300;
            a.u.MapApertureSegment2.NumberOfPages = 4;
            // SAFETY: as above.
            let r = unsafe { ctx.build_raw(&mut a) };
            assert_eq!(r, Err(NtError::INVALID_PARAMETER));
            assert_eq!(aperture.lookup(300), None);
            // UNMAP points the pages at VidMm's dummy page, as for the MDL operation.
            let mut u = args(sys::DXGK_OPERATION_UNMAP_APERTURE_SEGMENT, &mut dma);
            u.u.UnmapApertureSegment.SegmentId = rgpu::caps::APERTURE_SEGMENT_ID;
            u.u.UnmapApertureSegment.OffsetInPages = 200;
            u.u.UnmapApertureSegment.NumberOfPages = 3;
            u.u.UnmapApertureSegment.DummyPage = sys::LARGE_INTEGER { QuadPart: 0x7000 };
            // SAFETY: valid buffers.
            unsafe { ctx.build_raw(&mut u) }.unwrap();
            assert_eq!(aperture.lookup(201), Some(7));

            // Soft rgpu: the page registry follows MAP2 and UNMAP; a MAP2 without a
            // CpuVisibleAddress is refused before the GART changes (the engine could not reach
            // those pages).
            let views = ApertureViews::new(&Pool::resolve(), PoolTag::new(*b"tVws"), 16).unwrap();
            let soft = PagingContext {
                views: Some(&views),
                aperture: Some(&aperture),
                asid_of: None,
            };
            let at = if contiguity == Contiguity::Require {
                400
            } else {
                410
            };
            a.u.MapApertureSegment2.OffsetInPages = at;
            a.u.MapApertureSegment2.NumberOfPages = 3;
            // SAFETY: as above.
            let r = unsafe { soft.build_raw(&mut a) };
            assert_eq!(r, Err(NtError::INVALID_PARAMETER));
            assert_eq!(aperture.lookup(at as u64), None);
            let layout = std::alloc::Layout::from_size_align(4 * 4096, 4096).unwrap();
            // SAFETY: a non-zero size.
            let cpu = unsafe { std::alloc::alloc_zeroed(layout) };
            a.u.MapApertureSegment2.CpuVisibleAddress = cpu.cast();
            // SAFETY: as above; the CPU-visible pages outlive their registration.
            unsafe { soft.build_raw(&mut a) }.unwrap();
            assert_eq!(views.len(), 3);
            // ADL page 1 (AdlOffset) is page 1 of the allocation's CPU view.
            assert!(views.write(pages[1] << 12, b"soft"));
            // SAFETY: 4 bytes inside the block, no reference to them elsewhere.
            let got = unsafe { std::slice::from_raw_parts(cpu.wrapping_add(4096), 4) };
            assert_eq!(got, b"soft");
            u.u.UnmapApertureSegment.OffsetInPages = at;
            // SAFETY: valid buffers.
            unsafe { soft.build_raw(&mut u) }.unwrap();
            assert!(
                views.is_empty(),
                "{contiguity:?}: UNMAP unregistered the pages"
            );
            drop(views);
            // SAFETY: from alloc_zeroed with `layout`, no longer registered.
            unsafe { std::alloc::dealloc(cpu, layout) };
            a.u.MapApertureSegment2.CpuVisibleAddress = std::ptr::null_mut();
        }
        assert!(m.debug_contains("AdlOffset 1 + 4 pages past the ADL's 4 pages"));
        assert!(m.debug_contains("without CpuVisibleAddress on a soft adapter"));
    });
}

#[test]
fn operations_excluded_by_the_caps_are_refused() {
    with_machine(|m| {
        let ctx = PagingContext {
            views: None,
            aperture: None,
            asid_of: None,
        };
        let mut dma = vec![0u8; 64];
        for op in [
            sys::DXGK_OPERATION_READ_PHYSICAL,
            sys::DXGK_OPERATION_WRITE_PHYSICAL,
            sys::DXGK_OPERATION_SPECIAL_LOCK_TRANSFER,
            sys::DXGK_BUILDPAGINGBUFFER_OPERATION(99),
        ] {
            let mut a = args(op, &mut dma);
            // SAFETY: valid buffers.
            let r = unsafe { ctx.build_raw(&mut a) };
            assert_eq!(r, Err(NtError::NOT_SUPPORTED), "op {}", op.0);
        }
        assert!(m.debug_contains("cannot occur with rgpu's caps"));
        for op in [
            sys::DXGK_OPERATION_DISCARD_CONTENT,
            sys::DXGK_OPERATION_NOTIFY_RESIDENCY,
        ] {
            let mut a = args(op, &mut dma);
            // SAFETY: valid buffers.
            assert_eq!(unsafe { ctx.build_raw(&mut a) }, Ok(()));
            assert_eq!(a.DmaSize, 64);
        }
    });
}

#[test]
fn flush_tlb_targets_the_process_address_space_when_known() {
    with_machine(|_| {
        let known = 0x1234usize as sys::HANDLE;
        let asid_of = |h: ProcessHandle| (h.as_raw() == known).then_some(3u8);
        let ctx = PagingContext {
            views: None,
            aperture: None,
            asid_of: Some(&asid_of),
        };
        let flush = |process: sys::HANDLE, start: u64, end: u64| {
            let mut dma = vec![0u8; 256];
            let mut a = args(sys::DXGK_OPERATION_FLUSH_TLB, &mut dma);
            a.u.FlushTlb.hProcess = process;
            a.u.FlushTlb.StartVirtualAddress = start;
            a.u.FlushTlb.EndVirtualAddress = end;
            // SAFETY: valid buffers.
            let r = unsafe { ctx.build_raw(&mut a) };
            let used = 256 - a.DmaSize as usize;
            r.map(|()| match Decoder::new(&dma[..used]).next() {
                Some(Ok((_, Command::FlushTlb(scope)))) => scope,
                other => panic!("expected one FLUSH_TLB, got {other:?}"),
            })
        };
        assert_eq!(flush(known, 0, 0), Ok(FlushScope::Asid(3)));
        assert_eq!(
            flush(known, 0x1000, 0x1FFF),
            Ok(FlushScope::Range {
                asid: 3,
                va: 0x1000,
                size: 0x1000
            })
        );
        assert_eq!(
            flush(std::ptr::null_mut(), 0x1000, 0x1FFF),
            Ok(FlushScope::All)
        );
        assert_eq!(
            flush(known, 0x2000, 0x1000),
            Err(NtError::INVALID_PARAMETER)
        );
    });
}

/// Runs one UPDATE_PAGE_TABLE in GPU_VIRTUAL and in CPU_VIRTUAL mode; returns the entries
/// written by each (None when refused, after checking both modes agree and nothing was used).
fn update_both_modes(
    ctx: &PagingContext<'_>,
    entries: &mut [sys::DXGK_PTE],
    start: u32,
    count: u32,
    level: u32,
    use_64k: bool,
) -> Option<Vec<u64>> {
    let mut dma = vec![0u8; 8192];
    let mut a = args(sys::DXGK_OPERATION_UPDATE_PAGE_TABLE, &mut dma);
    let mut u = update_args(entries, start, count, 0x7000_0000, level);
    u.Flags.set_Use64KBPages(use_64k as u32);
    a.u.UpdatePageTable = u;
    // SAFETY: valid buffers.
    let gpu = unsafe { ctx.build_raw(&mut a) };
    let used = 8192 - a.DmaSize as usize;
    let mut table = vec![0u64; 512];
    let mut c = sys::DXGKARG_BUILDPAGINGBUFFER {
        Operation: sys::DXGK_OPERATION_UPDATE_PAGE_TABLE,
        ..Default::default()
    };
    u.UpdateMode = sys::DXGK_PAGETABLEUPDATE_CPU_VIRTUAL;
    u.PageTableAddress.u.CpuVirtual = table.as_mut_ptr().cast();
    c.u.UpdatePageTable = u;
    // SAFETY: the table and entries are valid; pDmaBuffer is NULL as Windows passes it.
    let cpu = unsafe { ctx.build_raw(&mut c) };
    assert_eq!(gpu, cpu, "both update modes accept or refuse alike");
    match gpu {
        Ok(()) => {
            let written: Vec<u64> = written_ptes(&[dma[..used].to_vec()])
                .into_iter()
                .map(|(_, e)| e)
                .collect();
            let range = start as usize..(start + count) as usize;
            assert_eq!(
                written,
                table[range.clone()],
                "both modes write the same entries"
            );
            assert!(
                table
                    .iter()
                    .enumerate()
                    .all(|(i, &e)| range.contains(&i) || e == 0),
                "nothing outside the range touched"
            );
            Some(written)
        }
        Err(e) => {
            assert_eq!(e, NtError::INVALID_PARAMETER);
            assert_eq!(used, 0, "nothing written on refusal");
            assert!(table.iter().all(|&e| e == 0), "nothing written on refusal");
            None
        }
    }
}

#[test]
fn sixty_four_kib_page_tables_are_level_1_entries_with_table_64k_and_32_entry_leaves() {
    with_machine(|m| {
        let ctx = PagingContext {
            views: None,
            aperture: None,
            asid_of: None,
        };
        // Level 1: PageTablePageSize = 64 KB sets TABLE_64K; 4 KB does not.
        let mut e64 = dxgk_pte(0x42, 0, false);
        e64.set_PageTablePageSize(1);
        let mut entries = vec![dxgk_pte(0x41, 0, false), e64];
        let got = update_both_modes(&ctx, &mut entries, 7, 2, 1, false).unwrap();
        assert_eq!(
            got,
            [
                pte::Pte::table(0x41 << 12).raw(),
                pte::Pte::table_64k(0x42 << 12).raw()
            ]
        );
        // Use64KBPages on a level-1 update: every entry points at a 64 KiB-page table.
        let mut entries = vec![dxgk_pte(0x41, 0, false)];
        let got = update_both_modes(&ctx, &mut entries, 0, 1, 1, true).unwrap();
        assert_eq!(got, [pte::Pte::table_64k(0x41 << 12).raw()]);

        // Level 0 with Use64KBPages: 32 entries of 64 KiB-aligned pages, the leaf format.
        let mut entries: Vec<_> = (0..2)
            .map(|i| dxgk_pte(0x100 + 16 * i, 0, i == 1))
            .collect();
        let got = update_both_modes(&ctx, &mut entries, 30, 2, 0, true).unwrap();
        assert_eq!(
            got,
            [
                pte::Pte::leaf(0x100 << 12, 0).raw(),
                pte::Pte::leaf(0x110 << 12, pte::READ_ONLY).raw()
            ]
        );
        // ... and not one entry more: a 64 KiB-page table has 32.
        assert!(update_both_modes(&ctx, &mut entries, 31, 2, 0, true).is_none());
        assert!(m.debug_contains("outside a 32-entry table"));
        // A 64 KiB page that is not 64 KiB-aligned.
        let mut entries = vec![dxgk_pte(0x108, 0, false)];
        assert!(update_both_modes(&ctx, &mut entries, 0, 1, 0, true).is_none());
        assert!(m.debug_contains("Misaligned64KPage(264)"));
        // An aperture page in a 64 KiB-page table.
        let mut entries = vec![dxgk_pte(
            0x100,
            u64::from(rgpu::caps::APERTURE_SEGMENT_ID),
            false,
        )];
        assert!(update_both_modes(&ctx, &mut entries, 0, 1, 0, true).is_none());
        assert!(m.debug_contains("Aperture64KPage(256)"));
        // PageTablePageSize only means something on level-1 entries, and only 0 or 1.
        let mut bad_size = dxgk_pte(0x42, 0, false);
        bad_size.set_PageTablePageSize(2);
        let mut entries = vec![bad_size];
        assert!(update_both_modes(&ctx, &mut entries, 0, 1, 1, false).is_none());
        assert!(m.debug_contains("PageTablePageSize(2)"));
        for level in [0, 2] {
            let mut entries = vec![e64];
            assert!(update_both_modes(&ctx, &mut entries, 0, 1, level, false).is_none());
        }
        assert!(m.debug_contains("PageTablePageSize(1)"));
        // Use64KBPages on a level that has no 64 KiB form.
        let mut entries = vec![dxgk_pte(0x42, 0, false)];
        assert!(update_both_modes(&ctx, &mut entries, 0, 1, 2, true).is_none());
        assert!(m.debug_contains("with Use64KBPages"));
    });
}

/// The DXGK_PTE → rgpu translation, written from the two specifications field by field (the
/// driver's is a branch-free mask-and-shift; this one is the slow, obvious one).
fn reference_entry(p: &sys::DXGK_PTE, level: u32, use_64k: bool) -> Option<u64> {
    if p.Valid() == 0 {
        return Some(0);
    }
    // SAFETY: both union members are the same u64.
    let page = unsafe { p.u.PageAddress };
    let segment = p.Segment();
    if segment != 0 && segment != u64::from(rgpu::caps::SYSTEM_MEMORY_SEGMENT_ID) {
        return None; // the aperture (no GART here) or a segment rgpu does not have
    }
    let size = p.PageTablePageSize();
    if size > 1 || (size == 1 && level != 1) {
        return None;
    }
    let addr = (page << 12) & pte::ADDR_MASK;
    Some(match level {
        0 => {
            if use_64k && page % 16 != 0 {
                return None;
            }
            let mut flags = 0;
            for (set, bit) in [
                (p.Zero(), pte::ZERO),
                (p.CacheCoherent(), pte::CACHE_COHERENT),
                (p.ReadOnly(), pte::READ_ONLY),
                (p.NoExecute(), pte::NO_EXECUTE),
            ] {
                if set != 0 {
                    flags |= bit;
                }
            }
            pte::Pte::leaf(addr, flags).raw()
        }
        1 if size == 1 || use_64k => pte::Pte::table_64k(addr).raw(),
        _ => pte::Pte::table(addr).raw(),
    })
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config::with_cases(256))]

    /// Random entries (any flag bits, any page number) at every level and table kind: the
    /// driver writes exactly what the reference translation says, or refuses the update when
    /// the reference refuses any of its entries.
    #[test]
    fn translation_matches_a_field_by_field_reference(
        raw in proptest::collection::vec((proptest::num::u64::ANY, proptest::num::u64::ANY), 1..40),
        level in 0u32..4,
        use_64k in proptest::bool::ANY,
    ) {
        with_machine(|_| {
            let ctx = PagingContext { aperture: None, views: None, asid_of: None };
            // Bias towards entries rgpu accepts: most random flag words name a bad segment.
            // (One entry in 16 keeps its random segment and PageTablePageSize, one in 8 its
            // random low page bits.)
            let mut entries: Vec<sys::DXGK_PTE> = raw
                .iter()
                .map(|&(flags, page)| {
                    let mut p = sys::DXGK_PTE {
                        Flags: if flags >> 60 == 0 { flags } else { flags & !(0x1F << 5 | 0b11 << 17) },
                        ..Default::default()
                    };
                    p.u.PageAddress = if page >> 61 == 0 { page } else { page & 0xF_FFFF_FFF0 };
                    p
                })
                .collect();
            let use_64k = use_64k && level <= 1;
            let n = entries.len().min(if use_64k && level == 0 { 32 } else { 512 }) as u32;
            let expected: Option<Vec<u64>> = entries[..n as usize]
                .iter()
                .map(|p| reference_entry(p, level, use_64k))
                .collect();
            let got = update_both_modes(&ctx, &mut entries, 0, n, level, use_64k);
            assert_eq!(got, expected);
        });
    }

    /// Whole tables of entries the fast path takes (any Valid and leaf flags, any page, the
    /// system-memory segments), so that the converted batch itself is what gets written: the
    /// batch loop (prefetching, four entries at a time, the remainder) matches the reference.
    #[test]
    fn large_fast_batches_match_the_reference(
        raw in proptest::collection::vec((proptest::num::u64::ANY, proptest::num::u64::ANY), 1..=512),
        start in 0u32..512,
        level in 0u32..4,
        use_64k in proptest::bool::ANY,
    ) {
        with_machine(|_| {
            let ctx = PagingContext { aperture: None, views: None, asid_of: None };
            let use_64k = use_64k && level <= 1;
            let mut entries: Vec<sys::DXGK_PTE> = raw
                .iter()
                .map(|&(flags, page)| {
                    // Segment 0 or 2; PageTablePageSize 64 KB only where it means something.
                    let keep = !(0x1F << 5 | 0b11 << 17) | 2 << 5 | if level == 1 { 1 << 17 } else { 0 };
                    let mut p = sys::DXGK_PTE { Flags: flags & keep, ..Default::default() };
                    p.u.PageAddress = if use_64k && level == 0 { page & !0xF } else { page };
                    p
                })
                .collect();
            let table = if use_64k && level == 0 { 32 } else { 512 };
            let n = entries.len().min(table) as u32;
            let start = start % (table as u32 - n + 1);
            let expected: Option<Vec<u64>> = entries[..n as usize]
                .iter()
                .map(|p| reference_entry(p, level, use_64k))
                .collect();
            assert!(expected.is_some(), "every entry takes the fast path");
            let got = update_both_modes(&ctx, &mut entries, start, n, level, use_64k);
            assert_eq!(got, expected);
        });
    }
}
