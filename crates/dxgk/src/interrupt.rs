//! Interrupt-time callbacks as typed calls: what the ISR tells Dxgkrnl ([`Notification`]) and
//! the context tokens that say where a call may be made.
//!
//! `DxgkCbNotifyInterrupt` and `DxgkCbQueueDpc` may only be called from the ISR (or a
//! `DxgkCbSynchronizeExecution` callback, which runs at the same DIRQL); `DxgkCbNotifyDpc`
//! only from the DPC. The tokens [`InterruptContext`] and [`DpcContext`] are created by the
//! DDI entry layer at the top of those routines and cannot leave the thread (`!Send`).

use core::marker::PhantomData;

use dxgk_sys as sys;

use crate::handle::DxgkProcessHandle;
use crate::interface::{DxgkInterface, Unavailable};
use crate::{NtError, NtResult};

/// Proof that the caller runs in the adapter's interrupt routine (DIRQL, interrupt spin lock
/// held by the system).
#[derive(Debug)]
pub struct InterruptContext {
    _not_send: PhantomData<*mut ()>,
}

impl InterruptContext {
    /// # Safety
    /// Only in `DxgkDdiInterruptRoutine` (or a SynchronizeExecution callback) of the adapter
    /// whose interface the token is used with, and only for the duration of that call.
    pub unsafe fn assume() -> Self {
        Self {
            _not_send: PhantomData,
        }
    }
}

/// Proof that the caller runs in the adapter's `DxgkDdiDpcRoutine` (DISPATCH_LEVEL).
#[derive(Debug)]
pub struct DpcContext {
    _not_send: PhantomData<*mut ()>,
}

impl DpcContext {
    /// # Safety
    /// Only in `DxgkDdiDpcRoutine` of the adapter whose interface the token is used with.
    pub unsafe fn assume() -> Self {
        Self {
            _not_send: PhantomData,
        }
    }
}

/// A GPU page fault (DXGK_INTERRUPT_DMA_PAGE_FAULTED).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageFault {
    /// The submission that faulted.
    pub fence: u32,
    /// The GPU VA that faulted, or the logical address the IOMMU refused.
    pub address: u64,
    /// Page-table level of the failed translation.
    pub level: u32,
    /// The access was a write.
    pub write: bool,
    /// The IOMMU refused the access (`address` is a logical address).
    pub iommu: bool,
    /// The process whose address space faulted, if known.
    pub process: Option<DxgkProcessHandle>,
    /// The engine must be reset before it runs again.
    pub engine_reset_required: bool,
}

/// What an ISR reports to Dxgkrnl.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notification {
    /// DXGK_INTERRUPT_DMA_COMPLETED up to `fence`.
    DmaCompleted { fence: u32 },
    /// DXGK_INTERRUPT_DMA_PREEMPTED.
    DmaPreempted {
        preemption_fence: u32,
        last_completed_fence: u32,
    },
    /// DXGK_INTERRUPT_DMA_FAULTED.
    DmaFaulted { fence: u32, status: NtError },
    /// DXGK_INTERRUPT_DMA_PAGE_FAULTED.
    DmaPageFaulted(PageFault),
}

