//! The executable device model: MMIO registers and the command processor.
//!
//! The model is a plain state machine. The host calls [`Device::mmio_read`] /
//! [`Device::mmio_write`] for register accesses and [`Device::run`] to let the device make
//! progress; nothing happens between calls, so every run is reproducible. All memory traffic
//! goes through the [`DmaBus`] passed to `run`.

use core::mem::MaybeUninit;

use crate::bus::{DmaBus, DmaFault, DmaFaultKind, DmaSource};
use crate::cmd::{self, Command, FlushScope, Header, Target, MAX_CMD_DWORDS, OP_NOP};
use crate::mmu::{Mmu, MmuFault, MmuStats, Root};
use crate::pte::{ENTRIES_PER_TABLE, PAGE_SIZE};
use crate::regs::*;
use crate::ring::{RingEntry, ENTRY_SIZE};

/// Fault types (`FAULT_STATUS[7:0]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FaultKind {
    /// A page-table entry on the walk is not valid (GPU page fault).
    PteInvalid = 1,
    /// A write hit a page whose leaf entry is READ_ONLY.
    WriteProtect = 2,
    /// The ASID has no root, or the root index ≥ its root entry count.
    RootRange = 3,
    /// A virtual address ≥ 2^48.
    VaRange = 4,
    /// The bus (IOMMU) refused an access; memory was not touched.
    Iommu = 5,
    /// A malformed command (unknown opcode, bad length/flags, misaligned operand, overrun).
    CmdError = 6,
    /// A malformed ring entry, or a published tail that is not a valid ring offset.
    RingError = 7,
    /// A privileged command or logical operand in a non-privileged ring entry.
    Privilege = 8,
}

impl FaultKind {
    /// Decodes `FAULT_STATUS[7:0]`.
    #[must_use]
    pub const fn from_raw(v: u32) -> Option<FaultKind> {
        Some(match v {
            1 => FaultKind::PteInvalid,
            2 => FaultKind::WriteProtect,
            3 => FaultKind::RootRange,
            4 => FaultKind::VaRange,
            5 => FaultKind::Iommu,
            6 => FaultKind::CmdError,
            7 => FaultKind::RingError,
            8 => FaultKind::Privilege,
            _ => return None,
        })
    }
}

/// A latched fault, as reflected by the `FAULT_*` registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    /// Type.
    pub kind: FaultKind,
    /// Which unit's access faulted.
    pub source: DmaSource,
    /// ASID of the running entry (meaningful when `is_virtual`).
    pub asid: u8,
    /// Faulting address: a VA in `asid` if `is_virtual`, else a logical address.
    pub address: u64,
    /// `address` is a GPU virtual address.
    pub is_virtual: bool,
    /// The access was a write.
    pub write: bool,
    /// Page-table level for walk faults (`PteInvalid`, or `Iommu` with source `PageWalk`).
    pub level: u8,
    /// For `Iommu`: the bus's reason.
    pub iommu: Option<DmaFaultKind>,
    /// Byte offset of the faulting command in its buffer, if a command was running.
    pub cmd_offset: Option<u32>,
}

impl Fault {
    /// The `FAULT_STATUS` word.
    #[must_use]
    pub const fn status_word(&self) -> u32 {
        let iommu = match self.iommu {
            None => 0,
            Some(DmaFaultKind::NotMapped) => 1,
            Some(DmaFaultKind::ReadOnly) => 2,
            Some(DmaFaultKind::BusError) => 3,
        };
        FAULT_VALID
            | self.kind as u32
            | ((self.source as u32 & FAULT_SOURCE_MASK) << FAULT_SOURCE_SHIFT)
            | ((self.level as u32 & FAULT_LEVEL_MASK) << FAULT_LEVEL_SHIFT)
            | ((self.asid as u32 & FAULT_ASID_MASK) << FAULT_ASID_SHIFT)
            | if self.is_virtual { FAULT_VIRTUAL } else { 0 }
            | if self.write { FAULT_WRITE } else { 0 }
            | (iommu << FAULT_IOMMU_SHIFT)
    }
}

