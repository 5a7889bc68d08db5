//! The simulator backend: dxgk-sim's D3DKMT front end (`dxgk_sim::kmt`) on a simulated machine
//! with the real rgpu driver loaded and the rgpu device model behind its adapter — the same
//! boot as `tests/kmt.rs` and `rgpu-sim`. Host only (dxgk-sim is not built for Windows).
//!
//! # Processes
//!
//! The front end models Dxgkrnl's one-device-per-process VidMm: every adapter handle this
//! backend opens ([`Kmt::enum_adapters2`], [`Kmt::open_adapter_from_luid`]) is a new simulated
//! process, and everything created from that handle belongs to it. So a client that wants two
//! devices (a shared allocation across devices) opens the adapter twice — which is also valid
//! on Windows, where both devices then live in one process.
//!
//! # Known gaps (the fake's `todo_wine`)
//!
//! * The simulated Dxgkrnl has no QueryAdapterInfo: [`Kmt::query_device_ids`] answers with the
//!   PCI IDs the rgpu INF binds ([`crate::RGPU_PCI_VENDOR_ID`]), which is what the simulated
//!   machine's adapter stands for, and [`Kmt::query_driver_description`] with that device's
//!   description from `inf/rgpu.inx` ([`SIM_DRIVER_DESCRIPTION`]); a root-enumerated adapter
//!   ([`SimConfig::soft`]) answers no PCI IDs and [`SIM_ROOT_DRIVER_DESCRIPTION`].
//! * Everything is synchronous (the front end's own gaps, see `dxgk_sim::kmt`): a wait on a
//!   fence nothing will signal times out at once.

use std::collections::HashMap;
use std::time::Duration;

use dxgk_sim::devices::RgpuDevice;
use dxgk_sim::kmt::{self as fe, ClientId, D3dkmtHandle};
use dxgk_sim::{AdapterConfig, AdapterId, Machine, MachineConfig, Vidmm};

pub use dxgk_sim::IommuMode;

use crate::{
    Adapter, AdapterInfo, Allocation, Context, Created, Device, DeviceIds, Fence, GlobalShare, Kmt,
    KmtError, KmtResult, Luid, Opened, Status, Wait, RGPU_PCI_DEVICE_ID, RGPU_PCI_VENDOR_ID,
    STATUS_INVALID_PARAMETER,
};

/// The driver description the simulated PCI adapter reports: `rgpu.DeviceDesc` of
/// `inf/rgpu.inx`, the PCI device it stands for.
pub const SIM_DRIVER_DESCRIPTION: &str = "rgpu render-only GPU";
/// The driver description the simulated root-enumerated adapter ([`SimConfig::soft`])
/// reports: `rgpu.TestDeviceDesc` of `inf/rgpu.inx`.
pub const SIM_ROOT_DRIVER_DESCRIPTION: &str = "rgpu render-only GPU (root-enumerated test device)";

/// Which simulated machine to boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimConfig {
    /// IOMMU model: WDDM 2.4 isolation (identity; Windows 10 1803) or WDDM 3.x DMA remapping
    /// (Windows 11 22H2).
    pub iommu: IommuMode,
    /// Whether an rgpu device sits behind the adapter's register BAR. Without one (a BAR with
    /// no rgpu behind it) the driver fails StartDevice and there is no adapter.
    pub rgpu_hardware: bool,
    /// A root-enumerated `ROOT\RGPU` instead: no resources at all, so the driver runs soft
    /// rgpu (the device model in the driver; `rgpu_hardware` is then ignored). It does not opt
    /// in to DMA remapping, so use [`IommuMode::Identity`]: with `Remapped` the simulated
    /// VidMm refuses it, as Dxgkrnl maps such an adapter 1:1. It reports no PCI IDs (zeros:
    /// what Windows reports for a root-enumerated adapter is not documented) and the INF's
    /// `rgpu.TestDeviceDesc`, so a client finds it by its driver description.
    pub soft: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            iommu: IommuMode::Remapped,
            rgpu_hardware: true,
            soft: false,
        }
    }
}

