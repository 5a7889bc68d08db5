//! The IOMMU page pool: reuse without Dxgkrnl round trips, zeroing, bounds, trimming, DISPATCH
//! use of the free list, and everything returned when the pool goes away.

use dxgk::device_memory::MemoryPath;
use dxgk::interface::DxgkInterface;
use dxgk::irql::Passive;
use dxgk::memory::PAGE_SIZE;
use dxgk::page_pool::PagePool;
use dxgk_sim::{Machine, MachineConfig};
use dxgk_sys as sys;

fn setup(m: &Machine) -> DxgkInterface {
    let raw = m.interface_for_tests(sys::DXGKDDI_INTERFACE_VERSION_WDDM3_1);
    // SAFETY: a valid interface from the simulator.
    unsafe { DxgkInterface::copy_from(&raw, sys::DXGKDDI_INTERFACE_VERSION_WDDM2_4) }.unwrap()
}

fn round_trips(m: &Machine) -> u64 {
    [
        "DxgkCbAllocatePagesForMdl",
        "DxgkCbMapMdlToIoMmu",
        "DxgkCbUnmapMdlFromIoMmu",
        "DxgkCbFreePagesFromMdl",
    ]
    .iter()
    .map(|c| m.callback_calls(c))
    .sum()
}

/// Steady-state rounds of 4 pages (fewer under Miri, where each 4 KiB page check is slow).
const ROUNDS: u64 = if cfg!(miri) { 3 } else { 100 };

#[test]
fn steady_state_reuse_makes_no_dxgkrnl_calls_and_pages_come_back_zeroed() {
    let m = Machine::new(MachineConfig::windows_11_22h2());
    m.enter(|| {
        let iface = setup(&m);
        let passive = Passive::check().unwrap();
        let pool = PagePool::new(
            &iface,
            MemoryPath::Mdl,
            sys::DXGK_MEMORY_CACHING_TYPE_CACHED,
            8,
        );
        // Warm up: 4 pages in use at once.
        let pages: Vec<_> = (0..4).map(|_| pool.get(&passive).unwrap()).collect();
        for mut p in pages {
            p.fill(0, PAGE_SIZE, 0xEE).unwrap();
            pool.put(&passive, p).unwrap();
        }
        let before = round_trips(&m);
        for _ in 0..ROUNDS {
            let pages: Vec<_> = (0..4).map(|_| pool.get(&passive).unwrap()).collect();
            for mut p in pages {
                let mut b = vec![0u8; PAGE_SIZE];
                p.read(0, &mut b).unwrap();
                assert!(b.iter().all(|&x| x == 0), "reused page not zeroed");
                p.fill(0, PAGE_SIZE, 0x77).unwrap();
                pool.put(&passive, p).unwrap();
            }
        }
        assert_eq!(
            round_trips(&m),
            before,
            "0 Dxgkrnl round trips in steady state"
        );
        let s = pool.stats();
        assert_eq!(
            (s.allocated, s.hits, s.misses, s.idle),
            (4, 4 * ROUNDS, 4, 4)
        );
    });
    m.check_leaks();
    m.assert_clean();
}

#[test]
fn the_pool_is_bounded_trimmed_and_frees_everything_when_dropped() {
    let m = Machine::new(MachineConfig::windows_10_1803());
    m.enter(|| {
        let iface = setup(&m);
        let passive = Passive::check().unwrap();
        let pool = PagePool::new(
            &iface,
            MemoryPath::Mdl,
            sys::DXGK_MEMORY_CACHING_TYPE_CACHED,
            3,
        );
        let pages: Vec<_> = (0..5).map(|_| pool.get(&passive).unwrap()).collect();
        assert_eq!(m.live_iommu_mappings(), 5);
        for p in pages {
            pool.put(&passive, p).unwrap();
        }
        assert_eq!(pool.stats().idle, 3, "bounded at capacity");
        assert_eq!(
            m.live_iommu_mappings(),
            3,
            "the overflow was unmapped and freed"
        );
        assert_eq!(pool.trim(&passive, 1), 2);
        assert_eq!(m.live_iommu_mappings(), 1);
        drop(pool);
        assert_eq!((m.live_iommu_mappings(), m.live_mdl_allocations()), (0, 0));
    });
    m.check_leaks();
    m.assert_clean();
}