impl Notification {
    /// The callback's argument block (node 0, engine 0; the rest zero).
    pub fn to_raw(&self) -> sys::DXGKARGCB_NOTIFY_INTERRUPT_DATA {
        let mut data = sys::DXGKARGCB_NOTIFY_INTERRUPT_DATA::default();
        match *self {
            Notification::DmaCompleted { fence } => {
                data.InterruptType = sys::DXGK_INTERRUPT_DMA_COMPLETED;
                data.u.DmaCompleted.SubmissionFenceId = fence;
            }
            Notification::DmaPreempted {
                preemption_fence,
                last_completed_fence,
            } => {
                data.InterruptType = sys::DXGK_INTERRUPT_DMA_PREEMPTED;
                data.u.DmaPreempted.PreemptionFenceId = preemption_fence;
                data.u.DmaPreempted.LastCompletedFenceId = last_completed_fence;
            }
            Notification::DmaFaulted { fence, status } => {
                data.InterruptType = sys::DXGK_INTERRUPT_DMA_FAULTED;
                data.u.DmaFaulted.FaultedFenceId = fence;
                data.u.DmaFaulted.Status = status.raw();
            }
            Notification::DmaPageFaulted(f) => {
                data.InterruptType = sys::DXGK_INTERRUPT_DMA_PAGE_FAULTED;
                let mut flags = 0;
                if f.engine_reset_required {
                    flags |= sys::DXGK_PAGE_FAULT_ENGINE_RESET_REQUIRED.0;
                }
                if f.write {
                    flags |= sys::DXGK_PAGE_FAULT_WRITE.0;
                }
                if f.iommu {
                    flags |= sys::DXGK_PAGE_FAULT_IOMMU.0;
                }
                if f.process.is_some() {
                    flags |= sys::DXGK_PAGE_FAULT_PROCESS_HANDLE_VALID.0;
                }
                let mut error = sys::DXGK_FAULT_ERROR_CODE::default();
                error.set_GeneralErrorCode(sys::DXGK_GENERAL_ERROR_PAGE_FAULT.0 as u32);
                data.u.DmaPageFaulted = sys::DXGKARGCB_NOTIFY_INTERRUPT_DATA_DmaPageFaulted {
                    FaultedFenceId: f.fence,
                    PageFaultFlags: sys::DXGK_PAGE_FAULT_FLAGS(flags),
                    FaultedVirtualAddress: f.address,
                    PageTableLevel: f.level,
                    FaultErrorCode: error,
                    FaultedProcessHandle: f.process.map_or(core::ptr::null_mut(), |p| p.as_raw()),
                    ..Default::default()
                };
            }
        }
        data
    }
}

impl DxgkInterface {
    /// `DxgkCbNotifyInterrupt` from the ISR.
    pub fn notify_interrupt(
        &self,
        _isr: &InterruptContext,
        notification: &Notification,
    ) -> Result<(), Unavailable> {
        let notify = self.notify_interrupt_fn()?;
        let mut data = notification.to_raw();
        // SAFETY: called from the ISR (token) with the adapter's DeviceHandle and a fully
        // initialized argument block that lives across the call.
        unsafe { notify(self.device_handle(), &mut data) };
        Ok(())
    }

    /// `DxgkCbQueueDpc` from the ISR. Returns whether the DPC was queued (false: already queued).
    pub fn queue_dpc(&self, _isr: &InterruptContext) -> Result<bool, Unavailable> {
        let queue = self.queue_dpc_fn()?;
        // SAFETY: called from the ISR (token) with the adapter's DeviceHandle.
        Ok(unsafe { queue(self.device_handle()) } != 0)
    }

    /// `DxgkCbSynchronizeExecution`: runs `f` serialized with the adapter's ISR, at its device
    /// IRQL, with an [`InterruptContext`] token, so it may notify interrupts and queue the DPC
    /// (how a software engine raises completion from its own thread). IRQL ≤ DISPATCH_LEVEL.
    /// Returns what `f` returned.
    pub fn synchronize_execution<F: FnMut(&InterruptContext) -> bool>(
        &self,
        mut f: F,
    ) -> NtResult<bool> {
        unsafe extern "system" fn trampoline<F: FnMut(&InterruptContext) -> bool>(
            context: sys::PVOID,
        ) -> sys::BOOLEAN {
            // SAFETY: `context` is the `&mut F` passed below, live and unaliased for this call.
            let f = unsafe { &mut *context.cast::<F>() };
            // SAFETY: Dxgkrnl runs this routine as the adapter's SynchronizeExecution callback.
            let isr = unsafe { InterruptContext::assume() };
            sys::BOOLEAN::from(f(&isr))
        }
        let sync = self.synchronize_execution_fn()?;
        let mut ret: sys::BOOLEAN = 0;
        let context: *mut F = &mut f;
        // SAFETY: the adapter's DeviceHandle, a routine matching PKSYNCHRONIZE_ROUTINE whose
        // context is `f`, alive across the call; `ret` is a valid out pointer.
        let st = unsafe {
            sync(
                self.device_handle(),
                Some(trampoline::<F>),
                context.cast(),
                0,
                &mut ret,
            )
        };
        crate::status::to_result(st)?;
        Ok(ret != 0)
    }

    /// `DxgkCbNotifyDpc` from the DPC.
    pub fn notify_dpc(&self, _dpc: &DpcContext) -> Result<(), Unavailable> {
        let notify = self.notify_dpc_fn()?;
        // SAFETY: called from the DPC (token) with the adapter's DeviceHandle.
        unsafe { notify(self.device_handle()) };
        Ok(())
    }
}
