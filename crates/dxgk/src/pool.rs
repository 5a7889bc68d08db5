//! Tagged non-paged pool.
//!
//! `ExAllocatePool2` exists only from Windows 10 2004 and is missing under Wine, while rgpu
//! must load on 1803 (WDDM 2.4). So [`Pool::resolve`] looks it up at run time with
//! `MmGetSystemRoutineAddress` and falls back to `ExAllocatePoolWithTag(NonPagedPoolNx)`.
//! A [`Pool`] is a value, not a global: the adapter keeps the one it resolved, so a process
//! hosting several simulated kernels never mixes them up.
//!
//! Alignment: pool blocks are 16-byte aligned (`MEMORY_ALLOCATION_ALIGNMENT` on x64); types
//! needing more are rejected at compile time by [`PoolBox`]. Page tables and device memory never
//! come from pool (they come from Dxgkrnl's IOMMU callbacks).

use core::alloc::{GlobalAlloc, Layout};
use core::marker::PhantomData;
use core::mem::MaybeUninit;
use core::mem::{align_of, size_of};
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};

use dxgk_sys::{PFN_ExAllocatePool2, UNICODE_STRING};

use crate::{NtError, NtResult};

/// Alignment every pool block has on x64.
pub const POOL_ALIGNMENT: usize = 16;

/// A four-character pool tag, shown by `!poolused` / poolmon (`PoolTag::new(*b"Rgpu")`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct PoolTag(pub u32);

impl PoolTag {
    /// The tag whose memory dump reads `name`.
    pub const fn new(name: [u8; 4]) -> Self {
        Self(u32::from_le_bytes(name))
    }
}

const POOL2_NAME: [u16; 16] = {
    let s = b"ExAllocatePool2\0";
    let mut out = [0u16; 16];
    let mut i = 0;
    while i < s.len() {
        out[i] = s[i] as u16;
        i += 1;
    }
    out
};

fn lookup_pool2() -> Option<PFN_ExAllocatePool2> {
    let mut name_buf = POOL2_NAME;
    let mut name = UNICODE_STRING {
        Length: 15 * 2,
        MaximumLength: 16 * 2,
        Buffer: name_buf.as_mut_ptr(),
    };
    // SAFETY: `name` is a valid NUL-terminated UNICODE_STRING that outlives the call.
    let routine = unsafe { dxgk_sys::MmGetSystemRoutineAddress(&mut name) };
    if routine.is_null() {
        None
    } else {
        // SAFETY: the kernel exports ExAllocatePool2 with exactly this signature.
        Some(unsafe {
            core::mem::transmute::<*mut core::ffi::c_void, PFN_ExAllocatePool2>(routine)
        })
    }
}

/// Which kernel routine backs a [`Pool`].
#[derive(Clone, Copy)]
pub struct Pool {
    pool2: Option<PFN_ExAllocatePool2>,
}

impl core::fmt::Debug for Pool {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Pool")
            .field("uses_pool2", &self.uses_pool2())
            .finish()
    }
}

impl Pool {
    /// Looks up `ExAllocatePool2`. PASSIVE_LEVEL (MmGetSystemRoutineAddress).
    pub fn resolve() -> Self {
        Self {
            pool2: lookup_pool2(),
        }
    }

    /// True when allocations go through `ExAllocatePool2`, false for the
    /// `ExAllocatePoolWithTag` fallback.
    pub fn uses_pool2(&self) -> bool {
        self.pool2.is_some()
    }

    /// Allocates `size` zeroed bytes of non-paged, non-executable pool. IRQL ≤ DISPATCH_LEVEL.
    pub fn alloc_zeroed(&self, tag: PoolTag, size: usize) -> Option<NonNull<u8>> {
        if size == 0 {
            return None;
        }
        let p = match self.pool2 {
            // SAFETY: `f` is the kernel's ExAllocatePool2; non-paged pool is allowed at
            // IRQL ≤ DISPATCH_LEVEL, and ExAllocatePool2 zeroes the block by default.
            Some(f) => unsafe { f(dxgk_sys::POOL_FLAG_NON_PAGED, size, tag.0) }.cast::<u8>(),
            None => {
                // SAFETY: plain allocation call; the block is zeroed below before use.
                let p = unsafe {
                    dxgk_sys::ExAllocatePoolWithTag(dxgk_sys::NonPagedPoolNx, size, tag.0)
                }
                .cast::<u8>();
                if !p.is_null() {
                    // SAFETY: `p` is a fresh pool block of `size` bytes.
                    unsafe { core::ptr::write_bytes(p, 0, size) };
                }
                p
            }
        };
        NonNull::new(p)
    }

