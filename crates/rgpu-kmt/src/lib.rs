//! rgpu's user-mode client: the D3DKMT calls a client makes to drive the rgpu kernel-mode
//! driver, behind one trait ([`Kmt`]) with two backends, and the code that runs on either —
//! [`selftest`] and [`info`] — which the `rgpu-kmt` CLI wraps.
//!
//! | backend | where | what is underneath |
//! |---------|-------|--------------------|
//! | `sim::SimKmt` | not Windows (host tests, `cargo run -p rgpu-kmt`) | dxgk-sim's D3DKMT front end on a simulated machine with the real rgpu driver loaded |
//! | `windows::WinKmt` | `cfg(windows)` | `gdi32.dll`'s `D3DKMT*` functions through Microsoft's `windows` crate |
//!
//! The trait is the D3DKMT layer, not a convenience API: one method per D3DKMT call, each taking
//! the members of its D3DKMT structure that a GpuMmu client sets and returning the ones it gets
//! back. Where the two systems differ, the backend hides the difference and says so on the
//! method (paging queues, bounded waits, Lock2's pointer). Allocation private data and escape
//! buffers are the `rgpu_abi` bytes, passed through unchanged.

use std::fmt;
use std::time::Duration;

pub mod info;
pub mod selftest;
pub mod status;

#[cfg(not(windows))]
pub mod sim;
#[cfg(windows)]
pub mod windows;

pub use status::Status;

/// The PCI IDs of the rgpu device as `inf/rgpu.inx` binds them (`PCI\VEN_FFFE&DEV_52A0`; the
/// vendor ID is a placeholder until rgpu has an assigned one). A client recognises the rgpu
/// adapter among all of the system's by these, then confirms with the identity escape.
pub const RGPU_PCI_VENDOR_ID: u32 = 0xFFFE;
/// See [`RGPU_PCI_VENDOR_ID`].
pub const RGPU_PCI_DEVICE_ID: u32 = 0x52A0;

/// How every device description in `inf/rgpu.inx` begins (`rgpu.DeviceDesc`,
/// `rgpu.TestDeviceDesc`): what D3DKMTQueryAdapterInfo(KMTQAITYPE_DRIVER_DESCRIPTION) returns
/// for an rgpu adapter.
///
/// The root-enumerated `ROOT\RGPU` (the soft rgpu on a test machine) has no PCI configuration
/// space, and what Windows reports as its PCI IDs is not documented; so a client also takes an
/// adapter whose driver description starts with this as a candidate — and, like one with rgpu's
/// PCI IDs, confirms it with the identity escape before using it. No escape is ever sent to an
/// adapter that matches neither. The query exists from Windows 10 1903 on; on older systems
/// only the PCI IDs identify rgpu.
pub const RGPU_DRIVER_DESCRIPTION_PREFIX: &str = "rgpu render-only GPU";

macro_rules! handles {
    ($($(#[$doc:meta])* $name:ident;)*) => {$(
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub u32);
    )*};
}

handles! {
    /// A D3DKMT_HANDLE of an opened adapter.
    Adapter;
    /// A D3DKMT_HANDLE of a device.
    Device;
    /// A D3DKMT_HANDLE of an allocation (as seen by the device that created or opened it).
    Allocation;
    /// A D3DKMT_HANDLE of a (virtual) context.
    Context;
    /// A D3DKMT_HANDLE of a monitored fence (synchronization object).
    Fence;
    /// A global share handle (`hGlobalShare` of D3DKMTCreateAllocation2 with `CreateShared`).
    GlobalShare;
}

/// An adapter LUID (`LowPart | HighPart << 32`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Luid(pub u64);

impl fmt::Display for Luid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}:{:08x}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// One entry of D3DKMTEnumAdapters2 (the adapter is opened for the caller; close it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdapterInfo {
    /// `hAdapter`.
    pub adapter: Adapter,
    /// `AdapterLuid`.
    pub luid: Luid,
    /// `NumOfSources` (0 for a render-only adapter such as rgpu).
    pub sources: u32,
}

/// D3DKMT_DEVICE_IDS from D3DKMTQueryAdapterInfo(KMTQAITYPE_PHYSICALADAPTERDEVICEIDS).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceIds {
    /// `VendorID`.
    pub vendor_id: u32,
    /// `DeviceID`.
    pub device_id: u32,
    /// `RevisionID`.
    pub revision_id: u32,
}

