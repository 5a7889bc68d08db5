//! WDDM 3.0 IOMMU DMA remapping memory: physical memory objects, address descriptor lists
//! (ADLs) and their CPU mappings, through the callbacks that supersede the 2.4 ones in
//! [`crate::memory`] for a driver that opted in to DMA remapping.
//!
//! * [`PhysicalMemoryObject`] owns memory from `DxgkCbCreatePhysicalMemoryObject`, opened on
//!   the adapter (so it has an `hAdapterMemoryObject`), freed with
//!   `DxgkCbDestroyPhysicalMemoryObject`.
//! * [`Adl`] borrows an object and holds a `DxgkCbAllocateAdl` list: the **device** addresses of
//!   a range of it. They may be logical (remapped) or physical, contiguous or a page list; a
//!   driver must assume neither. Freed with `DxgkCbFreeAdl`.
//! * [`CpuMapping`] borrows an object and holds a `DxgkCbMapPhysicalMemory` kernel VA range,
//!   unmapped with `DxgkCbUnmapPhysicalMemory`.
//!
//! Because ADLs and mappings borrow the object, they are always dropped before it: Dxgkrnl
//! forbids destroying an object that still has ADLs or mappings. Everything here is
//! PASSIVE_LEVEL: constructors take a [`Passive`] token; `Drop` must run at PASSIVE_LEVEL too.

use core::ptr::NonNull;

use dxgk_sys::{
    DXGKARGCB_ALLOCATE_ADL, DXGKARGCB_CREATE_PHYSICAL_MEMORY_OBJECT,
    DXGKARGCB_DESTROY_PHYSICAL_MEMORY_OBJECT, DXGKARGCB_FREE_ADL, DXGKARGCB_MAP_PHYSICAL_MEMORY,
    DXGKARGCB_UNMAP_PHYSICAL_MEMORY, DXGK_ADL, DXGK_MEMORY_CACHING_TYPE, HANDLE, LARGE_INTEGER,
};

use crate::interface::DxgkInterface;
use crate::irql::Passive;
use crate::memory::{LogicalAddress, PAGE_SIZE};
use crate::{NtError, NtResult};

/// Where the pages of a [`PhysicalMemoryObject`] come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backing {
    /// `DXGK_PHYSICAL_MEMORY_TYPE_MDL`: pages anywhere in `[low, high]` physical, not contiguous.
    Pages {
        /// Lowest acceptable physical address.
        low: u64,
        /// Highest acceptable physical address.
        high: u64,
    },
    /// `DXGK_PHYSICAL_MEMORY_TYPE_CONTIGUOUS_MEMORY`: physically contiguous pages in
    /// `[low, high]` not crossing a multiple of `boundary` (0: no boundary).
    Contiguous { low: u64, high: u64, boundary: u64 },
}

impl Backing {
    /// Pages anywhere.
    pub const ANYWHERE: Backing = Backing::Pages {
        low: 0,
        high: i64::MAX as u64,
    };
}

fn large(v: u64) -> LARGE_INTEGER {
    LARGE_INTEGER {
        QuadPart: v.min(i64::MAX as u64) as i64,
    }
}

/// Memory from `DxgkCbCreatePhysicalMemoryObject`, opened on the adapter.
///
/// # Invariants
/// `object` / `adapter_object` are the handles a successful create returned for `bytes`
/// bytes (whole pages) with `hAdapter` = the adapter; destroyed exactly once, in `Drop`, after
/// every [`Adl`] and [`CpuMapping`] of it (they borrow `self`).
pub struct PhysicalMemoryObject {
    destroy: dxgk_sys::PFN_DXGKCB_DESTROYPHYSICALMEMORYOBJECT,
    object: HANDLE,
    adapter_object: HANDLE,
    bytes: usize,
}

// SAFETY: the object is owned exclusively; the callbacks may be called from any thread at
// PASSIVE_LEVEL.
unsafe impl Send for PhysicalMemoryObject {}
// SAFETY: no interior mutability: `&self` only reads the handles and the size.
unsafe impl Sync for PhysicalMemoryObject {}

