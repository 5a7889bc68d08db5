//! Fence and preemption bookkeeping, and the interrupt path that reports them: the ISR claims
//! the device's interrupt and tells Dxgkrnl what completed or faulted; the DPC acknowledges.
//!
//! Fence ids are kept in software because a device reset (TDR) zeroes FENCE_VALUE while
//! Dxgkrnl's fence ids keep counting: the faulting submission is the one after the last
//! completed fence the driver reported, not after the register.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use dxgk::interrupt::{DpcContext, InterruptContext, Notification, PageFault};
use dxgk::NtError;
use rgpu_hw::device::FaultKind;
use rgpu_hw::regs;

use super::address_space::AddressSpaces;
use super::hardware::Started;
use super::Adapter;

/// Marks [`Fences::preempt_request`] as holding a request (fence ids are 32-bit).
const PREEMPT_PENDING: u64 = 1 << 32;

/// Submission fences and a pending preemption request.
#[derive(Default)]
pub struct Fences {
    /// Last SubmissionFenceId the ISR reported completed.
    completed: AtomicU32,
    /// Last SubmissionFenceId queued on the ring.
    submitted: AtomicU32,
    /// A PreemptCommand not yet answered: `PREEMPT_PENDING | PreemptionFenceId`, or 0.
    preempt_request: AtomicU64,
}

impl Fences {
    /// The last SubmissionFenceId reported completed.
    pub fn completed(&self) -> u32 {
        self.completed.load(Ordering::Relaxed)
    }

    /// The last SubmissionFenceId queued on the ring.
    pub fn submitted(&self) -> u32 {
        self.submitted.load(Ordering::Relaxed)
    }

    /// Records `fence` as queued.
    pub fn set_submitted(&self, fence: u32) {
        self.submitted.store(fence, Ordering::Relaxed);
    }

    /// Records a PreemptCommand to answer once the ring drains.
    pub fn request_preemption(&self, preemption_fence: u32) {
        self.preempt_request.store(
            PREEMPT_PENDING | u64::from(preemption_fence),
            Ordering::Release,
        );
    }

    /// After a device reset: everything submitted before it completed or was aborted with the
    /// old ring, so a fault from now on belongs to a later submission; and a reset ends any
    /// preemption in flight (VidSch restarts scheduling from scratch).
    pub fn reset(&self) {
        self.completed.store(self.submitted(), Ordering::Relaxed);
        self.preempt_request.store(0, Ordering::Relaxed);
    }

    /// Takes the pending preemption request if everything submitted has completed at
    /// `completed`; returns its PreemptionFenceId.
    fn take_preemption(&self, completed: u32) -> Option<u32> {
        let request = self.preempt_request.load(Ordering::Acquire);
        if request & PREEMPT_PENDING == 0
            || completed != self.submitted()
            || self
                .preempt_request
                .compare_exchange(request, 0, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return None;
        }
        Some(request as u32)
    }
}

impl Adapter {
    /// DxgkDdiInterruptRoutine (DIRQL): claims and acknowledges the device's interrupt, reports
    /// completed fences (DMA_COMPLETED), GPU page faults (DMA_PAGE_FAULTED) and other faults
    /// (DMA_FAULTED) to Dxgkrnl, and queues the DPC. Returns whether the interrupt was ours.
    pub fn interrupt(&self, isr: &InterruptContext) -> bool {
        let Some(s) = self.hardware() else {
            return false;
        };
        let pending = s.mmio.read(regs::INT_STATUS) & s.mmio.read(regs::INT_ENABLE);
        if pending == 0 || pending == u32::MAX {
            return false;
        }
        s.mmio.write(regs::INT_ACK, pending);
        let notify = |n: Notification| {
            // A missing callback cannot be reported from DIRQL; StartDevice checked the
            // interface version that has it.
            let _ = s.iface.notify_interrupt(isr, &n);
        };
        if pending & regs::INT_FENCE != 0 {
            let fence = s.mmio.read(regs::FENCE_VALUE_LO);
            let previous = self.fences.completed.swap(fence, Ordering::Relaxed);
            // A preemption NOP re-signals an already reported fence: report progress only.
            if fence != previous {
                notify(Notification::DmaCompleted { fence });
            }
            if let Some(preemption_fence) = self.fences.take_preemption(fence) {
                notify(Notification::DmaPreempted {
                    preemption_fence,
                    last_completed_fence: fence,
                });
            }
        }
        if pending & regs::INT_FAULT != 0 {
            notify(fault_notification(s, &self.fences, &self.spaces));
        }
        let _ = s.iface.queue_dpc(isr);
        true
    }

    /// DxgkDdiDpcRoutine (DISPATCH_LEVEL): tells Dxgkrnl the DPC ran.
    pub fn dpc(&self, dpc: &DpcContext) {
        if let Some(s) = &self.started {
            let _ = s.iface.notify_dpc(dpc);
        }
    }
}

/// From the ISR: the notification for the fault latched in FAULT_STATUS. Translation faults
/// (an invalid or read-only PTE, a root or VA range) and IOMMU faults are GPU page faults,
/// reported as DMA_PAGE_FAULTED with the address, level, access and process; malformed
/// commands or ring entries and privilege violations as DMA_FAULTED. Either way the ring has
/// halted, so the page fault asks for an engine reset.
fn fault_notification(s: &Started, fences: &Fences, spaces: &AddressSpaces) -> Notification {
    let status = s.mmio.read(regs::FAULT_STATUS);
    let address = u64::from(s.mmio.read(regs::FAULT_ADDR_LO))
        | (u64::from(s.mmio.read(regs::FAULT_ADDR_HI)) << 32);
    // The faulting buffer is the one after the last completed fence.
    let fence = fences.completed().wrapping_add(1);
    let kind = FaultKind::from_raw(status & regs::FAULT_TYPE_MASK);
    let page_fault = matches!(
        kind,
        Some(
            FaultKind::PteInvalid
                | FaultKind::WriteProtect
                | FaultKind::RootRange
                | FaultKind::VaRange
                | FaultKind::Iommu
        )
    );
    if !page_fault {
        return Notification::DmaFaulted {
            fence,
            status: NtError::GRAPHICS_GPU_EXCEPTION_ON_DEVICE,
        };
    }
    let process = if status & regs::FAULT_VIRTUAL != 0 {
        spaces.process((status >> regs::FAULT_ASID_SHIFT) & regs::FAULT_ASID_MASK)
    } else {
        None
    };
    Notification::DmaPageFaulted(PageFault {
        fence,
        address,
        level: (status >> regs::FAULT_LEVEL_SHIFT) & regs::FAULT_LEVEL_MASK,
        write: status & regs::FAULT_WRITE != 0,
        // FAULT_ADDR is then the logical address the IOMMU refused.
        iommu: kind == Some(FaultKind::Iommu),
        process,
        engine_reset_required: true,
    })
}
