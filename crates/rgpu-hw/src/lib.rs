//! The **rgpu device**: the programming model of the small GPU that the `rgpu` WDDM driver
//! drives, and an executable model of it.
//!
//! The normative specification is `docs/rgpu-device.md`; the constants here mirror it.
//!
//! - [`regs`]: MMIO register offsets, bits and reset values.
//! - [`ring`]: the ring-entry format (16-byte "execute this command buffer" entries).
//! - [`cmd`]: the command format, a no-panic, no-alloc [`cmd::Encoder`] and a [`cmd::decode`]r.
//! - [`pte`]: the page-table geometry (4 levels × 512 entries, 48-bit VA) and the 64-bit entry.
//! - [`bus`]: the [`bus::DmaBus`] trait through which the model performs every memory access.
//! - [`mmu`]: the page-table walker and the TLB (which really caches translations).
//! - [`device`]: [`device::Device`], the registers and the command processor.
//!
//! The driver uses only the constants, [`pte`], [`ring`] and [`cmd`]; the simulator uses the
//! whole model. The crate is `no_std` and uses no `alloc`; its only `unsafe` code is inside
//! [`device::Device::init_in_place`] (a driver builds the ~14 KiB model in its pool block, not
//! on its kernel stack); everything else is safe code (`deny(unsafe_code)`).
#![no_std]
#![deny(unsafe_code)]
#![deny(missing_docs)]

#[cfg(test)]
extern crate std;

pub mod bus;
pub mod cmd;
pub mod device;
pub mod mmu;
pub mod pte;
pub mod regs;
pub mod ring;

pub use bus::{DmaBus, DmaFault, DmaFaultKind, DmaSource};
pub use device::{Device, Fault, FaultKind, RunOutcome, RunState, Stats};
