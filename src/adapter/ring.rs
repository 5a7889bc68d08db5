//! The ring the driver writes DMA-buffer entries into and the device consumes (spec §3).
//!
//! Submissions are serialized by the GPU scheduler per node; the ring's lock keeps ResetEngine
//! and RestartFromTimeout consistent with them.

use dxgk::device_memory::SystemMemory;
use dxgk::{NtError, NtResult};
use rgpu_hw::regs;
use rgpu_hw::ring::{RingEntry, ENTRY_SIZE};

use crate::soft::Registers;

/// Ring size in bytes (128 entries).
pub const RING_BYTES: usize = 4096;

/// The ring page and the driver's write position in it.
pub struct Ring {
    /// The ring page (from the adapter's page pool; `None` only while being returned at stop).
    pub(super) mem: Option<SystemMemory>,
    /// Byte offset of the next entry the driver writes.
    tail: u32,
}

impl Ring {
    /// A ring in `mem` (one page), empty.
    pub fn new(mem: SystemMemory) -> Self {
        Self {
            mem: Some(mem),
            tail: 0,
        }
    }

    /// Empties the ring (enabling it zeroes the device's head and tail) and returns its
    /// logical address.
    pub fn reset(&mut self) -> NtResult<u64> {
        self.tail = 0;
        let mem = self.mem.as_mut().ok_or(NtError::INVALID_DEVICE_STATE)?;
        mem.fill(0, RING_BYTES, 0)?;
        Ok(mem
            .page_address(0)
            .ok_or(NtError::INSUFFICIENT_RESOURCES)?
            .0)
    }

    /// Writes `entry` at the tail and advances the driver's copy of the tail (the device sees
    /// it at [`Ring::doorbell`]). STATUS_DEVICE_NOT_READY when the ring is full.
    pub fn push(&mut self, mmio: &Registers, entry: &RingEntry) -> NtResult<()> {
        let head = mmio.read(regs::RING_HEAD);
        let next = (self.tail + ENTRY_SIZE as u32) % RING_BYTES as u32;
        if next == head {
            // The scheduler never queues more than the ring holds; a full ring means the device
            // stopped consuming (hung): the TDR path recovers.
            return Err(NtError::DEVICE_NOT_READY);
        }
        let at = self.tail as usize;
        self.mem
            .as_mut()
            .ok_or(NtError::INVALID_DEVICE_STATE)?
            .write(at, &entry.encode())?;
        self.tail = next;
        Ok(())
    }

    /// Publishes the driver's tail to the device and rings the doorbell.
    pub fn doorbell(&self, mmio: &Registers) {
        mmio.write(regs::RING_TAIL, self.tail);
        mmio.write(regs::DOORBELL, 1);
    }
}