/// The simulator backend. See the module documentation.
pub struct SimKmt {
    m: Machine,
    id: AdapterId,
    /// `None` when the adapter did not start (then there is no adapter to enumerate).
    k: Option<fe::Kmt>,
    start_status: Status,
    /// Every live handle this backend returned → the simulated process it belongs to.
    owners: HashMap<D3dkmtHandle, ClientId>,
    name: String,
    /// The adapter is root-enumerated ([`SimConfig::soft`]).
    root: bool,
}

/// What [`SimKmt::shutdown`] found.
#[derive(Debug, Default)]
pub struct SimShutdown {
    /// Teardown steps that failed (process exit, VidMm teardown, PnP stop/remove).
    pub errors: Vec<String>,
    /// Verifier findings over the machine's whole life (leaks are checked at unload).
    pub findings: Vec<String>,
}

impl SimShutdown {
    /// True when teardown succeeded and the verifier found nothing.
    pub fn clean(&self) -> bool {
        self.errors.is_empty() && self.findings.is_empty()
    }
}

fn err(call: &'static str) -> impl Fn(i32) -> KmtError {
    move |s| KmtError {
        call,
        status: Status(s),
    }
}

fn refused(call: &'static str) -> KmtError {
    KmtError {
        call,
        status: STATUS_INVALID_PARAMETER,
    }
}

impl SimKmt {
    /// Boots a machine: loads rgpu (DriverEntry), adds the adapter and starts it. A start that
    /// fails leaves a machine with no adapter (see [`SimConfig::rgpu_hardware`]); a failing
    /// DriverEntry or VidMm set-up is an error.
    pub fn boot(config: SimConfig) -> Result<SimKmt, String> {
        let mc = match config.iommu {
            IommuMode::Identity => MachineConfig::windows_10_1803(),
            _ => MachineConfig::windows_11_22h2(),
        }
        .with_iommu(config.iommu);
        let name = format!(
            "simulator ({}, {:?} IOMMU{})",
            mc.name,
            config.iommu,
            if config.soft {
                ", root-enumerated: soft rgpu"
            } else if config.rgpu_hardware {
                ""
            } else {
                ", no rgpu hardware"
            }
        );
        let m = Machine::new(mc);
        let s = m.load_driver(rgpu::ddi::DriverEntry);
        if s != dxgk_sys::STATUS_SUCCESS {
            return Err(format!("rgpu's DriverEntry returned {}", Status(s)));
        }
        let id = if config.soft {
            m.add_root_adapter()
        } else {
            m.add_adapter(AdapterConfig {
                device: config
                    .rgpu_hardware
                    .then(|| Box::new(RgpuDevice::new()) as _),
            })
        };
        let start_status = Status(m.start_adapter(id));
        let k = if start_status.is_success() {
            let v = Vidmm::new(&m, id).map_err(|e| format!("VidMm on the started adapter: {e}"))?;
            Some(fe::Kmt::new(v))
        } else {
            None
        };
        Ok(SimKmt {
            m,
            id,
            k,
            start_status,
            owners: HashMap::new(),
            name,
            root: config.soft,
        })
    }

    /// What the adapter's start returned (a failure means there is no adapter).
    pub fn start_status(&self) -> Status {
        self.start_status
    }

    /// The simulated machine (for tests: findings, fault injection, debug output).
    pub fn machine(&self) -> &Machine {
        &self.m
    }

