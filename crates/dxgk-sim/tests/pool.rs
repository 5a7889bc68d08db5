//! The pool rules fire on a misbehaving caller and stay silent on a correct one.

use dxgk_sim::{Machine, MachineConfig, Rule};
use dxgk_sys as sys;

const TAG: u32 = u32::from_le_bytes(*b"Test");

fn machine() -> Machine {
    Machine::new(MachineConfig::windows_11_22h2())
}

fn alloc(size: usize) -> *mut u8 {
    // SAFETY: plain pool allocation on the current simulated machine.
    unsafe { sys::ExAllocatePoolWithTag(sys::NonPagedPoolNx, size, TAG) }.cast()
}

fn free(p: *mut u8, tag: u32) {
    // SAFETY: the simulator validates the pointer; misuse is what these tests provoke.
    unsafe { sys::ExFreePoolWithTag(p.cast(), tag) }
}

#[test]
fn balanced_alloc_and_free_has_no_findings() {
    let m = machine();
    m.enter(|| {
        let p = alloc(100);
        assert!(!p.is_null());
        free(p, TAG);
    });
    m.check_pool_leaks();
    m.assert_clean();
    assert_eq!(m.pool_allocation_count(), 1);
}

#[test]
fn fresh_pool_from_with_tag_is_patterned_not_zeroed() {
    let m = machine();
    m.enter(|| {
        let p = alloc(64);
        // SAFETY: `p` is a live 64-byte block.
        let bytes = unsafe { std::slice::from_raw_parts(p, 64) };
        assert!(bytes
            .iter()
            .all(|&b| b == dxgk_sim::ntoskrnl::pool::FRESH_FILL));
        free(p, TAG);
    });
    m.assert_clean();
}

#[test]
fn leak_is_reported_per_tag_with_allocation_site() {
    let m = machine();
    m.enter(|| {
        alloc(10);
        alloc(20);
    });
    m.check_pool_leaks();
    let leaks = m.findings_of(Rule::PoolLeak);
    assert_eq!(leaks.len(), 1, "one finding per tag: {leaks:?}");
    assert!(
        leaks[0]
            .detail
            .contains("2 block(s), 30 bytes of pool tag 'Test'"),
        "{}",
        leaks[0]
    );
    assert!(
        leaks[0].driver_site.contains("pool"),
        "site names this test file: {}",
        leaks[0].driver_site
    );
}

#[test]
fn double_free_is_reported() {
    let m = machine();
    m.enter(|| {
        let p = alloc(8);
        free(p, TAG);
        free(p, TAG);
    });
    let f = m.findings_of(Rule::PoolUnknownPointer);
    assert_eq!(f.len(), 1);
    assert!(f[0].detail.contains("double free"), "{}", f[0]);
}

#[test]
fn freeing_a_foreign_pointer_is_reported() {
    let m = machine();
    let mut local = 0u64;
    m.enter(|| free((&mut local as *mut u64).cast(), TAG));
    let f = m.findings_of(Rule::PoolUnknownPointer);
    assert_eq!(f.len(), 1);
    assert!(f[0].detail.contains("not a live pool block"));
}

#[test]
fn wrong_tag_on_free_is_reported() {
    let m = machine();
    m.enter(|| {
        let p = alloc(8);
        free(p, u32::from_le_bytes(*b"Oops"));
    });
    let f = m.findings_of(Rule::PoolTagMismatch);
    assert_eq!(f.len(), 1);
    assert!(
        f[0].detail.contains("'Test'") && f[0].detail.contains("'Oops'"),
        "{}",
        f[0]
    );
}

#[test]
fn overrun_past_the_block_is_reported_at_free() {
    let m = machine();
    m.enter(|| {
        let p = alloc(16);
        // SAFETY: deliberately writes one byte past the block into the simulator's guard area
        // (which exists, so this is not UB in the host process).
        unsafe { p.wrapping_add(16).write(0) };
        free(p, TAG);
    });
    assert_eq!(m.findings_of(Rule::PoolOverrun).len(), 1);
}

#[test]
fn pool_above_dispatch_level_is_refused_and_reported() {
    let m = machine();
    m.enter(|| {
        // SAFETY: simulated IRQL change; lowered again below.
        let old = unsafe { sys::KeRaiseIrql(sys::HIGH_LEVEL) };
        let p = alloc(8);
        // SAFETY: restores the IRQL raised above.
        unsafe { sys::KeLowerIrql(old) };
        assert!(p.is_null());
    });
    let f = m.findings_of(Rule::IrqlTooHigh);
    assert_eq!(f.len(), 1);
    assert!(f[0].detail.contains("IRQL 15"), "{}", f[0]);
}

#[test]
fn pool2_is_only_resolvable_where_the_machine_has_it() {
    for (config, expect) in [
        (MachineConfig::windows_10_1803(), false),
        (MachineConfig::windows_11_22h2(), true),
    ] {
        let m = Machine::new(config);
        let found = m.enter(|| dxgk::pool::Pool::resolve().uses_pool2());
        assert_eq!(found, expect, "{}", m.config().name);
        m.assert_clean();
    }
}

#[test]
fn debug_print_is_captured_per_machine() {
    let a = machine();
    let b = machine();
    a.enter(|| dxgk::dbg_print!(dxgk::debug::Level::Info, "hello from {}", "a"));
    b.enter(|| dxgk::dbg_print!(dxgk::debug::Level::Error, "hello from {}", "b"));
    assert!(a.debug_contains("hello from a") && !a.debug_contains("hello from b"));
    assert_eq!(b.debug_output()[0].level, sys::DPFLTR_ERROR_LEVEL);
}

#[test]
fn long_debug_messages_are_truncated_not_overflowed() {
    let m = machine();
    let long = "x".repeat(1000);
    m.enter(|| dxgk::dbg_print!(dxgk::debug::Level::Info, "{long}"));
    let line = &m.debug_output()[0].text;
    assert_eq!(
        line.len(),
        dxgk::debug::MAX_MESSAGE - 1,
        "newline stripped by capture"
    );
    assert!(line.ends_with("..."));
}

/// `DbgPrintEx` is the C shim (`vsnprintf`) in normal builds and Rust under Miri: both must
/// format the portable printf subset the same way.
#[test]
fn dbg_print_ex_formats_the_portable_printf_subset() {
    let m = machine();
    let value = 0x1234u32;
    let p = core::ptr::from_ref(&value).cast::<core::ffi::c_void>();
    m.enter(|| {
        // SAFETY: every conversion has an argument of its C type; the strings are
        // NUL-terminated and outlive the call.
        unsafe {
            sys::DbgPrintEx(
                sys::DPFLTR_IHVVIDEO_ID,
                sys::DPFLTR_INFO_LEVEL,
                c"%d|%5d|%-5d|%05d|%.3u|%x|%08X|%s|%.2s|%c|%llx|%zu|%p|100%%\n"
                    .as_ptr()
                    .cast(),
                42i32,
                42i32,
                42i32,
                -5i32,
                7u32,
                0xbeefu32,
                0xbeefu32,
                c"abc".as_ptr(),
                c"abc".as_ptr(),
                i32::from(b'Z'),
                0x1_0000_0000u64,
                9usize,
                p,
            )
        };
    });
    let expected = format!(
        "42|   42|42   |-0005|007|beef|0000BEEF|abc|ab|Z|100000000|9|{:#x}|100%",
        p.addr()
    );
    assert_eq!(m.debug_output()[0].text, expected);
}
