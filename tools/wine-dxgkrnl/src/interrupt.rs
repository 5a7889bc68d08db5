//! Interrupt-time callbacks, as Dxgkrnl implements them for a software engine (coskmd's
//! pattern, which rgpu's soft mode follows):
//!
//! * `DxgkCbSynchronizeExecution` runs the miniport's routine serialized with its ISR: under
//!   the adapter's interrupt spin lock (Windows: the interrupt object's lock at DIRQL; Wine has
//!   no interrupts and IRQL stays 0, so a spin lock the port's "interrupt" path would also take
//!   stands in), and reports the routine's BOOLEAN.
//! * `DxgkCbNotifyInterrupt` and `DxgkCbQueueDpc` are legal only inside the ISR or such a
//!   routine, on the thread running it: anything else is callback misuse (counted in
//!   [`crate::callbacks::ERRORS`], which fails the run).
//! * A DPC queued there runs once the synchronized routine has returned and the lock is released
//!   — as on Windows when the caller's IRQL drops below DISPATCH_LEVEL, on the same thread (the
//!   soft engine's), the way dxgk-sim does it. DPCs of one adapter never overlap (a second spin
//!   lock), and `DxgkCbNotifyDpc` is legal only inside the DPC.
//!
//! Every notification is recorded in a small log the soft steps read from the adapter thread
//! while the engine thread writes it: atomics only.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use dxgk_sys::{
    BOOLEAN, DXGKARGCB_NOTIFY_INTERRUPT_DATA, HANDLE, KSPIN_LOCK, NTSTATUS,
    PFN_DXGKDDI_DPC_ROUTINE, PKSYNCHRONIZE_ROUTINE, PVOID, STATUS_INVALID_PARAMETER,
    STATUS_SUCCESS, ULONG,
};

use crate::callbacks::{self, ERRORS};

/// A KSPIN_LOCK in static storage, used only through Ke* routines.
struct RawSpinLock(UnsafeCell<KSPIN_LOCK>);

// SAFETY: the lock word is only accessed by KeAcquireSpinLockRaiseToDpc / KeReleaseSpinLock,
// which synchronize internally.
unsafe impl Sync for RawSpinLock {}

impl RawSpinLock {
    /// A released lock (KeInitializeSpinLock zeroes the word, so zero is the initial state).
    const fn new() -> Self {
        Self(UnsafeCell::new(0))
    }

    fn with<R>(&self, f: impl FnOnce() -> R) -> R {
        // SAFETY: a static, initialized (zero) spin lock; IRQL ≤ DISPATCH_LEVEL (Wine: 0).
        let old = unsafe { dxgk_sys::KeAcquireSpinLockRaiseToDpc(self.0.get()) };
        let r = f();
        // SAFETY: released once, by the thread that acquired it, with the IRQL it returned.
        unsafe { dxgk_sys::KeReleaseSpinLock(self.0.get(), old) };
        r
    }
}

/// The adapter's interrupt lock (what its ISR would hold).
static INTERRUPT_LOCK: RawSpinLock = RawSpinLock::new();
/// Serializes the adapter's DPC routine.
static DPC_LOCK: RawSpinLock = RawSpinLock::new();
/// Thread id inside the ISR / a SynchronizeExecution routine (0 = none).
static IN_INTERRUPT: AtomicUsize = AtomicUsize::new(0);
/// Thread id inside the DPC routine (0 = none).
static IN_DPC: AtomicUsize = AtomicUsize::new(0);
static DPC_QUEUED: AtomicBool = AtomicBool::new(false);
/// The miniport's DPC routine and the adapter context it gets (set before StartDevice).
static DPC_ROUTINE: AtomicUsize = AtomicUsize::new(0);
static CONTEXT: AtomicPtr<core::ffi::c_void> = AtomicPtr::new(core::ptr::null_mut());

/// Counters the soft steps read.
pub static SYNCHRONIZED: AtomicU32 = AtomicU32::new(0);
pub static DPCS_QUEUED: AtomicU32 = AtomicU32::new(0);
pub static DPCS_RUN: AtomicU32 = AtomicU32::new(0);
pub static DPCS_NOTIFIED: AtomicU32 = AtomicU32::new(0);

