//! Device-model tests against a memory-backed DMA bus.

use std::collections::BTreeMap;

use rgpu_hw::cmd::{Encoder, FlushScope, Target};
use rgpu_hw::pte::{self, Pte, LEVELS, PAGE_SIZE};
use rgpu_hw::regs::*;
use rgpu_hw::ring::{RingEntry, ENTRY_SIZE};
use rgpu_hw::{Device, DmaBus, DmaFault, DmaFaultKind, DmaSource, FaultKind, RunState};

/// Sparse logical memory: 4 KiB pages, optionally read-only; everything else unmapped.
#[derive(Default)]
struct MemBus {
    pages: BTreeMap<u64, (Box<[u8; 4096]>, bool)>,
    /// Every transaction: (source, write, logical, len).
    log: Vec<(DmaSource, bool, u64, usize)>,
}

impl MemBus {
    fn map(&mut self, logical: u64, read_only: bool) {
        assert_eq!(logical % PAGE_SIZE, 0);
        self.pages.insert(logical, (Box::new([0; 4096]), read_only));
    }
    fn check(&self, addr: u64, len: usize, write: bool) -> Result<(), DmaFault> {
        assert!(len > 0, "zero-length transaction");
        assert_eq!(
            addr / PAGE_SIZE,
            (addr + len as u64 - 1) / PAGE_SIZE,
            "transaction crosses a page"
        );
        match self.pages.get(&(addr & !(PAGE_SIZE - 1))) {
            None => Err(DmaFault {
                logical_addr: addr,
                kind: DmaFaultKind::NotMapped,
            }),
            Some((_, true)) if write => Err(DmaFault {
                logical_addr: addr,
                kind: DmaFaultKind::ReadOnly,
            }),
            Some(_) => Ok(()),
        }
    }
    /// CPU-side access (no logging, panics on unmapped).
    fn peek(&self, addr: u64, len: usize) -> Vec<u8> {
        (0..len as u64)
            .map(|i| {
                let a = addr + i;
                self.pages[&(a & !(PAGE_SIZE - 1))].0[(a % PAGE_SIZE) as usize]
            })
            .collect()
    }
    fn poke(&mut self, addr: u64, data: &[u8]) {
        for (i, b) in data.iter().enumerate() {
            let a = addr + i as u64;
            self.pages
                .get_mut(&(a & !(PAGE_SIZE - 1)))
                .expect("poke unmapped")
                .0[(a % PAGE_SIZE) as usize] = *b;
        }
    }
    fn peek_u32(&self, addr: u64) -> u32 {
        u32::from_le_bytes(self.peek(addr, 4).try_into().unwrap())
    }
    fn peek_u64(&self, addr: u64) -> u64 {
        u64::from_le_bytes(self.peek(addr, 8).try_into().unwrap())
    }
    fn data_writes(&self) -> usize {
        self.log
            .iter()
            .filter(|l| l.1 && l.0 == DmaSource::Write)
            .count()
    }
}

impl DmaBus for MemBus {
    fn read(&mut self, addr: u64, buf: &mut [u8], source: DmaSource) -> Result<(), DmaFault> {
        self.check(addr, buf.len(), false)?;
        self.log.push((source, false, addr, buf.len()));
        let page = &self.pages[&(addr & !(PAGE_SIZE - 1))].0;
        let off = (addr % PAGE_SIZE) as usize;
        buf.copy_from_slice(&page[off..off + buf.len()]);
        Ok(())
    }
    fn write(&mut self, addr: u64, data: &[u8], source: DmaSource) -> Result<(), DmaFault> {
        self.check(addr, data.len(), true)?;
        self.log.push((source, true, addr, data.len()));
        let page = &mut self.pages.get_mut(&(addr & !(PAGE_SIZE - 1))).unwrap().0;
        let off = (addr % PAGE_SIZE) as usize;
        page[off..off + data.len()].copy_from_slice(data);
        Ok(())
    }
}

const RING_SIZE_BYTES: u32 = 4096;

/// A device with an enabled ring, a bump allocator of logical pages (deliberately not
/// identity-like: they start high and are handed out in a scrambled order when asked) and a
/// host-side page-table builder.
struct Rig {
    dev: Device,
    bus: MemBus,
    ring: u64,
    ring_size: u32,
    tail: u32,
    next_page: u64,
    roots: BTreeMap<u8, u64>,
}

impl Rig {
    fn new() -> Rig {
        Rig::with_ring(RING_SIZE_BYTES)
    }
    fn with_ring(ring_size: u32) -> Rig {
        let mut r = Rig {
            dev: Device::new(),
            bus: MemBus::default(),
            ring: 0,
            ring_size,
            tail: 0,
            next_page: 0x7_0000_0000,
            roots: BTreeMap::new(),
        };
        r.ring = r.page();
        r.start();
        r
    }
    /// Driver bring-up: reset, identify, program the ring, enable.
    fn start(&mut self) {
        let d = &mut self.dev;
        d.mmio_write(RESET, RESET_ASSERT);
        assert_eq!(d.mmio_read(ID), ID_VALUE);
        assert_eq!(d.mmio_read(VERSION) >> 16, VERSION_MAJOR as u32);
        assert_ne!(d.mmio_read(STATUS) & STATUS_READY, 0);
        d.mmio_write(RING_BASE_LO, self.ring as u32);
        d.mmio_write(RING_BASE_HI, (self.ring >> 32) as u32);
        d.mmio_write(RING_SIZE, self.ring_size);
        d.mmio_write(CONTROL, CONTROL_RING_ENABLE);
        assert_ne!(d.mmio_read(STATUS) & STATUS_RING_ENABLED, 0);
        self.tail = 0;
    }
    fn page(&mut self) -> u64 {
        let p = self.next_page;
        self.next_page += PAGE_SIZE;
        self.bus.map(p, false);
        p
    }
    /// 16 contiguous pages, 64 KiB-aligned.
    fn page_64k(&mut self) -> u64 {
        self.next_page = (self.next_page + 0xFFFF) & !0xFFFF;
        let base = self.next_page;
        for _ in 0..16 {
            self.page();
        }
        base
    }
    /// Creates (host side) a root for `asid` and programs it through MMIO.
    fn asid(&mut self, asid: u8) -> u64 {
        let root = self.page();
        self.roots.insert(asid, root);
        let a = asid as u32;
        self.dev.mmio_write(asid_root_lo(a), root as u32);
        self.dev.mmio_write(asid_root_hi(a), (root >> 32) as u32);
        self.dev.mmio_write(asid_root_entries(a), 512);
        root
    }
    /// Logical address of the leaf entry for `va`, creating intermediate tables.
    fn leaf_slot(&mut self, asid: u8, va: u64) -> u64 {
        let table = self.leaf_table(asid, va, false);
        table + pte::index(va, 0) as u64 * 8
    }
    /// The leaf table of `va`'s 2 MiB region (created, of the asked kind, if missing).
    fn leaf_table(&mut self, asid: u8, va: u64, pages_64k: bool) -> u64 {
        let mut table = self.roots[&asid];
        for level in (1..LEVELS).rev() {
            let slot = table + pte::index(va, level) as u64 * 8;
            let e = Pte(self.bus.peek_u64(slot));
            table = if e.is_valid() {
                e.addr()
            } else {
                let t = self.page();
                let e = if level == 1 && pages_64k {
                    Pte::table_64k(t)
                } else {
                    Pte::table(t)
                };
                self.bus.poke(slot, &e.raw().to_le_bytes());
                t
            };
        }
        table
    }
    /// CPU-writes the 64 KiB-page entry for `va` (creating a 64 KiB-page leaf table).
    fn map_64k(&mut self, asid: u8, va: u64, e: Pte) {
        let slot = self.leaf_table(asid, va, true) + pte::index_64k(va) as u64 * 8;
        self.bus.poke(slot, &e.raw().to_le_bytes());
    }
    /// CPU-writes the leaf entry for `va`.
    fn map(&mut self, asid: u8, va: u64, e: Pte) {
        let slot = self.leaf_slot(asid, va);
        self.bus.poke(slot, &e.raw().to_le_bytes());
    }
    /// Writes `cmds` into a fresh logical command buffer; returns (address, length).
    fn buffer(&mut self, build: impl FnOnce(&mut Encoder)) -> (u64, u32) {
        let mut bytes = vec![0u8; 16 * 1024];
        let mut e = Encoder::new(&mut bytes);
        build(&mut e);
        let len = e.position();
        let pages = len.div_ceil(4096).max(1);
        let base = self.page();
        for _ in 1..pages {
            self.page();
        }
        self.bus.poke(base, &bytes[..len]);
        (base, len as u32)
    }
    /// Appends a ring entry (no doorbell).
    fn push(&mut self, e: RingEntry) {
        let at = self.ring + self.tail as u64;
        self.bus.poke(at, &e.encode());
        self.tail = (self.tail + ENTRY_SIZE as u32) % self.ring_size;
        self.dev.mmio_write(RING_TAIL, self.tail);
    }
    fn doorbell(&mut self) {
        self.dev.mmio_write(DOORBELL, 1);
    }
    /// Submits a privileged buffer in `asid` and rings the doorbell.
    fn submit(&mut self, asid: u8, build: impl FnOnce(&mut Encoder)) {
        let (a, l) = self.buffer(build);
        self.push(RingEntry {
            privileged: true,
            ..RingEntry::exec(a, l, asid)
        });
        self.doorbell();
    }
    fn run(&mut self) -> RunState {
        self.dev.run(&mut self.bus, 10_000).state
    }
    fn fault_regs(&self) -> (u32, u64, u32) {
        let d = &self.dev;
        let addr = d.mmio_read(FAULT_ADDR_LO) as u64 | ((d.mmio_read(FAULT_ADDR_HI) as u64) << 32);
        (
            d.mmio_read(FAULT_STATUS),
            addr,
            d.mmio_read(FAULT_CMD_OFFSET),
        )
    }
}

