//! DDIs that are registered but not implemented yet, each logged once per adapter.

#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicU32, Ordering};

/// DDIs registered but not implemented yet; each logs once per adapter.
#[derive(Clone, Copy, Debug)]
#[repr(u32)]
pub enum Unsupported {
    CreateAllocation = 0,
    DestroyAllocation,
    DescribeAllocation,
    GetStandardAllocationDriverData,
}

/// Bit set of [`Unsupported`] DDIs an adapter has already logged.
#[derive(Default)]
pub struct LoggedOnce(AtomicU32);

impl LoggedOnce {
    /// True the first time `ddi` is reported on this adapter.
    pub fn first_time(&self, ddi: Unsupported) -> bool {
        let bit = 1u32 << ddi as u32;
        self.0.fetch_or(bit, Ordering::Relaxed) & bit == 0
    }

    /// Logs that `ddi` is not supported, once per adapter.
    pub fn report(&self, ddi: Unsupported) {
        if self.first_time(ddi) {
            rgpu_log!(
                warn,
                "{:?}: not supported yet (returns STATUS_NOT_SUPPORTED)",
                ddi
            );
        }
    }
}
