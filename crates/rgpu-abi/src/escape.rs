//! The escape interface: what a client passes to D3DKMTEscape (`D3DKMT_ESCAPE::pPrivateDriverData`,
//! `Type = D3DKMT_ESCAPE_DRIVERPRIVATE`), which Dxgkrnl hands the KMD as
//! `DXGKARG_ESCAPE::pPrivateDriverData`. The buffer is in/out: the client sends a request,
//! the KMD overwrites the body with the answer in the same buffer.
//!
//! Version 1. Every buffer starts with a 16-byte [`EscapeHeader`], little-endian:
//!
//! | offset | type | field      | values |
//! |-------:|------|------------|--------|
//! |      0 | u32  | `version`  | [`ESCAPE_VERSION`] (1) |
//! |      4 | u32  | `size`     | the whole buffer's bytes, which must be the code's size |
//! |      8 | u32  | `code`     | [`EscapeCode`] |
//! |     12 | u32  | `reserved` | zero |
//!
//! Codes and their sizes (the request body — everything after the header — must be zero):
//! * 1 [`EscapeCode::Identity`], [`IDENTITY_BYTES`] (64): answered with an [`Identity`];
//! * 2 [`EscapeCode::Counters`], [`COUNTERS_BYTES`] (16 + 8 × [`COUNTER_COUNT`]): answered
//!   with [`Counters`], one u64 per [`COUNTER_NAMES`] entry.

use crate::{put_u32, put_u64, u32_at, u64_at, AbiError};

/// The escape version this crate encodes and the KMD accepts.
pub const ESCAPE_VERSION: u32 = 1;
/// Bytes of the escape header.
pub const ESCAPE_HEADER_BYTES: usize = 16;
/// Bytes of an identity escape.
pub const IDENTITY_BYTES: usize = 64;
/// Counters a counters escape returns.
pub const COUNTER_COUNT: usize = 9;
/// Bytes of a counters escape.
pub const COUNTERS_BYTES: usize = ESCAPE_HEADER_BYTES + 8 * COUNTER_COUNT;
/// The counters in wire order.
pub const COUNTER_NAMES: [&str; COUNTER_COUNT] = [
    "allocations created",
    "allocations destroyed",
    "allocations live",
    "allocation bytes live",
    "allocations opened (live)",
    "BuildPagingBuffer calls",
    "SubmitCommandVirtual calls",
    "last completed fence",
    "escapes answered",
];

/// What an escape asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum EscapeCode {
    /// Driver and device identity.
    Identity = 1,
    /// The driver's counters.
    Counters = 2,
}

impl EscapeCode {
    /// The code for a wire value.
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Identity),
            2 => Some(Self::Counters),
            _ => None,
        }
    }

    /// The buffer size of this code (request and answer).
    pub fn size(self) -> usize {
        match self {
            Self::Identity => IDENTITY_BYTES,
            Self::Counters => COUNTERS_BYTES,
        }
    }
}

/// The escape header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct EscapeHeader {
    /// [`ESCAPE_VERSION`].
    pub version: u32,
    /// The whole buffer's bytes.
    pub size: u32,
    /// An [`EscapeCode`] value.
    pub code: u32,
    /// Zero.
    pub reserved: u32,
}

impl EscapeHeader {
    /// The header of a version-1 escape of `code`.
    pub fn new(code: EscapeCode) -> Self {
        Self {
            version: ESCAPE_VERSION,
            size: code.size() as u32,
            code: code as u32,
            reserved: 0,
        }
    }

    fn write(&self, b: &mut [u8]) {
        put_u32(b, 0, self.version);
        put_u32(b, 4, self.size);
        put_u32(b, 8, self.code);
        put_u32(b, 12, self.reserved);
    }
}

/// A decoded, valid escape request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EscapeRequest {
    /// [`EscapeCode::Identity`].
    Identity,
    /// [`EscapeCode::Counters`].
    Counters,
}

impl EscapeRequest {
    /// The code.
    pub fn code(self) -> EscapeCode {
        match self {
            Self::Identity => EscapeCode::Identity,
            Self::Counters => EscapeCode::Counters,
        }
    }

