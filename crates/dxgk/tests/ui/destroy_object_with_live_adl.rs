// A physical memory object cannot be destroyed while an ADL of it exists: FreeAdl before
// DestroyPhysicalMemoryObject holds by construction.
use dxgk::interface::DxgkInterface;
use dxgk::irql::Passive;
use dxgk::pmo::{Adl, Backing, Contiguity, PhysicalMemoryObject};

fn misuse(iface: &DxgkInterface, passive: &Passive) {
    let object = PhysicalMemoryObject::create(iface, passive, 4096, dxgk_sys::DXGK_MEMORY_CACHING_TYPE_CACHED, Backing::ANYWHERE).unwrap();
    let adl = Adl::allocate(iface, passive, &object, 0, 4096, Contiguity::Any).unwrap();
    drop(object);
    drop(adl);
}

fn main() {}
