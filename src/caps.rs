//! DxgkDdiQueryAdapterInfo: what rgpu declares to Dxgkrnl.
//!
//! rgpu is a render-only GpuMmu adapter with IOMMU isolation:
//! * DRIVERCAPS: VirtualAddressingSupported + GpuMmuSupported + IoMmuSecureModeSupported
//!   (+ MapAperture2Supported from interface 2.9: rgpu handles MAP_APERTURE_SEGMENT2), one
//!   engine, no preemption (buffers run to completion; TDR handles hangs), WDDMVersion matching
//!   the negotiated interface.
//! * GPUMMUCAPS / PAGETABLELEVELDESC: the rgpu-hw page-table format — 4 levels of 512 × 8-byte
//!   entries (4 KiB tables), 48-bit VA, read-only / no-execute / zero / cache-coherent PTE bits,
//!   page tables updated by the GPU from paging buffers (GPU_VIRTUAL).
//! * Segment model: one **aperture segment** (id 1): system memory reaches the device through a
//!   GART-like table rgpu fills from the MDLs VidMm passes in MAP/UNMAP_APERTURE_SEGMENT, so
//!   every page the device can reach is one the driver has seen as an MDL. Page tables live in
//!   the implicit system-memory segment, id `NbSegment + 1` = 2, as Microsoft's compute-only
//!   sample does (Learn says 0; reference §8 item 7 records the disagreement). On a soft
//!   adapter page tables live in the aperture ([`page_table_segment`], docs/soft-rgpu.md).
//!
//! * PHYSICAL_MEMORY_CAPS / IOMMU_CAPS (the DMA remapping opt-in, asked before StartDevice):
//!   the device reaches every address below its 40-bit limit ([`HIGHEST_DEVICE_ADDRESS`],
//!   `rgpu_hw::regs::DMA_ADDRESS_BITS`); IOMMU isolation supported and not required, as
//!   DRIVERCAPS says; **DmaRemappingSupported = 1**: when Dxgkrnl asks this before StartDevice
//!   and the interface is WDDM 3.0 or newer, the adapter's own memory comes from physical
//!   memory objects and ADLs, not from the WDDM 2.4 callbacks (`crate::adapter::memory`).
//!
//! The request arrives decoded ([`dxgk::query::Request`]): its output writers enforce the size
//! rules (DRIVERCAPS in any size a shipped Windows passes, the rest in full), so this module
//! only decides what to answer. Unknown types return STATUS_NOT_SUPPORTED.

#![forbid(unsafe_code)]

use dxgk::query::{Request, SegmentInfo};
use dxgk::{NtError, NtResult};
use dxgk_sys::{
    DXGK_DRIVERCAPS, DXGK_FRAMEBUFFERSAVEAREA, DXGK_GPUMMUCAPS, DXGK_IOMMU_CAPS,
    DXGK_PAGE_TABLE_LEVEL_DESC, DXGK_PHYSICALADAPTERCAPS, DXGK_PHYSICAL_MEMORY_CAPS,
    DXGK_SEGMENTDESCRIPTOR4, DXGK_WDDMVERSION, LARGE_INTEGER, UINT,
};
use rgpu_hw::pte;

/// Id of the aperture segment (segment ids start at 1).
pub const APERTURE_SEGMENT_ID: u32 = 1;
/// Number of driver-described segments.
pub const SEGMENT_COUNT: u32 = 1;
/// The implicit system-memory segment that holds page tables (`SEGMENT_COUNT + 1`).
pub const SYSTEM_MEMORY_SEGMENT_ID: u32 = SEGMENT_COUNT + 1;
/// Size of the aperture segment: the GPU-visible window onto system memory.
pub const APERTURE_SEGMENT_SIZE: usize = 1 << 30;
/// Paging buffer size VidMm allocates for rgpu.
pub const PAGING_BUFFER_SIZE: u32 = 64 * 1024;
/// Highest logical address the device can reach: its DMA address width (40 bits, narrower than
/// the 52-bit PTE address field; docs/rgpu-device.md).
pub const HIGHEST_DEVICE_ADDRESS: i64 = (1 << rgpu_hw::regs::DMA_ADDRESS_BITS) - 1;

/// `DXGK_WDDMVERSION` for a negotiated DXGKDDI_INTERFACE_VERSION.
pub fn wddm_version(interface: u32) -> DXGK_WDDMVERSION {
    use dxgk_sys as s;
    let table = [
        (s::DXGKDDI_INTERFACE_VERSION_WDDM3_1, s::DXGKDDI_WDDMv3_1),
        (s::DXGKDDI_INTERFACE_VERSION_WDDM3_0, s::DXGKDDI_WDDMv3_0),
        (s::DXGKDDI_INTERFACE_VERSION_WDDM2_9, s::DXGKDDI_WDDMv2_9),
        (s::DXGKDDI_INTERFACE_VERSION_WDDM2_8, s::DXGKDDI_WDDMv2_8),
        (s::DXGKDDI_INTERFACE_VERSION_WDDM2_7, s::DXGKDDI_WDDMv2_7),
        (s::DXGKDDI_INTERFACE_VERSION_WDDM2_6, s::DXGKDDI_WDDMv2_6),
        (s::DXGKDDI_INTERFACE_VERSION_WDDM2_5, s::DXGKDDI_WDDMv2_5),
    ];
    table
        .iter()
        .find(|(v, _)| interface >= *v)
        .map_or(s::DXGKDDI_WDDMv2_4, |&(_, w)| w)
}