/// Counters for benchmarks and reports. Not architectural: they survive reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Stats {
    /// Commands executed (NOPs included).
    pub commands: u64,
    /// Ring entries retired.
    pub ring_entries: u64,
    /// Doorbell writes.
    pub doorbells: u64,
    /// Bytes written by FILL.
    pub bytes_filled: u64,
    /// Bytes copied by COPY.
    pub bytes_copied: u64,
    /// Bytes written by WRITE_DATA.
    pub bytes_written: u64,
    /// Entries written by WRITE_PTES.
    pub ptes_written: u64,
    /// Fences signalled (commands and ring-entry fences).
    pub fences: u64,
    /// Interrupt causes latched (fence + fault).
    pub interrupts: u64,
    /// Faults latched.
    pub faults: u64,
    /// Resets.
    pub resets: u64,
    /// MMU counters (TLB hits/misses, PTE reads, flushes).
    pub mmu: MmuStats,
}

/// Why [`Device::run`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunState {
    /// The ring is empty (head == published tail) and no entry is in progress.
    Idle,
    /// `budget` commands were executed; more work is pending.
    BudgetExhausted,
    /// The ring is halted on a fault (now or earlier) until reset.
    Halted,
    /// The ring is not enabled.
    Disabled,
}

/// Result of [`Device::run`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunOutcome {
    /// Commands completed during this call.
    pub commands: u32,
    /// Work units spent (≤ the budget).
    pub units: u32,
    /// Why the call returned.
    pub state: RunState,
}

/// The entry being executed.
#[derive(Clone, Copy, Debug)]
struct Current {
    entry: RingEntry,
    /// Byte offset of the next command in the buffer.
    offset: u32,
    /// Bytes of the current FILL/COPY already done (0 when not inside one).
    progress: u64,
}

/// How far one step of the command processor got.
enum Step {
    /// The command completed; it was this many bytes long.
    Done(u32),
    /// The budget ran out inside a FILL/COPY after this many bytes.
    Partial(u64),
}

/// Size of the internal data-move buffer (one page).
const CHUNK: usize = PAGE_SIZE as usize;

/// Architectural state plus counters (everything but the scratch buffers).
#[derive(Clone, Debug)]
struct State {
    control: u32,
    scratch: u32,
    ring_base: u64,
    ring_size: u32,
    head: u32,
    tail: u32,
    published_tail: u32,
    ring_enabled: bool,
    fence_addr: u64,
    fence_value: u64,
    int_status: u32,
    int_enable: u32,
    fault: Option<Fault>,
    current: Option<Current>,
    mmu: Mmu,
    stats: Stats,
}

impl State {
    fn new() -> State {
        State {
            control: 0,
            scratch: 0,
            ring_base: 0,
            ring_size: 0,
            head: 0,
            tail: 0,
            published_tail: 0,
            ring_enabled: false,
            fence_addr: 0,
            fence_value: 0,
            int_status: 0,
            int_enable: 0,
            fault: None,
            current: None,
            mmu: Mmu::default(),
            stats: Stats::default(),
        }
    }
}

/// The rgpu device model.
#[derive(Clone, Debug)]
pub struct Device {
    st: State,
    cmd_buf: [u8; MAX_CMD_DWORDS * 4],
    data_buf: [u8; CHUNK],
}

impl Default for Device {
    fn default() -> Self {
        Device::new()
    }
}

fn set_lo(v: u64, lo: u32) -> u64 {
    (v & 0xFFFF_FFFF_0000_0000) | lo as u64
}
fn set_hi(v: u64, hi: u32) -> u64 {
    (v & 0xFFFF_FFFF) | ((hi as u64) << 32)
}

impl Device {
    /// A device in its power-on state (identical to the post-reset state).
    #[must_use]
    pub fn new() -> Device {
        Device {
            st: State::new(),
            cmd_buf: [0; MAX_CMD_DWORDS * 4],
            data_buf: [0; CHUNK],
        }
    }

