//! Typed views of the small DDI argument blocks: what the driver reads from each, and the one
//! place it writes each output. Decoding checks the pointer once; the getters return typed
//! values (handles by kind, flags as `bool`) and the `complete` methods write every output
//! member the DDI defines, so a thunk cannot forget one or write a member of another version.
//!
//! Only members present since WDDM 2.0 are read or written: every interface rgpu accepts
//! (2.4+) has them, whatever size the block has grown to since.
//!
//! The larger requests have their own modules: [`crate::query`] (QueryAdapterInfo) and
//! `crate::paging` (BuildPagingBuffer).

use dxgk_sys as sys;

use crate::handle::{ContextHandle, DeviceHandle, DxgkProcessHandle, ProcessHandle};
use crate::{NtError, NtResult};

/// A node and engine, as DDIs that address one engine pass them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Engine {
    /// `NodeOrdinal`.
    pub node: u32,
    /// `EngineOrdinal`.
    pub engine: u32,
}

macro_rules! view {
    ($(#[$doc:meta])* $name:ident, $raw:ty) => {
        $(#[$doc])*
        pub struct $name<'a> {
            raw: &'a mut $raw,
        }

        impl core::fmt::Debug for $name<'_> {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str(stringify!($name))
            }
        }

        impl<'a> $name<'a> {
            /// Decodes Dxgkrnl's argument block; STATUS_INVALID_PARAMETER for NULL.
            ///
            /// # Safety
            /// `raw` must be NULL or point to the argument block Dxgkrnl passed to the DDI,
            /// valid for `'a` and used by nothing else meanwhile.
            pub unsafe fn from_raw(raw: *mut $raw) -> NtResult<Self> {
                // SAFETY: NULL or a valid, exclusive argument block (caller).
                let raw = unsafe { raw.as_mut() }.ok_or(NtError::INVALID_PARAMETER)?;
                Ok(Self { raw })
            }
        }
    };
}

view!(
    /// DxgkDdiCreateDevice's arguments.
    CreateDevice,
    sys::DXGKARG_CREATEDEVICE
);

impl CreateDevice<'_> {
    /// `hKmdProcess`: the process that owns the device (WDDM 2.0+).
    pub fn process(&self) -> Option<ProcessHandle> {
        ProcessHandle::from_raw(self.raw.hKmdProcess)
    }

    /// Returns the new device's handle to Dxgkrnl.
    pub fn complete(self, device: DeviceHandle) {
        self.raw.hDevice = device.as_raw();
    }
}

/// What DxgkDdiCreateContext tells VidMm about a new context's buffers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ContextInfo {
    /// `DmaBufferSize`.
    pub dma_buffer_size: u32,
    /// `DmaBufferSegmentSet`: bit n = segment n + 1.
    pub dma_buffer_segment_set: u32,
    /// `DmaBufferPrivateDataSize`.
    pub dma_buffer_private_data_size: u32,
    /// `AllocationListSize`.
    pub allocation_list_size: u32,
    /// `PatchLocationListSize`.
    pub patch_location_list_size: u32,
}

view!(
    /// DxgkDdiCreateContext's arguments.
    CreateContext,
    sys::DXGKARG_CREATECONTEXT
);

impl CreateContext<'_> {
    /// `NodeOrdinal`.
    pub fn node(&self) -> u32 {
        self.raw.NodeOrdinal
    }

    /// `Flags.SystemContext`: the paging context of the system device.
    pub fn system(&self) -> bool {
        self.raw.Flags.SystemContext() != 0
    }

    /// Returns the new context's handle and its buffer sizes to Dxgkrnl.
    pub fn complete(self, context: ContextHandle, info: ContextInfo) {
        let out = &mut self.raw.ContextInfo;
        out.DmaBufferSize = info.dma_buffer_size;
        out.DmaBufferSegmentSet = info.dma_buffer_segment_set;
        out.DmaBufferPrivateDataSize = info.dma_buffer_private_data_size;
        out.AllocationListSize = info.allocation_list_size;
        out.PatchLocationListSize = info.patch_location_list_size;
        self.raw.hContext = context.as_raw();
    }
}

