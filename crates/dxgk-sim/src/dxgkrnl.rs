//! The simulated port driver (Dxgkrnl): registration through `DxgkInitialize`.
//!
//! Validation follows what Windows documents: the declared `Version` must be a known
//! DXGKDDI_INTERFACE_VERSION not newer than the machine's Dxgkrnl, and the PnP DDIs every
//! miniport needs must be present.

use dxgk_sys::{DRIVER_INITIALIZATION_DATA, DRIVER_OBJECT, NTSTATUS, UNICODE_STRING};

use crate::machine::current;
use crate::ntoskrnl::irql::require_irql_at_most;
use crate::verifier::{Finding, Rule};

/// Every DXGKDDI_INTERFACE_VERSION Windows has shipped, oldest first.
pub const KNOWN_INTERFACE_VERSIONS: &[u32] = &[
    dxgk_sys::DXGKDDI_INTERFACE_VERSION_VISTA,
    dxgk_sys::DXGKDDI_INTERFACE_VERSION_VISTA_SP1,
    dxgk_sys::DXGKDDI_INTERFACE_VERSION_WIN7,
    dxgk_sys::DXGKDDI_INTERFACE_VERSION_WIN8,
    dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM1_3,
    dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM1_3_PATH_INDEPENDENT_ROTATION,
    dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM2_0,
    dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM2_1,
    dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM2_1_5,
    dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM2_1_6,
    dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM2_2,
    dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM2_3,
    dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM2_4,
    dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM2_5,
    dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM2_6,
    dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM2_7,
    dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM2_8,
    dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM2_9,
    dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM3_0,
    dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM3_1,
];

/// Per-machine port-driver state.
#[derive(Default)]
pub(crate) struct PortState {
    /// The registered miniport's DDI table (a copy, as Dxgkrnl keeps one).
    pub(crate) registered: Option<Box<DRIVER_INITIALIZATION_DATA>>,
    /// Every `Version` a driver offered to DxgkInitialize, in order (accepted or not).
    pub(crate) offered_versions: Vec<u32>,
}

/// `DxgkInitialize` (displib). PASSIVE_LEVEL.
///
/// Returns STATUS_REVISION_MISMATCH for an unknown version or one newer than this machine's
/// Dxgkrnl (the simulator's choice of code: Windows' exact status is not documented), and
/// STATUS_INVALID_PARAMETER for NULL arguments or missing mandatory PnP DDIs.
#[no_mangle]
pub extern "system" fn DxgkInitialize(
    driver_object: *mut DRIVER_OBJECT,
    registry_path: *mut UNICODE_STRING,
    init: *mut DRIVER_INITIALIZATION_DATA,
) -> NTSTATUS {
    const CALL: &str = "DxgkInitialize";
    if !require_irql_at_most(CALL, dxgk_sys::PASSIVE_LEVEL) {
        return dxgk_sys::STATUS_INVALID_DEVICE_STATE;
    }
    let machine = current();
    if driver_object.is_null() || registry_path.is_null() || init.is_null() {
        machine.report(Finding::here(Rule::InvalidArgument, CALL, "NULL argument"));
        return dxgk_sys::STATUS_INVALID_PARAMETER;
    }
    // SAFETY: non-null and, per the contract, a DRIVER_INITIALIZATION_DATA the driver filled.
    let data = unsafe { *init };
    machine.port().offered_versions.push(data.Version);
    if !KNOWN_INTERFACE_VERSIONS.contains(&data.Version) {
        machine.report(Finding::here(
            Rule::DdiProtocol,
            CALL,
            format!("unknown DXGKDDI_INTERFACE_VERSION {:#x}", data.Version),
        ));
        return dxgk_sys::STATUS_REVISION_MISMATCH;
    }
    if data.Version > machine.config.max_interface_version {
        // Not a driver bug: a driver may probe newer versions first. No finding.
        return dxgk_sys::STATUS_REVISION_MISMATCH;
    }
    let missing: Vec<&str> = [
        ("DxgkDdiAddDevice", data.DxgkDdiAddDevice.is_none()),
        ("DxgkDdiStartDevice", data.DxgkDdiStartDevice.is_none()),
        ("DxgkDdiStopDevice", data.DxgkDdiStopDevice.is_none()),
        ("DxgkDdiRemoveDevice", data.DxgkDdiRemoveDevice.is_none()),
        ("DxgkDdiUnload", data.DxgkDdiUnload.is_none()),
    ]
    .into_iter()
    .filter_map(|(n, m)| m.then_some(n))
    .collect();
    if !missing.is_empty() {
        machine.report(Finding::here(
            Rule::DdiProtocol,
            CALL,
            format!("mandatory DDIs missing: {}", missing.join(", ")),
        ));
        return dxgk_sys::STATUS_INVALID_PARAMETER;
    }
    machine.port().registered = Some(Box::new(data));
    dxgk_sys::STATUS_SUCCESS
}
