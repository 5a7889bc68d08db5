//! The `DXGKRNL_INTERFACE` the port hands rgpu at StartDevice, implemented on pool memory.
//!
//! * Pages (`DxgkCbAllocatePagesForMdl`): a page-aligned pool block described by an MDL from
//!   `IoAllocateMdl`, with **synthetic page numbers** (logical addresses, never CPU ones) and
//!   `MDL_MAPPED_TO_SYSTEM_VA` set with `MappedSystemVa` = the block, because Wine's
//!   `MmMapLockedPagesSpecifyCache` is a stub that returns NULL. rgpu's
//!   `MmGetSystemAddressForMdlSafe` then takes the mapped fast path, as it does on Windows for an
//!   MDL Dxgkrnl already mapped.
//! * The **logical-address table** ([`ALLOCS`]) maps each synthetic page range back to its CPU
//!   block; `DxgkCbMapMdlToIoMmu` records a mapping (its own handle, as Dxgkrnl returns one)
//!   that must be undone before the pages are freed and before RemoveDevice returns.
//! * Device information: one memory BAR at [`MMIO_PHYS`] (`CmResourceTypeMemory`), which
//!   `DxgkCbMapMemory` maps to a pool block behind which [`crate::device`] runs rgpu-hw's model
//!   (register side effects only; no command execution).
//!
//! Callbacks left NULL (display, power, VidPN, ACPI…) fault if called; the runner reports that
//! as a crash. Every callback checks the DeviceHandle and counts misuse in [`ERRORS`].

use core::sync::atomic::{AtomicU32, Ordering};

use dxgk_sys::{
    BOOLEAN, CM_RESOURCE_LIST, DXGKARGCB_ALLOCATECONTIGUOUSMEMORY, DXGKARGCB_ALLOCATEPAGESFORMDL,
    DXGKARGCB_FREECONTIGUOUSMEMORY, DXGKARGCB_FREEPAGESFROMMDL, DXGKARGCB_MAPMDLTOIOMMU,
    DXGKARGCB_UNMAPMDLFROMIOMMU, DXGKRNL_INTERFACE, DXGK_DEVICE_INFO, GUID, HANDLE, LARGE_INTEGER,
    MDL, MEMORY_CACHING_TYPE, NTSTATUS, PHYSICAL_ADDRESS, PULONG, PVOID, STATUS_INVALID_PARAMETER,
    STATUS_NO_MEMORY, STATUS_SUCCESS, UCHAR, ULONG, USHORT,
};
use rgpu_hw::regs;

use crate::state::Global;

const TAG: u32 = u32::from_le_bytes(*b"WDxg");
const PAGE: usize = 4096;
/// Translated (CPU physical) address of the fake BAR0.
pub const MMIO_PHYS: i64 = 0xFE00_0000;
/// First synthetic page number handed out (logical address 2 GiB).
const FIRST_PFN: u64 = 0x8_0000;
const MAX_ALLOCS: usize = 64;

/// Callback misuse seen (bad handle, unknown memory handle, double free…).
pub static ERRORS: AtomicU32 = AtomicU32::new(0);
/// Callback calls, for the summary.
pub static CALLS: AtomicU32 = AtomicU32::new(0);
/// `DxgkCbMapMemory` calls (a soft adapter has no BAR to map).
pub static MAP_MEMORY_CALLS: AtomicU32 = AtomicU32::new(0);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Free,
    Pages,
    Contiguous,
}

#[derive(Clone, Copy)]
struct Alloc {
    kind: Kind,
    /// The pool block (freed with ExFreePoolWithTag).
    raw: *mut u8,
    /// Page-aligned CPU address of the memory.
    cpu: *mut u8,
    bytes: usize,
    mdl: *mut MDL,
    /// First synthetic page number (Pages only).
    pfn: u64,
}

const FREE: Alloc = Alloc {
    kind: Kind::Free,
    raw: core::ptr::null_mut(),
    cpu: core::ptr::null_mut(),
    bytes: 0,
    mdl: core::ptr::null_mut(),
    pfn: 0,
};

/// Live `DxgkCbMapMdlToIoMmu` mappings (the MDL each one maps); handle = MAP_HANDLE_BASE + index.
const MAX_MAPPINGS: usize = 64;
const MAP_HANDLE_BASE: usize = 0x1_0000;

