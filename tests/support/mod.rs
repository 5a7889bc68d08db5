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
    boot_with(config, |_| {})
}

/// [`boot`], with `edit` interposing on the DDI table rgpu registered before the adapter is
/// added ([`Machine::edit_registered_driver`]).
pub fn boot_with(
    config: MachineConfig,
    edit: impl FnOnce(&mut sys::DRIVER_INITIALIZATION_DATA),
) -> (Machine, AdapterId) {
    let m = Machine::new(config);
    assert_eq!(m.load_driver(rgpu::ddi::DriverEntry), sys::STATUS_SUCCESS);
    assert!(m.edit_registered_driver(edit), "the driver registered");
    let id = m.add_adapter(rgpu_adapter());
    let status = m.start_adapter(id);
    assert_eq!(status, sys::STATUS_SUCCESS, "{:?}", m.findings());
    (m, id)
}

/// Loads rgpu and starts one root-enumerated adapter (no resources: soft rgpu), asserting both
/// succeed.
pub fn boot_soft(config: MachineConfig) -> (Machine, AdapterId) {
    let m = Machine::new(config);
    assert_eq!(m.load_driver(rgpu::ddi::DriverEntry), sys::STATUS_SUCCESS);
    let id = m.add_root_adapter();
    let status = m.start_adapter(id);
    assert_eq!(status, sys::STATUS_SUCCESS, "{:?}", m.findings());
    (m, id)
}

/// One run of a systematic fault-injection sweep over a soft adapter: load rgpu, add and start
/// a root-enumerated adapter, run `work` if it started, stop, remove (unless the failed start
/// already was undone by Dxgkrnl), unload. Returns the start status (or DriverEntry's).
pub fn soft_sweep_run(m: &Machine, work: impl FnOnce(&Machine, AdapterId)) -> sys::NTSTATUS {
    let status = m.load_driver(rgpu::ddi::DriverEntry);
    if status < 0 {
        return status;
    }
    let id = m.add_root_adapter();
    let status = m.start_adapter(id);
    if status >= 0 {
        work(m, id);
        m.stop_adapter(id);
    }
    if m.adapter(id).state != dxgk_sim::PnpState::Removed {
        m.remove_adapter(id);
    }
    m.unload_driver();
    status
}

/// The machines a soft adapter pages on: WDDM 2.4 and WDDM 3.1, both with the identity IOMMU
/// (a soft adapter does not opt in to DMA remapping, so Dxgkrnl maps it 1:1).
pub fn soft_machines() -> Vec<MachineConfig> {
    vec![
        MachineConfig::windows_10_1803().with_iommu(IommuMode::Identity),
        MachineConfig::windows_11_22h2().with_iommu(IommuMode::Identity),
    ]
}

/// A user-process buffer that keeps the device busy for several device synchronizations: one
/// FILL of 512 MiB of VA whose every page is the same 4 KiB allocation.
pub struct LongFill {
    pub process: dxgk_sim::ProcessId,
    /// GPU VA of the command buffer in `process`.
    pub cmd_va: u64,
    /// Its length in bytes.
    pub len: u32,
    /// The one page every filled VA page maps.
    pub page: dxgk_sim::AllocId,
}

/// Builds a [`LongFill`] of `pattern` in a new process, with its command buffer at `cmd_va`;
/// the caller submits it.
pub fn long_fill(v: &mut dxgk_sim::Vidmm, cmd_va: u64, pattern: u32) -> LongFill {
    let process = v.create_process().unwrap();
    let cmd = v.allocate(4096).unwrap();
    let page = v.allocate(4096).unwrap();
    v.map(process, cmd, cmd_va).unwrap();
    // 131072 device units: more than one device synchronization runs.
    let va = 0x100_0000_0000u64;
    let pages = 131_072usize;
    let target = v.logical_pages(page).unwrap()[0];
    v.map_logical(process, va, &vec![Some(target); pages], true)
        .unwrap();
    let mut buf = vec![0u8; 64];
    let mut enc = rgpu_hw::cmd::Encoder::new(&mut buf);
    enc.fill(
        rgpu_hw::cmd::Target::Virtual(va),
        pages as u64 * 4096,
        pattern,
    )
    .unwrap();
    let cmds = enc.written().to_vec();
    v.write(cmd, 0, &cmds).unwrap();
    LongFill {
        process,
        cmd_va,
        len: cmds.len() as u32,
        page,
    }
}

/// DxgkDdiSetPowerState of the adapter itself (`DISPLAY_ADAPTER_HW_ID`) to `state`, as Dxgkrnl
/// sends it for a device power transition. Call it inside `m.enter`.
pub fn set_adapter_power(
    m: &Machine,
    id: AdapterId,
    state: sys::DEVICE_POWER_STATE,
) -> sys::NTSTATUS {
    let set_power = m
        .registered_driver()
        .expect("rgpu registered")
        .DxgkDdiSetPowerState
        .expect("DxgkDdiSetPowerState");
    // SAFETY: the adapter's context (live while the adapter is); DISPLAY_ADAPTER_HW_ID names
    // the adapter itself.
    unsafe {
        set_power(
            m.adapter(id).context,
            rgpu::ddi::DISPLAY_ADAPTER_HW_ID,
            state,
            sys::POWER_ACTION(0),
        )
    }
}