/// One recorded `DxgkCbNotifyInterrupt`.
#[derive(Clone, Copy, Default, Debug)]
pub struct Notified {
    /// DXGK_INTERRUPT_TYPE.
    pub kind: i32,
    /// DmaCompleted.SubmissionFenceId, DmaPreempted.LastCompletedFenceId or the faulted fence.
    pub fence: u32,
    /// DmaPreempted.PreemptionFenceId.
    pub preemption_fence: u32,
    /// DmaPageFaulted.FaultedVirtualAddress (a logical address with DXGK_PAGE_FAULT_IOMMU).
    pub address: u64,
}

const LOG: usize = 32;
/// Notifications recorded so far (the log keeps the first [`LOG`]).
static NOTIFIED: AtomicU32 = AtomicU32::new(0);
#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU32 = AtomicU32::new(0);
static LOG_KIND: [AtomicU32; LOG] = [ZERO; LOG];
static LOG_FENCE: [AtomicU32; LOG] = [ZERO; LOG];
static LOG_PREEMPT: [AtomicU32; LOG] = [ZERO; LOG];
#[allow(clippy::declare_interior_mutable_const)]
const ZERO64: AtomicU64 = AtomicU64::new(0);
static LOG_ADDR: [AtomicU64; LOG] = [ZERO64; LOG];

fn current_thread() -> usize {
    // SAFETY: no preconditions.
    unsafe { crate::kernel::PsGetCurrentThreadId() as usize }
}

/// Remembers the miniport's DPC routine and adapter context (before StartDevice).
pub fn prepare(dpc: Option<PFN_DXGKDDI_DPC_ROUTINE>, context: PVOID) {
    DPC_ROUTINE.store(dpc.map_or(0, |f| f as usize), Ordering::Release);
    CONTEXT.store(context, Ordering::Release);
}

/// Notifications recorded so far.
pub fn notified_count() -> u32 {
    NOTIFIED.load(Ordering::Acquire)
}

/// Recorded notification `i` (`i` < [`notified_count`] and < 32).
pub fn notified(i: u32) -> Option<Notified> {
    let i = i as usize;
    (i < LOG && (i as u32) < notified_count()).then(|| Notified {
        kind: LOG_KIND[i].load(Ordering::Acquire) as i32,
        fence: LOG_FENCE[i].load(Ordering::Acquire),
        preemption_fence: LOG_PREEMPT[i].load(Ordering::Acquire),
        address: LOG_ADDR[i].load(Ordering::Acquire),
    })
}

/// Runs the adapter's DPC if one is queued (on the calling thread, outside the interrupt lock).
fn run_queued_dpc() {
    if !DPC_QUEUED.swap(false, Ordering::AcqRel) {
        return;
    }
    let routine = DPC_ROUTINE.load(Ordering::Acquire);
    if routine == 0 {
        ERRORS.fetch_add(1, Ordering::Relaxed);
        say!("callback QueueDpc: a DPC was queued but the miniport has no DxgkDdiDpcRoutine");
        return;
    }
    // SAFETY: the value stored by `prepare` from a PFN_DXGKDDI_DPC_ROUTINE.
    let f = unsafe { core::mem::transmute::<usize, PFN_DXGKDDI_DPC_ROUTINE>(routine) };
    let context = CONTEXT.load(Ordering::Acquire);
    DPC_LOCK.with(|| {
        IN_DPC.store(current_thread(), Ordering::Release);
        // SAFETY: the miniport's DPC routine with its adapter context, serialized with itself.
        unsafe { f(context) };
        IN_DPC.store(0, Ordering::Release);
    });
    DPCS_RUN.fetch_add(1, Ordering::Relaxed);
}

pub unsafe extern "system" fn synchronize_execution(
    h: HANDLE,
    routine: PKSYNCHRONIZE_ROUTINE,
    context: PVOID,
    _message_number: ULONG,
    ret: *mut BOOLEAN,
) -> NTSTATUS {
    if !callbacks::check_handle(h, "SynchronizeExecution") {
        return STATUS_INVALID_PARAMETER;
    }
    let Some(routine) = routine else {
        ERRORS.fetch_add(1, Ordering::Relaxed);
        say!("callback SynchronizeExecution: NULL routine");
        return STATUS_INVALID_PARAMETER;
    };
    let me = current_thread();
    // From the DPC it is legal; nested in the ISR it would deadlock on Windows.
    if IN_INTERRUPT.load(Ordering::Acquire) == me {
        ERRORS.fetch_add(1, Ordering::Relaxed);
        say!("callback SynchronizeExecution: called from inside a synchronized routine");
        return STATUS_INVALID_PARAMETER;
    }
    let r = INTERRUPT_LOCK.with(|| {
        IN_INTERRUPT.store(me, Ordering::Release);
        // SAFETY: the miniport's synchronize routine with its own context, serialized with the
        // (absent) ISR by the interrupt lock.
        let r = unsafe { routine(context) };
        IN_INTERRUPT.store(0, Ordering::Release);
        r
    });
    SYNCHRONIZED.fetch_add(1, Ordering::Relaxed);
    // The caller's IRQL is back below DISPATCH_LEVEL: a DPC the routine queued runs now.
    run_queued_dpc();
    if !ret.is_null() {
        // SAFETY: optional out-pointer from the miniport.
        unsafe { *ret = r };
    }
    STATUS_SUCCESS
}