/// DXGK_DRIVERCAPS for the negotiated interface.
#[allow(clippy::field_reassign_with_default)]
pub fn driver_caps(interface: u32) -> DXGK_DRIVERCAPS {
    // Built from all-zero memory field by field (not a struct literal) so that padding bytes,
    // which are copied to Dxgkrnl's buffer too, stay zero.
    let mut caps = DXGK_DRIVERCAPS::default();
    caps.HighestAcceptableAddress = LARGE_INTEGER {
        QuadPart: HIGHEST_DEVICE_ADDRESS,
    };
    caps.WDDMVersion = wddm_version(interface);
    caps.SupportNonVGA = 1;
    caps.SupportPerEngineTDR = 1;
    caps.MemoryManagementCaps.set_VirtualAddressingSupported(1);
    caps.MemoryManagementCaps.set_GpuMmuSupported(1);
    caps.MemoryManagementCaps.set_IoMmuSecureModeSupported(1);
    if interface >= dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM2_9 {
        // rgpu handles MAP_APERTURE_SEGMENT2 (the DMA-remapping aperture operation); with
        // this bit VidMm may also pass a CPU-visible address in it (rgpu needs none).
        caps.MemoryManagementCaps.set_MapAperture2Supported(1);
    }
    caps.SchedulingCaps.set_MultiEngineAware(1);
    // Not PreemptionAware: the rgpu device cannot stop a ring mid-buffer or report where it
    // stopped, so VidSch does not preempt; buffers run to completion and a hang is handled by
    // TDR. DxgkDdiPreemptCommand is still correct if called (it answers once the ring drains).
    caps.GpuEngineTopology.NbAsymetricProcessingNodes = 1;
    caps.PreemptionCaps.GraphicsPreemptionGranularity = dxgk_sys::D3DKMDT_GRAPHICS_PREEMPTION_NONE;
    caps.PreemptionCaps.ComputePreemptionGranularity = dxgk_sys::D3DKMDT_COMPUTE_PREEMPTION_NONE;
    caps
}

/// DXGK_GPUMMUCAPS for the negotiated interface (bits newer than it stay 0).
pub fn gpummu_caps(interface: u32) -> DXGK_GPUMMUCAPS {
    let mut caps = DXGK_GPUMMUCAPS {
        PageTableUpdateMode: dxgk_sys::DXGK_PAGETABLEUPDATE_GPU_VIRTUAL,
        VirtualAddressBitCount: pte::VA_BITS,
        // A 64 KiB-page leaf table is a 4 KiB table of which the device uses 32 entries
        // (WDDM requires a multiple of the CPU page size).
        LeafPageTableSizeFor64KPagesInBytes: pte::TABLE_SIZE as UINT,
        PageTableLevelCount: pte::LEVELS as UINT,
        ..Default::default()
    };
    caps.set_ReadOnlyMemorySupported(1);
    caps.set_NoExecuteMemorySupported(1);
    caps.set_ZeroInPteSupported(1);
    caps.set_CacheCoherentMemorySupported(1);
    if interface >= dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM2_1 {
        // 64 KiB pages of system memory (64 KiB-page leaf tables, CAPS_PAGE_64K).
        caps.set_SysMem64KBPageSupported(1);
    }
    if interface >= dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM2_6 {
        // rgpu-hw never caches invalid translations (CAPS_INVALID_NOT_CACHED).
        caps.set_InvalidTlbEntriesNotCached(1);
    }
    caps
}

/// The segment page tables live in: the implicit system-memory segment on hardware, the
/// aperture on a soft adapter (docs/soft-rgpu.md: the soft engine can only reach pages that
/// arrive with an MDL in MAP_APERTURE_SEGMENT).
pub fn page_table_segment(soft: bool) -> u32 {
    if soft {
        APERTURE_SEGMENT_ID
    } else {
        SYSTEM_MEMORY_SEGMENT_ID
    }
}

/// DXGK_PAGE_TABLE_LEVEL_DESC for `level` (0 = leaf); None past the root.
pub fn page_table_level(level: u32, soft: bool) -> Option<DXGK_PAGE_TABLE_LEVEL_DESC> {
    (level < pte::LEVELS as u32).then_some(DXGK_PAGE_TABLE_LEVEL_DESC {
        PageTableIndexBitCount: pte::INDEX_BITS,
        PageTableSegmentId: page_table_segment(soft),
        PagingProcessPageTableSegmentId: page_table_segment(soft),
        PageTableSizeInBytes: pte::TABLE_SIZE as UINT,
        PageTableAlignmentInBytes: pte::TABLE_SIZE as UINT,
    })
}

