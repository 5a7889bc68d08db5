//! The adapter's hardware resources: device information and MMIO mapping.

use core::ptr::NonNull;

use dxgk_sys::{CmResourceTypeMemory, DXGK_DEVICE_INFO, HANDLE, LARGE_INTEGER, PVOID};

use crate::interface::DxgkInterface;
use crate::irql::Passive;
use crate::{NtError, NtResult};

/// A memory range from the adapter's translated resources.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryResource {
    /// Translated (CPU physical) start address.
    pub start: i64,
    /// Length in bytes.
    pub length: u32,
}

/// `DxgkCbGetDeviceInformation`, reduced to what a miniport uses.
#[derive(Clone, Copy, Debug)]
pub struct DeviceInfo {
    /// The first memory resource (the device's register BAR), if any.
    pub first_memory: Option<MemoryResource>,
    /// Number of memory resources found.
    pub memory_resources: usize,
}

impl DeviceInfo {
    /// Queries Dxgkrnl and walks the translated resource list. PASSIVE_LEVEL.
    pub fn query(iface: &DxgkInterface, _passive: &Passive) -> NtResult<Self> {
        let get = iface.get_device_information()?;
        let mut info = DXGK_DEVICE_INFO::default();
        // SAFETY: `info` is a valid out-parameter; PASSIVE_LEVEL per the token.
        crate::status::to_result(unsafe { get(iface.device_handle(), &mut info) })?;
        let mut result = DeviceInfo {
            first_memory: None,
            memory_resources: 0,
        };
        let list = info.TranslatedResourceList;
        if list.is_null() {
            return Ok(result);
        }
        // SAFETY: Dxgkrnl returns a valid CM_RESOURCE_LIST that lives as long as the adapter.
        let full_count = unsafe { (*list).Count } as usize;
        // SAFETY: as above; `List` is the first of `Count` full descriptors.
        let mut full = unsafe { core::ptr::addr_of!((*list).List) }
            .cast::<dxgk_sys::CM_FULL_RESOURCE_DESCRIPTOR>();
        for _ in 0..full_count {
            // SAFETY: `full` points at one of the `Count` full descriptors.
            let partial_count = unsafe { (*full).PartialResourceList.Count } as usize;
            // SAFETY: as above; the partial descriptors follow inline.
            let partials =
                unsafe { core::ptr::addr_of!((*full).PartialResourceList.PartialDescriptors) }
                    .cast::<dxgk_sys::CM_PARTIAL_RESOURCE_DESCRIPTOR>();
            for i in 0..partial_count {
                // SAFETY: `i < partial_count` descriptors follow inline.
                let p = unsafe { partials.add(i) };
                // SAFETY: `p` points at a descriptor (pack(4) layout: read unaligned).
                let d = unsafe { p.read_unaligned() };
                if d.Type == CmResourceTypeMemory {
                    // SAFETY: Type says the `Memory` member of the union is valid.
                    let m = unsafe { d.u.Memory };
                    result.memory_resources += 1;
                    if result.first_memory.is_none() {
                        result.first_memory = Some(MemoryResource {
                            // SAFETY: LARGE_INTEGER is plain data; QuadPart covers all of it.
                            start: unsafe { m.Start.QuadPart },
                            length: m.Length,
                        });
                    }
                }
            }
            // SAFETY: the next full descriptor starts right after this one's partial array.
            full = unsafe { partials.add(partial_count) }.cast();
        }
        Ok(result)
    }
}

/// A register BAR mapped with `DxgkCbMapMemory` (non-cached, kernel mode).
///
/// # Invariants
/// `base` is the mapping of `length` bytes returned by DxgkCbMapMemory on `adapter`; it is
/// unmapped exactly once, in `Drop`.
pub struct Mmio {
    adapter: HANDLE,
    unmap: dxgk_sys::PFN_DXGKCB_UNMAP_MEMORY,
    base: NonNull<u32>,
    length: u32,
}

// SAFETY: MMIO registers may be accessed from any processor; accesses are volatile.
unsafe impl Send for Mmio {}
// SAFETY: as above; the register block itself arbitrates concurrent access.
unsafe impl Sync for Mmio {}

impl core::fmt::Debug for Mmio {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Mmio")
            .field("length", &self.length)
            .finish()
    }
}