    /// Decodes and validates a request: header (version, size = buffer length, reserved),
    /// code, the code's exact size, and a zero body.
    pub fn decode(b: &[u8]) -> Result<Self, AbiError> {
        if b.len() < ESCAPE_HEADER_BYTES {
            return Err(AbiError::TooSmall {
                needed: ESCAPE_HEADER_BYTES,
                got: b.len(),
            });
        }
        let version = u32_at(b, 0);
        if version != ESCAPE_VERSION {
            return Err(AbiError::WrongVersion {
                expected: ESCAPE_VERSION,
                got: version,
            });
        }
        let size = u32_at(b, 4) as usize;
        if size != b.len() {
            return Err(AbiError::WrongSize {
                expected: b.len(),
                got: size,
            });
        }
        if u32_at(b, 12) != 0 {
            return Err(AbiError::NonZeroReserved("header reserved"));
        }
        let code = u32_at(b, 8);
        let code = EscapeCode::from_u32(code).ok_or(AbiError::UnknownCode(code))?;
        let needed = code.size();
        if b.len() < needed {
            return Err(AbiError::TooSmall {
                needed,
                got: b.len(),
            });
        }
        if b.len() != needed {
            return Err(AbiError::WrongSize {
                expected: needed,
                got: b.len(),
            });
        }
        if b[ESCAPE_HEADER_BYTES..].iter().any(|&x| x != 0) {
            return Err(AbiError::NonZeroReserved("request body"));
        }
        Ok(match code {
            EscapeCode::Identity => Self::Identity,
            EscapeCode::Counters => Self::Counters,
        })
    }

    /// Writes the request into `out` (exactly `self.code().size()` bytes; other lengths are
    /// [`AbiError::WrongSize`]).
    pub fn encode_into(self, out: &mut [u8]) -> Result<(), AbiError> {
        let size = self.code().size();
        if out.len() != size {
            return Err(AbiError::WrongSize {
                expected: size,
                got: out.len(),
            });
        }
        out.fill(0);
        EscapeHeader::new(self.code()).write(out);
        Ok(())
    }
}

/// The answer to [`EscapeCode::Identity`] (body offsets from the buffer start).
///
/// | offset | type     | field |
/// |-------:|----------|-------|
/// |     16 | u32      | `escape_version` |
/// |     20 | u32      | `interface_version` (negotiated DXGKDDI_INTERFACE_VERSION; 0 if not started) |
/// |     24 | u32      | `device_id` (the device's `ID` register) |
/// |     28 | u32      | `device_version` (`VERSION` register, `major << 16 \| minor`) |
/// |     32 | u32      | `driver_version` (`major << 16 \| minor << 8 \| patch`) |
/// |     36 | u32      | `flags` (bit 0: adapter started) |
/// |     40 | u64      | `aperture_bytes` |
/// |     48 | u32      | `segment_count` (driver-described segments) |
/// |     52 | [u32; 3] | reserved, zero |
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Identity {
    pub escape_version: u32,
    pub interface_version: u32,
    pub device_id: u32,
    pub device_version: u32,
    pub driver_version: u32,
    pub flags: u32,
    pub aperture_bytes: u64,
    pub segment_count: u32,
}

/// [`Identity::flags`]: the adapter is started.
pub const IDENTITY_STARTED: u32 = 1;

impl Identity {
    /// Writes the answer (header included) into an [`IDENTITY_BYTES`] buffer.
    pub fn encode_into(&self, out: &mut [u8]) -> Result<(), AbiError> {
        if out.len() != IDENTITY_BYTES {
            return Err(AbiError::WrongSize {
                expected: IDENTITY_BYTES,
                got: out.len(),
            });
        }
        out.fill(0);
        EscapeHeader::new(EscapeCode::Identity).write(out);
        put_u32(out, 16, self.escape_version);
        put_u32(out, 20, self.interface_version);
        put_u32(out, 24, self.device_id);
        put_u32(out, 28, self.device_version);
        put_u32(out, 32, self.driver_version);
        put_u32(out, 36, self.flags);
        put_u64(out, 40, self.aperture_bytes);
        put_u32(out, 48, self.segment_count);
        Ok(())
    }

    /// Reads an answer (what the client does after the escape returned).
    pub fn decode(b: &[u8]) -> Result<Self, AbiError> {
        check_answer(b, EscapeCode::Identity)?;
        Ok(Self {
            escape_version: u32_at(b, 16),
            interface_version: u32_at(b, 20),
            device_id: u32_at(b, 24),
            device_version: u32_at(b, 28),
            driver_version: u32_at(b, 32),
            flags: u32_at(b, 36),
            aperture_bytes: u64_at(b, 40),
            segment_count: u32_at(b, 48),
        })
    }
}

/// The answer to [`EscapeCode::Counters`]: `values[i]` is [`COUNTER_NAMES`]`[i]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Counters {
    pub values: [u64; COUNTER_COUNT],
}

