//! MMIO register map of BAR0 (4 KiB, 32-bit registers, little-endian).
//!
//! Offsets not listed read as 0 and ignore writes; so do accesses at offsets that are not a
//! multiple of 4 or lie outside the BAR. See `docs/rgpu-device.md` §2.

/// Size of the MMIO BAR in bytes.
pub const BAR_SIZE: u32 = 0x1000;

/// `ID` (RO): the fixed device magic, [`ID_VALUE`].
pub const ID: u32 = 0x000;
/// `VERSION` (RO): programming-model version, `major << 16 | minor`; [`VERSION_VALUE`].
pub const VERSION: u32 = 0x004;
/// `CAPS` (RO): capabilities, see the `CAPS_*` items; value [`CAPS_VALUE`].
pub const CAPS: u32 = 0x008;
/// `STATUS` (RO): see the `STATUS_*` bits.
pub const STATUS: u32 = 0x00C;
/// `RESET` (WO): writing a value with bit 0 set resets the device (reads 0).
pub const RESET: u32 = 0x010;
/// `CONTROL` (RW): see the `CONTROL_*` bits.
pub const CONTROL: u32 = 0x014;
/// `SCRATCH` (RW): a plain 32-bit register for the driver's own use (reset 0).
pub const SCRATCH: u32 = 0x018;

/// `RING_BASE_LO` (RW): logical address of the ring, bits 31:0 (bits 4:0 read as zero).
pub const RING_BASE_LO: u32 = 0x020;
/// `RING_BASE_HI` (RW): logical address of the ring, bits 63:32.
pub const RING_BASE_HI: u32 = 0x024;
/// `RING_SIZE` (RW): ring size in bytes (power of two, [`RING_SIZE_MIN`]..=[`RING_SIZE_MAX`]).
pub const RING_SIZE: u32 = 0x028;
/// `RING_HEAD` (RO, device-owned): byte offset of the next entry the device will consume.
pub const RING_HEAD: u32 = 0x02C;
/// `RING_TAIL` (RW, driver-owned): byte offset one past the last entry the driver wrote.
pub const RING_TAIL: u32 = 0x030;
/// `DOORBELL` (WO): any write publishes the current `RING_TAIL` to the device.
pub const DOORBELL: u32 = 0x034;

/// `FENCE_ADDR_LO` (RW): fence write-back logical address, bits 31:0 (bits 2:0 read as zero).
pub const FENCE_ADDR_LO: u32 = 0x040;
/// `FENCE_ADDR_HI` (RW): fence write-back logical address, bits 63:32.
pub const FENCE_ADDR_HI: u32 = 0x044;
/// `FENCE_VALUE_LO` (RO): last completed fence value, bits 31:0.
pub const FENCE_VALUE_LO: u32 = 0x048;
/// `FENCE_VALUE_HI` (RO): last completed fence value, bits 63:32.
pub const FENCE_VALUE_HI: u32 = 0x04C;

/// `INT_STATUS` (RO): latched interrupt causes, see the `INT_*` bits.
pub const INT_STATUS: u32 = 0x050;
/// `INT_ENABLE` (RW): interrupt mask; the line is asserted while `INT_STATUS & INT_ENABLE != 0`.
pub const INT_ENABLE: u32 = 0x054;
/// `INT_ACK` (WO): write 1 to a bit to clear it in `INT_STATUS`.
pub const INT_ACK: u32 = 0x058;

/// `FAULT_STATUS` (RO): the latched fault, see the `FAULT_*` fields. 0 when no fault.
pub const FAULT_STATUS: u32 = 0x060;
/// `FAULT_ADDR_LO` (RO): faulting address, bits 31:0 (VA if `FAULT_VIRTUAL`, else logical).
pub const FAULT_ADDR_LO: u32 = 0x064;
/// `FAULT_ADDR_HI` (RO): faulting address, bits 63:32.
pub const FAULT_ADDR_HI: u32 = 0x068;
/// `FAULT_CMD_OFFSET` (RO): byte offset, within the command buffer, of the faulting command
/// (`0xFFFF_FFFF` if the fault was not raised by a command).
pub const FAULT_CMD_OFFSET: u32 = 0x06C;