    /// Every simulated process exits, VidMm tears down, the adapter stops and is removed, the
    /// driver unloads (pool and resource leak checks); returns what failed and what the
    /// verifier found.
    pub fn shutdown(mut self) -> SimShutdown {
        let mut out = SimShutdown::default();
        if let Some(k) = self.k.take() {
            match k.destroy() {
                Ok(v) => {
                    if let Err(e) = v.destroy() {
                        out.errors.push(format!("VidMm teardown: {e}"));
                    }
                }
                Err(s) => out
                    .errors
                    .push(format!("process exit (D3DKMT teardown): {}", Status(s))),
            }
            let s = Status(self.m.stop_adapter(self.id));
            if !s.is_success() {
                out.errors.push(format!("DxgkDdiStopDevice returned {s}"));
            }
        }
        if self.start_status.is_success() {
            let s = Status(self.m.remove_adapter(self.id));
            if !s.is_success() {
                out.errors.push(format!("DxgkDdiRemoveDevice returned {s}"));
            }
        }
        self.m.unload_driver();
        out.findings = self.m.findings().iter().map(|f| f.to_string()).collect();
        out
    }

    fn fe(&mut self, call: &'static str) -> KmtResult<&mut fe::Kmt> {
        self.k.as_mut().ok_or(refused(call))
    }

    fn owner(&self, call: &'static str, h: u32) -> KmtResult<ClientId> {
        self.owners.get(&h).copied().ok_or(refused(call))
    }

    fn own(&mut self, c: ClientId, h: D3dkmtHandle) -> u32 {
        self.owners.insert(h, c);
        h
    }
}

impl Kmt for SimKmt {
    fn describe(&self) -> String {
        self.name.clone()
    }

    fn enum_adapters2(&mut self) -> KmtResult<Vec<AdapterInfo>> {
        const CALL: &str = "D3DKMTEnumAdapters2";
        let Some(k) = self.k.as_mut() else {
            return Ok(Vec::new());
        };
        let c = k.create_client();
        let list = k.enum_adapters2(c).map_err(err(CALL))?;
        Ok(list
            .into_iter()
            .map(|a| AdapterInfo {
                adapter: Adapter(self.own(c, a.h_adapter)),
                luid: Luid(a.adapter_luid),
                sources: a.num_of_sources,
            })
            .collect())
    }

    fn open_adapter_from_luid(&mut self, luid: Luid) -> KmtResult<Adapter> {
        const CALL: &str = "D3DKMTOpenAdapterFromLuid";
        let k = self.fe(CALL)?;
        let c = k.create_client();
        let mut a = fe::OpenAdapterFromLuid {
            adapter_luid: luid.0,
            ..Default::default()
        };
        k.open_adapter_from_luid(c, &mut a).map_err(err(CALL))?;
        Ok(Adapter(self.own(c, a.h_adapter)))
    }

    fn query_device_ids(&mut self, adapter: Adapter) -> KmtResult<DeviceIds> {
        // No QueryAdapterInfo in the simulated Dxgkrnl (module documentation, known gaps).
        self.owner("D3DKMTQueryAdapterInfo", adapter.0)?;
        if self.root {
            // No PCI configuration space behind a root-enumerated device (SimConfig::soft).
            return Ok(DeviceIds::default());
        }
        Ok(DeviceIds {
            vendor_id: RGPU_PCI_VENDOR_ID,
            device_id: RGPU_PCI_DEVICE_ID,
            revision_id: 0,
        })
    }

    fn query_driver_description(&mut self, adapter: Adapter) -> KmtResult<String> {
        // No QueryAdapterInfo in the simulated Dxgkrnl (module documentation, known gaps).
        self.owner("D3DKMTQueryAdapterInfo", adapter.0)?;
        Ok(if self.root {
            SIM_ROOT_DRIVER_DESCRIPTION
        } else {
            SIM_DRIVER_DESCRIPTION
        }
        .to_owned())
    }

    fn close_adapter(&mut self, adapter: Adapter) -> KmtResult<()> {
        const CALL: &str = "D3DKMTCloseAdapter";
        let c = self.owner(CALL, adapter.0)?;
        self.fe(CALL)?
            .close_adapter(c, adapter.0)
            .map_err(err(CALL))?;
        self.owners.remove(&adapter.0);
        Ok(())
    }

