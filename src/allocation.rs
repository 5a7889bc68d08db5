//! Allocations: how rgpu turns a client's allocation private data (`rgpu_abi::allocation`)
//! into what VidMm needs (DXGK_ALLOCATIONINFO's outputs), and the objects behind `hAllocation`
//! and `hDeviceSpecificAllocation`.
//!
//! Placement (rgpu is GpuMmu with one aperture segment, id 1, and the implicit system-memory
//! segment, id 2 — see [`crate::caps`]): every allocation lives in system memory, so the
//! implicit segment is in every set, as Microsoft's compute-only sample does for GpuMmu
//! system-memory allocations. Ring-visible allocations and those asking for the aperture may
//! also live in the aperture (preferred for an explicit aperture request). The aperture is
//! never an eviction target.
//!
//! Page size: an allocation whose size is a multiple of 64 KiB gets 64 KiB alignment, so VidMm
//! can back and map it with 64 KiB pages (rgpu declares SysMem64KBPageSupported); an explicit
//! alignment from the client wins when it is larger.

#![forbid(unsafe_code)]

use dxgk::allocation::AllocationDescription;
use dxgk::pool::PoolTag;
use dxgk::NtError;
use rgpu_abi::{AbiError, AllocationData, AllocationKind, SegmentPreference};

use crate::caps::{APERTURE_SEGMENT_ID, APERTURE_SEGMENT_SIZE, SYSTEM_MEMORY_SEGMENT_ID};
use crate::objects::Device;

/// Pool tag of allocations (`hAllocation`).
pub const ALLOCATION_TAG: PoolTag = PoolTag::new(*b"RgAl");
/// Pool tag of a device's opened allocations (`hDeviceSpecificAllocation`).
pub const DEVICE_ALLOCATION_TAG: PoolTag = PoolTag::new(*b"RgOa");

/// Page size allocations are rounded to.
pub const PAGE_BYTES: u64 = 4096;
/// Alignment that lets VidMm use 64 KiB pages.
pub const LARGE_PAGE_BYTES: u64 = 64 * 1024;
/// `D3DDDI_ALLOCATIONPRIORITY_NORMAL`.
pub const PRIORITY_NORMAL: u32 = 0x2800_0000;

const APERTURE_BIT: u32 = 1 << (APERTURE_SEGMENT_ID - 1);
const SYSTEM_BIT: u32 = 1 << (SYSTEM_MEMORY_SEGMENT_ID - 1);

/// An allocation (DxgkDdiCreateAllocation's `hAllocation`), alive until DestroyAllocation.
#[derive(Debug)]
pub struct Allocation {
    /// What the client asked for (validated).
    pub data: AllocationData,
    /// What rgpu told VidMm.
    pub description: AllocationDescription,
}

/// A device's handle of an allocation (DxgkDdiOpenAllocation's `hDeviceSpecificAllocation`),
/// alive until CloseAllocation. It copies what it needs of the allocation, so it never depends
/// on the order in which Dxgkrnl closes and destroys.
#[derive(Debug)]
pub struct DeviceAllocation {
    /// The device that opened it (outlives it: Dxgkrnl closes before destroying the device).
    pub device: *const Device,
    /// The allocation's private data.
    pub data: AllocationData,
    /// Its size in bytes.
    pub bytes: usize,
    /// Opened read-only.
    pub read_only: bool,
}

/// The NTSTATUS for a refused user-mode buffer (docs/rgpu-abi.md).
pub fn abi_status(e: AbiError) -> NtError {
    match e {
        AbiError::TooSmall { .. } => NtError::BUFFER_TOO_SMALL,
        AbiError::WrongVersion { .. } => NtError::REVISION_MISMATCH,
        AbiError::UnknownCode(_) => NtError::NOT_SUPPORTED,
        AbiError::WrongSize { .. } | AbiError::BadField(_) | AbiError::NonZeroReserved(_) => {
            NtError::INVALID_PARAMETER
        }
    }
}