/// Base of the per-ASID root registers; ASID `n` is at `ASID_BASE + n * ASID_STRIDE`.
pub const ASID_BASE: u32 = 0x100;
/// Distance between two ASIDs' register blocks.
pub const ASID_STRIDE: u32 = 0x10;
/// Offset within an ASID block: root table logical address bits 31:0 (bits 11:0 read as zero).
pub const ASID_ROOT_LO: u32 = 0x0;
/// Offset within an ASID block: root table logical address bits 63:32.
pub const ASID_ROOT_HI: u32 = 0x4;
/// Offset within an ASID block: number of valid root entries (0 = ASID disabled; max 512).
pub const ASID_ROOT_ENTRIES: u32 = 0x8;
/// Number of address-space ids (ASIDs 0..=15).
pub const NUM_ASIDS: usize = 16;

/// Offset of ASID `asid`'s root-address-low register.
#[must_use]
pub const fn asid_root_lo(asid: u32) -> u32 {
    ASID_BASE + asid * ASID_STRIDE + ASID_ROOT_LO
}
/// Offset of ASID `asid`'s root-address-high register.
#[must_use]
pub const fn asid_root_hi(asid: u32) -> u32 {
    ASID_BASE + asid * ASID_STRIDE + ASID_ROOT_HI
}
/// Offset of ASID `asid`'s root-entry-count register.
#[must_use]
pub const fn asid_root_entries(asid: u32) -> u32 {
    ASID_BASE + asid * ASID_STRIDE + ASID_ROOT_ENTRIES
}

/// Value of `ID`: `0x5247_5055`, ASCII "RGPU" read most-significant byte first.
pub const ID_VALUE: u32 = 0x5247_5055;
/// Major programming-model version.
pub const VERSION_MAJOR: u16 = 1;
/// Minor programming-model version.
pub const VERSION_MINOR: u16 = 0;
/// Value of `VERSION`.
pub const VERSION_VALUE: u32 = ((VERSION_MAJOR as u32) << 16) | VERSION_MINOR as u32;

/// Width of the device's DMA (logical) addresses: a transaction that touches an address at or
/// above `1 << DMA_ADDRESS_BITS` (1 TiB) is not issued and faults as a bus error (spec §4).
/// The driver reports `2^40 − 1` as DXGK_PHYSICAL_MEMORY_CAPS.HighestVisibleAddress.
pub const DMA_ADDRESS_BITS: u32 = 40;
/// First logical address the device cannot reach.
pub const DMA_ADDRESS_LIMIT: u64 = 1 << DMA_ADDRESS_BITS;

/// `CAPS[7:0]`: number of virtual-address bits.
pub const CAPS_VA_BITS_MASK: u32 = 0xFF;
/// `CAPS[11:8]`: number of page-table levels.
pub const CAPS_LEVELS_SHIFT: u32 = 8;
/// `CAPS[15:12]`: index bits per page-table level.
pub const CAPS_INDEX_BITS_SHIFT: u32 = 12;
/// `CAPS[23:16]`: number of ASIDs.
pub const CAPS_ASIDS_SHIFT: u32 = 16;
/// `CAPS[24]`: 4 KiB pages supported.
pub const CAPS_PAGE_4K: u32 = 1 << 24;
/// `CAPS[25]`: 64 KiB pages supported (64 KiB-page leaf tables, level-1 `TABLE_64K`).
pub const CAPS_PAGE_64K: u32 = 1 << 25;
/// `CAPS[26]`: the `ZERO` PTE bit is supported.
pub const CAPS_PTE_ZERO: u32 = 1 << 26;
/// `CAPS[27]`: invalid translations are never cached in the TLB.
pub const CAPS_INVALID_NOT_CACHED: u32 = 1 << 27;
/// Value of `CAPS` for this device.
pub const CAPS_VALUE: u32 = crate::pte::VA_BITS
    | ((crate::pte::LEVELS as u32) << CAPS_LEVELS_SHIFT)
    | (crate::pte::INDEX_BITS << CAPS_INDEX_BITS_SHIFT)
    | ((NUM_ASIDS as u32) << CAPS_ASIDS_SHIFT)
    | CAPS_PAGE_4K
    | CAPS_PAGE_64K
    | CAPS_PTE_ZERO
    | CAPS_INVALID_NOT_CACHED;

