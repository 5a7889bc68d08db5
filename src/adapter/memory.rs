//! Which Dxgkrnl memory contract the adapter's own memory (ring, fence page, GART table, page
//! pool) comes from, chosen once per StartDevice.
//!
//! * **WDDM 3.0 DMA remapping** ([`MemoryPath::Adl`]: physical memory objects, CPU mappings,
//!   ADLs) when all of: the negotiated interface is WDDM 3.0 or newer, Dxgkrnl asked
//!   `DXGKQAITYPE_IOMMU_CAPS` before StartDevice and rgpu answered `DmaRemappingSupported`
//!   (the opt-in handshake Learn describes: a Dxgkrnl that does not ask has no remapping
//!   contract with this adapter), and the interface provides all six callbacks.
//! * **WDDM 2.4 IOMMU isolation** ([`MemoryPath::Mdl`]: `DxgkCbAllocatePagesForMdl` +
//!   `DxgkCbMapMdlToIoMmu`) otherwise: Windows 10 1803 … Windows 10 21H2 (interfaces 2.4 …
//!   2.9), and 3.x adapters that did not opt in.
//!
//! Everything else (ring, fences, paging, the pool) holds [`dxgk::device_memory::SystemMemory`]
//! and never learns which path it has.

#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicBool, Ordering};

use dxgk::device_memory::MemoryPath;
use dxgk::interface::DxgkInterface;

/// The remapping opt-in as seen from QueryAdapterInfo: set when rgpu answered
/// `DXGKQAITYPE_IOMMU_CAPS` with `DmaRemappingSupported` before StartDevice. It stays set
/// across stop/start (Dxgkrnl asks once, after AddDevice).
#[derive(Debug, Default)]
pub struct RemappingOptIn(AtomicBool);

impl RemappingOptIn {
    /// Records an IOMMU_CAPS answer given while the adapter was not started.
    pub fn record(&self, dma_remapping_supported: bool) {
        if dma_remapping_supported {
            self.0.store(true, Ordering::Release);
        }
    }

    /// Whether Dxgkrnl was told before StartDevice that rgpu supports DMA remapping.
    pub fn offered(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Why [`select`] chose the path it did (logged at StartDevice).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Interface ≥ WDDM 3.0, opted in, callbacks present.
    Remapping,
    /// The negotiated interface predates WDDM 3.0.
    InterfaceTooOld,
    /// Dxgkrnl never asked IOMMU_CAPS before StartDevice (no opt-in).
    NotOptedIn,
    /// Interface ≥ 3.0 but a remapping callback is NULL.
    CallbacksMissing,
}

/// Chooses the memory path for a start on `iface` (negotiated `interface_version`).
pub fn select(iface: &DxgkInterface, interface_version: u32, opt_in: bool) -> (MemoryPath, Reason) {
    if interface_version < dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM3_0 {
        (MemoryPath::Mdl, Reason::InterfaceTooOld)
    } else if !opt_in {
        (MemoryPath::Mdl, Reason::NotOptedIn)
    } else if !MemoryPath::Adl.available(iface) {
        (MemoryPath::Mdl, Reason::CallbacksMissing)
    } else {
        (MemoryPath::Adl, Reason::Remapping)
    }
}

/// A log-friendly name of the path.
pub fn describe(path: MemoryPath, reason: Reason) -> &'static str {
    match (path, reason) {
        (MemoryPath::Adl, _) => "WDDM 3.0 DMA remapping (physical memory objects + ADLs)",
        (MemoryPath::Mdl, Reason::InterfaceTooOld) => {
            "WDDM 2.4 MDL pages + IOMMU mappings (interface before WDDM 3.0)"
        }
        (MemoryPath::Mdl, Reason::NotOptedIn) => {
            "WDDM 2.4 MDL pages + IOMMU mappings (Dxgkrnl did not ask IOMMU_CAPS before start)"
        }
        (MemoryPath::Mdl, _) => "WDDM 2.4 MDL pages + IOMMU mappings (remapping callbacks missing)",
    }
}
