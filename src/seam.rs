//! The kernel seam: the only code that differs between flavours (DESIGN.md, "The kernel seam").
//!
//! | flavour | allocator | panic | `DxgkInitialize` |
//! |---|---|---|---|
//! | host | std's (test binary) | std's | `dxgk-sim` |
//! | cross | [`dxgk::pool::GlobalPool`] (ExAllocatePool2 → ExAllocatePoolWithTag) | log + `KeBugCheckEx` | `dxgk_sys::displib` (our handshake) |
//! | wdk (`cfg(rgpu_wdk)`, package `drivers/rgpu-wdk`) | `wdk_alloc::WdkAllocator` | `wdk-panic` (`KeBugCheckEx`) | WDK `displib.lib` |
//!
//! Both Windows flavours register a global allocator, but rgpu itself does not use `alloc`: its
//! allocations go through `dxgk::pool` (`ExAllocatePoolWithTag`, with `ExAllocatePool2` looked up
//! at run time). So the linker drops the allocator, and neither image imports `ExAllocatePool2`
//! (measured: tools/wdk-check, docs/packaging.md). Once code uses `alloc`, the wdk image will
//! import wdk-alloc's `ExAllocatePool2`/`ExFreePool` and need Windows 10 2004+; the cross image
//! keeps loading on 1803 (WDDM 2.4) and under Wine.

/// Called first in `DriverEntry` (PASSIVE_LEVEL).
pub(crate) fn init() {
    #[cfg(all(target_os = "windows", not(rgpu_wdk)))]
    cross::GLOBAL_ALLOCATOR.init();
}

#[cfg(all(target_os = "windows", not(rgpu_wdk)))]
mod cross {
    use core::panic::PanicInfo;

    #[global_allocator]
    pub(super) static GLOBAL_ALLOCATOR: dxgk::pool::GlobalPool = dxgk::pool::GlobalPool::new();

    /// MSVC's marker that floating point is used; nothing in a driver reads it.
    #[used]
    #[no_mangle]
    static _fltused: i32 = 0;

    /// Bugcheck code used for a Rust panic: MANUALLY_INITIATED_CRASH, parameter 1 = 'RGPU'.
    const PANIC_BUGCHECK: u32 = 0xE2;

    #[panic_handler]
    fn panic(info: &PanicInfo<'_>) -> ! {
        rgpu_log!(error, "panic: {}", info);
        // SAFETY: stopping the machine is the only safe reaction to a broken invariant in
        // kernel mode; KeBugCheckEx never returns.
        unsafe { dxgk_sys::KeBugCheckEx(PANIC_BUGCHECK, 0x5247_5055, 0, 0, 0) }
    }
}

#[cfg(rgpu_wdk)]
mod wdk_flavour {
    use wdk_panic as _;

    #[global_allocator]
    static GLOBAL_ALLOCATOR: wdk_alloc::WdkAllocator = wdk_alloc::WdkAllocator;
}
