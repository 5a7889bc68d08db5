//! rgpu: a WDDM render-only GpuMmu display miniport for the rgpu device.
//!
//! Layout:
//! * [`ddi`] — the DDI entry layer: `DriverEntry`, the DDI table and the `extern "system"`
//!   thunks (check IRQL, null-check, recover the adapter, decode the raw arguments into typed
//!   views from `dxgk`, forward to safe code, convert to NTSTATUS at the boundary). With `seam`,
//!   the only code with `unsafe_code` (besides the SSE2 kernel in `paging::simd`); every
//!   other module is `forbid(unsafe_code)`.
//! * [`adapter`] — the adapter and its parts (address spaces, ring, interrupt state, hardware).
//! * [`objects`] — devices, contexts and processes behind Dxgkrnl's handles;
//!   [`allocation`] — allocations (private data → DXGK_ALLOCATIONINFO) and their opens.
//! * [`escape`] — DxgkDdiEscape's answers; [`counters`] — what it reports.
//! * [`caps`] — what QueryAdapterInfo answers; [`paging`] — BuildPagingBuffer's encoders.
//! * [`version`], [`log_once`] — interface versions; DDIs that log once per adapter.
//! * `seam` — the only code that differs between the host, cross and wdk flavours (allocator,
//!   panic handler, `_fltused`).
//!
//! Dependencies point one way: `ddi` → `adapter`, `objects`, `caps`, `paging` → `version`,
//! `log_once`; nothing below `ddi` imports it.
#![no_std]

// Host builds (tests) get std's allocator and panic handler; the Windows builds bring their own
// in `seam`.
#[cfg(not(target_os = "windows"))]
extern crate std;

#[macro_use]
mod log;
pub mod adapter;
pub mod allocation;
pub mod caps;
pub mod counters;
pub mod ddi;
pub mod escape;
pub mod log_once;
pub mod objects;
pub mod paging;
mod seam;
pub mod soft;
pub mod version;
#[cfg(rgpu_wdk)]
mod wdk_layouts;

/// Pool tag of rgpu's allocations ("Rgpu" in poolmon).
pub const POOL_TAG: dxgk::pool::PoolTag = dxgk::pool::PoolTag::new(*b"Rgpu");