view!(
    /// DxgkDdiCreateProcess's arguments.
    CreateProcess,
    sys::DXGKARG_CREATEPROCESS
);

impl CreateProcess<'_> {
    /// `hDxgkProcess`: Dxgkrnl's handle of the process.
    pub fn dxgk_process(&self) -> Option<DxgkProcessHandle> {
        DxgkProcessHandle::from_raw(self.raw.hDxgkProcess)
    }

    /// `Flags.SystemProcess`: the system paging process.
    pub fn system(&self) -> bool {
        self.raw.Flags.SystemProcess() != 0
    }

    /// Returns the driver's process object to Dxgkrnl.
    pub fn complete(self, process: ProcessHandle) {
        self.raw.hKmdProcess = process.as_raw();
    }
}

/// DxgkDdiSetRootPageTable's arguments (read-only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetRootPageTable {
    /// `hContext`.
    pub context: Option<ContextHandle>,
    /// `Address.SegmentId`: the segment the root table lives in (the driver's
    /// PageTableSegmentId or PagingProcessPageTableSegmentId answer).
    pub segment: u32,
    /// `Address.SegmentOffset`: the root table's address in its segment.
    pub address: u64,
    /// `NumEntries`.
    pub entries: u32,
}

impl SetRootPageTable {
    /// Decodes Dxgkrnl's argument block; STATUS_INVALID_PARAMETER for NULL.
    ///
    /// # Safety
    /// `raw` must be NULL or point to a valid DXGKARG_SETROOTPAGETABLE.
    pub unsafe fn from_raw(raw: *const sys::DXGKARG_SETROOTPAGETABLE) -> NtResult<Self> {
        // SAFETY: NULL or valid (caller).
        let raw = unsafe { raw.as_ref() }.ok_or(NtError::INVALID_PARAMETER)?;
        Ok(Self {
            context: ContextHandle::from_raw(raw.hContext),
            segment: raw.Address.SegmentId,
            address: raw.Address.SegmentOffset,
            entries: raw.NumEntries,
        })
    }
}

/// DxgkDdiSubmitCommandVirtual's arguments (read-only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubmitCommandVirtual {
    /// `hContext`.
    pub context: Option<ContextHandle>,
    /// `NodeOrdinal` / `EngineOrdinal`.
    pub engine: Engine,
    /// `DmaBufferVirtualAddress`.
    pub dma_buffer_va: u64,
    /// `DmaBufferSize` in bytes.
    pub dma_buffer_size: u32,
    /// `SubmissionFenceId`.
    pub fence: u32,
}

impl SubmitCommandVirtual {
    /// Decodes Dxgkrnl's argument block; STATUS_INVALID_PARAMETER for NULL.
    ///
    /// # Safety
    /// `raw` must be NULL or point to a valid DXGKARG_SUBMITCOMMANDVIRTUAL.
    pub unsafe fn from_raw(raw: *const sys::DXGKARG_SUBMITCOMMANDVIRTUAL) -> NtResult<Self> {
        // SAFETY: NULL or valid (caller).
        let raw = unsafe { raw.as_ref() }.ok_or(NtError::INVALID_PARAMETER)?;
        Ok(Self {
            context: ContextHandle::from_raw(raw.hContext),
            engine: Engine {
                node: raw.NodeOrdinal,
                engine: raw.EngineOrdinal,
            },
            dma_buffer_va: raw.DmaBufferVirtualAddress,
            dma_buffer_size: raw.DmaBufferSize,
            fence: raw.SubmissionFenceId,
        })
    }
}

/// DxgkDdiPreemptCommand's arguments (read-only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PreemptCommand {
    /// `PreemptionFenceId`.
    pub fence: u32,
    /// `NodeOrdinal` / `EngineOrdinal`.
    pub engine: Engine,
}

impl PreemptCommand {
    /// Decodes Dxgkrnl's argument block; STATUS_INVALID_PARAMETER for NULL.
    ///
    /// # Safety
    /// `raw` must be NULL or point to a valid DXGKARG_PREEMPTCOMMAND.
    pub unsafe fn from_raw(raw: *const sys::DXGKARG_PREEMPTCOMMAND) -> NtResult<Self> {
        // SAFETY: NULL or valid (caller).
        let raw = unsafe { raw.as_ref() }.ok_or(NtError::INVALID_PARAMETER)?;
        Ok(Self {
            fence: raw.PreemptionFenceId,
            engine: Engine {
                node: raw.NodeOrdinal,
                engine: raw.EngineOrdinal,
            },
        })
    }
}

