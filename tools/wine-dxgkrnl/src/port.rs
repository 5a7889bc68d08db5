//! The port driver proper: `DriverEntry`, `\Device\DxgKrnl`, the displib IOCTL, the port
//! initializer rgpu calls (`DpiInitialize`), the adapter thread and rgpu's `DriverUnload`.

use core::ptr;

use dxgk_sys::{
    DEVICE_OBJECT, DRIVER_INITIALIZATION_DATA, DRIVER_OBJECT, IO_STATUS_BLOCK, IRP, KEVENT,
    LARGE_INTEGER, NTSTATUS, PVOID, STATUS_INVALID_DEVICE_REQUEST, STATUS_INVALID_PARAMETER,
    STATUS_REVISION_MISMATCH, STATUS_SUCCESS, UNICODE_STRING,
};

use crate::kernel;
use crate::settings::Settings;
use crate::state::Global;

/// IOCTL_VIDEO_DDI_FUNC_REGISTER, as rgpu's displib sends it.
const IOCTL_VIDEO_DDI_FUNC_REGISTER: u32 = 0x0023_003F;
#[cfg(target_os = "windows")]
const _: () =
    assert!(IOCTL_VIDEO_DDI_FUNC_REGISTER == dxgk_sys::displib::IOCTL_VIDEO_DDI_FUNC_REGISTER);

/// The port initializer's type (`dxgk_sys::displib::PFN_DPI_INITIALIZE`).
type PfnDpiInitialize = unsafe extern "system" fn(
    *mut DRIVER_OBJECT,
    *mut UNICODE_STRING,
    *mut DRIVER_INITIALIZATION_DATA,
) -> NTSTATUS;

/// What the port learned while rgpu registered.
pub struct Port {
    pub settings: Settings,
    /// An unnamed device of ours standing in for the adapter's PDO.
    pub pdo: *mut DEVICE_OBJECT,
    pub miniport_driver: *mut DRIVER_OBJECT,
    pub miniport_registry_path: *mut UNICODE_STRING,
    /// rgpu's DDI table, copied when DpiInitialize accepted it.
    pub init: DRIVER_INITIALIZATION_DATA,
    /// The accepted `DRIVER_INITIALIZATION_DATA.Version`; 0 until one is accepted.
    pub version: u32,
    pub offers: u32,
    /// Signalled by the adapter thread when its sequence is over.
    pub adapter_done: KEVENT,
}

pub static PORT: Global<Port> = Global::new(Port {
    settings: Settings {
        max_interface: None,
        start_interface: None,
        require_all_live: false,
        shim_stall: false,
        soft: false,
        soft_fault: false,
    },
    pdo: ptr::null_mut(),
    miniport_driver: ptr::null_mut(),
    miniport_registry_path: ptr::null_mut(),
    // SAFETY: DRIVER_INITIALIZATION_DATA is plain data for which all-zero is valid
    // (integers and `Option<fn>`s), per dxgk-sys' generated-type contract.
    init: unsafe { core::mem::zeroed() },
    version: 0,
    offers: 0,
    // SAFETY: a KEVENT is plain data; it is initialized with KeInitializeEvent before use.
    adapter_done: unsafe { core::mem::zeroed() },
});

/// Copy of the settings (read once in DriverEntry).
pub fn settings() -> Settings {
    // SAFETY: short read; see `state` for the serialization argument.
    unsafe { PORT.get() }.settings
}

/// The adapter-sequence-finished event (a raw pointer: the kernel, not Rust, accesses it).
fn done_event() -> *mut KEVENT {
    // SAFETY: only the field's address is taken; no reference outlives this call.
    unsafe { core::ptr::addr_of_mut!(PORT.get().adapter_done) }
}

