//! What the driver counts, for the escape interface (`rgpu_abi::escape`, code Counters): the
//! numbers a client (or a test) reads to see that allocations are balanced and that paging
//! and submission happened.

#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicU64, Ordering};

/// Per-adapter counters. Relaxed atomics: each is a statistic, none orders anything.
#[derive(Default)]
pub struct Counters {
    allocations_created: AtomicU64,
    allocations_destroyed: AtomicU64,
    allocation_bytes_live: AtomicU64,
    opens_live: AtomicU64,
    paging_builds: AtomicU64,
    submissions: AtomicU64,
    escapes: AtomicU64,
}

impl Counters {
    /// An allocation of `bytes` was created.
    pub fn allocation_created(&self, bytes: u64) {
        self.allocations_created.fetch_add(1, Ordering::Relaxed);
        self.allocation_bytes_live
            .fetch_add(bytes, Ordering::Relaxed);
    }

    /// An allocation of `bytes` was destroyed.
    pub fn allocation_destroyed(&self, bytes: u64) {
        self.allocations_destroyed.fetch_add(1, Ordering::Relaxed);
        self.allocation_bytes_live
            .fetch_sub(bytes, Ordering::Relaxed);
    }

    /// A device opened an allocation.
    pub fn opened(&self) {
        self.opens_live.fetch_add(1, Ordering::Relaxed);
    }

    /// A device closed an allocation.
    pub fn closed(&self) {
        self.opens_live.fetch_sub(1, Ordering::Relaxed);
    }

    /// DxgkDdiBuildPagingBuffer was called.
    pub fn paging_build(&self) {
        self.paging_builds.fetch_add(1, Ordering::Relaxed);
    }

    /// DxgkDdiSubmitCommandVirtual queued a buffer.
    pub fn submitted(&self) {
        self.submissions.fetch_add(1, Ordering::Relaxed);
    }

    /// An escape was answered.
    pub fn escaped(&self) {
        self.escapes.fetch_add(1, Ordering::Relaxed);
    }

    /// Allocations alive now.
    pub fn allocations_live(&self) -> u64 {
        let created = self.allocations_created.load(Ordering::Relaxed);
        created.wrapping_sub(self.allocations_destroyed.load(Ordering::Relaxed))
    }

    /// The escape's answer, in `rgpu_abi::escape::COUNTER_NAMES` order.
    pub fn snapshot(&self, last_completed_fence: u64) -> rgpu_abi::Counters {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        rgpu_abi::Counters {
            values: [
                l(&self.allocations_created),
                l(&self.allocations_destroyed),
                self.allocations_live(),
                l(&self.allocation_bytes_live),
                l(&self.opens_live),
                l(&self.paging_builds),
                l(&self.submissions),
                last_completed_fence,
                l(&self.escapes),
            ],
        }
    }
}
