//! [`DxgkInterface`]: the adapter's copy of `DXGKRNL_INTERFACE`, version-aware.
//!
//! Dxgkrnl hands StartDevice a `DXGKRNL_INTERFACE` whose `Size` and `Version` say which members
//! exist. A callback newer than the negotiated version is not a NULL to call through: it is a
//! typed [`Unavailable`] error.

use core::fmt;
use core::mem::{offset_of, size_of};

use dxgk_sys::{DXGKRNL_INTERFACE, HANDLE};

use crate::NtError;

/// A callback the negotiated interface does not provide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unavailable {
    /// The DXGKRNL_INTERFACE member.
    pub callback: &'static str,
    /// The first interface version that has it.
    pub since: u32,
    /// The interface version Dxgkrnl gave us.
    pub negotiated: u32,
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} needs interface {:#x}, Dxgkrnl provides {:#x}",
            self.callback, self.since, self.negotiated
        )
    }
}

impl From<Unavailable> for NtError {
    fn from(_: Unavailable) -> Self {
        NtError::PROCEDURE_NOT_FOUND
    }
}

/// Why StartDevice's interface was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InterfaceError {
    /// NULL pointer.
    Null,
    /// `Version` is older than the oldest rgpu supports.
    TooOld { version: u32, minimum: u32 },
    /// `Size` is smaller than the interface of that `Version` must be.
    TooSmall { size: u32, expected: usize },
}

impl From<InterfaceError> for NtError {
    fn from(e: InterfaceError) -> Self {
        match e {
            InterfaceError::Null | InterfaceError::TooSmall { .. } => NtError::INVALID_PARAMETER,
            InterfaceError::TooOld { .. } => NtError::NOT_SUPPORTED,
        }
    }
}

/// Size of `DXGKRNL_INTERFACE` at `version` (the newest known size at or below it).
pub fn interface_size_at(version: u32) -> Option<usize> {
    dxgk_sys::DXGKRNL_INTERFACE_SIZE_BY_VERSION
        .iter()
        .rev()
        .find(|(v, _)| *v <= version)
        .map(|&(_, s)| s)
}

/// The adapter's copy of the DXGKRNL_INTERFACE Dxgkrnl passed to StartDevice.
///
/// # Invariants
/// `raw` holds the first `min(Size, size_of::<DXGKRNL_INTERFACE>())` bytes of the OS's
/// structure and zeros after them, and `Size` is at least the size of the `Version` layout, so
/// every member gated at or below `Version` is the OS's value.
#[derive(Clone, Copy)]
pub struct DxgkInterface {
    raw: DXGKRNL_INTERFACE,
}

// SAFETY: a read-only copy of Dxgkrnl's function pointers and its opaque DeviceHandle; Dxgkrnl's
// callbacks may be called from any thread (each at its documented IRQL, which the methods
// state), so moving or sharing the copy between threads (e.g. with a system worker thread) is
// sound.
unsafe impl Send for DxgkInterface {}
// SAFETY: as above: `&DxgkInterface` only reads the copy.
unsafe impl Sync for DxgkInterface {}

impl fmt::Debug for DxgkInterface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DxgkInterface")
            .field("size", &self.raw.Size)
            .field("version", &format_args!("{:#x}", self.raw.Version))
            .finish()
    }
}

macro_rules! callback {
    ($self:ident, $member:ident, $since:expr) => {{
        let end = offset_of!(DXGKRNL_INTERFACE, $member) + size_of::<usize>();
        match $self.raw.$member {
            Some(f) if $self.raw.Version >= $since && $self.raw.Size as usize >= end => Ok(f),
            _ => Err(Unavailable {
                callback: stringify!($member),
                since: $since,
                negotiated: $self.raw.Version,
            }),
        }
    }};
}