/// Decodes one allocation's private data and decides its DXGK_ALLOCATIONINFO outputs, for a
/// hardware adapter (`soft` false) or a soft one (docs/soft-rgpu.md, the soft-mode memory
/// contract: every allocation only in the aperture, AccessedPhysically, so that each page the
/// engine reaches arrives with its MDL in MAP_APERTURE_SEGMENT).
/// Errors: see [`abi_status`]; an aperture request (or, soft, any allocation) larger than the
/// aperture is STATUS_INVALID_PARAMETER.
pub fn describe(private: &[u8], soft: bool) -> Result<Allocation, NtError> {
    let data = AllocationData::decode(private).map_err(|e| {
        rgpu_log!(error, "CreateAllocation: bad private data: {:?}", e);
        abi_status(e)
    })?;
    // size_bytes <= MAX_ALLOCATION_BYTES (64 GiB): no overflow.
    let bytes = data.size_bytes.div_ceil(PAGE_BYTES) * PAGE_BYTES;
    let size = usize::try_from(bytes).map_err(|_| NtError::INVALID_PARAMETER)?;
    let (preferred, sets) = match (data.segment, data.kind) {
        // Soft rgpu: the engine reaches only pages that arrive with an MDL in the aperture.
        _ if soft => (APERTURE_SEGMENT_ID, APERTURE_BIT),
        (SegmentPreference::SystemMemory, _)
        | (SegmentPreference::Any, AllocationKind::Buffer | AllocationKind::Staging) => {
            (SYSTEM_MEMORY_SEGMENT_ID, SYSTEM_BIT)
        }
        (SegmentPreference::Any, AllocationKind::RingVisible) => {
            (SYSTEM_MEMORY_SEGMENT_ID, SYSTEM_BIT | APERTURE_BIT)
        }
        (SegmentPreference::Aperture, _) => (APERTURE_SEGMENT_ID, SYSTEM_BIT | APERTURE_BIT),
    };
    if preferred == APERTURE_SEGMENT_ID && bytes > APERTURE_SEGMENT_SIZE as u64 {
        rgpu_log!(
            error,
            "CreateAllocation: {} bytes do not fit the aperture{}",
            bytes,
            if soft {
                " (soft rgpu places every allocation there)"
            } else {
                ""
            }
        );
        return Err(NtError::INVALID_PARAMETER);
    }
    let natural = if bytes.is_multiple_of(LARGE_PAGE_BYTES) {
        LARGE_PAGE_BYTES
    } else {
        PAGE_BYTES
    } as u32;
    Ok(Allocation {
        data,
        description: AllocationDescription {
            size,
            alignment: natural.max(data.alignment),
            preferred_segment: preferred,
            read_segments: sets,
            write_segments: sets,
            eviction_segments: 0,
            cpu_visible: data.cpu_access.any(),
            cached: data.cpu_access.reads(),
            accessed_physically: soft,
            priority: PRIORITY_NORMAL,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rgpu_abi::CpuAccess;
    // `describe` logs through DbgPrintEx: the simulated kernel defines it (DESIGN.md, "The
    // kernel seam").
    use dxgk_sim as _;

    fn describe_hw(private: &[u8]) -> Result<Allocation, NtError> {
        describe(private, false)
    }

    #[test]
    fn on_a_soft_adapter_every_allocation_is_aperture_only_and_accessed_physically() {
        for data in [
            AllocationData::buffer(5000),
            AllocationData::staging(128 * 1024),
            AllocationData {
                segment: SegmentPreference::SystemMemory,
                ..AllocationData::buffer(4096)
            },
        ] {
            let d = describe(&data.encode(), true).unwrap().description;
            assert_eq!(
                (d.preferred_segment, d.read_segments, d.write_segments),
                (APERTURE_SEGMENT_ID, APERTURE_BIT, APERTURE_BIT),
                "{data:?}"
            );
            assert!(d.accessed_physically);
        }
        let big = AllocationData::buffer(APERTURE_SEGMENT_SIZE as u64 + 4096);
        assert_eq!(
            describe(&big.encode(), true).err(),
            Some(NtError::INVALID_PARAMETER)
        );
        assert!(
            !describe_hw(&AllocationData::buffer(4096).encode())
                .unwrap()
                .description
                .accessed_physically
        );
    }

    #[test]
    fn kinds_map_to_segments_sizes_and_flags() {
        let a = describe_hw(&AllocationData::buffer(5000).encode()).unwrap();
        let d = a.description;
        assert_eq!((d.size, d.alignment), (8192, 4096));
        assert_eq!((d.preferred_segment, d.read_segments), (2, 0b10));
        assert!(!d.cpu_visible);
        let s = describe_hw(&AllocationData::staging(128 * 1024).encode()).unwrap();
        assert_eq!(s.description.alignment, 64 * 1024);
        assert!(s.description.cpu_visible && s.description.cached);
        let mut r = AllocationData::buffer(4096);
        r.kind = AllocationKind::RingVisible;
        r.segment = SegmentPreference::Aperture;
        r.cpu_access = CpuAccess::WRITE;
        r.alignment = 1 << 20;
        let d = describe_hw(&r.encode()).unwrap().description;
        assert_eq!((d.preferred_segment, d.read_segments), (1, 0b11));
        assert_eq!(d.alignment, 1 << 20);
        assert!(d.cpu_visible && !d.cached);
        r.size_bytes = 2 << 30;
        assert_eq!(
            describe_hw(&r.encode()).err(),
            Some(NtError::INVALID_PARAMETER)
        );
    }

    #[test]
    fn bad_private_data_gets_the_documented_status() {
        let good = AllocationData::buffer(4096).encode();
        assert_eq!(describe_hw(&[]).err(), Some(NtError::BUFFER_TOO_SMALL));
        assert_eq!(
            describe_hw(&good[..40]).err(),
            Some(NtError::BUFFER_TOO_SMALL)
        );
        let mut v2 = good;
        v2[0] = 2;
        assert_eq!(describe_hw(&v2).err(), Some(NtError::REVISION_MISMATCH));
        let mut k = good;
        k[8] = 9;
        assert_eq!(describe_hw(&k).err(), Some(NtError::INVALID_PARAMETER));
    }
}
