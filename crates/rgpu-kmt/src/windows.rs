//! The Windows backend: `gdi32.dll`'s `D3DKMT*` functions through Microsoft's `windows` crate
//! (`windows::Wdk::Graphics::Direct3D`). Every call fills its D3DKMT structure from the trait
//! method's arguments, passes it, and returns the NTSTATUS unchanged.
//!
//! What this backend adds to the bare calls, so that the trait means the same on both
//! backends:
//! * **Paging queues.** Each device gets one (D3DKMTCreatePagingQueue) in
//!   [`Kmt::create_device`]; MapGpuVirtualAddress and MakeResident go through it, and the
//!   returned paging fence value is waited for on the queue's sync object before the call
//!   returns.
//! * **Bounded waits.** D3DKMTWaitForSynchronizationObjectFromCpu is given an event
//!   (`hAsyncEvent`) and returns at once; the backend waits for that event with a timeout.
//! * **Lock2.** `pData` is kept until Unlock2; reads and writes are bounds-checked against the
//!   allocation's size, known from its rgpu private data (created or opened).
//! * **Shared allocations** are created as a resource (`CreateResource` + `CreateShared`), and
//!   opened with D3DKMTQueryResourceInfo + D3DKMTOpenResource2; destroying every allocation of
//!   such a resource destroys the resource.
//! * **Missing exports.** gdi32's imports are bound at load time, and a system whose gdi32
//!   lacks them (Wine has no Dxgkrnl and exports only a few D3DKMT functions) binds stubs that
//!   abort when called. [`WinKmt::new`] therefore checks with GetProcAddress that every function
//!   this backend calls exists; if one does not, enumeration returns
//!   STATUS_PROCEDURE_NOT_FOUND and nothing else is called.
//!
//! Verified here only by compiling for `x86_64-pc-windows-gnu` and by running under Wine (the
//! "no rgpu adapter" path); the device paths need a Windows machine with rgpu.

use std::collections::BTreeMap;
use std::ffi::c_void;
use std::time::Duration;

use windows::core::{PCSTR, PCWSTR};
use windows::Wdk::Graphics::Direct3D as d3d;
use windows::Win32::Foundation::{CloseHandle, LUID, NTSTATUS, WAIT_OBJECT_0, WAIT_TIMEOUT};
use windows::Win32::System::LibraryLoader::{GetModuleHandleW, GetProcAddress};
use windows::Win32::System::Threading::{CreateEventW, WaitForSingleObject};

use crate::{
    allocation_bytes, Adapter, AdapterInfo, Allocation, Context, Created, Device, DeviceIds, Fence,
    GlobalShare, Kmt, KmtError, KmtResult, Luid, Opened, Status, Wait, STATUS_INVALID_PARAMETER,
};

/// Every gdi32 export this backend calls.
const REQUIRED: [&str; 26] = [
    "D3DKMTEnumAdapters2",
    "D3DKMTOpenAdapterFromLuid",
    "D3DKMTQueryAdapterInfo",
    "D3DKMTCloseAdapter",
    "D3DKMTCreateDevice",
    "D3DKMTDestroyDevice",
    "D3DKMTCreatePagingQueue",
    "D3DKMTDestroyPagingQueue",
    "D3DKMTCreateAllocation2",
    "D3DKMTQueryResourceInfo",
    "D3DKMTOpenResource2",
    "D3DKMTDestroyAllocation2",
    "D3DKMTReserveGpuVirtualAddress",
    "D3DKMTMapGpuVirtualAddress",
    "D3DKMTFreeGpuVirtualAddress",
    "D3DKMTMakeResident",
    "D3DKMTEvict",
    "D3DKMTCreateContextVirtual",
    "D3DKMTSubmitCommand",
    "D3DKMTCreateSynchronizationObject2",
    "D3DKMTSignalSynchronizationObjectFromGpu2",
    "D3DKMTWaitForSynchronizationObjectFromCpu",
    "D3DKMTDestroySynchronizationObject",
    "D3DKMTLock2",
    "D3DKMTUnlock2",
    "D3DKMTEscape",
];

