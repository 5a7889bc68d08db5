//! A tiny WDDM miniport written directly against dxgk-sys (DriverEntry + DDIs) and a tiny device
//! model behind it. The correct driver breaks no rule through the whole PnP life in either IOMMU
//! mode; each deliberately bad variant breaks exactly the rule it targets.

mod common;

use std::cell::Cell;

use dxgk_sim::fault::Systematic;
use dxgk_sim::{AdapterConfig, Dma, IommuMode, Machine, MachineConfig, PnpState, Rule, SimDevice};
use dxgk_sys as sys;

const TAG: u32 = u32::from_le_bytes(*b"TDrv");

/// How the driver misbehaves (all false: a correct driver).
#[derive(Clone, Copy, Default, Debug)]
struct Bad {
    leak_ring_at_stop: bool,
    keep_mmio_mapped: bool,
    leak_context: bool,
    alloc_in_dpc: bool,
    notify_interrupt_in_dpc: bool,
    /// From the DPC, raise to HIGH_LEVEL and notify: device IRQL, but not serialized with the
    /// ISR (neither the ISR nor a SynchronizeExecution routine).
    notify_interrupt_raised_in_dpc: bool,
    /// From the DPC, notify through DxgkCbSynchronizeExecution (correct: coskmd's pattern).
    notify_interrupt_synchronized_in_dpc: bool,
    notify_dpc_in_isr: bool,
    program_system_va: bool,
    assume_contiguous: bool,
    caps_overrun: bool,
    omit_create_process: bool,
    omit_exclusive_access: bool,
    two_level_without_root_size: bool,
    double_free_ring: bool,
    leak_ring_if_map_fails: bool,
    version: u32,
}

thread_local! {
    static BAD: Cell<Bad> = Cell::new(Bad::default());
}

fn bad() -> Bad {
    BAD.with(Cell::get)
}

// ---- the device: a 2-entry ring fetch, a fence write-back, an interrupt ---------------------

const R_RING0_LO: usize = 0;
const R_RING0_HI: usize = 1;
const R_RING1_LO: usize = 2;
const R_RING1_HI: usize = 3;
const R_DOORBELL: usize = 4;
const R_ACK: usize = 5;
const R_DONE: usize = 6;
const R_FAULTS: usize = 7;

#[derive(Default)]
struct Device {
    pending: bool,
}

impl SimDevice for Device {
    fn mmio_size(&self) -> usize {
        4096
    }
    fn reset(&mut self, mmio: &mut [u32]) {
        mmio.fill(0);
        self.pending = false;
    }
    fn sync(&mut self, mmio: &mut [u32], dma: &mut Dma) {
        if mmio[R_ACK] != 0 {
            mmio[R_ACK] = 0;
            self.pending = false;
        }
        if mmio[R_DOORBELL] != 0 {
            mmio[R_DOORBELL] = 0;
            let r0 = u64::from(mmio[R_RING0_LO]) | u64::from(mmio[R_RING0_HI]) << 32;
            let r1 = u64::from(mmio[R_RING1_LO]) | u64::from(mmio[R_RING1_HI]) << 32;
            let mut entry = [0u8; 16];
            let ok = dma.read(r0, &mut entry, "RingFetch").is_ok()
                & dma.read(r1, &mut entry, "RingFetch").is_ok()
                & dma
                    .write(r0 + 8, &0xF00Du64.to_le_bytes(), "FenceWriteback")
                    .is_ok();
            mmio[R_FAULTS] += u32::from(!ok);
            mmio[R_DONE] += 1;
            self.pending = true;
        }
    }
    fn interrupt_pending(&self) -> bool {
        self.pending
    }
}

// ---- the driver ---------------------------------------------------------------------------------

struct Adapter {
    i: sys::DXGKRNL_INTERFACE,
    bad: Bad,
    mmio: *mut u32,
    ring_handle: sys::HANDLE,
    ring_mdl: *mut sys::MDL,
    ring_va: *mut u8,
}

fn adapter<'a>(ctx: sys::PVOID) -> &'a mut Adapter {
    // SAFETY: every DDI gets the context AddDevice returned (a live `Adapter`).
    unsafe { &mut *ctx.cast::<Adapter>() }
}

fn reg(a: &Adapter, r: usize, v: u32) {
    // SAFETY: `mmio` maps the 4 KiB BAR; r < 8.
    let p = unsafe { a.mmio.add(r) };
    // SAFETY: as above.
    unsafe { sys::WRITE_REGISTER_ULONG(p, v) };
}

unsafe extern "system" fn add_device(
    pdo: *mut sys::DEVICE_OBJECT,
    ctx: *mut sys::PVOID,
) -> sys::NTSTATUS {
    if pdo.is_null() || ctx.is_null() {
        return sys::STATUS_INVALID_PARAMETER;
    }
    // SAFETY: pool for the adapter context.
    let p = unsafe { sys::ExAllocatePoolWithTag(sys::NonPagedPoolNx, size_of::<Adapter>(), TAG) }
        .cast::<Adapter>();
    if p.is_null() {
        return sys::STATUS_INSUFFICIENT_RESOURCES;
    }
    let a = Adapter {
        i: Default::default(),
        bad: bad(),
        mmio: std::ptr::null_mut(),
        ring_handle: std::ptr::null_mut(),
        ring_mdl: std::ptr::null_mut(),
        ring_va: std::ptr::null_mut(),
    };
    // SAFETY: fresh, suitably aligned pool block.
    unsafe { p.write(a) };
    // SAFETY: out pointer from Dxgkrnl.
    unsafe { ctx.write(p.cast()) };
    sys::STATUS_SUCCESS
}