impl Counters {
    /// Writes the answer (header included) into a [`COUNTERS_BYTES`] buffer.
    pub fn encode_into(&self, out: &mut [u8]) -> Result<(), AbiError> {
        if out.len() != COUNTERS_BYTES {
            return Err(AbiError::WrongSize {
                expected: COUNTERS_BYTES,
                got: out.len(),
            });
        }
        EscapeHeader::new(EscapeCode::Counters).write(out);
        for (i, v) in self.values.iter().enumerate() {
            put_u64(out, ESCAPE_HEADER_BYTES + 8 * i, *v);
        }
        Ok(())
    }

    /// Reads an answer.
    pub fn decode(b: &[u8]) -> Result<Self, AbiError> {
        check_answer(b, EscapeCode::Counters)?;
        let mut c = Self::default();
        for (i, v) in c.values.iter_mut().enumerate() {
            *v = u64_at(b, ESCAPE_HEADER_BYTES + 8 * i);
        }
        Ok(c)
    }

    /// (name, value) pairs.
    pub fn named(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        COUNTER_NAMES
            .iter()
            .copied()
            .zip(self.values.iter().copied())
    }
}

fn check_answer(b: &[u8], code: EscapeCode) -> Result<(), AbiError> {
    if b.len() != code.size() {
        return Err(AbiError::WrongSize {
            expected: code.size(),
            got: b.len(),
        });
    }
    let h = (u32_at(b, 0), u32_at(b, 4) as usize, u32_at(b, 8));
    if h.0 != ESCAPE_VERSION {
        return Err(AbiError::WrongVersion {
            expected: ESCAPE_VERSION,
            got: h.0,
        });
    }
    if h.1 != code.size() || h.2 != code as u32 {
        return Err(AbiError::BadField("header"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(code: EscapeCode) -> [u8; COUNTERS_BYTES] {
        let mut b = [0u8; COUNTERS_BYTES];
        let r = match code {
            EscapeCode::Identity => EscapeRequest::Identity,
            EscapeCode::Counters => EscapeRequest::Counters,
        };
        r.encode_into(&mut b[..code.size()]).unwrap();
        b
    }

    #[test]
    fn requests_round_trip() {
        for code in [EscapeCode::Identity, EscapeCode::Counters] {
            let b = request(code);
            let r = EscapeRequest::decode(&b[..code.size()]).unwrap();
            assert_eq!(r.code(), code);
        }
    }

    #[test]
    fn every_header_and_body_field_is_checked() {
        let good = request(EscapeCode::Identity);
        let n = IDENTITY_BYTES;
        let with = |at: usize, v: u32| {
            let mut b = good;
            put_u32(&mut b, at, v);
            EscapeRequest::decode(&b[..n])
        };
        assert_eq!(
            with(0, 7),
            Err(AbiError::WrongVersion {
                expected: 1,
                got: 7
            })
        );
        assert_eq!(
            with(4, 63),
            Err(AbiError::WrongSize {
                expected: 64,
                got: 63
            })
        );
        assert_eq!(with(8, 99), Err(AbiError::UnknownCode(99)));
        assert_eq!(
            with(12, 1),
            Err(AbiError::NonZeroReserved("header reserved"))
        );
        assert_eq!(with(40, 1), Err(AbiError::NonZeroReserved("request body")));
        // An identity header on a counters-sized buffer: the code's size is what counts.
        let mut b = good;
        put_u32(&mut b, 4, COUNTERS_BYTES as u32);
        assert_eq!(
            EscapeRequest::decode(&b),
            Err(AbiError::WrongSize {
                expected: 64,
                got: COUNTERS_BYTES
            })
        );
        assert!(matches!(
            EscapeRequest::decode(&good[..8]),
            Err(AbiError::TooSmall { .. })
        ));
        // Counters header on a 64-byte buffer: too small for the code.
        let mut c = request(EscapeCode::Counters);
        put_u32(&mut c, 4, 64);
        assert_eq!(
            EscapeRequest::decode(&c[..64]),
            Err(AbiError::TooSmall {
                needed: COUNTERS_BYTES,
                got: 64
            })
        );
    }

    #[test]
    fn answers_round_trip() {
        let id = Identity {
            escape_version: 1,
            interface_version: 0x1234,
            device_id: 5,
            device_version: 0x10000,
            driver_version: 0x100,
            flags: IDENTITY_STARTED,
            aperture_bytes: 1 << 30,
            segment_count: 1,
        };
        let mut b = [0u8; IDENTITY_BYTES];
        id.encode_into(&mut b).unwrap();
        assert_eq!(Identity::decode(&b), Ok(id));
        let mut c = Counters::default();
        c.values[3] = 99;
        let mut b = [0u8; COUNTERS_BYTES];
        c.encode_into(&mut b).unwrap();
        assert_eq!(Counters::decode(&b), Ok(c));
        assert_eq!(c.named().nth(3), Some(("allocation bytes live", 99)));
    }
}