    /// Initializes `slot` in place to the power-on state ([`Device::new`]) and returns it: for
    /// a driver that cannot build the ~14 KiB value on its kernel stack and move it. Only the
    /// register state (about 1.5 KiB) is built on the stack; the command and data buffers are
    /// zeroed where they lie.
    #[allow(unsafe_code)]
    pub fn init_in_place(slot: &mut MaybeUninit<Device>) -> &mut Device {
        let p = slot.as_mut_ptr();
        // Field addresses only: no reference to uninitialized memory is formed.
        let st = p
            .wrapping_byte_add(core::mem::offset_of!(Device, st))
            .cast::<State>();
        let cmd_buf = p
            .wrapping_byte_add(core::mem::offset_of!(Device, cmd_buf))
            .cast::<[u8; MAX_CMD_DWORDS * 4]>();
        let data_buf = p
            .wrapping_byte_add(core::mem::offset_of!(Device, data_buf))
            .cast::<[u8; CHUNK]>();
        // SAFETY: `st` is the aligned address of the `st` field inside `slot`, which we borrow
        // exclusively.
        unsafe { st.write(State::new()) };
        // SAFETY: as above, for `cmd_buf` (a byte array: any bytes are valid).
        unsafe { cmd_buf.write_bytes(0, 1) };
        // SAFETY: as above, for `data_buf`.
        unsafe { data_buf.write_bytes(0, 1) };
        // SAFETY: every field is initialized now.
        unsafe { slot.assume_init_mut() }
    }

    /// Resets the device, exactly as a write of 1 to `RESET` does. Counters survive.
    pub fn reset(&mut self) {
        let mut stats = self.st.stats;
        stats.resets += 1;
        let mmu_stats = self.st.mmu.stats;
        self.st = State::new();
        self.st.stats = stats;
        self.st.mmu.stats = mmu_stats;
    }

    /// Is the interrupt line asserted (`INT_STATUS & INT_ENABLE != 0`)?
    #[must_use]
    pub const fn irq_pending(&self) -> bool {
        self.st.int_status & self.st.int_enable != 0
    }

    /// The latched fault, if any.
    #[must_use]
    pub const fn fault(&self) -> Option<Fault> {
        self.st.fault
    }

    /// Last completed fence value (`FENCE_VALUE`).
    #[must_use]
    pub const fn fence_value(&self) -> u64 {
        self.st.fence_value
    }

    /// Is there nothing to do (ring disabled, halted, or empty)?
    #[must_use]
    pub fn is_idle(&self) -> bool {
        self.mmio_read(STATUS) & STATUS_BUSY == 0
    }

    /// Counters, MMU counters included.
    #[must_use]
    pub fn stats(&self) -> Stats {
        let mut s = self.st.stats;
        s.mmu = self.st.mmu.stats;
        s
    }

    /// The MMU (roots and TLB), for inspection.
    #[must_use]
    pub const fn mmu(&self) -> &Mmu {
        &self.st.mmu
    }

    /// A 32-bit MMIO read at byte `offset` into the BAR. Never has side effects.
    #[must_use]
    pub fn mmio_read(&self, offset: u32) -> u32 {
        let s = &self.st;
        if !offset.is_multiple_of(4) || offset >= BAR_SIZE {
            return 0;
        }
        let fault = s.fault;
        match offset {
            ID => ID_VALUE,
            VERSION => VERSION_VALUE,
            CAPS => CAPS_VALUE,
            STATUS => {
                let halted = fault.is_some();
                let busy = s.ring_enabled
                    && !halted
                    && (s.head != s.published_tail || s.current.is_some());
                STATUS_READY
                    | if s.ring_enabled {
                        STATUS_RING_ENABLED
                    } else {
                        0
                    }
                    | if busy { STATUS_BUSY } else { 0 }
                    | if halted { STATUS_HALTED } else { 0 }
            }
            CONTROL => s.control,
            SCRATCH => s.scratch,
            RING_BASE_LO => s.ring_base as u32,
            RING_BASE_HI => (s.ring_base >> 32) as u32,
            RING_SIZE => s.ring_size,
            RING_HEAD => s.head,
            RING_TAIL => s.tail,
            FENCE_ADDR_LO => s.fence_addr as u32,
            FENCE_ADDR_HI => (s.fence_addr >> 32) as u32,
            FENCE_VALUE_LO => s.fence_value as u32,
            FENCE_VALUE_HI => (s.fence_value >> 32) as u32,
            INT_STATUS => s.int_status,
            INT_ENABLE => s.int_enable,
            FAULT_STATUS => fault.map_or(0, |f| f.status_word()),
            FAULT_ADDR_LO => fault.map_or(0, |f| f.address as u32),
            FAULT_ADDR_HI => fault.map_or(0, |f| (f.address >> 32) as u32),
            FAULT_CMD_OFFSET => fault.and_then(|f| f.cmd_offset).unwrap_or(FAULT_NO_CMD),
            o if (ASID_BASE..ASID_BASE + ASID_STRIDE * NUM_ASIDS as u32).contains(&o) => {
                let r = s
                    .mmu
                    .roots
                    .get(((o - ASID_BASE) / ASID_STRIDE) as usize)
                    .copied()
                    .unwrap_or_default();
                match (o - ASID_BASE) % ASID_STRIDE {
                    ASID_ROOT_LO => r.addr as u32,
                    ASID_ROOT_HI => (r.addr >> 32) as u32,
                    ASID_ROOT_ENTRIES => r.entries,
                    _ => 0,
                }
            }
            _ => 0,
        }
    }