/// STATUS_PROCEDURE_NOT_FOUND: what enumeration returns when gdi32 lacks an export.
pub const STATUS_PROCEDURE_NOT_FOUND: Status = Status(0xC000_007Au32 as i32);
/// STATUS_PENDING: MakeResident's "paging is under way, wait for the paging fence".
const STATUS_PENDING: i32 = 0x103;
/// STATUS_BUFFER_TOO_SMALL: EnumAdapters2 when adapters appeared between its two calls.
const STATUS_BUFFER_TOO_SMALL: i32 = 0xC000_0023u32 as i32;
/// D3DKMT_CREATEALLOCATIONFLAGS: `CreateResource` (bit 0), `CreateShared` (bit 1).
const CREATE_RESOURCE: u32 = 1 << 0;
const CREATE_SHARED: u32 = 1 << 1;
/// D3DDDIGPUVIRTUALADDRESS_PROTECTION_TYPE: `Write` (bit 0).
const PROTECTION_WRITE: u64 = 1 << 0;
/// D3DDDI_ALLOCATIONPRIORITY_NORMAL.
const PRIORITY_NORMAL: u32 = 0x7800_0000;
/// How long a paging-fence wait may take.
const PAGING_WAIT: Duration = Duration::from_secs(20);

fn check(call: &'static str, s: NTSTATUS) -> KmtResult<()> {
    if s.0 >= 0 {
        Ok(())
    } else {
        Err(KmtError {
            call,
            status: Status(s.0),
        })
    }
}

fn refused(call: &'static str) -> KmtError {
    KmtError {
        call,
        status: STATUS_INVALID_PARAMETER,
    }
}

fn to_luid(l: LUID) -> Luid {
    Luid(u64::from(l.LowPart) | (u64::from(l.HighPart as u32) << 32))
}

fn from_luid(l: Luid) -> LUID {
    LUID {
        LowPart: l.0 as u32,
        HighPart: (l.0 >> 32) as i32,
    }
}

fn len32(call: &'static str, n: usize) -> KmtResult<u32> {
    u32::try_from(n).map_err(|_| refused(call))
}

struct DeviceState {
    paging_queue: u32,
    paging_fence: u32,
}

struct AllocationState {
    bytes: u64,
    /// The resource it belongs to (shared allocations), destroyed with its last allocation.
    resource: Option<u32>,
    /// `pData` while locked.
    locked: Option<*mut u8>,
}

/// The Windows backend. See the module documentation.
pub struct WinKmt {
    missing: Vec<&'static str>,
    devices: BTreeMap<u32, DeviceState>,
    allocations: BTreeMap<(u32, u32), AllocationState>,
    /// Allocations left per resource (device, resource) → count.
    resources: BTreeMap<(u32, u32), u32>,
}

impl Default for WinKmt {
    fn default() -> Self {
        Self::new()
    }
}

impl WinKmt {
    /// The backend; finds out which of the exports it needs gdi32 lacks.
    pub fn new() -> WinKmt {
        let name: Vec<u16> = "gdi32.dll\0".encode_utf16().collect();
        // SAFETY: a NUL-terminated UTF-16 module name that lives across the call.
        let module = unsafe { GetModuleHandleW(PCWSTR(name.as_ptr())) };
        let missing = match module {
            Ok(m) => REQUIRED
                .iter()
                .copied()
                .filter(|f| {
                    let c: Vec<u8> = f.bytes().chain([0]).collect();
                    // SAFETY: a loaded module's handle and a NUL-terminated name that lives
                    // across the call.
                    unsafe { GetProcAddress(m, PCSTR(c.as_ptr())) }.is_none()
                })
                .collect(),
            Err(_) => REQUIRED.to_vec(),
        };
        WinKmt {
            missing,
            devices: BTreeMap::new(),
            allocations: BTreeMap::new(),
            resources: BTreeMap::new(),
        }
    }

    /// The required gdi32 exports this system does not have.
    pub fn missing_exports(&self) -> &[&'static str] {
        &self.missing
    }

    fn device(&self, call: &'static str, d: Device) -> KmtResult<&DeviceState> {
        self.devices.get(&d.0).ok_or(refused(call))
    }