fn fault_type(status: u32) -> Option<FaultKind> {
    FaultKind::from_raw(status & FAULT_TYPE_MASK)
}
fn fault_source(status: u32) -> Option<DmaSource> {
    DmaSource::from_raw((status >> FAULT_SOURCE_SHIFT) & FAULT_SOURCE_MASK)
}

#[test]
fn reset_and_identify() {
    let mut d = Device::new();
    assert_eq!(d.mmio_read(ID), 0x5247_5055);
    assert_eq!(d.mmio_read(VERSION), 0x0001_0000);
    let caps = d.mmio_read(CAPS);
    assert_eq!(caps, 0x0F10_9430, "value documented in docs/rgpu-device.md");
    assert_eq!(caps & CAPS_VA_BITS_MASK, 48);
    assert_eq!((caps >> CAPS_LEVELS_SHIFT) & 0xF, 4);
    assert_eq!((caps >> CAPS_INDEX_BITS_SHIFT) & 0xF, 9);
    assert_eq!((caps >> CAPS_ASIDS_SHIFT) & 0xFF, 16);
    assert_ne!(caps & CAPS_PAGE_4K, 0);
    assert_ne!(caps & CAPS_PAGE_64K, 0);
    assert_eq!(d.mmio_read(STATUS), STATUS_READY);
    assert_eq!(d.mmio_read(FAULT_CMD_OFFSET), FAULT_NO_CMD);

    // Dirty every writable register, then reset.
    d.mmio_write(SCRATCH, 0x1234_5678);
    assert_eq!(d.mmio_read(SCRATCH), 0x1234_5678);
    d.mmio_write(RING_BASE_LO, 0x1000_0013);
    assert_eq!(
        d.mmio_read(RING_BASE_LO),
        0x1000_0000,
        "low 5 bits read as zero"
    );
    d.mmio_write(RING_BASE_HI, 7);
    d.mmio_write(RING_SIZE, 4096);
    d.mmio_write(
        CONTROL,
        CONTROL_RING_ENABLE | CONTROL_FENCE_WB_ENABLE | 0x100,
    );
    assert_eq!(
        d.mmio_read(CONTROL),
        CONTROL_RING_ENABLE | CONTROL_FENCE_WB_ENABLE
    );
    d.mmio_write(RING_BASE_LO, 0x2000_0000);
    assert_eq!(
        d.mmio_read(RING_BASE_LO),
        0x1000_0000,
        "ring base is locked while enabled"
    );
    d.mmio_write(FENCE_ADDR_LO, 0xFFFF_FFFF);
    assert_eq!(d.mmio_read(FENCE_ADDR_LO), 0xFFFF_FFF8);
    d.mmio_write(INT_ENABLE, 0xFFFF_FFFF);
    assert_eq!(d.mmio_read(INT_ENABLE), INT_MASK);
    d.mmio_write(asid_root_lo(5), 0x1234_5FFF);
    d.mmio_write(asid_root_entries(5), 9999);
    assert_eq!(d.mmio_read(asid_root_lo(5)), 0x1234_5000);
    assert_eq!(d.mmio_read(asid_root_entries(5)), 512, "clamped to 512");
    // Unmapped, misaligned and out-of-BAR accesses are inert.
    d.mmio_write(0x0FC, 1);
    assert_eq!(d.mmio_read(0x0FC), 0);
    assert_eq!(d.mmio_read(ID + 1), 0);
    assert_eq!(d.mmio_read(0x2000), 0);
    // RESET bit 0 clear does nothing.
    d.mmio_write(RESET, 2);
    assert_eq!(d.mmio_read(SCRATCH), 0x1234_5678);

    d.mmio_write(RESET, RESET_ASSERT);
    assert_eq!(d.mmio_read(STATUS), STATUS_READY);
    for r in [
        SCRATCH,
        CONTROL,
        RING_BASE_LO,
        RING_BASE_HI,
        RING_SIZE,
        RING_HEAD,
        RING_TAIL,
        FENCE_ADDR_LO,
        FENCE_VALUE_LO,
        INT_STATUS,
        INT_ENABLE,
        FAULT_STATUS,
        asid_root_lo(5),
        asid_root_entries(5),
    ] {
        assert_eq!(d.mmio_read(r), 0, "register {r:#x} after reset");
    }
    assert_eq!(d.mmio_read(ID), ID_VALUE);
    assert_eq!(d.stats().resets, 1);
}

