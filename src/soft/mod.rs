//! Soft rgpu: the rgpu-hw device model run inside the driver, for machines without rgpu
//! hardware (a root-enumerated device whose StartDevice resources hold no register BAR).
//!
//! The driver above the register interface is the same in both modes: [`Registers`] is either
//! the mapped BAR ([`Registers::Mmio`]) or the in-driver model ([`Registers::Soft`]), and every
//! register access of the hardware path goes through it.
//!
//! The model reaches memory only through [`LogicalMemory`], the one translation from a device
//! (logical, IOMMU) address to the CPU view of memory the driver owns or was given: whichever
//! memory path provides the pages (IOMMU-mapped MDL pages, aperture MDLs, physical memory
//! objects) registers them there. An access to a logical address never given is refused as
//! [`DmaFaultKind::NotMapped`], and the model latches it as the IOMMU fault of the hardware
//! path (FAULT_STATUS type IOMMU, FAULT_ADDR the logical address), which the ISR reports as
//! DMA_PAGE_FAULTED.
//!
//! The engine ([`SoftDevice::run`]) is meant to be driven by a system worker thread
//! (`dxgk::thread::SystemThread`) woken by the doorbell, raising completion with
//! `DxgkInterface::synchronize_execution` → the driver's own ISR logic (NotifyInterrupt, then
//! QueueDpc), coskmd's pattern. See docs/soft-rgpu.md for what is wired and what is not yet.

#![forbid(unsafe_code)]

pub mod engine;
pub mod memory;

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use dxgk::device::Mmio;
use dxgk::pool::{Pool, PoolBox, PoolTag};
use dxgk::NtResult;

use dxgk::sync::SpinLock;
use rgpu_hw::bus::{DmaBus, DmaFault, DmaFaultKind, DmaSource};
use rgpu_hw::{regs, Device, RunOutcome};

/// Bytes of one logical page.
pub const PAGE: u64 = 4096;

/// The CPU view of the memory the device may reach, by logical (device) address.
///
/// Both methods are called with ranges that never cross a 4 KiB logical page (the model's bus
/// contract) and must not touch memory on failure. Implementations are called from the engine
/// thread at up to DISPATCH_LEVEL (under the device lock): nonpaged memory only, no waits.
pub trait LogicalMemory: Sync {
    /// Copies `buf.len()` bytes at logical address `logical` into `buf`.
    fn read(&self, logical: u64, buf: &mut [u8]) -> Result<(), DmaFaultKind>;
    /// Copies `data` to logical address `logical`.
    fn write(&self, logical: u64, data: &[u8]) -> Result<(), DmaFaultKind>;
}

/// The model's bus over a [`LogicalMemory`]: every refused access becomes a [`DmaFault`] at the
/// logical address, and is counted.
pub struct SoftBus<'a, M: LogicalMemory + ?Sized> {
    memory: &'a M,
    /// Accesses refused so far.
    pub faults: u32,
}

impl<'a, M: LogicalMemory + ?Sized> SoftBus<'a, M> {
    /// A bus over `memory`.
    pub fn new(memory: &'a M) -> Self {
        Self { memory, faults: 0 }
    }

    fn fault(&mut self, logical_addr: u64, kind: DmaFaultKind) -> DmaFault {
        self.faults = self.faults.saturating_add(1);
        DmaFault { logical_addr, kind }
    }
}

impl<M: LogicalMemory + ?Sized> DmaBus for SoftBus<'_, M> {
    fn read(
        &mut self,
        logical_addr: u64,
        buf: &mut [u8],
        _source: DmaSource,
    ) -> Result<(), DmaFault> {
        self.memory
            .read(logical_addr, buf)
            .map_err(|k| self.fault(logical_addr, k))
    }

    fn write(
        &mut self,
        logical_addr: u64,
        data: &[u8],
        _source: DmaSource,
    ) -> Result<(), DmaFault> {
        self.memory
            .write(logical_addr, data)
            .map_err(|k| self.fault(logical_addr, k))
    }
}

/// Work units one [`SoftDevice::run`] call may spend (one per command, one per ≤ 4 KiB chunk of
/// a FILL/COPY) before the engine lets the lock go: bounds the time spent at DISPATCH_LEVEL.
pub const RUN_BUDGET: u32 = 64;

/// The registers the ISR logic reads, readable without the device lock (see [`SoftDevice`]).
pub const SHADOWED: [u32; 8] = [
    regs::STATUS,
    regs::INT_STATUS,
    regs::INT_ENABLE,
    regs::FENCE_VALUE_LO,
    regs::FENCE_VALUE_HI,
    regs::FAULT_STATUS,
    regs::FAULT_ADDR_LO,
    regs::FAULT_ADDR_HI,
];

/// The in-driver device: the model's registers and command processor behind a spin lock (the
/// driver's register accesses and the engine thread's runs are serialized by it).
///
/// The ISR logic runs inside DxgkCbSynchronizeExecution, at device IRQL, where a DISPATCH_LEVEL
/// spin lock must not be acquired. So the registers it reads ([`SHADOWED`]: STATUS, the
/// interrupt, fence and fault registers) are kept in atomics, refreshed whenever the device
/// changes under the lock, and an INT_ACK write (write-1-to-clear) is recorded without the lock
/// and applied to the model at the next lock hold. Every other register access takes the lock
/// and is only legal at ≤ DISPATCH_LEVEL, as for any driver code that is not the ISR.
pub struct SoftDevice {
    /// The model (about 14 KiB) in its own nonpaged pool block, built there in place.
    device: PoolBox<SpinLock<Device>>,
    shadow: [AtomicU32; SHADOWED.len()],
    /// INT_ACK bits written since the model last saw them.
    acks: AtomicU32,
    /// Test hook: while set, the engine does not run (an injected hang; TDR recovers it).
    hung: AtomicBool,
}