/// The aperture segment's descriptor.
pub fn aperture_segment() -> DXGK_SEGMENTDESCRIPTOR4 {
    let mut d = DXGK_SEGMENTDESCRIPTOR4 {
        Size: APERTURE_SEGMENT_SIZE,
        CommitLimit: APERTURE_SEGMENT_SIZE,
        ..Default::default()
    };
    d.Flags.set_Aperture(1);
    d.Flags.set_CacheCoherent(1);
    d
}

/// DXGK_PHYSICALADAPTERCAPS: one execution node that is also the paging node, GpuMmu.
pub fn physical_adapter_caps() -> DXGK_PHYSICALADAPTERCAPS {
    let mut caps = DXGK_PHYSICALADAPTERCAPS {
        NumExecutionNodes: 1,
        PagingNodeIndex: 0,
        ..Default::default()
    };
    caps.Flags.set_GpuMmuSupported(1);
    caps
}

/// DXGK_PHYSICAL_MEMORY_CAPS: the highest address the device can reach.
pub fn physical_memory_caps() -> DXGK_PHYSICAL_MEMORY_CAPS {
    DXGK_PHYSICAL_MEMORY_CAPS {
        HighestVisibleAddress: LARGE_INTEGER {
            QuadPart: HIGHEST_DEVICE_ADDRESS,
        },
    }
}

/// DXGK_IOMMU_CAPS: the isolation bits as DRIVERCAPS declares them (Learn: they must match) and
/// DMA remapping supported (see the module docs) — except on a soft (root-enumerated) adapter:
/// with remapping VidMm would send MAP_APERTURE_SEGMENT2, whose CpuVisibleAddress is NULL for
/// its own page tables and paging buffers, so the soft engine could not reach them
/// (docs/soft-rgpu.md, the soft-mode memory contract).
pub fn iommu_caps(soft: bool) -> DXGK_IOMMU_CAPS {
    let mm = driver_caps(dxgk_sys::DXGKDDI_INTERFACE_VERSION).MemoryManagementCaps;
    let mut caps = DXGK_IOMMU_CAPS::default();
    caps.set_IommuIsolationSupported(mm.IoMmuSecureModeSupported());
    caps.set_IommuIsolationRequired(mm.IoMmuSecureModeRequired());
    caps.set_DmaRemappingSupported(u32::from(!soft));
    caps
}

/// Answers one decoded DxgkDdiQueryAdapterInfo for an adapter on interface `interface`; `soft`:
/// the adapter runs soft rgpu (or, before StartDevice, is root-enumerated).
/// STATUS_NOT_SUPPORTED for types rgpu does not answer (not an error worth a log line: Dxgkrnl
/// probes optional types).
pub fn answer(interface: u32, soft: bool, request: Request<'_>) -> NtResult<()> {
    match request {
        Request::DriverCaps(out) => out.write(&driver_caps(interface)),
        Request::GpuMmuCaps {
            physical_adapter,
            out,
        } => {
            if physical_adapter != 0 {
                return Err(NtError::INVALID_PARAMETER);
            }
            out.write(&gpummu_caps(interface));
        }
        Request::PageTableLevelDesc {
            physical_adapter,
            level,
            out,
        } => {
            let desc = page_table_level(level, soft)
                .filter(|_| physical_adapter == 0)
                .ok_or(NtError::INVALID_PARAMETER)?;
            out.write(&desc);
        }
        Request::QuerySegment(mut q) => {
            if let Some(d) = q.descriptors.as_mut() {
                if d.count() < SEGMENT_COUNT as usize {
                    return Err(NtError::INVALID_PARAMETER);
                }
                d.write(0, &aperture_segment())?;
            }
            q.reply(SegmentInfo {
                segment_count: SEGMENT_COUNT,
                paging_buffer_segment_id: APERTURE_SEGMENT_ID,
                paging_buffer_size: PAGING_BUFFER_SIZE,
                paging_buffer_private_data_size: 0,
            });
        }
        Request::PhysicalAdapterCaps(out) => out.write(&physical_adapter_caps()),
        // No power components beyond the adapter.
        Request::NumPowerComponents(out) => out.write(&0),
        // Nothing to save (no VRAM).
        Request::FrameBufferSaveSize(out) => out.write(&DXGK_FRAMEBUFFERSAVEAREA::default()),
        Request::HardwareReservedRanges(io) => {
            // rgpu reserves no physical memory: zero ranges on both calls.
            let mut r = io.get();
            r.NumRanges = 0;
            io.set(&r);
        }
        Request::PhysicalMemoryCaps(out) => out.write(&physical_memory_caps()),
        Request::IommuCaps(out) => out.write(&iommu_caps(soft)),
        Request::Other(_) => return Err(NtError::NOT_SUPPORTED),
    }
    Ok(())
}

/// The metadata of node 0: a 3D engine with GpuMmu.
pub fn node_metadata() -> dxgk::args::NodeMetadata {
    let mut friendly_name = [0u16; 32];
    for (dst, src) in friendly_name.iter_mut().zip("rgpu 3D".encode_utf16()) {
        *dst = src;
    }
    dxgk::args::NodeMetadata {
        engine_type: dxgk_sys::DXGK_ENGINE_TYPE_3D,
        friendly_name,
        gpummu: true,
        iommu: false,
    }
}