    /// A 32-bit MMIO write of `value` at byte `offset` into the BAR.
    pub fn mmio_write(&mut self, offset: u32, value: u32) {
        if !offset.is_multiple_of(4) || offset >= BAR_SIZE {
            return;
        }
        let s = &mut self.st;
        match offset {
            RESET if value & RESET_ASSERT != 0 => {
                self.reset();
            }
            CONTROL => {
                let mut v = value & CONTROL_MASK;
                let enabling = v & CONTROL_RING_ENABLE != 0 && !s.ring_enabled;
                if enabling {
                    let size_ok = s.ring_size.is_power_of_two()
                        && (RING_SIZE_MIN..=RING_SIZE_MAX).contains(&s.ring_size);
                    if size_ok {
                        s.ring_enabled = true;
                        s.head = 0;
                        s.tail = 0;
                        s.published_tail = 0;
                        s.current = None;
                    } else {
                        v &= !CONTROL_RING_ENABLE;
                    }
                } else if v & CONTROL_RING_ENABLE == 0 && s.ring_enabled {
                    s.ring_enabled = false;
                    s.current = None;
                }
                s.control = v;
            }
            SCRATCH => s.scratch = value,
            RING_BASE_LO if !s.ring_enabled => s.ring_base = set_lo(s.ring_base, value & !0x1F),
            RING_BASE_HI if !s.ring_enabled => s.ring_base = set_hi(s.ring_base, value),
            RING_SIZE if !s.ring_enabled => s.ring_size = value,
            RING_TAIL => s.tail = value,
            DOORBELL => {
                s.stats.doorbells += 1;
                if s.ring_enabled {
                    s.published_tail = s.tail;
                }
            }
            FENCE_ADDR_LO => s.fence_addr = set_lo(s.fence_addr, value & !0x7),
            FENCE_ADDR_HI => s.fence_addr = set_hi(s.fence_addr, value),
            INT_ENABLE => s.int_enable = value & INT_MASK,
            INT_ACK => s.int_status &= !value,
            o if (ASID_BASE..ASID_BASE + ASID_STRIDE * NUM_ASIDS as u32).contains(&o) => {
                let asid = ((o - ASID_BASE) / ASID_STRIDE) as u8;
                let mut r = s.mmu.roots.get(asid as usize).copied().unwrap_or_default();
                match (o - ASID_BASE) % ASID_STRIDE {
                    ASID_ROOT_LO => r.addr = set_lo(r.addr, value & !0xFFF),
                    ASID_ROOT_HI => r.addr = set_hi(r.addr, value),
                    ASID_ROOT_ENTRIES => r.entries = value.min(ENTRIES_PER_TABLE as u32),
                    _ => return,
                }
                s.mmu.set_root(asid, r);
            }
            _ => {}
        }
    }