fn free_ring(a: &mut Adapter) {
    if a.ring_va.is_null() {
        return;
    }
    // SAFETY: the VA mapped from the ring MDL.
    unsafe { sys::MmUnmapLockedPages(a.ring_va.cast(), a.ring_mdl) };
    let f = sys::DXGKARGCB_FREEPAGESFROMMDL {
        hMemoryHandle: a.ring_handle,
    };
    // SAFETY: the handle AllocatePagesForMdl returned.
    unsafe { a.i.DxgkCbFreePagesFromMdl.unwrap()(a.i.DeviceHandle, &f) };
    if a.bad.double_free_ring {
        // SAFETY: deliberately frees the same handle again.
        unsafe { a.i.DxgkCbFreePagesFromMdl.unwrap()(a.i.DeviceHandle, &f) };
    }
    a.ring_va = std::ptr::null_mut();
}

unsafe extern "system" fn start_device(
    ctx: sys::PVOID,
    _info: *mut sys::DXGK_START_INFO,
    iface: *mut sys::DXGKRNL_INTERFACE,
    sources: *mut sys::ULONG,
    children: *mut sys::ULONG,
) -> sys::NTSTATUS {
    let a = adapter(ctx);
    // SAFETY: Dxgkrnl's interface, valid for the call: copy it.
    a.i = unsafe { *iface };
    if a.i.Version < sys::DXGKDDI_INTERFACE_VERSION_WDDM2_4
        || a.i.DxgkCbAllocatePagesForMdl.is_none()
    {
        return sys::STATUS_NOT_SUPPORTED;
    }
    let mut di = sys::DXGK_DEVICE_INFO::default();
    // SAFETY: callback with a valid out structure.
    let s = unsafe { a.i.DxgkCbGetDeviceInformation.unwrap()(a.i.DeviceHandle, &mut di) };
    if s != sys::STATUS_SUCCESS {
        return s;
    }
    // SAFETY: the translated resource list Dxgkrnl returned: one full descriptor, one partial.
    let d = unsafe {
        (*di.TranslatedResourceList).List[0]
            .PartialResourceList
            .PartialDescriptors[0]
    };
    assert_eq!(d.Type, sys::CmResourceTypeMemory);
    // SAFETY: a memory descriptor.
    let mem = unsafe { d.u.Memory };
    let (start, len) = (mem.Start, mem.Length);
    // Ring: two pages from Dxgkrnl.
    let mut al = sys::DXGKARGCB_ALLOCATEPAGESFORMDL {
        TotalBytes: 2 * 4096,
        CacheType: sys::DXGK_MEMORY_CACHING_TYPE_CACHED,
        ..Default::default()
    };
    al.HighAddress.QuadPart = i64::MAX;
    // SAFETY: callback with valid arguments.
    let s = unsafe { a.i.DxgkCbAllocatePagesForMdl.unwrap()(a.i.DeviceHandle, &mut al) };
    if s != sys::STATUS_SUCCESS {
        return s;
    }
    a.ring_handle = al.hMemoryHandle;
    a.ring_mdl = al.pMdl;
    let mut va: sys::PVOID = std::ptr::null_mut();
    // SAFETY: maps the BAR the resource list names.
    let s = unsafe {
        a.i.DxgkCbMapMemory.unwrap()(
            a.i.DeviceHandle,
            start,
            len,
            0,
            0,
            sys::MmNonCached,
            &mut va,
        )
    };
    if s != sys::STATUS_SUCCESS {
        if !a.bad.leak_ring_if_map_fails {
            let f = sys::DXGKARGCB_FREEPAGESFROMMDL {
                hMemoryHandle: a.ring_handle,
            };
            // SAFETY: as above.
            unsafe { a.i.DxgkCbFreePagesFromMdl.unwrap()(a.i.DeviceHandle, &f) };
        }
        return s;
    }
    a.mmio = va.cast();
    // SAFETY: a live MDL describing locked pages.
    a.ring_va = unsafe { sys::MmGetSystemAddressForMdlSafe(a.ring_mdl, 0) }.cast();
    if a.ring_va.is_null() {
        let f = sys::DXGKARGCB_FREEPAGESFROMMDL {
            hMemoryHandle: a.ring_handle,
        };
        // SAFETY: as above.
        unsafe { a.i.DxgkCbFreePagesFromMdl.unwrap()(a.i.DeviceHandle, &f) };
        // SAFETY: the mapping made above.
        unsafe { a.i.DxgkCbUnmapMemory.unwrap()(a.i.DeviceHandle, va) };
        return sys::STATUS_INSUFFICIENT_RESOURCES;
    }
    // Program the device with device (logical) addresses from the MDL, and ring the doorbell.
    // SAFETY: a live MDL.
    let array = unsafe { sys::MmGetMdlPfnArray(a.ring_mdl) };
    // SAFETY: the ring MDL has two PFNs.
    let pfns = unsafe { std::slice::from_raw_parts(array, 2) };
    let (r0, r1) = if a.bad.program_system_va {
        (a.ring_va as u64, a.ring_va as u64 + 4096)
    } else if a.bad.assume_contiguous {
        ((pfns[0] as u64) << 12, ((pfns[0] as u64) + 1) << 12)
    } else {
        ((pfns[0] as u64) << 12, (pfns[1] as u64) << 12)
    };
    reg(a, R_RING0_LO, r0 as u32);
    reg(a, R_RING0_HI, (r0 >> 32) as u32);
    reg(a, R_RING1_LO, r1 as u32);
    reg(a, R_RING1_HI, (r1 >> 32) as u32);
    reg(a, R_DOORBELL, 1);
    // SAFETY: out counts.
    unsafe { sources.write(0) };
    // SAFETY: as above.
    unsafe { children.write(0) };
    sys::STATUS_SUCCESS
}