#[test]
fn ring_enable_validates_size_and_doorbell_publishes_tail() {
    let mut d = Device::new();
    for bad in [0u32, 64, 100, 4096 + 32, 1 << 25] {
        d.mmio_write(RING_SIZE, bad);
        d.mmio_write(CONTROL, CONTROL_RING_ENABLE);
        assert_eq!(
            d.mmio_read(CONTROL) & CONTROL_RING_ENABLE,
            0,
            "size {bad} accepted"
        );
        assert_eq!(d.mmio_read(STATUS) & STATUS_RING_ENABLED, 0);
    }
    let mut r = Rig::new();
    let out = r.buffer(|e| {
        e.nop(1).unwrap();
    });
    r.push(RingEntry::exec(out.0, out.1, 0));
    // Tail written but no doorbell: the device does nothing.
    assert_eq!(r.dev.run(&mut r.bus, 100).state, RunState::Idle);
    assert_eq!(r.dev.mmio_read(RING_HEAD), 0);
    assert!(r.bus.log.is_empty());
    r.doorbell();
    assert_ne!(r.dev.mmio_read(STATUS) & STATUS_BUSY, 0);
    let o = r.dev.run(&mut r.bus, 100);
    assert_eq!((o.state, o.commands), (RunState::Idle, 1));
    assert_eq!(r.dev.mmio_read(RING_HEAD), 32);
    assert!(r.dev.is_idle());
}

#[test]
fn fill_and_copy_across_4k_pages() {
    let mut r = Rig::new();
    r.asid(1);
    let va = 0x0000_1234_5670_0000u64;
    // Three VA pages → three scattered logical pages (in reverse order).
    let p: Vec<u64> = (0..3).map(|_| r.page()).collect();
    for i in 0..3 {
        r.map(
            1,
            va + i * PAGE_SIZE,
            Pte::leaf(p[2 - i as usize], pte::CACHE_COHERENT),
        );
    }
    r.submit(1, |e| {
        e.fill(Target::Virtual(va + 0xFF0), 0x1020, 0xA1B2_C3D4)
            .unwrap();
    });
    assert_eq!(r.run(), RunState::Idle);
    let m = |r: &Rig, i: usize, off: u64| r.bus.peek_u32(p[2 - i] + off);
    assert_eq!(m(&r, 0, 0xFEC), 0, "byte before the range untouched");
    assert_eq!(m(&r, 0, 0xFF0), 0xA1B2_C3D4);
    assert_eq!(m(&r, 1, 0), 0xA1B2_C3D4);
    assert_eq!(m(&r, 1, 0xFFC), 0xA1B2_C3D4);
    assert_eq!(m(&r, 2, 0x00C), 0xA1B2_C3D4);
    assert_eq!(m(&r, 2, 0x010), 0, "byte after the range untouched");
    assert_eq!(r.dev.stats().bytes_filled, 0x1020);
    // Each write transaction stays inside one page: 3 pages touched → 3 writes.
    assert_eq!(r.bus.data_writes(), 3);

    // COPY VA → VA with both ends unaligned and crossing pages, then back to a logical range.
    let pattern: Vec<u8> = (0..0x1800u32).map(|i| (i * 7 + 3) as u8).collect();
    r.bus.poke(p[2] + 0x800, &pattern[..0x800]);
    r.bus.poke(p[1], &pattern[0x800..0x1800]);
    let dst_logical = r.page();
    r.page();
    r.submit(1, |e| {
        // VA page 0 starts at p[2]; copy 0x1800 bytes from va+0x800 to va+0x2003 (crosses 1→2).
        e.copy(
            Target::Virtual(va + 0x2003),
            Target::Virtual(va + 0x800),
            0x0FF0,
        )
        .unwrap();
        e.copy(
            Target::Logical(dst_logical + 0xFFF),
            Target::Virtual(va + 0x800),
            0x1800,
        )
        .unwrap();
    });
    assert_eq!(r.run(), RunState::Idle);
    assert_eq!(r.bus.peek(p[0] + 0x003, 0xFF0), pattern[..0xFF0].to_vec());
    assert_eq!(r.bus.peek(dst_logical + 0xFFF, 0x1800), pattern);
    assert_eq!(r.dev.stats().bytes_copied, 0x0FF0 + 0x1800);
}

#[test]
fn sixty_four_k_pages_translate_with_one_tlb_entry() {
    let mut r = Rig::new();
    r.asid(2);
    let big = r.page_64k();
    let big2 = r.page_64k();
    let va = 0x40_0000_0000u64 + 0x30_0000; // 64 KiB-aligned, slot 16 of its 64 KiB table
                                            // One entry per 64 KiB page in a 64 KiB-page leaf table (level-1 entry with TABLE_64K).
    r.map_64k(2, va, Pte::leaf(big, 0));
    // ADDR bits 15:12 of a 64 KiB entry are ignored: the page base stays 64 KiB-aligned.
    r.map_64k(2, va + 0x1_0000, Pte::leaf(big2 + 0x3000, 0));
    let before = r.dev.stats().mmu;
    r.submit(2, |e| {
        e.fill(Target::Virtual(va), 0x2_0000, 0x6464_6464).unwrap();
    });
    assert_eq!(r.run(), RunState::Idle);
    let after = r.dev.stats().mmu;
    assert_eq!(
        after.tlb_misses - before.tlb_misses,
        2,
        "one walk per 64 KiB page"
    );
    assert_eq!(after.tlb_hits - before.tlb_hits, 30);
    for page in [big, big2] {
        assert_eq!(r.bus.peek_u32(page), 0x6464_6464);
        assert_eq!(r.bus.peek_u32(page + 0x7000), 0x6464_6464);
        assert_eq!(r.bus.peek_u32(page + 0xFFFC), 0x6464_6464);
    }
    // Copy out of the 64 KiB page into a 4 KiB-mapped range, crossing its 4 KiB pages.
    let small_va = 0x1_0000u64;
    let s0 = r.page();
    let s1 = r.page();
    r.map(2, small_va, Pte::leaf(s0, 0));
    r.map(2, small_va + PAGE_SIZE, Pte::leaf(s1, 0));
    r.bus
        .poke(big + 0x8FF8, &0x1122_3344_5566_7788u64.to_le_bytes());
    r.submit(2, |e| {
        e.copy(
            Target::Virtual(small_va + 0xFFC),
            Target::Virtual(va + 0x8FF8),
            8,
        )
        .unwrap();
    });
    assert_eq!(r.run(), RunState::Idle);
    assert_eq!(r.bus.peek_u32(s0 + 0xFFC), 0x5566_7788);
    assert_eq!(r.bus.peek_u32(s1), 0x1122_3344);

    // The entry for the third 64 KiB page is still invalid: the walk faults at the leaf.
    r.submit(2, |e| {
        e.fill(Target::Virtual(va + 0x2_0000), 4, 1).unwrap();
    });
    assert_eq!(r.run(), RunState::Halted);
    let (st, addr, _) = r.fault_regs();
    assert_eq!(fault_type(st), Some(FaultKind::PteInvalid));
    assert_eq!(
        (st >> FAULT_LEVEL_SHIFT) & FAULT_LEVEL_MASK,
        0,
        "leaf level"
    );
    assert_eq!(addr, va + 0x2_0000);
}