impl Mmio {
    /// Maps `resource`. PASSIVE_LEVEL.
    pub fn map(
        iface: &DxgkInterface,
        _passive: &Passive,
        resource: MemoryResource,
    ) -> NtResult<Self> {
        let map = iface.map_memory()?;
        let unmap = iface.unmap_memory()?;
        if resource.length < 4 {
            return Err(NtError::INVALID_PARAMETER);
        }
        let mut va: PVOID = core::ptr::null_mut();
        // SAFETY: valid arguments and out-parameter; PASSIVE_LEVEL per the token.
        let status = unsafe {
            map(
                iface.device_handle(),
                LARGE_INTEGER {
                    QuadPart: resource.start,
                },
                resource.length,
                0,
                0,
                dxgk_sys::MmNonCached,
                &mut va,
            )
        };
        crate::status::to_result(status)?;
        let base = NonNull::new(va.cast::<u32>()).ok_or(NtError::INSUFFICIENT_RESOURCES)?;
        // INVARIANT: a successful mapping of `length` bytes.
        Ok(Self {
            adapter: iface.device_handle(),
            unmap,
            base,
            length: resource.length,
        })
    }

    /// Mapped length in bytes.
    pub fn len(&self) -> u32 {
        self.length
    }

    /// Always false for a mapped BAR.
    pub fn is_empty(&self) -> bool {
        self.length == 0
    }

    fn register(&self, offset: u32) -> Option<*mut u32> {
        (offset.is_multiple_of(4) && offset.checked_add(4)? <= self.length)
            // SAFETY: `offset + 4 <= length`: inside the mapping.
            .then(|| unsafe { self.base.as_ptr().byte_add(offset as usize) })
    }

    /// Reads the 32-bit register at `offset`; out-of-range or unaligned offsets read as
    /// all-ones (what a PCI read of a missing device returns). Any IRQL.
    pub fn read(&self, offset: u32) -> u32 {
        match self.register(offset) {
            // SAFETY: `r` is an aligned register inside the mapping.
            Some(r) => unsafe { dxgk_sys::READ_REGISTER_ULONG(r) },
            None => u32::MAX,
        }
    }

    /// Writes the 32-bit register at `offset`; out-of-range or unaligned writes are dropped.
    /// Any IRQL.
    pub fn write(&self, offset: u32, value: u32) {
        if let Some(r) = self.register(offset) {
            // SAFETY: `r` is an aligned register inside the mapping.
            unsafe { dxgk_sys::WRITE_REGISTER_ULONG(r, value) }
        }
    }
}

impl Drop for Mmio {
    fn drop(&mut self) {
        // SAFETY: the mapping came from DxgkCbMapMemory on this adapter; unmapped once.
        let _ = unsafe { (self.unmap)(self.adapter, self.base.as_ptr().cast()) };
    }
}

/// Which bus enumerated a device, from its PDO (`IoGetDeviceProperty`,
/// `DevicePropertyEnumeratorName`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enumerator {
    /// `ROOT`: a root-enumerated (software-installed) device, e.g. `Root\rgpu`.
    Root,
    /// Any other bus (`PCI`, …).
    Bus,
}

impl Enumerator {
    /// Asks PnP which bus enumerated the device whose PDO is `pdo` (the one AddDevice got).
    /// PASSIVE_LEVEL. The name is compared case-insensitively with `ROOT`; a name longer than
    /// 31 characters is some other bus.
    ///
    /// # Safety
    /// `pdo` must be a valid physical device object (AddDevice's `PhysicalDeviceObject`).
    pub unsafe fn of_pdo(pdo: *mut dxgk_sys::DEVICE_OBJECT, _: &Passive) -> NtResult<Self> {
        let mut name = [0u16; 32];
        let mut len: dxgk_sys::ULONG = 0;
        // SAFETY: `pdo` is a valid PDO per the caller; the buffer and length are ours and the
        // size passed is the buffer's.
        let status = unsafe {
            dxgk_sys::IoGetDeviceProperty(
                pdo,
                dxgk_sys::DevicePropertyEnumeratorName,
                core::mem::size_of_val(&name) as dxgk_sys::ULONG,
                name.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if status == dxgk_sys::STATUS_BUFFER_TOO_SMALL {
            return Ok(Enumerator::Bus);
        }
        crate::status::to_result(status)?;
        let chars = (len as usize / 2).min(name.len());
        let text = name[..chars].split(|&c| c == 0).next().unwrap_or(&[]);
        let root = text.len() == 4
            && text
                .iter()
                .zip("ROOT".encode_utf16())
                .all(|(&c, r)| c == r || c == r + 32);
        Ok(if root {
            Enumerator::Root
        } else {
            Enumerator::Bus
        })
    }
}
