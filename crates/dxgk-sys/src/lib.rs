//! Raw, layout-exact bindings for WDDM display miniports (`dispmprt.h`, `d3dkmddi.h`,
//! `d3dkmdt.h`, `d3dukmdt.h`) and the NT kernel imports they need, for x64 Windows.
//!
//! Like `wdk-sys`, every type and field keeps its C name (`DXGKRNL_INTERFACE`, `pDmaBuffer`),
//! and everything is reachable from the crate root, so code, docs and
//! `../shared/reference/layouts.json` map one to one. Rust has no anonymous unions or structs:
//! see [`generated`] for the naming rule.
//!
//! Layout: [`base`] (fixed-width NT scalars: `ULONG` is `u32` on every host), [`ntstatus`],
//! `generated` (structs, DDI/callback pointer types and enum constants, generated from the
//! layout facts by `tools/gen-dxgk-sys/gen.py` and checked field by field by
//! `tests/layouts.rs`), [`ntoskrnl`] (kernel imports, the kernel seam), [`inline`] (kernel
//! functions that are inline code on x64) and, for the cross flavour, `displib` (our own
//! `DxgkInitialize`).
#![no_std]
#![allow(non_snake_case, non_camel_case_types, non_upper_case_globals)]

pub mod base;
#[cfg(all(target_os = "windows", not(feature = "wdk")))]
pub mod displib;
pub mod generated;
pub mod inline;
pub mod ntoskrnl;
pub mod ntstatus;

pub use base::*;
pub use generated::*;
pub use inline::*;
pub use ntoskrnl::*;
pub use ntstatus::*;

/// `PAGE_SIZE` as `usize` (x64: 4 KiB).
pub const PAGE_SIZE_USIZE: usize = 4096;

// `displib.lib` is a static library, not an import library: `kind = "static"` makes rustc call
// `DxgkInitialize` directly instead of through a `__imp_DxgkInitialize` pointer, which only an
// import library defines (lld-link does not bind one to a static definition). `-bundle`
// leaves the library to the final link, whose search path (the WDK's Lib/<version>/km/x64)
// comes from the driver's build script; this crate has none.
#[cfg(all(target_os = "windows", feature = "wdk"))]
#[link(name = "displib", kind = "static", modifiers = "-bundle")]
unsafe extern "system" {
    /// `DxgkInitialize` from the WDK's `displib.lib` (wdk flavour). PASSIVE_LEVEL.
    pub fn DxgkInitialize(
        DriverObject: *mut DRIVER_OBJECT,
        RegistryPath: *mut UNICODE_STRING,
        DriverInitializationData: *mut DRIVER_INITIALIZATION_DATA,
    ) -> NTSTATUS;
}

#[cfg(all(target_os = "windows", not(feature = "wdk")))]
pub use displib::DxgkInitialize;

#[cfg(not(target_os = "windows"))]
unsafe extern "system" {
    /// `DxgkInitialize`, defined by `dxgk-sim` on the host. PASSIVE_LEVEL.
    pub fn DxgkInitialize(
        DriverObject: *mut DRIVER_OBJECT,
        RegistryPath: *mut UNICODE_STRING,
        DriverInitializationData: *mut DRIVER_INITIALIZATION_DATA,
    ) -> NTSTATUS;
}
