//! Allocation private data: what a client passes per allocation in
//! `D3DDDI_ALLOCATIONINFO2::pPrivateDriverData` (D3DKMTCreateAllocation2), which Dxgkrnl hands
//! the KMD as `DXGK_ALLOCATIONINFO::pPrivateDriverData` in DxgkDdiCreateAllocation.
//!
//! Version 1, 48 bytes, little-endian:
//!
//! | offset | type      | field          | values |
//! |-------:|-----------|----------------|--------|
//! |      0 | u32       | `version`      | [`ALLOCATION_DATA_VERSION`] (1) |
//! |      4 | u32       | `size`         | [`ALLOCATION_DATA_BYTES`] (48) |
//! |      8 | u32       | `kind`         | [`AllocationKind`]: 1 buffer, 2 ring-visible, 3 CPU-visible staging |
//! |     12 | u32       | `cpu_access`   | [`CpuAccess`] bits: 1 read, 2 write; nothing else |
//! |     16 | u64       | `size_bytes`   | 1 ..= [`MAX_ALLOCATION_BYTES`]; the KMD rounds up to 4 KiB |
//! |     24 | u32       | `alignment`    | 0 (the KMD's choice) or a power of two 4 KiB ..= 2 MiB |
//! |     28 | u32       | `segment`      | [`SegmentPreference`]: 0 any, 1 aperture, 2 system memory |
//! |     32 | [u32; 4]  | `reserved`     | zero |
//!
//! Rules beyond the field ranges: a staging allocation has some CPU access (it exists to be
//! locked); nothing else constrains the combination.

use crate::{check_header, put_u32, put_u64, u32_at, u64_at, AbiError};

/// The allocation private-data version this crate encodes and the KMD accepts.
pub const ALLOCATION_DATA_VERSION: u32 = 1;
/// Bytes of version 1.
pub const ALLOCATION_DATA_BYTES: usize = 48;
/// Largest allocation a client may ask for (64 GiB).
pub const MAX_ALLOCATION_BYTES: u64 = 64 << 30;
/// Largest explicit alignment (2 MiB: one leaf page table's span).
pub const MAX_ALIGNMENT: u32 = 2 << 20;
/// Smallest explicit alignment (one page).
pub const MIN_ALIGNMENT: u32 = 4096;

/// What the allocation is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum AllocationKind {
    /// GPU memory commands read and write through the process's GPU VA.
    Buffer = 1,
    /// Memory the device reaches also outside a process's page tables (rings, fence pages); it
    /// may live in the aperture segment.
    RingVisible = 2,
    /// CPU-visible staging memory for uploads and read-back (Lock2).
    Staging = 3,
}

impl AllocationKind {
    /// The kind for a wire value.
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Buffer),
            2 => Some(Self::RingVisible),
            3 => Some(Self::Staging),
            _ => None,
        }
    }
}

/// CPU access a client asks for (bit set).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CpuAccess(pub u32);

impl CpuAccess {
    /// No CPU access: the allocation cannot be locked.
    pub const NONE: Self = Self(0);
    /// The CPU reads it (read-back).
    pub const READ: Self = Self(1);
    /// The CPU writes it (upload).
    pub const WRITE: Self = Self(2);
    /// Both.
    pub const READ_WRITE: Self = Self(3);
    /// Every defined bit.
    pub const ALL_BITS: u32 = 3;

    /// True when the CPU has any access (the allocation is CpuVisible).
    pub fn any(self) -> bool {
        self.0 != 0
    }

    /// True when the CPU reads it.
    pub fn reads(self) -> bool {
        self.0 & Self::READ.0 != 0
    }
}

/// Where the client would like the allocation to live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum SegmentPreference {
    /// The KMD decides from the kind.
    Any = 0,
    /// The aperture segment (segment 1).
    Aperture = 1,
    /// The implicit system-memory segment.
    SystemMemory = 2,
}

impl SegmentPreference {
    /// The preference for a wire value.
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            0 => Some(Self::Any),
            1 => Some(Self::Aperture),
            2 => Some(Self::SystemMemory),
            _ => None,
        }
    }
}

/// Version 1 of the allocation private data, decoded and valid.
///
/// # Invariants
/// Every field holds a value the format defines (see the module table): `size_bytes` in
/// `1..=MAX_ALLOCATION_BYTES`, `alignment` 0 or a power of two in
/// `MIN_ALIGNMENT..=MAX_ALIGNMENT`, and a staging allocation has CPU access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct AllocationData {
    /// What the allocation is for.
    pub kind: AllocationKind,
    /// CPU access.
    pub cpu_access: CpuAccess,
    /// Requested bytes (the KMD rounds up to whole pages).
    pub size_bytes: u64,
    /// 0 or a power of two.
    pub alignment: u32,
    /// Segment preference.
    pub segment: SegmentPreference,
}

impl AllocationData {
    /// A buffer of `size_bytes` with no CPU access, default alignment and segment.
    pub fn buffer(size_bytes: u64) -> Self {
        Self {
            kind: AllocationKind::Buffer,
            cpu_access: CpuAccess::NONE,
            size_bytes,
            alignment: 0,
            segment: SegmentPreference::Any,
        }
    }

