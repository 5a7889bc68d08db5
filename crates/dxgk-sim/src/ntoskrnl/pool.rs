//! Tagged pool with Driver Verifier's special-pool habits: fresh uninitialized blocks are
//! filled with [`FRESH_FILL`], freed blocks with [`FREED_FILL`] before release, and both ends are
//! guarded with [`GUARD_FILL`] so overruns show up as wrong bytes, not luck.

use std::alloc::{alloc, dealloc, Layout};
use std::collections::{HashMap, VecDeque};
use std::ptr::NonNull;

use dxgk_sys::{POOL_FLAGS, POOL_TYPE, PVOID, SIZE_T, ULONG};

use crate::machine::current;
use crate::ntoskrnl::irql::require_irql_at_most;
use crate::verifier::{driver_call_site, Finding, Rule};

/// Byte pattern of fresh, uninitialized pool (ExAllocatePoolWithTag, POOL_FLAG_UNINITIALIZED).
pub const FRESH_FILL: u8 = 0xC5;
/// Byte pattern written over a block when it is freed.
pub const FREED_FILL: u8 = 0xDF;
/// Byte pattern of the guard areas before and after each block.
pub const GUARD_FILL: u8 = 0xFD;
/// Guard bytes on each side (keeps the user block 16-byte aligned).
pub const GUARD: usize = 32;
/// Largest single pool request the simulator accepts (a test harness limit, not Windows').
pub const MAX_POOL_REQUEST: usize = 256 << 20;

struct Block {
    size: usize,
    tag: u32,
    site: String,
    /// The allocation (guards included), so that blocks the driver leaks are released with
    /// the machine.
    base: Allocation,
}

/// The start of one `alloc`ed pool block, with its provenance (not just its address).
struct Allocation(NonNull<u8>);

// SAFETY: the pool owns the memory behind the pointer; `Allocation` is only dereferenced by
// `PoolState`'s drop, which has exclusive access to it.
unsafe impl Send for Allocation {}

/// Per-machine pool state.
#[derive(Default)]
pub(crate) struct PoolState {
    live: HashMap<usize, Block>,
    recently_freed: VecDeque<usize>,
    pub(crate) total_allocations: u64,
}

/// Tag as the four characters poolmon shows.
pub fn tag_text(tag: u32) -> String {
    tag.to_le_bytes()
        .iter()
        .map(|&b| if b.is_ascii_graphic() { b as char } else { '?' })
        .collect()
}

impl PoolState {
    pub(crate) fn live_blocks(&self) -> Vec<(String, usize)> {
        let mut v: Vec<_> = self
            .live
            .values()
            .map(|b| (tag_text(b.tag), b.size))
            .collect();
        v.sort();
        v
    }

    pub(crate) fn leak_findings(&self) -> Vec<Finding> {
        let mut by_tag: HashMap<u32, (usize, usize, &str)> = HashMap::new();
        for b in self.live.values() {
            let e = by_tag.entry(b.tag).or_insert((0, 0, &b.site));
            e.0 += 1;
            e.1 += b.size;
        }
        let mut out: Vec<Finding> = by_tag
            .into_iter()
            .map(|(tag, (count, bytes, site))| Finding {
                rule: Rule::PoolLeak,
                call: "DriverUnload",
                detail: format!(
                    "{count} block(s), {bytes} bytes of pool tag '{}' still allocated",
                    tag_text(tag)
                ),
                driver_site: format!("first allocated at {site}"),
            })
            .collect();
        out.sort_by(|a, b| a.detail.cmp(&b.detail));
        out
    }
}

impl Drop for PoolState {
    /// Releases the blocks still live (leaks the verifier reported, or a test that stopped
    /// early): without this each leaked driver block leaked host memory too.
    fn drop(&mut self) {
        for (_, block) in self.live.drain() {
            let layout = layout(block.size).expect("layout was valid at allocation");
            // SAFETY: `base` was returned by `alloc` with this layout and is not freed: it is
            // still in `live`, and nothing can free it once the machine is gone.
            unsafe { dealloc(block.base.0.as_ptr(), layout) };
        }
    }
}

fn layout(size: usize) -> Option<Layout> {
    Layout::from_size_align(size.checked_add(2 * GUARD)?, 16).ok()
}

fn allocate(call: &'static str, size: usize, tag: u32, zero: bool) -> PVOID {
    if !require_irql_at_most(call, dxgk_sys::DISPATCH_LEVEL) {
        return std::ptr::null_mut();
    }
    let machine = current();
    machine.count_call(call);
    if size == 0 || size > MAX_POOL_REQUEST {
        if size == 0 {
            machine.report(Finding::here(
                Rule::InvalidArgument,
                call,
                "zero-byte pool request",
            ));
        }
        return std::ptr::null_mut();
    }
    let Some(layout) = layout(size) else {
        return std::ptr::null_mut();
    };
    if crate::fault::inject_on(&machine, call) {
        return std::ptr::null_mut();
    }
    // SAFETY: `layout` has non-zero size.
    let Some(base) = NonNull::new(unsafe { alloc(layout) }) else {
        return std::ptr::null_mut();
    };
    let allocation = Allocation(base);
    let base = base.as_ptr();
    // SAFETY: `base` is a fresh allocation of GUARD + size + GUARD bytes.
    unsafe { base.write_bytes(GUARD_FILL, layout.size()) };
    // SAFETY: the user block lies inside the allocation.
    let user = unsafe { base.add(GUARD) };
    // SAFETY: `user` has `size` writable bytes.
    unsafe { user.write_bytes(if zero { 0 } else { FRESH_FILL }, size) };
    let mut pool = machine.pool();
    pool.total_allocations += 1;
    pool.recently_freed.retain(|&a| a != user as usize);
    pool.live.insert(
        user as usize,
        Block {
            size,
            tag,
            site: driver_call_site(),
            base: allocation,
        },
    );
    user.cast()
}

