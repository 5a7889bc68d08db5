//! [`SystemMemory`]: system memory a driver owns (rings, fence pages, tables, pooled pages),
//! behind one interface whatever Dxgkrnl contract provides it:
//!
//! * [`MemoryPath::Mdl`] (WDDM 2.4 IOMMU isolation, and WDDM 3.x adapters that did not opt in
//!   to DMA remapping): `DxgkCbAllocatePagesForMdl` + `DxgkCbMapMdlToIoMmu`
//!   ([`crate::memory::DeviceMemory`], or bare [`crate::memory::MdlPages`] for CPU-only memory).
//! * [`MemoryPath::Adl`] (WDDM 3.0 IOMMU DMA remapping): `DxgkCbCreatePhysicalMemoryObject` +
//!   `DxgkCbMapPhysicalMemory` + `DxgkCbAllocateAdl` ([`crate::pmo::MappedObject`]); Learn says
//!   the 2.4 callbacks must not be used by a driver that opted in.
//!
//! Users see byte access through the CPU mapping and the device (logical) address of each
//! page; they never learn which path they have. Everything is PASSIVE_LEVEL (a [`Passive`]
//! token to allocate; `Drop` at PASSIVE_LEVEL too).

use dxgk_sys::DXGK_MEMORY_CACHING_TYPE;

use crate::interface::DxgkInterface;
use crate::irql::Passive;
use crate::memory::{DeviceMemory, LogicalAddress, MdlPages, PAGE_SIZE};
use crate::pmo::MappedObject;
use crate::{NtError, NtResult};

/// Which Dxgkrnl memory contract a driver's own memory comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryPath {
    /// WDDM 2.4: MDL pages mapped with `DxgkCbMapMdlToIoMmu`.
    Mdl,
    /// WDDM 3.0 DMA remapping: physical memory objects, CPU mappings and ADLs.
    Adl,
}

impl MemoryPath {
    /// The Dxgkrnl callbacks this path allocates with, by name (for logs and reports).
    pub fn callbacks(self) -> &'static [&'static str] {
        match self {
            MemoryPath::Mdl => &[
                "DxgkCbAllocatePagesForMdl",
                "DxgkCbMapMdlToIoMmu",
                "DxgkCbUnmapMdlFromIoMmu",
                "DxgkCbFreePagesFromMdl",
            ],
            MemoryPath::Adl => &[
                "DxgkCbCreatePhysicalMemoryObject",
                "DxgkCbMapPhysicalMemory",
                "DxgkCbAllocateAdl",
                "DxgkCbFreeAdl",
                "DxgkCbUnmapPhysicalMemory",
                "DxgkCbDestroyPhysicalMemoryObject",
            ],
        }
    }

    /// True when `iface` provides every callback of this path.
    pub fn available(self, iface: &DxgkInterface) -> bool {
        match self {
            MemoryPath::Mdl => {
                iface.allocate_pages_for_mdl().is_ok()
                    && iface.free_pages_from_mdl().is_ok()
                    && iface.map_mdl_to_iommu().is_ok()
                    && iface.unmap_mdl_from_iommu().is_ok()
            }
            MemoryPath::Adl => {
                iface.create_physical_memory_object().is_ok()
                    && iface.destroy_physical_memory_object().is_ok()
                    && iface.map_physical_memory().is_ok()
                    && iface.unmap_physical_memory().is_ok()
                    && iface.allocate_adl().is_ok()
                    && iface.free_adl().is_ok()
            }
        }
    }
}

enum Inner {
    Mapped(DeviceMemory),
    CpuOnly(MdlPages),
    Object(MappedObject),
}

/// Driver-owned system memory from either [`MemoryPath`]: CPU access to its bytes and, unless
/// allocated CPU-only, the device address of each page, valid while this value lives.
pub struct SystemMemory {
    inner: Inner,
}

impl core::fmt::Debug for SystemMemory {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SystemMemory")
            .field("path", &self.path())
            .field("bytes", &self.len())
            .field("device_visible", &self.is_device_visible())
            .finish()
    }
}

impl SystemMemory {
    /// Allocates `bytes` (rounded up to whole pages, > 0) of zeroed, device-visible memory
    /// through `path`. STATUS_PROCEDURE_NOT_FOUND when the interface lacks the path's callbacks;
    /// Dxgkrnl's status otherwise. Nothing stays allocated on failure.
    pub fn allocate(
        iface: &DxgkInterface,
        passive: &Passive,
        path: MemoryPath,
        bytes: usize,
        cache: DXGK_MEMORY_CACHING_TYPE,
    ) -> NtResult<Self> {
        Self::new(iface, passive, path, bytes, cache, true)
    }

    /// As [`SystemMemory::allocate`], for memory only the CPU touches (no IOMMU mapping, no
    /// ADL: [`SystemMemory::page_address`] is None).
    pub fn allocate_cpu_only(
        iface: &DxgkInterface,
        passive: &Passive,
        path: MemoryPath,
        bytes: usize,
        cache: DXGK_MEMORY_CACHING_TYPE,
    ) -> NtResult<Self> {
        Self::new(iface, passive, path, bytes, cache, false)
    }