struct Memory {
    allocs: [Alloc; MAX_ALLOCS],
    mappings: [*mut MDL; MAX_MAPPINGS],
    next_pfn: u64,
    mmio: *mut u8,
    resources: CM_RESOURCE_LIST,
    start_info_context: PVOID,
}

/// The logical-address table and the rest of the fake adapter's memory state.
static ALLOCS: Global<Memory> = Global::new(Memory {
    allocs: [FREE; MAX_ALLOCS],
    mappings: [core::ptr::null_mut(); MAX_MAPPINGS],
    next_pfn: FIRST_PFN,
    mmio: core::ptr::null_mut(),
    // SAFETY: CM_RESOURCE_LIST is plain data; all-zero is valid (filled in `prepare`).
    resources: unsafe { core::mem::zeroed() },
    start_info_context: core::ptr::null_mut(),
});

/// The DeviceHandle rgpu must pass back to every callback.
pub fn device_handle() -> HANDLE {
    (&ALLOCS as *const Global<Memory>).cast_mut().cast()
}

pub(crate) fn check_handle(h: HANDLE, who: &str) -> bool {
    CALLS.fetch_add(1, Ordering::Relaxed);
    crate::device::tick();
    if h != device_handle() {
        ERRORS.fetch_add(1, Ordering::Relaxed);
        say!("callback {}: wrong DeviceHandle {:p}", who, h);
        return false;
    }
    true
}

pub(crate) fn pool_alloc(bytes: usize) -> *mut u8 {
    // SAFETY: plain non-paged pool allocation.
    let p = unsafe { dxgk_sys::ExAllocatePoolWithTag(dxgk_sys::NonPagedPoolNx, bytes, TAG) }
        .cast::<u8>();
    if !p.is_null() {
        // SAFETY: a fresh block of `bytes` bytes.
        unsafe { core::ptr::write_bytes(p, 0, bytes) };
    }
    p
}

pub(crate) fn pool_free(p: *mut u8) {
    if !p.is_null() {
        // SAFETY: `p` came from `pool_alloc` with TAG.
        unsafe { dxgk_sys::ExFreePoolWithTag(p.cast(), TAG) };
    }
}

/// Page-aligned pool memory: (raw block, aligned address).
pub(crate) fn alloc_pages(bytes: usize) -> Option<(*mut u8, *mut u8)> {
    let raw = pool_alloc(bytes.checked_add(PAGE)?);
    if raw.is_null() {
        return None;
    }
    let aligned = raw.wrapping_add(raw.align_offset(PAGE));
    Some((raw, aligned))
}

/// An MDL in its own pool block describing `pages` pages at page-aligned `cpu`, mapped there
/// (`MappedSystemVa`, `flags` | MDL_MAPPED_TO_SYSTEM_VA), with page numbers `pfn..pfn + pages`
/// (tags of the port's choosing: logical addresses, never CPU ones). Built by hand, as
/// MmInitializeMdl would: Wine's IoAllocateMdl sizes the PFN array with a 4-byte PFN_NUMBER
/// (its wdm.h), so `Size` would be short and an 8-byte PFN array would overrun the block.
/// Freed with [`free_mdl`].
pub(crate) fn build_mdl(cpu: *mut u8, pages: usize, pfn: u64, flags: i16) -> Option<*mut MDL> {
    let header = core::mem::size_of::<MDL>();
    let size = header + pages * core::mem::size_of::<dxgk_sys::PFN_NUMBER>();
    let bytes = u32::try_from(pages * PAGE).ok()?;
    let mdl = pool_alloc(size).cast::<MDL>();
    if mdl.is_null() || i16::try_from(size).is_err() {
        pool_free(mdl.cast());
        return None;
    }
    let header = MDL {
        Next: core::ptr::null_mut(),
        Size: size as i16,
        MdlFlags: flags | dxgk_sys::MDL_MAPPED_TO_SYSTEM_VA,
        Process: core::ptr::null_mut(),
        MappedSystemVa: cpu.cast(),
        StartVa: cpu.cast(),
        ByteCount: bytes,
        ByteOffset: 0,
    };
    // SAFETY: a fresh pool block of `size` >= size_of::<MDL>() bytes, 16-byte aligned.
    unsafe { mdl.write(header) };
    // SAFETY: the PFN array follows the header inside the block (`pages` slots).
    let pfns = unsafe { dxgk_sys::MmGetMdlPfnArray(mdl) };
    for i in 0..pages {
        // SAFETY: `i` < pages: inside the block.
        unsafe {
            pfns.wrapping_add(i)
                .write((pfn + i as u64) as dxgk_sys::PFN_NUMBER)
        };
    }
    Some(mdl)
}