#[test]
fn the_free_list_serves_dispatch_level_without_callbacks() {
    let m = Machine::new(MachineConfig::windows_11_22h2());
    m.enter(|| {
        let iface = setup(&m);
        let passive = Passive::check().unwrap();
        let pool = PagePool::new(
            &iface,
            MemoryPath::Mdl,
            sys::DXGK_MEMORY_CACHING_TYPE_CACHED,
            2,
        );
        let p = pool.get(&passive).unwrap();
        pool.put(&passive, p).unwrap();
        // SAFETY: simulated raise, lowered below.
        let old = unsafe { sys::KeRaiseIrql(sys::DISPATCH_LEVEL) };
        let first = pool.try_get();
        let second = pool.try_get();
        // SAFETY: restores the raise above.
        unsafe { sys::KeLowerIrql(old) };
        assert!(
            first.is_some() && second.is_none(),
            "one idle page, then empty"
        );
        pool.put(&passive, first.unwrap()).unwrap();
    });
    m.check_leaks();
    m.assert_clean();
}

#[test]
fn a_failed_allocation_leaves_the_pool_usable() {
    let m = Machine::new(MachineConfig::windows_11_22h2());
    m.enter(|| {
        let iface = setup(&m);
        let passive = Passive::check().unwrap();
        let pool = PagePool::new(
            &iface,
            MemoryPath::Mdl,
            sys::DXGK_MEMORY_CACHING_TYPE_CACHED,
            2,
        );
        m.fail_nth(1);
        assert!(pool.get(&passive).is_err());
        let p = pool.get(&passive).unwrap();
        pool.put(&passive, p).unwrap();
        assert_eq!(pool.stats().misses, 2);
    });
    m.check_leaks();
    m.assert_clean();
}

#[test]
fn on_the_remapping_path_the_pool_uses_physical_memory_objects_and_refuses_foreign_pages() {
    use dxgk::device_memory::SystemMemory;
    let m = Machine::new(MachineConfig::windows_11_22h2());
    m.enter(|| {
        let raw = m.interface_for_tests(sys::DXGKDDI_INTERFACE_VERSION_WDDM3_1);
        // SAFETY: a valid interface from the simulator.
        let iface =
            unsafe { DxgkInterface::copy_from(&raw, sys::DXGKDDI_INTERFACE_VERSION_WDDM2_4) }
                .unwrap();
        assert!(MemoryPath::Adl.available(&iface) && MemoryPath::Mdl.available(&iface));
        let passive = Passive::check().unwrap();
        let pool = PagePool::new(
            &iface,
            MemoryPath::Adl,
            sys::DXGK_MEMORY_CACHING_TYPE_CACHED,
            2,
        );
        let mut p = pool.get(&passive).unwrap();
        assert_eq!((p.path(), p.len()), (MemoryPath::Adl, PAGE_SIZE));
        let addr = p.page_address(0).expect("device-visible");
        assert_eq!(
            p.address_of(12),
            Some(dxgk::memory::LogicalAddress(addr.0 + 12))
        );
        assert_eq!(p.page_address(1), None);
        p.write(PAGE_SIZE - 4, &[1, 2, 3, 4]).unwrap();
        assert_eq!(
            p.write(PAGE_SIZE - 3, &[0; 4]),
            Err(dxgk::NtError::INVALID_PARAMETER)
        );
        let mut b = [0u8; 4];
        p.read(PAGE_SIZE - 4, &mut b).unwrap();
        assert_eq!(b, [1, 2, 3, 4]);
        pool.put(&passive, p).unwrap();
        let p = pool.get(&passive).unwrap();
        let mut b = [0xFFu8; 4];
        p.read(PAGE_SIZE - 4, &mut b).unwrap();
        assert_eq!(b, [0; 4], "zeroed on reuse");
        // A page from the other path, or a CPU-only one, is refused (and freed).
        let mdl = SystemMemory::allocate(
            &iface,
            &passive,
            MemoryPath::Mdl,
            PAGE_SIZE,
            sys::DXGK_MEMORY_CACHING_TYPE_CACHED,
        )
        .unwrap();
        assert_eq!(
            pool.put(&passive, mdl),
            Err(dxgk::NtError::INVALID_PARAMETER)
        );
        let cpu = SystemMemory::allocate_cpu_only(
            &iface,
            &passive,
            MemoryPath::Adl,
            PAGE_SIZE,
            sys::DXGK_MEMORY_CACHING_TYPE_CACHED,
        )
        .unwrap();
        assert_eq!(cpu.page_address(0), None);
        assert!(!cpu.is_device_visible());
        assert_eq!(
            pool.put(&passive, cpu),
            Err(dxgk::NtError::INVALID_PARAMETER)
        );
        pool.put(&passive, p).unwrap();
        drop(pool);
        assert_eq!(m.callback_calls("DxgkCbCreatePhysicalMemoryObject"), 2);
        assert_eq!(m.callback_calls("DxgkCbDestroyPhysicalMemoryObject"), 2);
        assert_eq!(m.callback_calls("DxgkCbAllocateAdl"), 1);
        assert_eq!(m.callback_calls("DxgkCbFreeAdl"), 1);
    });
    m.check_leaks();
    m.assert_clean();
}