#[test]
fn a_leaf_table_kind_change_needs_a_flush() {
    let mut r = Rig::new();
    r.asid(3);
    let (big, big2) = (r.page_64k(), r.page_64k());
    let va = 0x20_0000u64; // a 2 MiB region
    r.map_64k(3, va, Pte::leaf(big, 0));
    r.map_64k(3, va + 0x1_0000, Pte::leaf(big2, 0));
    r.submit(3, |e| {
        e.fill(Target::Virtual(va), 4, 0x6464_0001).unwrap();
    });
    assert_eq!(r.run(), RunState::Idle);
    assert_eq!(r.bus.peek_u32(big), 0x6464_0001);

    // Software turns the region into a 4 KiB-page table (new table, level-1 entry without
    // TABLE_64K) whose entry for va + 64 KiB points elsewhere, but does not flush: the
    // page-walk cache still knows the 64 KiB table, so the device keeps using it.
    let small = r.page();
    let table = r.page();
    r.bus.poke(
        table + pte::index(va + 0x1_0000, 0) as u64 * 8,
        &Pte::leaf(small, 0).raw().to_le_bytes(),
    );
    let level1 = {
        let mut t = r.roots[&3];
        for level in (2..LEVELS).rev() {
            t = Pte(r.bus.peek_u64(t + pte::index(va, level) as u64 * 8)).addr();
        }
        t + pte::index(va, 1) as u64 * 8
    };
    r.bus.poke(level1, &Pte::table(table).raw().to_le_bytes());
    r.submit(3, |e| {
        e.fill(Target::Virtual(va + 0x1_0000), 4, 0x6464_0002)
            .unwrap();
    });
    assert_eq!(r.run(), RunState::Idle);
    assert_eq!(r.bus.peek_u32(big2), 0x6464_0002, "stale kind used");
    assert_eq!(r.bus.peek_u32(small), 0);

    // After FLUSH_TLB the walk reads the new level-1 entry and its 4 KiB entry.
    r.submit(3, |e| {
        e.flush_tlb(FlushScope::Asid(3)).unwrap();
        e.fill(Target::Virtual(va + 0x1_0000), 4, 0x6464_0003)
            .unwrap();
    });
    assert_eq!(r.run(), RunState::Idle);
    assert_eq!(
        r.bus.peek_u32(small),
        0x6464_0003,
        "new kind after the flush"
    );
    assert_eq!(r.bus.peek_u32(big2), 0x6464_0002);
}

#[test]
fn write_ptes_then_flush_tlb_maps_new_page() {
    let mut r = Rig::new();
    r.asid(0); // paging ASID (unused here) and a process ASID
    r.asid(3);
    let va = 0x8000_0000u64;
    let old = r.page();
    r.map(3, va, Pte::leaf(old, 0));
    let slot = r.leaf_slot(3, va); // logical address of the leaf entry, as BuildPagingBuffer knows it
    let new = r.page();
    let new2 = r.page();
    r.submit(3, |e| {
        e.fill(Target::Virtual(va), 4, 1).unwrap(); // caches the old translation
        e.write_ptes(
            Target::Logical(slot),
            &[Pte::leaf(new, 0).raw(), Pte::leaf(new2, 0).raw()],
        )
        .unwrap();
        e.flush_tlb(FlushScope::Range {
            asid: 3,
            va,
            size: 2 * PAGE_SIZE,
        })
        .unwrap();
        e.fill(Target::Virtual(va), 8, 2).unwrap();
        e.fill(Target::Virtual(va + PAGE_SIZE), 4, 3).unwrap();
    });
    assert_eq!(r.run(), RunState::Idle);
    assert_eq!(r.bus.peek_u64(slot), Pte::leaf(new, 0).raw());
    assert_eq!(r.bus.peek_u64(slot + 8), Pte::leaf(new2, 0).raw());
    assert_eq!(r.bus.peek_u32(old), 1);
    assert_eq!(r.bus.peek_u32(new), 2);
    assert_eq!(r.bus.peek_u32(new + 4), 2);
    assert_eq!(r.bus.peek_u32(new2), 3);
    let s = r.dev.stats();
    assert_eq!(s.ptes_written, 2);
    assert_eq!(
        s.mmu.flushes, 1,
        "one FLUSH_TLB; MMIO root writes are not counted"
    );
}

#[test]
fn stale_tlb_entry_is_used_until_flush() {
    let mut r = Rig::new();
    r.asid(4);
    let va = 0x2000_0000u64;
    let a = r.page();
    let b = r.page();
    r.map(4, va, Pte::leaf(a, 0));
    let slot = r.leaf_slot(4, va);
    r.submit(4, |e| {
        e.fill(Target::Virtual(va), 4, 0xAAAA_AAAA).unwrap();
        // Repoint the VA at page B without flushing.
        e.write_ptes(Target::Logical(slot), &[Pte::leaf(b, 0).raw()])
            .unwrap();
        e.fill(Target::Virtual(va + 4), 4, 0xBBBB_BBBB).unwrap();
    });
    assert_eq!(r.run(), RunState::Idle);
    assert_eq!(
        r.bus.peek_u64(slot),
        Pte::leaf(b, 0).raw(),
        "the PTE in memory says B"
    );
    assert_eq!(
        r.bus.peek_u32(a + 4),
        0xBBBB_BBBB,
        "…but the stale TLB entry still sent the write to A"
    );
    assert_eq!(r.bus.peek_u32(b + 4), 0, "B untouched before the flush");

    // A flush of an unrelated range or ASID does not help…
    r.submit(4, |e| {
        e.flush_tlb(FlushScope::Range {
            asid: 4,
            va: va + PAGE_SIZE,
            size: PAGE_SIZE,
        })
        .unwrap();
        e.flush_tlb(FlushScope::Asid(5)).unwrap();
        e.fill(Target::Virtual(va + 8), 4, 0xCCCC_CCCC).unwrap();
    });
    assert_eq!(r.run(), RunState::Idle);
    assert_eq!(r.bus.peek_u32(a + 8), 0xCCCC_CCCC);
    assert_eq!(r.bus.peek_u32(b + 8), 0);

    // …the right one does.
    r.submit(4, |e| {
        e.flush_tlb(FlushScope::Asid(4)).unwrap();
        e.fill(Target::Virtual(va + 12), 4, 0xDDDD_DDDD).unwrap();
    });
    assert_eq!(r.run(), RunState::Idle);
    assert_eq!(r.bus.peek_u32(b + 12), 0xDDDD_DDDD);
    assert_eq!(r.bus.peek_u32(a + 12), 0);
    // The same is true of a CPU-side PTE change (no command involved): invalidation without a
    // flush keeps the page reachable.
    r.map(4, va, Pte::INVALID);
    r.submit(4, |e| {
        e.fill(Target::Virtual(va + 16), 4, 0xEEEE_EEEE).unwrap();
    });
    assert_eq!(r.run(), RunState::Idle);
    assert_eq!(r.bus.peek_u32(b + 16), 0xEEEE_EEEE);
    r.submit(4, |e| {
        e.flush_tlb(FlushScope::All).unwrap();
        e.fill(Target::Virtual(va + 20), 4, 0xFFFF_FFFF).unwrap();
    });
    assert_eq!(r.run(), RunState::Halted);
    assert_eq!(r.dev.fault().unwrap().kind, FaultKind::PteInvalid);
    assert_eq!(r.bus.peek_u32(b + 20), 0);
}

