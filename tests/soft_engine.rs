//! The soft engine core: the rgpu-hw model behind the driver's register interface
//! (`Registers::Soft`) executes a ring entry with a FILL and a COPY through the one logical →
//! CPU translation (`LogicalMemory`), writes the fence back and asserts its interrupt; an access
//! to an address the driver never gave faults exactly like the hardware path's IOMMU fault; an
//! injected hang stops consumption until the TDR reset.

use std::collections::HashMap;
use std::sync::{mpsc, Mutex};

use dxgk::interface::DxgkInterface;
use dxgk::interrupt::Notification;
use dxgk::irql::Passive;
use dxgk::pool::{Pool, PoolTag};
use dxgk::thread::{SystemThread, Worker};
use dxgk_sim::{Machine, MachineConfig};
use rgpu::soft::{LogicalMemory, Registers, SoftDevice, PAGE, RUN_BUDGET};
use rgpu_hw::bus::DmaFaultKind;
use rgpu_hw::cmd::{Encoder, Target};
use rgpu_hw::device::FaultKind;
use rgpu_hw::ring::RingEntry;
use rgpu_hw::{regs, RunState};

/// Pages the "driver" gave the device, by logical page address.
#[derive(Default)]
struct Pages(Mutex<HashMap<u64, Vec<u8>>>);

impl Pages {
    fn give(&self, logical: u64) {
        self.0
            .lock()
            .unwrap()
            .insert(logical, vec![0; PAGE as usize]);
    }
    fn put(&self, logical: u64, data: &[u8]) {
        self.write(logical, data).unwrap();
    }
    fn get(&self, logical: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.read(logical, &mut v).unwrap();
        v
    }
    fn at<R>(
        &self,
        logical: u64,
        len: usize,
        f: impl FnOnce(&mut [u8]) -> R,
    ) -> Result<R, DmaFaultKind> {
        let page = logical & !(PAGE - 1);
        let off = (logical - page) as usize;
        assert!(off + len <= PAGE as usize, "the bus never crosses a page");
        let mut map = self.0.lock().unwrap();
        let p = map.get_mut(&page).ok_or(DmaFaultKind::NotMapped)?;
        Ok(f(&mut p[off..off + len]))
    }
}

impl LogicalMemory for Pages {
    fn read(&self, logical: u64, buf: &mut [u8]) -> Result<(), DmaFaultKind> {
        self.at(logical, buf.len(), |p| buf.copy_from_slice(p))
    }
    fn write(&self, logical: u64, data: &[u8]) -> Result<(), DmaFaultKind> {
        self.at(logical, data.len(), |p| p.copy_from_slice(data))
    }
}

const RING: u64 = 0x10_0000;
const FENCE: u64 = 0x11_0000;
const CMD: u64 = 0x12_0000;
const DST: u64 = 0x20_0000; // two pages
const COPY_DST: u64 = 0x30_0000;
const NEVER_GIVEN: u64 = 0x90_0000;

fn soft() -> Registers {
    let tag = PoolTag(u32::from_le_bytes(*b"sftT"));
    Registers::Soft(SoftDevice::new(&Pool::resolve(), tag).unwrap())
}

/// What the register helpers need: the driver's register interface or the engine's device.
trait Regs {
    fn read(&self, offset: u32) -> u32;
    fn write(&self, offset: u32, value: u32) -> bool;
}
impl Regs for Registers {
    fn read(&self, offset: u32) -> u32 {
        Registers::read(self, offset)
    }
    fn write(&self, offset: u32, value: u32) -> bool {
        Registers::write(self, offset, value)
    }
}
impl Regs for SoftDevice {
    fn read(&self, offset: u32) -> u32 {
        SoftDevice::read(self, offset)
    }
    fn write(&self, offset: u32, value: u32) -> bool {
        SoftDevice::write(self, offset, value)
    }
}

fn program(r: &impl Regs) {
    r.write(regs::RING_BASE_LO, RING as u32);
    r.write(regs::RING_BASE_HI, 0);
    r.write(regs::RING_SIZE, PAGE as u32);
    r.write(regs::FENCE_ADDR_LO, FENCE as u32);
    r.write(regs::FENCE_ADDR_HI, 0);
    r.write(
        regs::CONTROL,
        regs::CONTROL_RING_ENABLE | regs::CONTROL_FENCE_WB_ENABLE,
    );
    assert_ne!(r.read(regs::STATUS) & regs::STATUS_RING_ENABLED, 0);
    r.write(regs::INT_ENABLE, regs::INT_MASK);
}