    /// Waits up to `timeout` for `fences` (handle, value) of `device` through an event.
    fn wait(&self, device: u32, fences: &[(u32, u64)], timeout: Duration) -> KmtResult<Wait> {
        const CALL: &str = "D3DKMTWaitForSynchronizationObjectFromCpu";
        // SAFETY: no attributes, no name: creates an unnamed manual-reset event.
        let event =
            unsafe { CreateEventW(None, true, false, PCWSTR::null()) }.map_err(|e| KmtError {
                call: "CreateEventW",
                status: Status(e.code().0),
            })?;
        let handles: Vec<u32> = fences.iter().map(|f| f.0).collect();
        let values: Vec<u64> = fences.iter().map(|f| f.1).collect();
        let args = d3d::D3DKMT_WAITFORSYNCHRONIZATIONOBJECTFROMCPU {
            hDevice: device,
            ObjectCount: len32(CALL, handles.len())?,
            ObjectHandleArray: handles.as_ptr(),
            FenceValueArray: values.as_ptr(),
            hAsyncEvent: event,
            ..Default::default()
        };
        // SAFETY: a valid argument block whose arrays live across the call; the event is ours.
        let s = unsafe { d3d::D3DKMTWaitForSynchronizationObjectFromCpu(&args) };
        let r = check(CALL, s).map(|()| {
            let ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX - 1);
            // SAFETY: an event handle we own.
            let w = unsafe { WaitForSingleObject(event, ms) };
            if w == WAIT_OBJECT_0 {
                Ok(Wait::Reached)
            } else if w == WAIT_TIMEOUT {
                Ok(Wait::TimedOut)
            } else {
                Err(refused("WaitForSingleObject"))
            }
        });
        // Dxgkrnl keeps its own reference to the event while the wait is pending.
        // SAFETY: closes the event handle we created, once.
        let _ = unsafe { CloseHandle(event) };
        r?
    }

    fn paging_wait(&self, call: &'static str, device: Device, value: u64) -> KmtResult<()> {
        if value == 0 {
            return Ok(());
        }
        let fence = self.device(call, device)?.paging_fence;
        match self.wait(device.0, &[(fence, value)], PAGING_WAIT)? {
            Wait::Reached => Ok(()),
            Wait::TimedOut => Err(KmtError {
                call,
                status: Status::TIMEOUT,
            }),
        }
    }

    fn forget_allocations(&mut self, device: u32, list: &[u32]) {
        for a in list {
            self.allocations.remove(&(device, *a));
        }
    }

    fn locked(
        &self,
        call: &'static str,
        device: Device,
        a: Allocation,
        offset: u64,
        len: usize,
    ) -> KmtResult<*mut u8> {
        let st = self
            .allocations
            .get(&(device.0, a.0))
            .ok_or(refused(call))?;
        let p = st.locked.ok_or(refused(call))?;
        let end = offset.checked_add(len as u64).ok_or(refused(call))?;
        if end > st.bytes {
            return Err(refused(call));
        }
        Ok(p.wrapping_add(offset as usize))
    }
}

impl Kmt for WinKmt {
    fn describe(&self) -> String {
        if self.missing.is_empty() {
            "Windows (gdi32.dll D3DKMT)".into()
        } else {
            format!(
                "Windows (gdi32.dll lacks {} of the D3DKMT functions rgpu-kmt needs, e.g. {}: no WDDM 2.x graphics kernel here)",
                self.missing.len(),
                self.missing[0]
            )
        }
    }

    fn enum_adapters2(&mut self) -> KmtResult<Vec<AdapterInfo>> {
        const CALL: &str = "D3DKMTEnumAdapters2";
        if !self.missing.is_empty() {
            return Err(KmtError {
                call: CALL,
                status: STATUS_PROCEDURE_NOT_FOUND,
            });
        }
        loop {
            let mut count = d3d::D3DKMT_ENUMADAPTERS2::default();
            // SAFETY: a valid block with a NULL array: asks for the count.
            check(CALL, unsafe { d3d::D3DKMTEnumAdapters2(&mut count) })?;
            let mut list = vec![d3d::D3DKMT_ADAPTERINFO::default(); count.NumAdapters as usize];
            let mut args = d3d::D3DKMT_ENUMADAPTERS2 {
                NumAdapters: count.NumAdapters,
                pAdapters: list.as_mut_ptr(),
            };
            // SAFETY: a valid block whose array of `NumAdapters` entries lives across the call.
            let s = unsafe { d3d::D3DKMTEnumAdapters2(&mut args) };
            if s.0 == STATUS_BUFFER_TOO_SMALL {
                continue;
            }
            check(CALL, s)?;
            list.truncate(args.NumAdapters as usize);
            return Ok(list
                .iter()
                .map(|a| AdapterInfo {
                    adapter: Adapter(a.hAdapter),
                    luid: to_luid(a.AdapterLuid),
                    sources: a.NumOfSources,
                })
                .collect());
        }
    }

    fn open_adapter_from_luid(&mut self, luid: Luid) -> KmtResult<Adapter> {
        let mut args = d3d::D3DKMT_OPENADAPTERFROMLUID {
            AdapterLuid: from_luid(luid),
            hAdapter: 0,
        };
        // SAFETY: a valid argument block.
        let s = unsafe { d3d::D3DKMTOpenAdapterFromLuid(&mut args) };
        check("D3DKMTOpenAdapterFromLuid", s)?;
        Ok(Adapter(args.hAdapter))
    }