impl core::fmt::Debug for PhysicalMemoryObject {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PhysicalMemoryObject")
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl PhysicalMemoryObject {
    /// Creates an object of `bytes` (> 0, rounded up to whole pages) of zeroed memory, opened
    /// on the adapter. STATUS_PROCEDURE_NOT_FOUND when Dxgkrnl does not provide the callbacks
    /// (before WDDM 3.0); Dxgkrnl's status otherwise. Nothing stays allocated on failure.
    pub fn create(
        iface: &DxgkInterface,
        _passive: &Passive,
        bytes: usize,
        cache: DXGK_MEMORY_CACHING_TYPE,
        backing: Backing,
    ) -> NtResult<Self> {
        let create = iface.create_physical_memory_object()?;
        let destroy = iface.destroy_physical_memory_object()?;
        let bytes = bytes
            .checked_next_multiple_of(PAGE_SIZE)
            .filter(|&b| b > 0)
            .ok_or(NtError::INVALID_PARAMETER)?;
        let mut args = DXGKARGCB_CREATE_PHYSICAL_MEMORY_OBJECT {
            hAdapter: iface.device_handle(),
            Size: bytes,
            CacheType: cache,
            ..Default::default()
        };
        match backing {
            Backing::Pages { low, high } => {
                args.Type = dxgk_sys::DXGK_PHYSICAL_MEMORY_TYPE_MDL;
                args.u.Mdl = dxgk_sys::DXGKARGCB_CREATE_PHYSICAL_MEMORY_OBJECT_Mdl {
                    LowAddress: large(low),
                    HighAddress: large(high),
                    SkipBytes: large(0),
                    Flags: 0,
                };
            }
            Backing::Contiguous {
                low,
                high,
                boundary,
            } => {
                args.Type = dxgk_sys::DXGK_PHYSICAL_MEMORY_TYPE_CONTIGUOUS_MEMORY;
                args.u.ContiguousMemory =
                    dxgk_sys::DXGKARGCB_CREATE_PHYSICAL_MEMORY_OBJECT_ContiguousMemory {
                        LowestAcceptableAddress: large(low),
                        HighestAcceptableAddress: large(high),
                        BoundaryAddressMultiple: large(boundary),
                    };
            }
        }
        // SAFETY: valid, initialized argument block that lives for the call; PASSIVE_LEVEL per
        // the token.
        crate::status::to_result(unsafe { create(&mut args) })?;
        let obj = Self {
            destroy,
            object: args.hPhysicalMemoryObject,
            adapter_object: args.hAdapterMemoryObject,
            bytes,
        };
        // A success without both handles is unusable: give it back (Drop destroys it).
        if obj.object.is_null() || obj.adapter_object.is_null() {
            return Err(NtError::INSUFFICIENT_RESOURCES);
        }
        // INVARIANT: both handles from a successful create of `bytes` bytes.
        Ok(obj)
    }

    /// Size in bytes (whole pages).
    pub fn len(&self) -> usize {
        self.bytes
    }

    /// Always false: an object holds at least one page.
    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// Number of 4 KiB pages.
    pub fn page_count(&self) -> usize {
        self.bytes / PAGE_SIZE
    }

    /// Checks that `[offset, offset + len)` is a non-empty range inside the object.
    fn check_range(&self, offset: usize, len: usize) -> NtResult<()> {
        match offset.checked_add(len) {
            Some(end) if len > 0 && end <= self.bytes => Ok(()),
            _ => Err(NtError::INVALID_PARAMETER),
        }
    }
}

impl Drop for PhysicalMemoryObject {
    fn drop(&mut self) {
        if self.object.is_null() {
            return;
        }
        let args = DXGKARGCB_DESTROY_PHYSICAL_MEMORY_OBJECT {
            hPhysicalMemoryObject: self.object,
            hAdapterMemoryObject: self.adapter_object,
        };
        // SAFETY: the handles came from a successful create and are destroyed once; no ADL or
        // mapping of the object remains (they borrow `self`).
        unsafe { (self.destroy)(&args) };
    }
}

/// Whether an [`Adl`] must, should or need not be one contiguous device range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Contiguity {
    /// `RequireContiguous`: fail rather than return a page list.
    Require,
    /// `PreferContiguous`: contiguous if Dxgkrnl can, a page list otherwise.
    Prefer,
    /// No preference.
    Any,
}

