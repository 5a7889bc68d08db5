//! The device's address spaces: which ASIDs are in use, the root table each was last given,
//! and the Dxgkrnl process that owns it.
//!
//! This is the driver's copy of the device's ASID registers: a device reset (TDR, power-up)
//! clears the device's, and these are what the driver restores.

use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};

use dxgk::handle::DxgkProcessHandle;
use dxgk::{NtError, NtResult};
use rgpu_hw::regs::NUM_ASIDS;

/// A root page table as the device registers hold it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Root {
    /// Logical address of the root table (4 KiB aligned).
    pub address: u64,
    /// Entries of the root table the device may use (0 = the ASID is disabled).
    pub entries: u32,
}

/// ASID allocation, roots and owning processes.
///
/// # Invariants
/// A root is stored as `address | entries` with `address` 4 KiB aligned and `entries ≤ 512`
/// (so it fits the low 12 bits); 0 means no root.
pub struct AddressSpaces {
    /// Bit n set = ASID n in use; ASID 0 belongs to the system paging process.
    in_use: AtomicU32,
    roots: [AtomicU64; NUM_ASIDS],
    /// Dxgkrnl's process handle (hDxgkProcess) per ASID, for DMA_PAGE_FAULTED; NULL when free.
    processes: [AtomicPtr<core::ffi::c_void>; NUM_ASIDS],
}

impl Default for AddressSpaces {
    fn default() -> Self {
        Self {
            in_use: AtomicU32::new(0),
            roots: [const { AtomicU64::new(0) }; NUM_ASIDS],
            processes: [const { AtomicPtr::new(core::ptr::null_mut()) }; NUM_ASIDS],
        }
    }
}

impl AddressSpaces {
    /// Reserves an ASID: 0 for the system paging process, 1..=15 for the others.
    /// STATUS_INSUFFICIENT_RESOURCES when all are in use (rgpu does not virtualize ASIDs).
    pub fn allocate(&self, system: bool) -> NtResult<u8> {
        let candidates = if system { 0..1 } else { 1..NUM_ASIDS as u8 };
        for asid in candidates {
            let bit = 1u32 << asid;
            if self.in_use.fetch_or(bit, Ordering::AcqRel) & bit == 0 {
                return Ok(asid);
            }
        }
        Err(NtError::INSUFFICIENT_RESOURCES)
    }

    /// Returns `asid` to the free set, forgetting its root and process.
    pub fn release(&self, asid: u8) {
        let i = usize::from(asid);
        if let Some(slot) = self.processes.get(i) {
            slot.store(core::ptr::null_mut(), Ordering::Release);
        }
        if let Some(slot) = self.roots.get(i) {
            slot.store(0, Ordering::Release);
        }
        if i < NUM_ASIDS {
            self.in_use.fetch_and(!(1u32 << asid), Ordering::AcqRel);
        }
    }

    /// Records the Dxgkrnl process that owns `asid`.
    pub fn set_process(&self, asid: u8, process: Option<DxgkProcessHandle>) {
        if let Some(slot) = self.processes.get(usize::from(asid)) {
            let raw = process.map_or(core::ptr::null_mut(), |p| p.as_raw());
            slot.store(raw, Ordering::Release);
        }
    }

    /// The Dxgkrnl process that owns `asid`, if any.
    pub fn process(&self, asid: u32) -> Option<DxgkProcessHandle> {
        let slot = self.processes.get(asid as usize)?;
        DxgkProcessHandle::from_raw(slot.load(Ordering::Acquire))
    }

    /// Records `asid`'s root (entries clamped to one table) and returns what to program now
    /// (the address as given; the restored copy drops bits below 4 KiB, which the device
    /// ignores).
    pub fn set_root(&self, asid: u8, address: u64, entries: u32) -> Root {
        let root = Root {
            address,
            entries: entries.min(rgpu_hw::pte::ENTRIES_PER_TABLE as u32),
        };
        if let Some(slot) = self.roots.get(usize::from(asid)) {
            // INVARIANT: aligned address, entries ≤ 512.
            slot.store(
                (address & !0xFFF) | u64::from(root.entries),
                Ordering::Release,
            );
        }
        root
    }

    /// Every ASID's root (entries 0 for ASIDs without one), to restore after a reset.
    pub fn roots(&self) -> impl Iterator<Item = (u32, Root)> + '_ {
        self.roots.iter().enumerate().map(|(asid, slot)| {
            let v = slot.load(Ordering::Acquire);
            let root = Root {
                address: v & !0xFFF,
                entries: (v & 0x3FF) as u32,
            };
            (asid as u32, root)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asids_are_allocated_once_and_released() {
        let s = AddressSpaces::default();
        assert_eq!(s.allocate(true), Ok(0));
        assert_eq!(s.allocate(true), Err(NtError::INSUFFICIENT_RESOURCES));
        let user: [u8; NUM_ASIDS - 1] =
            core::array::from_fn(|_| s.allocate(false).expect("free ASID"));
        assert_eq!(user[0], 1);
        assert_eq!(s.allocate(false), Err(NtError::INSUFFICIENT_RESOURCES));
        s.set_root(5, 0x1234_5678_9000 | 0x123, 9999);
        s.release(5);
        assert_eq!(s.allocate(false), Ok(5));
        assert_eq!(
            s.roots().nth(5).map(|(_, r)| r),
            Some(Root {
                address: 0,
                entries: 0
            }),
            "a released ASID forgets its root"
        );
    }

    #[test]
    fn roots_are_aligned_and_clamped_to_one_table() {
        let s = AddressSpaces::default();
        let r = s.set_root(3, 0xABC_D000, 4096);
        assert_eq!(
            r,
            Root {
                address: 0xABC_D000,
                entries: 512
            }
        );
        assert_eq!(s.roots().nth(3), Some((3, r)));
        s.set_root(4, 0xABC_D000 | 0xFFF, 1);
        assert_eq!(s.roots().nth(4).map(|(_, r)| r.address), Some(0xABC_D000));
    }
}
