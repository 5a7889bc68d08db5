//! Owned system threads: woken by their owner, joined on drop with nothing left running or
//! allocated, creation failures leave nothing behind; and DxgkCbSynchronizeExecution from such a
//! thread as a software engine uses it (coskmd's pattern: notify inside the synchronized routine).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use dxgk::interface::DxgkInterface;
use dxgk::interrupt::Notification;
use dxgk::irql::Passive;
use dxgk::pool::{Pool, PoolTag};
use dxgk::thread::{SystemThread, Worker};
use dxgk_sim::{Machine, MachineConfig};
use dxgk_sys as sys;

const TAG: PoolTag = PoolTag(u32::from_le_bytes(*b"thrT"));

struct State {
    iface: DxgkInterface,
    /// Wake-ups the body served (each one raises one DMA_COMPLETED with the next fence).
    served: AtomicU32,
    /// Set by the body as it returns.
    returned: Arc<AtomicBool>,
    /// Tells the test each served wake-up.
    tx: Mutex<mpsc::Sender<u32>>,
}

fn engine(w: &Worker<'_, State>) {
    while !w.should_stop() {
        if !w.wait() || w.should_stop() {
            continue;
        }
        let s = w.state();
        let fence = s.served.fetch_add(1, Ordering::SeqCst) + 1;
        let r = s.iface.synchronize_execution(|isr| {
            s.iface
                .notify_interrupt(isr, &Notification::DmaCompleted { fence })
                .is_ok()
        });
        assert_eq!(r, Ok(true));
        let _ = s.tx.lock().unwrap().send(fence);
    }
    w.state().returned.store(true, Ordering::SeqCst);
}

fn iface(m: &Machine) -> DxgkInterface {
    let raw = m.interface_for_tests(sys::DXGKDDI_INTERFACE_VERSION_WDDM2_4);
    // SAFETY: a valid interface from the simulator.
    unsafe { DxgkInterface::copy_from(&raw, sys::DXGKDDI_INTERFACE_VERSION_WDDM2_4) }.unwrap()
}

#[test]
fn a_woken_thread_notifies_through_synchronize_execution_and_is_joined_on_drop() {
    let m = Machine::new(MachineConfig::windows_11_22h2());
    let returned = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let handle = m.enter(|| {
        let passive = Passive::check().unwrap();
        let i = iface(&m);
        let handle = i.device_handle();
        let state = State {
            iface: i,
            served: AtomicU32::new(0),
            returned: returned.clone(),
            tx: Mutex::new(tx),
        };
        let t = SystemThread::spawn(&Pool::resolve(), TAG, &passive, state, 5, engine).unwrap();
        // One wake-up at a time: each is served before the next (an auto-reset event merges
        // wake-ups that arrive while the body is busy).
        for expected in 1..=3 {
            t.wake();
            assert_eq!(rx.recv().unwrap(), expected);
        }
        assert!(!returned.load(Ordering::SeqCst));
        drop(t);
        handle
    });
    assert!(returned.load(Ordering::SeqCst), "drop joined the thread");
    let id = m.adapter_of(handle).unwrap();
    assert_eq!(
        m.notified_interrupts(id),
        [sys::DXGK_INTERRUPT_DMA_COMPLETED.0; 3]
    );
    assert_eq!(m.callback_calls("PsCreateSystemThread"), 1);
    assert_eq!(m.callback_calls("DxgkCbSynchronizeExecution"), 3);
    m.check_leaks();
    m.assert_clean();
}

fn idle(w: &Worker<'_, AtomicU32>) {
    while !w.should_stop() {
        w.wait();
        w.state().fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn every_failure_of_spawn_leaves_nothing_allocated_or_running() {
    dxgk_sim::fault::systematic(|_m| {
        let passive = Passive::check().unwrap();
        match SystemThread::spawn(&Pool::resolve(), TAG, &passive, AtomicU32::new(0), 1, idle) {
            Ok(t) => {
                t.wake();
                drop(t);
                sys::STATUS_SUCCESS
            }
            Err(e) => e.raw(),
        }
    });
}