    /// Frees a block from [`Pool::alloc_zeroed`].
    ///
    /// # Safety
    /// `p` must come from `alloc_zeroed` with the same `tag` and must not be used afterwards.
    pub unsafe fn free(p: NonNull<u8>, tag: PoolTag) {
        // SAFETY: the caller guarantees `p` is a live pool block with this tag.
        unsafe { dxgk_sys::ExFreePoolWithTag(p.as_ptr().cast(), tag.0) }
    }
}

/// A `T` in its own tagged non-paged pool block: the pool counterpart of `Box<T>`.
///
/// # Invariants
/// `ptr` points to a pool block allocated with `tag`, 16-byte aligned, holding an initialized
/// `T` that this `PoolBox` owns; the block is freed exactly once, in `Drop`.
pub struct PoolBox<T> {
    ptr: NonNull<T>,
    tag: PoolTag,
    _owns: PhantomData<T>,
}

// SAFETY: PoolBox owns its T exclusively (like Box), so it is Send/Sync when T is.
unsafe impl<T: Send> Send for PoolBox<T> {}
// SAFETY: as above; shared access only hands out &T.
unsafe impl<T: Sync> Sync for PoolBox<T> {}

impl<T> PoolBox<T> {
    const ALIGN_OK: () = assert!(align_of::<T>() <= POOL_ALIGNMENT && size_of::<T>() > 0);

    /// Moves `value` into a new pool block. Fails with STATUS_INSUFFICIENT_RESOURCES.
    pub fn try_new(pool: &Pool, tag: PoolTag, value: T) -> NtResult<Self> {
        #[allow(clippy::let_unit_value)]
        let () = Self::ALIGN_OK;
        let raw = pool
            .alloc_zeroed(tag, size_of::<T>())
            .ok_or(NtError::INSUFFICIENT_RESOURCES)?
            .cast::<T>();
        // SAFETY: `raw` is a fresh block of size_of::<T>() bytes, aligned for T (checked above).
        unsafe { raw.as_ptr().write(value) };
        // INVARIANT: the block was allocated with `tag` and now holds an initialized T.
        Ok(Self {
            ptr: raw,
            tag,
            _owns: PhantomData,
        })
    }

    /// A new pool block initialized in place by `init`, which gets the (zeroed, uninitialized
    /// as a `T`) block and must return a reference to that same block as an initialized `T` —
    /// for values too big to build on a 24 KiB kernel stack and move. A reference to any other
    /// `T` is refused (STATUS_INVALID_PARAMETER). On any failure the block is freed and nothing
    /// is dropped. Fails with STATUS_INSUFFICIENT_RESOURCES or `init`'s error.
    pub fn try_new_in_place(
        pool: &Pool,
        tag: PoolTag,
        init: impl FnOnce(&mut MaybeUninit<T>) -> NtResult<&mut T>,
    ) -> NtResult<Self> {
        #[allow(clippy::let_unit_value)]
        let () = Self::ALIGN_OK;
        let raw = pool
            .alloc_zeroed(tag, size_of::<T>())
            .ok_or(NtError::INSUFFICIENT_RESOURCES)?
            .cast::<MaybeUninit<T>>();
        // SAFETY: `raw` is a fresh, aligned block of size_of::<T>() bytes that only this
        // function references; MaybeUninit<T> needs no initialization.
        let slot = unsafe { &mut *raw.as_ptr() };
        let done = init(slot).map(|t| core::ptr::eq(t, raw.as_ptr().cast::<T>()));
        if done != Ok(true) {
            // SAFETY: the block from alloc_zeroed with `tag`; the slot borrow ended with `init`.
            unsafe { Pool::free(raw.cast(), tag) };
            return Err(done.err().unwrap_or(NtError::INVALID_PARAMETER));
        }
        // INVARIANT: `init` returned the block itself as an initialized T (a `&mut T` to it can
        // only exist once it is initialized).
        Ok(Self {
            ptr: raw.cast(),
            tag,
            _owns: PhantomData,
        })
    }

