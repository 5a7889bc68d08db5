//! Register access: `dxgk-sys` routes READ_REGISTER_ULONG / WRITE_REGISTER_ULONG here on the
//! host, so a device model sees each access when it happens, in program order — a doorbell, a
//! write-1-to-clear acknowledge or a reset take effect at once, as on hardware. Addresses outside
//! every adapter's mapped BAR are plain volatile memory accesses (a driver may legitimately use
//! these helpers on memory standing in for registers).
//!
//! The device model has its own lock: register accesses from any thread and the simulator's
//! synchronizations serialize on it (as accesses to one device do), and the port lock is not
//! held while the model runs.

use dxgk_sys::ULONG;

use crate::machine::{current, MachineState};

/// The adapter index and byte offset of `addr` if it lies in some adapter's BAR.
fn locate(m: &MachineState, addr: usize) -> Option<(usize, u32)> {
    let port = m.port();
    port.adapters.iter().enumerate().find_map(|(i, a)| {
        let base = a.mmio.as_ptr() as usize;
        let end = base + a.mmio.len() * 4;
        (addr >= base && addr + 4 <= end && (addr - base).is_multiple_of(4))
            .then(|| (i, (addr - base) as u32))
    })
}

/// Runs `f` with adapter `index`'s device model and BAR, if it has a model.
fn with_device<R>(
    m: &MachineState,
    index: usize,
    f: impl FnOnce(&mut dyn super::SimDevice, &mut [u32]) -> R,
) -> Option<R> {
    let (dev, ptr, len) = {
        let mut port = m.port();
        let a = port.adapters.get_mut(index)?;
        let dev = a.device.clone()?;
        (dev, a.mmio.as_mut_ptr(), a.mmio.len())
    };
    // SAFETY: the BAR storage lives as long as the adapter (adapters are never dropped while
    // the machine lives); every access to it is serialized by the device lock held for `f`.
    let mmio = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
    let mut d = dev.lock();
    let r = f(d.as_mut(), mmio);
    Some(r)
}

/// `READ_REGISTER_ULONG` on the host.
#[no_mangle]
pub extern "system" fn DxgkSimReadRegisterUlong(register: *const ULONG) -> ULONG {
    let m = current();
    if let Some((index, offset)) = locate(&m, register as usize) {
        if let Some(v) = with_device(&m, index, |d, mmio| d.mmio_read(offset, mmio)) {
            return v;
        }
    }
    // SAFETY: the driver guarantees `register` is a valid, aligned location (the contract of
    // READ_REGISTER_ULONG).
    unsafe { register.read_volatile() }
}

/// `WRITE_REGISTER_ULONG` on the host.
#[no_mangle]
pub extern "system" fn DxgkSimWriteRegisterUlong(register: *mut ULONG, value: ULONG) {
    let m = current();
    if let Some((index, offset)) = locate(&m, register as usize) {
        if with_device(&m, index, |d, mmio| d.mmio_write(offset, value, mmio)).is_some() {
            return;
        }
    }
    // SAFETY: the driver guarantees `register` is a valid, aligned location (the contract of
    // WRITE_REGISTER_ULONG).
    unsafe { register.write_volatile(value) }
}