#[test]
fn invalid_pte_faults_halts_ring_and_interrupts() {
    let mut r = Rig::new();
    r.asid(6);
    r.dev.mmio_write(INT_ENABLE, INT_FAULT);
    let va = 0x3_0000_0000u64;
    let ok = r.page();
    r.map(6, va, Pte::leaf(ok, 0));
    // va + 4 KiB has a leaf table but an invalid entry; va + 2 MiB has no level-1 entry.
    let (buf, len) = r.buffer(|e| {
        e.fill(Target::Virtual(va), 4, 0x1111_1111).unwrap();
        e.fill(Target::Virtual(va + PAGE_SIZE), 16, 0x2222_2222)
            .unwrap();
        e.fill(Target::Virtual(va), 4, 0x3333_3333).unwrap();
    });
    r.push(RingEntry::exec(buf, len, 6));
    r.doorbell();
    let writes_before = r.bus.data_writes();
    let o = r.dev.run(&mut r.bus, 100);
    assert_eq!((o.state, o.commands), (RunState::Halted, 1));
    assert_eq!(
        r.bus.data_writes(),
        writes_before + 1,
        "only the first FILL wrote"
    );
    assert_eq!(
        r.bus.peek_u32(ok),
        0x1111_1111,
        "the command after the fault did not run"
    );
    let (st, addr, off) = r.fault_regs();
    assert_eq!(fault_type(st), Some(FaultKind::PteInvalid));
    assert_eq!(fault_source(st), Some(DmaSource::Write));
    assert_ne!(st & FAULT_VALID, 0);
    assert_ne!(st & FAULT_VIRTUAL, 0);
    assert_ne!(st & FAULT_WRITE, 0);
    assert_eq!((st >> FAULT_ASID_SHIFT) & FAULT_ASID_MASK, 6);
    assert_eq!((st >> FAULT_LEVEL_SHIFT) & FAULT_LEVEL_MASK, 0);
    assert_eq!(addr, va + PAGE_SIZE);
    assert_eq!(off, 24, "second command");
    assert_eq!(
        r.dev.mmio_read(RING_HEAD),
        0,
        "head stays at the faulting entry"
    );
    let status = r.dev.mmio_read(STATUS);
    assert_ne!(status & STATUS_HALTED, 0);
    assert_eq!(status & STATUS_BUSY, 0);
    assert_eq!(r.dev.mmio_read(INT_STATUS), INT_FAULT);
    assert!(r.dev.irq_pending());
    // Acknowledging the interrupt does not restart the ring; more doorbells do nothing.
    r.dev.mmio_write(INT_ACK, INT_FAULT);
    assert!(!r.dev.irq_pending());
    r.doorbell();
    assert_eq!(r.dev.run(&mut r.bus, 100).state, RunState::Halted);
    assert_eq!(r.bus.peek_u32(ok), 0x1111_1111);
    assert_eq!(r.dev.stats().faults, 1);

    // A walk that stops higher up reports the level.
    r.start(); // reset + re-enable
    r.asid(6);
    r.submit(6, |e| {
        e.fill(Target::Virtual(va + (2 << 20)), 4, 0).unwrap();
    });
    assert_eq!(r.run(), RunState::Halted);
    let (st, _, _) = r.fault_regs();
    assert_eq!(
        (st >> FAULT_LEVEL_SHIFT) & FAULT_LEVEL_MASK,
        3,
        "fresh root: its entry is invalid"
    );
    assert_eq!(r.dev.mmio_read(INT_STATUS), INT_FAULT);
    assert!(!r.dev.irq_pending(), "reset cleared INT_ENABLE");
}

#[test]
fn root_range_and_va_range_faults() {
    let mut r = Rig::new();
    r.asid(7);
    r.dev.mmio_write(asid_root_entries(7), 2); // only VA < 1 TiB is translatable
    let (b, l) = r.buffer(|e| {
        e.fill(Target::Virtual(2 << 39), 4, 0).unwrap();
    });
    r.push(RingEntry::exec(b, l, 7));
    r.doorbell();
    assert_eq!(r.run(), RunState::Halted);
    assert_eq!(fault_type(r.fault_regs().0), Some(FaultKind::RootRange));

    r.start();
    let (b, l) = r.buffer(|e| {
        e.fill(Target::Virtual(1 << 48), 4, 0).unwrap();
    });
    r.push(RingEntry::exec(b, l, 9));
    r.doorbell();
    assert_eq!(r.run(), RunState::Halted);
    assert_eq!(fault_type(r.fault_regs().0), Some(FaultKind::VaRange));

    // An ASID without a root faults too (all ASIDs are cleared by reset).
    r.start();
    r.submit(9, |e| {
        e.fill(Target::Virtual(0x1000), 4, 0).unwrap();
    });
    assert_eq!(r.run(), RunState::Halted);
    assert_eq!(fault_type(r.fault_regs().0), Some(FaultKind::RootRange));
}

#[test]
fn iommu_faults_are_reported_and_write_nothing() {
    // 1. A logical FILL into an unmapped logical page.
    let mut r = Rig::new();
    r.dev.mmio_write(INT_ENABLE, INT_MASK);
    let hole = 0xDE_AD00_0000u64; // below the 40-bit DMA limit: an IOMMU fault, not a bus error
    r.submit(0, |e| {
        e.fill(Target::Logical(hole + 8), 64, 0x5A5A_5A5A).unwrap();
    });
    assert_eq!(r.run(), RunState::Halted);
    let (st, addr, off) = r.fault_regs();
    assert_eq!(fault_type(st), Some(FaultKind::Iommu));
    assert_eq!(fault_source(st), Some(DmaSource::Write));
    assert_eq!(
        (st >> FAULT_IOMMU_SHIFT) & FAULT_IOMMU_MASK,
        1,
        "not mapped"
    );
    assert_eq!(st & FAULT_VIRTUAL, 0);
    assert_eq!(addr, hole + 8);
    assert_eq!(off, 0);
    assert!(r.dev.irq_pending());
    assert_eq!(r.bus.data_writes(), 0);

    // 2. A valid PTE that points at a logical page the IOMMU does not map (e.g. after unmap).
    let mut r = Rig::new();
    r.asid(1);
    let src = r.page();
    r.bus.poke(src, &[7; 16]);
    r.map(1, 0x10_0000, Pte::leaf(src, 0));
    r.map(1, 0x20_0000, Pte::leaf(hole, 0));
    r.submit(1, |e| {
        e.copy(Target::Virtual(0x20_0000), Target::Virtual(0x10_0000), 16)
            .unwrap();
    });
    assert_eq!(r.run(), RunState::Halted);
    let (st, addr, _) = r.fault_regs();
    assert_eq!(fault_type(st), Some(FaultKind::Iommu));
    assert_ne!(st & FAULT_WRITE, 0);
    assert_eq!(addr, hole);
    assert_eq!(r.bus.data_writes(), 0);

    // 3. A page table in an IOMMU-unmapped page: the walker reports it with its level.
    let mut r = Rig::new();
    let root = r.asid(2);
    r.bus.poke(root, &Pte::table(hole).raw().to_le_bytes());
    r.submit(2, |e| {
        e.fill(Target::Virtual(0x1000), 4, 0).unwrap();
    });
    assert_eq!(r.run(), RunState::Halted);
    let (st, addr, _) = r.fault_regs();
    assert_eq!(fault_type(st), Some(FaultKind::Iommu));
    assert_eq!(fault_source(st), Some(DmaSource::PageWalk));
    assert_eq!((st >> FAULT_LEVEL_SHIFT) & FAULT_LEVEL_MASK, 2);
    assert_eq!(addr, hole);

    // 4. A write to a page the IOMMU maps read-only.
    let mut r = Rig::new();
    let ro = 0x9_0000_0000u64;
    r.bus.map(ro, true);
    r.submit(0, |e| {
        e.write_data(Target::Logical(ro), &[1]).unwrap();
    });
    assert_eq!(r.run(), RunState::Halted);
    let (st, _, _) = r.fault_regs();
    assert_eq!((st >> FAULT_IOMMU_SHIFT) & FAULT_IOMMU_MASK, 2, "read-only");
    assert_eq!(r.bus.peek_u32(ro), 0);

    // 5. A ring in unmapped memory.
    let mut d = Device::new();
    let mut bus = MemBus::default();
    d.mmio_write(RING_BASE_LO, 0x4000);
    d.mmio_write(RING_SIZE, 128);
    d.mmio_write(CONTROL, CONTROL_RING_ENABLE);
    d.mmio_write(RING_TAIL, 32);
    d.mmio_write(DOORBELL, 1);
    assert_eq!(d.run(&mut bus, 10).state, RunState::Halted);
    let f = d.fault().unwrap();
    assert_eq!(
        (f.kind, f.source, f.address),
        (FaultKind::Iommu, DmaSource::RingFetch, 0x4000)
    );
}