impl DxgkInterface {
    /// Copies the interface StartDevice received, refusing versions below `minimum_version`.
    ///
    /// # Safety
    /// `iface` must be NULL or point to a DXGKRNL_INTERFACE of at least its `Size` bytes.
    pub unsafe fn copy_from(
        iface: *const DXGKRNL_INTERFACE,
        minimum_version: u32,
    ) -> Result<Self, InterfaceError> {
        if iface.is_null() {
            return Err(InterfaceError::Null);
        }
        // SAFETY: non-null, and the caller guarantees at least the two leading ULONGs exist.
        let size = unsafe { (*iface).Size };
        // SAFETY: as above.
        let version = unsafe { (*iface).Version };
        if version < minimum_version {
            return Err(InterfaceError::TooOld {
                version,
                minimum: minimum_version,
            });
        }
        let expected = interface_size_at(version).unwrap_or(size_of::<DXGKRNL_INTERFACE>());
        if (size as usize) < expected.min(size_of::<DXGKRNL_INTERFACE>()) {
            return Err(InterfaceError::TooSmall { size, expected });
        }
        let mut raw = DXGKRNL_INTERFACE::default();
        let n = (size as usize).min(size_of::<DXGKRNL_INTERFACE>());
        // SAFETY: the caller guarantees `Size` readable bytes at `iface`; `raw` has room for `n`
        // bytes; the regions do not overlap.
        unsafe {
            core::ptr::copy_nonoverlapping(
                iface.cast::<u8>(),
                (&mut raw as *mut DXGKRNL_INTERFACE).cast::<u8>(),
                n,
            )
        };
        // INVARIANT: `n` bytes copied, the rest zero; Size checked against Version's layout.
        Ok(Self { raw })
    }

    /// The interface version Dxgkrnl implements.
    pub fn version(&self) -> u32 {
        self.raw.Version
    }

    /// `DeviceHandle`: the first argument of most callbacks.
    pub fn device_handle(&self) -> HANDLE {
        self.raw.DeviceHandle
    }

    /// `DxgkCbAllocatePagesForMdl` (2.4).
    pub fn allocate_pages_for_mdl(
        &self,
    ) -> Result<dxgk_sys::PFN_DXGKCB_ALLOCATEPAGESFORMDL, Unavailable> {
        callback!(
            self,
            DxgkCbAllocatePagesForMdl,
            dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM2_4
        )
    }

    /// `DxgkCbFreePagesFromMdl` (2.4).
    pub fn free_pages_from_mdl(
        &self,
    ) -> Result<dxgk_sys::PFN_DXGKCB_FREEPAGESFROMMDL, Unavailable> {
        callback!(
            self,
            DxgkCbFreePagesFromMdl,
            dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM2_4
        )
    }

    /// `DxgkCbMapMdlToIoMmu` (2.4).
    pub fn map_mdl_to_iommu(&self) -> Result<dxgk_sys::PFN_DXGKCB_MAPMDLTOIOMMU, Unavailable> {
        callback!(
            self,
            DxgkCbMapMdlToIoMmu,
            dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM2_4
        )
    }

    /// `DxgkCbUnmapMdlFromIoMmu` (2.4).
    pub fn unmap_mdl_from_iommu(
        &self,
    ) -> Result<dxgk_sys::PFN_DXGKCB_UNMAPMDLFROMIOMMU, Unavailable> {
        callback!(
            self,
            DxgkCbUnmapMdlFromIoMmu,
            dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM2_4
        )
    }

    /// `DxgkCbAllocateContiguousMemory` (2.4).
    pub fn allocate_contiguous_memory(
        &self,
    ) -> Result<dxgk_sys::PFN_DXGKCB_ALLOCATECONTIGUOUSMEMORY, Unavailable> {
        callback!(
            self,
            DxgkCbAllocateContiguousMemory,
            dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM2_4
        )
    }

    /// `DxgkCbFreeContiguousMemory` (2.4).
    pub fn free_contiguous_memory(
        &self,
    ) -> Result<dxgk_sys::PFN_DXGKCB_FREECONTIGUOUSMEMORY, Unavailable> {
        callback!(
            self,
            DxgkCbFreeContiguousMemory,
            dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM2_4
        )
    }

    /// `DxgkCbCreatePhysicalMemoryObject` (header gate 2.9; Dxgkrnl provides it from WDDM 3.0, NULL before).
    pub fn create_physical_memory_object(
        &self,
    ) -> Result<dxgk_sys::PFN_DXGKCB_CREATEPHYSICALMEMORYOBJECT, Unavailable> {
        callback!(
            self,
            DxgkCbCreatePhysicalMemoryObject,
            dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM2_9
        )
    }