    /// Lets the device work: retires ring entries between `RING_HEAD` and the published tail,
    /// spending at most `budget` work units (one per command, and one per ≤ 4 KiB chunk of a
    /// FILL/COPY, which resumes where it stopped on the next call). Deterministic; never panics.
    pub fn run(&mut self, bus: &mut impl DmaBus, budget: u32) -> RunOutcome {
        // Every transaction goes through the device's DMA_ADDRESS_BITS address lines.
        let bus = &mut crate::bus::AddressLimit::new(bus, DMA_ADDRESS_LIMIT);
        let Device {
            st,
            cmd_buf,
            data_buf,
        } = self;
        let mut commands = 0u32;
        let mut units = budget;
        let state = loop {
            if !st.ring_enabled {
                break RunState::Disabled;
            }
            if st.fault.is_some() {
                break RunState::Halted;
            }
            let Some(cur) = st.current else {
                if st.head == st.published_tail {
                    break RunState::Idle;
                }
                if let Err(f) = st.fetch_entry(bus) {
                    st.latch(f);
                    break RunState::Halted;
                }
                continue;
            };
            if cur.entry.exec && cur.offset < cur.entry.length {
                if units == 0 {
                    break RunState::BudgetExhausted;
                }
                match st.command(bus, cmd_buf, data_buf, cur, &mut units) {
                    Ok(Step::Done(len)) => {
                        commands += 1;
                        st.stats.commands += 1;
                        if let Some(c) = st.current.as_mut() {
                            c.offset = c.offset.saturating_add(len);
                            c.progress = 0;
                        }
                    }
                    Ok(Step::Partial(done)) => {
                        if let Some(c) = st.current.as_mut() {
                            c.progress = done;
                        }
                    }
                    Err(f) => {
                        st.latch(f);
                        break RunState::Halted;
                    }
                }
            } else {
                if cur.entry.fence {
                    if let Err(f) =
                        st.signal_fence(bus, cur.entry.fence_value, cur.entry.fence_irq, None)
                    {
                        st.latch(f);
                        break RunState::Halted;
                    }
                }
                st.current = None;
                st.head = (st.head + ENTRY_SIZE as u32) & (st.ring_size - 1);
                st.stats.ring_entries += 1;
            }
        };
        RunOutcome {
            commands,
            units: budget - units,
            state,
        }
    }
}

/// Context of a command-level memory access, for fault reports.
#[derive(Clone, Copy)]
struct Ctx {
    asid: u8,
    cmd_offset: Option<u32>,
}

impl State {
    fn latch(&mut self, f: Fault) {
        self.fault = Some(f);
        self.stats.faults += 1;
        self.raise(INT_FAULT);
    }

    fn raise(&mut self, bits: u32) {
        self.int_status |= bits;
        self.stats.interrupts += 1;
    }

    fn ring_fault(address: u64, iommu: Option<DmaFaultKind>) -> Fault {
        Fault {
            kind: if iommu.is_some() {
                FaultKind::Iommu
            } else {
                FaultKind::RingError
            },
            source: DmaSource::RingFetch,
            asid: 0,
            address,
            is_virtual: false,
            write: false,
            level: 0,
            iommu,
            cmd_offset: None,
        }
    }

    fn fetch_entry(&mut self, bus: &mut impl DmaBus) -> Result<(), Fault> {
        let tail = self.published_tail;
        if !tail.is_multiple_of(ENTRY_SIZE as u32) || tail >= self.ring_size {
            return Err(Self::ring_fault(tail as u64, None));
        }
        let addr = self.ring_base.wrapping_add(self.head as u64);
        let mut raw = [0u8; ENTRY_SIZE];
        bus.read(addr, &mut raw, DmaSource::RingFetch)
            .map_err(|e| Self::ring_fault(e.logical_addr, Some(e.kind)))?;
        let entry = RingEntry::decode(&raw).map_err(|_| Self::ring_fault(addr, None))?;
        self.current = Some(Current {
            entry,
            offset: 0,
            progress: 0,
        });
        Ok(())
    }

    fn mmu_fault(ctx: Ctx, source: DmaSource, va: u64, write: bool, f: MmuFault) -> Fault {
        let mut out = Fault {
            kind: FaultKind::PteInvalid,
            source,
            asid: ctx.asid,
            address: va,
            is_virtual: true,
            write,
            level: 0,
            iommu: None,
            cmd_offset: ctx.cmd_offset,
        };
        match f {
            MmuFault::VaRange => out.kind = FaultKind::VaRange,
            MmuFault::RootRange => out.kind = FaultKind::RootRange,
            MmuFault::Invalid { level } => out.level = level,
            MmuFault::WriteProtect => out.kind = FaultKind::WriteProtect,
            MmuFault::Bus { level, fault } => {
                out.kind = FaultKind::Iommu;
                out.source = DmaSource::PageWalk;
                out.address = fault.logical_addr;
                out.is_virtual = false;
                out.write = false;
                out.level = level;
                out.iommu = Some(fault.kind);
            }
        }
        out
    }

