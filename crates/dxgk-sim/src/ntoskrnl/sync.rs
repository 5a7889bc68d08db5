//! Spin locks, events, waits, system threads, handles and time.
//!
//! * Spin locks really lock (the KSPIN_LOCK word holds the owning simulated processor) and raise
//!   to DISPATCH_LEVEL. A recursive acquire (a deadlock on Windows) or a release by a processor
//!   that does not hold the lock is a [`Rule::SpinLockMisuse`] finding; a lock that cannot be
//!   taken within the wait cap is a [`Rule::PossibleHang`] finding.
//! * Events keep their state in the KEVENT's `Header.SignalState` (drivers may inspect it);
//!   waits block on a per-machine condition variable. No wait blocks forever: a wait longer
//!   than [`Machine::set_wait_cap`] (default [`DEFAULT_WAIT_CAP`]) returns STATUS_TIMEOUT with
//!   a [`Rule::PossibleHang`] finding.
//! * PsCreateSystemThread starts a host thread that inherits the current machine at
//!   PASSIVE_LEVEL. PsTerminateSystemThread marks the thread terminated (signalling waiters) and
//!   parks the host thread for good (Rust cannot unwind out of an `extern "system"` frame).
//!   Thread objects are never freed.

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use dxgk_sys::{
    BOOLEAN, DEVICE_OBJECT, DISPATCHER_HEADER, HANDLE, IO_STATUS_BLOCK, IRP, KEVENT, KIRQL,
    KPRIORITY, KPROCESSOR_MODE, KSPIN_LOCK, LARGE_INTEGER, LONG, LONG_PTR, NTSTATUS, PHANDLE,
    PKSTART_ROUTINE, PVOID, ULONG, ULONG_PTR, UNICODE_STRING,
};

use crate::fault::inject;
use crate::machine::{adopt, current, irql, set_irql, Machine, MachineState};
use crate::ntoskrnl::dpc::{run_if_below_dispatch, DpcItem};
use crate::ntoskrnl::irql::require_irql_at_most;
use crate::verifier::{driver_call_site, Finding, Rule};

/// `STATUS_TIMEOUT`.
pub const STATUS_TIMEOUT: NTSTATUS = 0x102;
/// `STATUS_INVALID_HANDLE`.
pub const STATUS_INVALID_HANDLE: NTSTATUS = 0xC000_0008_u32 as NTSTATUS;
/// Longest a simulated wait or spin may block before it is reported as a possible hang.
///
/// The bound is host time. Under Miri, which interprets every instruction 100–1000× slower, a
/// system thread that is merely being interpreted took longer than 5 s to finish, the wait on
/// it gave up with STATUS_TIMEOUT while it still ran, and the test's unwinding freed the state
/// the thread was still using (the data race Miri reported in
/// `tests/kernel.rs` `system_threads_…`): there the bound is 100× longer.
pub const DEFAULT_WAIT_CAP: Duration = if cfg!(miri) {
    Duration::from_secs(500)
} else {
    Duration::from_secs(5)
};
/// Performance counter frequency (10 MHz, as on most x64 Windows machines).
pub const PERFORMANCE_FREQUENCY: i64 = 10_000_000;

const THREAD_OBJECT: u8 = 6;

/// A simulated thread object: a dispatcher header first, as KeWaitForSingleObject expects.
#[repr(C)]
struct ThreadObject {
    header: DISPATCHER_HEADER,
}

struct ThreadInfo {
    site: String,
    refs: u32,
}

/// Per-machine scheduler state.
pub(crate) struct KernelState {
    pub(crate) dpc_queue: VecDeque<DpcItem>,
    handles: HashMap<usize, (usize, String)>,
    next_handle: usize,
    threads: HashMap<usize, ThreadInfo>,
    /// System threads blocked in KeWaitForSingleObject: thread object → the object waited on.
    waiting: HashMap<usize, usize>,
    pub(crate) wait_cap: Duration,
}