    fn create_device(&mut self, adapter: Adapter) -> KmtResult<Device> {
        const CALL: &str = "D3DKMTCreateDevice";
        let c = self.owner(CALL, adapter.0)?;
        let mut d = fe::CreateDevice {
            h_adapter: adapter.0,
            ..Default::default()
        };
        self.fe(CALL)?.create_device(c, &mut d).map_err(err(CALL))?;
        Ok(Device(self.own(c, d.h_device)))
    }

    fn destroy_device(&mut self, device: Device) -> KmtResult<()> {
        const CALL: &str = "D3DKMTDestroyDevice";
        let c = self.owner(CALL, device.0)?;
        self.fe(CALL)?
            .destroy_device(c, device.0)
            .map_err(err(CALL))?;
        self.owners.remove(&device.0);
        Ok(())
    }

    fn create_allocation2(
        &mut self,
        device: Device,
        private_data: &[&[u8]],
        shared: bool,
    ) -> KmtResult<Created> {
        const CALL: &str = "D3DKMTCreateAllocation2";
        let c = self.owner(CALL, device.0)?;
        let mut a = fe::CreateAllocation2 {
            h_device: device.0,
            create_shared: shared,
            allocations: private_data
                .iter()
                .map(|p| fe::AllocationInfo2 {
                    private_driver_data: p.to_vec(),
                    h_allocation: 0,
                })
                .collect(),
            h_global_share: 0,
        };
        self.fe(CALL)?
            .create_allocation2(c, &mut a)
            .map_err(err(CALL))?;
        Ok(Created {
            allocations: a
                .allocations
                .iter()
                .map(|i| Allocation(self.own(c, i.h_allocation)))
                .collect(),
            share: shared.then_some(GlobalShare(a.h_global_share)),
        })
    }

    fn open_resource(&mut self, device: Device, share: GlobalShare) -> KmtResult<Vec<Opened>> {
        const CALL: &str = "D3DKMTOpenResource";
        let c = self.owner(CALL, device.0)?;
        let mut r = fe::OpenResource {
            h_device: device.0,
            h_global_share: share.0,
            allocations: Vec::new(),
        };
        self.fe(CALL)?.open_resource(c, &mut r).map_err(err(CALL))?;
        Ok(r.allocations
            .into_iter()
            .map(|a| Opened {
                allocation: Allocation(self.own(c, a.h_allocation)),
                private_data: a.private_driver_data,
            })
            .collect())
    }

    fn destroy_allocation2(&mut self, device: Device, allocations: &[Allocation]) -> KmtResult<()> {
        const CALL: &str = "D3DKMTDestroyAllocation2";
        let c = self.owner(CALL, device.0)?;
        let args = fe::DestroyAllocation2 {
            h_device: device.0,
            allocations: allocations.iter().map(|a| a.0).collect(),
            flags: Default::default(),
        };
        self.fe(CALL)?
            .destroy_allocation2(c, &args)
            .map_err(err(CALL))?;
        for a in allocations {
            self.owners.remove(&a.0);
        }
        Ok(())
    }

    fn reserve_gpu_virtual_address(
        &mut self,
        adapter: Adapter,
        base: u64,
        size: u64,
    ) -> KmtResult<u64> {
        const CALL: &str = "D3DKMTReserveGpuVirtualAddress";
        let c = self.owner(CALL, adapter.0)?;
        let mut r = fe::ReserveGpuVirtualAddress {
            h_adapter: adapter.0,
            base_address: base,
            size,
            virtual_address: 0,
        };
        self.fe(CALL)?
            .reserve_gpu_virtual_address(c, &mut r)
            .map_err(err(CALL))?;
        Ok(r.virtual_address)
    }