#[test]
fn read_only_pte_rejects_writes_but_allows_reads() {
    let mut r = Rig::new();
    r.asid(5);
    let ro = r.page();
    let rw = r.page();
    r.bus.poke(ro, &0xC0FF_EE00u32.to_le_bytes());
    r.map(5, 0x5000, Pte::leaf(ro, pte::READ_ONLY));
    r.map(5, 0x6000, Pte::leaf(rw, 0));
    r.submit(5, |e| {
        e.copy(Target::Virtual(0x6000), Target::Virtual(0x5000), 4)
            .unwrap();
        e.copy(Target::Virtual(0x5000), Target::Virtual(0x6000), 4)
            .unwrap();
    });
    assert_eq!(r.run(), RunState::Halted);
    assert_eq!(
        r.bus.peek_u32(rw),
        0xC0FF_EE00,
        "read through the RO page worked"
    );
    let (st, addr, off) = r.fault_regs();
    assert_eq!(fault_type(st), Some(FaultKind::WriteProtect));
    assert_ne!(st & FAULT_WRITE, 0);
    assert_eq!(addr, 0x5000);
    assert_eq!(off, 28);
    assert_eq!(
        r.bus.data_writes(),
        1,
        "the faulting write never reached the bus"
    );
    // The translation is cached, and the cached copy enforces READ_ONLY as well.
    r.start();
    r.asid(5);
    r.map(5, 0x5000, Pte::leaf(ro, pte::READ_ONLY));
    r.map(5, 0x6000, Pte::leaf(rw, 0));
    let hits_before = r.dev.stats().mmu.tlb_hits;
    r.submit(5, |e| {
        e.copy(Target::Virtual(0x6000), Target::Virtual(0x5000), 4)
            .unwrap();
        e.fill(Target::Virtual(0x5000), 4, 0).unwrap();
    });
    assert_eq!(r.run(), RunState::Halted);
    assert_eq!(r.dev.fault().unwrap().kind, FaultKind::WriteProtect);
    assert_eq!(
        r.dev.stats().mmu.tlb_hits - hits_before,
        1,
        "the FILL hit the cached RO entry"
    );
    assert_eq!(r.bus.peek_u32(ro), 0xC0FF_EE00);
}

#[test]
fn zero_pte_reads_zero_and_drops_writes() {
    let mut r = Rig::new();
    r.asid(1);
    let dst = r.page();
    let backing = r.page();
    r.bus.poke(dst, &[0xFF; 8]);
    r.bus.poke(backing, &[0x77; 8]);
    r.map(1, 0x1000, Pte::leaf(backing, pte::ZERO));
    r.submit(1, |e| {
        e.copy(Target::Logical(dst), Target::Virtual(0x1000), 8)
            .unwrap();
        e.fill(Target::Virtual(0x1000), 8, 0x1234_5678).unwrap();
    });
    assert_eq!(r.run(), RunState::Idle);
    assert_eq!(r.bus.peek(dst, 8), vec![0; 8]);
    assert_eq!(
        r.bus.peek(backing, 8),
        vec![0x77; 8],
        "backing page never touched"
    );
}

#[test]
fn fence_write_back_interrupt_and_acknowledge() {
    let mut r = Rig::new();
    let fence_page = r.page();
    let fa = fence_page + 0x40;
    r.dev.mmio_write(FENCE_ADDR_LO, fa as u32);
    r.dev.mmio_write(FENCE_ADDR_HI, (fa >> 32) as u32);
    r.dev
        .mmio_write(CONTROL, CONTROL_RING_ENABLE | CONTROL_FENCE_WB_ENABLE);
    r.dev.mmio_write(INT_ENABLE, INT_FENCE);
    let v1 = 0x0123_4567_89AB_CDEFu64;
    r.submit(0, |e| {
        e.fence(v1 - 1, false).unwrap();
    });
    assert_eq!(r.run(), RunState::Idle);
    assert_eq!(r.bus.peek_u64(fa), v1 - 1);
    assert_eq!(r.dev.mmio_read(INT_STATUS), 0, "no IRQ flag, no interrupt");
    assert!(!r.dev.irq_pending());
    r.submit(0, |e| {
        e.fence(v1, true).unwrap();
    });
    assert_eq!(r.run(), RunState::Idle);
    assert_eq!(r.bus.peek_u64(fa), v1);
    assert_eq!(r.dev.mmio_read(FENCE_VALUE_LO), v1 as u32);
    assert_eq!(r.dev.mmio_read(FENCE_VALUE_HI), (v1 >> 32) as u32);
    assert_eq!(r.dev.mmio_read(INT_STATUS), INT_FENCE);
    assert!(r.dev.irq_pending());
    // Masking hides the line but keeps the status; INT_ACK is write-1-to-clear.
    r.dev.mmio_write(INT_ENABLE, 0);
    assert!(!r.dev.irq_pending());
    r.dev.mmio_write(INT_ENABLE, INT_FENCE);
    r.dev.mmio_write(INT_ACK, INT_FAULT);
    assert!(
        r.dev.irq_pending(),
        "acking another bit does not clear FENCE"
    );
    r.dev.mmio_write(INT_STATUS, 0);
    assert!(r.dev.irq_pending(), "INT_STATUS is read-only");
    r.dev.mmio_write(INT_ACK, INT_FENCE);
    assert!(!r.dev.irq_pending());
    assert_eq!(r.dev.mmio_read(INT_STATUS), 0);

    // A ring-entry fence runs after the buffer's commands.
    let data = r.page();
    let (b, l) = r.buffer(|e| {
        e.write_data(Target::Logical(data), &[42]).unwrap();
    });
    r.push(RingEntry {
        privileged: true,
        fence: true,
        fence_irq: true,
        fence_value: v1 + 1,
        ..RingEntry::exec(b, l, 0)
    });
    r.doorbell();
    assert_eq!(r.run(), RunState::Idle);
    let order: Vec<_> = r.bus.log.iter().filter(|x| x.1).map(|x| x.0).collect();
    assert_eq!(
        order[order.len() - 2..],
        [DmaSource::Write, DmaSource::FenceWriteback]
    );
    assert_eq!(r.dev.fence_value(), v1 + 1);
    assert!(r.dev.irq_pending());
    assert_eq!(r.dev.stats().fences, 3);

    // Without CONTROL_FENCE_WB_ENABLE only the register moves.
    r.dev.mmio_write(CONTROL, CONTROL_RING_ENABLE);
    r.submit(0, |e| {
        e.fence(v1 + 2, false).unwrap();
    });
    assert_eq!(r.run(), RunState::Idle);
    assert_eq!(r.dev.fence_value(), v1 + 2);
    assert_eq!(r.bus.peek_u64(fa), v1 + 1);

    // A fence write-back into an unmapped page faults and leaves FENCE_VALUE alone.
    r.dev
        .mmio_write(CONTROL, CONTROL_RING_ENABLE | CONTROL_FENCE_WB_ENABLE);
    r.dev.mmio_write(FENCE_ADDR_HI, 0xDEAD);
    r.submit(0, |e| {
        e.fence(v1 + 3, true).unwrap();
    });
    assert_eq!(r.run(), RunState::Halted);
    assert_eq!(r.dev.fault().unwrap().source, DmaSource::FenceWriteback);
    assert_eq!(r.dev.fence_value(), v1 + 2);
}

