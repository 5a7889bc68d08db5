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
//! Host only (std).

// Kernel exports keep their Windows names.
#![allow(non_snake_case)]
// Kernel exports and callbacks mirror Windows' safe-to-call C signatures and take raw pointers
// from the driver by contract; they validate what they can.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

pub mod dxgkrnl;
pub mod fault;
pub mod machine;
pub mod memory;
pub mod ntoskrnl;
pub mod verifier;

pub use dxgkrnl::{AdapterConfig, AdapterId, AdapterInfo, AdapterView, PnpState, SimDevice};
pub use machine::{DebugLine, IommuMode, Machine, MachineConfig};
pub use memory::{Dma, IommuFault, IommuFaultKind};
pub use verifier::{Finding, Rule};