    fn query_device_ids(&mut self, adapter: Adapter) -> KmtResult<DeviceIds> {
        let mut ids = d3d::D3DKMT_QUERY_DEVICE_IDS::default();
        let mut args = d3d::D3DKMT_QUERYADAPTERINFO {
            hAdapter: adapter.0,
            Type: d3d::KMTQAITYPE_PHYSICALADAPTERDEVICEIDS,
            pPrivateDriverData: (&mut ids as *mut d3d::D3DKMT_QUERY_DEVICE_IDS).cast(),
            PrivateDriverDataSize: size_of::<d3d::D3DKMT_QUERY_DEVICE_IDS>() as u32,
        };
        // SAFETY: a valid block whose output buffer (`ids`, of the stated size) lives across
        // the call.
        let s = unsafe { d3d::D3DKMTQueryAdapterInfo(&mut args) };
        check("D3DKMTQueryAdapterInfo", s)?;
        Ok(DeviceIds {
            vendor_id: ids.DeviceIds.VendorID,
            device_id: ids.DeviceIds.DeviceID,
            revision_id: ids.DeviceIds.RevisionID,
        })
    }

    fn query_driver_description(&mut self, adapter: Adapter) -> KmtResult<String> {
        // 8 KiB of UTF-16: on the heap, not the stack.
        let mut description = Box::new(d3d::D3DKMT_DRIVER_DESCRIPTION::default());
        let mut args = d3d::D3DKMT_QUERYADAPTERINFO {
            hAdapter: adapter.0,
            Type: d3d::KMTQAITYPE_DRIVER_DESCRIPTION,
            pPrivateDriverData: (&mut *description as *mut d3d::D3DKMT_DRIVER_DESCRIPTION).cast(),
            PrivateDriverDataSize: size_of::<d3d::D3DKMT_DRIVER_DESCRIPTION>() as u32,
        };
        // SAFETY: a valid block whose output buffer (`description`, of the stated size) lives
        // across the call.
        let s = unsafe { d3d::D3DKMTQueryAdapterInfo(&mut args) };
        check("D3DKMTQueryAdapterInfo", s)?;
        let text = &description.DriverDescription;
        let end = text.iter().position(|&c| c == 0).unwrap_or(text.len());
        Ok(String::from_utf16_lossy(&text[..end]))
    }

    fn close_adapter(&mut self, adapter: Adapter) -> KmtResult<()> {
        let args = d3d::D3DKMT_CLOSEADAPTER {
            hAdapter: adapter.0,
        };
        // SAFETY: a valid argument block.
        let s = unsafe { d3d::D3DKMTCloseAdapter(&args) };
        check("D3DKMTCloseAdapter", s)
    }

    fn create_device(&mut self, adapter: Adapter) -> KmtResult<Device> {
        let mut args = d3d::D3DKMT_CREATEDEVICE::default();
        args.Anonymous.hAdapter = adapter.0;
        // SAFETY: a valid argument block (no legacy command buffer requested).
        let s = unsafe { d3d::D3DKMTCreateDevice(&mut args) };
        check("D3DKMTCreateDevice", s)?;
        let device = args.hDevice;
        let mut q = d3d::D3DKMT_CREATEPAGINGQUEUE {
            hDevice: device,
            Priority: d3d::D3DDDI_PAGINGQUEUE_PRIORITY_NORMAL,
            ..Default::default()
        };
        // SAFETY: a valid argument block for the device just created.
        let s = unsafe { d3d::D3DKMTCreatePagingQueue(&mut q) };
        if let Err(e) = check("D3DKMTCreatePagingQueue", s) {
            let d = d3d::D3DKMT_DESTROYDEVICE { hDevice: device };
            // SAFETY: destroys the device just created, once.
            let _ = unsafe { d3d::D3DKMTDestroyDevice(&d) };
            return Err(e);
        }
        self.devices.insert(
            device,
            DeviceState {
                paging_queue: q.hPagingQueue,
                paging_fence: q.hSyncObject,
            },
        );
        Ok(Device(device))
    }

    fn destroy_device(&mut self, device: Device) -> KmtResult<()> {
        const CALL: &str = "D3DKMTDestroyDevice";
        let st = self.devices.remove(&device.0).ok_or(refused(CALL))?;
        let mut q = d3d::D3DDDI_DESTROYPAGINGQUEUE {
            hPagingQueue: st.paging_queue,
        };
        // SAFETY: a valid argument block naming the device's own paging queue.
        let q_status = unsafe { d3d::D3DKMTDestroyPagingQueue(&mut q) };
        let args = d3d::D3DKMT_DESTROYDEVICE { hDevice: device.0 };
        // SAFETY: a valid argument block.
        let s = unsafe { d3d::D3DKMTDestroyDevice(&args) };
        self.allocations.retain(|k, _| k.0 != device.0);
        self.resources.retain(|k, _| k.0 != device.0);
        check("D3DKMTDestroyPagingQueue", q_status).and(check(CALL, s))
    }