view!(
    /// DxgkDdiResetEngine's arguments.
    ResetEngine,
    sys::DXGKARG_RESETENGINE
);

impl ResetEngine<'_> {
    /// The engine to reset.
    pub fn engine(&self) -> Engine {
        Engine {
            node: self.raw.NodeOrdinal,
            engine: self.raw.EngineOrdinal,
        }
    }

    /// Reports the last fence the reset aborted.
    pub fn complete(self, last_aborted_fence: u32) {
        self.raw.LastAbortedFenceId = last_aborted_fence;
    }
}

view!(
    /// DxgkDdiQueryEngineStatus's arguments.
    QueryEngineStatus,
    sys::DXGKARG_QUERYENGINESTATUS
);

impl QueryEngineStatus<'_> {
    /// The engine asked about.
    pub fn engine(&self) -> Engine {
        Engine {
            node: self.raw.NodeOrdinal,
            engine: self.raw.EngineOrdinal,
        }
    }

    /// Reports whether the engine is responsive.
    pub fn complete(self, responsive: bool) {
        self.raw.EngineStatus.set_Responsive(u32::from(responsive));
    }
}

view!(
    /// DxgkDdiQueryDependentEngineGroup's arguments.
    QueryDependentEngineGroup,
    sys::DXGKARG_QUERYDEPENDENTENGINEGROUP
);

impl QueryDependentEngineGroup<'_> {
    /// The engine asked about.
    pub fn engine(&self) -> Engine {
        Engine {
            node: self.raw.NodeOrdinal,
            engine: self.raw.EngineOrdinal,
        }
    }

    /// Reports the nodes the engine depends on (bit n = node n).
    pub fn complete(self, dependent_nodes: u64) {
        self.raw.DependentNodeOrdinalMask = dependent_nodes;
    }
}

view!(
    /// DxgkDdiCalibrateGpuClock's output block.
    CalibrateGpuClock,
    sys::DXGKARG_CALIBRATEGPUCLOCK
);

impl CalibrateGpuClock<'_> {
    /// Reports a GPU clock frequency and a simultaneous (GPU, CPU) counter pair.
    pub fn complete(self, gpu_frequency: u64, gpu_counter: u64, cpu_counter: u64) {
        self.raw.GpuFrequency = gpu_frequency;
        self.raw.GpuClockCounter = gpu_counter;
        self.raw.CpuClockCounter = cpu_counter;
    }
}

/// What DxgkDdiGetNodeMetadata reports for one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeMetadata {
    /// `EngineType`.
    pub engine_type: sys::DXGK_ENGINE_TYPE,
    /// `FriendlyName` (UTF-16, zero-padded).
    pub friendly_name: [u16; 32],
    /// `GpuMmuSupported`.
    pub gpummu: bool,
    /// `IoMmuSupported`.
    pub iommu: bool,
}

view!(
    /// DxgkDdiGetNodeMetadata's output block (packed: align 1).
    GetNodeMetadata,
    sys::DXGKARG_GETNODEMETADATA
);

impl GetNodeMetadata<'_> {
    /// Writes the node's metadata.
    pub fn complete(self, node: &NodeMetadata) {
        self.raw.EngineType = node.engine_type;
        self.raw.FriendlyName = node.friendly_name;
        self.raw.GpuMmuSupported = u8::from(node.gpummu);
        self.raw.IoMmuSupported = u8::from(node.iommu);
    }
}

view!(
    /// DxgkDdiGetRootPageTableSize's arguments.
    GetRootPageTableSize,
    sys::DXGKARG_GETROOTPAGETABLESIZE
);

impl GetRootPageTableSize<'_> {
    /// Reports the entries of a root table.
    pub fn complete(self, entries: u32) {
        self.raw.NumberOfPte = entries;
    }
}