    fn new(
        iface: &DxgkInterface,
        passive: &Passive,
        path: MemoryPath,
        bytes: usize,
        cache: DXGK_MEMORY_CACHING_TYPE,
        device_visible: bool,
    ) -> NtResult<Self> {
        let inner = match (path, device_visible) {
            (MemoryPath::Mdl, true) => {
                Inner::Mapped(DeviceMemory::allocate(iface, passive, bytes, cache)?)
            }
            (MemoryPath::Mdl, false) => {
                Inner::CpuOnly(MdlPages::allocate(iface, passive, bytes, cache)?)
            }
            (MemoryPath::Adl, visible) => {
                Inner::Object(MappedObject::create(iface, passive, bytes, cache, visible)?)
            }
        };
        Ok(Self { inner })
    }

    /// The contract this memory came from.
    pub fn path(&self) -> MemoryPath {
        match self.inner {
            Inner::Mapped(_) | Inner::CpuOnly(_) => MemoryPath::Mdl,
            Inner::Object(_) => MemoryPath::Adl,
        }
    }

    /// Size in bytes (whole pages).
    pub fn len(&self) -> usize {
        match &self.inner {
            Inner::Mapped(m) => m.pages().len(),
            Inner::CpuOnly(p) => p.len(),
            Inner::Object(o) => o.len(),
        }
    }

    /// Always false: at least one page.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of 4 KiB pages.
    pub fn page_count(&self) -> usize {
        self.len() / PAGE_SIZE
    }

    /// True unless allocated CPU-only.
    pub fn is_device_visible(&self) -> bool {
        match &self.inner {
            Inner::Mapped(_) => true,
            Inner::CpuOnly(_) => false,
            Inner::Object(o) => o.is_device_visible(),
        }
    }

    /// Device (logical) address of 4 KiB page `index`: None past the end or when CPU-only.
    pub fn page_address(&self, index: usize) -> Option<LogicalAddress> {
        match &self.inner {
            Inner::Mapped(m) => m.page_address(index),
            Inner::CpuOnly(_) => None,
            Inner::Object(o) => o.page_address(index),
        }
    }

    /// Device address of byte `offset`.
    pub fn address_of(&self, offset: usize) -> Option<LogicalAddress> {
        let page = self.page_address(offset / PAGE_SIZE)?;
        Some(LogicalAddress(page.0 + (offset % PAGE_SIZE) as u64))
    }

    /// The memory as DMA-shared memory: `&self` reads and writes (the soft engine thread and
    /// the driver both reach it; see [`crate::memory::SharedPages`]).
    pub fn shared(&self) -> crate::memory::SharedPages<'_> {
        match &self.inner {
            Inner::Mapped(m) => m.pages().shared(),
            Inner::CpuOnly(p) => p.shared(),
            Inner::Object(o) => o.shared(),
        }
    }

    /// Copies `data` into the memory at `offset`. STATUS_INVALID_PARAMETER past the end.
    pub fn write(&mut self, offset: usize, data: &[u8]) -> NtResult<()> {
        match &mut self.inner {
            Inner::Mapped(m) => m.pages_mut().write(offset, data),
            Inner::CpuOnly(p) => p.write(offset, data),
            Inner::Object(o) => {
                range_mut(o.as_mut_slice(), offset, data.len())?.copy_from_slice(data);
                Ok(())
            }
        }
    }

    /// Copies bytes at `offset` into `out`. STATUS_INVALID_PARAMETER past the end.
    pub fn read(&self, offset: usize, out: &mut [u8]) -> NtResult<()> {
        match &self.inner {
            Inner::Mapped(m) => m.pages().read(offset, out),
            Inner::CpuOnly(p) => p.read(offset, out),
            Inner::Object(o) => {
                let end = offset
                    .checked_add(out.len())
                    .filter(|&e| e <= o.len())
                    .ok_or(NtError::INVALID_PARAMETER)?;
                out.copy_from_slice(&o.as_slice()[offset..end]);
                Ok(())
            }
        }
    }

    /// Fills `[offset, offset + len)` with `byte`. STATUS_INVALID_PARAMETER past the end.
    pub fn fill(&mut self, offset: usize, len: usize, byte: u8) -> NtResult<()> {
        match &mut self.inner {
            Inner::Mapped(m) => m.pages_mut().fill(offset, len, byte),
            Inner::CpuOnly(p) => p.fill(offset, len, byte),
            Inner::Object(o) => {
                range_mut(o.as_mut_slice(), offset, len)?.fill(byte);
                Ok(())
            }
        }
    }
}

fn range_mut(bytes: &mut [u8], offset: usize, len: usize) -> NtResult<&mut [u8]> {
    let end = offset
        .checked_add(len)
        .filter(|&e| e <= bytes.len())
        .ok_or(NtError::INVALID_PARAMETER)?;
    Ok(&mut bytes[offset..end])
}
