//! DPCs. Deterministic: a DPC queued while the queuing thread is below DISPATCH_LEVEL runs at
//! once (as the DPC software interrupt would fire on that processor); one queued at or above
//! DISPATCH_LEVEL runs when that thread's IRQL drops below DISPATCH_LEVEL (KeLowerIrql,
//! KeReleaseSpinLock, the end of an ISR delivered by the simulator) or at KeFlushQueuedDpcs.
//! DxgkCbQueueDpc queues the adapter's DxgkDdiDpcRoutine on the same queue.

use std::cell::Cell;

use dxgk_sys::{BOOLEAN, KDPC, PKDEFERRED_ROUTINE, PVOID};

use crate::dxgkrnl::AdapterId;
use crate::machine::{current, irql, set_irql, MachineState};
use crate::ntoskrnl::irql::require_irql_at_most;
use crate::verifier::{Finding, Rule};

/// Something waiting to run at DISPATCH_LEVEL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DpcItem {
    Kdpc(usize),
    Adapter(AdapterId),
}

const QUEUED_MARK: usize = 0xD9C0_0001;

thread_local! {
    static IN_DPC: Cell<bool> = const { Cell::new(false) };
}

pub(crate) fn queue_adapter_dpc(m: &MachineState, id: AdapterId) -> bool {
    let mut k = m.kernel();
    if k.dpc_queue.contains(&DpcItem::Adapter(id)) {
        return false;
    }
    k.dpc_queue.push_back(DpcItem::Adapter(id));
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
            DpcItem::Adapter(id) => {
                let ddi = m
                    .port()
                    .registered
                    .as_ref()
                    .and_then(|r| r.DxgkDdiDpcRoutine);
                let ctx = m.port().adapters[id.0 as usize].context;
                match ddi {
                    Some(f) => {
                        crate::trace::call(
                            m,
                            crate::trace::Track::Interrupt,
                            "DxgkDdiDpcRoutine",
                            || vec![("adapter", id.0.into())],
                            // SAFETY: the miniport's DPC routine with its adapter context.
                            || unsafe { f(ctx as PVOID) },
                        );
                    }
                    None => m.report(Finding::here(
                        Rule::DdiProtocol,
                        "DxgkCbQueueDpc",
                        "DPC queued but the driver has no DxgkDdiDpcRoutine",
                    )),
                }
                "DxgkDdiDpcRoutine"
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
