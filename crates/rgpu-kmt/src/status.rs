//! NTSTATUS as the D3DKMT calls return it.

use std::fmt;

/// An NTSTATUS (negative = failure).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Status(pub i32);

/// Names of the statuses a client meets, for messages.
const NAMES: &[(u32, &str)] = &[
    (0x0000_0000, "STATUS_SUCCESS"),
    (0x0000_0102, "STATUS_TIMEOUT"),
    (0xC000_0001, "STATUS_UNSUCCESSFUL"),
    (0xC000_0002, "STATUS_NOT_IMPLEMENTED"),
    (0xC000_0008, "STATUS_INVALID_HANDLE"),
    (0xC000_000D, "STATUS_INVALID_PARAMETER"),
    (0xC000_0017, "STATUS_NO_MEMORY"),
    (0xC000_0022, "STATUS_ACCESS_DENIED"),
    (0xC000_0023, "STATUS_BUFFER_TOO_SMALL"),
    (0xC000_0059, "STATUS_REVISION_MISMATCH"),
    (0xC000_007A, "STATUS_PROCEDURE_NOT_FOUND"),
    (0xC000_009A, "STATUS_INSUFFICIENT_RESOURCES"),
    (0xC000_00BB, "STATUS_NOT_SUPPORTED"),
    (0xC000_0483, "STATUS_DEVICE_HARDWARE_ERROR"),
    (0xC01E_0100, "STATUS_GRAPHICS_NO_VIDEO_MEMORY"),
    (0xC01E_0106, "STATUS_GRAPHICS_ALLOCATION_INVALID"),
    (0xC01E_0114, "STATUS_GRAPHICS_INVALID_ALLOCATION_HANDLE"),
    (0xC01E_0200, "STATUS_GRAPHICS_GPU_EXCEPTION_ON_DEVICE"),
];

impl Status {
    /// STATUS_SUCCESS.
    pub const SUCCESS: Status = Status(0);
    /// STATUS_TIMEOUT (a success code: the wait ended without the object being signalled).
    pub const TIMEOUT: Status = Status(0x102);

    /// True for success and informational codes.
    pub fn is_success(self) -> bool {
        self.0 >= 0
    }

    /// The symbolic name, when it is one a client commonly meets.
    pub fn name(self) -> Option<&'static str> {
        NAMES
            .iter()
            .find(|(code, _)| *code == self.0 as u32)
            .map(|(_, n)| *n)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n} ({:#010x})", self.0 as u32),
            None => write!(f, "NTSTATUS {:#010x}", self.0 as u32),
        }
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_statuses_print_by_name_and_others_by_value() {
        assert_eq!(
            Status(0xC000_000Du32 as i32).to_string(),
            "STATUS_INVALID_PARAMETER (0xc000000d)"
        );
        assert_eq!(Status(0x1234).to_string(), "NTSTATUS 0x00001234");
        assert!(Status::TIMEOUT.is_success());
        assert!(!Status(0xC000_0001u32 as i32).is_success());
    }
}