/// An ADL from `DxgkCbAllocateAdl` that frees itself (`DxgkCbFreeAdl`) when dropped, without a
/// borrow of its object. Private: it lives only inside [`Adl`] (beside the borrow) and
/// [`MappedObject`] (declared before the object it describes, so dropped first).
///
/// # Invariants
/// `raw` is the DXGK_ADL a successful `DxgkCbAllocateAdl` on `adapter_object` returned, with
/// `PageCount == pages`, and a non-NULL `Pages` array of `pages` entries when not contiguous.
/// Dxgkrnl keeps it unchanged until `DxgkCbFreeAdl`, called once, in `Drop`, while the object
/// is alive (the owners above guarantee it).
struct RawAdl {
    free: dxgk_sys::PFN_DXGKCB_FREEADL,
    adapter_object: HANDLE,
    raw: NonNull<DXGK_ADL>,
    offset: usize,
    pages: usize,
    contiguous: bool,
}

impl RawAdl {
    fn allocate(
        iface: &DxgkInterface,
        object: &PhysicalMemoryObject,
        offset: usize,
        bytes: usize,
        contiguity: Contiguity,
    ) -> NtResult<Self> {
        let allocate = iface.allocate_adl()?;
        let free = iface.free_adl()?;
        if !offset.is_multiple_of(PAGE_SIZE) || !bytes.is_multiple_of(PAGE_SIZE) {
            return Err(NtError::INVALID_PARAMETER);
        }
        object.check_range(offset, bytes)?;
        let mut args = DXGKARGCB_ALLOCATE_ADL {
            hAdapterMemoryObject: object.adapter_object,
            Offset: offset,
            Size: bytes,
            ..Default::default()
        };
        match contiguity {
            Contiguity::Require => args.Flags.set_RequireContiguous(1),
            Contiguity::Prefer => args.Flags.set_PreferContiguous(1),
            Contiguity::Any => {}
        }
        // SAFETY: valid argument block naming our live adapter object; PASSIVE_LEVEL (the
        // public constructors take a Passive token).
        crate::status::to_result(unsafe { allocate(&mut args) })?;
        let raw = NonNull::new(args.pAdl).ok_or(NtError::INSUFFICIENT_RESOURCES)?;
        // SAFETY: Dxgkrnl returned a valid DXGK_ADL that stays valid until FreeAdl.
        let adl = unsafe { raw.as_ptr().read() };
        let contiguous = adl.Flags.Contiguous() != 0;
        let list = Self {
            free,
            adapter_object: object.adapter_object,
            raw,
            offset,
            pages: bytes / PAGE_SIZE,
            contiguous,
        };
        // SAFETY: reading either arm is a plain integer / pointer read of initialized bytes.
        let list_missing = !contiguous && unsafe { adl.u.Pages }.is_null();
        if adl.PageCount as usize != list.pages
            || list_missing
            || (contiguity == Contiguity::Require && !contiguous)
        {
            // An ADL that contradicts the request: `list` drops here and frees it.
            return Err(NtError::INSUFFICIENT_RESOURCES);
        }
        // INVARIANT: PageCount and the list checked above.
        Ok(list)
    }

    fn page_number(&self, index: usize) -> Option<u64> {
        if index >= self.pages {
            return None;
        }
        // SAFETY: the DXGK_ADL is valid until FreeAdl (in our Drop).
        let adl = unsafe { self.raw.as_ptr().read() };
        if self.contiguous {
            // SAFETY: the Contiguous flag selects the BasePageNumber arm.
            let base = unsafe { adl.u.BasePageNumber } as u64;
            return base.checked_add(index as u64);
        }
        // SAFETY: not contiguous: `Pages` is a non-NULL array of `pages` entries (invariant).
        let list = unsafe { adl.u.Pages };
        // SAFETY: `index < pages`: inside the array.
        let entry = unsafe { list.add(index) };
        // SAFETY: `entry` points into the array Dxgkrnl keeps until FreeAdl.
        Some(unsafe { entry.read() } as u64)
    }

    fn page_address(&self, index: usize) -> Option<LogicalAddress> {
        let n = self.page_number(index)?;
        n.checked_mul(PAGE_SIZE as u64).map(LogicalAddress)
    }

    fn address_of(&self, offset: usize) -> Option<LogicalAddress> {
        let page = self.page_address(offset / PAGE_SIZE)?;
        Some(LogicalAddress(page.0 + (offset % PAGE_SIZE) as u64))
    }
}

impl Drop for RawAdl {
    fn drop(&mut self) {
        let args = DXGKARGCB_FREE_ADL {
            hAdapterMemoryObject: self.adapter_object,
            pAdl: self.raw.as_ptr(),
        };
        // SAFETY: the ADL came from AllocateAdl on this adapter object and is freed once, while
        // the object is alive (invariant of the owners).
        unsafe { (self.free)(&args) };
    }
}

