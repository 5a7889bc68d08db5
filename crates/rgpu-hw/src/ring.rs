//! The ring and its 32-byte entries.
//!
//! The ring is an array of [`ENTRY_SIZE`]-byte entries at `RING_BASE` (logical address),
//! `RING_SIZE` bytes long. `RING_HEAD` and `RING_TAIL` are byte offsets; the ring is empty
//! when they are equal, so at most `RING_SIZE / 32 - 1` entries are outstanding. An entry
//! names a command buffer (see [`crate::cmd`]) and optionally a fence to signal after it.
//!
//! | off | size | field |
//! |---|---|---|
//! | 0x00 | u32 | control: `[7:0]` kind, `[8]` BUF_VIRTUAL, `[9]` PRIVILEGED, `[10]` FENCE, `[11]` FENCE_IRQ, `[19:16]` ASID, rest 0 |
//! | 0x04 | u32 | command-buffer length in bytes (multiple of 4) |
//! | 0x08 | u64 | command-buffer address (logical, or VA in ASID with BUF_VIRTUAL; 4-byte aligned) |
//! | 0x10 | u64 | fence value (with FENCE) |
//! | 0x18 | u64 | reserved, write 0 (ignored) |

use crate::regs::NUM_ASIDS;

/// Size of one ring entry in bytes.
pub const ENTRY_SIZE: usize = 32;

/// Entry kind: nothing to execute (only the optional fence).
pub const KIND_NOP: u32 = 0;
/// Entry kind: execute the command buffer.
pub const KIND_EXEC: u32 = 1;
/// Mask of the kind field.
pub const KIND_MASK: u32 = 0xFF;
/// The command buffer address is a GPU VA in the entry's ASID (else a logical address).
pub const CTRL_BUF_VIRTUAL: u32 = 1 << 8;
/// The buffer may use privileged commands (WRITE_PTES, FLUSH_TLB, SET_ROOT, FENCE) and
/// logical-address operands. Set only for kernel-built buffers (paging buffers).
pub const CTRL_PRIVILEGED: u32 = 1 << 9;
/// After the buffer completes, signal the entry's fence value (as a FENCE command would).
pub const CTRL_FENCE: u32 = 1 << 10;
/// With [`CTRL_FENCE`]: also raise `INT_FENCE`.
pub const CTRL_FENCE_IRQ: u32 = 1 << 11;
/// Shift of the ASID field.
pub const CTRL_ASID_SHIFT: u32 = 16;
/// Mask of the ASID field after shifting.
pub const CTRL_ASID_MASK: u32 = 0xF;
/// Bits of the control word that must be zero.
pub const CTRL_RESERVED: u32 = !(KIND_MASK
    | CTRL_BUF_VIRTUAL
    | CTRL_PRIVILEGED
    | CTRL_FENCE
    | CTRL_FENCE_IRQ
    | (CTRL_ASID_MASK << CTRL_ASID_SHIFT));

/// A decoded ring entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RingEntry {
    /// `true`: execute the buffer; `false`: a NOP entry (fence only).
    pub exec: bool,
    /// The buffer address is a GPU VA in `asid`.
    pub buf_virtual: bool,
    /// The buffer may use privileged commands and logical operands.
    pub privileged: bool,
    /// Signal `fence_value` after the buffer.
    pub fence: bool,
    /// Raise `INT_FENCE` with the fence.
    pub fence_irq: bool,
    /// Address space of the buffer's virtual operands (0..=15).
    pub asid: u8,
    /// Command-buffer length in bytes.
    pub length: u32,
    /// Command-buffer address.
    pub address: u64,
    /// Fence value.
    pub fence_value: u64,
}

/// Why a ring entry is malformed (reported as a `RING_ERROR` fault).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingEntryError {
    /// Unknown kind.
    BadKind(u32),
    /// A reserved control bit is set.
    ReservedBits(u32),
    /// Length or address not a multiple of 4.
    Misaligned,
    /// FENCE_IRQ without FENCE.
    IrqWithoutFence,
}

