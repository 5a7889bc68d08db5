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

/// The driver's write position in the ring page. The page itself lives outside the ring's lock
/// (`Started::ring_page`), shared with the device: the soft engine reads it while the driver
/// holds this lock to submit (the lock order ring → device must not be inverted by the engine).
#[derive(Default)]
pub struct Ring {
    /// Byte offset of the next entry the driver writes.
    tail: u32,
}

impl Ring {
    /// Empties the ring in `mem` (enabling it zeroes the device's head and tail) and returns
    /// its logical address.
    pub fn reset(&mut self, mem: Option<&SystemMemory>) -> NtResult<u64> {
        self.tail = 0;
        let mem = mem.ok_or(NtError::INVALID_DEVICE_STATE)?;
        mem.shared().fill(0, RING_BYTES, 0)?;
        Ok(mem
            .page_address(0)
            .ok_or(NtError::INSUFFICIENT_RESOURCES)?
            .0)
    }

    /// Writes `entry` at the tail and advances the driver's copy of the tail (the device sees
    /// it at [`Ring::doorbell`]). STATUS_DEVICE_NOT_READY when the ring is full.
    pub fn push(
        &mut self,
        mem: Option<&SystemMemory>,
        mmio: &Registers,
        entry: &RingEntry,
    ) -> NtResult<()> {
        let head = mmio.read(regs::RING_HEAD);
        let next = (self.tail + ENTRY_SIZE as u32) % RING_BYTES as u32;
        if next == head {
            // The scheduler never queues more than the ring holds; a full ring means the device
            // stopped consuming (hung): the TDR path recovers.
            return Err(NtError::DEVICE_NOT_READY);
        }
        let at = self.tail as usize;
        mem.ok_or(NtError::INVALID_DEVICE_STATE)?
            .shared()
            .write(at, &entry.encode())?;
        self.tail = next;
        Ok(())
    }

    /// Publishes the driver's tail to the device and rings the doorbell. Returns true when the
    /// soft engine must be woken (see [`Registers::write`]).
    #[must_use]
    pub fn doorbell(&self, mmio: &Registers) -> bool {
        mmio.write(regs::RING_TAIL, self.tail);
        mmio.write(regs::DOORBELL, 1)
    }
}
