//! Shared setup of the driver-level test suites: the machines rgpu is tested on and booting
//! the real driver with the rgpu device model behind its adapter.
#![allow(dead_code)] // each test crate uses a subset

use dxgk_sim::devices::RgpuDevice;
use dxgk_sim::{AdapterConfig, AdapterId, IommuMode, Machine, MachineConfig};
use dxgk_sys as sys;

/// The two configurations every scenario runs on: WDDM 2.4 isolation (identity IOMMU, the
/// oldest Windows rgpu supports) and WDDM 3.1 with DMA remapping.
pub fn machines() -> Vec<MachineConfig> {
    vec![
        MachineConfig::windows_10_1803().with_iommu(IommuMode::Identity),
        MachineConfig::windows_11_22h2().with_iommu(IommuMode::Remapped),
    ]
}

/// An adapter with the rgpu device model behind its BAR.
pub fn rgpu_adapter() -> AdapterConfig {
    AdapterConfig {
        device: Some(Box::new(RgpuDevice::new())),
    }
}

/// Loads rgpu and starts one rgpu adapter, asserting both succeed.
pub fn boot(config: MachineConfig) -> (Machine, AdapterId) {
    let m = Machine::new(config);
    assert_eq!(m.load_driver(rgpu::ddi::DriverEntry), sys::STATUS_SUCCESS);
    let id = m.add_adapter(rgpu_adapter());
    let status = m.start_adapter(id);
    assert_eq!(status, sys::STATUS_SUCCESS, "{:?}", m.findings());
    (m, id)
}