unsafe extern "system" fn stop_device(ctx: sys::PVOID) -> sys::NTSTATUS {
    let a = adapter(ctx);
    if !a.bad.leak_ring_at_stop {
        free_ring(a);
    }
    if !a.bad.keep_mmio_mapped && !a.mmio.is_null() {
        // SAFETY: the BAR mapping from StartDevice.
        unsafe { a.i.DxgkCbUnmapMemory.unwrap()(a.i.DeviceHandle, a.mmio.cast()) };
        a.mmio = std::ptr::null_mut();
    }
    sys::STATUS_SUCCESS
}

unsafe extern "system" fn remove_device(ctx: sys::PVOID) -> sys::NTSTATUS {
    if !adapter(ctx).bad.leak_context {
        // SAFETY: the context AddDevice allocated, freed once.
        unsafe { sys::ExFreePoolWithTag(ctx, TAG) };
    }
    sys::STATUS_SUCCESS
}

unsafe extern "system" fn unload() {}

unsafe extern "system" fn isr(ctx: sys::PVOID, _msg: sys::ULONG) -> sys::BOOLEAN {
    let a = adapter(ctx);
    reg(a, R_ACK, 1);
    let mut n = sys::DXGKARGCB_NOTIFY_INTERRUPT_DATA {
        InterruptType: sys::DXGK_INTERRUPT_DMA_COMPLETED,
        ..Default::default()
    };
    // SAFETY: from the ISR, as documented.
    unsafe { a.i.DxgkCbNotifyInterrupt.unwrap()(a.i.DeviceHandle, &mut n) };
    if a.bad.notify_dpc_in_isr {
        // SAFETY: deliberately at device IRQL.
        unsafe { a.i.DxgkCbNotifyDpc.unwrap()(a.i.DeviceHandle) };
    }
    // SAFETY: any IRQL.
    unsafe { a.i.DxgkCbQueueDpc.unwrap()(a.i.DeviceHandle) };
    1
}

unsafe extern "system" fn dpc(ctx: sys::PVOID) {
    let a = adapter(ctx);
    // SAFETY: from the DPC, as documented.
    unsafe { a.i.DxgkCbNotifyDpc.unwrap()(a.i.DeviceHandle) };
    if a.bad.notify_interrupt_in_dpc {
        let mut n = sys::DXGKARGCB_NOTIFY_INTERRUPT_DATA::default();
        // SAFETY: deliberately at DISPATCH_LEVEL.
        unsafe { a.i.DxgkCbNotifyInterrupt.unwrap()(a.i.DeviceHandle, &mut n) };
    }
    if a.bad.notify_interrupt_raised_in_dpc {
        // SAFETY: raises from DISPATCH_LEVEL; lowered again below.
        let old = unsafe { sys::KeRaiseIrql(sys::HIGH_LEVEL) };
        let mut n = completed(1);
        // SAFETY: deliberately outside the ISR and SynchronizeExecution.
        unsafe { a.i.DxgkCbNotifyInterrupt.unwrap()(a.i.DeviceHandle, &mut n) };
        // SAFETY: back to the IRQL raised from.
        unsafe { sys::KeLowerIrql(old) };
    }
    if a.bad.notify_interrupt_synchronized_in_dpc {
        let mut ret: sys::BOOLEAN = 0;
        // SAFETY: a valid routine; its context is the adapter, alive across the call.
        let st = unsafe {
            a.i.DxgkCbSynchronizeExecution.unwrap()(
                a.i.DeviceHandle,
                Some(synchronized_notify),
                ctx,
                0,
                &mut ret,
            )
        };
        assert_eq!((st, ret), (sys::STATUS_SUCCESS, 1));
    }
    if a.bad.alloc_in_dpc {
        let mut al = sys::DXGKARGCB_ALLOCATEPAGESFORMDL {
            TotalBytes: 4096,
            ..Default::default()
        };
        // SAFETY: deliberately at DISPATCH_LEVEL.
        unsafe { a.i.DxgkCbAllocatePagesForMdl.unwrap()(a.i.DeviceHandle, &mut al) };
    }
}