    /// A CPU-visible staging allocation of `size_bytes`.
    pub fn staging(size_bytes: u64) -> Self {
        Self {
            kind: AllocationKind::Staging,
            cpu_access: CpuAccess::READ_WRITE,
            ..Self::buffer(size_bytes)
        }
    }

    /// Checks the rules that span fields (see the module documentation).
    pub fn validate(&self) -> Result<(), AbiError> {
        if self.size_bytes == 0 || self.size_bytes > MAX_ALLOCATION_BYTES {
            return Err(AbiError::BadField("size_bytes"));
        }
        let a = self.alignment;
        if a != 0 && (!a.is_power_of_two() || !(MIN_ALIGNMENT..=MAX_ALIGNMENT).contains(&a)) {
            return Err(AbiError::BadField("alignment"));
        }
        if self.cpu_access.0 & !CpuAccess::ALL_BITS != 0 {
            return Err(AbiError::BadField("cpu_access"));
        }
        if self.kind == AllocationKind::Staging && !self.cpu_access.any() {
            return Err(AbiError::BadField("cpu_access"));
        }
        Ok(())
    }

    /// Decodes and validates version 1 from exactly [`ALLOCATION_DATA_BYTES`] bytes.
    pub fn decode(b: &[u8]) -> Result<Self, AbiError> {
        check_header(b, ALLOCATION_DATA_VERSION, ALLOCATION_DATA_BYTES)?;
        if b[32..48].iter().any(|&x| x != 0) {
            return Err(AbiError::NonZeroReserved("reserved"));
        }
        let d = Self {
            kind: AllocationKind::from_u32(u32_at(b, 8)).ok_or(AbiError::BadField("kind"))?,
            cpu_access: CpuAccess(u32_at(b, 12)),
            size_bytes: u64_at(b, 16),
            alignment: u32_at(b, 24),
            segment: SegmentPreference::from_u32(u32_at(b, 28))
                .ok_or(AbiError::BadField("segment"))?,
        };
        d.validate()?;
        // INVARIANT: validated above.
        Ok(d)
    }

    /// The version-1 bytes (also of an invalid value: tests encode bad data this way).
    pub fn encode(&self) -> [u8; ALLOCATION_DATA_BYTES] {
        let mut b = [0u8; ALLOCATION_DATA_BYTES];
        put_u32(&mut b, 0, ALLOCATION_DATA_VERSION);
        put_u32(&mut b, 4, ALLOCATION_DATA_BYTES as u32);
        put_u32(&mut b, 8, self.kind as u32);
        put_u32(&mut b, 12, self.cpu_access.0);
        put_u64(&mut b, 16, self.size_bytes);
        put_u32(&mut b, 24, self.alignment);
        put_u32(&mut b, 28, self.segment as u32);
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_checks_every_field() {
        let d = AllocationData::staging(5000);
        assert_eq!(AllocationData::decode(&d.encode()), Ok(d));
        let bad = |at: usize, v: u32| {
            let mut b = d.encode();
            put_u32(&mut b, at, v);
            AllocationData::decode(&b)
        };
        assert_eq!(
            bad(0, 2),
            Err(AbiError::WrongVersion {
                expected: 1,
                got: 2
            })
        );
        assert_eq!(
            bad(4, 40),
            Err(AbiError::WrongSize {
                expected: 48,
                got: 40
            })
        );
        assert_eq!(bad(8, 0), Err(AbiError::BadField("kind")));
        assert_eq!(bad(12, 4), Err(AbiError::BadField("cpu_access")));
        assert_eq!(bad(12, 0), Err(AbiError::BadField("cpu_access")));
        assert_eq!(bad(16, 0), Err(AbiError::BadField("size_bytes")));
        assert_eq!(bad(24, 3000), Err(AbiError::BadField("alignment")));
        assert_eq!(bad(24, 1 << 22), Err(AbiError::BadField("alignment")));
        assert_eq!(bad(28, 3), Err(AbiError::BadField("segment")));
        assert_eq!(bad(44, 1), Err(AbiError::NonZeroReserved("reserved")));
        let mut big = d;
        big.size_bytes = MAX_ALLOCATION_BYTES + 1;
        assert_eq!(
            AllocationData::decode(&big.encode()),
            Err(AbiError::BadField("size_bytes"))
        );
    }

    #[test]
    fn buffer_lengths_other_than_48_are_refused() {
        let b = AllocationData::buffer(4096).encode();
        assert_eq!(
            AllocationData::decode(&b[..47]),
            Err(AbiError::TooSmall {
                needed: 48,
                got: 47
            })
        );
        assert!(matches!(
            AllocationData::decode(&b[..4]),
            Err(AbiError::TooSmall { .. })
        ));
        let mut long = [0u8; 49];
        long[..48].copy_from_slice(&b);
        assert_eq!(
            AllocationData::decode(&long),
            Err(AbiError::WrongSize {
                expected: 48,
                got: 49
            })
        );
    }
}
