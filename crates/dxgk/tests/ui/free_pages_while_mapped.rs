// The pages cannot be freed while an IoMmuMapping of them exists: unmap-before-free holds by
// construction.
use dxgk::interface::DxgkInterface;
use dxgk::irql::Passive;
use dxgk::memory::{IoMmuMapping, MdlPages};

fn misuse(iface: &DxgkInterface, passive: &Passive) {
    let pages = MdlPages::allocate(iface, passive, 4096, dxgk_sys::DXGK_MEMORY_CACHING_TYPE_CACHED).unwrap();
    let mapping = IoMmuMapping::map(iface, passive, &pages).unwrap();
    drop(pages);
    drop(mapping);
}

fn main() {}
