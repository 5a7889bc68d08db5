//! The inline kernel routines that are plain memory operations (`inline.rs`), on MDLs laid out
//! as the kernel allocates them: one allocation holding the header and its PFN array. Run
//! under Miri (with `-Zmiri-strict-provenance`) they check that the routines stay inside that
//! allocation and keep the pointer's provenance.

use std::alloc::{alloc_zeroed, dealloc, Layout};

use dxgk_sys as sys;

/// An MDL header followed by `pfns.len()` PFNs in one heap block, as `IoAllocateMdl` does.
struct MdlBlock {
    mdl: *mut sys::MDL,
    layout: Layout,
}

impl MdlBlock {
    fn new(va: usize, byte_count: u32, pfns: &[sys::PFN_NUMBER]) -> Self {
        let bytes = size_of::<sys::MDL>() + size_of_val(pfns);
        let layout = Layout::from_size_align(bytes, align_of::<sys::MDL>()).unwrap();
        // SAFETY: non-zero size.
        let mdl = unsafe { alloc_zeroed(layout) }.cast::<sys::MDL>();
        assert!(!mdl.is_null());
        let page = va & !(sys::PAGE_SIZE_USIZE - 1);
        // SAFETY: `mdl` is a fresh, aligned block large enough for the header.
        unsafe {
            mdl.write(sys::MDL {
                StartVa: std::ptr::without_provenance_mut(page),
                ByteCount: byte_count,
                ByteOffset: (va - page) as u32,
                ..Default::default()
            })
        };
        // SAFETY: the array follows the header inside the block.
        let array = unsafe { sys::MmGetMdlPfnArray(mdl) };
        // SAFETY: `array` has room for `pfns.len()` PFNs (the block's size) and is ours.
        unsafe { std::ptr::copy_nonoverlapping(pfns.as_ptr(), array, pfns.len()) };
        Self { mdl, layout }
    }
}

impl Drop for MdlBlock {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.mdl.cast(), self.layout) };
    }
}

#[test]
fn the_pfn_array_is_read_from_the_block_after_the_header() {
    let pfns = [0x1234, 0x99, 0x1_0000_0000];
    let b = MdlBlock::new(0x7000_0123, 3 * 4096 - 0x200, &pfns);
    // SAFETY: `b.mdl` is a full MDL allocation with 3 PFNs.
    let array = unsafe { sys::MmGetMdlPfnArray(b.mdl) };
    // SAFETY: 3 initialized PFNs inside the block.
    let read = unsafe { std::slice::from_raw_parts(array, 3) };
    assert_eq!(read, pfns);
    // SAFETY: a valid MDL.
    let count = unsafe { sys::MmGetMdlByteCount(b.mdl) };
    // SAFETY: as above.
    let offset = unsafe { sys::MmGetMdlByteOffset(b.mdl) };
    // SAFETY: as above.
    let va = unsafe { sys::MmGetMdlVirtualAddress(b.mdl) };
    assert_eq!(
        (count, offset, va.addr()),
        (3 * 4096 - 0x200, 0x123, 0x7000_0123)
    );
    assert_eq!(
        sys::ADDRESS_AND_SIZE_TO_SPAN_PAGES(va.addr(), count as usize),
        pfns.len()
    );
}

#[test]
fn spin_lock_initialization_zeroes_the_word() {
    let mut lock: sys::KSPIN_LOCK = 0xdead;
    sys::KeInitializeSpinLock(&mut lock);
    assert_eq!(lock, 0);
}
