//! ntoskrnl primitives: spin locks, events and waits, DPCs, system threads, time.

mod common;

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::{lower, raise};
use dxgk_sim::{Machine, MachineConfig, Rule};
use dxgk_sys as sys;

fn machine() -> Machine {
    Machine::new(MachineConfig::windows_11_22h2())
}

/// State the test thread and two system threads share. Only `&Shared` is ever formed (a
/// `&mut` in each thread would alias: undefined behaviour Miri reports as a data race); the
/// lock, the counter it protects and the events are written through `UnsafeCell`.
struct Shared {
    lock: UnsafeCell<sys::KSPIN_LOCK>,
    counter: UnsafeCell<u64>,
    event: UnsafeCell<sys::KEVENT>,
    done: UnsafeCell<sys::KEVENT>,
    seen_irql: AtomicU32,
    pool_ok: AtomicU32,
}

/// Lock round trips per thread (fewer under Miri, which interprets every one).
const INCREMENTS: u64 = if cfg!(miri) { 100 } else { 1000 };

unsafe extern "system" fn worker(ctx: sys::PVOID) {
    // SAFETY: the test passes a `Shared` that outlives the thread (it waits for it).
    let s = unsafe { &*ctx.cast::<Shared>() };
    s.seen_irql
        .store(u32::from(sys::KeGetCurrentIrql()), Ordering::SeqCst);
    // SAFETY: the thread inherited the machine: pool works here.
    let p = unsafe { sys::ExAllocatePoolWithTag(sys::NonPagedPoolNx, 8, 0x6b726f57) };
    s.pool_ok.store(u32::from(!p.is_null()), Ordering::SeqCst);
    // SAFETY: as above.
    unsafe { sys::ExFreePoolWithTag(p, 0x6b726f57) };
    for _ in 0..INCREMENTS {
        // SAFETY: an initialized spin lock.
        let old = unsafe { sys::KeAcquireSpinLockRaiseToDpc(s.lock.get()) };
        // SAFETY: the spin lock is held: no other thread touches the counter.
        let v = unsafe { *s.counter.get() };
        std::hint::black_box(v);
        // SAFETY: as above.
        unsafe { *s.counter.get() = v + 1 };
        // SAFETY: held above.
        unsafe { sys::KeReleaseSpinLock(s.lock.get(), old) };
    }
    // SAFETY: wait for the go signal, then report done.
    unsafe {
        sys::KeWaitForSingleObject(
            s.event.get().cast(),
            sys::Executive,
            sys::KernelMode,
            0,
            std::ptr::null_mut(),
        )
    };
    // SAFETY: as above.
    unsafe { sys::KeSetEvent(s.done.get(), 0, 0) };
    // SAFETY: the thread ends itself.
    unsafe { sys::PsTerminateSystemThread(sys::STATUS_SUCCESS) };
}

fn new_event(e: &mut sys::KEVENT, ty: sys::EVENT_TYPE) {
    // SAFETY: storage for an event.
    unsafe { sys::KeInitializeEvent(e, ty, 0) };
}

