// A physical memory object cannot be destroyed while a CPU mapping of it exists:
// UnmapPhysicalMemory before DestroyPhysicalMemoryObject holds by construction.
use dxgk::interface::DxgkInterface;
use dxgk::irql::Passive;
use dxgk::pmo::{Backing, CpuMapping, PhysicalMemoryObject};

fn misuse(iface: &DxgkInterface, passive: &Passive) {
    let object = PhysicalMemoryObject::create(iface, passive, 4096, dxgk_sys::DXGK_MEMORY_CACHING_TYPE_CACHED, Backing::ANYWHERE).unwrap();
    let mapping = CpuMapping::map(iface, passive, &object, 0, 4096).unwrap();
    drop(object);
    drop(mapping);
}

fn main() {}
