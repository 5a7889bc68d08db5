//! `dxgk::aperture_views`: the CPU views of aperture pages a software GPU registers at
//! MAP_APERTURE_SEGMENT — an unmapped MDL is mapped to system VA (and unmapped with its last
//! page), a logical page reads and writes the MDL's bytes, unregistered pages and page-crossing
//! ranges are refused, a failed registration leaves nothing behind, and the verifier sees every
//! MmMapLockedPagesSpecifyCache balanced.

use dxgk::aperture_views::{ApertureViews, ViewError};
use dxgk::mdl::Mdl;
use dxgk::paging::{BuildPagingBuffer, Op};
use dxgk::pool::{Pool, PoolTag};
use dxgk_sim::{Machine, MachineConfig};
use dxgk_sys as sys;

fn calls(m: &Machine, name: &str) -> u64 {
    m.call_counts()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map_or(0, |(_, c)| c)
}

const TAG: PoolTag = PoolTag(u32::from_le_bytes(*b"tAVw"));

/// VidMm-like pages: DxgkCbAllocatePagesForMdl, not mapped to system VA.
struct VidmmPages {
    iface: sys::DXGKRNL_INTERFACE,
    mdl: *mut sys::MDL,
    handle: sys::HANDLE,
}

impl VidmmPages {
    fn new(iface: sys::DXGKRNL_INTERFACE, pages: usize) -> Self {
        let mut a = sys::DXGKARGCB_ALLOCATEPAGESFORMDL {
            HighAddress: sys::LARGE_INTEGER { QuadPart: i64::MAX },
            TotalBytes: pages * 4096,
            CacheType: sys::DXGK_MEMORY_CACHING_TYPE_CACHED,
            ..Default::default()
        };
        let f = iface.DxgkCbAllocatePagesForMdl.unwrap();
        // SAFETY: the simulator's callback with its own device handle and a valid argument.
        let s = unsafe { f(iface.DeviceHandle, &mut a) };
        assert_eq!(s, sys::STATUS_SUCCESS);
        Self {
            iface,
            mdl: a.pMdl,
            handle: a.hMemoryHandle,
        }
    }

    fn pfns(&self) -> Vec<u64> {
        // SAFETY: a live MDL from the simulator.
        let m = unsafe { Mdl::from_raw(self.mdl) }.unwrap();
        m.pfns().collect()
    }
}

impl Drop for VidmmPages {
    fn drop(&mut self) {
        let a = sys::DXGKARGCB_FREEPAGESFROMMDL {
            hMemoryHandle: self.handle,
        };
        let f = self.iface.DxgkCbFreePagesFromMdl.unwrap();
        // SAFETY: the handle from the allocation above, freed once.
        unsafe { f(self.iface.DeviceHandle, &a) };
    }
}

/// Decodes a MAP_APERTURE_SEGMENT of `pages` pages of `mdl` from `mdl_offset` and registers it.
fn register(
    views: &ApertureViews,
    mdl: *mut sys::MDL,
    mdl_offset: u32,
    pages: usize,
) -> Result<(), ViewError> {
    let mut dma = [0u8; 16];
    let mut a = sys::DXGKARG_BUILDPAGINGBUFFER {
        pDmaBuffer: dma.as_mut_ptr().cast(),
        DmaSize: dma.len() as u32,
        Operation: sys::DXGK_OPERATION_MAP_APERTURE_SEGMENT,
        ..Default::default()
    };
    a.u.MapApertureSegment = sys::DXGKARG_BUILDPAGINGBUFFER_MapApertureSegment {
        SegmentId: 1,
        NumberOfPages: pages,
        pMdl: mdl,
        MdlOffset: mdl_offset,
        ..Default::default()
    };
    // SAFETY: every pointer in `a` is valid; the MDL outlives its registration (the test frees
    // it only after unmapping).
    let req = unsafe { BuildPagingBuffer::from_raw(&mut a, 512) }.unwrap();
    let Op::MapApertureSegment(m) = req.op else {
        panic!("decoded {:?}", req.op.operation());
    };
    views.map_mdl(m.retained, m.mdl_offset as usize, m.mdl_pages().unwrap())
}