#[test]
fn ring_wraps_around() {
    let mut r = Rig::with_ring(128); // four entries, at most three outstanding
    let out = r.page();
    let mut expected_head = 0u32;
    let mut n = 0u32;
    for batch in [3u32, 2, 3, 1, 3] {
        for _ in 0..batch {
            let i = n;
            let (b, l) = r.buffer(|e| {
                e.write_data(Target::Logical(out + 4 * i as u64), &[0x100 + i])
                    .unwrap();
            });
            r.push(RingEntry {
                privileged: true,
                ..RingEntry::exec(b, l, 0)
            });
            n += 1;
        }
        r.doorbell();
        let o = r.dev.run(&mut r.bus, 100);
        assert_eq!((o.state, o.commands), (RunState::Idle, batch));
        expected_head = (expected_head + 32 * batch) % 128;
        assert_eq!(r.dev.mmio_read(RING_HEAD), expected_head);
        assert_eq!(r.dev.mmio_read(RING_HEAD), r.dev.mmio_read(RING_TAIL));
    }
    for i in 0..n {
        assert_eq!(r.bus.peek_u32(out + 4 * i as u64), 0x100 + i);
    }
    assert_eq!(r.dev.stats().ring_entries, n as u64);
    let fetches: Vec<u64> = r
        .bus
        .log
        .iter()
        .filter(|x| x.0 == DmaSource::RingFetch)
        .map(|x| x.2 - r.ring)
        .collect();
    assert_eq!(
        fetches[..6],
        [0, 32, 64, 96, 0, 32],
        "entries are fetched in ring order across the wrap"
    );
}

#[test]
fn budget_bounds_work_and_head_moves_per_entry() {
    let mut r = Rig::new();
    let out = r.page();
    r.submit(0, |e| {
        for i in 0..5u32 {
            e.write_data(Target::Logical(out + 4 * i as u64), &[i + 1])
                .unwrap();
        }
    });
    let o = r.dev.run(&mut r.bus, 2);
    assert_eq!((o.state, o.commands), (RunState::BudgetExhausted, 2));
    assert_eq!(r.dev.mmio_read(RING_HEAD), 0, "entry still in progress");
    assert_ne!(r.dev.mmio_read(STATUS) & STATUS_BUSY, 0);
    assert_eq!(r.bus.peek_u32(out + 4), 2);
    assert_eq!(r.bus.peek_u32(out + 8), 0);
    assert_eq!(r.dev.run(&mut r.bus, 0).state, RunState::BudgetExhausted);
    let o = r.dev.run(&mut r.bus, 3);
    assert_eq!(o.commands, 3);
    // Budget ran out exactly on the last command; the entry retires on the next call.
    let o = r.dev.run(&mut r.bus, 0);
    assert_eq!(o.state, RunState::Idle);
    assert_eq!(r.dev.mmio_read(RING_HEAD), 32);
    assert_eq!(r.bus.peek_u32(out + 16), 5);
}

#[test]
fn malformed_commands_and_entries_fault() {
    // Unknown opcode at offset 8.
    let mut r = Rig::new();
    let (b, _) = r.buffer(|e| {
        e.nop(2).unwrap();
    });
    r.bus.poke(b + 8, &0x0001_00EEu32.to_le_bytes());
    r.push(RingEntry {
        privileged: true,
        ..RingEntry::exec(b, 12, 0)
    });
    r.doorbell();
    assert_eq!(r.run(), RunState::Halted);
    let (st, addr, off) = r.fault_regs();
    assert_eq!(fault_type(st), Some(FaultKind::CmdError));
    assert_eq!(fault_source(st), Some(DmaSource::CommandFetch));
    assert_eq!((addr, off), (b + 8, 8));

    // A command running past the end of its buffer.
    let mut r = Rig::new();
    let (b, l) = r.buffer(|e| {
        e.fill(Target::Logical(0x1000), 4, 0).unwrap();
    });
    r.push(RingEntry {
        privileged: true,
        ..RingEntry::exec(b, l - 4, 0)
    });
    r.doorbell();
    assert_eq!(r.run(), RunState::Halted);
    assert_eq!(r.dev.fault().unwrap().kind, FaultKind::CmdError);
    assert_eq!(r.bus.data_writes(), 0);

    // A bad ring entry (reserved bits) is a RING_ERROR at the entry's address.
    let mut r = Rig::new();
    let mut raw = RingEntry::exec(0x1000, 4, 0).encode();
    raw[3] = 0x80;
    let ring = r.ring;
    r.bus.poke(ring, &raw);
    r.dev.mmio_write(RING_TAIL, 32);
    r.doorbell();
    assert_eq!(r.run(), RunState::Halted);
    let f = r.dev.fault().unwrap();
    assert_eq!(
        (f.kind, f.address, f.cmd_offset),
        (FaultKind::RingError, ring, None)
    );
    assert_eq!(r.dev.mmio_read(FAULT_CMD_OFFSET), FAULT_NO_CMD);

    // A published tail that is not an entry offset.
    let mut r = Rig::new();
    r.dev.mmio_write(RING_TAIL, 40);
    r.doorbell();
    assert_eq!(r.run(), RunState::Halted);
    assert_eq!(r.dev.fault().unwrap().kind, FaultKind::RingError);
}