    fn create_allocation2(
        &mut self,
        device: Device,
        private_data: &[&[u8]],
        shared: bool,
    ) -> KmtResult<Created> {
        const CALL: &str = "D3DKMTCreateAllocation2";
        self.device(CALL, device)?;
        // The KMD sees a copy; these buffers only need to outlive the call.
        let mut copies: Vec<Vec<u8>> = private_data.iter().map(|p| p.to_vec()).collect();
        let mut infos: Vec<d3d::D3DDDI_ALLOCATIONINFO2> = Vec::with_capacity(copies.len());
        for c in &mut copies {
            infos.push(d3d::D3DDDI_ALLOCATIONINFO2 {
                pPrivateDriverData: c.as_mut_ptr().cast::<c_void>(),
                PrivateDriverDataSize: len32(CALL, c.len())?,
                ..Default::default()
            });
        }
        let mut args = d3d::D3DKMT_CREATEALLOCATION {
            hDevice: device.0,
            NumAllocations: len32(CALL, infos.len())?,
            ..Default::default()
        };
        args.Anonymous2.pAllocationInfo2 = infos.as_mut_ptr();
        if shared {
            args.Flags._bitfield = CREATE_RESOURCE | CREATE_SHARED;
        }
        // SAFETY: a valid argument block whose allocation array and private data live across
        // the call.
        let s = unsafe { d3d::D3DKMTCreateAllocation2(&mut args) };
        check(CALL, s)?;
        let resource = shared.then_some(args.hResource);
        if let Some(r) = resource {
            self.resources.insert((device.0, r), infos.len() as u32);
        }
        for (i, p) in infos.iter().zip(private_data) {
            self.allocations.insert(
                (device.0, i.hAllocation),
                AllocationState {
                    bytes: allocation_bytes(p).unwrap_or(0),
                    resource,
                    locked: None,
                },
            );
        }
        Ok(Created {
            allocations: infos.iter().map(|i| Allocation(i.hAllocation)).collect(),
            share: shared.then_some(GlobalShare(args.hGlobalShare)),
        })
    }

    fn open_resource(&mut self, device: Device, share: GlobalShare) -> KmtResult<Vec<Opened>> {
        const CALL: &str = "D3DKMTOpenResource2";
        self.device(CALL, device)?;
        let mut q = d3d::D3DKMT_QUERYRESOURCEINFO {
            hDevice: device.0,
            hGlobalShare: share.0,
            ..Default::default()
        };
        // SAFETY: a valid argument block (no runtime-data buffer: asks for the sizes).
        let s = unsafe { d3d::D3DKMTQueryResourceInfo(&mut q) };
        check("D3DKMTQueryResourceInfo", s)?;
        let mut runtime = vec![0u8; q.PrivateRuntimeDataSize as usize];
        let mut resource_data = vec![0u8; q.ResourcePrivateDriverDataSize as usize];
        let mut total = vec![0u8; q.TotalPrivateDriverDataSize as usize];
        let mut infos = vec![d3d::D3DDDI_OPENALLOCATIONINFO2::default(); q.NumAllocations as usize];
        let mut args = d3d::D3DKMT_OPENRESOURCE {
            hDevice: device.0,
            hGlobalShare: share.0,
            NumAllocations: q.NumAllocations,
            pPrivateRuntimeData: runtime.as_mut_ptr().cast(),
            PrivateRuntimeDataSize: q.PrivateRuntimeDataSize,
            pResourcePrivateDriverData: resource_data.as_mut_ptr().cast(),
            ResourcePrivateDriverDataSize: q.ResourcePrivateDriverDataSize,
            pTotalPrivateDriverDataBuffer: total.as_mut_ptr().cast(),
            TotalPrivateDriverDataBufferSize: q.TotalPrivateDriverDataSize,
            ..Default::default()
        };
        args.Anonymous.pOpenAllocationInfo2 = infos.as_mut_ptr();
        // SAFETY: a valid argument block whose buffers have the sizes QueryResourceInfo gave
        // and live across the call.
        let s = unsafe { d3d::D3DKMTOpenResource2(&mut args) };
        check(CALL, s)?;
        let base = total.as_ptr() as usize;
        let mut out = Vec::new();
        for i in &infos {
            // The runtime points each allocation's private data into `total`: read it from
            // there by offset, without trusting the pointer beyond that buffer.
            let at = (i.pPrivateDriverData as usize).wrapping_sub(base);
            let len = i.PrivateDriverDataSize as usize;
            let data = total
                .get(at..at.saturating_add(len))
                .ok_or(refused(CALL))?
                .to_vec();
            self.allocations.insert(
                (device.0, i.hAllocation),
                AllocationState {
                    bytes: allocation_bytes(&data).unwrap_or(0),
                    resource: Some(args.hResource),
                    locked: None,
                },
            );
            out.push(Opened {
                allocation: Allocation(i.hAllocation),
                private_data: data,
            });
        }
        self.resources
            .insert((device.0, args.hResource), infos.len() as u32);
        Ok(out)
    }