    fn map_gpu_virtual_address(
        &mut self,
        device: Device,
        va: u64,
        allocation: Allocation,
        pages: u64,
    ) -> KmtResult<u64> {
        const CALL: &str = "D3DKMTMapGpuVirtualAddress";
        let c = self.owner(CALL, device.0)?;
        let mut m = fe::MapGpuVirtualAddress {
            h_device: device.0,
            base_address: va,
            h_allocation: allocation.0,
            offset_in_pages: 0,
            size_in_pages: pages,
            ..Default::default()
        };
        self.fe(CALL)?
            .map_gpu_virtual_address(c, &mut m)
            .map_err(err(CALL))?;
        Ok(m.virtual_address)
    }

    fn free_gpu_virtual_address(
        &mut self,
        adapter: Adapter,
        base: u64,
        size: u64,
    ) -> KmtResult<()> {
        const CALL: &str = "D3DKMTFreeGpuVirtualAddress";
        let c = self.owner(CALL, adapter.0)?;
        let args = fe::FreeGpuVirtualAddress {
            h_adapter: adapter.0,
            base_address: base,
            size,
        };
        self.fe(CALL)?
            .free_gpu_virtual_address(c, &args)
            .map_err(err(CALL))
    }

    fn make_resident(&mut self, device: Device, allocations: &[Allocation]) -> KmtResult<()> {
        const CALL: &str = "D3DKMTMakeResident";
        let c = self.owner(CALL, device.0)?;
        let mut args = fe::MakeResident {
            h_device: device.0,
            allocations: allocations.iter().map(|a| a.0).collect(),
            paging_fence_value: 0,
        };
        self.fe(CALL)?
            .make_resident(c, &mut args)
            .map_err(err(CALL))
    }

    fn evict(&mut self, device: Device, allocations: &[Allocation]) -> KmtResult<u64> {
        const CALL: &str = "D3DKMTEvict";
        let c = self.owner(CALL, device.0)?;
        let mut args = fe::Evict {
            h_device: device.0,
            allocations: allocations.iter().map(|a| a.0).collect(),
            num_bytes_to_trim: 0,
        };
        self.fe(CALL)?.evict(c, &mut args).map_err(err(CALL))?;
        Ok(args.num_bytes_to_trim)
    }

    fn create_context_virtual(&mut self, device: Device, node: u32) -> KmtResult<Context> {
        const CALL: &str = "D3DKMTCreateContextVirtual";
        let c = self.owner(CALL, device.0)?;
        let mut args = fe::CreateContextVirtual {
            h_device: device.0,
            node_ordinal: node,
            h_context: 0,
        };
        self.fe(CALL)?
            .create_context_virtual(c, &mut args)
            .map_err(err(CALL))?;
        Ok(Context(self.own(c, args.h_context)))
    }

    fn submit_command(&mut self, context: Context, commands: u64, length: u32) -> KmtResult<()> {
        const CALL: &str = "D3DKMTSubmitCommand";
        let c = self.owner(CALL, context.0)?;
        let args = fe::SubmitCommand {
            commands,
            command_length: length,
            broadcast_contexts: vec![context.0],
        };
        self.fe(CALL)?.submit_command(c, &args).map_err(err(CALL))
    }

    fn create_monitored_fence(&mut self, device: Device, initial_value: u64) -> KmtResult<Fence> {
        const CALL: &str = "D3DKMTCreateSynchronizationObject2";
        let c = self.owner(CALL, device.0)?;
        let mut args = fe::CreateSynchronizationObject2 {
            h_device: device.0,
            initial_fence_value: initial_value,
            h_sync_object: 0,
        };
        self.fe(CALL)?
            .create_synchronization_object2(c, &mut args)
            .map_err(err(CALL))?;
        Ok(Fence(self.own(c, args.h_sync_object)))
    }

    fn signal_from_gpu2(
        &mut self,
        context: Context,
        fences: &[Fence],
        value: u64,
    ) -> KmtResult<()> {
        const CALL: &str = "D3DKMTSignalSynchronizationObjectFromGpu2";
        let c = self.owner(CALL, context.0)?;
        let args = fe::SignalSynchronizationObjectFromGpu2 {
            broadcast_contexts: vec![context.0],
            objects: fences.iter().map(|f| f.0).collect(),
            fence_value: value,
        };
        self.fe(CALL)?
            .signal_synchronization_object_from_gpu2(c, &args)
            .map_err(err(CALL))
    }