impl DeviceIds {
    /// True for the IDs the rgpu INF binds.
    pub fn is_rgpu(&self) -> bool {
        self.vendor_id == RGPU_PCI_VENDOR_ID && self.device_id == RGPU_PCI_DEVICE_ID
    }
}

/// What D3DKMTCreateAllocation2 returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Created {
    /// `pAllocationInfo2[i].hAllocation`, in the order the private data was given.
    pub allocations: Vec<Allocation>,
    /// `hGlobalShare` when created shared.
    pub share: Option<GlobalShare>,
}

/// One allocation D3DKMTOpenResource opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opened {
    /// `pOpenAllocationInfo2[i].hAllocation` on the opening device.
    pub allocation: Allocation,
    /// The creator's allocation private data, as the KMD keeps it.
    pub private_data: Vec<u8>,
}

/// How a CPU wait on monitored fences ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Every fence reached its value.
    Reached,
    /// The timeout passed first (STATUS_TIMEOUT).
    TimedOut,
}

/// A D3DKMT call that returned a failure status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KmtError {
    /// The D3DKMT function, e.g. `"D3DKMTCreateAllocation2"`.
    pub call: &'static str,
    /// What it returned.
    pub status: Status,
}

impl fmt::Display for KmtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} returned {}", self.call, self.status)
    }
}

impl std::error::Error for KmtError {}

/// The result of a D3DKMT call.
pub type KmtResult<T> = Result<T, KmtError>;

/// The D3DKMT calls rgpu's client makes. See the crate documentation for the backends.
///
/// Handles are only meaningful to the backend that returned them. Every method that fails
/// returns the call's NTSTATUS unchanged in [`KmtError`].
pub trait Kmt {
    /// Which backend this is, for reports ("simulator (…)", "Windows (gdi32)").
    fn describe(&self) -> String;

    /// D3DKMTEnumAdapters2: every adapter, each opened for the caller.
    fn enum_adapters2(&mut self) -> KmtResult<Vec<AdapterInfo>>;
    /// D3DKMTOpenAdapterFromLuid.
    fn open_adapter_from_luid(&mut self, luid: Luid) -> KmtResult<Adapter>;
    /// D3DKMTQueryAdapterInfo(KMTQAITYPE_PHYSICALADAPTERDEVICEIDS), physical adapter 0.
    fn query_device_ids(&mut self, adapter: Adapter) -> KmtResult<DeviceIds>;
    /// D3DKMTQueryAdapterInfo(KMTQAITYPE_DRIVER_DESCRIPTION): the adapter's driver description
    /// (the INF's device description), Windows 10 1903 and later.
    fn query_driver_description(&mut self, adapter: Adapter) -> KmtResult<String>;
    /// D3DKMTCloseAdapter.
    fn close_adapter(&mut self, adapter: Adapter) -> KmtResult<()>;

    /// D3DKMTCreateDevice. The Windows backend also creates the device's paging queue, which
    /// the GPU VA and residency calls below use.
    fn create_device(&mut self, adapter: Adapter) -> KmtResult<Device>;
    /// D3DKMTDestroyDevice: also destroys what the device still holds (allocations, contexts,
    /// fences), as Dxgkrnl does.
    fn destroy_device(&mut self, device: Device) -> KmtResult<()>;

    /// D3DKMTCreateAllocation2: one allocation per private-data buffer (`rgpu_abi`
    /// allocation data), all or nothing; `shared` also returns a global share handle.
    fn create_allocation2(
        &mut self,
        device: Device,
        private_data: &[&[u8]],
        shared: bool,
    ) -> KmtResult<Created>;
    /// D3DKMTOpenResource: the allocations shared under `share`, opened on `device`.
    fn open_resource(&mut self, device: Device, share: GlobalShare) -> KmtResult<Vec<Opened>>;
    /// D3DKMTDestroyAllocation2 (their GPU VA mappings go with them).
    fn destroy_allocation2(&mut self, device: Device, allocations: &[Allocation]) -> KmtResult<()>;

