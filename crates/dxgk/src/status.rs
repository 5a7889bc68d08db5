//! Typed NTSTATUS errors, after the Rust for Linux `kernel::error` module: an [`NtError`] is
//! always a failure code, so `Result<T, NtError>` cannot carry a "successful error", and a
//! success code can only travel as `Ok`.

use core::fmt;

use dxgk_sys::NTSTATUS;

/// A failure NTSTATUS: one for which `NT_SUCCESS` is false (warning or error severity).
///
/// # Invariants
/// The wrapped value is negative.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[repr(transparent)]
pub struct NtError(NTSTATUS);

/// `Result` whose error is a failure NTSTATUS; converted back at the DDI boundary with
/// [`into_ntstatus`].
pub type NtResult<T> = Result<T, NtError>;

/// Declares `NtError` constants for `STATUS_*` values, checking at compile time that each one
/// is a failure code (so the type invariant holds for every constant).
macro_rules! errors {
    ($($name:ident = $status:ident;)*) => {
        impl NtError {
            $(
                #[doc = concat!("`", stringify!($status), "`.")]
                pub const $name: Self = {
                    assert!(dxgk_sys::$status < 0, "not a failure NTSTATUS");
                    // INVARIANT: negative, asserted above.
                    Self(dxgk_sys::$status)
                };
            )*
        }
    };
}

errors! {
    UNSUCCESSFUL = STATUS_UNSUCCESSFUL;
    NOT_IMPLEMENTED = STATUS_NOT_IMPLEMENTED;
    INVALID_PARAMETER = STATUS_INVALID_PARAMETER;
    NO_MEMORY = STATUS_NO_MEMORY;
    BUFFER_TOO_SMALL = STATUS_BUFFER_TOO_SMALL;
    PROCEDURE_NOT_FOUND = STATUS_PROCEDURE_NOT_FOUND;
    INSUFFICIENT_RESOURCES = STATUS_INSUFFICIENT_RESOURCES;
    DEVICE_NOT_READY = STATUS_DEVICE_NOT_READY;
    NOT_SUPPORTED = STATUS_NOT_SUPPORTED;
    INVALID_DEVICE_STATE = STATUS_INVALID_DEVICE_STATE;
    REVISION_MISMATCH = STATUS_REVISION_MISMATCH;
    DEVICE_HARDWARE_ERROR = STATUS_DEVICE_HARDWARE_ERROR;
    GRAPHICS_INSUFFICIENT_DMA_BUFFER = STATUS_GRAPHICS_INSUFFICIENT_DMA_BUFFER;
    GRAPHICS_ALLOCATION_BUSY = STATUS_GRAPHICS_ALLOCATION_BUSY;
    GRAPHICS_NO_VIDEO_MEMORY = STATUS_GRAPHICS_NO_VIDEO_MEMORY;
    GRAPHICS_INVALID_DRIVER_MODEL = STATUS_GRAPHICS_INVALID_DRIVER_MODEL;
    GRAPHICS_GPU_EXCEPTION_ON_DEVICE = STATUS_GRAPHICS_GPU_EXCEPTION_ON_DEVICE;
}

impl NtError {
    /// The error for a raw NTSTATUS, or `None` for a success (or informational) code.
    pub const fn from_raw(status: NTSTATUS) -> Option<Self> {
        if status < 0 {
            // INVARIANT: negative, checked above.
            Some(Self(status))
        } else {
            None
        }
    }

    /// The raw value for the ABI (always a failure code).
    pub const fn raw(self) -> NTSTATUS {
        self.0
    }
}

/// `Ok(())` for a success NTSTATUS (`NT_SUCCESS`), `Err` for a failure: how a status returned by
/// Dxgkrnl or the kernel enters Rust.
pub const fn to_result(status: NTSTATUS) -> NtResult<()> {
    match NtError::from_raw(status) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The NTSTATUS a DDI returns for `r`: `STATUS_SUCCESS` or the error's code.
pub const fn into_ntstatus(r: NtResult<()>) -> NTSTATUS {
    match r {
        Ok(()) => dxgk_sys::STATUS_SUCCESS,
        Err(e) => e.0,
    }
}

impl fmt::Debug for NtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NTSTATUS({:#010x})", self.0 as u32)
    }
}

impl fmt::Display for NtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_and_informational_codes_are_not_errors() {
        assert_eq!(NtError::from_raw(dxgk_sys::STATUS_SUCCESS), None);
        assert_eq!(NtError::from_raw(0x4000_0000), None);
        assert_eq!(to_result(dxgk_sys::STATUS_SUCCESS), Ok(()));
    }

    #[test]
    fn failure_codes_round_trip() {
        let e = NtError::from_raw(dxgk_sys::STATUS_INVALID_PARAMETER).unwrap();
        assert_eq!(e, NtError::INVALID_PARAMETER);
        assert_eq!(e.raw(), dxgk_sys::STATUS_INVALID_PARAMETER);
        assert_eq!(to_result(e.raw()), Err(e));
        assert_eq!(into_ntstatus(Err(e)), dxgk_sys::STATUS_INVALID_PARAMETER);
        assert_eq!(into_ntstatus(Ok(())), dxgk_sys::STATUS_SUCCESS);
        // Warning severity (0x8...) fails NT_SUCCESS too.
        assert!(NtError::from_raw(0x8000_0005_u32 as i32).is_some());
    }
}