    fn destroy_allocation2(&mut self, device: Device, allocations: &[Allocation]) -> KmtResult<()> {
        const CALL: &str = "D3DKMTDestroyAllocation2";
        self.device(CALL, device)?;
        // Allocations of a resource go when their resource's last one is destroyed (the
        // resource handle destroys them all); the others are destroyed by handle.
        let mut plain = Vec::new();
        let mut per_resource: BTreeMap<u32, u32> = BTreeMap::new();
        for a in allocations {
            match self
                .allocations
                .get(&(device.0, a.0))
                .and_then(|s| s.resource)
            {
                Some(r) => *per_resource.entry(r).or_default() += 1,
                None => plain.push(a.0),
            }
        }
        let mut r = Ok(());
        if !plain.is_empty() {
            let args = d3d::D3DKMT_DESTROYALLOCATION2 {
                hDevice: device.0,
                phAllocationList: plain.as_ptr(),
                AllocationCount: len32(CALL, plain.len())?,
                ..Default::default()
            };
            // SAFETY: a valid argument block whose list lives across the call.
            r = check(CALL, unsafe { d3d::D3DKMTDestroyAllocation2(&args) });
            if r.is_ok() {
                self.forget_allocations(device.0, &plain);
            }
        }
        for (resource, n) in per_resource {
            let left = self
                .resources
                .get(&(device.0, resource))
                .copied()
                .unwrap_or(0);
            if n < left {
                // Part of a resource: stays until its last allocation goes.
                self.resources.insert((device.0, resource), left - n);
                continue;
            }
            let args = d3d::D3DKMT_DESTROYALLOCATION2 {
                hDevice: device.0,
                hResource: resource,
                ..Default::default()
            };
            // SAFETY: a valid argument block naming a resource of this device.
            let s = unsafe { d3d::D3DKMTDestroyAllocation2(&args) };
            r = r.and(check(CALL, s));
            self.resources.remove(&(device.0, resource));
            self.allocations
                .retain(|k, v| !(k.0 == device.0 && v.resource == Some(resource)));
        }
        r
    }

    fn reserve_gpu_virtual_address(
        &mut self,
        adapter: Adapter,
        base: u64,
        size: u64,
    ) -> KmtResult<u64> {
        let mut args = d3d::D3DDDI_RESERVEGPUVIRTUALADDRESS {
            BaseAddress: base,
            Size: size,
            ..Default::default()
        };
        args.Anonymous1.hAdapter = adapter.0;
        args.Anonymous2.ReservationType = d3d::D3DDDIGPUVIRTUALADDRESS_RESERVE_NO_ACCESS;
        // SAFETY: a valid argument block.
        let s = unsafe { d3d::D3DKMTReserveGpuVirtualAddress(&mut args) };
        check("D3DKMTReserveGpuVirtualAddress", s)?;
        Ok(args.VirtualAddress)
    }

    fn map_gpu_virtual_address(
        &mut self,
        device: Device,
        va: u64,
        allocation: Allocation,
        pages: u64,
    ) -> KmtResult<u64> {
        const CALL: &str = "D3DKMTMapGpuVirtualAddress";
        let queue = self.device(CALL, device)?.paging_queue;
        let mut args = d3d::D3DDDI_MAPGPUVIRTUALADDRESS {
            hPagingQueue: queue,
            BaseAddress: va,
            hAllocation: allocation.0,
            SizeInPages: pages,
            ..Default::default()
        };
        args.Protection.Anonymous.Value = PROTECTION_WRITE;
        // SAFETY: a valid argument block.
        let s = unsafe { d3d::D3DKMTMapGpuVirtualAddress(&mut args) };
        check(CALL, s)?;
        self.paging_wait(CALL, device, args.PagingFenceValue)?;
        Ok(args.VirtualAddress)
    }

