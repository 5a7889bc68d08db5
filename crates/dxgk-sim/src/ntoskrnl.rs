//! The simulated NT kernel: the exports `dxgk-sys` declares.

pub mod debug;
pub mod dpc;
pub mod irql;
pub mod pool;
pub mod routines;
pub mod sync;