fn completed(fence: u32) -> sys::DXGKARGCB_NOTIFY_INTERRUPT_DATA {
    let mut n = sys::DXGKARGCB_NOTIFY_INTERRUPT_DATA {
        InterruptType: sys::DXGK_INTERRUPT_DMA_COMPLETED,
        ..Default::default()
    };
    n.u.DmaCompleted.SubmissionFenceId = fence;
    n
}

unsafe extern "system" fn synchronized_notify(ctx: sys::PVOID) -> sys::BOOLEAN {
    let a = adapter(ctx);
    let mut n = completed(1);
    // SAFETY: inside DxgkCbSynchronizeExecution: serialized with the ISR at device IRQL.
    unsafe { a.i.DxgkCbNotifyInterrupt.unwrap()(a.i.DeviceHandle, &mut n) };
    1
}

fn write_out<T: Copy>(q: &sys::DXGKARG_QUERYADAPTERINFO, v: &T, force_full: bool) -> sys::NTSTATUS {
    let n = if force_full {
        size_of::<T>()
    } else {
        (q.OutputDataSize as usize).min(size_of::<T>())
    };
    // SAFETY: copies `n` bytes of `v` into the output buffer (≤ OutputDataSize unless the bad
    // driver forces its full size).
    unsafe {
        std::ptr::copy_nonoverlapping((v as *const T).cast::<u8>(), q.pOutputData.cast::<u8>(), n)
    };
    sys::STATUS_SUCCESS
}

fn input_u32(q: &sys::DXGKARG_QUERYADAPTERINFO) -> u32 {
    // SAFETY: Dxgkrnl passes a UINT index for these types.
    unsafe { q.pInputData.cast::<u32>().read_unaligned() }
}

unsafe extern "system" fn query_adapter_info(
    ctx: sys::HANDLE,
    q: *const sys::DXGKARG_QUERYADAPTERINFO,
) -> sys::NTSTATUS {
    let a = adapter(ctx);
    // SAFETY: Dxgkrnl's argument structure.
    let q = unsafe { &*q };
    match q.Type {
        sys::DXGKQAITYPE_DRIVERCAPS => {
            let mut c = sys::DXGK_DRIVERCAPS::default();
            c.HighestAcceptableAddress.QuadPart = i64::MAX;
            c.MemoryManagementCaps.set_VirtualAddressingSupported(1);
            c.MemoryManagementCaps.set_GpuMmuSupported(1);
            c.MemoryManagementCaps.set_IoMmuSecureModeSupported(1);
            write_out(q, &c, a.bad.caps_overrun)
        }
        sys::DXGKQAITYPE_QUERYSEGMENT4 => {
            // SAFETY: Dxgkrnl's DXGK_QUERYSEGMENTOUT4.
            let out = unsafe { &mut *q.pOutputData.cast::<sys::DXGK_QUERYSEGMENTOUT4>() };
            if out.pSegmentDescriptor.is_null() {
                out.NbSegment = 1;
            } else {
                let mut d = sys::DXGK_SEGMENTDESCRIPTOR4::default();
                d.Flags.set_Aperture(1);
                d.Size = 256 << 20;
                d.CommitLimit = 256 << 20;
                // SAFETY: room for NbSegment descriptors of SegmentDescriptorStride bytes.
                unsafe {
                    out.pSegmentDescriptor
                        .cast::<sys::DXGK_SEGMENTDESCRIPTOR4>()
                        .write_unaligned(d)
                };
                out.PagingBufferSegmentId = 1;
                out.PagingBufferSize = 64 * 1024;
            }
            sys::STATUS_SUCCESS
        }
        sys::DXGKQAITYPE_GPUMMUCAPS => {
            let c = sys::DXGK_GPUMMUCAPS {
                VirtualAddressBitCount: 40,
                PageTableLevelCount: if a.bad.two_level_without_root_size {
                    2
                } else {
                    3
                },
                ..Default::default()
            };
            write_out(q, &c, false)
        }
        sys::DXGKQAITYPE_PAGETABLELEVELDESC => {
            let level = input_u32(q);
            let d = sys::DXGK_PAGE_TABLE_LEVEL_DESC {
                PageTableIndexBitCount: if level == 0 { 10 } else { 9 },
                PageTableSegmentId: 1,
                PagingProcessPageTableSegmentId: 1,
                PageTableSizeInBytes: 4096,
                PageTableAlignmentInBytes: 4096,
            };
            write_out(q, &d, false)
        }
        sys::DXGKQAITYPE_PHYSICALADAPTERCAPS => {
            let c = sys::DXGK_PHYSICALADAPTERCAPS {
                NumExecutionNodes: 1,
                ..Default::default()
            };
            write_out(q, &c, false)
        }
        sys::DXGKQAITYPE_NUMPOWERCOMPONENTS => write_out(q, &0u32, false),
        sys::DXGKQAITYPE_FRAMEBUFFERSAVESIZE => {
            write_out(q, &sys::DXGK_FRAMEBUFFERSAVEAREA { MaximumSize: 0 }, false)
        }
        sys::DXGKQAITYPE_HARDWARERESERVEDRANGES => {
            // SAFETY: Dxgkrnl's DXGK_HARDWARERESERVEDRANGES.
            unsafe { (*q.pOutputData.cast::<sys::DXGK_HARDWARERESERVEDRANGES>()).NumRanges = 0 };
            sys::STATUS_SUCCESS
        }
        _ => sys::STATUS_NOT_SUPPORTED,
    }
}