impl Default for KernelState {
    fn default() -> Self {
        Self {
            dpc_queue: VecDeque::new(),
            handles: HashMap::new(),
            next_handle: 0,
            threads: HashMap::new(),
            waiting: HashMap::new(),
            wait_cap: DEFAULT_WAIT_CAP,
        }
    }
}

impl Drop for KernelState {
    /// Frees the thread objects (the verifier reported those still referenced): without this
    /// every PsCreateSystemThread leaked a host allocation (Miri's leak check saw it).
    fn drop(&mut self) {
        for (obj, _) in self.threads.drain() {
            // SAFETY: `obj` came from `Box::into_raw` of a `Box<ThreadObject>` in
            // PsCreateSystemThread and is freed only here. Every host thread that runs driver
            // code or signals the object holds the machine alive, so none runs now.
            drop(unsafe { Box::from_raw(obj as *mut ThreadObject) });
        }
    }
}

impl KernelState {
    /// True when no system thread can make progress by itself: every live one is blocked in
    /// KeWaitForSingleObject on an object that is not signalled, and no DPC is queued. Only a
    /// new signal (a doorbell, a stop request) can wake them.
    fn system_threads_quiescent(&self) -> bool {
        self.dpc_queue.is_empty()
            && self.threads.keys().all(|&obj| {
                signal_state(obj as *mut DISPATCHER_HEADER).load(Ordering::SeqCst) != 0
                    || self.waiting.get(&obj).is_some_and(|&on| {
                        signal_state(on as *mut DISPATCHER_HEADER).load(Ordering::SeqCst) <= 0
                    })
            })
    }

    pub(crate) fn leak_findings(&self, call: &'static str) -> Vec<Finding> {
        let mut out = Vec::new();
        for (h, (_, site)) in &self.handles {
            out.push(Finding {
                rule: Rule::ResourceLeak,
                call,
                detail: format!("kernel handle {h:#x} never closed (ZwClose)"),
                driver_site: format!("created at {site}"),
            });
        }
        for (obj, t) in &self.threads {
            if signal_state(*obj as *mut DISPATCHER_HEADER).load(Ordering::SeqCst) == 0 {
                out.push(Finding {
                    rule: Rule::ResourceLeak,
                    call,
                    detail: format!("system thread {obj:#x} still running"),
                    driver_site: format!("created at {}", t.site),
                });
            }
            if t.refs > 0 {
                out.push(Finding {
                    rule: Rule::ResourceLeak,
                    call,
                    detail: format!("{} reference(s) to thread object {obj:#x} never released (ObDereferenceObject)", t.refs),
                    driver_site: format!("created at {}", t.site),
                });
            }
        }
        out
    }
}

impl Machine {
    /// Sets the bound on simulated waits and spins (default [`DEFAULT_WAIT_CAP`]).
    pub fn set_wait_cap(&self, cap: Duration) {
        self.state.kernel().wait_cap = cap;
    }

    /// Runs every queued DPC now (on this thread, at DISPATCH_LEVEL).
    pub fn run_dpcs(&self) {
        self.enter(|| crate::ntoskrnl::dpc::run_dpcs(&self.state));
    }
}

fn signal_state<'a>(h: *mut DISPATCHER_HEADER) -> &'a AtomicI32 {
    let p = h
        .cast::<u8>()
        .wrapping_add(std::mem::offset_of!(DISPATCHER_HEADER, SignalState))
        .cast::<i32>();
    // SAFETY: `h` is a dispatcher header the driver (or we) keep alive; SignalState is a 4-byte
    // aligned LONG that the simulator only accesses atomically.
    unsafe { AtomicI32::from_ptr(p) }
}

fn object_type(h: *mut DISPATCHER_HEADER) -> u8 {
    // SAFETY: as above; the type byte is the first byte of the header.
    unsafe { h.cast::<u8>().read() }
}

