//! rgpu: a WDDM render-only GpuMmu display miniport for the rgpu device.
//!
//! Layout: [`ddi`] holds `DriverEntry` and the DDI thunks (validate, recover the adapter,
//! forward to safe code, convert to NTSTATUS at the boundary); `seam` is the only code that
//! differs between the host, cross and wdk flavours (allocator, panic handler, `_fltused`).
#![no_std]

// Host builds (tests) get std's allocator and panic handler; the Windows builds bring their own
// in `seam`.
#[cfg(not(target_os = "windows"))]
extern crate std;

#[macro_use]
mod log;
pub mod adapter;
pub mod caps;
pub mod ddi;
pub mod paging;
mod seam;
#[cfg(rgpu_wdk)]
mod wdk_layouts;

/// Pool tag of rgpu's allocations ("Rgpu" in poolmon).
pub const POOL_TAG: dxgk::pool::PoolTag = dxgk::pool::PoolTag::new(*b"Rgpu");
