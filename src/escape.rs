//! DxgkDdiEscape: rgpu's escape interface (`rgpu_abi::escape`, docs/rgpu-abi.md). The buffer
//! is untrusted user-mode data; it is decoded (every header and body field checked) before
//! anything is answered, and the answer overwrites it in place.

#![forbid(unsafe_code)]

use dxgk::NtResult;
use rgpu_abi::escape::{EscapeRequest, Identity, ESCAPE_VERSION, IDENTITY_STARTED};

use crate::adapter::Adapter;
use crate::allocation::abi_status;
use crate::caps::{APERTURE_SEGMENT_SIZE, SEGMENT_COUNT};

/// The driver's version, `major << 16 | minor << 8 | patch` (from Cargo.toml).
pub const DRIVER_VERSION: u32 = {
    const fn num(s: &str) -> u32 {
        let b = s.as_bytes();
        let mut i = 0;
        let mut v = 0u32;
        while i < b.len() {
            v = v * 10 + (b[i] - b'0') as u32;
            i += 1;
        }
        v
    }
    num(env!("CARGO_PKG_VERSION_MAJOR")) << 16
        | num(env!("CARGO_PKG_VERSION_MINOR")) << 8
        | num(env!("CARGO_PKG_VERSION_PATCH"))
};

/// Answers one escape in `data` (in place). A refused request leaves `data` untouched.
pub fn escape(a: &Adapter, data: &mut [u8]) -> NtResult<()> {
    let request = EscapeRequest::decode(data).map_err(|e| {
        rgpu_log!(error, "Escape: refused: {:?}", e);
        abi_status(e)
    })?;
    match request {
        EscapeRequest::Identity => identity(a).encode_into(data),
        EscapeRequest::Counters => a
            .counters
            .snapshot(u64::from(a.last_completed_fence()))
            .encode_into(data),
    }
    .map_err(abi_status)?;
    a.counters.escaped();
    Ok(())
}

fn identity(a: &Adapter) -> Identity {
    let started = a.started();
    Identity {
        escape_version: ESCAPE_VERSION,
        interface_version: started.map_or(0, |s| s.interface_version()),
        device_id: started.map_or(0, |_| rgpu_hw::regs::ID_VALUE),
        device_version: started.map_or(0, |s| s.device_version()),
        driver_version: DRIVER_VERSION,
        flags: if started.is_some() {
            IDENTITY_STARTED
        } else {
            0
        },
        aperture_bytes: APERTURE_SEGMENT_SIZE as u64,
        segment_count: SEGMENT_COUNT,
    }
}