// ---- spin locks --------------------------------------------------------------------------------

static NEXT_TOKEN: AtomicUsize = AtomicUsize::new(1);

thread_local! {
    static TOKEN: Cell<usize> = const { Cell::new(0) };
}

fn processor_token() -> usize {
    TOKEN.with(|t| {
        if t.get() == 0 {
            t.set(NEXT_TOKEN.fetch_add(1, Ordering::Relaxed) << 4 | 1);
        }
        t.get()
    })
}

fn lock_word<'a>(l: *mut KSPIN_LOCK) -> &'a AtomicUsize {
    // SAFETY: a KSPIN_LOCK is a pointer-sized, aligned word in the driver's non-paged memory,
    // only accessed through these functions.
    unsafe { AtomicUsize::from_ptr(l) }
}

fn acquire(m: &MachineState, call: &'static str, l: *mut KSPIN_LOCK) {
    let w = lock_word(l);
    let me = processor_token();
    if w.load(Ordering::SeqCst) == me {
        m.report(Finding::here(
            Rule::SpinLockMisuse,
            call,
            format!("recursive acquire of spin lock {l:p} (deadlock on Windows)"),
        ));
        return;
    }
    let start = Instant::now();
    let cap = m.kernel().wait_cap;
    while w
        .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        if start.elapsed() > cap {
            m.report(Finding::here(
                Rule::PossibleHang,
                call,
                format!("spin lock {l:p} not acquired within {cap:?}"),
            ));
            return;
        }
        std::thread::yield_now();
    }
}

fn release(m: &MachineState, call: &'static str, l: *mut KSPIN_LOCK) {
    let w = lock_word(l);
    let me = processor_token();
    if w.compare_exchange(me, 0, Ordering::Release, Ordering::Relaxed)
        .is_err()
    {
        m.report(Finding::here(
            Rule::SpinLockMisuse,
            call,
            format!("spin lock {l:p} released but not held by this processor"),
        ));
    }
}

/// `KeAcquireSpinLockRaiseToDpc`. IRQL ≤ DISPATCH_LEVEL.
#[no_mangle]
pub extern "system" fn KeAcquireSpinLockRaiseToDpc(l: *mut KSPIN_LOCK) -> KIRQL {
    const CALL: &str = "KeAcquireSpinLockRaiseToDpc";
    let m = current();
    m.count_call(CALL);
    require_irql_at_most(CALL, dxgk_sys::DISPATCH_LEVEL);
    let old = irql();
    set_irql(old.max(dxgk_sys::DISPATCH_LEVEL));
    acquire(&m, CALL, l);
    old
}

/// `KeReleaseSpinLock`. Lowers to `new_irql` (running DPCs that became runnable).
#[no_mangle]
pub extern "system" fn KeReleaseSpinLock(l: *mut KSPIN_LOCK, new_irql: KIRQL) {
    const CALL: &str = "KeReleaseSpinLock";
    let m = current();
    m.count_call(CALL);
    release(&m, CALL, l);
    set_irql(new_irql);
    run_if_below_dispatch(&m);
}

/// `KeAcquireSpinLockAtDpcLevel`. Requires IRQL ≥ DISPATCH_LEVEL.
#[no_mangle]
pub extern "system" fn KeAcquireSpinLockAtDpcLevel(l: *mut KSPIN_LOCK) {
    const CALL: &str = "KeAcquireSpinLockAtDpcLevel";
    let m = current();
    m.count_call(CALL);
    if irql() < dxgk_sys::DISPATCH_LEVEL {
        m.report(Finding::here(
            Rule::IrqlTooLow,
            CALL,
            format!("called at IRQL {}, requires DISPATCH_LEVEL", irql()),
        ));
    }
    acquire(&m, CALL, l);
}