/// The port's entry point, run by Wine's `ZwLoadDriver` when rgpu's displib loads `DXGKrnl`.
///
/// # Safety
/// Called by the I/O manager with its driver object and registry path.
#[no_mangle]
pub unsafe extern "system" fn DriverEntry(
    driver_object: *mut DRIVER_OBJECT,
    registry_path: *mut UNICODE_STRING,
) -> NTSTATUS {
    say!("DriverEntry: fake Dxgkrnl port loaded (Wine test tooling)");
    if driver_object.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: the registry path comes from the I/O manager.
    let settings = unsafe { crate::settings::read(registry_path) };
    say!(
        "settings: max_interface={:?} start_interface={:?} require_all_live={} shim_stall={} soft={} soft_fault={}",
        settings.max_interface,
        settings.start_interface,
        settings.require_all_live,
        settings.shim_stall,
        settings.soft,
        settings.soft_fault
    );
    // SAFETY: nothing else runs in the port yet.
    unsafe { PORT.get() }.settings = settings;

    let mut name_buf = wstr!("\\Device\\DxgKrnl");
    let mut name = kernel::unicode(&mut name_buf);
    let mut device: *mut DEVICE_OBJECT = ptr::null_mut();
    // SAFETY: valid driver object, name and out-pointer.
    let status = unsafe {
        kernel::IoCreateDevice(
            driver_object,
            0,
            &mut name,
            kernel::FILE_DEVICE_VIDEO,
            0,
            0,
            &mut device,
        )
    };
    if status < 0 {
        say!(
            "DriverEntry: IoCreateDevice(\\Device\\DxgKrnl) failed {:#010x}",
            status as u32
        );
        return status;
    }
    clear_initializing(device);

    let mut pdo: *mut DEVICE_OBJECT = ptr::null_mut();
    // SAFETY: valid driver object and out-pointer; an unnamed device.
    let status = unsafe {
        kernel::IoCreateDevice(
            driver_object,
            0,
            ptr::null_mut(),
            kernel::FILE_DEVICE_VIDEO,
            0,
            0,
            &mut pdo,
        )
    };
    if status < 0 {
        say!(
            "DriverEntry: IoCreateDevice(PDO) failed {:#010x}",
            status as u32
        );
        return status;
    }
    clear_initializing(pdo);
    // SAFETY: short write; nothing else runs in the port yet.
    unsafe { PORT.get() }.pdo = pdo;

    // SAFETY: `driver_object` is ours; the I/O manager reads MajorFunction only after return.
    let major = unsafe { &mut (*driver_object).MajorFunction };
    major[kernel::IRP_MJ_CREATE] = Some(dispatch_complete_ok);
    major[kernel::IRP_MJ_CLOSE] = Some(dispatch_complete_ok);
    major[kernel::IRP_MJ_INTERNAL_DEVICE_CONTROL] = Some(dispatch_internal_ioctl);
    major[kernel::IRP_MJ_PNP] = Some(dispatch_pnp);

    let status = crate::wine_hook::install(device);
    if status < 0 {
        say!(
            "DriverEntry: Wine IoGetDeviceObjectPointer hook failed {:#010x}",
            status as u32
        );
        return status;
    }
    let status = crate::wine_hook::install_qpc_shim();
    if status < 0 {
        say!(
            "DriverEntry: KeQueryPerformanceCounter shim failed {:#010x}",
            status as u32
        );
        return status;
    }
    if settings.shim_stall {
        let status = crate::wine_hook::install_stall_shim();
        if status < 0 {
            say!(
                "DriverEntry: KeStallExecutionProcessor shim failed {:#010x}",
                status as u32
            );
        }
    }
    STATUS_SUCCESS
}

fn clear_initializing(device: *mut DEVICE_OBJECT) {
    // SAFETY: `device` was just created by IoCreateDevice and is ours.
    unsafe { (*device).Flags &= !kernel::DO_DEVICE_INITIALIZING };
}

fn complete(irp: *mut IRP, status: NTSTATUS, information: usize) -> NTSTATUS {
    let iosb = IO_STATUS_BLOCK {
        u: dxgk_sys::IO_STATUS_BLOCK_u { Status: status },
        Information: information,
    };
    // SAFETY: `irp` is the IRP the I/O manager passed to our dispatch routine.
    unsafe { (*irp).IoStatus = iosb };
    // SAFETY: completing the IRP we own; no access after this.
    unsafe { kernel::IofCompleteRequest(irp, 0) };
    status
}

unsafe extern "system" fn dispatch_complete_ok(
    _device: *mut DEVICE_OBJECT,
    irp: *mut IRP,
) -> NTSTATUS {
    complete(irp, STATUS_SUCCESS, 0)
}