unsafe extern "system" fn create_process(
    _a: sys::HANDLE,
    _p: *mut sys::DXGKARG_CREATEPROCESS,
) -> sys::NTSTATUS {
    sys::STATUS_SUCCESS
}
unsafe extern "system" fn destroy_process(_a: sys::HANDLE, _p: sys::HANDLE) -> sys::NTSTATUS {
    sys::STATUS_SUCCESS
}
unsafe extern "system" fn set_root_page_table(
    _a: sys::HANDLE,
    _p: *const sys::DXGKARG_SETROOTPAGETABLE,
) {
}
unsafe extern "system" fn get_root_page_table_size(
    _a: sys::HANDLE,
    _p: *mut sys::DXGKARG_GETROOTPAGETABLESIZE,
) -> sys::SIZE_T {
    4096
}
unsafe extern "system" fn submit_command_virtual(
    _a: sys::HANDLE,
    _p: *const sys::DXGKARG_SUBMITCOMMANDVIRTUAL,
) -> sys::NTSTATUS {
    sys::STATUS_SUCCESS
}
unsafe extern "system" fn begin_exclusive(
    _a: sys::HANDLE,
    _p: *mut sys::DXGKARG_BEGINEXCLUSIVEACCESS,
) -> sys::NTSTATUS {
    sys::STATUS_SUCCESS
}
unsafe extern "system" fn end_exclusive(
    _a: sys::HANDLE,
    _p: *mut sys::DXGKARG_ENDEXCLUSIVEACCESS,
) -> sys::NTSTATUS {
    sys::STATUS_SUCCESS
}

unsafe extern "system" fn driver_entry(
    d: *mut sys::DRIVER_OBJECT,
    path: *mut sys::UNICODE_STRING,
) -> sys::NTSTATUS {
    let b = bad();
    let mut init = sys::DRIVER_INITIALIZATION_DATA {
        Version: if b.version == 0 {
            sys::DXGKDDI_INTERFACE_VERSION_WDDM2_4
        } else {
            b.version
        },
        DxgkDdiAddDevice: Some(add_device),
        DxgkDdiStartDevice: Some(start_device),
        DxgkDdiStopDevice: Some(stop_device),
        DxgkDdiRemoveDevice: Some(remove_device),
        DxgkDdiUnload: Some(unload),
        DxgkDdiInterruptRoutine: Some(isr),
        DxgkDdiDpcRoutine: Some(dpc),
        DxgkDdiQueryAdapterInfo: Some(query_adapter_info),
        DxgkDdiDestroyProcess: Some(destroy_process),
        DxgkDdiSetRootPageTable: Some(set_root_page_table),
        DxgkDdiSubmitCommandVirtual: Some(submit_command_virtual),
        ..Default::default()
    };
    if !b.omit_create_process {
        init.DxgkDdiCreateProcess = Some(create_process);
    }
    if !b.omit_exclusive_access {
        init.DxgkDdiBeginExclusiveAccess = Some(begin_exclusive);
        init.DxgkDdiEndExclusiveAccess = Some(end_exclusive);
    }
    if !b.two_level_without_root_size {
        init.DxgkDdiGetRootPageTableSize = Some(get_root_page_table_size);
    }
    // SAFETY: the I/O manager's objects and our table.
    unsafe { sys::DxgkInitialize(d, path, &mut init) }
}

// ---- harness --------------------------------------------------------------------------------------

fn all_machines() -> Vec<MachineConfig> {
    vec![
        MachineConfig::windows_10_1803(),
        MachineConfig::windows_11_22h2(),
        MachineConfig::windows_10_1803().with_iommu(IommuMode::Remapped),
        MachineConfig::windows_11_22h2().with_iommu(IommuMode::Identity),
    ]
}

/// Load → add → start → stop → remove → unload. Returns the start status.
fn life(m: &Machine) -> sys::NTSTATUS {
    let s = m.load_driver(driver_entry);
    if s != sys::STATUS_SUCCESS {
        return s;
    }
    let id = m.add_adapter(AdapterConfig {
        device: Some(Box::new(Device::default())),
    });
    let s = m.start_adapter(id);
    if s == sys::STATUS_SUCCESS {
        m.stop_adapter(id);
        m.remove_adapter(id);
    }
    m.unload_driver();
    s
}

fn run(config: MachineConfig, b: Bad) -> (Machine, sys::NTSTATUS) {
    BAD.with(|c| c.set(b));
    let m = Machine::new(config);
    let s = life(&m);
    BAD.with(|c| c.set(Bad::default()));
    (m, s)
}