    /// D3DKMTReserveGpuVirtualAddress in the caller's address space on `adapter`: `size`
    /// bytes (a multiple of 64 KiB) at `base` (0: the system chooses). Returns the address.
    fn reserve_gpu_virtual_address(
        &mut self,
        adapter: Adapter,
        base: u64,
        size: u64,
    ) -> KmtResult<u64>;
    /// D3DKMTMapGpuVirtualAddress of the whole allocation (`pages` 4 KiB pages) at `va`,
    /// inside a reservation. Returns once the mapping is usable (the Windows backend waits for
    /// the paging fence).
    fn map_gpu_virtual_address(
        &mut self,
        device: Device,
        va: u64,
        allocation: Allocation,
        pages: u64,
    ) -> KmtResult<u64>;
    /// D3DKMTFreeGpuVirtualAddress of a whole reservation.
    fn free_gpu_virtual_address(&mut self, adapter: Adapter, base: u64, size: u64)
        -> KmtResult<()>;

    /// D3DKMTMakeResident; returns once resident (paging fence waited for).
    fn make_resident(&mut self, device: Device, allocations: &[Allocation]) -> KmtResult<()>;
    /// D3DKMTEvict; returns `NumBytesToTrim`.
    fn evict(&mut self, device: Device, allocations: &[Allocation]) -> KmtResult<u64>;

    /// D3DKMTCreateContextVirtual on node `node` (contexts go with their device).
    fn create_context_virtual(&mut self, device: Device, node: u32) -> KmtResult<Context>;
    /// D3DKMTSubmitCommand of the DMA buffer at GPU VA `commands`, `length` bytes.
    fn submit_command(&mut self, context: Context, commands: u64, length: u32) -> KmtResult<()>;

    /// D3DKMTCreateSynchronizationObject2, type D3DDDI_MONITORED_FENCE.
    fn create_monitored_fence(&mut self, device: Device, initial_value: u64) -> KmtResult<Fence>;
    /// D3DKMTSignalSynchronizationObjectFromGpu2: `fences` take `value` once the work
    /// submitted to `context` so far is done.
    fn signal_from_gpu2(&mut self, context: Context, fences: &[Fence], value: u64)
        -> KmtResult<()>;
    /// D3DKMTWaitForSynchronizationObjectFromCpu, bounded by `timeout` (the Windows backend
    /// passes an event as `hAsyncEvent` and waits for it; the simulator, being synchronous,
    /// times out at once when nothing pending could signal).
    fn wait_from_cpu(
        &mut self,
        device: Device,
        fences: &[(Fence, u64)],
        timeout: Duration,
    ) -> KmtResult<Wait>;
    /// D3DKMTDestroySynchronizationObject.
    fn destroy_synchronization_object(&mut self, fence: Fence) -> KmtResult<()>;

    /// D3DKMTLock2 of a CPU-visible allocation; returns the bytes the mapping covers.
    fn lock2(&mut self, device: Device, allocation: Allocation) -> KmtResult<u64>;
    /// Reads `out.len()` bytes at `offset` through the Lock2 mapping (`pData` on Windows).
    fn read_locked(
        &mut self,
        device: Device,
        allocation: Allocation,
        offset: u64,
        out: &mut [u8],
    ) -> KmtResult<()>;
    /// Writes `data` at `offset` through the Lock2 mapping.
    fn write_locked(
        &mut self,
        device: Device,
        allocation: Allocation,
        offset: u64,
        data: &[u8],
    ) -> KmtResult<()>;
    /// D3DKMTUnlock2.
    fn unlock2(&mut self, device: Device, allocation: Allocation) -> KmtResult<()>;

    /// D3DKMTEscape (D3DKMT_ESCAPE_DRIVERPRIVATE) with `data` in and out (`rgpu_abi` escape).
    fn escape(
        &mut self,
        adapter: Adapter,
        device: Option<Device>,
        data: &mut [u8],
    ) -> KmtResult<()>;
}

/// The calls a backend's handle-bookkeeping refuses itself, before the system sees them (a
/// read outside a Lock2 mapping, say), fail with this status.
pub const STATUS_INVALID_PARAMETER: Status = Status(0xC000_000Du32 as i32);

/// 4 KiB, the page size of the allocation sizes and GPU VA maps.
pub const PAGE_BYTES: u64 = 4096;

/// Bytes an allocation occupies for the given private data (`size_bytes` rounded up to whole
/// pages, as the KMD rounds it), or `None` for data that is not valid `rgpu_abi` data.
pub fn allocation_bytes(private_data: &[u8]) -> Option<u64> {
    let d = rgpu_abi::AllocationData::decode(private_data).ok()?;
    Some(d.size_bytes.div_ceil(PAGE_BYTES) * PAGE_BYTES)
}
