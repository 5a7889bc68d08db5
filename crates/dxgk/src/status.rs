//! Typed NTSTATUS errors.

use core::fmt;

use dxgk_sys::NTSTATUS;

/// An NTSTATUS value. As an error it is always a failure code (negative).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[repr(transparent)]
pub struct NtStatus(pub NTSTATUS);

/// `Result` whose error is a failure NTSTATUS; converted back at the DDI boundary.
pub type NtResult<T> = Result<T, NtStatus>;

impl NtStatus {
    pub const SUCCESS: Self = Self(dxgk_sys::STATUS_SUCCESS);
    pub const UNSUCCESSFUL: Self = Self(dxgk_sys::STATUS_UNSUCCESSFUL);
    pub const NOT_IMPLEMENTED: Self = Self(dxgk_sys::STATUS_NOT_IMPLEMENTED);
    pub const INVALID_PARAMETER: Self = Self(dxgk_sys::STATUS_INVALID_PARAMETER);
    pub const NO_MEMORY: Self = Self(dxgk_sys::STATUS_NO_MEMORY);
    pub const BUFFER_TOO_SMALL: Self = Self(dxgk_sys::STATUS_BUFFER_TOO_SMALL);
    pub const PROCEDURE_NOT_FOUND: Self = Self(dxgk_sys::STATUS_PROCEDURE_NOT_FOUND);
    pub const INSUFFICIENT_RESOURCES: Self = Self(dxgk_sys::STATUS_INSUFFICIENT_RESOURCES);
    pub const DEVICE_NOT_READY: Self = Self(dxgk_sys::STATUS_DEVICE_NOT_READY);
    pub const NOT_SUPPORTED: Self = Self(dxgk_sys::STATUS_NOT_SUPPORTED);
    pub const INVALID_DEVICE_STATE: Self = Self(dxgk_sys::STATUS_INVALID_DEVICE_STATE);
    pub const REVISION_MISMATCH: Self = Self(dxgk_sys::STATUS_REVISION_MISMATCH);
    pub const DEVICE_HARDWARE_ERROR: Self = Self(dxgk_sys::STATUS_DEVICE_HARDWARE_ERROR);
    pub const GRAPHICS_INSUFFICIENT_DMA_BUFFER: Self =
        Self(dxgk_sys::STATUS_GRAPHICS_INSUFFICIENT_DMA_BUFFER);
    pub const GRAPHICS_ALLOCATION_BUSY: Self = Self(dxgk_sys::STATUS_GRAPHICS_ALLOCATION_BUSY);
    pub const GRAPHICS_NO_VIDEO_MEMORY: Self = Self(dxgk_sys::STATUS_GRAPHICS_NO_VIDEO_MEMORY);
    pub const GRAPHICS_INVALID_DRIVER_MODEL: Self =
        Self(dxgk_sys::STATUS_GRAPHICS_INVALID_DRIVER_MODEL);

    /// `NT_SUCCESS`.
    pub const fn is_success(self) -> bool {
        self.0 >= 0
    }

    /// The raw value for the ABI.
    pub const fn raw(self) -> NTSTATUS {
        self.0
    }

    /// `Ok(())` for success codes, `Err(self)` for failures.
    pub const fn to_result(self) -> NtResult<()> {
        if self.is_success() {
            Ok(())
        } else {
            Err(self)
        }
    }

    /// Converts a `Result` back to the NTSTATUS a DDI returns.
    pub fn from_result(r: NtResult<()>) -> NTSTATUS {
        match r {
            Ok(()) => dxgk_sys::STATUS_SUCCESS,
            Err(e) => e.0,
        }
    }
}

impl From<NTSTATUS> for NtStatus {
    fn from(v: NTSTATUS) -> Self {
        Self(v)
    }
}

impl fmt::Debug for NtStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NTSTATUS({:#010x})", self.0 as u32)
    }
}

impl fmt::Display for NtStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}