#[test]
fn system_threads_inherit_the_machine_start_at_passive_and_spin_locks_exclude() {
    let m = machine();
    let mut s = Box::new(Shared {
        lock: UnsafeCell::new(0),
        counter: UnsafeCell::new(0),
        event: Default::default(),
        done: Default::default(),
        seen_irql: AtomicU32::new(99),
        pool_ok: AtomicU32::new(0),
    });
    m.enter(|| {
        new_event(s.event.get_mut(), sys::NotificationEvent);
        new_event(s.done.get_mut(), sys::NotificationEvent);
        let s: &Shared = &s;
        let ctx: sys::PVOID = core::ptr::from_ref(s).cast_mut().cast();
        let mut handles = [std::ptr::null_mut(); 2];
        for h in &mut handles {
            // SAFETY: a valid start routine and context.
            let st = unsafe {
                sys::PsCreateSystemThread(
                    h,
                    sys::THREAD_ALL_ACCESS,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    Some(worker),
                    ctx,
                )
            };
            assert_eq!(st, sys::STATUS_SUCCESS);
        }
        // Our own increments race with the workers' under the same lock.
        for _ in 0..INCREMENTS {
            // SAFETY: as in the worker.
            let old = unsafe { sys::KeAcquireSpinLockRaiseToDpc(s.lock.get()) };
            assert_eq!(sys::KeGetCurrentIrql(), sys::DISPATCH_LEVEL);
            // SAFETY: the spin lock is held.
            unsafe { *s.counter.get() += 1 };
            // SAFETY: held.
            unsafe { sys::KeReleaseSpinLock(s.lock.get(), old) };
        }
        // SAFETY: releases the workers.
        unsafe { sys::KeSetEvent(s.event.get(), 0, 0) };
        for h in handles {
            let mut obj: sys::PVOID = std::ptr::null_mut();
            // SAFETY: a live thread handle.
            let r = unsafe {
                sys::ObReferenceObjectByHandle(
                    h,
                    0,
                    std::ptr::null_mut(),
                    sys::KernelMode,
                    &mut obj,
                    std::ptr::null_mut(),
                )
            };
            assert_eq!(r, sys::STATUS_SUCCESS);
            // SAFETY: a thread object: wait for it to terminate.
            let r = unsafe {
                sys::KeWaitForSingleObject(
                    obj,
                    sys::Executive,
                    sys::KernelMode,
                    0,
                    std::ptr::null_mut(),
                )
            };
            assert_eq!(r, sys::STATUS_SUCCESS);
            // SAFETY: balanced reference and handle.
            unsafe { sys::ObfDereferenceObject(obj) };
            // SAFETY: as above.
            let r = unsafe { sys::ZwClose(h) };
            assert_eq!(r, sys::STATUS_SUCCESS);
        }
    });
    assert_eq!(s.counter.into_inner(), 3 * INCREMENTS);
    assert_eq!(s.seen_irql.load(Ordering::SeqCst), 0);
    assert_eq!(s.pool_ok.load(Ordering::SeqCst), 1);
    m.check_leaks();
    m.assert_clean();
    assert_eq!(m.callback_calls("PsCreateSystemThread"), 2);
}

#[test]
fn spin_lock_misuse_is_reported() {
    let m = machine();
    m.enter(|| {
        let mut l: sys::KSPIN_LOCK = 0;
        // SAFETY: the simulator detects the misuse instead of deadlocking.
        let old = unsafe { sys::KeAcquireSpinLockRaiseToDpc(&mut l) };
        // SAFETY: as above.
        unsafe { sys::KeAcquireSpinLockAtDpcLevel(&mut l) }; // recursive
                                                             // SAFETY: as above.
        unsafe { sys::KeReleaseSpinLock(&mut l, old) };
        // SAFETY: as above.
        unsafe { sys::KeReleaseSpinLock(&mut l, old) }; // not held
        let mut l2: sys::KSPIN_LOCK = 0;
        // SAFETY: at PASSIVE: too low.
        unsafe { sys::KeAcquireSpinLockAtDpcLevel(&mut l2) };
        // SAFETY: as above.
        unsafe { sys::KeReleaseSpinLockFromDpcLevel(&mut l2) };
    });
    let f = m.findings_of(Rule::SpinLockMisuse);
    assert_eq!(f.len(), 2, "{:#?}", m.findings());
    assert!(f[0].detail.contains("recursive"));
    assert!(f[1].detail.contains("not held"));
    assert_eq!(m.findings_of(Rule::IrqlTooLow).len(), 1);
}

#[test]
fn a_contended_spin_lock_that_is_never_released_is_a_possible_hang() {
    let m = machine();
    m.set_wait_cap(Duration::from_millis(100));
    let mut l: sys::KSPIN_LOCK = 0xdead0; // owned by some other processor forever
    m.enter(|| {
        // SAFETY: the simulator gives up after the cap.
        let old = unsafe { sys::KeAcquireSpinLockRaiseToDpc(&mut l) };
        lower(old);
    });
    assert_eq!(m.findings_of(Rule::PossibleHang).len(), 1);
}

