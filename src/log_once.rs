//! DDIs that are registered but refused, each logged once per adapter: the two allocation
//! DDIs Dxgkrnl calls only for display surfaces, which a render-only adapter has none of.

#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicU32, Ordering};

/// DDIs registered but refused (STATUS_NOT_SUPPORTED); each logs once per adapter.
#[derive(Clone, Copy, Debug)]
#[repr(u32)]
pub enum Unsupported {
    DescribeAllocation = 0,
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
                "{:?}: not supported on a render-only adapter (returns STATUS_NOT_SUPPORTED)",
                ddi
            );
        }
    }
}