    fn wait_from_cpu(
        &mut self,
        device: Device,
        fences: &[(Fence, u64)],
        _timeout: Duration,
    ) -> KmtResult<Wait> {
        const CALL: &str = "D3DKMTWaitForSynchronizationObjectFromCpu";
        let c = self.owner(CALL, device.0)?;
        let args = fe::WaitForSynchronizationObjectFromCpu {
            h_device: device.0,
            objects: fences.iter().map(|f| f.0 .0).collect(),
            fence_values: fences.iter().map(|f| f.1).collect(),
        };
        match self
            .fe(CALL)?
            .wait_for_synchronization_object_from_cpu(c, &args)
        {
            Ok(fe::WaitOutcome::Reached) => Ok(Wait::Reached),
            Ok(fe::WaitOutcome::TimedOut) => Ok(Wait::TimedOut),
            Err(s) => Err(err(CALL)(s)),
        }
    }

    fn destroy_synchronization_object(&mut self, fence: Fence) -> KmtResult<()> {
        const CALL: &str = "D3DKMTDestroySynchronizationObject";
        let c = self.owner(CALL, fence.0)?;
        self.fe(CALL)?
            .destroy_synchronization_object(c, fence.0)
            .map_err(err(CALL))?;
        self.owners.remove(&fence.0);
        Ok(())
    }

    fn lock2(&mut self, device: Device, allocation: Allocation) -> KmtResult<u64> {
        const CALL: &str = "D3DKMTLock2";
        let c = self.owner(CALL, device.0)?;
        let mut args = fe::Lock2 {
            h_device: device.0,
            h_allocation: allocation.0,
            locked_bytes: 0,
        };
        self.fe(CALL)?.lock2(c, &mut args).map_err(err(CALL))?;
        Ok(args.locked_bytes)
    }

    fn read_locked(
        &mut self,
        _device: Device,
        allocation: Allocation,
        offset: u64,
        out: &mut [u8],
    ) -> KmtResult<()> {
        const CALL: &str = "read through Lock2's pData";
        let c = self.owner(CALL, allocation.0)?;
        let got = self
            .fe(CALL)?
            .read_locked(c, allocation.0, offset, out.len())
            .map_err(err(CALL))?;
        out.copy_from_slice(&got);
        Ok(())
    }

    fn write_locked(
        &mut self,
        _device: Device,
        allocation: Allocation,
        offset: u64,
        data: &[u8],
    ) -> KmtResult<()> {
        const CALL: &str = "write through Lock2's pData";
        let c = self.owner(CALL, allocation.0)?;
        self.fe(CALL)?
            .write_locked(c, allocation.0, offset, data)
            .map_err(err(CALL))
    }

    fn unlock2(&mut self, device: Device, allocation: Allocation) -> KmtResult<()> {
        const CALL: &str = "D3DKMTUnlock2";
        let c = self.owner(CALL, device.0)?;
        let args = fe::Unlock2 {
            h_device: device.0,
            h_allocation: allocation.0,
        };
        self.fe(CALL)?.unlock2(c, &args).map_err(err(CALL))
    }

    fn escape(
        &mut self,
        adapter: Adapter,
        device: Option<Device>,
        data: &mut [u8],
    ) -> KmtResult<()> {
        const CALL: &str = "D3DKMTEscape";
        let c = self.owner(CALL, adapter.0)?;
        let mut args = fe::Escape {
            h_adapter: adapter.0,
            h_device: device.map_or(0, |d| d.0),
            private_driver_data: data.to_vec(),
        };
        self.fe(CALL)?.escape(c, &mut args).map_err(err(CALL))?;
        if args.private_driver_data.len() != data.len() {
            return Err(refused(CALL));
        }
        data.copy_from_slice(&args.private_driver_data);
        Ok(())
    }
}