fn guards_intact(user: *mut u8, size: usize) -> bool {
    let (start, end) = (user.wrapping_sub(GUARD), user.wrapping_add(size));
    // SAFETY: the caller passes a live block: GUARD bytes before and after are ours.
    let before = unsafe { std::slice::from_raw_parts(start, GUARD) };
    // SAFETY: as above.
    let after = unsafe { std::slice::from_raw_parts(end, GUARD) };
    before.iter().chain(after).all(|&b| b == GUARD_FILL)
}

/// `ExAllocatePoolWithTag`. IRQL ≤ DISPATCH_LEVEL. The block is *not* zeroed.
#[no_mangle]
pub extern "system" fn ExAllocatePoolWithTag(
    pool_type: POOL_TYPE,
    size: SIZE_T,
    tag: ULONG,
) -> PVOID {
    if pool_type == dxgk_sys::PagedPool
        && !require_irql_at_most("ExAllocatePoolWithTag(PagedPool)", dxgk_sys::APC_LEVEL)
    {
        return std::ptr::null_mut();
    }
    allocate("ExAllocatePoolWithTag", size, tag, false)
}

/// `ExAllocatePool2` (only reachable through MmGetSystemRoutineAddress on machines that have
/// it). Zeroes unless POOL_FLAG_UNINITIALIZED.
pub extern "system" fn ExAllocatePool2(flags: POOL_FLAGS, size: SIZE_T, tag: ULONG) -> PVOID {
    if flags & (dxgk_sys::POOL_FLAG_NON_PAGED | dxgk_sys::POOL_FLAG_PAGED) == 0 {
        current().report(Finding::here(
            Rule::InvalidArgument,
            "ExAllocatePool2",
            format!("flags {flags:#x} name no pool type"),
        ));
        return std::ptr::null_mut();
    }
    if flags & dxgk_sys::POOL_FLAG_PAGED != 0
        && !require_irql_at_most("ExAllocatePool2(PAGED)", dxgk_sys::APC_LEVEL)
    {
        return std::ptr::null_mut();
    }
    let zero = flags & dxgk_sys::POOL_FLAG_UNINITIALIZED == 0;
    allocate("ExAllocatePool2", size, tag, zero)
}

/// `ExFreePoolWithTag`. IRQL ≤ DISPATCH_LEVEL.
#[no_mangle]
pub extern "system" fn ExFreePoolWithTag(p: PVOID, tag: ULONG) {
    const CALL: &str = "ExFreePoolWithTag";
    require_irql_at_most(CALL, dxgk_sys::DISPATCH_LEVEL);
    let machine = current();
    let user = p.cast::<u8>();
    let block = {
        let mut pool = machine.pool();
        match pool.live.remove(&(user as usize)) {
            Some(b) => {
                pool.recently_freed.push_back(user as usize);
                if pool.recently_freed.len() > 4096 {
                    pool.recently_freed.pop_front();
                }
                b
            }
            None => {
                let double = pool.recently_freed.contains(&(user as usize));
                drop(pool);
                machine.report(Finding::here(
                    Rule::PoolUnknownPointer,
                    CALL,
                    if double {
                        format!("double free of {p:p}")
                    } else {
                        format!("{p:p} is not a live pool block")
                    },
                ));
                return;
            }
        }
    };
    if block.tag != tag {
        machine.report(Finding::here(
            Rule::PoolTagMismatch,
            CALL,
            format!(
                "block {p:p} allocated with tag '{}' freed with tag '{}'",
                tag_text(block.tag),
                tag_text(tag)
            ),
        ));
    }
    if !guards_intact(user, block.size) {
        machine.report(Finding::here(
            Rule::PoolOverrun,
            CALL,
            format!(
                "guard bytes around {p:p} ({} bytes, tag '{}', allocated at {}) were overwritten",
                block.size,
                tag_text(block.tag),
                block.site
            ),
        ));
    }
    crate::memory::check_pool_free(&machine, user as usize, block.size);
    // SAFETY: `user` is a live block of `block.size` bytes that we now own again.
    unsafe { user.write_bytes(FREED_FILL, block.size) };
    let layout = layout(block.size).expect("layout was valid at allocation");
    let base = user.wrapping_sub(GUARD);
    // SAFETY: `user - GUARD` is the base returned by `alloc` with this layout.
    unsafe { dealloc(base, layout) };
}
