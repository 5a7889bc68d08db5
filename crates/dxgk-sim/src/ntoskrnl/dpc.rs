//! DPCs. Deterministic: a DPC queued while the queuing thread is below DISPATCH_LEVEL runs at
//! once (as the DPC software interrupt would fire on that processor); one queued at or above
//! DISPATCH_LEVEL runs when that thread's IRQL drops below DISPATCH_LEVEL (KeLowerIrql,
//! KeReleaseSpinLock, the end of an ISR delivered by the simulator) or at KeFlushQueuedDpcs.
//! Layers above the kernel queue their own deferred work on the same queue as a `SystemDpc`
//! (Dxgkrnl's DxgkCbQueueDpc: the adapter's DxgkDdiDpcRoutine), without the kernel knowing
//! what it runs.

use std::cell::Cell;

use dxgk_sys::{BOOLEAN, KDPC, PKDEFERRED_ROUTINE, PVOID};

use crate::machine::{current, irql, set_irql, MachineState};
use crate::ntoskrnl::irql::require_irql_at_most;
use crate::verifier::{Finding, Rule};

/// Deferred work a layer above the kernel queues (as Dxgkrnl does with a KDPC of its own):
/// `routine(machine, key)` runs at DISPATCH_LEVEL. Identified by `(name, key)`: queuing it
/// again while it is queued does nothing, as for a KDPC.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SystemDpc {
    /// What runs, for findings ("DxgkDdiDpcRoutine").
    pub(crate) name: &'static str,
    /// Which instance (Dxgkrnl: the adapter number).
    pub(crate) key: u64,
    pub(crate) routine: fn(&MachineState, u64),
}

/// Something waiting to run at DISPATCH_LEVEL.
#[derive(Clone, Copy, Debug)]
pub(crate) enum DpcItem {
    Kdpc(usize),
    System(SystemDpc),
}

impl PartialEq for DpcItem {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (DpcItem::Kdpc(a), DpcItem::Kdpc(b)) => a == b,
            (DpcItem::System(a), DpcItem::System(b)) => (a.name, a.key) == (b.name, b.key),
            _ => false,
        }
    }
}

const QUEUED_MARK: usize = 0xD9C0_0001;

thread_local! {
    static IN_DPC: Cell<bool> = const { Cell::new(false) };
}

/// Queues `dpc` unless it is queued already (then false).
pub(crate) fn queue_system_dpc(m: &MachineState, dpc: SystemDpc) -> bool {
    let mut k = m.kernel();
    let item = DpcItem::System(dpc);
    if k.dpc_queue.contains(&item) {
        return false;
    }
    k.dpc_queue.push_back(item);
    true
}

/// Runs queued DPCs if this thread is below DISPATCH_LEVEL.
pub(crate) fn run_if_below_dispatch(m: &MachineState) {
    if irql() < dxgk_sys::DISPATCH_LEVEL {
        run_dpcs(m);
    }
}

/// Drains the DPC queue on this thread at DISPATCH_LEVEL.
pub(crate) fn run_dpcs(m: &MachineState) {
    if IN_DPC.with(Cell::get) {
        return;
    }
    IN_DPC.with(|c| c.set(true));
    loop {
        let Some(item) = m.kernel().dpc_queue.pop_front() else {
            break;
        };
        let old = irql();
        set_irql(dxgk_sys::DISPATCH_LEVEL);
        let name = match item {
            DpcItem::Kdpc(p) => {
                let dpc = p as *mut KDPC;
                // SAFETY: a queued KDPC the driver keeps alive while queued (its contract).
                let d = unsafe { dpc.read() };
                // SAFETY: as above.
                unsafe { (*dpc).DpcData = std::ptr::null_mut() };
                if let Some(r) = d.DeferredRoutine {
                    let _span = crate::trace::guard(crate::trace::Track::Interrupt, "KDPC");
                    // SAFETY: the driver's deferred routine with the arguments it queued.
                    unsafe { r(dpc, d.DeferredContext, d.SystemArgument1, d.SystemArgument2) };
                }
                "deferred routine"
            }
            DpcItem::System(d) => {
                (d.routine)(m, d.key);
                d.name
            }
        };
        if irql() != dxgk_sys::DISPATCH_LEVEL {
            m.report(Finding::here(
                Rule::IrqlTransition,
                "DPC",
                format!(
                    "{name} returned at IRQL {} instead of DISPATCH_LEVEL",
                    irql()
                ),
            ));
        }
        set_irql(old);
    }
    IN_DPC.with(|c| c.set(false));
}

/// `KeInitializeDpc`. Any IRQL.
#[no_mangle]
pub extern "system" fn KeInitializeDpc(
    dpc: *mut KDPC,
    routine: PKDEFERRED_ROUTINE,
    context: PVOID,
) {
    current().count_call("KeInitializeDpc");
    let mut d = KDPC::default();
    d.u.TargetInfoAsUlong = 0x0113; // Type = DpcObject (0x13), Importance = Medium (1)
    d.DeferredRoutine = routine;
    d.DeferredContext = context;
    // SAFETY: the driver passes storage for a KDPC.
    unsafe { dpc.write(d) };
}

/// `KeInsertQueueDpc`. Any IRQL. FALSE if already queued.
#[no_mangle]
pub extern "system" fn KeInsertQueueDpc(dpc: *mut KDPC, a1: PVOID, a2: PVOID) -> BOOLEAN {
    let m = current();
    m.count_call("KeInsertQueueDpc");
    {
        let mut k = m.kernel();
        // SAFETY: an initialized KDPC.
        let queued = unsafe { (*dpc).DpcData } as usize == QUEUED_MARK;
        if queued {
            return 0;
        }
        // SAFETY: as above.
        unsafe { (*dpc).SystemArgument1 = a1 };
        // SAFETY: as above.
        unsafe { (*dpc).SystemArgument2 = a2 };
        // SAFETY: as above.
        unsafe { (*dpc).DpcData = QUEUED_MARK as PVOID };
        k.dpc_queue.push_back(DpcItem::Kdpc(dpc as usize));
    }
    run_if_below_dispatch(&m);
    1
}

/// `KeRemoveQueueDpc`. Any IRQL.
#[no_mangle]
pub extern "system" fn KeRemoveQueueDpc(dpc: *mut KDPC) -> BOOLEAN {
    let m = current();
    m.count_call("KeRemoveQueueDpc");
    let mut k = m.kernel();
    let before = k.dpc_queue.len();
    k.dpc_queue.retain(|i| *i != DpcItem::Kdpc(dpc as usize));
    if k.dpc_queue.len() != before {
        // SAFETY: an initialized KDPC.
        unsafe { (*dpc).DpcData = std::ptr::null_mut() };
        1
    } else {
        0
    }
}

/// `KeFlushQueuedDpcs`. PASSIVE_LEVEL.
#[no_mangle]
pub extern "system" fn KeFlushQueuedDpcs() {
    const CALL: &str = "KeFlushQueuedDpcs";
    let m = current();
    m.count_call(CALL);
    if require_irql_at_most(CALL, dxgk_sys::PASSIVE_LEVEL) {
        run_dpcs(&m);
    }
}
