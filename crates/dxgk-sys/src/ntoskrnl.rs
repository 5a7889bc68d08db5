//! Kernel imports: declared once, here, for every flavour.
//!
//! * Windows targets: `raw-dylib` imports of `ntoskrnl.exe` / `hal.dll` (no import library
//!   needed, so the cross flavour links on Linux).
//! * Host (Linux) builds: the declarations stay unresolved and `dxgk-sim` defines them with
//!   `#[no_mangle] extern "system"`. A host test binary that reaches driver code must link
//!   `dxgk-sim` (`use dxgk_sim as _;`) or it fails with `undefined symbol`.
//!
//! Functions that are inline code on x64 Windows rather than exports (IRQL access through CR8,
//! `KeInitializeSpinLock`, `MmGetMdlPfnArray`, register access) live in [`crate::inline`].
//!
//! Deliberately absent (the HLK import scan rejects an IOMMU-isolation driver that imports them;
//! Dxgkrnl owns page allocation and locking): `MmAllocatePagesForMdl`, `MmAllocatePagesForMdlEx`,
//! `MmAllocateContiguousMemory*`, `MmFreeContiguousMemory`, `MmFreePagesFromMdl`,
//! `MmProbeAndLockPages`. `ExAllocatePool2` is not imported either: it is missing before
//! Windows 10 2004 and under Wine, so it is resolved at run time ([`PFN_ExAllocatePool2`]).

use crate::{
    BOOLEAN, DEVICE_OBJECT, HANDLE, IO_STATUS_BLOCK, IRP, KDPC, KEVENT, KIRQL, KPRIORITY,
    KPROCESSOR_MODE, KSPIN_LOCK, LARGE_INTEGER, LONG, LONG_PTR, MDL, MEMORY_CACHING_TYPE, NTSTATUS,
    PCSTR, PHANDLE, PVOID, SIZE_T, ULONG, ULONG64, ULONG_PTR, UNICODE_STRING,
};

/// `POOL_TYPE` for `ExAllocatePoolWithTag`.
pub type POOL_TYPE = i32;
pub const NonPagedPool: POOL_TYPE = 0;
pub const PagedPool: POOL_TYPE = 1;
/// Non-executable non-paged pool (Windows 8+): what a driver should use.
pub const NonPagedPoolNx: POOL_TYPE = 512;

/// `POOL_FLAGS` for `ExAllocatePool2` (Windows 10 2004+).
pub type POOL_FLAGS = ULONG64;
pub const POOL_FLAG_UNINITIALIZED: POOL_FLAGS = 0x2;
pub const POOL_FLAG_NON_PAGED: POOL_FLAGS = 0x40;
pub const POOL_FLAG_PAGED: POOL_FLAGS = 0x100;

/// `EVENT_TYPE`.
pub type EVENT_TYPE = i32;
pub const NotificationEvent: EVENT_TYPE = 0;
pub const SynchronizationEvent: EVENT_TYPE = 1;

/// `KWAIT_REASON` (only the value drivers use).
pub type KWAIT_REASON = i32;
pub const Executive: KWAIT_REASON = 0;

/// `DEVICE_REGISTRY_PROPERTY` for `IoGetDeviceProperty` (only the value drivers here use).
pub type DEVICE_REGISTRY_PROPERTY = i32;
/// The name of the bus that enumerated the device (`ROOT`, `PCI`, …), a NUL-terminated WCHAR
/// string.
pub const DevicePropertyEnumeratorName: DEVICE_REGISTRY_PROPERTY = 15;

/// `MODE`.
pub const KernelMode: KPROCESSOR_MODE = 0;
pub const UserMode: KPROCESSOR_MODE = 1;

/// IRQL values (x64).
pub const PASSIVE_LEVEL: KIRQL = 0;
pub const APC_LEVEL: KIRQL = 1;
pub const DISPATCH_LEVEL: KIRQL = 2;
pub const HIGH_LEVEL: KIRQL = 15;