/// Frees an MDL from [`build_mdl`].
pub(crate) fn free_mdl(mdl: *mut MDL) {
    pool_free(mdl.cast());
}

/// Allocates and presets the MMIO block and the resource list. Called before StartDevice.
/// `soft`: a root-enumerated device instead, whose translated resource list is empty (Count 0:
/// no register BAR, no interrupt), as PnP gives it — rgpu then starts in soft mode.
pub fn prepare(miniport_device_context: PVOID, soft: bool) -> bool {
    // SAFETY: short access; no call into rgpu is in progress.
    let m = unsafe { ALLOCS.get() };
    m.start_info_context = miniport_device_context;
    if soft {
        m.resources.Count = 0;
        return true;
    }
    if m.mmio.is_null() {
        let Some((_, mmio)) = alloc_pages(regs::BAR_SIZE as usize) else {
            return false;
        };
        m.mmio = mmio;
    }
    crate::device::attach(m.mmio);
    let r = &mut m.resources;
    r.Count = 1;
    r.List[0].PartialResourceList.Version = 1;
    r.List[0].PartialResourceList.Revision = 1;
    r.List[0].PartialResourceList.Count = 1;
    let d = &mut r.List[0].PartialResourceList.PartialDescriptors[0];
    d.Type = dxgk_sys::CmResourceTypeMemory;
    d.u.Memory = dxgk_sys::CM_PARTIAL_RESOURCE_DESCRIPTOR_u_Memory {
        Start: LARGE_INTEGER {
            QuadPart: MMIO_PHYS,
        },
        Length: regs::BAR_SIZE,
    };
    true
}

/// Outstanding (pages, contiguous, IOMMU-mapped) allocations: all must be 0 after RemoveDevice.
pub fn outstanding() -> (u32, u32, u32) {
    // SAFETY: short read; no call into rgpu is in progress.
    let m = unsafe { ALLOCS.get() };
    let mut out = (0, 0, 0);
    for a in m.allocs.iter() {
        match a.kind {
            Kind::Pages => out.0 += 1,
            Kind::Contiguous => out.1 += 1,
            Kind::Free => {}
        }
    }
    out.2 = m.mappings.iter().filter(|p| !p.is_null()).count() as u32;
    out
}

/// The interface for `version`, with `Size` = that version's structure size.
pub fn interface(version: u32) -> DXGKRNL_INTERFACE {
    let size = dxgk_sys::DXGKRNL_INTERFACE_SIZE_BY_VERSION
        .iter()
        .rev()
        .find(|(v, _)| *v <= version)
        .map_or(core::mem::size_of::<DXGKRNL_INTERFACE>(), |&(_, s)| s);
    DXGKRNL_INTERFACE {
        Size: size as u32,
        Version: version,
        DeviceHandle: device_handle(),
        DxgkCbGetDeviceInformation: Some(get_device_information),
        DxgkCbMapMemory: Some(map_memory),
        DxgkCbUnmapMemory: Some(unmap_memory),
        DxgkCbQueueDpc: Some(crate::interrupt::queue_dpc),
        DxgkCbReadDeviceSpace: Some(read_device_space),
        DxgkCbWriteDeviceSpace: Some(write_device_space),
        DxgkCbSynchronizeExecution: Some(crate::interrupt::synchronize_execution),
        DxgkCbNotifyInterrupt: Some(crate::interrupt::notify_interrupt),
        DxgkCbNotifyDpc: Some(crate::interrupt::notify_dpc),
        DxgkCbLogEtwEvent: Some(log_etw_event),
        DxgkCbAllocateContiguousMemory: Some(allocate_contiguous_memory),
        DxgkCbFreeContiguousMemory: Some(free_contiguous_memory),
        DxgkCbAllocatePagesForMdl: Some(allocate_pages_for_mdl),
        DxgkCbFreePagesFromMdl: Some(free_pages_from_mdl),
        DxgkCbMapMdlToIoMmu: Some(map_mdl_to_iommu),
        DxgkCbUnmapMdlFromIoMmu: Some(unmap_mdl_from_iommu),
        ..Default::default()
    }
}