    /// `DxgkCbDestroyPhysicalMemoryObject` (header gate 2.9; Dxgkrnl provides it from WDDM 3.0, NULL before).
    pub fn destroy_physical_memory_object(
        &self,
    ) -> Result<dxgk_sys::PFN_DXGKCB_DESTROYPHYSICALMEMORYOBJECT, Unavailable> {
        callback!(
            self,
            DxgkCbDestroyPhysicalMemoryObject,
            dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM2_9
        )
    }

    /// `DxgkCbMapPhysicalMemory` (header gate 2.9; Dxgkrnl provides it from WDDM 3.0, NULL before).
    pub fn map_physical_memory(
        &self,
    ) -> Result<dxgk_sys::PFN_DXGKCB_MAPPHYSICALMEMORY, Unavailable> {
        callback!(
            self,
            DxgkCbMapPhysicalMemory,
            dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM2_9
        )
    }

    /// `DxgkCbUnmapPhysicalMemory` (header gate 2.9; Dxgkrnl provides it from WDDM 3.0, NULL before).
    pub fn unmap_physical_memory(
        &self,
    ) -> Result<dxgk_sys::PFN_DXGKCB_UNMAPPHYSICALMEMORY, Unavailable> {
        callback!(
            self,
            DxgkCbUnmapPhysicalMemory,
            dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM2_9
        )
    }

    /// `DxgkCbAllocateAdl` (header gate 2.9; Dxgkrnl provides it from WDDM 3.0, NULL before).
    pub fn allocate_adl(&self) -> Result<dxgk_sys::PFN_DXGKCB_ALLOCATEADL, Unavailable> {
        callback!(
            self,
            DxgkCbAllocateAdl,
            dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM2_9
        )
    }

    /// `DxgkCbFreeAdl` (header gate 2.9; Dxgkrnl provides it from WDDM 3.0, NULL before).
    pub fn free_adl(&self) -> Result<dxgk_sys::PFN_DXGKCB_FREEADL, Unavailable> {
        callback!(
            self,
            DxgkCbFreeAdl,
            dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM2_9
        )
    }

    /// `DxgkCbGetDeviceInformation` (Vista).
    pub fn get_device_information(
        &self,
    ) -> Result<dxgk_sys::PFN_DXGKCB_GET_DEVICE_INFORMATION, Unavailable> {
        callback!(
            self,
            DxgkCbGetDeviceInformation,
            dxgk_sys::DXGKDDI_INTERFACE_VERSION_VISTA
        )
    }

    /// `DxgkCbMapMemory` (Vista).
    pub fn map_memory(&self) -> Result<dxgk_sys::PFN_DXGKCB_MAP_MEMORY, Unavailable> {
        callback!(
            self,
            DxgkCbMapMemory,
            dxgk_sys::DXGKDDI_INTERFACE_VERSION_VISTA
        )
    }

    /// `DxgkCbUnmapMemory` (Vista).
    pub fn unmap_memory(&self) -> Result<dxgk_sys::PFN_DXGKCB_UNMAP_MEMORY, Unavailable> {
        callback!(
            self,
            DxgkCbUnmapMemory,
            dxgk_sys::DXGKDDI_INTERFACE_VERSION_VISTA
        )
    }

    /// `DxgkCbNotifyInterrupt` (Vista).
    pub(crate) fn notify_interrupt_fn(
        &self,
    ) -> Result<dxgk_sys::PFN_DXGKCB_NOTIFY_INTERRUPT, Unavailable> {
        callback!(
            self,
            DxgkCbNotifyInterrupt,
            dxgk_sys::DXGKDDI_INTERFACE_VERSION_VISTA
        )
    }

    /// `DxgkCbNotifyDpc` (Vista).
    pub(crate) fn notify_dpc_fn(&self) -> Result<dxgk_sys::PFN_DXGKCB_NOTIFY_DPC, Unavailable> {
        callback!(
            self,
            DxgkCbNotifyDpc,
            dxgk_sys::DXGKDDI_INTERFACE_VERSION_VISTA
        )
    }