fn expect(config: MachineConfig, b: Bad, rule: Rule, needle: &str) -> Machine {
    let name = config.name.clone();
    let mode = config.iommu;
    let (m, _) = run(config, b);
    let f = m.findings();
    assert!(
        f.iter()
            .any(|x| x.rule == rule && x.detail.contains(needle)),
        "{name} {mode:?} with {b:?}: expected {rule:?} containing {needle:?}, got {f:#?}"
    );
    assert!(
        f.iter().all(|x| x.rule == rule),
        "{name} {mode:?} with {b:?}: only {rule:?} expected, got {f:#?}"
    );
    assert!(f.iter().all(|x| !x.driver_site.is_empty()), "{f:#?}");
    m
}

#[test]
fn the_correct_driver_breaks_no_rule_in_either_iommu_mode() {
    for config in all_machines() {
        let name = format!("{} {:?}", config.name, config.iommu);
        let version = config.max_interface_version;
        BAD.with(|c| c.set(Bad::default()));
        let m = Machine::new(config);
        assert_eq!(m.load_driver(driver_entry), sys::STATUS_SUCCESS, "{name}");
        let id = m.add_adapter(AdapterConfig {
            device: Some(Box::new(Device::default())),
        });
        assert_eq!(
            m.start_adapter(id),
            sys::STATUS_SUCCESS,
            "{name}: {:#?}",
            m.findings()
        );
        let view = m.adapter(id);
        assert_eq!(view.state, PnpState::Started);
        let info = &view.info;
        assert_eq!(
            info.interface_version,
            sys::DXGKDDI_INTERFACE_VERSION_WDDM2_4
        );
        assert_eq!(
            info.driver_caps_size,
            dxgk_sim::dxgkrnl::size_at(sys::DXGK_DRIVERCAPS_SIZE_BY_VERSION, version).unwrap()
        );
        assert_eq!(
            view.driver_caps()
                .unwrap()
                .MemoryManagementCaps
                .GpuMmuSupported(),
            1
        );
        assert_eq!(info.queries, [1, 11, 11, 13, 14, 14, 14, 15, 6, 21, 22], "{name}: DRIVERCAPS, QUERYSEGMENT4 x2, GPUMMUCAPS, 3 levels, PHYSICALADAPTERCAPS, NUMPOWERCOMPONENTS, FRAMEBUFFERSAVESIZE, HARDWARERESERVEDRANGES");
        assert_eq!(info.segments.unwrap().NbSegment, 1);
        assert_eq!(info.page_table_levels.len(), 3);
        assert_eq!(
            info.hardware_reserved_ranges.as_deref().map(<[_]>::len),
            Some(0)
        );
        // The doorbell at start made the device fetch the ring, raise its interrupt, and the ISR
        // queue the DPC.
        assert_eq!(m.notified_interrupts(id), [1], "{name}");
        assert_eq!(m.notified_dpcs(id), 1, "{name}");
        assert!(
            m.iommu_faults().is_empty(),
            "{name}: {:#?}",
            m.iommu_faults()
        );
        assert_eq!(m.callback_calls("DxgkCbMapMemory"), 1);
        m.stop_adapter(id);
        m.remove_adapter(id);
        m.unload_driver();
        m.assert_clean();
        assert_eq!(m.live_mdl_allocations(), 0);
    }
}

#[test]
fn each_bad_driver_breaks_exactly_its_rule_in_both_iommu_modes() {
    let cases: Vec<(Bad, Rule, &str)> = vec![
        (
            Bad {
                alloc_in_dpc: true,
                ..Default::default()
            },
            Rule::IrqlTooHigh,
            "documented maximum 0",
        ),
        (
            Bad {
                notify_dpc_in_isr: true,
                ..Default::default()
            },
            Rule::IrqlTooHigh,
            "requires exactly 2",
        ),
        (
            Bad {
                notify_interrupt_in_dpc: true,
                ..Default::default()
            },
            Rule::IrqlTooLow,
            "only legal from the ISR",
        ),
        (
            Bad {
                notify_interrupt_raised_in_dpc: true,
                ..Default::default()
            },
            Rule::IrqlTooLow,
            "outside the adapter's ISR and outside DxgkCbSynchronizeExecution",
        ),
        (
            Bad {
                program_system_va: true,
                ..Default::default()
            },
            Rule::IommuFault,
            "NotMapped",
        ),
        (
            Bad {
                assume_contiguous: true,
                ..Default::default()
            },
            Rule::IommuFault,
            "RingFetch",
        ),
        (
            Bad {
                leak_ring_at_stop: true,
                ..Default::default()
            },
            Rule::ResourceLeak,
            "never freed with DxgkCbFreePagesFromMdl",
        ),
        (
            Bad {
                keep_mmio_mapped: true,
                ..Default::default()
            },
            Rule::ResourceLeak,
            "DxgkCbMapMemory mapping",
        ),
        (
            Bad {
                double_free_ring: true,
                ..Default::default()
            },
            Rule::MdlMisuse,
            "double free",
        ),
        (
            Bad {
                leak_context: true,
                ..Default::default()
            },
            Rule::PoolLeak,
            "'TDrv'",
        ),
        (
            Bad {
                omit_create_process: true,
                ..Default::default()
            },
            Rule::DdiProtocol,
            "DxgkDdiCreateProcess",
        ),
        (
            Bad {
                omit_exclusive_access: true,
                ..Default::default()
            },
            Rule::DdiProtocol,
            "DxgkDdiBeginExclusiveAccess",
        ),
        (
            Bad {
                two_level_without_root_size: true,
                ..Default::default()
            },
            Rule::DdiProtocol,
            "DxgkDdiGetRootPageTableSize",
        ),
        (
            Bad {
                version: 0x1234_5678,
                ..Default::default()
            },
            Rule::DdiProtocol,
            "unknown DXGKDDI_INTERFACE_VERSION",
        ),
    ];
    for (b, rule, needle) in cases {
        for config in all_machines() {
            expect(config, b, rule, needle);
        }
    }
}