    /// Gives up ownership; the OS keeps the pointer (e.g. a miniport device context).
    pub fn into_raw(self) -> NonNull<T> {
        let p = self.ptr;
        core::mem::forget(self);
        p
    }

    /// Takes ownership back from [`PoolBox::into_raw`].
    ///
    /// # Safety
    /// `ptr` must come from `into_raw` of a `PoolBox<T>` with this `tag`, and not be reclaimed
    /// twice.
    pub unsafe fn from_raw(ptr: NonNull<T>, tag: PoolTag) -> Self {
        // INVARIANT: guaranteed by the caller.
        Self {
            ptr,
            tag,
            _owns: PhantomData,
        }
    }

    /// The tag of this block.
    pub fn tag(&self) -> PoolTag {
        self.tag
    }
}

impl<T> Deref for PoolBox<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: by the invariant `ptr` holds an initialized T owned by self.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T> DerefMut for PoolBox<T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: by the invariant `ptr` holds an initialized T owned exclusively by self.
        unsafe { self.ptr.as_mut() }
    }
}

impl<T> Drop for PoolBox<T> {
    fn drop(&mut self) {
        // SAFETY: by the invariant the T is initialized and owned; it is dropped once, here.
        unsafe { core::ptr::drop_in_place(self.ptr.as_ptr()) };
        // SAFETY: by the invariant the block came from pool with `self.tag`; freed once.
        unsafe { Pool::free(self.ptr.cast(), self.tag) };
    }
}

/// The global allocator for the Windows builds of a driver (`alloc` support).
///
/// It uses `ExAllocatePool2` once [`GlobalPool::init`] (PASSIVE_LEVEL, from `DriverEntry`) found
/// it, and `ExAllocatePoolWithTag` otherwise. Requests aligned above 16 bytes fail (return
/// NULL) rather than silently misalign.
pub struct GlobalPool {
    pool2: AtomicUsize,
}

/// Pool tag of `alloc` allocations.
pub const GLOBAL_POOL_TAG: PoolTag = PoolTag::new(*b"RsAl");

impl GlobalPool {
    /// An allocator that uses the fallback until [`GlobalPool::init`] runs.
    pub const fn new() -> Self {
        Self {
            pool2: AtomicUsize::new(0),
        }
    }

    /// Resolves `ExAllocatePool2`. PASSIVE_LEVEL; call once from `DriverEntry`.
    pub fn init(&self) {
        if let Some(f) = lookup_pool2() {
            self.pool2.store(f as usize, Ordering::Release);
        }
    }

    fn pool(&self) -> Pool {
        let raw = self.pool2.load(Ordering::Acquire);
        let pool2 = if raw == 0 {
            None
        } else {
            // SAFETY: `raw` was stored from a valid PFN_ExAllocatePool2 in `init`.
            Some(unsafe { core::mem::transmute::<usize, PFN_ExAllocatePool2>(raw) })
        };
        Pool { pool2 }
    }
}

impl Default for GlobalPool {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: blocks are at least `layout.size()` bytes, 16-byte aligned, and larger alignments are
// refused with NULL; dealloc frees with the same tag.
unsafe impl GlobalAlloc for GlobalPool {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() > POOL_ALIGNMENT {
            return core::ptr::null_mut();
        }
        self.pool()
            .alloc_zeroed(GLOBAL_POOL_TAG, layout.size().max(1))
            .map_or(core::ptr::null_mut(), NonNull::as_ptr)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        if let Some(p) = NonNull::new(ptr) {
            // SAFETY: GlobalAlloc guarantees `ptr` came from `alloc` above, with this tag.
            unsafe { Pool::free(p, GLOBAL_POOL_TAG) };
        }
    }
}