unsafe extern "system" fn get_device_information(
    h: HANDLE,
    info: *mut DXGK_DEVICE_INFO,
) -> NTSTATUS {
    if !check_handle(h, "GetDeviceInformation") || info.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: short access; rgpu is blocked in this callback.
    let m = unsafe { ALLOCS.get() };
    // SAFETY: short read of the port's registration data.
    let port = unsafe { crate::port::PORT.get() };
    let registry = if port.miniport_registry_path.is_null() {
        dxgk_sys::UNICODE_STRING::default()
    } else {
        // SAFETY: rgpu's registry path (from its DriverEntry) lives as long as the driver.
        unsafe { *port.miniport_registry_path }
    };
    let out = DXGK_DEVICE_INFO {
        MiniportDeviceContext: m.start_info_context,
        PhysicalDeviceObject: port.pdo,
        DeviceRegistryPath: registry,
        TranslatedResourceList: &mut m.resources,
        SystemMemorySize: LARGE_INTEGER { QuadPart: 8 << 30 },
        HighestPhysicalAddress: LARGE_INTEGER {
            QuadPart: (1 << 39) - 1,
        },
        ..Default::default()
    };
    // SAFETY: `info` is rgpu's writable DXGK_DEVICE_INFO.
    unsafe { info.write(out) };
    STATUS_SUCCESS
}