    /// `DxgkCbSynchronizeExecution` (Vista).
    pub(crate) fn synchronize_execution_fn(
        &self,
    ) -> Result<dxgk_sys::PFN_DXGKCB_SYNCHRONIZE_EXECUTION, Unavailable> {
        callback!(
            self,
            DxgkCbSynchronizeExecution,
            dxgk_sys::DXGKDDI_INTERFACE_VERSION_VISTA
        )
    }

    /// `DxgkCbQueueDpc` (Vista).
    pub(crate) fn queue_dpc_fn(&self) -> Result<dxgk_sys::PFN_DXGKCB_QUEUE_DPC, Unavailable> {
        callback!(
            self,
            DxgkCbQueueDpc,
            dxgk_sys::DXGKDDI_INTERFACE_VERSION_VISTA
        )
    }
}

/// d3dkmddi.h's `DXGKARGCB_GETHANDLEDATA` (dxgk-sys passes it as `*const c_void`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
#[allow(non_snake_case)]
pub struct RawGetHandleData {
    /// `hObject`: Dxgkrnl's (D3DKMT) handle.
    pub hObject: dxgk_sys::D3DKMT_HANDLE,
    /// `Type`: [`HANDLE_TYPE_ALLOCATION`] or [`HANDLE_TYPE_RESOURCE`].
    pub Type: i32,
    /// `Flags` (bit 0: `DeviceSpecific`).
    pub Flags: u32,
}

/// `DXGK_HANDLE_ALLOCATION`.
pub const HANDLE_TYPE_ALLOCATION: i32 = 1;
/// `DXGK_HANDLE_RESOURCE`.
pub const HANDLE_TYPE_RESOURCE: i32 = 2;

impl DxgkInterface {
    /// `DxgkCbGetHandleData` (Vista) for an allocation: the `hAllocation` the driver returned
    /// from CreateAllocation for the allocation Dxgkrnl calls `dxgk_allocation` (the
    /// `hAllocation` of DXGK_OPENALLOCATIONINFO). `Ok(None)` when Dxgkrnl knows no such
    /// allocation. PASSIVE_LEVEL (OpenAllocation).
    pub fn allocation_handle_data(
        &self,
        dxgk_allocation: dxgk_sys::D3DKMT_HANDLE,
    ) -> Result<Option<crate::handle::AllocationHandle>, Unavailable> {
        let f = callback!(
            self,
            DxgkCbGetHandleData,
            dxgk_sys::DXGKDDI_INTERFACE_VERSION_VISTA
        )?;
        let args = RawGetHandleData {
            hObject: dxgk_allocation,
            Type: HANDLE_TYPE_ALLOCATION,
            Flags: 0,
        };
        // SAFETY: Dxgkrnl's callback with a valid argument block that lives for the call.
        let h = unsafe { f((&args as *const RawGetHandleData).cast()) };
        Ok(crate::handle::AllocationHandle::from_raw(h))
    }
}

/// What rgpu reads of `DXGK_START_INFO` (StartDevice), decoded once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartInfo {
    /// `RequiredDmaQueueEntry`: DMA buffers Dxgkrnl may queue per node.
    pub required_dma_queue_entries: u32,
    /// `AdapterLuid` (low, high).
    pub adapter_luid: (u32, i32),
}

impl StartInfo {
    /// Decodes StartDevice's `DXGK_START_INFO`; STATUS_INVALID_PARAMETER for NULL.
    ///
    /// # Safety
    /// `info` must be NULL or point to the DXGK_START_INFO Dxgkrnl passed to StartDevice. Only
    /// the members present since WDDM 1.0 are read.
    pub unsafe fn from_raw(info: *const dxgk_sys::DXGK_START_INFO) -> crate::NtResult<Self> {
        // SAFETY: NULL or a valid DXGK_START_INFO (caller).
        let info = unsafe { info.as_ref() }.ok_or(NtError::INVALID_PARAMETER)?;
        Ok(Self {
            required_dma_queue_entries: info.RequiredDmaQueueEntry,
            adapter_luid: (info.AdapterLuid.LowPart, info.AdapterLuid.HighPart),
        })
    }
}