/// `STATUS[0]`: the device is ready for programming (1 after reset completes).
pub const STATUS_READY: u32 = 1 << 0;
/// `STATUS[1]`: the ring is enabled (mirrors a successful `CONTROL_RING_ENABLE`).
pub const STATUS_RING_ENABLED: u32 = 1 << 1;
/// `STATUS[2]`: work is pending (`RING_HEAD` != published tail, or an entry is in progress).
pub const STATUS_BUSY: u32 = 1 << 2;
/// `STATUS[3]`: the ring is halted on a fault until `RESET`.
pub const STATUS_HALTED: u32 = 1 << 3;

/// `RESET[0]`: write 1 to reset.
pub const RESET_ASSERT: u32 = 1 << 0;

/// `CONTROL[0]`: enable the ring (0→1 validates `RING_BASE`/`RING_SIZE` and zeroes head/tail).
pub const CONTROL_RING_ENABLE: u32 = 1 << 0;
/// `CONTROL[1]`: FENCE commands write their value to `FENCE_ADDR`.
pub const CONTROL_FENCE_WB_ENABLE: u32 = 1 << 1;
/// Writable bits of `CONTROL`.
pub const CONTROL_MASK: u32 = CONTROL_RING_ENABLE | CONTROL_FENCE_WB_ENABLE;

/// Smallest accepted `RING_SIZE` in bytes (4 entries).
pub const RING_SIZE_MIN: u32 = 128;
/// Largest accepted `RING_SIZE` in bytes (512 Ki entries).
pub const RING_SIZE_MAX: u32 = 1 << 24;

/// `INT_*[0]`: a FENCE command with the IRQ flag completed.
pub const INT_FENCE: u32 = 1 << 0;
/// `INT_*[1]`: a fault was latched in `FAULT_STATUS` and the ring halted.
pub const INT_FAULT: u32 = 1 << 1;
/// Implemented interrupt bits.
pub const INT_MASK: u32 = INT_FENCE | INT_FAULT;

/// `FAULT_STATUS[7:0]`: fault type, a [`crate::device::FaultKind`] value.
pub const FAULT_TYPE_MASK: u32 = 0xFF;
/// `FAULT_STATUS[11:8]`: access source, a [`crate::bus::DmaSource`] value.
pub const FAULT_SOURCE_SHIFT: u32 = 8;
/// Mask of the source field after shifting.
pub const FAULT_SOURCE_MASK: u32 = 0xF;
/// `FAULT_STATUS[15:12]`: page-table level at which a walk fault occurred (0 = leaf).
pub const FAULT_LEVEL_SHIFT: u32 = 12;
/// Mask of the level field after shifting.
pub const FAULT_LEVEL_MASK: u32 = 0xF;
/// `FAULT_STATUS[19:16]`: ASID of a virtual access.
pub const FAULT_ASID_SHIFT: u32 = 16;
/// Mask of the ASID field after shifting.
pub const FAULT_ASID_MASK: u32 = 0xF;
/// `FAULT_STATUS[20]`: `FAULT_ADDR` is a GPU virtual address in `FAULT_ASID`.
pub const FAULT_VIRTUAL: u32 = 1 << 20;
/// `FAULT_STATUS[21]`: the faulting access was a write.
pub const FAULT_WRITE: u32 = 1 << 21;
/// `FAULT_STATUS[23:22]`: IOMMU reason for an `IOMMU` fault: 1 not mapped, 2 read-only, 3 bus error.
pub const FAULT_IOMMU_SHIFT: u32 = 22;
/// Mask of the IOMMU-reason field after shifting.
pub const FAULT_IOMMU_MASK: u32 = 0x3;
/// `FAULT_STATUS[31]`: a fault is latched.
pub const FAULT_VALID: u32 = 1 << 31;
/// `FAULT_CMD_OFFSET` value when the fault was not raised by a command.
pub const FAULT_NO_CMD: u32 = 0xFFFF_FFFF;