    fn free_gpu_virtual_address(
        &mut self,
        adapter: Adapter,
        base: u64,
        size: u64,
    ) -> KmtResult<()> {
        let args = d3d::D3DKMT_FREEGPUVIRTUALADDRESS {
            hAdapter: adapter.0,
            BaseAddress: base,
            Size: size,
        };
        // SAFETY: a valid argument block.
        let s = unsafe { d3d::D3DKMTFreeGpuVirtualAddress(&args) };
        check("D3DKMTFreeGpuVirtualAddress", s)
    }

    fn make_resident(&mut self, device: Device, allocations: &[Allocation]) -> KmtResult<()> {
        const CALL: &str = "D3DKMTMakeResident";
        let queue = self.device(CALL, device)?.paging_queue;
        let list: Vec<u32> = allocations.iter().map(|a| a.0).collect();
        let priorities = vec![PRIORITY_NORMAL; list.len()];
        let mut args = d3d::D3DDDI_MAKERESIDENT {
            hPagingQueue: queue,
            NumAllocations: len32(CALL, list.len())?,
            AllocationList: list.as_ptr(),
            PriorityList: priorities.as_ptr(),
            ..Default::default()
        };
        // SAFETY: a valid argument block whose lists live across the call.
        let s = unsafe { d3d::D3DKMTMakeResident(&mut args) };
        check(CALL, s)?;
        if s.0 == STATUS_PENDING {
            self.paging_wait(CALL, device, args.PagingFenceValue)?;
        }
        Ok(())
    }

    fn evict(&mut self, device: Device, allocations: &[Allocation]) -> KmtResult<u64> {
        const CALL: &str = "D3DKMTEvict";
        let list: Vec<u32> = allocations.iter().map(|a| a.0).collect();
        let mut args = d3d::D3DKMT_EVICT {
            hDevice: device.0,
            NumAllocations: len32(CALL, list.len())?,
            AllocationList: list.as_ptr(),
            ..Default::default()
        };
        // SAFETY: a valid argument block whose list lives across the call.
        let s = unsafe { d3d::D3DKMTEvict(&mut args) };
        check(CALL, s)?;
        Ok(args.NumBytesToTrim)
    }

    fn create_context_virtual(&mut self, device: Device, node: u32) -> KmtResult<Context> {
        let mut args = d3d::D3DKMT_CREATECONTEXTVIRTUAL {
            hDevice: device.0,
            NodeOrdinal: node,
            ClientHint: d3d::D3DKMT_CLIENTHINT_UNKNOWN,
            ..Default::default()
        };
        // The binding declares the block `*const`, but Dxgkrnl writes `hContext` into it: pass a
        // pointer that carries write permission.
        let p: *mut d3d::D3DKMT_CREATECONTEXTVIRTUAL = &mut args;
        // SAFETY: a valid argument block (no private data), writable through `p`.
        let s = unsafe { d3d::D3DKMTCreateContextVirtual(p) };
        check("D3DKMTCreateContextVirtual", s)?;
        Ok(Context(args.hContext))
    }

    fn submit_command(&mut self, context: Context, commands: u64, length: u32) -> KmtResult<()> {
        let mut args = d3d::D3DKMT_SUBMITCOMMAND {
            Commands: commands,
            CommandLength: length,
            BroadcastContextCount: 1,
            ..Default::default()
        };
        args.BroadcastContext[0] = context.0;
        // SAFETY: a valid argument block.
        let s = unsafe { d3d::D3DKMTSubmitCommand(&args) };
        check("D3DKMTSubmitCommand", s)
    }

    fn create_monitored_fence(&mut self, device: Device, initial_value: u64) -> KmtResult<Fence> {
        let mut args = d3d::D3DKMT_CREATESYNCHRONIZATIONOBJECT2 {
            hDevice: device.0,
            ..Default::default()
        };
        args.Info.Type = d3d::D3DDDI_MONITORED_FENCE;
        args.Info.Anonymous.MonitoredFence.InitialFenceValue = initial_value;
        // SAFETY: a valid argument block.
        let s = unsafe { d3d::D3DKMTCreateSynchronizationObject2(&mut args) };
        check("D3DKMTCreateSynchronizationObject2", s)?;
        Ok(Fence(args.hSyncObject))
    }

    fn signal_from_gpu2(
        &mut self,
        context: Context,
        fences: &[Fence],
        value: u64,
    ) -> KmtResult<()> {
        const CALL: &str = "D3DKMTSignalSynchronizationObjectFromGpu2";
        let handles: Vec<u32> = fences.iter().map(|f| f.0).collect();
        let values = vec![value; handles.len()];
        let contexts = [context.0];
        let mut args = d3d::D3DKMT_SIGNALSYNCHRONIZATIONOBJECTFROMGPU2 {
            ObjectCount: len32(CALL, handles.len())?,
            ObjectHandleArray: handles.as_ptr(),
            BroadcastContextCount: 1,
            BroadcastContextArray: contexts.as_ptr(),
            ..Default::default()
        };
        args.Anonymous.MonitoredFenceValueArray = values.as_ptr();
        // SAFETY: a valid argument block whose arrays live across the call.
        let s = unsafe { d3d::D3DKMTSignalSynchronizationObjectFromGpu2(&args) };
        check(CALL, s)
    }