#[test]
fn mdl_pages_are_reachable_by_logical_page_only_while_registered() {
    let m = Machine::new(MachineConfig::windows_10_1803());
    m.enter(|| {
        let iface = m.interface_for_tests(m.config().max_interface_version);
        let pages = VidmmPages::new(iface, 4);
        let pfns = pages.pfns();
        let views = ApertureViews::new(&Pool::resolve(), TAG, 16).unwrap();
        // Pages 1..3 of the MDL.
        register(&views, pages.mdl, 1, 3).unwrap();
        assert_eq!(views.len(), 3);
        assert_eq!(calls(&m, "MmMapLockedPagesSpecifyCache"), 1);
        let page = |i: usize| pfns[i] << 12;
        assert!(views.write(page(2) + 8, b"soft rgpu"));
        let mut back = [0u8; 9];
        assert!(views.read(page(2) + 8, &mut back));
        assert_eq!(&back, b"soft rgpu");
        // Not registered: MDL page 0; a range leaving its page.
        assert!(!views.read(page(0), &mut back));
        assert!(!views.read(page(1) + 4090, &mut back));
        // The same MDL again (pages 0..1) reuses its mapping; a page twice is refused whole.
        assert_eq!(
            register(&views, pages.mdl, 0, 2),
            Err(ViewError::AlreadyMapped(pfns[1]))
        );
        assert_eq!(views.len(), 3, "nothing of the refused MAP stays");
        register(&views, pages.mdl, 0, 1).unwrap();
        assert_eq!(calls(&m, "MmMapLockedPagesSpecifyCache"), 1);
        // Unmap all but one page: the mapping stays; the last one releases it.
        assert_eq!(views.unmap(pfns[0..3].iter().copied()), 3);
        assert_eq!(calls(&m, "MmUnmapLockedPages"), 0);
        assert!(!views.read(page(2) + 8, &mut back));
        assert_eq!(views.unmap([pfns[3], pfns[3]].into_iter()), 1);
        assert_eq!(calls(&m, "MmUnmapLockedPages"), 1);
        assert!(views.is_empty());
        drop(views);
        drop(pages);
    });
    m.check_leaks();
    m.assert_clean();
}

#[test]
fn a_full_registry_refuses_whole_maps_and_drop_leaves_the_mdls_alone() {
    let m = Machine::new(MachineConfig::windows_10_1803());
    m.enter(|| {
        let iface = m.interface_for_tests(m.config().max_interface_version);
        let pages = VidmmPages::new(iface, 4);
        let views = ApertureViews::new(&Pool::resolve(), TAG, 3).unwrap();
        assert_eq!(register(&views, pages.mdl, 0, 4), Err(ViewError::Full));
        assert!(views.is_empty());
        assert_eq!(
            calls(&m, "MmMapLockedPagesSpecifyCache"),
            calls(&m, "MmUnmapLockedPages"),
            "the refused MAP's mapping was released"
        );
        register(&views, pages.mdl, 0, 2).unwrap();
        // StopDevice without UNMAP: the registry forgets the pages and never touches the MDL
        // (VidMm may have freed it); the mapping stays in the MDL for its owner to release.
        let unmaps = calls(&m, "MmUnmapLockedPages");
        drop(views);
        assert_eq!(calls(&m, "MmUnmapLockedPages"), unmaps);
        // SAFETY: a live MDL from the simulator.
        let h = unsafe { pages.mdl.read() };
        assert_ne!(h.MdlFlags & sys::MDL_MAPPED_TO_SYSTEM_VA, 0);
        // The owner tears its MDL down: the mapping goes first.
        // SAFETY: the MDL's live system mapping, released once.
        unsafe { sys::MmUnmapLockedPages(h.MappedSystemVa, pages.mdl) };
        drop(pages);
    });
    m.check_leaks();
    m.assert_clean();
}

#[test]
fn pool_boxes_and_spin_locks_initialize_in_place_or_free_their_block() {
    use dxgk::pool::PoolBox;
    use dxgk::sync::SpinLock;
    use dxgk::NtError;
    let m = Machine::new(MachineConfig::windows_11_22h2());
    m.enter(|| {
        let pool = Pool::resolve();
        let b = PoolBox::<SpinLock<[u64; 2048]>>::try_new_in_place(&pool, TAG, |slot| {
            SpinLock::init_in_place(slot, |v| Ok(v.write([7; 2048])))
        })
        .unwrap();
        assert!(b.lock().iter().all(|&x| x == 7));
        drop(b);
        // An `init` that fails, or returns some other value, leaves nothing allocated.
        let e = PoolBox::<SpinLock<u64>>::try_new_in_place(&pool, TAG, |slot| {
            SpinLock::init_in_place(slot, |_| Err(NtError::DEVICE_NOT_READY))
        });
        assert_eq!(e.err(), Some(NtError::DEVICE_NOT_READY));
        let other = Box::into_raw(Box::new(5u64));
        // SAFETY: `other` is a live, unaliased Box allocation until it is reclaimed below.
        let e = PoolBox::<u64>::try_new_in_place(&pool, TAG, |_| Ok(unsafe { &mut *other }));
        assert_eq!(e.err(), Some(NtError::INVALID_PARAMETER));
        // SAFETY: from Box::into_raw above, no reference to it remains.
        drop(unsafe { Box::from_raw(other) });
    });
    assert_eq!(
        m.pool_allocation_count(),
        3,
        "every attempt allocated its block"
    );
    assert!(m.pool_in_use().is_empty(), "and freed it");
    m.check_leaks();
    m.assert_clean();
}