impl RingEntry {
    /// An entry executing `length` bytes at logical/virtual `address` in `asid`.
    #[must_use]
    pub const fn exec(address: u64, length: u32, asid: u8) -> RingEntry {
        RingEntry {
            exec: true,
            buf_virtual: false,
            privileged: false,
            fence: false,
            fence_irq: false,
            asid,
            length,
            address,
            fence_value: 0,
        }
    }

    /// The control word.
    #[must_use]
    pub const fn control(&self) -> u32 {
        let mut c = if self.exec { KIND_EXEC } else { KIND_NOP };
        if self.buf_virtual {
            c |= CTRL_BUF_VIRTUAL;
        }
        if self.privileged {
            c |= CTRL_PRIVILEGED;
        }
        if self.fence {
            c |= CTRL_FENCE;
        }
        if self.fence_irq {
            c |= CTRL_FENCE_IRQ;
        }
        c | (((self.asid as u32) & CTRL_ASID_MASK) << CTRL_ASID_SHIFT)
    }

    /// Encodes the entry (little-endian, reserved quadword zero).
    #[must_use]
    pub fn encode(&self) -> [u8; ENTRY_SIZE] {
        let mut b = [0u8; ENTRY_SIZE];
        b[0..4].copy_from_slice(&self.control().to_le_bytes());
        b[4..8].copy_from_slice(&self.length.to_le_bytes());
        b[8..16].copy_from_slice(&self.address.to_le_bytes());
        b[16..24].copy_from_slice(&self.fence_value.to_le_bytes());
        b
    }

    /// Decodes and validates an entry.
    pub fn decode(b: &[u8; ENTRY_SIZE]) -> Result<RingEntry, RingEntryError> {
        let control = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let length = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        let address = u64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]);
        let fence_value =
            u64::from_le_bytes([b[16], b[17], b[18], b[19], b[20], b[21], b[22], b[23]]);
        let kind = control & KIND_MASK;
        if kind != KIND_NOP && kind != KIND_EXEC {
            return Err(RingEntryError::BadKind(kind));
        }
        if control & CTRL_RESERVED != 0 {
            return Err(RingEntryError::ReservedBits(control & CTRL_RESERVED));
        }
        if control & CTRL_FENCE_IRQ != 0 && control & CTRL_FENCE == 0 {
            return Err(RingEntryError::IrqWithoutFence);
        }
        let exec = kind == KIND_EXEC;
        if exec && (!length.is_multiple_of(4) || !address.is_multiple_of(4)) {
            return Err(RingEntryError::Misaligned);
        }
        let asid = ((control >> CTRL_ASID_SHIFT) & CTRL_ASID_MASK) as u8;
        debug_assert!((asid as usize) < NUM_ASIDS);
        Ok(RingEntry {
            exec,
            buf_virtual: control & CTRL_BUF_VIRTUAL != 0,
            privileged: control & CTRL_PRIVILEGED != 0,
            fence: control & CTRL_FENCE != 0,
            fence_irq: control & CTRL_FENCE_IRQ != 0,
            asid,
            length,
            address,
            fence_value,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_validation() {
        let e = RingEntry {
            privileged: true,
            fence: true,
            fence_irq: true,
            buf_virtual: true,
            fence_value: 0x1122_3344_5566_7788,
            ..RingEntry::exec(0xABCD_0000_1000, 0x40, 15)
        };
        let b = e.encode();
        assert_eq!(RingEntry::decode(&b), Ok(e));
        let mut bad = b;
        bad[0] = 7;
        assert_eq!(RingEntry::decode(&bad), Err(RingEntryError::BadKind(7)));
        let mut bad = b;
        bad[3] = 0x80;
        assert!(matches!(
            RingEntry::decode(&bad),
            Err(RingEntryError::ReservedBits(_))
        ));
        let mut bad = b;
        bad[4] = 0x41;
        assert_eq!(RingEntry::decode(&bad), Err(RingEntryError::Misaligned));
        let mut bad = b;
        bad[1] &= !((CTRL_FENCE >> 8) as u8);
        assert_eq!(
            RingEntry::decode(&bad),
            Err(RingEntryError::IrqWithoutFence)
        );
    }
}