/// An address descriptor list over a page-aligned range of a [`PhysicalMemoryObject`]: the
/// device addresses to program, valid (and the memory locked) while this value lives.
///
/// # Invariants
/// `inner` is an ADL of `object` (see `RawAdl`); the borrow keeps the object alive until the
/// ADL is freed, in `inner`'s `Drop`.
pub struct Adl<'o> {
    object: &'o PhysicalMemoryObject,
    inner: RawAdl,
}

impl core::fmt::Debug for Adl<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Adl")
            .field("offset", &self.inner.offset)
            .field("pages", &self.inner.pages)
            .field("contiguous", &self.inner.contiguous)
            .finish()
    }
}

impl<'o> Adl<'o> {
    /// Allocates an ADL for `[offset, offset + bytes)` of `object` (page-aligned offset, size a
    /// non-zero whole number of pages, inside the object). STATUS_INVALID_PARAMETER for a bad
    /// range; Dxgkrnl's status otherwise; an ADL that contradicts the request (wrong page count,
    /// a page list under [`Contiguity::Require`], a NULL list) is given back and fails with
    /// STATUS_INSUFFICIENT_RESOURCES.
    pub fn allocate(
        iface: &DxgkInterface,
        _passive: &Passive,
        object: &'o PhysicalMemoryObject,
        offset: usize,
        bytes: usize,
        contiguity: Contiguity,
    ) -> NtResult<Self> {
        let inner = RawAdl::allocate(iface, object, offset, bytes, contiguity)?;
        Ok(Self { object, inner })
    }

    /// The object this ADL describes part of.
    pub fn object(&self) -> &PhysicalMemoryObject {
        self.object
    }

    /// Byte offset of the ADL's first page in the object.
    pub fn offset(&self) -> usize {
        self.inner.offset
    }

    /// Number of 4 KiB pages.
    pub fn page_count(&self) -> usize {
        self.inner.pages
    }

    /// Whether Dxgkrnl returned one contiguous device range (`Flags.Contiguous`).
    pub fn is_contiguous(&self) -> bool {
        self.inner.contiguous
    }

    /// The raw DXGK_ADL, for handing to Dxgkrnl-defined structures; valid while `self` lives.
    pub fn as_raw(&self) -> *const DXGK_ADL {
        self.inner.raw.as_ptr()
    }

    /// Device page number of page `index` (of [`Adl::page_count`]); None past the end.
    pub fn page_number(&self, index: usize) -> Option<u64> {
        self.inner.page_number(index)
    }

    /// Device address of page `index`.
    pub fn page_address(&self, index: usize) -> Option<LogicalAddress> {
        self.inner.page_address(index)
    }

    /// Device address of byte `offset` of the ADL's range.
    pub fn address_of(&self, offset: usize) -> Option<LogicalAddress> {
        self.inner.address_of(offset)
    }

    /// The device address of every page, in order.
    pub fn pages(&self) -> AdlPages<'_, 'o> {
        AdlPages { adl: self, next: 0 }
    }
}

/// Iterator over the device page addresses of an [`Adl`] (bounds-checked per page).
#[derive(Debug)]
pub struct AdlPages<'a, 'o> {
    adl: &'a Adl<'o>,
    next: usize,
}

impl Iterator for AdlPages<'_, '_> {
    type Item = LogicalAddress;

    fn next(&mut self) -> Option<LogicalAddress> {
        let a = self.adl.page_address(self.next)?;
        self.next += 1;
        Some(a)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.adl.inner.pages.saturating_sub(self.next);
        (left, Some(left))
    }
}

impl ExactSizeIterator for AdlPages<'_, '_> {}

/// A `DxgkCbMapPhysicalMemory` kernel VA range that unmaps itself when dropped, without a
/// borrow of its object. Private: it lives only inside [`CpuMapping`] and [`MappedObject`]
/// (declared before the object, so dropped first).
///
/// # Invariants
/// `base` / `mapped_len` are what a successful map of `object` returned (Dxgkrnl may widen the
/// range to whole pages: `skew` is the requested offset's distance from `base`); `len` bytes
/// from `base + skew` are the requested range. Unmapped exactly once, in `Drop`, while the
/// object is alive (the owners guarantee it).
struct RawMapping {
    unmap: dxgk_sys::PFN_DXGKCB_UNMAPPHYSICALMEMORY,
    object: HANDLE,
    base: NonNull<u8>,
    mapped_len: usize,
    skew: usize,
    len: usize,
}

