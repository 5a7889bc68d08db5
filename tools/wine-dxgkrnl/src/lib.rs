//! **Wine-only test tooling.** A fake Dxgkrnl port driver (service `DXGKrnl`, device
//! `\Device\DxgKrnl`) that lets the real, unmodified `rgpu.sys` run under Wine 8.0's NT kernel
//! (`winedevice.exe` + Wine's `ntoskrnl.exe`). Nothing here ships; nothing in rgpu knows about it.
//!
//! Flow (see `tools/wine/run.sh` and `docs/wine.md`):
//! 1. `net start rgpu` → rgpu's `DriverEntry` → its own `DxgkInitialize`
//!    (`dxgk_sys::displib`) → `ZwLoadDriver(DXGKrnl)` loads this image into the same
//!    winedevice process → our `DriverEntry` creates `\Device\DxgKrnl`, hooks Wine's stubbed
//!    `IoGetDeviceObjectPointer` ([`wine_hook`], the only code that patches Wine), reads the
//!    harness settings from its service key.
//! 2. rgpu sends internal IOCTL 0x0023003F; [`port`] answers with [`port::dpi_initialize`],
//!    which rgpu then calls with its `DRIVER_INITIALIZATION_DATA` (newest interface first).
//! 3. As PnP would after `DriverEntry` returns, a system thread drives the adapter
//!    ([`steps`]): AddDevice, StartDevice with our own `DXGKRNL_INTERFACE` ([`callbacks`]),
//!    QueryAdapterInfo for every type VidMm asks at start, a short BuildPagingBuffer sequence,
//!    StopDevice, RemoveDevice. Behind the memory-backed BAR, [`device`] runs rgpu-hw's model.
//! 4. `net stop rgpu` → rgpu's `DriverUnload`, which is ours (Dxgkrnl owns it on Windows too) →
//!    `DxgkDdiUnload` → the step table and a `VERDICT` line.
//!
//! Every result is one `DbgPrintEx` line prefixed `wine-dxgkrnl: ` (visible with
//! `WINEDEBUG=+debugstr`). Steps rgpu does not implement yet are reported `PENDING`, never
//! faked; the expectation table is [`steps::EXPECTED`].
#![no_std]
#![deny(
    clippy::undocumented_unsafe_blocks,
    clippy::multiple_unsafe_ops_per_block,
    unsafe_op_in_unsafe_fn
)]
#![allow(non_snake_case)]

// Host builds exist only for `cargo clippy`; they use std's panic handler.
#[cfg(not(target_os = "windows"))]
extern crate std;

#[macro_use]
mod log;
#[macro_use]
mod kernel;
mod callbacks;
mod device;
mod interrupt;
mod port;
mod settings;
mod soft;
mod state;
mod steps;
mod vidmm;
mod wine_hook;

pub use port::DriverEntry;

#[cfg(target_os = "windows")]
mod seam {
    use core::panic::PanicInfo;

    /// MSVC's floating-point marker; nothing reads it.
    #[used]
    #[no_mangle]
    static _fltused: i32 = 0;

    #[panic_handler]
    fn panic(info: &PanicInfo<'_>) -> ! {
        say!("VERDICT FAIL (harness panic: {})", info);
        // SAFETY: a broken harness invariant; stop (under Wine this ends winedevice, which the
        // runner reports as a crash).
        unsafe { dxgk_sys::KeBugCheckEx(0xE2, 0x4658_4B44, 0, 0, 0) }
    }
}
