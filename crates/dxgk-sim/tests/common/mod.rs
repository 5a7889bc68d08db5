//! Thin callers of the DXGKRNL_INTERFACE memory callbacks for the simulator's own tests.
#![allow(dead_code)]

use dxgk_sim::{IommuMode, Machine, MachineConfig};
use dxgk_sys as sys;

/// Both IOMMU modes on a WDDM 2.4+ machine.
pub fn machines() -> Vec<Machine> {
    vec![
        Machine::new(MachineConfig::windows_10_1803()),
        Machine::new(MachineConfig::windows_11_22h2()),
        Machine::new(MachineConfig::windows_10_1803().with_iommu(IommuMode::Remapped)),
        Machine::new(MachineConfig::windows_11_22h2().with_iommu(IommuMode::Identity)),
    ]
}

/// An adapter interface plus its callbacks.
pub struct Cb {
    pub i: sys::DXGKRNL_INTERFACE,
}

impl Cb {
    pub fn new(m: &Machine) -> Self {
        Self {
            i: m.interface_for_tests(sys::DXGKDDI_INTERFACE_VERSION_WDDM2_4),
        }
    }

    pub fn alloc_args(bytes: usize) -> sys::DXGKARGCB_ALLOCATEPAGESFORMDL {
        let mut a = sys::DXGKARGCB_ALLOCATEPAGESFORMDL {
            TotalBytes: bytes,
            CacheType: sys::DXGK_MEMORY_CACHING_TYPE_CACHED,
            ..Default::default()
        };
        a.HighAddress.QuadPart = i64::MAX;
        a
    }

    pub fn alloc_with(&self, a: &mut sys::DXGKARGCB_ALLOCATEPAGESFORMDL) -> sys::NTSTATUS {
        // SAFETY: the simulator's callback with a valid argument structure.
        unsafe { self.i.DxgkCbAllocatePagesForMdl.unwrap()(self.i.DeviceHandle, a) }
    }

    /// (status, handle, mdl)
    pub fn alloc(&self, bytes: usize) -> (sys::NTSTATUS, sys::HANDLE, *mut sys::MDL) {
        let mut a = Self::alloc_args(bytes);
        let s = self.alloc_with(&mut a);
        (s, a.hMemoryHandle, a.pMdl)
    }

    pub fn free(&self, h: sys::HANDLE) -> sys::NTSTATUS {
        let a = sys::DXGKARGCB_FREEPAGESFROMMDL { hMemoryHandle: h };
        // SAFETY: as above.
        unsafe { self.i.DxgkCbFreePagesFromMdl.unwrap()(self.i.DeviceHandle, &a) }
    }

    pub fn map(&self, mdl: *mut sys::MDL) -> (sys::NTSTATUS, sys::HANDLE) {
        let mut a = sys::DXGKARGCB_MAPMDLTOIOMMU {
            pMdl: mdl,
            ..Default::default()
        };
        // SAFETY: as above.
        let s = unsafe { self.i.DxgkCbMapMdlToIoMmu.unwrap()(self.i.DeviceHandle, &mut a) };
        (s, a.hMemoryHandle)
    }

    pub fn unmap(&self, h: sys::HANDLE) {
        let a = sys::DXGKARGCB_UNMAPMDLFROMIOMMU { hMemoryHandle: h };
        // SAFETY: as above.
        unsafe { self.i.DxgkCbUnmapMdlFromIoMmu.unwrap()(self.i.DeviceHandle, &a) }
    }

    /// (status, handle, kernel VA)
    pub fn contig(&self, bytes: usize) -> (sys::NTSTATUS, sys::HANDLE, sys::PVOID) {
        let mut a = sys::DXGKARGCB_ALLOCATECONTIGUOUSMEMORY {
            NumberOfBytes: bytes,
            CacheType: sys::DXGK_MEMORY_CACHING_TYPE_NON_CACHED,
            ..Default::default()
        };
        a.HighestAcceptableAddress.QuadPart = i64::MAX;
        // SAFETY: as above.
        let s =
            unsafe { self.i.DxgkCbAllocateContiguousMemory.unwrap()(self.i.DeviceHandle, &mut a) };
        (s, a.hMemoryHandle, a.pMemory)
    }

    pub fn free_contig(&self, h: sys::HANDLE) -> sys::NTSTATUS {
        let a = sys::DXGKARGCB_FREECONTIGUOUSMEMORY { hMemoryHandle: h };
        // SAFETY: as above.
        unsafe { self.i.DxgkCbFreeContiguousMemory.unwrap()(self.i.DeviceHandle, &a) }
    }
}

/// The PFN array of an MDL.
pub fn pfns(mdl: *mut sys::MDL) -> Vec<usize> {
    // SAFETY: a live MDL from the simulator.
    let n = unsafe { sys::MmGetMdlByteCount(mdl) } as usize / 4096;
    // SAFETY: as above.
    let array = unsafe { sys::MmGetMdlPfnArray(mdl) };
    // SAFETY: the PFN array has `n` entries.
    unsafe { std::slice::from_raw_parts(array, n) }.to_vec()
}

/// Maps an MDL to system VA.
pub fn sys_va(mdl: *mut sys::MDL) -> *mut u8 {
    // SAFETY: a live MDL describing locked pages.
    unsafe { sys::MmGetSystemAddressForMdlSafe(mdl, 0) }.cast()
}

pub fn unmap_va(va: *mut u8, mdl: *mut sys::MDL) {
    // SAFETY: the simulator validates the pair.
    unsafe { sys::MmUnmapLockedPages(va.cast(), mdl) }
}

pub fn raise(to: sys::KIRQL) -> sys::KIRQL {
    // SAFETY: simulated IRQL; callers lower again.
    unsafe { sys::KeRaiseIrql(to) }
}

pub fn lower(to: sys::KIRQL) {
    // SAFETY: restores a raise.
    unsafe { sys::KeLowerIrql(to) }
}