/// IRP_MJ_INTERNAL_DEVICE_CONTROL: IOCTL_VIDEO_DDI_FUNC_REGISTER (0x0023003F, METHOD_NEITHER)
/// writes the port initializer into the one-pointer output buffer (`Irp->UserBuffer`).
unsafe extern "system" fn dispatch_internal_ioctl(
    _device: *mut DEVICE_OBJECT,
    irp: *mut IRP,
) -> NTSTATUS {
    // SAFETY: `irp` is a valid IRP from the I/O manager.
    let tail = unsafe { (*irp).Tail };
    // SAFETY: for a driver-queued IRP the Overlay member of Tail is the active one.
    let overlay = unsafe { tail.Overlay };
    // SAFETY: CurrentStackLocation is the active member while the IRP is dispatched.
    let stack = unsafe { overlay.s.u.CurrentStackLocation };
    // SAFETY: the current stack location of a dispatched IRP is valid.
    let params = unsafe { (*stack).Parameters };
    // SAFETY: an internal device-control IRP uses the DeviceIoControl parameters.
    let ioctl = unsafe { params.DeviceIoControl };
    // SAFETY: `irp` is valid (above).
    let out = unsafe { (*irp).UserBuffer };
    let code = ioctl.IoControlCode;
    if code != IOCTL_VIDEO_DDI_FUNC_REGISTER
        || (ioctl.OutputBufferLength as usize) < core::mem::size_of::<PVOID>()
        || out.is_null()
    {
        say!(
            "IOCTL {:#010x} (out {} bytes): not ours",
            code,
            ioctl.OutputBufferLength
        );
        return complete(irp, STATUS_INVALID_DEVICE_REQUEST, 0);
    }
    let init: PfnDpiInitialize = dpi_initialize;
    // SAFETY: METHOD_NEITHER: `UserBuffer` is the caller's pointer-sized output slot.
    unsafe {
        out.cast::<Option<PfnDpiInitialize>>()
            .write_unaligned(Some(init))
    };
    say!(
        "IOCTL 0x0023003F: returned the port initializer {:p}",
        init as *const ()
    );
    complete(irp, STATUS_SUCCESS, core::mem::size_of::<PVOID>())
}

/// IRP_MJ_PNP to the adapter's PDO: IRP_MN_QUERY_ID, which Wine's `IoGetDeviceProperty`
/// (DevicePropertyEnumeratorName: the device ID up to its first `\`) sends, and which rgpu's
/// AddDevice uses to tell a root-enumerated (soft) device from a bus one. The PDO is the bus
/// driver's, so the port answers as that bus would: `ROOT\RGPU` for the soft scenario,
/// `PCI\VEN_…` otherwise; instance ID `0000`. Anything else is completed untouched (a PnP IRP
/// nobody handles keeps its STATUS_NOT_SUPPORTED).
unsafe extern "system" fn dispatch_pnp(device: *mut DEVICE_OBJECT, irp: *mut IRP) -> NTSTATUS {
    // SAFETY: `irp` is a valid IRP from the I/O manager.
    let tail = unsafe { (*irp).Tail };
    // SAFETY: for a driver-queued IRP the Overlay member of Tail is the active one.
    let overlay = unsafe { tail.Overlay };
    // SAFETY: CurrentStackLocation is the active member while the IRP is dispatched.
    let stack = unsafe { overlay.s.u.CurrentStackLocation };
    // SAFETY: the current stack location of a dispatched IRP is valid.
    let minor = unsafe { (*stack).MinorFunction };
    // SAFETY: as above.
    let params = unsafe { (*stack).Parameters };
    // SAFETY: an IRP_MN_QUERY_ID uses the QueryId parameters (read only for that minor code).
    let id_type = unsafe { params.QueryId }.IdType;
    // SAFETY: `irp` is valid (above).
    let current = unsafe { (*irp).IoStatus };
    // SAFETY: reading the status member of the IRP's own status block.
    let (status, info) = (unsafe { current.u.Status }, current.Information);
    // SAFETY: short read; the PDO pointer is written once in DriverEntry.
    let pdo = unsafe { PORT.get() }.pdo;
    if device != pdo || minor != kernel::IRP_MN_QUERY_ID {
        return complete(irp, status, info);
    }
    let soft = settings().soft;
    let text: &str = match id_type.0 {
        0 if soft => "ROOT\\RGPU",
        0 => "PCI\\VEN_1234&DEV_5247",
        // Wine takes DevicePropertyEnumeratorName from the instance ID (up to its first `\`),
        // so it is answered with the enumerator in front.
        3 if soft => "ROOT\\RGPU\\0000",
        3 => "PCI\\VEN_1234&DEV_5247\\0000",
        _ => return complete(irp, status, info),
    };
    // The caller frees the string with ExFreePool.
    // SAFETY: plain non-paged pool allocation.
    let buf = unsafe {
        dxgk_sys::ExAllocatePoolWithTag(dxgk_sys::NonPagedPoolNx, (text.len() + 1) * 2, 0x4449_5057)
    }
    .cast::<u16>();
    if buf.is_null() {
        return complete(irp, dxgk_sys::STATUS_INSUFFICIENT_RESOURCES, 0);
    }
    for (i, b) in text.bytes().chain(core::iter::once(0)).enumerate() {
        // SAFETY: `i` <= text.len(), inside the block.
        unsafe { buf.wrapping_add(i).write(u16::from(b)) };
    }
    say!(
        "PnP: IRP_MN_QUERY_ID type {} of the adapter's PDO -> {}",
        id_type.0,
        text
    );
    complete(irp, STATUS_SUCCESS, buf as usize)
}