/// `DPFLTR_TYPE` component for video miniports, and the levels used with `DbgPrintEx`.
pub const DPFLTR_IHVVIDEO_ID: ULONG = 78;
pub const DPFLTR_ERROR_LEVEL: ULONG = 0;
pub const DPFLTR_WARNING_LEVEL: ULONG = 1;
pub const DPFLTR_TRACE_LEVEL: ULONG = 2;
pub const DPFLTR_INFO_LEVEL: ULONG = 3;

/// `MdlMappingNoExecute`: OR'ed into MmMapLockedPagesSpecifyCache's `Priority`.
pub const MdlMappingNoExecute: ULONG = 0x4000_0000;

/// `THREAD_ALL_ACCESS` / `FILE_ALL_ACCESS` (the values drivers pass; full rights).
pub const THREAD_ALL_ACCESS: ULONG = 0x001F_FFFF;
pub const FILE_ALL_ACCESS: ULONG = 0x001F_01FF;

/// `ExAllocatePool2`, resolved with `MmGetSystemRoutineAddress` (never imported).
pub type PFN_ExAllocatePool2 =
    unsafe extern "system" fn(Flags: POOL_FLAGS, NumberOfBytes: SIZE_T, Tag: ULONG) -> PVOID;

/// `KDEFERRED_ROUTINE`: a DPC routine, called at DISPATCH_LEVEL.
pub type PKDEFERRED_ROUTINE = Option<
    unsafe extern "system" fn(
        Dpc: *mut KDPC,
        DeferredContext: PVOID,
        SystemArgument1: PVOID,
        SystemArgument2: PVOID,
    ),
>;

/// `KSTART_ROUTINE`: a system thread's entry point, called at PASSIVE_LEVEL.
pub type PKSTART_ROUTINE = Option<unsafe extern "system" fn(StartContext: PVOID)>;

#[cfg_attr(
    target_os = "windows",
    link(name = "ntoskrnl.exe", kind = "raw-dylib", modifiers = "+verbatim")
)]
unsafe extern "C" {
    /// Debug print with a component filter. Variadic, `cdecl`. IRQL: any (≤ DIRQL).
    pub fn DbgPrintEx(ComponentId: ULONG, Level: ULONG, Format: PCSTR, ...) -> ULONG;
}

// Stack probe for frames larger than a page, called by compiler-generated prologues (MSVC
// ABI). A `/NODEFAULTLIB` driver image has no CRT to provide it; ntoskrnl exports it.
#[cfg(target_os = "windows")]
#[link(name = "ntoskrnl.exe", kind = "raw-dylib", modifiers = "+verbatim")]
unsafe extern "C" {
    /// Never called by Rust code; declared so the linker resolves the compiler's stack probes.
    pub fn __chkstk();
}

