//! The rgpu device behind the memory-backed BAR: rgpu-hw's executable model
//! ([`rgpu_hw::device::Device`]), advanced at deterministic points, as dxgk-sim does
//! (DESIGN.md: "MMIO in the sim is plain memory … let the sim advance the device whenever
//! control returns to it").
//!
//! Under Wine the BAR is ordinary memory, so register writes cannot trap. [`tick`] therefore
//! diffs the BAR against the values last published, forwards every changed register to the
//! model's `mmio_write` (RESET, then configuration, then CONTROL, then DOORBELL/INT_ACK: a
//! tick may cover several driver writes), then publishes the model's `mmio_read` of every
//! register back into the BAR. It runs on rgpu's own thread or between DDIs (in every callback,
//! in the KeStallExecutionProcessor shim, after every DDI call), never concurrently with rgpu,
//! so no write is lost. The model executes **no commands** here (`Device::run` is not called: no
//! DMA bus over the logical-address table yet): registers, reset, ring enable and interrupts
//! masks behave, the ring does not advance.

use core::sync::atomic::{AtomicBool, Ordering};

use rgpu_hw::device::Device;
use rgpu_hw::regs::{self, BAR_SIZE};

use crate::state::Global;

const REGS: usize = BAR_SIZE as usize / 4;

struct Model {
    dev: Device,
    bar: *mut u32,
    published: [u32; REGS],
}

static MODEL: Global<Option<Model>> = Global::new(None);
/// Set once a model is attached; before (and for a soft adapter, always) [`tick`] does nothing
/// and never touches [`MODEL`], so it is safe from the soft engine's thread too.
static ATTACHED: AtomicBool = AtomicBool::new(false);

/// Puts a freshly reset device behind `bar` (BAR_SIZE bytes, 4-byte aligned).
pub fn attach(bar: *mut u8) {
    // SAFETY: called from the adapter thread before StartDevice; rgpu is not running.
    let slot = unsafe { MODEL.get() };
    *slot = Some(Model {
        dev: Device::new(),
        bar: bar.cast(),
        published: [0; REGS],
    });
    if let Some(m) = slot.as_mut() {
        publish(m);
    }
    ATTACHED.store(true, Ordering::Release);
}

fn publish(m: &mut Model) {
    for i in 0..REGS {
        let v = m.dev.mmio_read((i * 4) as u32);
        // SAFETY: `i` < REGS, inside the BAR block `attach` was given.
        unsafe { m.bar.wrapping_add(i).write_volatile(v) };
        m.published[i] = v;
    }
}

/// Forwards the driver's register writes to the model and publishes its registers.
pub fn tick() {
    if !ATTACHED.load(Ordering::Acquire) {
        return;
    }
    // SAFETY: see the module docs: ticks run on the thread that is currently executing rgpu or
    // the port, never concurrently; the reference does not outlive this call.
    let Some(m) = (unsafe { MODEL.get() }).as_mut() else {
        return;
    };
    // Writes since the last tick, forwarded in an order a driver's program order respects:
    // RESET first, then configuration, then CONTROL, then the triggers (DOORBELL, INT_ACK).
    let rank = |off: u32| match off {
        regs::RESET => 0,
        regs::CONTROL => 2,
        regs::DOORBELL | regs::INT_ACK => 3,
        _ => 1,
    };
    for pass in 0..4 {
        for i in 0..REGS {
            let off = (i * 4) as u32;
            if rank(off) != pass {
                continue;
            }
            // SAFETY: `i` < REGS, inside the BAR block.
            let v = unsafe { m.bar.wrapping_add(i).read_volatile() };
            if v != m.published[i] {
                m.dev.mmio_write(off, v);
            }
        }
    }
    publish(m);
}
