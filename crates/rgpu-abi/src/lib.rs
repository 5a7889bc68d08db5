//! The contract between an rgpu user-mode client and the rgpu kernel-mode driver (KMD): the
//! bytes a client puts in `D3DDDI_ALLOCATIONINFO2::pPrivateDriverData` ([`allocation`]) and in
//! `D3DKMT_ESCAPE::pPrivateDriverData` ([`escape`]). `docs/rgpu-abi.md` is the prose version.
//!
//! Both formats start with the same 8-byte header — `version: u32, size: u32`, little-endian —
//! and have a fixed size per version. Everything is plain little-endian integers at fixed
//! offsets: the structs here are `#[repr(C)]` for documentation and for C clients, but encoding
//! and decoding go through byte slices ([`AllocationData::decode`], [`AllocationData::encode`]),
//! so a buffer of any alignment from any process can be checked without `unsafe`.
//!
//! The KMD treats every byte as untrusted: decoding checks every size, version, enum, flag and
//! reserved field and says exactly what was wrong ([`AbiError`]); the driver turns that into
//! an NTSTATUS (the mapping is in `docs/rgpu-abi.md`).
//!
//! `no_std`, no dependencies, no `unsafe`: it builds into the kernel driver and into a user-mode
//! executable alike.
#![no_std]
#![forbid(unsafe_code)]

pub mod allocation;
pub mod escape;

pub use allocation::{AllocationData, AllocationKind, CpuAccess, SegmentPreference};
pub use escape::{Counters, EscapeCode, EscapeHeader, EscapeRequest, Identity};

/// Bytes of the header every format starts with (`version: u32`, `size: u32`).
pub const HEADER_BYTES: usize = 8;

/// Why a user-mode buffer was refused. Each variant maps to one NTSTATUS in the KMD.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AbiError {
    /// The buffer is shorter than the format needs (STATUS_BUFFER_TOO_SMALL).
    TooSmall { needed: usize, got: usize },
    /// The buffer, or the header's `size`, is not the format's exact size
    /// (STATUS_INVALID_PARAMETER).
    WrongSize { expected: usize, got: usize },
    /// The header's `version` is not one this side implements (STATUS_REVISION_MISMATCH).
    WrongVersion { expected: u32, got: u32 },
    /// An escape code this side does not implement (STATUS_NOT_SUPPORTED).
    UnknownCode(u32),
    /// A field holds a value the format does not define (STATUS_INVALID_PARAMETER).
    BadField(&'static str),
    /// A reserved field (or an input field that must be zero) is not zero
    /// (STATUS_INVALID_PARAMETER).
    NonZeroReserved(&'static str),
}

pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

pub(crate) fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Checks the common header of a fixed-size format: the buffer is exactly `size` bytes, the
/// header's `size` says so too, and its `version` is `version`.
pub(crate) fn check_header(b: &[u8], version: u32, size: usize) -> Result<(), AbiError> {
    if b.len() < HEADER_BYTES {
        return Err(AbiError::TooSmall {
            needed: size,
            got: b.len(),
        });
    }
    let (v, s) = (u32_at(b, 0), u32_at(b, 4) as usize);
    if v != version {
        return Err(AbiError::WrongVersion {
            expected: version,
            got: v,
        });
    }
    if b.len() < size {
        return Err(AbiError::TooSmall {
            needed: size,
            got: b.len(),
        });
    }
    if b.len() != size {
        return Err(AbiError::WrongSize {
            expected: size,
            got: b.len(),
        });
    }
    if s != size {
        return Err(AbiError::WrongSize {
            expected: size,
            got: s,
        });
    }
    Ok(())
}
