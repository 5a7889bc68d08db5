//! DxgkDdiQueryAdapterInfo: what rgpu declares to Dxgkrnl.
//!
//! rgpu is a render-only GpuMmu adapter with IOMMU isolation:
//! * DRIVERCAPS: VirtualAddressingSupported + GpuMmuSupported + IoMmuSecureModeSupported, one
//!   engine, no preemption (buffers run to completion; TDR handles hangs), WDDMVersion matching
//!   the negotiated interface.
//! * GPUMMUCAPS / PAGETABLELEVELDESC: the rgpu-hw page-table format — 4 levels of 512 × 8-byte
//!   entries (4 KiB tables), 48-bit VA, read-only / no-execute / zero / cache-coherent PTE bits,
//!   page tables updated by the GPU from paging buffers (GPU_VIRTUAL).
//! * Segment model: one **aperture segment** (id 1): system memory reaches the device through a
//!   GART-like table rgpu fills from the MDLs VidMm passes in MAP/UNMAP_APERTURE_SEGMENT, so
//!   every page the device can reach is one the driver has seen as an MDL. Page tables live in
//!   the implicit system-memory segment, id `NbSegment + 1` = 2, as Microsoft's compute-only
//!   sample does (Learn says 0; reference §8 item 7 records the disagreement).
//!
//! Output sizes: DRIVERCAPS grows with every WDK, and an older Dxgkrnl passes its own smaller
//! size, so any size a shipped Windows passes (the per-version sizes from the layouts) is
//! accepted and `min(size, ours)` bytes are written; other sizes are refused with
//! STATUS_INVALID_PARAMETER (or STATUS_BUFFER_TOO_SMALL below the smallest). Every other type
//! needs at least its full structure. Unknown types return STATUS_NOT_SUPPORTED.

use core::mem::size_of;