/// `KeReleaseSpinLockFromDpcLevel`.
#[no_mangle]
pub extern "system" fn KeReleaseSpinLockFromDpcLevel(l: *mut KSPIN_LOCK) {
    const CALL: &str = "KeReleaseSpinLockFromDpcLevel";
    let m = current();
    m.count_call(CALL);
    release(&m, CALL, l);
}

// ---- events and waits -------------------------------------------------------------------------

/// `KeInitializeEvent`. IRQL ≤ DISPATCH_LEVEL.
#[no_mangle]
pub extern "system" fn KeInitializeEvent(
    ev: *mut KEVENT,
    ty: dxgk_sys::EVENT_TYPE,
    state: BOOLEAN,
) {
    const CALL: &str = "KeInitializeEvent";
    let m = current();
    m.count_call(CALL);
    require_irql_at_most(CALL, dxgk_sys::DISPATCH_LEVEL);
    let mut e = KEVENT::default();
    e.Header.u.s.Type = ty as u8;
    e.Header.u.s.Size = (std::mem::size_of::<KEVENT>() / 4) as u8;
    e.Header.SignalState = LONG::from(state != 0);
    // SAFETY: the driver passes storage for a KEVENT.
    unsafe { ev.write(e) };
    // SAFETY: as above; the wait list head points to itself, as an empty LIST_ENTRY does.
    let head = unsafe { std::ptr::addr_of_mut!((*ev).Header.WaitListHead) };
    // SAFETY: as above.
    unsafe { (*head).Flink = head };
    // SAFETY: as above.
    unsafe { (*head).Blink = head };
}

fn set_state(m: &MachineState, h: *mut DISPATCHER_HEADER, v: i32) -> i32 {
    let _k = m.kernel();
    let old = signal_state(h).swap(v, Ordering::SeqCst);
    m.wake.notify_all();
    old
}

/// `KeSetEvent`. IRQL ≤ DISPATCH_LEVEL. Returns the previous state.
#[no_mangle]
pub extern "system" fn KeSetEvent(ev: *mut KEVENT, _increment: KPRIORITY, _wait: BOOLEAN) -> LONG {
    const CALL: &str = "KeSetEvent";
    let m = current();
    m.count_call(CALL);
    require_irql_at_most(CALL, dxgk_sys::DISPATCH_LEVEL);
    set_state(&m, ev.cast(), 1)
}

/// `KeClearEvent`. IRQL ≤ DISPATCH_LEVEL.
#[no_mangle]
pub extern "system" fn KeClearEvent(ev: *mut KEVENT) {
    const CALL: &str = "KeClearEvent";
    let m = current();
    m.count_call(CALL);
    require_irql_at_most(CALL, dxgk_sys::DISPATCH_LEVEL);
    set_state(&m, ev.cast(), 0);
}

/// `KeResetEvent`. IRQL ≤ DISPATCH_LEVEL. Returns the previous state.
#[no_mangle]
pub extern "system" fn KeResetEvent(ev: *mut KEVENT) -> LONG {
    const CALL: &str = "KeResetEvent";
    let m = current();
    m.count_call(CALL);
    require_irql_at_most(CALL, dxgk_sys::DISPATCH_LEVEL);
    set_state(&m, ev.cast(), 0)
}

/// `KeReadStateEvent`. IRQL ≤ DISPATCH_LEVEL.
#[no_mangle]
pub extern "system" fn KeReadStateEvent(ev: *mut KEVENT) -> LONG {
    const CALL: &str = "KeReadStateEvent";
    let m = current();
    m.count_call(CALL);
    require_irql_at_most(CALL, dxgk_sys::DISPATCH_LEVEL);
    signal_state(ev.cast()).load(Ordering::SeqCst)
}

