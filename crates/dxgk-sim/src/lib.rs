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

pub mod dxgkrnl;
pub mod machine;
pub mod ntoskrnl;
pub mod verifier;

pub use machine::{DebugLine, Machine, MachineConfig};
pub use verifier::{Finding, Rule};
