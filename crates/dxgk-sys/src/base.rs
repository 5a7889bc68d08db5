//! NT base types with fixed widths.
//!
//! Every alias is the x64 Windows width on every host: `ULONG` is `u32` even on Linux,
//! where C's `unsigned long` is 64 bits. Never use `core::ffi::c_long`/`c_ulong` here.

use core::ffi::c_void;

pub type VOID = c_void;
pub type PVOID = *mut c_void;
pub type PCVOID = *const c_void;
pub type HANDLE = *mut c_void;
pub type PHANDLE = *mut HANDLE;

pub type BOOLEAN = u8;
pub type BOOL = i32;
pub type CHAR = i8;
pub type CCHAR = i8;
pub type UCHAR = u8;
pub type BYTE = u8;
pub type WCHAR = u16;
pub type SHORT = i16;
pub type CSHORT = i16;
pub type USHORT = u16;
pub type WORD = u16;
pub type LONG = i32;
pub type ULONG = u32;
pub type DWORD = u32;
pub type INT = i32;
pub type UINT = u32;
pub type INT32 = i32;
pub type UINT32 = u32;
pub type UINT16 = u16;
pub type UINT8 = u8;
pub type LONGLONG = i64;
pub type ULONGLONG = u64;
pub type LONG64 = i64;
pub type ULONG64 = u64;
pub type INT64 = i64;
pub type UINT64 = u64;
pub type SIZE_T = usize;
pub type ULONG_PTR = usize;
pub type LONG_PTR = isize;
pub type UINT_PTR = usize;
pub type PFN_NUMBER = ULONG_PTR;
pub type KAFFINITY = ULONG_PTR;
pub type ACCESS_MASK = ULONG;
pub type KIRQL = UCHAR;
pub type KPRIORITY = LONG;
pub type KPROCESSOR_MODE = CCHAR;

pub type PULONG = *mut ULONG;
pub type PUCHAR = *mut UCHAR;
pub type PWCHAR = *mut WCHAR;
pub type PCSTR = *const u8;
pub type PCWSTR = *const WCHAR;

/// `D3DGPU_VIRTUAL_ADDRESS` (d3dukmdt.h): a GPU virtual address.
pub type D3DGPU_VIRTUAL_ADDRESS = ULONGLONG;
/// `DXGK_PAGE_NUMBER` (d3dkmddi.h): a page number, `PFN_NUMBER`-sized.
pub type DXGK_PAGE_NUMBER = ULONG_PTR;
/// `D3DDDI_VIDEO_PRESENT_SOURCE_ID` / `_TARGET_ID`.
pub type D3DDDI_VIDEO_PRESENT_SOURCE_ID = UINT;
pub type D3DDDI_VIDEO_PRESENT_TARGET_ID = UINT;

/// An `NTSTATUS` value as the ABI carries it. Interpret it with [`crate::NT_SUCCESS`].
pub type NTSTATUS = i32;

/// `NT_SUCCESS(s)`: success and informational codes are non-negative.
#[inline]
pub const fn NT_SUCCESS(status: NTSTATUS) -> bool {
    status >= 0
}