/// The port initializer (`DpiInitialize`): what rgpu's `DxgkInitialize` calls, once per
/// interface version it offers, newest first.
unsafe extern "system" fn dpi_initialize(
    driver_object: *mut DRIVER_OBJECT,
    registry_path: *mut UNICODE_STRING,
    init: *mut DRIVER_INITIALIZATION_DATA,
) -> NTSTATUS {
    if driver_object.is_null() || registry_path.is_null() || init.is_null() {
        say!("DxgkInitialize: NULL argument from the miniport");
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: rgpu passes a fully initialized DRIVER_INITIALIZATION_DATA for the call.
    let data = unsafe { *init };
    let version = data.Version;
    // SAFETY: short access; the loading thread is the only one in the port.
    let port = unsafe { PORT.get() };
    port.offers += 1;
    if let Some(max) = port.settings.max_interface {
        if version > max {
            say!(
                "DxgkInitialize: refusing interface {:#x} (harness HarnessMaxInterface={:#x})",
                version,
                max
            );
            return STATUS_REVISION_MISMATCH;
        }
    }
    if port.version != 0 {
        say!(
            "DxgkInitialize: called again after interface {:#x} was accepted",
            port.version
        );
        return STATUS_INVALID_PARAMETER;
    }
    port.version = version;
    port.init = data;
    port.miniport_driver = driver_object;
    port.miniport_registry_path = registry_path;
    let offers = port.offers;

    crate::steps::record_driver_entry(version, offers, &data);

    // Dxgkrnl owns the miniport's unload routine on Windows too (DpiDriverUnload).
    // SAFETY: `driver_object` is rgpu's driver object, valid during its DriverEntry.
    unsafe { (*driver_object).DriverUnload = Some(dpi_driver_unload) };

    let event = done_event();
    // SAFETY: a KEVENT in static storage, initialized before the thread that sets it exists.
    unsafe { dxgk_sys::KeInitializeEvent(event, dxgk_sys::NotificationEvent, 0) };
    let mut thread: dxgk_sys::HANDLE = ptr::null_mut();
    // SAFETY: valid out-pointer; the start routine has the KSTART_ROUTINE signature.
    let status = unsafe {
        dxgk_sys::PsCreateSystemThread(
            &mut thread,
            dxgk_sys::THREAD_ALL_ACCESS,
            ptr::null_mut(),
            ptr::null_mut(),
            ptr::null_mut(),
            Some(adapter_thread),
            ptr::null_mut(),
        )
    };
    if status < 0 {
        say!(
            "DxgkInitialize: PsCreateSystemThread failed {:#010x}",
            status as u32
        );
        return status;
    }
    // SAFETY: the handle PsCreateSystemThread returned; the thread keeps running.
    unsafe { dxgk_sys::ZwClose(thread) };
    STATUS_SUCCESS
}

/// PnP stand-in: starts after rgpu's DriverEntry has returned (Windows sends AddDevice /
/// IRP_MN_START_DEVICE only then) and drives the adapter through its life.
unsafe extern "system" fn adapter_thread(_context: PVOID) {
    // Windows does not call AddDevice before DriverEntry returns; give rgpu's DriverEntry
    // (one log line after DxgkInitialize) time to return to Wine's loader.
    let mut delay = LARGE_INTEGER {
        QuadPart: -3_000_000, // 300 ms, relative
    };
    // SAFETY: PASSIVE_LEVEL system thread; `delay` lives for the call.
    unsafe { dxgk_sys::KeDelayExecutionThread(dxgk_sys::KernelMode, 0, &mut delay) };
    crate::steps::run_adapter_sequence();
    // SAFETY: the event was initialized before this thread was created.
    unsafe { dxgk_sys::KeSetEvent(done_event(), 0, 0) };
    // SAFETY: a system thread ends itself with PsTerminateSystemThread.
    unsafe { dxgk_sys::PsTerminateSystemThread(STATUS_SUCCESS) };
}

/// rgpu's `DriverUnload` (set by DpiInitialize, as Dxgkrnl does): waits for the adapter
/// sequence, calls `DxgkDdiUnload`, prints the table and the verdict.
unsafe extern "system" fn dpi_driver_unload(_driver_object: *mut DRIVER_OBJECT) {
    let mut timeout = LARGE_INTEGER {
        QuadPart: -150_000_000, // 15 s, relative
    };
    // SAFETY: the event was initialized in DpiInitialize and lives in static storage.
    let wait = unsafe {
        dxgk_sys::KeWaitForSingleObject(
            done_event().cast(),
            dxgk_sys::Executive,
            dxgk_sys::KernelMode,
            0,
            &mut timeout,
        )
    };
    crate::steps::run_unload(wait);
}