/// Writes one privileged, logical-address ring entry for the commands `build` encodes, fenced
/// with `fence` and an interrupt, at ring slot `slot`; rings the doorbell (which must ask for
/// the engine to be woken).
fn submit(r: &impl Regs, mem: &Pages, slot: u32, fence: u64, build: impl FnOnce(&mut Encoder<'_>)) {
    let mut buf = [0u8; 256];
    let mut e = Encoder::new(&mut buf);
    build(&mut e);
    let len = e.position();
    mem.put(CMD, &buf[..len]);
    let mut entry = RingEntry::exec(CMD, len as u32, 0);
    entry.privileged = true;
    entry.fence = true;
    entry.fence_irq = true;
    entry.fence_value = fence;
    let at = RING + u64::from(slot) * rgpu_hw::ring::ENTRY_SIZE as u64;
    mem.put(at, &entry.encode());
    r.write(
        regs::RING_TAIL,
        (slot + 1) * rgpu_hw::ring::ENTRY_SIZE as u32,
    );
    assert!(
        r.write(regs::DOORBELL, 1),
        "a soft doorbell wakes the engine"
    );
}

/// Runs the engine as its thread would, pass after pass, until the ring stops.
fn drain(s: &SoftDevice, mem: &Pages) -> (RunState, bool) {
    loop {
        let (outcome, irq) = s.run(mem, RUN_BUDGET);
        let o = outcome.expect("not hung");
        if o.state != RunState::BudgetExhausted {
            return (o.state, irq);
        }
    }
}

fn given() -> Pages {
    let mem = Pages::default();
    for p in [RING, FENCE, CMD, DST, DST + PAGE, COPY_DST] {
        mem.give(p);
    }
    mem
}

#[test]
fn fill_and_copy_run_on_the_soft_engine_and_signal_the_fence() {
    let m = Machine::new(MachineConfig::windows_11_22h2());
    m.enter(|| {
        let r = soft();
        let mem = given();
        program(&r);
        submit(&r, &mem, 0, 7, |e| {
            e.fill(Target::Logical(DST), 2 * PAGE, 0xA5C3_0F96).unwrap();
            e.copy(Target::Logical(COPY_DST), Target::Logical(DST + PAGE), PAGE)
                .unwrap();
        });
        let s = r.soft().unwrap();
        assert_eq!(drain(s, &mem), (RunState::Idle, true));
        let pattern = 0xA5C3_0F96u32.to_le_bytes();
        for a in [DST, DST + PAGE, COPY_DST] {
            let got = mem.get(a, PAGE as usize);
            assert!(got.chunks(4).all(|c| c == pattern), "{a:#x}");
        }
        assert_eq!(u64::from_le_bytes(mem.get(FENCE, 8).try_into().unwrap()), 7);
        assert_eq!(r.read(regs::FENCE_VALUE_LO), 7);
        assert_ne!(r.read(regs::INT_STATUS) & regs::INT_FENCE, 0);
        let st = s.stats();
        assert_eq!((st.bytes_filled, st.bytes_copied), (2 * PAGE, PAGE));
        // Acknowledging drops the line, as the ISR does.
        r.write(regs::INT_ACK, regs::INT_FENCE);
        assert!(!s.run(&mem, RUN_BUDGET).1);
    });
    m.assert_clean();
}

#[test]
fn an_address_never_given_faults_like_the_iommu_and_touches_nothing() {
    let m = Machine::new(MachineConfig::windows_11_22h2());
    m.enter(|| {
        let r = soft();
        let mem = given();
        program(&r);
        submit(&r, &mem, 0, 1, |e| {
            e.copy(Target::Logical(DST), Target::Logical(NEVER_GIVEN), 64)
                .unwrap();
        });
        let s = r.soft().unwrap();
        assert_eq!(drain(s, &mem), (RunState::Halted, true));
        let status = r.read(regs::FAULT_STATUS);
        assert_eq!(
            FaultKind::from_raw(status & regs::FAULT_TYPE_MASK),
            Some(FaultKind::Iommu)
        );
        assert_eq!(r.read(regs::FAULT_ADDR_LO), NEVER_GIVEN as u32);
        assert_ne!(r.read(regs::INT_STATUS) & regs::INT_FAULT, 0);
        assert!(mem.get(DST, PAGE as usize).iter().all(|&b| b == 0));
        assert_eq!(
            r.read(regs::FENCE_VALUE_LO),
            0,
            "the faulting entry did not complete"
        );
    });
    m.assert_clean();
}

#[test]
fn an_injected_hang_stops_the_ring_until_the_tdr_reset() {
    let m = Machine::new(MachineConfig::windows_11_22h2());
    m.enter(|| {
        let r = soft();
        let mem = given();
        program(&r);
        let s = r.soft().unwrap();
        s.inject_hang();
        submit(&r, &mem, 0, 3, |e| {
            e.fill(Target::Logical(DST), 64, 1).unwrap();
        });
        for _ in 0..3 {
            assert_eq!(s.run(&mem, RUN_BUDGET), (None, false));
        }
        assert_eq!(r.read(regs::RING_HEAD), 0, "nothing consumed while hung");
        // ResetFromTimeout writes RESET; RestartFromTimeout reprograms the ring.
        r.write(regs::RESET, regs::RESET_ASSERT);
        program(&r);
        submit(&r, &mem, 0, 4, |e| {
            e.fill(Target::Logical(DST), 64, 0x0101_0101).unwrap();
        });
        assert_eq!(drain(s, &mem), (RunState::Idle, true));
        assert_eq!(r.read(regs::FENCE_VALUE_LO), 4);
        assert!(mem.get(DST, 64).iter().all(|&b| b == 1));
    });
    m.assert_clean();
}

/// The engine thread's state: the device, the memory it was given, the interface it raises
/// completion through, and a channel telling the test each fence it reported.
struct Engine {
    dev: SoftDevice,
    mem: Pages,
    iface: DxgkInterface,
    reported: Mutex<mpsc::Sender<u32>>,
}

/// The soft engine as a system thread: woken by the doorbell, runs the model until the ring
/// stops, and raises completion coskmd-style — inside DxgkCbSynchronizeExecution, the ISR's
/// logic (claim + acknowledge, DMA_COMPLETED with FENCE_VALUE). The interrupt, fence and
/// acknowledge registers are read and written at device IRQL without the device's spin lock.
fn engine(w: &Worker<'_, Engine>) {
    let e = w.state();
    while !w.should_stop() {
        w.wait();
        loop {
            let (outcome, irq) = e.dev.run(&e.mem, RUN_BUDGET);
            if irq {
                let mut fence = 0;
                let claimed = e.iface.synchronize_execution(|isr| {
                    let pending = e.dev.read(regs::INT_STATUS) & e.dev.read(regs::INT_ENABLE);
                    if pending == 0 {
                        return false;
                    }
                    e.dev.write(regs::INT_ACK, pending);
                    fence = e.dev.read(regs::FENCE_VALUE_LO);
                    e.iface
                        .notify_interrupt(isr, &Notification::DmaCompleted { fence })
                        .is_ok()
                    // The driver's ISR logic then queues its DPC; this bare test adapter has
                    // no driver, hence no DxgkDdiDpcRoutine (the sim reports a DPC queued
                    // for none), so the test stops at the notification.
                });
                if claimed == Ok(true) {
                    let _ = e.reported.lock().unwrap().send(fence);
                }
            }
            if outcome.is_none_or(|o| o.state != RunState::BudgetExhausted) {
                break;
            }
        }
    }
}

#[test]
fn the_engine_thread_runs_doorbelled_work_and_notifies_inside_synchronize_execution() {
    let m = Machine::new(MachineConfig::windows_11_22h2());
    let (tx, rx) = mpsc::channel();
    let handle = m.enter(|| {
        let raw = m.interface_for_tests(dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM2_4);
        // SAFETY: a valid interface from the simulator.
        let iface =
            unsafe { DxgkInterface::copy_from(&raw, dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM2_4) }
                .unwrap();
        let handle = iface.device_handle();
        let Registers::Soft(dev) = soft() else {
            unreachable!()
        };
        let state = Engine {
            dev,
            mem: given(),
            iface,
            reported: Mutex::new(tx),
        };
        let passive = Passive::check().unwrap();
        let tag = PoolTag(u32::from_le_bytes(*b"sftE"));
        let t = SystemThread::spawn(&Pool::resolve(), tag, &passive, state, 5, engine).unwrap();
        let e = t.state();
        program(&e.dev);
        for (slot, fence) in [(0u32, 11u64), (1, 12)] {
            submit(&e.dev, &e.mem, slot, fence, |enc| {
                enc.fill(Target::Logical(DST), 2 * PAGE, fence as u32)
                    .unwrap();
                enc.copy(Target::Logical(COPY_DST), Target::Logical(DST), PAGE)
                    .unwrap();
            });
            t.wake();
            assert_eq!(rx.recv().unwrap(), fence as u32);
            let want = (fence as u32).to_le_bytes();
            for a in [DST, DST + PAGE, COPY_DST] {
                assert!(e.mem.get(a, PAGE as usize).chunks(4).all(|c| c == want));
            }
        }
        drop(t);
        handle
    });
    let id = m.adapter_of(handle).unwrap();
    assert_eq!(
        m.notified_interrupts(id),
        [dxgk_sys::DXGK_INTERRUPT_DMA_COMPLETED.0; 2]
    );
    assert_eq!(m.callback_calls("DxgkCbSynchronizeExecution"), 2);
    m.check_leaks();
    m.assert_clean();
}