    fn wait_from_cpu(
        &mut self,
        device: Device,
        fences: &[(Fence, u64)],
        timeout: Duration,
    ) -> KmtResult<Wait> {
        let list: Vec<(u32, u64)> = fences.iter().map(|(f, v)| (f.0, *v)).collect();
        self.wait(device.0, &list, timeout)
    }

    fn destroy_synchronization_object(&mut self, fence: Fence) -> KmtResult<()> {
        let args = d3d::D3DKMT_DESTROYSYNCHRONIZATIONOBJECT {
            hSyncObject: fence.0,
        };
        // SAFETY: a valid argument block.
        let s = unsafe { d3d::D3DKMTDestroySynchronizationObject(&args) };
        check("D3DKMTDestroySynchronizationObject", s)
    }

    fn lock2(&mut self, device: Device, allocation: Allocation) -> KmtResult<u64> {
        const CALL: &str = "D3DKMTLock2";
        let st = self
            .allocations
            .get(&(device.0, allocation.0))
            .ok_or(refused(CALL))?;
        if st.locked.is_some() || st.bytes == 0 {
            return Err(refused(CALL));
        }
        let mut args = d3d::D3DKMT_LOCK2 {
            hDevice: device.0,
            hAllocation: allocation.0,
            ..Default::default()
        };
        // SAFETY: a valid argument block.
        let s = unsafe { d3d::D3DKMTLock2(&mut args) };
        check(CALL, s)?;
        if args.pData.is_null() {
            return Err(refused(CALL));
        }
        let st = self
            .allocations
            .get_mut(&(device.0, allocation.0))
            .ok_or(refused(CALL))?;
        st.locked = Some(args.pData.cast());
        Ok(st.bytes)
    }

    fn read_locked(
        &mut self,
        device: Device,
        allocation: Allocation,
        offset: u64,
        out: &mut [u8],
    ) -> KmtResult<()> {
        let p = self.locked(
            "read through Lock2's pData",
            device,
            allocation,
            offset,
            out.len(),
        )?;
        // SAFETY: `p .. p + out.len()` lies inside the Lock2 mapping of an allocation of
        // `bytes` bytes (checked by `locked`), which stays mapped until Unlock2; `out` is a
        // distinct Rust buffer.
        unsafe { std::ptr::copy_nonoverlapping(p, out.as_mut_ptr(), out.len()) };
        Ok(())
    }

    fn write_locked(
        &mut self,
        device: Device,
        allocation: Allocation,
        offset: u64,
        data: &[u8],
    ) -> KmtResult<()> {
        let p = self.locked(
            "write through Lock2's pData",
            device,
            allocation,
            offset,
            data.len(),
        )?;
        // SAFETY: as in `read_locked`, the destination range lies inside the live Lock2
        // mapping; `data` is a distinct Rust buffer.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), p, data.len()) };
        Ok(())
    }

    fn unlock2(&mut self, device: Device, allocation: Allocation) -> KmtResult<()> {
        const CALL: &str = "D3DKMTUnlock2";
        let args = d3d::D3DKMT_UNLOCK2 {
            hDevice: device.0,
            hAllocation: allocation.0,
        };
        // SAFETY: a valid argument block.
        let s = unsafe { d3d::D3DKMTUnlock2(&args) };
        check(CALL, s)?;
        if let Some(st) = self.allocations.get_mut(&(device.0, allocation.0)) {
            st.locked = None;
        }
        Ok(())
    }

    fn escape(
        &mut self,
        adapter: Adapter,
        device: Option<Device>,
        data: &mut [u8],
    ) -> KmtResult<()> {
        const CALL: &str = "D3DKMTEscape";
        let args = d3d::D3DKMT_ESCAPE {
            hAdapter: adapter.0,
            hDevice: device.map_or(0, |d| d.0),
            Type: d3d::D3DKMT_ESCAPE_DRIVERPRIVATE,
            pPrivateDriverData: data.as_mut_ptr().cast(),
            PrivateDriverDataSize: len32(CALL, data.len())?,
            ..Default::default()
        };
        // SAFETY: a valid argument block whose in/out buffer lives across the call.
        let s = unsafe { d3d::D3DKMTEscape(&args) };
        check(CALL, s)
    }
}