use dxgk::{NtError, NtResult};
use dxgk_sys::{
    DXGKARG_QUERYADAPTERINFO, DXGK_DRIVERCAPS, DXGK_FRAMEBUFFERSAVEAREA, DXGK_GPUMMUCAPS,
    DXGK_HARDWARERESERVEDRANGES, DXGK_PAGE_TABLE_LEVEL_DESC, DXGK_PHYSICALADAPTERCAPS,
    DXGK_QUERYGPUMMUCAPSIN, DXGK_QUERYPAGETABLELEVELDESCIN, DXGK_QUERYSEGMENTOUT4,
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
/// Highest logical address the device can reach (52-bit PTE address field).
pub const HIGHEST_DEVICE_ADDRESS: i64 = (1 << 52) - 1;

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

/// DXGK_PAGE_TABLE_LEVEL_DESC for `level` (0 = leaf); None past the root.
pub fn page_table_level(level: u32) -> Option<DXGK_PAGE_TABLE_LEVEL_DESC> {
    (level < pte::LEVELS as u32).then_some(DXGK_PAGE_TABLE_LEVEL_DESC {
        PageTableIndexBitCount: pte::INDEX_BITS,
        PageTableSegmentId: SYSTEM_MEMORY_SEGMENT_ID,
        PagingProcessPageTableSegmentId: SYSTEM_MEMORY_SEGMENT_ID,
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

/// Sizes of DXGK_DRIVERCAPS that shipped Windows versions pass.
fn known_driver_caps_sizes() -> impl Iterator<Item = usize> {
    dxgk_sys::DXGK_DRIVERCAPS_SIZE_BY_VERSION
        .iter()
        .map(|&(_, s)| s)
        .chain(core::iter::once(size_of::<DXGK_DRIVERCAPS>()))
}

/// Copies `value`'s first `len` bytes to the output buffer.
///
/// # Safety
/// `args.pOutputData` must be valid for `args.OutputDataSize` bytes, and `len` must not exceed
/// either that or `size_of::<T>()`.
unsafe fn write_output<T: Copy>(args: &DXGKARG_QUERYADAPTERINFO, value: &T, len: usize) {
    // SAFETY: guaranteed by the caller: both regions hold at least `len` bytes.
    unsafe {
        core::ptr::copy_nonoverlapping(
            (value as *const T).cast::<u8>(),
            args.pOutputData.cast::<u8>(),
            len,
        )
    };
}

fn need_output(args: &DXGKARG_QUERYADAPTERINFO, size: usize) -> NtResult<()> {
    if args.pOutputData.is_null() {
        return Err(NtError::INVALID_PARAMETER);
    }
    if (args.OutputDataSize as usize) < size {
        return Err(NtError::BUFFER_TOO_SMALL);
    }
    Ok(())
}

fn read_input<T: Copy + Default>(args: &DXGKARG_QUERYADAPTERINFO) -> NtResult<T> {
    if args.pInputData.is_null() || (args.InputDataSize as usize) < size_of::<T>() {
        return Err(NtError::INVALID_PARAMETER);
    }
    // SAFETY: non-null and at least size_of::<T>() bytes per InputDataSize; T is plain data
    // for which every bit pattern is valid; the input may be unaligned.
    Ok(unsafe { args.pInputData.cast::<T>().read_unaligned() })
}

/// Answers one DxgkDdiQueryAdapterInfo for an adapter on interface `interface`.
///
/// # Safety
/// `args.pInputData` / `args.pOutputData` must be valid for `InputDataSize` /
/// `OutputDataSize` bytes (Dxgkrnl's contract).
pub unsafe fn query_adapter_info(interface: u32, args: &DXGKARG_QUERYADAPTERINFO) -> NtResult<()> {
    let ty = args.Type;
    if ty == dxgk_sys::DXGKQAITYPE_DRIVERCAPS {
        let size = args.OutputDataSize as usize;
        if args.pOutputData.is_null() {
            return Err(NtError::INVALID_PARAMETER);
        }
        let smallest = known_driver_caps_sizes().min().unwrap_or(0);
        if size < smallest {
            return Err(NtError::BUFFER_TOO_SMALL);
        }
        if !known_driver_caps_sizes().any(|s| s == size) {
            return Err(NtError::INVALID_PARAMETER);
        }
        let caps = driver_caps(interface);
        let len = size.min(size_of::<DXGK_DRIVERCAPS>());
        // SAFETY: the output holds `size` ≥ `len` bytes (caller); `len` ≤ size_of caps.
        unsafe { write_output(args, &caps, len) };
        Ok(())
    } else if ty == dxgk_sys::DXGKQAITYPE_GPUMMUCAPS {
        let input: DXGK_QUERYGPUMMUCAPSIN = read_input(args)?;
        if input.PhysicalAdapterIndex != 0 {
            return Err(NtError::INVALID_PARAMETER);
        }
        need_output(args, size_of::<DXGK_GPUMMUCAPS>())?;
        // SAFETY: output size checked above.
        unsafe { write_output(args, &gpummu_caps(interface), size_of::<DXGK_GPUMMUCAPS>()) };
        Ok(())
    } else if ty == dxgk_sys::DXGKQAITYPE_PAGETABLELEVELDESC {
        let input: DXGK_QUERYPAGETABLELEVELDESCIN = read_input(args)?;
        let desc = page_table_level(u32::from(input.LevelIndex))
            .filter(|_| input.PhysicalAdapterIndex == 0)
            .ok_or(NtError::INVALID_PARAMETER)?;
        need_output(args, size_of::<DXGK_PAGE_TABLE_LEVEL_DESC>())?;
        // SAFETY: output size checked above.
        unsafe { write_output(args, &desc, size_of::<DXGK_PAGE_TABLE_LEVEL_DESC>()) };
        Ok(())
    } else if ty == dxgk_sys::DXGKQAITYPE_QUERYSEGMENT4 {
        need_output(args, size_of::<DXGK_QUERYSEGMENTOUT4>())?;
        // SAFETY: size checked; VidMm passes the structure in/out (descriptor pointer, stride).
        let mut out = unsafe {
            args.pOutputData
                .cast::<DXGK_QUERYSEGMENTOUT4>()
                .read_unaligned()
        };
        if !out.pSegmentDescriptor.is_null() {
            let stride = out.SegmentDescriptorStride;
            if stride == 0 || out.NbSegment < SEGMENT_COUNT {
                return Err(NtError::INVALID_PARAMETER);
            }
            let d = aperture_segment();
            let len = stride.min(size_of::<DXGK_SEGMENTDESCRIPTOR4>());
            // SAFETY: VidMm's descriptor array holds NbSegment ≥ 1 entries of `stride` bytes;
            // `len` ≤ both `stride` and the descriptor's size.
            unsafe {
                core::ptr::copy_nonoverlapping(
                    (&d as *const DXGK_SEGMENTDESCRIPTOR4).cast::<u8>(),
                    out.pSegmentDescriptor,
                    len,
                )
            };
        }
        out.NbSegment = SEGMENT_COUNT;
        out.PagingBufferSegmentId = APERTURE_SEGMENT_ID;
        out.PagingBufferSize = PAGING_BUFFER_SIZE;
        out.PagingBufferPrivateDataSize = 0;
        // SAFETY: size checked above.
        unsafe { write_output(args, &out, size_of::<DXGK_QUERYSEGMENTOUT4>()) };
        Ok(())
    } else if ty == dxgk_sys::DXGKQAITYPE_PHYSICALADAPTERCAPS {
        let size = dxgk_sys::DXGK_PHYSICALADAPTERCAPS_SIZE_BY_VERSION
            .iter()
            .rev()
            .find(|(v, _)| *v <= interface)
            .map_or(size_of::<DXGK_PHYSICALADAPTERCAPS>(), |&(_, s)| s);
        need_output(args, size)?;
        // SAFETY: output holds ≥ `size` bytes; `size` ≤ our struct (a version's size).
        unsafe {
            write_output(
                args,
                &physical_adapter_caps(),
                size.min(size_of::<DXGK_PHYSICALADAPTERCAPS>()),
            )
        };
        Ok(())
    } else if ty == dxgk_sys::DXGKQAITYPE_NUMPOWERCOMPONENTS {
        need_output(args, size_of::<UINT>())?;
        // SAFETY: output size checked; rgpu has no power components beyond the adapter.
        unsafe { write_output(args, &0u32, size_of::<UINT>()) };
        Ok(())
    } else if ty == dxgk_sys::DXGKQAITYPE_FRAMEBUFFERSAVESIZE {
        need_output(args, size_of::<DXGK_FRAMEBUFFERSAVEAREA>())?;
        // SAFETY: output size checked; nothing to save (no VRAM).
        unsafe {
            write_output(
                args,
                &DXGK_FRAMEBUFFERSAVEAREA::default(),
                size_of::<DXGK_FRAMEBUFFERSAVEAREA>(),
            )
        };
        Ok(())
    } else if ty == dxgk_sys::DXGKQAITYPE_HARDWARERESERVEDRANGES {
        need_output(args, size_of::<DXGK_HARDWARERESERVEDRANGES>())?;
        // SAFETY: size checked; VidMm passes NumRanges/pPhysicalRanges in/out.
        let mut out = unsafe {
            args.pOutputData
                .cast::<DXGK_HARDWARERESERVEDRANGES>()
                .read_unaligned()
        };
        // rgpu reserves no physical memory: report zero ranges on both calls.
        out.NumRanges = 0;
        // SAFETY: size checked above.
        unsafe { write_output(args, &out, size_of::<DXGK_HARDWARERESERVEDRANGES>()) };
        Ok(())
    } else {
        Err(NtError::NOT_SUPPORTED)
    }
}