#[test]
fn notify_interrupt_through_synchronize_execution_is_clean_in_both_iommu_modes() {
    for config in all_machines() {
        let name = format!("{} {:?}", config.name, config.iommu);
        let b = Bad {
            notify_interrupt_synchronized_in_dpc: true,
            ..Default::default()
        };
        BAD.with(|c| c.set(b));
        let m = Machine::new(config);
        assert_eq!(m.load_driver(driver_entry), sys::STATUS_SUCCESS, "{name}");
        let id = m.add_adapter(AdapterConfig {
            device: Some(Box::new(Device::default())),
        });
        assert_eq!(m.start_adapter(id), sys::STATUS_SUCCESS, "{name}");
        m.stop_adapter(id);
        m.remove_adapter(id);
        m.unload_driver();
        BAD.with(|c| c.set(Bad::default()));
        assert!(m.findings().is_empty(), "{name}: {:#?}", m.findings());
        // The ISR's notification, then the DPC's synchronized one.
        assert_eq!(m.notified_interrupts(id), [1, 1], "{name}");
        assert_eq!(m.callback_calls("DxgkCbSynchronizeExecution"), 1, "{name}");
    }
}

#[test]
fn writing_past_the_drivercaps_size_windows_passes_is_reported() {
    // Windows 10 1803 passes the WDDM 2.4 size (584); a driver writing its full 3.1-sized
    // DXGK_DRIVERCAPS (592) overruns it. Windows 11 passes 592: no overrun there.
    for mode in [IommuMode::Identity, IommuMode::Remapped] {
        expect(
            MachineConfig::windows_10_1803().with_iommu(mode),
            Bad {
                caps_overrun: true,
                ..Default::default()
            },
            Rule::DdiProtocol,
            "wrote past OutputDataSize 584",
        );
    }
    let (m, s) = run(
        MachineConfig::windows_11_22h2(),
        Bad {
            caps_overrun: true,
            ..Default::default()
        },
    );
    assert_eq!(s, sys::STATUS_SUCCESS);
    m.assert_clean();
}

#[test]
fn a_start_that_fails_the_ddi_set_check_is_undone_by_stop_and_remove() {
    let (m, s) = run(
        MachineConfig::windows_10_1803(),
        Bad {
            omit_exclusive_access: true,
            ..Default::default()
        },
    );
    assert_eq!(s, sys::STATUS_UNSUCCESSFUL);
    assert_eq!(m.adapter(dxgk_sim::AdapterId(0)).state, PnpState::Removed);
    assert_eq!(
        m.findings().len(),
        1,
        "no leak: StopDevice and RemoveDevice ran: {:#?}",
        m.findings()
    );
}

#[test]
fn a_driver_newer_than_the_machine_is_refused_without_a_finding() {
    let (m, s) = run(
        MachineConfig::windows_10_1803(),
        Bad {
            version: sys::DXGKDDI_INTERFACE_VERSION_WDDM3_1,
            ..Default::default()
        },
    );
    assert_eq!(s, sys::STATUS_REVISION_MISMATCH);
    assert_eq!(
        m.offered_interface_versions(),
        [sys::DXGKDDI_INTERFACE_VERSION_WDDM3_1]
    );
    m.assert_clean();
}

#[test]
fn build_paging_buffer_statuses_outside_the_protocol_are_reported() {
    let m = Machine::new(MachineConfig::windows_10_1803());
    for ok in [
        sys::STATUS_SUCCESS,
        sys::STATUS_GRAPHICS_INSUFFICIENT_DMA_BUFFER,
        sys::STATUS_GRAPHICS_ALLOCATION_BUSY,
    ] {
        assert!(m.check_build_paging_buffer_status(ok));
    }
    m.assert_clean();
    assert!(!m.check_build_paging_buffer_status(sys::STATUS_UNSUCCESSFUL));
    let f = m.findings_of(Rule::DdiProtocol);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].call, "DxgkDdiBuildPagingBuffer");
}