/// A MAP_APERTURE_SEGMENT2 with a contiguous ADL of 3 pages from `base`, mapping 2 of them
/// from AdlOffset 1, with `cpu` as CpuVisibleAddress.
fn map2_args(dma: &mut [u8], base: u64, cpu: sys::PVOID) -> sys::DXGKARG_BUILDPAGINGBUFFER {
    let mut a = sys::DXGKARG_BUILDPAGINGBUFFER {
        pDmaBuffer: dma.as_mut_ptr().cast(),
        DmaSize: dma.len() as u32,
        Operation: sys::DXGK_OPERATION_MAP_APERTURE_SEGMENT2,
        ..Default::default()
    };
    let mut adl = sys::DXGK_ADL {
        PageCount: 3,
        ..Default::default()
    };
    adl.Flags.set_Contiguous(1);
    adl.u.BasePageNumber = base as sys::DXGK_PAGE_NUMBER;
    a.u.MapApertureSegment2 = sys::DXGKARG_BUILDPAGINGBUFFER_MapApertureSegment2 {
        SegmentId: 1,
        NumberOfPages: 2,
        Adl: adl,
        AdlOffset: 1,
        CpuVisibleAddress: cpu,
        ..Default::default()
    };
    a
}

#[test]
fn cpu_visible_pages_of_map_aperture_segment2_are_reachable_at_their_adl_pages() {
    let m = Machine::new(MachineConfig::windows_11_22h2());
    m.enter(|| {
        let layout = std::alloc::Layout::from_size_align(3 * 4096, 4096).unwrap();
        // SAFETY: a non-zero size.
        let cpu = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!cpu.is_null());
        let views = ApertureViews::new(&Pool::resolve(), TAG, 8).unwrap();
        let mut dma = [0u8; 16];
        let register = |a: &mut sys::DXGKARG_BUILDPAGINGBUFFER| {
            // SAFETY: every pointer in `a` is valid; the CPU-visible pages outlive the
            // registry's use of them (unmapped below before they are freed).
            let req = unsafe { BuildPagingBuffer::from_raw(a, 512) }.unwrap();
            let Op::MapApertureSegment2(m) = req.op else {
                panic!("decoded {:?}", req.op.operation());
            };
            let first = m.adl_offset as usize;
            let pages = (first..first + m.pages).map(move |i| m.adl.page(i).unwrap());
            (m.cpu_view, views.map_cpu(m.cpu_view.unwrap(), first, pages))
        };
        let mut a = map2_args(&mut dma, 0x5000, cpu.cast());
        assert!(register(&mut a).1.is_ok());
        assert_eq!(views.len(), 2);
        // ADL page 0x5001 (AdlOffset 1) is page 1 of the allocation.
        assert!(views.write((0x5001 << 12) + 16, b"remapped"));
        // SAFETY: inside the 3-page block, no reference to it elsewhere.
        let got = unsafe { std::slice::from_raw_parts(cpu.wrapping_add(4096 + 16), 8) };
        assert_eq!(got, b"remapped");
        assert!(!views.read(0x5000 << 12, &mut [0u8; 4]), "not mapped");
        assert_eq!(views.unmap([0x5001, 0x5002].into_iter()), 2);
        // A CPU-visible address that is not page aligned is refused, nothing registered.
        let mut a = map2_args(&mut dma, 0x6000, cpu.wrapping_add(8).cast());
        assert!(matches!(register(&mut a).1, Err(ViewError::CpuAddress(_))));
        assert!(views.is_empty());
        // No CpuVisibleAddress: the decode says so (a soft adapter refuses that MAP).
        let mut a = map2_args(&mut dma, 0x6000, std::ptr::null_mut());
        // SAFETY: every pointer in `a` is valid (a NULL CpuVisibleAddress is never read).
        let req = unsafe { BuildPagingBuffer::from_raw(&mut a, 512) }.unwrap();
        let Op::MapApertureSegment2(m2) = req.op else {
            panic!("decoded {:?}", req.op.operation());
        };
        assert!(m2.cpu_view.is_none());
        drop(views);
        // SAFETY: from alloc_zeroed with `layout`, no longer registered.
        unsafe { std::alloc::dealloc(cpu, layout) };
    });
    m.assert_clean();
}