unsafe extern "system" fn map_memory(
    h: HANDLE,
    translated: PHYSICAL_ADDRESS,
    length: ULONG,
    in_io_space: BOOLEAN,
    map_to_user: BOOLEAN,
    _cache: MEMORY_CACHING_TYPE,
    va: *mut PVOID,
) -> NTSTATUS {
    MAP_MEMORY_CALLS.fetch_add(1, Ordering::Relaxed);
    if !check_handle(h, "MapMemory") || va.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: reading the QuadPart view of a LARGE_INTEGER passed by value.
    let start = unsafe { translated.QuadPart };
    let end = start.saturating_add(i64::from(length));
    if in_io_space != 0
        || map_to_user != 0
        || start < MMIO_PHYS
        || end > MMIO_PHYS + i64::from(regs::BAR_SIZE)
    {
        ERRORS.fetch_add(1, Ordering::Relaxed);
        say!(
            "callback MapMemory: {:#x}+{:#x} is not the BAR",
            start,
            length
        );
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: short read; rgpu is blocked in this callback.
    let mmio = unsafe { ALLOCS.get() }.mmio;
    // SAFETY: `va` is rgpu's out-pointer; the offset stays inside the BAR block.
    unsafe { *va = mmio.wrapping_add((start - MMIO_PHYS) as usize).cast() };
    STATUS_SUCCESS
}

unsafe extern "system" fn unmap_memory(h: HANDLE, _va: PVOID) -> NTSTATUS {
    check_handle(h, "UnmapMemory");
    STATUS_SUCCESS
}

unsafe extern "system" fn read_device_space(
    h: HANDLE,
    _data_type: ULONG,
    buffer: PVOID,
    _offset: ULONG,
    length: ULONG,
    bytes_read: PULONG,
) -> NTSTATUS {
    if !check_handle(h, "ReadDeviceSpace") || buffer.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    // No PCI config space is modelled: reads return zeros.
    // SAFETY: `buffer` holds `length` bytes (callback contract).
    unsafe { core::ptr::write_bytes(buffer.cast::<u8>(), 0, length as usize) };
    if !bytes_read.is_null() {
        // SAFETY: optional out-pointer.
        unsafe { *bytes_read = length };
    }
    STATUS_SUCCESS
}

unsafe extern "system" fn write_device_space(
    h: HANDLE,
    _data_type: ULONG,
    _buffer: PVOID,
    _offset: ULONG,
    length: ULONG,
    written: PULONG,
) -> NTSTATUS {
    check_handle(h, "WriteDeviceSpace");
    if !written.is_null() {
        // SAFETY: optional out-pointer.
        unsafe { *written = length };
    }
    STATUS_SUCCESS
}

unsafe extern "system" fn log_etw_event(
    _guid: *const GUID,
    _ty: UCHAR,
    _size: USHORT,
    _buf: PVOID,
) {
}

fn free_slot(m: &mut Memory) -> Option<usize> {
    m.allocs.iter().position(|a| a.kind == Kind::Free)
}

fn slot_of(m: &Memory, handle: HANDLE, kind: Kind) -> Option<usize> {
    let i = (handle as usize).checked_sub(1)?;
    (i < MAX_ALLOCS && m.allocs[i].kind == kind).then_some(i)
}

unsafe extern "system" fn allocate_pages_for_mdl(
    h: HANDLE,
    args: *mut DXGKARGCB_ALLOCATEPAGESFORMDL,
) -> NTSTATUS {
    if !check_handle(h, "AllocatePagesForMdl") || args.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: rgpu's argument structure, valid for the call.
    let a = unsafe { &mut *args };
    let bytes = a.TotalBytes;
    if bytes == 0 || bytes % PAGE != 0 || bytes > (4 << 30) - PAGE {
        ERRORS.fetch_add(1, Ordering::Relaxed);
        say!("callback AllocatePagesForMdl: bad TotalBytes {:#x}", bytes);
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: short access; no call into rgpu follows while it is held.
    let m = unsafe { ALLOCS.get() };
    let pages = bytes / PAGE;
    let pfn = m.next_pfn;
    // SAFETY: reading the QuadPart view of a LARGE_INTEGER.
    let high = unsafe { a.HighAddress.QuadPart } as u64;
    if high != 0 && ((pfn + pages as u64) << 12) - 1 > high {
        say!(
            "callback AllocatePagesForMdl: above HighAddress {:#x}",
            high
        );
        return STATUS_NO_MEMORY;
    }
    let Some(slot) = free_slot(m) else {
        return STATUS_NO_MEMORY;
    };
    let Some((raw, cpu)) = alloc_pages(bytes) else {
        return STATUS_NO_MEMORY;
    };
    // Wine cannot map MDLs (MmMapLockedPagesSpecifyCache is a stub), so it is handed out
    // already mapped, as Dxgkrnl may.
    let flags = dxgk_sys::MDL_MAPPED_TO_SYSTEM_VA | dxgk_sys::MDL_PAGES_LOCKED;
    let Some(mdl) = build_mdl(cpu, pages, pfn, flags) else {
        pool_free(raw);
        return STATUS_NO_MEMORY;
    };
    m.next_pfn = pfn + pages as u64 + 1; // one-page hole between allocations
    m.allocs[slot] = Alloc {
        kind: Kind::Pages,
        raw,
        cpu,
        bytes,
        mdl,
        pfn,
    };
    a.hMemoryHandle = (slot + 1) as HANDLE;
    a.pMdl = mdl;
    STATUS_SUCCESS
}

unsafe extern "system" fn free_pages_from_mdl(
    h: HANDLE,
    args: *const DXGKARGCB_FREEPAGESFROMMDL,
) -> NTSTATUS {
    if !check_handle(h, "FreePagesFromMdl") || args.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: rgpu's argument structure.
    let handle = unsafe { (*args).hMemoryHandle };
    // SAFETY: short access.
    let m = unsafe { ALLOCS.get() };
    let Some(i) = slot_of(m, handle, Kind::Pages) else {
        ERRORS.fetch_add(1, Ordering::Relaxed);
        say!("callback FreePagesFromMdl: unknown handle {:p}", handle);
        return STATUS_INVALID_PARAMETER;
    };
    if m.mappings.contains(&m.allocs[i].mdl) {
        ERRORS.fetch_add(1, Ordering::Relaxed);
        say!("callback FreePagesFromMdl: pages still mapped to the IOMMU");
    }
    free_mdl(m.allocs[i].mdl);
    pool_free(m.allocs[i].raw);
    m.allocs[i] = FREE;
    STATUS_SUCCESS
}

unsafe extern "system" fn map_mdl_to_iommu(
    h: HANDLE,
    args: *mut DXGKARGCB_MAPMDLTOIOMMU,
) -> NTSTATUS {
    if !check_handle(h, "MapMdlToIoMmu") || args.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: rgpu's argument structure (pMdl in, hMemoryHandle out).
    let a = unsafe { &mut *args };
    if a.pMdl.is_null() {
        ERRORS.fetch_add(1, Ordering::Relaxed);
        say!("callback MapMdlToIoMmu: NULL MDL");
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: short access.
    let m = unsafe { ALLOCS.get() };
    if !m
        .allocs
        .iter()
        .any(|x| x.kind == Kind::Pages && x.mdl == a.pMdl)
    {
        // A driver-built MDL (e.g. over nonpaged pool): legal on Windows; its PFNs are whatever
        // the driver put there (under Wine, MmBuildMdlForNonPagedPool is a stub that fills
        // nothing).
        say!(
            "callback MapMdlToIoMmu: driver-owned MDL {:p} (not from AllocatePagesForMdl)",
            a.pMdl
        );
    }
    let Some(i) = m.mappings.iter().position(|p| p.is_null()) else {
        return STATUS_NO_MEMORY;
    };
    m.mappings[i] = a.pMdl;
    a.hMemoryHandle = (MAP_HANDLE_BASE + i) as HANDLE;
    STATUS_SUCCESS
}

unsafe extern "system" fn unmap_mdl_from_iommu(
    h: HANDLE,
    args: *const DXGKARGCB_UNMAPMDLFROMIOMMU,
) {
    if !check_handle(h, "UnmapMdlFromIoMmu") || args.is_null() {
        return;
    }
    // SAFETY: rgpu's argument structure.
    let handle = unsafe { (*args).hMemoryHandle } as usize;
    // SAFETY: short access.
    let m = unsafe { ALLOCS.get() };
    match handle.checked_sub(MAP_HANDLE_BASE) {
        Some(i) if i < MAX_MAPPINGS && !m.mappings[i].is_null() => {
            m.mappings[i] = core::ptr::null_mut()
        }
        _ => {
            ERRORS.fetch_add(1, Ordering::Relaxed);
            say!(
                "callback UnmapMdlFromIoMmu: {:#x} is not a live mapping handle",
                handle
            );
        }
    }
}

unsafe extern "system" fn allocate_contiguous_memory(
    h: HANDLE,
    args: *mut DXGKARGCB_ALLOCATECONTIGUOUSMEMORY,
) -> NTSTATUS {
    if !check_handle(h, "AllocateContiguousMemory") || args.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: rgpu's argument structure.
    let a = unsafe { &mut *args };
    let bytes = a.NumberOfBytes;
    if bytes == 0 {
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: short access.
    let m = unsafe { ALLOCS.get() };
    let Some(slot) = free_slot(m) else {
        return STATUS_NO_MEMORY;
    };
    let Some((raw, cpu)) = alloc_pages(bytes) else {
        return STATUS_NO_MEMORY;
    };
    m.allocs[slot] = Alloc {
        kind: Kind::Contiguous,
        raw,
        cpu,
        bytes,
        ..FREE
    };
    a.hMemoryHandle = (slot + 1) as HANDLE;
    a.pMemory = cpu.cast();
    STATUS_SUCCESS
}

unsafe extern "system" fn free_contiguous_memory(
    h: HANDLE,
    args: *const DXGKARGCB_FREECONTIGUOUSMEMORY,
) -> NTSTATUS {
    if !check_handle(h, "FreeContiguousMemory") || args.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: rgpu's argument structure.
    let handle = unsafe { (*args).hMemoryHandle };
    // SAFETY: short access.
    let m = unsafe { ALLOCS.get() };
    let Some(i) = slot_of(m, handle, Kind::Contiguous) else {
        ERRORS.fetch_add(1, Ordering::Relaxed);
        say!("callback FreeContiguousMemory: unknown handle {:p}", handle);
        return STATUS_INVALID_PARAMETER;
    };
    pool_free(m.allocs[i].raw);
    m.allocs[i] = FREE;
    STATUS_SUCCESS
}

/// CPU address of logical address `addr` if it lies in a page allocation (the logical-address
/// table lookup for device-side checks of what rgpu points the device at).
#[allow(dead_code)]
pub fn logical_to_cpu(addr: u64) -> Option<*mut u8> {
    // SAFETY: short read; no call into rgpu is in progress.
    let m = unsafe { ALLOCS.get() };
    m.allocs.iter().find_map(|a| {
        let base = a.pfn << 12;
        (a.kind == Kind::Pages && addr >= base && addr < base + a.bytes as u64)
            .then(|| a.cpu.wrapping_add((addr - base) as usize))
    })
}