pub unsafe extern "system" fn notify_interrupt(
    h: HANDLE,
    data: *mut DXGKARGCB_NOTIFY_INTERRUPT_DATA,
) {
    if !callbacks::check_handle(h, "NotifyInterrupt") {
        return;
    }
    if IN_INTERRUPT.load(Ordering::Acquire) != current_thread() {
        ERRORS.fetch_add(1, Ordering::Relaxed);
        say!("callback NotifyInterrupt: called outside the ISR and outside SynchronizeExecution");
        return;
    }
    if data.is_null() {
        ERRORS.fetch_add(1, Ordering::Relaxed);
        say!("callback NotifyInterrupt: NULL data");
        return;
    }
    // SAFETY: the miniport's argument block, valid for the call.
    let d = unsafe { *data };
    let kind = d.InterruptType;
    let address = if kind == dxgk_sys::DXGK_INTERRUPT_DMA_PAGE_FAULTED {
        // SAFETY: the interrupt type names the union member (plain integers and a handle).
        unsafe { d.u.DmaPageFaulted }.FaultedVirtualAddress
    } else {
        0
    };
    let (fence, preemption_fence) = if kind == dxgk_sys::DXGK_INTERRUPT_DMA_COMPLETED {
        // SAFETY: the interrupt type names the union member (plain integers).
        (unsafe { d.u.DmaCompleted }.SubmissionFenceId, 0)
    } else if kind == dxgk_sys::DXGK_INTERRUPT_DMA_PREEMPTED {
        // SAFETY: as above.
        let p = unsafe { d.u.DmaPreempted };
        (p.LastCompletedFenceId, p.PreemptionFenceId)
    } else if kind == dxgk_sys::DXGK_INTERRUPT_DMA_FAULTED {
        // SAFETY: as above.
        (unsafe { d.u.DmaFaulted }.FaultedFenceId, 0)
    } else if kind == dxgk_sys::DXGK_INTERRUPT_DMA_PAGE_FAULTED {
        // SAFETY: as above.
        (unsafe { d.u.DmaPageFaulted }.FaultedFenceId, 0)
    } else {
        (0, 0)
    };
    // Writers are serialized by the interrupt lock.
    let i = NOTIFIED.load(Ordering::Acquire) as usize;
    if i < LOG {
        LOG_KIND[i].store(kind.0 as u32, Ordering::Release);
        LOG_FENCE[i].store(fence, Ordering::Release);
        LOG_PREEMPT[i].store(preemption_fence, Ordering::Release);
        LOG_ADDR[i].store(address, Ordering::Release);
    }
    NOTIFIED.store(i as u32 + 1, Ordering::Release);
}

pub unsafe extern "system" fn queue_dpc(h: HANDLE) -> BOOLEAN {
    if !callbacks::check_handle(h, "QueueDpc") {
        return 0;
    }
    if IN_INTERRUPT.load(Ordering::Acquire) != current_thread() {
        ERRORS.fetch_add(1, Ordering::Relaxed);
        say!("callback QueueDpc: called outside the ISR and outside SynchronizeExecution");
        return 0;
    }
    DPCS_QUEUED.fetch_add(1, Ordering::Relaxed);
    BOOLEAN::from(!DPC_QUEUED.swap(true, Ordering::AcqRel))
}

pub unsafe extern "system" fn notify_dpc(h: HANDLE) {
    if !callbacks::check_handle(h, "NotifyDpc") {
        return;
    }
    if IN_DPC.load(Ordering::Acquire) != current_thread() {
        ERRORS.fetch_add(1, Ordering::Relaxed);
        say!("callback NotifyDpc: called outside the adapter's DPC");
        return;
    }
    DPCS_NOTIFIED.fetch_add(1, Ordering::Relaxed);
}