    fn bus_fault(ctx: Ctx, source: DmaSource, write: bool, f: DmaFault) -> Fault {
        Fault {
            kind: FaultKind::Iommu,
            source,
            asid: ctx.asid,
            address: f.logical_addr,
            is_virtual: false,
            write,
            level: 0,
            iommu: Some(f.kind),
            cmd_offset: ctx.cmd_offset,
        }
    }

    /// Translates `target`: `(logical address, or None for a ZERO page; bytes from it to the
    /// end of its GPU page — unbounded for a logical target)`.
    fn resolve(
        &mut self,
        bus: &mut impl DmaBus,
        ctx: Ctx,
        target: Target,
        write: bool,
        source: DmaSource,
    ) -> Result<(Option<u64>, u64), Fault> {
        match target {
            Target::Logical(a) => Ok((Some(a), u64::MAX)),
            Target::Virtual(va) => {
                let t = self
                    .mmu
                    .translate(bus, ctx.asid, va, write)
                    .map_err(|f| Self::mmu_fault(ctx, source, va, write, f))?;
                let logical = if t.pte.is_zero() {
                    None
                } else {
                    Some(t.logical)
                };
                Ok((logical, t.page_remaining))
            }
        }
    }

    /// Resolves the piece of `target + done` that stays within one 4 KiB logical page and one
    /// GPU page: `(logical address, or None for a ZERO page; piece length)`.
    #[allow(clippy::too_many_arguments)]
    fn piece(
        &mut self,
        bus: &mut impl DmaBus,
        ctx: Ctx,
        target: Target,
        done: u64,
        left: u64,
        write: bool,
        source: DmaSource,
    ) -> Result<(Option<u64>, u64), Fault> {
        let target = offset_target(target, done);
        let (logical, page_left) = self.resolve(bus, ctx, target, write, source)?;
        // A virtual address and its logical address have the same offset in a 4 KiB page.
        let in_page = PAGE_SIZE - (target.addr() & (PAGE_SIZE - 1));
        Ok((logical, left.min(in_page).min(page_left)))
    }

    /// Reads `buf.len()` bytes from `target`, page by page.
    fn read_target(
        &mut self,
        bus: &mut impl DmaBus,
        ctx: Ctx,
        target: Target,
        buf: &mut [u8],
        source: DmaSource,
    ) -> Result<(), Fault> {
        let total = buf.len() as u64;
        let mut done = 0u64;
        while done < total {
            let (logical, n) = self.piece(bus, ctx, target, done, total - done, false, source)?;
            let Some(dst) = buf.get_mut(done as usize..(done + n) as usize) else {
                break;
            };
            match logical {
                None => dst.fill(0),
                Some(l) => bus
                    .read(l, dst, source)
                    .map_err(|f| Self::bus_fault(ctx, source, false, f))?,
            }
            done += n;
        }
        Ok(())
    }

    /// Writes `data` to `target`, page by page.
    fn write_target(
        &mut self,
        bus: &mut impl DmaBus,
        ctx: Ctx,
        target: Target,
        data: &[u8],
        source: DmaSource,
    ) -> Result<(), Fault> {
        let total = data.len() as u64;
        let mut done = 0u64;
        while done < total {
            let (logical, n) = self.piece(bus, ctx, target, done, total - done, true, source)?;
            let Some(src) = data.get(done as usize..(done + n) as usize) else {
                break;
            };
            if let Some(l) = logical {
                bus.write(l, src, source)
                    .map_err(|f| Self::bus_fault(ctx, source, true, f))?;
            }
            done += n;
        }
        Ok(())
    }

    /// Reads command bytes `[offset, offset + buf.len())` of the running buffer into `buf`.
    fn fetch_cmd(
        &mut self,
        bus: &mut impl DmaBus,
        cur: Current,
        buf: &mut [u8],
    ) -> Result<(), Fault> {
        let e = cur.entry;
        let at = e.address.wrapping_add(cur.offset as u64);
        let target = if e.buf_virtual {
            Target::Virtual(at)
        } else {
            Target::Logical(at)
        };
        let ctx = Ctx {
            asid: e.asid,
            cmd_offset: Some(cur.offset),
        };
        self.read_target(bus, ctx, target, buf, DmaSource::CommandFetch)
    }

