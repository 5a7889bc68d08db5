//! The per-handle objects rgpu hands Dxgkrnl: devices, contexts and processes.
//!
//! Each is a pool block whose address is the handle (`hDevice`, `hContext`, `hKmdProcess`); the
//! DDI entry layer creates them with `PoolBox::into_raw` and turns handles back into references.
//! Lifetimes follow Dxgkrnl's order: a process outlives its devices, a device its contexts, and
//! all of them are destroyed before RemoveDevice frees the adapter.

#![forbid(unsafe_code)]

use dxgk::pool::PoolTag;

use crate::adapter::Adapter;

/// Pool tag of devices.
pub const DEVICE_TAG: PoolTag = PoolTag::new(*b"RgDv");
/// Pool tag of contexts.
pub const CONTEXT_TAG: PoolTag = PoolTag::new(*b"RgCx");
/// Pool tag of processes.
pub const PROCESS_TAG: PoolTag = PoolTag::new(*b"RgPr");

/// DMA buffer size rgpu asks VidMm for, per context.
pub const DMA_BUFFER_SIZE: u32 = 64 * 1024;

/// What CreateContext tells VidMm: DMA buffers of [`DMA_BUFFER_SIZE`] in the aperture segment,
/// no private data, no allocation or patch-location lists (GpuMmu: buffers use GPU VAs).
pub fn context_info() -> dxgk::args::ContextInfo {
    dxgk::args::ContextInfo {
        dma_buffer_size: DMA_BUFFER_SIZE,
        dma_buffer_segment_set: 1 << (crate::caps::APERTURE_SEGMENT_ID - 1),
        ..Default::default()
    }
}

/// A D3D device (DxgkDdiCreateDevice).
pub struct Device {
    /// The adapter the device was created on (outlives it).
    pub adapter: *const Adapter,
    /// The process that owns the device (WDDM 2.0+ `hKmdProcess`; outlives it).
    pub process: *const Process,
}

/// A scheduling context (DxgkDdiCreateContext).
pub struct Context {
    /// Node the context runs on.
    pub node: u32,
    /// Device ASID of the owning process.
    pub asid: u8,
    /// Root page table set by DxgkDdiSetRootPageTable: (segment offset, entries).
    pub root: Option<(u64, u32)>,
    /// True for the system (paging) context.
    pub system: bool,
}

/// A GPU VA space owner (DxgkDdiCreateProcess).
pub struct Process {
    /// True for the system paging process.
    pub system: bool,
    /// The device address space this process runs in.
    pub asid: u8,
}