#[test]
fn waits_time_out_and_infinite_waits_are_capped_with_a_finding() {
    let m = machine();
    m.set_wait_cap(Duration::from_millis(200));
    m.enter(|| {
        let mut e = sys::KEVENT::default();
        new_event(&mut e, sys::SynchronizationEvent);
        let obj: sys::PVOID = (&mut e as *mut sys::KEVENT).cast();
        let mut t = sys::LARGE_INTEGER::default();
        t.QuadPart = -10 * 1000 * 20; // 20 ms
        let start = Instant::now();
        // SAFETY: a valid event and timeout.
        let r =
            unsafe { sys::KeWaitForSingleObject(obj, sys::Executive, sys::KernelMode, 0, &mut t) };
        assert_eq!(r, dxgk_sim::ntoskrnl::sync::STATUS_TIMEOUT);
        assert!(start.elapsed() >= Duration::from_millis(20));
        // A synchronization event satisfies one wait and resets.
        // SAFETY: as above.
        let r = unsafe { sys::KeSetEvent(&mut e, 0, 0) };
        assert_eq!(r, 0);
        // SAFETY: as above.
        let r =
            unsafe { sys::KeWaitForSingleObject(obj, sys::Executive, sys::KernelMode, 0, &mut t) };
        assert_eq!(r, sys::STATUS_SUCCESS);
        // SAFETY: as above.
        let r = unsafe { sys::KeReadStateEvent(&mut e) };
        assert_eq!(r, 0);
        assert!(m.findings().is_empty());
        // Infinite wait on an event nobody sets: capped.
        // SAFETY: as above.
        let r = unsafe {
            sys::KeWaitForSingleObject(
                obj,
                sys::Executive,
                sys::KernelMode,
                0,
                std::ptr::null_mut(),
            )
        };
        assert_eq!(r, dxgk_sim::ntoskrnl::sync::STATUS_TIMEOUT);
        // A non-zero wait at DISPATCH_LEVEL is an IRQL violation; a zero-timeout poll is fine.
        let old = raise(sys::DISPATCH_LEVEL);
        let mut zero = sys::LARGE_INTEGER::default();
        // SAFETY: as above.
        unsafe { sys::KeWaitForSingleObject(obj, sys::Executive, sys::KernelMode, 0, &mut zero) };
        // SAFETY: as above.
        unsafe { sys::KeWaitForSingleObject(obj, sys::Executive, sys::KernelMode, 0, &mut t) };
        lower(old);
    });
    assert_eq!(
        m.findings_of(Rule::PossibleHang).len(),
        1,
        "{:#?}",
        m.findings()
    );
    assert_eq!(
        m.findings_of(Rule::IrqlTooHigh).len(),
        1,
        "{:#?}",
        m.findings()
    );
}

struct DpcLog {
    runs: Vec<(usize, sys::KIRQL)>,
}

unsafe extern "system" fn deferred(
    _dpc: *mut sys::KDPC,
    ctx: sys::PVOID,
    a1: sys::PVOID,
    _a2: sys::PVOID,
) {
    // SAFETY: the test's log, alive while DPCs run.
    let log = unsafe { &mut *ctx.cast::<DpcLog>() };
    log.runs.push((a1 as usize, sys::KeGetCurrentIrql()));
}