impl SoftDevice {
    /// A device in its power-on state, the model in a nonpaged pool block of `tag` initialized
    /// in place (never on the stack: a kernel stack is 24 KiB). IRQL ≤ DISPATCH_LEVEL.
    /// STATUS_INSUFFICIENT_RESOURCES when the pool is exhausted.
    pub fn new(pool: &Pool, tag: PoolTag) -> NtResult<Self> {
        let device = PoolBox::try_new_in_place(pool, tag, |slot| {
            SpinLock::init_in_place(slot, |d| Ok(Device::init_in_place(d)))
        })?;
        let s = Self {
            device,
            shadow: Default::default(),
            acks: AtomicU32::new(0),
            hung: AtomicBool::new(false),
        };
        s.with_device(|_| ());
        Ok(s)
    }

    /// Runs `f` on the model under the lock: pending acknowledges first, shadows refreshed
    /// after. ≤ DISPATCH_LEVEL.
    fn with_device<R>(&self, f: impl FnOnce(&mut Device) -> R) -> R {
        let mut d = self.device.lock();
        let acks = self.acks.swap(0, Ordering::AcqRel);
        if acks != 0 {
            d.mmio_write(regs::INT_ACK, acks);
        }
        let r = f(&mut d);
        for (slot, &offset) in self.shadow.iter().zip(SHADOWED.iter()) {
            slot.store(d.mmio_read(offset), Ordering::Release);
        }
        r
    }

    fn shadow_slot(&self, offset: u32) -> Option<&AtomicU32> {
        let i = SHADOWED.iter().position(|&o| o == offset)?;
        self.shadow.get(i)
    }

    /// A 32-bit register read (never has side effects). The [`SHADOWED`] registers at any
    /// IRQL; the others ≤ DISPATCH_LEVEL.
    pub fn read(&self, offset: u32) -> u32 {
        match self.shadow_slot(offset) {
            Some(slot) => slot.load(Ordering::Acquire),
            None => self.with_device(|d| d.mmio_read(offset)),
        }
    }

    /// A 32-bit register write. Returns true for a doorbell (the engine must be woken).
    /// INT_ACK at any IRQL; the others ≤ DISPATCH_LEVEL. A write of RESET also clears an
    /// injected hang (the TDR path resets the device).
    pub fn write(&self, offset: u32, value: u32) -> bool {
        if offset == regs::INT_ACK {
            self.acks.fetch_or(value, Ordering::AcqRel);
            if let Some(slot) = self.shadow_slot(regs::INT_STATUS) {
                slot.fetch_and(!value, Ordering::AcqRel);
            }
            return false;
        }
        if offset == regs::RESET && value & regs::RESET_ASSERT != 0 {
            self.hung.store(false, Ordering::Release);
        }
        self.with_device(|d| d.mmio_write(offset, value));
        offset == regs::DOORBELL
    }

    /// Injects a hang: the engine stops consuming the ring until the next device reset.
    pub fn inject_hang(&self) {
        self.hung.store(true, Ordering::Release);
    }

    /// One engine pass over `memory` (at most `budget` work units), ≤ DISPATCH_LEVEL. Returns
    /// the outcome, or `None` while a hang is injected, and whether the interrupt line is
    /// asserted (the caller then runs the ISR logic through DxgkCbSynchronizeExecution).
    pub fn run<M: LogicalMemory + ?Sized>(
        &self,
        memory: &M,
        budget: u32,
    ) -> (Option<RunOutcome>, bool) {
        self.with_device(|d| {
            if self.hung.load(Ordering::Acquire) {
                return (None, d.irq_pending());
            }
            let outcome = d.run(&mut SoftBus::new(memory), budget);
            (Some(outcome), d.irq_pending())
        })
    }

    /// Model counters (commands, bytes filled/copied, faults), for reports. ≤ DISPATCH_LEVEL.
    pub fn stats(&self) -> rgpu_hw::Stats {
        self.with_device(|d| d.stats())
    }
}

/// The register interface the hardware path uses, chosen at StartDevice: the mapped BAR, or the
/// in-driver model when the resources hold no rgpu BAR.
pub enum Registers {
    /// Real rgpu hardware behind its mapped BAR.
    Mmio(Mmio),
    /// The rgpu-hw model run by the driver (the model itself in its own nonpaged pool block).
    Soft(SoftDevice),
}

impl Registers {
    /// A 32-bit register read.
    pub fn read(&self, offset: u32) -> u32 {
        match self {
            Registers::Mmio(m) => m.read(offset),
            Registers::Soft(s) => s.read(offset),
        }
    }

    /// A 32-bit register write. Returns true when the soft engine must be woken (a doorbell in
    /// soft mode); always false for hardware.
    pub fn write(&self, offset: u32, value: u32) -> bool {
        match self {
            Registers::Mmio(m) => {
                m.write(offset, value);
                false
            }
            Registers::Soft(s) => s.write(offset, value),
        }
    }

    /// The soft device, in soft mode.
    pub fn soft(&self) -> Option<&SoftDevice> {
        match self {
            Registers::Soft(s) => Some(s),
            Registers::Mmio(_) => None,
        }
    }
}
