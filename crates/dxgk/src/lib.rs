//! Safe wrappers over `dxgk-sys` for WDDM miniports, modelled on the Rust for Linux `kernel`
//! crate: owning and borrowing types with documented invariants, errors as [`NtError`] (never a success code).
//!
//! Nothing here knows whether it runs on Windows or inside `dxgk-sim`.
#![no_std]

pub mod allocation;
pub mod aperture_views;
pub mod args;
pub mod debug;
pub mod device;
pub mod device_memory;
pub mod escape;
pub mod handle;
pub mod interface;
pub mod interrupt;
pub mod irql;
pub mod mdl;
pub mod memory;
pub mod page_pool;
pub mod paging;
pub mod pmo;
pub mod pool;
pub mod query;
pub mod status;
pub mod sync;
pub mod thread;
pub mod time;

pub use status::{NtError, NtResult};
