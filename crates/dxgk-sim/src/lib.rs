//! dxgk-sim: a user-mode stand-in for the Windows kernel, Dxgkrnl and the IOMMU, so that WDDM
//! miniports written against `dxgk-sys` run — unmodified — inside host tests.
//!
//! * The kernel imports `dxgk-sys` declares are defined here (`#[no_mangle] extern "system"`),
//!   and the variadic ones in a small C shim (`csrc/variadic.c`).
//! * Many independent [`Machine`]s can live in one process (tests run in parallel): each thread
//!   has a *current machine*, set by [`Machine::enter`], and every kernel call acts on it.
//! * Strict where Windows is strict: every rule violation becomes a [`Finding`] naming the rule,
//!   the call and the driver's call site; [`Machine::assert_clean`] fails a test on any.
//!
//! # What is simulated
//!
//! * **ntoskrnl** ([`ntoskrnl`], [`memory::mm`]): tagged pool with guards and fill patterns, MDLs
//!   (IoAllocateMdl, MmBuildMdlForNonPagedPool, MmMapLockedPagesSpecifyCache, …), spin locks
//!   that really lock, events and bounded waits, DPCs (deterministic), system threads that
//!   inherit the current machine, the performance counter, IRQL per thread, debug print.
//! * **Dxgkrnl** ([`dxgkrnl`]): `DxgkInitialize` validation, the PnP sequence
//!   ([`Machine::load_driver`], [`Machine::add_adapter`], [`Machine::start_adapter`] with the
//!   QueryAdapterInfo calls Windows makes at start, stop/remove/unload with leak checks), a
//!   version-sized DXGKRNL_INTERFACE whose modelled callbacks check their documented IRQL,
//!   interrupt and DPC delivery, a [`SimDevice`] hook for device models, and
//!   [`Machine::interface_for_tests`] for testing wrappers without a driver.
//! * **Memory and IOMMU** ([`memory`], [`dxgkrnl::memory_callbacks`], [`dxgkrnl::dma`]): the
//!   six WDDM 2.4 memory callbacks with Windows' rules,
//!   one IOMMU domain per adapter in [`IommuMode::Identity`] (WDDM 2.4 isolation) or
//!   [`IommuMode::Remapped`] (WDDM 3.0 DMA remapping), device DMA through [`Dma`] with faults
//!   recorded. The modelling choices (what an MDL's PFN array holds in each mode, what the driver
//!   cannot discover) are documented in [`memory`].
//! * **User mode** ([`kmt`]): a D3DKMT-shaped front end — the calls a client makes through
//!   gdi32 (adapters, devices, CreateAllocation2 / OpenResource / DestroyAllocation2, GPU VA,
//!   residency, contexts, submissions, monitored fences, Lock2, Escape) with per-process handle
//!   checks, routed into the miniport's DDIs the way Dxgkrnl and VidMm route them.
//! * **Low resources** ([`fault`]): every failable call is an injection point;
//!   [`Machine::fail_nth`] and the systematic runner [`fault::systematic`].
//! * **Event recording** ([`trace`]): DDI calls, callbacks, paging operations, device runs,
//!   interrupts and DPCs with timestamps, off unless [`Machine::enable_trace`].
//!
//! # Layers
//!
//! ntoskrnl ([`ntoskrnl`], [`memory::mm`]) and the IOMMU ([`memory::iommu`]) are the lower
//! layers: they know nothing of adapters (IOMMU domains are [`DomainId`]s; DPCs that Dxgkrnl
//! queues are opaque routines). Dxgkrnl ([`dxgkrnl`]) and VidMm ([`vidmm`]) sit above and map
//! their adapters onto them. The locks and the order they are taken in: [`lock_order`].
//!
//! # Known gaps
//!
//! * Callbacks other than GetDeviceInformation, GetHandleData (allocations), Map/UnmapMemory, QueueDpc,
//!   SynchronizeExecution, NotifyInterrupt/Dpc and the six memory callbacks are NULL even inside
//!   the negotiated interface size.
//! * A panic inside a driver DDI (an `extern "system"` frame) aborts the test process, as a
//!   bugcheck stops the machine: the systematic runner only reports panics raised outside DDIs.
//! * MMIO is plain memory: the device model sees register writes only when it is synchronized
//!   (after each DDI the simulator calls, or [`Machine::service`]).
//! * Thread objects are never freed; PsTerminateSystemThread parks its host thread for good.
//!
//! Host only (std).

// Kernel exports keep their Windows names.
#![allow(non_snake_case)]
// Kernel exports and callbacks mirror Windows' safe-to-call C signatures and take raw pointers
// from the driver by contract; they validate what they can.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

#[cfg(feature = "rgpu-hw")]
pub mod devices;
pub mod dxgkrnl;
pub mod fault;
pub mod kmt;
pub mod lock_order;
pub mod machine;
pub mod memory;
pub mod ntoskrnl;
pub mod trace;
pub mod verifier;
pub mod vidmm;

pub use dxgkrnl::dma::{Dma, IommuFault};
pub use dxgkrnl::{
    AdapterConfig, AdapterId, AdapterInfo, AdapterView, InterruptNotification, PageFaultReport,
    PnpState, SimDevice,
};
pub use machine::{DebugLine, IommuMode, Machine, MachineConfig};
pub use memory::{DomainId, IommuFaultKind};
pub use trace::{TraceEvent, TraceValue, Track};
pub use verifier::{Finding, Rule};
pub use vidmm::VidmmMemory;
pub use vidmm::{
    AllocId, AllocSpec, ApertureMode, ProcessId, Vidmm, VidmmConfig, VidmmError, VidmmStats,
};
