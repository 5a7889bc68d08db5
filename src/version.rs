//! Interface versions rgpu registers with and accepts.

#![forbid(unsafe_code)]

use dxgk_sys as sys;

/// Interface versions rgpu can register with, newest first: WDDM 3.1 down to WDDM 2.4 (the
/// first with the IOMMU memory callbacks). One rgpu.sys serves every Windows from 1803 up.
pub const SUPPORTED_INTERFACE_VERSIONS: &[u32] = &[
    sys::DXGKDDI_INTERFACE_VERSION_WDDM3_1,
    sys::DXGKDDI_INTERFACE_VERSION_WDDM3_0,
    sys::DXGKDDI_INTERFACE_VERSION_WDDM2_9,
    sys::DXGKDDI_INTERFACE_VERSION_WDDM2_8,
    sys::DXGKDDI_INTERFACE_VERSION_WDDM2_7,
    sys::DXGKDDI_INTERFACE_VERSION_WDDM2_6,
    sys::DXGKDDI_INTERFACE_VERSION_WDDM2_5,
    sys::DXGKDDI_INTERFACE_VERSION_WDDM2_4,
];

/// The newest interface rgpu supports.
pub const NEWEST_INTERFACE_VERSION: u32 = SUPPORTED_INTERFACE_VERSIONS[0];

/// The oldest interface rgpu accepts from Dxgkrnl at StartDevice.
pub const MINIMUM_INTERFACE_VERSION: u32 = sys::DXGKDDI_INTERFACE_VERSION_WDDM2_4;