    /// Fetches, validates and executes the command at `cur.offset`; returns its length in bytes.
    fn command(
        &mut self,
        bus: &mut impl DmaBus,
        cmd_buf: &mut [u8; MAX_CMD_DWORDS * 4],
        data_buf: &mut [u8; CHUNK],
        cur: Current,
        units: &mut u32,
    ) -> Result<Step, Fault> {
        let e = cur.entry;
        let ctx = Ctx {
            asid: e.asid,
            cmd_offset: Some(cur.offset),
        };
        let cmd_fault = |kind| Fault {
            kind,
            source: DmaSource::CommandFetch,
            asid: e.asid,
            address: e.address.wrapping_add(cur.offset as u64),
            is_virtual: e.buf_virtual,
            write: false,
            level: 0,
            iommu: None,
            cmd_offset: Some(cur.offset),
        };
        let mut hdr = [0u8; 4];
        self.fetch_cmd(bus, cur, &mut hdr)?;
        let h = Header::from_raw(u32::from_le_bytes(hdr));
        let len = h.dwords as usize * 4;
        let left = e.length.saturating_sub(cur.offset) as usize;
        if len == 0 || len > left {
            return Err(cmd_fault(FaultKind::CmdError));
        }
        if h.opcode == OP_NOP {
            // The body of a NOP is never fetched.
            if h.flags != 0 {
                return Err(cmd_fault(FaultKind::CmdError));
            }
            *units = units.saturating_sub(1);
            return Ok(Step::Done(len as u32));
        }
        let Some(bytes) = cmd_buf.get_mut(..len) else {
            return Err(cmd_fault(FaultKind::CmdError));
        };
        self.fetch_cmd(bus, cur, bytes)?;
        match cmd::decode(bytes) {
            Ok((c, _)) if c.is_privileged() && !e.privileged => {
                Err(cmd_fault(FaultKind::Privilege))
            }
            Ok((c, _)) => Ok(
                match self.execute(bus, data_buf, ctx, &c, cur.progress, units)? {
                    Some(done) => Step::Partial(done),
                    None => Step::Done(len as u32),
                },
            ),
            Err(_) => Err(cmd_fault(FaultKind::CmdError)),
        }
    }

    fn execute(
        &mut self,
        bus: &mut impl DmaBus,
        data_buf: &mut [u8; CHUNK],
        ctx: Ctx,
        c: &Command<'_>,
        progress: u64,
        units: &mut u32,
    ) -> Result<Option<u64>, Fault> {
        // Every command costs one unit; a FILL/COPY costs one per chunk instead.
        let mut spent = false;
        match *c {
            Command::Nop { .. } => {}
            Command::Fill { dst, size, pattern } => {
                for w in data_buf.chunks_exact_mut(4) {
                    w.copy_from_slice(&pattern.to_le_bytes());
                }
                let mut done = progress;
                while done < size {
                    if !spend(units, &mut spent) {
                        return Ok(Some(done));
                    }
                    let n = chunk_len(dst, done, size);
                    let pat = data_buf.get(..n).unwrap_or(&[]);
                    self.write_target(bus, ctx, offset_target(dst, done), pat, DmaSource::Write)?;
                    self.stats.bytes_filled += n as u64;
                    done += n as u64;
                }
            }
            Command::Copy { dst, src, size } => {
                // Translated once per run: the bytes up to the end of the current GPU page on
                // both sides (a stale TLB entry is used for the whole run, as it would be for
                // each of its pieces). The run is still paid for and issued as pieces — one
                // unit each, a piece ending at every 4 KiB boundary of either side — but the
                // bus may move the pieces of a run in one go (`DmaBus::copy_pieces`).
                let mut done = progress;
                while done < size {
                    if !spend(units, &mut spent) {
                        return Ok(Some(done));
                    }
                    let (s_logical, s_left) =
                        self.resolve(bus, ctx, offset_target(src, done), false, DmaSource::Read)?;
                    let (d_logical, d_left) =
                        self.resolve(bus, ctx, offset_target(dst, done), true, DmaSource::Write)?;
                    let run = (size - done).min(s_left).min(d_left);
                    let mut len = copy_piece(src, dst, done, run);
                    let (Some(s_l), Some(d_l)) = (s_logical, d_logical) else {
                        // A ZERO page on either side: one piece at a time.
                        let m = len as usize;
                        if let (None, Some(d_l)) = (s_logical, d_logical) {
                            // A ZERO source page reads as zeros; a ZERO destination drops writes.
                            let zeros = data_buf.get_mut(..m).unwrap_or(&mut []);
                            zeros.fill(0);
                            bus.write(d_l, zeros, DmaSource::Write)
                                .map_err(|f| Self::bus_fault(ctx, DmaSource::Write, true, f))?;
                        }
                        self.stats.bytes_copied += len;
                        done += len;
                        continue;
                    };
                    while len < run && spend(units, &mut spent) {
                        len += copy_piece(src, dst, done + len, run - len);
                    }
                    let copied = bus.copy_pieces(d_l, s_l, len as usize, data_buf);
                    if let Err((before, f, write)) = copied {
                        self.stats.bytes_copied += before as u64;
                        let source = if write {
                            DmaSource::Write
                        } else {
                            DmaSource::Read
                        };
                        return Err(Self::bus_fault(ctx, source, write, f));
                    }
                    self.stats.bytes_copied += len;
                    done += len;
                }
            }
            Command::WritePtes { dst, entries } => {
                self.write_target(bus, ctx, dst, entries.bytes(), DmaSource::Write)?;
                self.stats.ptes_written += entries.len() as u64;
            }
            Command::WriteData { dst, data } => {
                self.write_target(bus, ctx, dst, data.bytes(), DmaSource::Write)?;
                self.stats.bytes_written += data.bytes().len() as u64;
            }
            Command::FlushTlb(scope) => {
                let tlb = &mut self.mmu.tlb;
                match scope {
                    FlushScope::All => tlb.flush_all(),
                    FlushScope::Asid(a) => tlb.flush_asid(a),
                    FlushScope::Range { asid, va, size } => tlb.flush_range(asid, va, size),
                }
                self.mmu.stats.flushes += 1;
            }
            Command::SetRoot {
                asid,
                root,
                entries,
            } => {
                self.mmu.set_root(
                    asid,
                    Root {
                        addr: root,
                        entries,
                    },
                );
            }
            Command::Fence { value, irq } => self.signal_fence(bus, value, irq, ctx.cmd_offset)?,
        }
        if !spent {
            *units = units.saturating_sub(1);
        }
        Ok(None)
    }