impl RawMapping {
    fn map(
        iface: &DxgkInterface,
        object: &PhysicalMemoryObject,
        offset: usize,
        len: usize,
    ) -> NtResult<Self> {
        let map = iface.map_physical_memory()?;
        let unmap = iface.unmap_physical_memory()?;
        object.check_range(offset, len)?;
        let mut args = DXGKARGCB_MAP_PHYSICAL_MEMORY {
            hPhysicalMemoryObject: object.object,
            AccessMode: dxgk_sys::DXGK_ACCESS_MODE_KERNEL_MODE,
            Offset: offset,
            Size: len,
            ..Default::default()
        };
        // SAFETY: valid argument block naming our live object; PASSIVE_LEVEL (the public
        // constructors take a Passive token).
        crate::status::to_result(unsafe { map(&mut args) })?;
        let base = NonNull::new(args.pMappedAddress.cast::<u8>());
        let Some(base) = base else {
            return Err(NtError::INSUFFICIENT_RESOURCES);
        };
        let mapping = Self {
            unmap,
            object: object.object,
            base,
            mapped_len: args.Size,
            skew: offset.wrapping_sub(args.Offset),
            len,
        };
        // Offset/Size are in/out: the mapped range must still cover the requested one.
        let covers = args.Offset <= offset
            && mapping
                .skew
                .checked_add(len)
                .is_some_and(|e| e <= mapping.mapped_len);
        if !covers {
            return Err(NtError::INSUFFICIENT_RESOURCES); // Drop unmaps it
        }
        // INVARIANT: a successful mapping that covers the request.
        Ok(mapping)
    }

    /// The mapping as DMA-shared memory.
    fn shared(&self) -> crate::memory::SharedPages<'_> {
        // SAFETY: `skew + len <= mapped_len`: inside the mapping (invariant).
        let start = unsafe { self.base.as_ptr().add(self.skew) };
        let start = NonNull::new(start).unwrap_or(self.base);
        // SAFETY: `start` begins `len` mapped nonpaged bytes with the mapping's own provenance,
        // mapped while `self` is borrowed.
        unsafe { crate::memory::SharedPages::from_raw(start, self.len) }
    }

    fn as_slice(&self) -> &[u8] {
        // SAFETY: `skew + len <= mapped_len`: inside the mapping (invariant).
        let start = unsafe { self.base.as_ptr().add(self.skew) };
        // SAFETY: `start` begins `len` mapped bytes, alive while `self` is.
        unsafe { core::slice::from_raw_parts(start, self.len) }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `skew + len <= mapped_len`: inside the mapping (invariant).
        let start = unsafe { self.base.as_ptr().add(self.skew) };
        // SAFETY: as in `as_slice`; `&mut self` excludes other CPU access through us.
        unsafe { core::slice::from_raw_parts_mut(start, self.len) }
    }
}

impl Drop for RawMapping {
    fn drop(&mut self) {
        let args = DXGKARGCB_UNMAP_PHYSICAL_MEMORY {
            hPhysicalMemoryObject: self.object,
            pBaseAddress: self.base.as_ptr().cast(),
            Size: self.mapped_len,
        };
        // SAFETY: the live mapping Dxgkrnl returned, unmapped once while the object lives.
        unsafe { (self.unmap)(&args) };
    }
}

/// A kernel-mode CPU mapping of part of a [`PhysicalMemoryObject`]
/// (`DxgkCbMapPhysicalMemory`).
///
/// # Invariants
/// `inner` maps part of `object`; the borrow keeps the object alive until `inner` unmaps.
pub struct CpuMapping<'o> {
    _object: &'o PhysicalMemoryObject,
    inner: RawMapping,
}

// SAFETY: the mapped bytes are reached only through `&self` / `&mut self`; the borrowed object
// is Sync; unmap may run on any thread at PASSIVE_LEVEL.
unsafe impl Send for CpuMapping<'_> {}

impl core::fmt::Debug for CpuMapping<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CpuMapping")
            .field("len", &self.inner.len)
            .finish()
    }
}