#[cfg_attr(
    target_os = "windows",
    link(name = "ntoskrnl.exe", kind = "raw-dylib", modifiers = "+verbatim")
)]
unsafe extern "system" {
    // --- pool -------------------------------------------------------------------------
    /// IRQL ≤ DISPATCH_LEVEL (non-paged pool). Deprecated on 2004+, but the only pool
    /// allocator on 1803–1909 and under Wine.
    pub fn ExAllocatePoolWithTag(PoolType: POOL_TYPE, NumberOfBytes: SIZE_T, Tag: ULONG) -> PVOID;
    /// IRQL ≤ DISPATCH_LEVEL. `Tag` must match the allocation's tag.
    pub fn ExFreePoolWithTag(P: PVOID, Tag: ULONG);
    /// PASSIVE_LEVEL. Returns NULL when the routine is not exported by this kernel.
    pub fn MmGetSystemRoutineAddress(SystemRoutineName: *mut UNICODE_STRING) -> PVOID;

    // --- spin locks (KeAcquireSpinLock is a macro for this on x64) ----------------------
    /// Raises to DISPATCH_LEVEL and acquires; returns the previous IRQL.
    pub fn KeAcquireSpinLockRaiseToDpc(SpinLock: *mut KSPIN_LOCK) -> KIRQL;
    /// Releases and lowers to `NewIrql`.
    pub fn KeReleaseSpinLock(SpinLock: *mut KSPIN_LOCK, NewIrql: KIRQL);
    /// Acquires at DISPATCH_LEVEL (caller already there).
    pub fn KeAcquireSpinLockAtDpcLevel(SpinLock: *mut KSPIN_LOCK);
    /// Releases without changing IRQL.
    pub fn KeReleaseSpinLockFromDpcLevel(SpinLock: *mut KSPIN_LOCK);

    // --- events and waits ---------------------------------------------------------------
    /// IRQL ≤ DISPATCH_LEVEL; the event must be in non-paged memory.
    pub fn KeInitializeEvent(Event: *mut KEVENT, Type: EVENT_TYPE, State: BOOLEAN);
    /// IRQL ≤ DISPATCH_LEVEL. Returns the previous signal state.
    pub fn KeSetEvent(Event: *mut KEVENT, Increment: KPRIORITY, Wait: BOOLEAN) -> LONG;
    /// IRQL ≤ DISPATCH_LEVEL.
    pub fn KeClearEvent(Event: *mut KEVENT);
    /// IRQL ≤ DISPATCH_LEVEL. Returns the previous signal state.
    pub fn KeResetEvent(Event: *mut KEVENT) -> LONG;
    /// IRQL ≤ DISPATCH_LEVEL. Returns the current signal state.
    pub fn KeReadStateEvent(Event: *mut KEVENT) -> LONG;
    /// PASSIVE/APC for a non-zero timeout; DISPATCH_LEVEL only with a zero timeout.
    pub fn KeWaitForSingleObject(
        Object: PVOID,
        WaitReason: KWAIT_REASON,
        WaitMode: KPROCESSOR_MODE,
        Alertable: BOOLEAN,
        Timeout: *mut LARGE_INTEGER,
    ) -> NTSTATUS;
    /// PASSIVE_LEVEL. `Interval` negative = relative, in 100 ns units.
    pub fn KeDelayExecutionThread(
        WaitMode: KPROCESSOR_MODE,
        Alertable: BOOLEAN,
        Interval: *mut LARGE_INTEGER,
    ) -> NTSTATUS;

    // --- DPCs ----------------------------------------------------------------------------
    /// Any IRQL.
    pub fn KeInitializeDpc(Dpc: *mut KDPC, DeferredRoutine: PKDEFERRED_ROUTINE, Context: PVOID);
    /// Any IRQL. FALSE when the DPC was already queued.
    pub fn KeInsertQueueDpc(
        Dpc: *mut KDPC,
        SystemArgument1: PVOID,
        SystemArgument2: PVOID,
    ) -> BOOLEAN;
    /// Any IRQL. TRUE when the DPC was queued and is now removed.
    pub fn KeRemoveQueueDpc(Dpc: *mut KDPC) -> BOOLEAN;
    /// PASSIVE_LEVEL. Returns after every queued DPC has run.
    pub fn KeFlushQueuedDpcs();

    // --- system threads -----------------------------------------------------------------
    /// PASSIVE_LEVEL.
    pub fn PsCreateSystemThread(
        ThreadHandle: PHANDLE,
        DesiredAccess: ULONG,
        ObjectAttributes: PVOID,
        ProcessHandle: HANDLE,
        ClientId: PVOID,
        StartRoutine: PKSTART_ROUTINE,
        StartContext: PVOID,
    ) -> NTSTATUS;
    /// PASSIVE_LEVEL; called by the thread itself. Does not return.
    pub fn PsTerminateSystemThread(ExitStatus: NTSTATUS) -> NTSTATUS;
    /// PASSIVE_LEVEL.
    pub fn ObReferenceObjectByHandle(
        Handle: HANDLE,
        DesiredAccess: ULONG,
        ObjectType: PVOID,
        AccessMode: KPROCESSOR_MODE,
        Object: *mut PVOID,
        HandleInformation: PVOID,
    ) -> NTSTATUS;
    /// IRQL ≤ DISPATCH_LEVEL.
    pub fn ObfDereferenceObject(Object: PVOID) -> LONG_PTR;
    /// PASSIVE_LEVEL.
    pub fn ZwClose(Handle: HANDLE) -> NTSTATUS;

    /// Reads a PnP property of a device from its PDO. PASSIVE_LEVEL.
    pub fn IoGetDeviceProperty(
        DeviceObject: *mut DEVICE_OBJECT,
        DeviceProperty: DEVICE_REGISTRY_PROPERTY,
        BufferLength: ULONG,
        PropertyBuffer: PVOID,
        ResultLength: *mut ULONG,
    ) -> NTSTATUS;

    // --- MDLs (driver-built ones only; Dxgkrnl allocates pages) --------------------------
    /// IRQL ≤ DISPATCH_LEVEL.
    pub fn IoAllocateMdl(
        VirtualAddress: PVOID,
        Length: ULONG,
        SecondaryBuffer: BOOLEAN,
        ChargeQuota: BOOLEAN,
        Irp: *mut IRP,
    ) -> *mut MDL;
    /// IRQL ≤ DISPATCH_LEVEL.
    pub fn IoFreeMdl(Mdl: *mut MDL);
    /// Fills the PFN array of an MDL (from IoAllocateMdl) that describes nonpaged memory and
    /// sets MDL_SOURCE_IS_NONPAGED_POOL. IRQL ≤ DISPATCH_LEVEL.
    pub fn MmBuildMdlForNonPagedPool(MemoryDescriptorList: *mut MDL);
    /// Maps an MDL's locked pages into system VA. IRQL ≤ DISPATCH_LEVEL (KernelMode). Use
    /// [`crate::MmGetSystemAddressForMdlSafe`], which skips the call for mapped MDLs.
    pub fn MmMapLockedPagesSpecifyCache(
        MemoryDescriptorList: *mut MDL,
        AccessMode: KPROCESSOR_MODE,
        CacheType: MEMORY_CACHING_TYPE,
        RequestedAddress: PVOID,
        BugCheckOnFailure: ULONG,
        Priority: ULONG,
    ) -> PVOID;
    /// Undoes MmMapLockedPagesSpecifyCache. IRQL ≤ DISPATCH_LEVEL.
    pub fn MmUnmapLockedPages(BaseAddress: PVOID, MemoryDescriptorList: *mut MDL);

    // --- the displib handshake (cross flavour's own DxgkInitialize) ----------------------
    /// PASSIVE_LEVEL.
    pub fn ZwLoadDriver(DriverServiceName: *mut UNICODE_STRING) -> NTSTATUS;
    /// PASSIVE_LEVEL.
    pub fn IoGetDeviceObjectPointer(
        ObjectName: *mut UNICODE_STRING,
        DesiredAccess: ULONG,
        FileObject: *mut PVOID,
        DeviceObject: *mut *mut DEVICE_OBJECT,
    ) -> NTSTATUS;
    /// PASSIVE_LEVEL.
    pub fn IoBuildDeviceIoControlRequest(
        IoControlCode: ULONG,
        DeviceObject: *mut DEVICE_OBJECT,
        InputBuffer: PVOID,
        InputBufferLength: ULONG,
        OutputBuffer: PVOID,
        OutputBufferLength: ULONG,
        InternalDeviceIoControl: BOOLEAN,
        Event: *mut KEVENT,
        IoStatusBlock: *mut IO_STATUS_BLOCK,
    ) -> *mut IRP;
    /// IRQL ≤ DISPATCH_LEVEL.
    pub fn IofCallDriver(DeviceObject: *mut DEVICE_OBJECT, Irp: *mut IRP) -> NTSTATUS;

    // --- fatal --------------------------------------------------------------------------
    /// Any IRQL. Stops the machine; used by the cross flavour's panic handler.
    pub fn KeBugCheckEx(
        BugCheckCode: ULONG,
        P1: ULONG_PTR,
        P2: ULONG_PTR,
        P3: ULONG_PTR,
        P4: ULONG_PTR,
    ) -> !;
}

#[cfg_attr(
    target_os = "windows",
    link(name = "hal.dll", kind = "raw-dylib", modifiers = "+verbatim")
)]
unsafe extern "system" {
    /// Any IRQL. Imported from hal.dll as the WDK does (Wine's ntoskrnl lacks it).
    pub fn KeQueryPerformanceCounter(PerformanceFrequency: *mut LARGE_INTEGER) -> LARGE_INTEGER;
    /// Any IRQL. Busy-waits `MicroSeconds`.
    pub fn KeStallExecutionProcessor(MicroSeconds: ULONG);
}