    fn signal_fence(
        &mut self,
        bus: &mut impl DmaBus,
        value: u64,
        irq: bool,
        cmd_offset: Option<u32>,
    ) -> Result<(), Fault> {
        if self.control & CONTROL_FENCE_WB_ENABLE != 0 {
            let ctx = Ctx {
                asid: 0,
                cmd_offset,
            };
            bus.write(
                self.fence_addr,
                &value.to_le_bytes(),
                DmaSource::FenceWriteback,
            )
            .map_err(|f| Self::bus_fault(ctx, DmaSource::FenceWriteback, true, f))?;
        }
        self.fence_value = value;
        self.stats.fences += 1;
        if irq {
            self.raise(INT_FENCE);
        }
        Ok(())
    }
}

/// Takes one work unit for a data-move chunk. The first chunk of a step is always granted
/// (the caller checked that a unit is left), later ones only while units remain.
fn spend(units: &mut u32, spent: &mut bool) -> bool {
    if *units == 0 && *spent {
        return false;
    }
    *units = units.saturating_sub(1);
    *spent = true;
    true
}

/// Length of the next data-move chunk: at most [`CHUNK`] bytes, ending at a 4 KiB boundary of
/// the destination address so that each chunk is one page-sized piece.
fn chunk_len(dst: Target, done: u64, size: u64) -> usize {
    let to_boundary = CHUNK as u64 - (dst.addr().wrapping_add(done) % CHUNK as u64);
    (size - done).min(to_boundary) as usize
}

/// Length of the COPY piece at `done`: up to the next 4 KiB boundary of the source or the
/// destination address (virtual or logical: the offset in a page is the same), at most `left`.
fn copy_piece(src: Target, dst: Target, done: u64, left: u64) -> u64 {
    let to_boundary = |t: Target| PAGE_SIZE - (t.addr().wrapping_add(done) & (PAGE_SIZE - 1));
    left.min(to_boundary(src)).min(to_boundary(dst))
}

fn offset_target(t: Target, by: u64) -> Target {
    match t {
        Target::Logical(a) => Target::Logical(a.wrapping_add(by)),
        Target::Virtual(a) => Target::Virtual(a.wrapping_add(by)),
    }
}