impl<'o> CpuMapping<'o> {
    /// Maps `[offset, offset + len)` of `object` into kernel VA.
    pub fn map(
        iface: &DxgkInterface,
        _passive: &Passive,
        object: &'o PhysicalMemoryObject,
        offset: usize,
        len: usize,
    ) -> NtResult<Self> {
        let inner = RawMapping::map(iface, object, offset, len)?;
        Ok(Self {
            _object: object,
            inner,
        })
    }

    /// Length of the requested range in bytes.
    pub fn len(&self) -> usize {
        self.inner.len
    }

    /// Always false: a mapping holds at least one byte.
    pub fn is_empty(&self) -> bool {
        self.inner.len == 0
    }

    /// The mapped bytes.
    pub fn as_slice(&self) -> &[u8] {
        self.inner.as_slice()
    }

    /// The mapped bytes, mutably (the device may be reading them: order with it through its
    /// doorbell / fences).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        self.inner.as_mut_slice()
    }
}

/// A whole [`PhysicalMemoryObject`] owned together with its kernel CPU mapping and, when
/// device-visible, one ADL over all of it: the WDDM 3.0 counterpart of
/// [`crate::memory::DeviceMemory`], for memory a driver keeps (rings, fence pages, tables).
///
/// # Invariants
/// `adl` (if any) and `cpu` cover the whole of `object`. Fields drop in declaration order:
/// FreeAdl, then UnmapPhysicalMemory, then DestroyPhysicalMemoryObject, as Dxgkrnl requires
/// (an object must have no ADL or mapping left when destroyed).
pub struct MappedObject {
    adl: Option<RawAdl>,
    cpu: RawMapping,
    object: PhysicalMemoryObject,
}

// SAFETY: owns the object, its ADL and its mapping exclusively; the bytes are reached only
// through `&self` / `&mut self`; the callbacks may run on any thread at PASSIVE_LEVEL.
unsafe impl Send for MappedObject {}

impl core::fmt::Debug for MappedObject {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MappedObject")
            .field("object", &self.object)
            .field("device_visible", &self.adl.is_some())
            .finish()
    }
}

impl MappedObject {
    /// Creates an object of `bytes` (whole pages, zeroed, pages anywhere), maps it for the CPU
    /// and, if `device_visible`, allocates an ADL over it (contiguous if Dxgkrnl can, a page
    /// list otherwise). Nothing stays allocated or mapped on failure.
    pub fn create(
        iface: &DxgkInterface,
        passive: &Passive,
        bytes: usize,
        cache: DXGK_MEMORY_CACHING_TYPE,
        device_visible: bool,
    ) -> NtResult<Self> {
        let object = PhysicalMemoryObject::create(iface, passive, bytes, cache, Backing::ANYWHERE)?;
        // On error below, what exists drops in reverse order of creation.
        let cpu = RawMapping::map(iface, &object, 0, object.len())?;
        let adl = if device_visible {
            Some(RawAdl::allocate(
                iface,
                &object,
                0,
                object.len(),
                Contiguity::Prefer,
            )?)
        } else {
            None
        };
        // INVARIANT: mapping and ADL over the whole object; field order is release order.
        Ok(Self { adl, cpu, object })
    }

    /// Size in bytes (whole pages).
    pub fn len(&self) -> usize {
        self.object.len()
    }

    /// Always false: an object holds at least one page.
    pub fn is_empty(&self) -> bool {
        self.object.is_empty()
    }

    /// True when the memory has an ADL (device-visible).
    pub fn is_device_visible(&self) -> bool {
        self.adl.is_some()
    }

    /// True when the ADL is one contiguous device range.
    pub fn is_contiguous(&self) -> bool {
        self.adl.as_ref().is_some_and(|a| a.contiguous)
    }

    /// Device address of 4 KiB page `index`; None past the end or when CPU-only.
    pub fn page_address(&self, index: usize) -> Option<LogicalAddress> {
        self.adl.as_ref()?.page_address(index)
    }

    /// The memory as DMA-shared memory (`&self` reads and writes, for the soft engine).
    pub fn shared(&self) -> crate::memory::SharedPages<'_> {
        self.cpu.shared()
    }

    /// The bytes, through the CPU mapping.
    pub fn as_slice(&self) -> &[u8] {
        self.cpu.as_slice()
    }

    /// The bytes, mutably (the device may be reading them: order with it through its doorbell
    /// / fences).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        self.cpu.as_mut_slice()
    }
}