/// Relative timeout of a Windows wait (`None` = infinite). Positive (absolute) times are
/// treated as "already expired" unless far in the future (not modelled: treated as infinite).
///
/// # Safety
/// `t` must be null or readable.
unsafe fn timeout_of(t: *mut LARGE_INTEGER) -> Option<Duration> {
    // SAFETY: the caller guarantees `t` is null or readable.
    let v = unsafe { t.as_ref() }?;
    // SAFETY: every bit pattern is a valid i64.
    let q = unsafe { v.QuadPart };
    Some(if q < 0 {
        Duration::from_nanos(q.unsigned_abs().saturating_mul(100))
    } else {
        Duration::ZERO
    })
}

/// `KeWaitForSingleObject` on an event or a thread. A non-zero timeout requires IRQL ≤ APC_LEVEL;
/// a zero timeout is allowed at DISPATCH_LEVEL.
#[no_mangle]
pub extern "system" fn KeWaitForSingleObject(
    object: PVOID,
    _reason: dxgk_sys::KWAIT_REASON,
    _mode: KPROCESSOR_MODE,
    _alertable: BOOLEAN,
    timeout: *mut LARGE_INTEGER,
) -> NTSTATUS {
    const CALL: &str = "KeWaitForSingleObject";
    let m = current();
    m.count_call(CALL);
    // SAFETY: the driver passes NULL or a LARGE_INTEGER.
    let t = unsafe { timeout_of(timeout) };
    let max = if t == Some(Duration::ZERO) {
        dxgk_sys::DISPATCH_LEVEL
    } else {
        dxgk_sys::APC_LEVEL
    };
    if !require_irql_at_most(CALL, max) {
        return STATUS_TIMEOUT;
    }
    let h = object.cast::<DISPATCHER_HEADER>();
    let ty = object_type(h);
    let auto_reset = ty == dxgk_sys::SynchronizationEvent as u8;
    if ty > 1 && ty != THREAD_OBJECT {
        m.report(Finding::here(
            Rule::InvalidArgument,
            CALL,
            format!("{object:p} is not an event or thread (type {ty})"),
        ));
        return dxgk_sys::STATUS_INVALID_PARAMETER;
    }
    let start = Instant::now();
    let mut k = m.kernel();
    let cap = k.wait_cap;
    // A system thread's wait is visible to `wait_until_system_threads_quiescent`.
    let me = CURRENT_THREAD_OBJECT.with(Cell::get);
    if me != 0 {
        k.waiting.insert(me, object as usize);
        m.wake.notify_all();
    }
    loop {
        let s = signal_state(h);
        let got = if auto_reset {
            s.compare_exchange(1, 0, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        } else {
            s.load(Ordering::SeqCst) > 0
        };
        if got {
            k.waiting.remove(&me);
            return dxgk_sys::STATUS_SUCCESS;
        }
        let elapsed = start.elapsed();
        if let Some(t) = t {
            if elapsed >= t {
                k.waiting.remove(&me);
                return STATUS_TIMEOUT;
            }
        }
        if elapsed >= cap {
            k.waiting.remove(&me);
            drop(k);
            m.report(Finding::here(
                Rule::PossibleHang,
                CALL,
                format!("wait on {object:p} not satisfied within {cap:?} (timeout {t:?}); returned STATUS_TIMEOUT instead of hanging"),
            ));
            return STATUS_TIMEOUT;
        }
        let left = t.map_or(cap, |t| t.min(cap)).saturating_sub(elapsed);
        k = k.wait_timeout(&m.wake, left.min(Duration::from_millis(20)));
    }
}

/// Blocks the caller until the machine's system threads are quiescent (see
/// `KernelState::system_threads_quiescent`), at most the wait cap: how the simulator lets a
/// software engine inside the driver (a system thread woken by a doorbell) finish the work a
/// DDI started before it looks at what the "device" did, deterministically rather than after a
/// fixed delay.
pub(crate) fn wait_until_system_threads_quiescent(m: &MachineState) {
    let start = Instant::now();
    let mut k = m.kernel();
    let cap = k.wait_cap;
    while !k.system_threads_quiescent() && start.elapsed() < cap {
        k = k.wait_timeout(&m.wake, Duration::from_millis(20));
    }
}

/// `KeDelayExecutionThread`. IRQL ≤ APC_LEVEL. Sleeps at most the wait cap.
#[no_mangle]
pub extern "system" fn KeDelayExecutionThread(
    _mode: KPROCESSOR_MODE,
    _alertable: BOOLEAN,
    interval: *mut LARGE_INTEGER,
) -> NTSTATUS {
    const CALL: &str = "KeDelayExecutionThread";
    let m = current();
    m.count_call(CALL);
    if !require_irql_at_most(CALL, dxgk_sys::APC_LEVEL) {
        return dxgk_sys::STATUS_SUCCESS;
    }
    // SAFETY: the driver passes a LARGE_INTEGER (or NULL, treated as zero).
    let d = unsafe { timeout_of(interval) }.unwrap_or(Duration::ZERO);
    let cap = m.kernel().wait_cap;
    std::thread::sleep(d.min(cap));
    dxgk_sys::STATUS_SUCCESS
}

// ---- time ----------------------------------------------------------------------------------------

fn epoch() -> Instant {
    static T0: OnceLock<Instant> = OnceLock::new();
    *T0.get_or_init(Instant::now)
}

/// `KeQueryPerformanceCounter` (hal.dll). Any IRQL. 10 MHz, monotonic.
#[no_mangle]
pub extern "system" fn KeQueryPerformanceCounter(freq: *mut LARGE_INTEGER) -> LARGE_INTEGER {
    if let Some(m) = crate::machine::try_current() {
        m.count_call("KeQueryPerformanceCounter");
    }
    if !freq.is_null() {
        let mut f = LARGE_INTEGER::default();
        f.QuadPart = PERFORMANCE_FREQUENCY;
        // SAFETY: non-null out pointer.
        unsafe { freq.write(f) };
    }
    let mut v = LARGE_INTEGER::default();
    v.QuadPart = (epoch().elapsed().as_nanos() / 100) as i64;
    v
}

/// `KeStallExecutionProcessor` (hal.dll). Any IRQL. Busy-waits.
#[no_mangle]
pub extern "system" fn KeStallExecutionProcessor(us: ULONG) {
    if let Some(m) = crate::machine::try_current() {
        m.count_call("KeStallExecutionProcessor");
    }
    let until = Instant::now() + Duration::from_micros(u64::from(us));
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

// ---- threads and handles ----------------------------------------------------------------------

struct SendPtr(usize);

/// `PsCreateSystemThread`. PASSIVE_LEVEL. An injection point (STATUS_INSUFFICIENT_RESOURCES).
#[no_mangle]
pub extern "system" fn PsCreateSystemThread(
    handle: PHANDLE,
    _access: ULONG,
    _attributes: PVOID,
    process: HANDLE,
    _client: PVOID,
    start: PKSTART_ROUTINE,
    context: PVOID,
) -> NTSTATUS {
    const CALL: &str = "PsCreateSystemThread";
    let m = current();
    m.count_call(CALL);
    if !require_irql_at_most(CALL, dxgk_sys::PASSIVE_LEVEL) {
        return dxgk_sys::STATUS_INVALID_DEVICE_STATE;
    }
    let Some(start) = start else {
        m.report(Finding::here(
            Rule::InvalidArgument,
            CALL,
            "NULL StartRoutine",
        ));
        return dxgk_sys::STATUS_INVALID_PARAMETER;
    };
    if handle.is_null() || !process.is_null() {
        m.report(Finding::here(
            Rule::InvalidArgument,
            CALL,
            "NULL ThreadHandle, or a ProcessHandle (drivers pass NULL)",
        ));
        return dxgk_sys::STATUS_INVALID_PARAMETER;
    }
    if inject(CALL) {
        return dxgk_sys::STATUS_INSUFFICIENT_RESOURCES;
    }
    let mut obj = Box::new(ThreadObject {
        header: DISPATCHER_HEADER::default(),
    });
    obj.header.u.s.Type = THREAD_OBJECT;
    let obj = Box::into_raw(obj) as usize;
    let site = driver_call_site();
    let h = {
        let mut k = m.kernel();
        k.next_handle += 1;
        let h = 0x7A00_0000 + k.next_handle * 4;
        k.handles.insert(h, (obj, site.clone()));
        k.threads.insert(obj, ThreadInfo { site, refs: 0 });
        h
    };
    let state = m.clone();
    let ctx = SendPtr(context as usize);
    let spawned = std::thread::Builder::new()
        .name(format!("dxgk-sim system thread {h:#x}"))
        .spawn(move || {
            let ctx = ctx;
            adopt(state.clone());
            CURRENT_THREAD_OBJECT.with(|c| c.set(obj));
            // SAFETY: the driver's start routine with its context, at PASSIVE_LEVEL.
            unsafe { start(ctx.0 as PVOID) };
            terminate(&state, obj);
        });
    if spawned.is_err() {
        let mut k = m.kernel();
        k.handles.remove(&h);
        k.threads.remove(&obj);
        return dxgk_sys::STATUS_INSUFFICIENT_RESOURCES;
    }
    // SAFETY: non-null out pointer.
    unsafe { handle.write(h as HANDLE) };
    dxgk_sys::STATUS_SUCCESS
}

fn terminate(m: &MachineState, obj: usize) {
    set_state(m, obj as *mut DISPATCHER_HEADER, 1);
}

thread_local! {
    static CURRENT_THREAD_OBJECT: Cell<usize> = const { Cell::new(0) };
}

/// `PsTerminateSystemThread`. PASSIVE_LEVEL; called by a system thread on itself. Signals the
/// thread object, then parks the host thread forever.
#[no_mangle]
pub extern "system" fn PsTerminateSystemThread(_status: NTSTATUS) -> NTSTATUS {
    const CALL: &str = "PsTerminateSystemThread";
    let m = current();
    m.count_call(CALL);
    require_irql_at_most(CALL, dxgk_sys::PASSIVE_LEVEL);
    let obj = CURRENT_THREAD_OBJECT.with(Cell::get);
    match (obj != 0).then_some(obj) {
        Some(o) => terminate(&m, o),
        None => {
            m.report(Finding::here(
                Rule::InvalidArgument,
                CALL,
                "called by a thread that is not a system thread",
            ));
            return dxgk_sys::STATUS_INVALID_PARAMETER;
        }
    }
    loop {
        std::thread::park();
    }
}

/// `ObReferenceObjectByHandle`. PASSIVE_LEVEL.
#[no_mangle]
pub extern "system" fn ObReferenceObjectByHandle(
    handle: HANDLE,
    _access: ULONG,
    _ty: PVOID,
    _mode: KPROCESSOR_MODE,
    object: *mut PVOID,
    _info: PVOID,
) -> NTSTATUS {
    const CALL: &str = "ObReferenceObjectByHandle";
    let m = current();
    m.count_call(CALL);
    require_irql_at_most(CALL, dxgk_sys::PASSIVE_LEVEL);
    let mut k = m.kernel();
    let Some(&(obj, _)) = k.handles.get(&(handle as usize)) else {
        drop(k);
        m.report(Finding::here(
            Rule::InvalidArgument,
            CALL,
            format!("unknown handle {handle:p}"),
        ));
        return STATUS_INVALID_HANDLE;
    };
    if let Some(t) = k.threads.get_mut(&obj) {
        t.refs += 1;
    }
    if !object.is_null() {
        // SAFETY: non-null out pointer.
        unsafe { object.write(obj as PVOID) };
    }
    dxgk_sys::STATUS_SUCCESS
}

/// `ObfDereferenceObject`. IRQL ≤ DISPATCH_LEVEL.
#[no_mangle]
pub extern "system" fn ObfDereferenceObject(object: PVOID) -> LONG_PTR {
    const CALL: &str = "ObfDereferenceObject";
    let m = current();
    m.count_call(CALL);
    require_irql_at_most(CALL, dxgk_sys::DISPATCH_LEVEL);
    let mut k = m.kernel();
    match k.threads.get_mut(&(object as usize)) {
        Some(t) if t.refs > 0 => {
            t.refs -= 1;
            t.refs as LONG_PTR
        }
        _ => {
            drop(k);
            m.report(Finding::here(
                Rule::InvalidArgument,
                CALL,
                format!("{object:p} has no reference to release"),
            ));
            0
        }
    }
}

/// `ZwClose`. PASSIVE_LEVEL.
#[no_mangle]
pub extern "system" fn ZwClose(handle: HANDLE) -> NTSTATUS {
    const CALL: &str = "ZwClose";
    let m = current();
    m.count_call(CALL);
    require_irql_at_most(CALL, dxgk_sys::PASSIVE_LEVEL);
    if m.kernel().handles.remove(&(handle as usize)).is_some() {
        dxgk_sys::STATUS_SUCCESS
    } else {
        m.report(Finding::here(
            Rule::InvalidArgument,
            CALL,
            format!("unknown handle {handle:p}"),
        ));
        STATUS_INVALID_HANDLE
    }
}

// ---- the displib handshake (cross flavour only) and bugcheck --------------------------------

fn unavailable(call: &'static str) -> NTSTATUS {
    let m = current();
    m.count_call(call);
    m.report(Finding::here(
        Rule::CallbackUnavailable,
        call,
        "not simulated (used only by the cross flavour's own DxgkInitialize)",
    ));
    dxgk_sys::STATUS_NOT_SUPPORTED
}

/// `ZwLoadDriver`: not simulated (STATUS_NOT_SUPPORTED + finding).
#[no_mangle]
pub extern "system" fn ZwLoadDriver(_name: *mut UNICODE_STRING) -> NTSTATUS {
    unavailable("ZwLoadDriver")
}

/// `IoGetDeviceObjectPointer`: not simulated.
#[no_mangle]
pub extern "system" fn IoGetDeviceObjectPointer(
    _n: *mut UNICODE_STRING,
    _a: ULONG,
    _f: *mut PVOID,
    _d: *mut *mut DEVICE_OBJECT,
) -> NTSTATUS {
    unavailable("IoGetDeviceObjectPointer")
}

/// `IoBuildDeviceIoControlRequest`: not simulated (NULL).
#[no_mangle]
pub extern "system" fn IoBuildDeviceIoControlRequest(
    _code: ULONG,
    _dev: *mut DEVICE_OBJECT,
    _in: PVOID,
    _in_len: ULONG,
    _out: PVOID,
    _out_len: ULONG,
    _internal: BOOLEAN,
    _event: *mut KEVENT,
    _iosb: *mut IO_STATUS_BLOCK,
) -> *mut IRP {
    unavailable("IoBuildDeviceIoControlRequest");
    std::ptr::null_mut()
}

/// `IofCallDriver`: not simulated.
#[no_mangle]
pub extern "system" fn IofCallDriver(_dev: *mut DEVICE_OBJECT, _irp: *mut IRP) -> NTSTATUS {
    unavailable("IofCallDriver")
}

/// `KeBugCheckEx`: prints the bugcheck and aborts the test process (as the machine would stop).
#[no_mangle]
pub extern "system" fn KeBugCheckEx(
    code: ULONG,
    p1: ULONG_PTR,
    p2: ULONG_PTR,
    p3: ULONG_PTR,
    p4: ULONG_PTR,
) -> ! {
    eprintln!(
        "dxgk-sim: KeBugCheckEx({code:#x}, {p1:#x}, {p2:#x}, {p3:#x}, {p4:#x}) called from {}",
        driver_call_site()
    );
    std::process::abort()
}