#[test]
fn unprivileged_buffers_are_confined_to_their_address_space() {
    let mut r = Rig::new();
    r.asid(8);
    let target = r.page();
    let mine = r.page();
    r.map(8, 0x1000, Pte::leaf(mine, 0));
    // Virtual-only commands are fine; the buffer itself may live in the ASID's VA space.
    let (b, l) = r.buffer(|e| {
        e.fill(Target::Virtual(0x1000), 8, 0x0808_0808).unwrap();
        e.nop(3).unwrap();
    });
    r.map(8, 0x40_0000, Pte::leaf(b, pte::READ_ONLY));
    r.push(RingEntry {
        buf_virtual: true,
        ..RingEntry::exec(0x40_0000, l, 8)
    });
    r.doorbell();
    assert_eq!(r.run(), RunState::Idle);
    assert_eq!(r.bus.peek_u32(mine + 4), 0x0808_0808);
    assert!(r
        .bus
        .log
        .iter()
        .any(|x| x.0 == DmaSource::CommandFetch && x.2 == b));

    for (i, bad) in [
        |e: &mut Encoder| e.fill(Target::Logical(0), 4, 0),
        |e: &mut Encoder| e.copy(Target::Virtual(0x1000), Target::Logical(0), 4),
        |e: &mut Encoder| e.write_ptes(Target::Virtual(0x1000), &[0]),
        |e: &mut Encoder| e.flush_tlb(FlushScope::All),
        |e: &mut Encoder| e.set_root(0, 0, 0),
        |e: &mut Encoder| e.fence(1, true),
    ]
    .into_iter()
    .enumerate()
    {
        let mut r2 = Rig::new();
        r2.asid(8);
        let t2 = r2.page();
        r2.map(8, 0x1000, Pte::leaf(t2, 0));
        let (b, l) = r2.buffer(|e| {
            bad(e).unwrap();
        });
        r2.push(RingEntry::exec(b, l, 8));
        r2.doorbell();
        assert_eq!(r2.run(), RunState::Halted, "case {i}");
        assert_eq!(
            r2.dev.fault().unwrap().kind,
            FaultKind::Privilege,
            "case {i}"
        );
        assert_eq!(r2.bus.data_writes(), 0);
        assert_eq!(r2.dev.fence_value(), 0);
    }
    let _ = target;
}

#[test]
fn set_root_command_programs_registers_and_flushes() {
    let mut r = Rig::new();
    let root_a = r.asid(10);
    let pa = r.page();
    r.map(10, 0x1000, Pte::leaf(pa, 0));
    // A second root for the same ASID with a different mapping.
    let root_b = r.page();
    r.roots.insert(11, root_b);
    let pb = r.page();
    r.map(11, 0x1000, Pte::leaf(pb, 0));
    r.submit(10, |e| {
        e.fill(Target::Virtual(0x1000), 4, 0xA).unwrap();
        e.set_root(10, root_b, 1).unwrap();
        e.fill(Target::Virtual(0x1000), 4, 0xB).unwrap();
    });
    assert_eq!(r.run(), RunState::Idle);
    assert_eq!(r.bus.peek_u32(pa), 0xA);
    assert_eq!(
        r.bus.peek_u32(pb),
        0xB,
        "SET_ROOT dropped the cached translation"
    );
    assert_eq!(r.dev.mmio_read(asid_root_lo(10)), root_b as u32);
    assert_eq!(r.dev.mmio_read(asid_root_hi(10)), (root_b >> 32) as u32);
    assert_eq!(r.dev.mmio_read(asid_root_entries(10)), 1);
    let _ = root_a;
}

#[test]
fn disabling_the_ring_stops_work() {
    let mut r = Rig::new();
    let out = r.page();
    r.submit(0, |e| {
        e.write_data(Target::Logical(out), &[1]).unwrap();
    });
    r.dev.mmio_write(CONTROL, 0);
    assert_eq!(r.run(), RunState::Disabled);
    assert_eq!(r.bus.peek_u32(out), 0);
    r.dev.mmio_write(CONTROL, CONTROL_RING_ENABLE);
    assert_eq!(r.dev.mmio_read(RING_TAIL), 0, "enable zeroes head and tail");
    assert_eq!(r.run(), RunState::Idle);
}

#[test]
fn long_fill_resumes_across_runs() {
    let mut r = Rig::new();
    let base = r.page();
    for _ in 1..10 {
        r.page();
    }
    r.submit(0, |e| {
        e.fill(Target::Logical(base), 10 * PAGE_SIZE, 0x5151_5151)
            .unwrap();
        e.write_data(Target::Logical(base), &[7]).unwrap();
    });
    let o = r.dev.run(&mut r.bus, 3);
    assert_eq!(
        (o.state, o.commands, o.units),
        (RunState::BudgetExhausted, 0, 3)
    );
    assert_eq!(r.dev.stats().bytes_filled, 3 * PAGE_SIZE);
    assert_eq!(r.bus.peek_u32(base + 3 * PAGE_SIZE - 4), 0x5151_5151);
    assert_eq!(
        r.bus.peek_u32(base + 3 * PAGE_SIZE),
        0,
        "stopped at the chunk boundary"
    );
    let o = r.dev.run(&mut r.bus, 100);
    assert_eq!((o.state, o.commands, o.units), (RunState::Idle, 2, 7 + 1));
    assert_eq!(
        r.dev.stats().bytes_filled,
        10 * PAGE_SIZE,
        "no chunk done twice"
    );
    assert_eq!(r.bus.peek_u32(base + 10 * PAGE_SIZE - 4), 0x5151_5151);
    assert_eq!(
        r.bus.peek_u32(base),
        7,
        "the next command ran after the FILL finished"
    );
    assert_eq!(r.dev.stats().commands, 2);
}

#[test]
fn the_device_has_40_address_lines_an_access_at_or_above_the_limit_is_a_bus_error() {
    use rgpu_hw::bus::AddressLimit;
    assert_eq!((DMA_ADDRESS_BITS, DMA_ADDRESS_LIMIT), (40, 1 << 40));
    let mut mem = MemBus {
        pages: BTreeMap::new(),
        log: Vec::new(),
    };
    let below = DMA_ADDRESS_LIMIT - PAGE_SIZE;
    mem.map(below, false);
    // The page at the limit is mapped in the IOMMU, yet the device cannot address it.
    mem.map(DMA_ADDRESS_LIMIT, false);
    let mut bus = AddressLimit::new(&mut mem, DMA_ADDRESS_LIMIT);
    bus.write(below + 4092, &[1, 2, 3, 4], DmaSource::Write)
        .unwrap();
    let fault = bus
        .write(DMA_ADDRESS_LIMIT, &[9], DmaSource::Write)
        .unwrap_err();
    assert_eq!(
        fault,
        DmaFault {
            logical_addr: DMA_ADDRESS_LIMIT,
            kind: DmaFaultKind::BusError
        }
    );
    let mut b = [0u8; 4];
    assert!(bus
        .read(DMA_ADDRESS_LIMIT + 8, &mut b, DmaSource::Read)
        .is_err());
    // A copy whose destination is out of reach faults on the write side and moves nothing.
    let mut scratch = [0u8; 4096];
    let (_, write) = bus
        .copy(DMA_ADDRESS_LIMIT, below + 4092, 4, &mut scratch)
        .unwrap_err();
    assert!(write);
    // Pieces below the limit are copied before the one that faults.
    let (done, _, write) = bus
        .copy_pieces(below + 4094, below, 4, &mut scratch)
        .unwrap_err();
    assert_eq!((done, write), (2, true));
    assert_eq!(
        mem.peek(DMA_ADDRESS_LIMIT, 1),
        [0],
        "nothing written above the limit"
    );
    assert_eq!(mem.peek(below + 4094, 2), [0, 0]);
}

#[test]
fn a_device_initialized_in_place_over_garbage_is_the_power_on_device() {
    let mut slot = Box::new(std::mem::MaybeUninit::<Device>::uninit());
    // SAFETY: filling an uninitialized slot with bytes (any bytes are fine for MaybeUninit).
    unsafe { slot.as_mut_ptr().write_bytes(0xA5, 1) };
    let d = Device::init_in_place(&mut slot);
    assert_eq!(format!("{d:?}"), format!("{:?}", Device::new()));
    assert_eq!(d.mmio_read(ID), ID_VALUE);
    assert_eq!(d.mmio_read(STATUS), STATUS_READY);
}