#[test]
fn systematic_fault_injection_over_the_driver_life_is_clean_in_both_modes() {
    for config in [
        MachineConfig::windows_10_1803(),
        MachineConfig::windows_11_22h2(),
    ] {
        let report = dxgk_sim::fault::systematic_on(config, |m: &Machine| {
            BAD.with(|c| c.set(Bad::default()));
            life(m)
        });
        // AddDevice pool, ring pages, DxgkCbMapMemory, the ring's system-VA mapping.
        assert_eq!(report.injection_points, 4, "{}", report.summary());
        assert!(
            report.runs[1..]
                .iter()
                .all(|r| r.status.is_some_and(|s| s < 0)),
            "{}",
            report.summary()
        );
    }
}

#[test]
fn systematic_fault_injection_catches_the_leak_on_the_map_failure_path() {
    let report = Systematic::default().run(|m: &Machine| {
        BAD.with(|c| {
            c.set(Bad {
                leak_ring_if_map_fails: true,
                ..Default::default()
            })
        });
        life(m)
    });
    let bad = report.failures();
    assert_eq!(bad.len(), 1, "{}", report.summary());
    assert_eq!(bad[0].failed_call, Some("DxgkCbMapMemory"));
    assert!(
        bad[0].findings.iter().all(|f| f.rule == Rule::ResourceLeak),
        "{}",
        report.summary()
    );
}

#[test]
fn synchronize_execution_runs_the_routine_at_device_irql_under_the_interrupt_lock() {
    unsafe extern "system" fn routine(ctx: sys::PVOID) -> sys::BOOLEAN {
        // SAFETY: the test's cell.
        unsafe { ctx.cast::<sys::KIRQL>().write(sys::KeGetCurrentIrql()) };
        1
    }
    let m = Machine::new(MachineConfig::windows_10_1803());
    m.enter(|| {
        let i = m.interface_for_tests(sys::DXGKDDI_INTERFACE_VERSION_WDDM2_4);
        let mut seen: sys::KIRQL = 0;
        let mut ret: sys::BOOLEAN = 0;
        // SAFETY: a valid routine, context and out pointer.
        let s = unsafe {
            i.DxgkCbSynchronizeExecution.unwrap()(
                i.DeviceHandle,
                Some(routine),
                (&mut seen as *mut sys::KIRQL).cast(),
                0,
                &mut ret,
            )
        };
        assert_eq!(
            (s, ret, seen),
            (sys::STATUS_SUCCESS, 1, dxgk_sim::dxgkrnl::DEVICE_IRQL)
        );
        assert_eq!(sys::KeGetCurrentIrql(), sys::PASSIVE_LEVEL);
        // The MMIO BAR: mapping outside the resource is refused.
        let mut va: sys::PVOID = std::ptr::null_mut();
        let mut pa = sys::LARGE_INTEGER::default();
        pa.QuadPart = 0x1000;
        // SAFETY: the simulator validates the range.
        let s = unsafe {
            i.DxgkCbMapMemory.unwrap()(i.DeviceHandle, pa, 4096, 0, 0, sys::MmNonCached, &mut va)
        };
        assert_eq!(s, sys::STATUS_INVALID_PARAMETER);
    });
    let f = m.findings();
    assert_eq!(f.len(), 1, "{f:#?}");
    assert!(
        f[0].rule == Rule::InvalidArgument
            && f[0]
                .detail
                .contains("not inside the adapter's memory resource")
    );
}

#[test]
fn callback_irql_table_matches_ddi_prototypes_json() {
    use dxgk_sim::dxgkrnl::callbacks::{IrqlRule, CALLBACK_IRQL};
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/reference/ddi-prototypes.json");
    let Ok(json) = std::fs::read_to_string(&path) else {
        eprintln!("skipping: {} not present in this checkout", path.display());
        return;
    };
    for (name, rule) in CALLBACK_IRQL {
        let at = json
            .find(&format!("\"member\": \"{name}\""))
            .unwrap_or_else(|| panic!("{name} not in the JSON"));
        let rest = &json[at..];
        let irql = &rest[rest.find("\"irql\":").unwrap()..];
        let irql = &irql[..irql.find([']', '}']).unwrap()];
        let expected = if irql.contains("null") {
            IrqlRule::Any
        } else if irql.contains("_IRQL_requires_(PASSIVE_LEVEL)")
            || irql.contains("_IRQL_requires_max_(PASSIVE_LEVEL)")
        {
            IrqlRule::AtMost(sys::PASSIVE_LEVEL)
        } else if irql.contains("_IRQL_requires_max_(DISPATCH_LEVEL)") {
            IrqlRule::AtMost(sys::DISPATCH_LEVEL)
        } else if irql.contains("_IRQL_requires_(DISPATCH_LEVEL)") {
            IrqlRule::Exactly(sys::DISPATCH_LEVEL)
        } else if irql.contains("_IRQL_requires_(HIGH_LEVEL)") {
            // Documented as HIGH_LEVEL; really called from the ISR at device IRQL.
            IrqlRule::DeviceIrql
        } else {
            panic!("{name}: unhandled annotation {irql}")
        };
        assert_eq!(*rule, expected, "{name}: {irql}");
    }
}