#[test]
fn dpcs_run_at_dispatch_deterministically() {
    let m = machine();
    let mut log = DpcLog { runs: Vec::new() };
    m.enter(|| {
        let mut dpc = sys::KDPC::default();
        // SAFETY: storage for a DPC and a routine.
        unsafe { sys::KeInitializeDpc(&mut dpc, Some(deferred), (&mut log as *mut DpcLog).cast()) };
        // At PASSIVE: runs at once.
        // SAFETY: an initialized DPC.
        let r = unsafe { sys::KeInsertQueueDpc(&mut dpc, 1 as sys::PVOID, std::ptr::null_mut()) };
        assert_eq!(r, 1);
        assert_eq!(log.runs, [(1, sys::DISPATCH_LEVEL)]);
        // At DISPATCH: deferred until the IRQL drops; a second insert is refused.
        let old = raise(sys::DISPATCH_LEVEL);
        // SAFETY: as above.
        let r = unsafe { sys::KeInsertQueueDpc(&mut dpc, 2 as sys::PVOID, std::ptr::null_mut()) };
        assert_eq!(r, 1);
        // SAFETY: as above.
        let r = unsafe { sys::KeInsertQueueDpc(&mut dpc, 3 as sys::PVOID, std::ptr::null_mut()) };
        assert_eq!(r, 0);
        assert_eq!(log.runs.len(), 1);
        lower(old);
        assert_eq!(log.runs, [(1, 2), (2, 2)]);
        // Removed before it ran.
        let old = raise(sys::DISPATCH_LEVEL);
        // SAFETY: as above.
        unsafe { sys::KeInsertQueueDpc(&mut dpc, 4 as sys::PVOID, std::ptr::null_mut()) };
        // SAFETY: as above.
        let r = unsafe { sys::KeRemoveQueueDpc(&mut dpc) };
        assert_eq!(r, 1);
        lower(old);
        // SAFETY: PASSIVE.
        unsafe { sys::KeFlushQueuedDpcs() };
    });
    assert_eq!(log.runs.len(), 2);
    m.assert_clean();
}

#[test]
fn thread_creation_is_an_injection_point_and_leaked_handles_are_reported() {
    unsafe extern "system" fn nothing(_: sys::PVOID) {}
    let m = machine();
    m.enter(|| {
        let mut h: sys::HANDLE = std::ptr::null_mut();
        m.fail_nth(1);
        // SAFETY: valid arguments.
        let s = unsafe {
            sys::PsCreateSystemThread(
                &mut h,
                0,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                Some(nothing),
                std::ptr::null_mut(),
            )
        };
        assert_eq!(s, sys::STATUS_INSUFFICIENT_RESOURCES);
        // SAFETY: as above.
        let s = unsafe {
            sys::PsCreateSystemThread(
                &mut h,
                0,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                Some(nothing),
                std::ptr::null_mut(),
            )
        };
        assert_eq!(s, sys::STATUS_SUCCESS);
        // BUG: the handle is never closed.
    });
    std::thread::sleep(Duration::from_millis(50));
    m.check_resource_leaks();
    let f = m.findings_of(Rule::ResourceLeak);
    assert_eq!(f.len(), 1, "{f:#?}");
    assert!(f[0].detail.contains("never closed"));
}

#[test]
fn the_performance_counter_is_monotonic_at_10_mhz() {
    let m = machine();
    m.enter(|| {
        let mut f = sys::LARGE_INTEGER::default();
        // SAFETY: valid out pointer.
        let a = unsafe { sys::KeQueryPerformanceCounter(&mut f) };
        // SAFETY: busy wait.
        unsafe { sys::KeStallExecutionProcessor(200) };
        // SAFETY: NULL frequency is allowed.
        let b = unsafe { sys::KeQueryPerformanceCounter(std::ptr::null_mut()) };
        // SAFETY: plain integers.
        let a = unsafe { a.QuadPart };
        // SAFETY: plain integers.
        let b = unsafe { b.QuadPart };
        // SAFETY: plain integers.
        let f = unsafe { f.QuadPart };
        assert_eq!(f, 10_000_000);
        assert!(b - a >= 2000, "200 us at 10 MHz: {a} -> {b}");
    });
    m.assert_clean();
}

#[test]
fn inconsistent_irql_transitions_and_unsimulated_exports_are_reported() {
    let m = machine();
    m.enter(|| {
        let old = raise(sys::DISPATCH_LEVEL);
        let _ = raise(sys::APC_LEVEL); // a "raise" to a lower IRQL
        lower(old);
        // SAFETY: the simulator refuses the unsimulated export with a finding.
        let s = unsafe { sys::ZwLoadDriver(std::ptr::null_mut()) };
        assert_eq!(s, sys::STATUS_NOT_SUPPORTED);
    });
    assert_eq!(
        m.findings_of(Rule::IrqlTransition).len(),
        1,
        "{:#?}",
        m.findings()
    );
    assert_eq!(
        m.findings_of(Rule::CallbackUnavailable).len(),
        1,
        "{:#?}",
        m.findings()
    );
}
