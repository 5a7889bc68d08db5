//! DxgkDdiEscape's arguments as a typed view: the device and context handles and the
//! private-data buffer as a byte slice the driver decodes (and answers into) with its own
//! format. Dxgkrnl has copied the user-mode buffer into kernel memory before the call and copies
//! it back afterwards, so the slice is plain kernel memory — but its contents are untrusted.

use core::ffi::c_void;

use dxgk_sys as sys;

use crate::handle::{ContextHandle, DeviceHandle};
use crate::{NtError, NtResult};

/// DxgkDdiEscape's arguments.
pub struct Escape<'a> {
    /// `hDevice` (NULL for an adapter-level escape).
    pub device: Option<DeviceHandle>,
    /// `hContext`.
    pub context: Option<ContextHandle>,
    /// `Flags.HardwareAccess`: the escape touches hardware (Dxgkrnl then synchronizes it).
    pub hardware_access: bool,
    /// `pPrivateDriverData` / `PrivateDriverDataSize` (empty for size 0).
    pub data: &'a mut [u8],
}

impl core::fmt::Debug for Escape<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Escape({} bytes)", self.data.len())
    }
}

impl Escape<'_> {
    /// Decodes Dxgkrnl's argument block; STATUS_INVALID_PARAMETER for NULL or for a NULL buffer
    /// with a non-zero size.
    ///
    /// # Safety
    /// `raw` must be NULL or the argument block Dxgkrnl passed to DxgkDdiEscape, its buffer
    /// valid for reads and writes of `PrivateDriverDataSize` bytes for `'a` and used by nothing
    /// else meanwhile.
    pub unsafe fn from_raw(raw: *const sys::DXGKARG_ESCAPE) -> NtResult<Self> {
        // SAFETY: NULL or valid (caller).
        let raw = unsafe { raw.as_ref() }.ok_or(NtError::INVALID_PARAMETER)?;
        let len = raw.PrivateDriverDataSize as usize;
        let data: &mut [u8] = if len == 0 {
            &mut []
        } else if raw.pPrivateDriverData.is_null() || len > isize::MAX as usize {
            return Err(NtError::INVALID_PARAMETER);
        } else {
            let p: *mut c_void = raw.pPrivateDriverData;
            // SAFETY: non-NULL, `len` bytes valid and exclusive (caller).
            unsafe { core::slice::from_raw_parts_mut(p.cast::<u8>(), len) }
        };
        Ok(Self {
            device: DeviceHandle::from_raw(raw.hDevice),
            context: ContextHandle::from_raw(raw.hContext),
            hardware_access: raw.Flags.HardwareAccess() != 0,
            data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_null_buffer_with_a_size_is_refused_and_size_zero_is_empty() {
        let mut args = sys::DXGKARG_ESCAPE {
            PrivateDriverDataSize: 16,
            ..Default::default()
        };
        // SAFETY: a valid block.
        let r = unsafe { Escape::from_raw(&args) };
        assert_eq!(r.err(), Some(NtError::INVALID_PARAMETER));
        args.PrivateDriverDataSize = 0;
        // SAFETY: a valid block.
        let e = unsafe { Escape::from_raw(&args) }.unwrap();
        assert!(e.data.is_empty() && e.device.is_none());
        let mut buf = [1u8; 8];
        args.PrivateDriverDataSize = 8;
        args.pPrivateDriverData = buf.as_mut_ptr().cast();
        // SAFETY: a valid block and buffer.
        let e = unsafe { Escape::from_raw(&args) }.unwrap();
        e.data[0] = 9;
        assert_eq!(buf[0], 9);
    }
}
