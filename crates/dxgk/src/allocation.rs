//! Typed views of the allocation DDIs' argument blocks: DxgkDdiCreateAllocation,
//! DxgkDdiDestroyAllocation, DxgkDdiOpenAllocation and DxgkDdiCloseAllocation.
//!
//! Decoding (`from_raw`) checks every pointer and count once: a NULL array, a zero count, a
//! count whose array size overflows, or a NULL private-data pointer with a non-zero size is
//! STATUS_INVALID_PARAMETER, and nothing is written. After that the getters are safe: private
//! data comes out as byte slices (the driver decodes them with its own format, e.g.
//! `rgpu-abi`), handles by kind, and `complete` writes each element's outputs.
//!
//! Only members present since WDDM 2.0 are read or written (`Flags2` of DXGK_ALLOCATIONINFO,
//! WDDM 3.0, is left as Dxgkrnl passed it).

use core::ffi::c_void;
use core::marker::PhantomData;
use core::mem::size_of;

use dxgk_sys as sys;
use dxgk_sys::{D3DKMT_HANDLE, HANDLE};

use crate::handle::{AllocationHandle, DeviceAllocationHandle};
use crate::{NtError, NtResult};

/// Checks that an array of `count` `T`s at `ptr` is non-empty, non-NULL and addressable.
fn check_array<T>(ptr: *const T, count: u32) -> NtResult<usize> {
    let n = count as usize;
    if n == 0 || ptr.is_null() {
        return Err(NtError::INVALID_PARAMETER);
    }
    match n.checked_mul(size_of::<T>()) {
        Some(bytes) if bytes <= isize::MAX as usize => Ok(n),
        _ => Err(NtError::INVALID_PARAMETER),
    }
}

/// A private-data block: empty for size 0, STATUS_INVALID_PARAMETER for NULL with a size.
///
/// # Safety
/// `ptr` must be NULL or valid for reads of `len` bytes for `'a`, not written meanwhile.
unsafe fn bytes<'a>(ptr: *const c_void, len: u32) -> NtResult<&'a [u8]> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() || len as usize > isize::MAX as usize {
        return Err(NtError::INVALID_PARAMETER);
    }
    // SAFETY: non-NULL and valid for `len` bytes (caller).
    Ok(unsafe { core::slice::from_raw_parts(ptr.cast::<u8>(), len as usize) })
}

/// What the driver tells VidMm about one new allocation (the outputs of DXGK_ALLOCATIONINFO).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllocationDescription {
    /// `Size`: bytes, a multiple of the page size.
    pub size: usize,
    /// `Alignment` in bytes (0: VidMm's default).
    pub alignment: u32,
    /// `PreferredSegment.SegmentId0` (0: no preference).
    pub preferred_segment: u32,
    /// `SupportedReadSegmentSet`: bit n = segment n + 1.
    pub read_segments: u32,
    /// `SupportedWriteSegmentSet`.
    pub write_segments: u32,
    /// `EvictionSegmentSet`.
    pub eviction_segments: u32,
    /// `Flags.CpuVisible`: the allocation can be locked (Lock2 / pfnLockCb).
    pub cpu_visible: bool,
    /// `Flags.Cached`: CPU mappings are cached.
    pub cached: bool,
    /// `Flags.AccessedPhysically`: when resident in system memory the allocation is mapped
    /// into the aperture segment (MAP_APERTURE_SEGMENT), not only reached by GPU VA (Learn,
    /// "GPU segments").
    pub accessed_physically: bool,
    /// `AllocationPriority` (0: VidMm's default).
    pub priority: u32,
}

/// DxgkDdiCreateAllocation's arguments.
///
/// # Invariants
/// `raw.pAllocationInfo` points to `raw.NumAllocations >= 1` elements, valid for `'a`; each
/// element's and the resource's private data is NULL only with size 0.
pub struct CreateAllocation<'a> {
    raw: &'a mut sys::DXGKARG_CREATEALLOCATION,
    len: usize,
}

impl core::fmt::Debug for CreateAllocation<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "CreateAllocation({} allocations)", self.len)
    }
}

impl<'a> CreateAllocation<'a> {
    /// Decodes Dxgkrnl's argument block (see the module documentation for what is refused).
    ///
    /// # Safety
    /// `raw` must be NULL or the argument block Dxgkrnl passed to DxgkDdiCreateAllocation,
    /// valid for `'a` with its arrays and private data, and used by nothing else meanwhile.
    pub unsafe fn from_raw(raw: *mut sys::DXGKARG_CREATEALLOCATION) -> NtResult<Self> {
        // SAFETY: NULL or valid and exclusive (caller).
        let raw = unsafe { raw.as_mut() }.ok_or(NtError::INVALID_PARAMETER)?;
        let len = check_array(raw.pAllocationInfo, raw.NumAllocations)?;
        // SAFETY: the resource private data Dxgkrnl passed (caller).
        unsafe { bytes(raw.pPrivateDriverData, raw.PrivateDriverDataSize) }?;
        for i in 0..len {
            let info = raw.pAllocationInfo.wrapping_add(i);
            // SAFETY: `i < len` elements of Dxgkrnl's array (caller), checked non-NULL above.
            let info = unsafe { &*info };
            // SAFETY: the element's private data as Dxgkrnl passed it (caller).
            unsafe { bytes(info.pPrivateDriverData, info.PrivateDriverDataSize) }?;
        }
        // INVARIANT: array and every private-data pointer checked above.
        Ok(Self { raw, len })
    }

    /// `NumAllocations` (at least 1).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true (decoding refuses zero allocations).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `Flags.Resource`: the allocations belong to a resource the driver should create.
    pub fn resource(&self) -> bool {
        self.raw.Flags.Resource() != 0
    }

    /// The resource-level private data (`pPrivateDriverData`).
    pub fn resource_private_data(&self) -> &[u8] {
        // SAFETY: checked at decode (type invariant).
        unsafe { bytes(self.raw.pPrivateDriverData, self.raw.PrivateDriverDataSize) }.unwrap_or(&[])
    }

    fn info(&self, i: usize) -> Option<&sys::DXGK_ALLOCATIONINFO> {
        let p = self.raw.pAllocationInfo.wrapping_add(i);
        // SAFETY: `i < len` elements (type invariant).
        (i < self.len).then(|| unsafe { &*p })
    }

    /// Allocation `i`'s private data (the UMD's), or `None` past the array.
    pub fn private_data(&self, i: usize) -> Option<&[u8]> {
        let info = self.info(i)?;
        // SAFETY: checked at decode (type invariant).
        unsafe { bytes(info.pPrivateDriverData, info.PrivateDriverDataSize) }.ok()
    }

    /// The `hAllocation` [`CreateAllocation::complete`] wrote for element `i` (for unwinding
    /// a partly created set); `None` if none was written or past the array.
    pub fn completed_handle(&self, i: usize) -> Option<AllocationHandle> {
        AllocationHandle::from_raw(self.info(i)?.hAllocation)
    }

    /// Writes allocation `i`'s outputs: the description and the driver's `hAllocation`.
    /// STATUS_INVALID_PARAMETER past the array.
    pub fn complete(
        &mut self,
        i: usize,
        d: &AllocationDescription,
        handle: AllocationHandle,
    ) -> NtResult<()> {
        if i >= self.len {
            return Err(NtError::INVALID_PARAMETER);
        }
        let p = self.raw.pAllocationInfo.wrapping_add(i);
        // SAFETY: `i < len` elements of Dxgkrnl's array (type invariant); `self` is exclusive.
        let info = unsafe { &mut *p };
        info.Size = d.size;
        info.Alignment = d.alignment;
        info.PitchAlignedSize = 0;
        info.HintedBank = sys::DXGK_SEGMENTBANKPREFERENCE::default();
        // SegmentId0 (bits 0..5); Direction0 and the other choices 0.
        info.PreferredSegment = sys::D3DDDI_SEGMENTPREFERENCE {
            Value: d.preferred_segment & 0x1F,
        };
        info.SupportedReadSegmentSet = d.read_segments;
        info.SupportedWriteSegmentSet = d.write_segments;
        info.EvictionSegmentSet = d.eviction_segments;
        info.u = sys::DXGK_ALLOCATIONINFO_u {
            MaximumRenamingListLength: 0,
        };
        info.hAllocation = handle.as_raw();
        let mut flags = sys::DXGK_ALLOCATIONINFOFLAGS::default();
        flags.set_CpuVisible(u32::from(d.cpu_visible));
        flags.set_Cached(u32::from(d.cached));
        flags.set_AccessedPhysically(u32::from(d.accessed_physically));
        info.u2 = sys::DXGK_ALLOCATIONINFO_u2 { Flags: flags };
        info.pAllocationUsageHint = core::ptr::null_mut();
        info.AllocationPriority = d.priority;
        Ok(())
    }
}

/// DxgkDdiDestroyAllocation's arguments (read-only).
///
/// # Invariants
/// `list` points to `len >= 1` handles valid for `'a`.
pub struct DestroyAllocation<'a> {
    list: *const HANDLE,
    len: usize,
    destroy_resource: bool,
    _args: PhantomData<&'a [HANDLE]>,
}

impl core::fmt::Debug for DestroyAllocation<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "DestroyAllocation({} allocations)", self.len)
    }
}

impl DestroyAllocation<'_> {
    /// Decodes Dxgkrnl's argument block; STATUS_INVALID_PARAMETER for NULL, an empty or NULL
    /// list.
    ///
    /// # Safety
    /// `raw` must be NULL or the argument block Dxgkrnl passed to DxgkDdiDestroyAllocation,
    /// valid for `'a` with its handle list.
    pub unsafe fn from_raw(raw: *const sys::DXGKARG_DESTROYALLOCATION) -> NtResult<Self> {
        // SAFETY: NULL or valid (caller).
        let raw = unsafe { raw.as_ref() }.ok_or(NtError::INVALID_PARAMETER)?;
        let len = check_array(raw.pAllocationList, raw.NumAllocations)?;
        // INVARIANT: checked above.
        Ok(Self {
            list: raw.pAllocationList,
            len,
            destroy_resource: raw.Flags.DestroyResource() != 0,
            _args: PhantomData,
        })
    }

    /// `NumAllocations`.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `Flags.DestroyResource`.
    pub fn destroy_resource(&self) -> bool {
        self.destroy_resource
    }

    /// Handle `i` (`None` for NULL or past the list).
    pub fn handle(&self, i: usize) -> Option<AllocationHandle> {
        let p = self.list.wrapping_add(i);
        // SAFETY: `i < len` handles (type invariant).
        let raw = (i < self.len).then(|| unsafe { p.read() })?;
        AllocationHandle::from_raw(raw)
    }
}

/// DxgkDdiOpenAllocation's arguments.
///
/// # Invariants
/// `infos` points to `len >= 1` elements valid for `'a` and used by nothing else; each
/// element's private data is NULL only with size 0.
pub struct OpenAllocation<'a> {
    infos: *mut sys::DXGK_OPENALLOCATIONINFO,
    len: usize,
    create: bool,
    read_only: bool,
    _args: PhantomData<&'a mut [sys::DXGK_OPENALLOCATIONINFO]>,
}

impl core::fmt::Debug for OpenAllocation<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "OpenAllocation({} allocations)", self.len)
    }
}

impl OpenAllocation<'_> {
    /// Decodes Dxgkrnl's argument block (the same checks as [`CreateAllocation::from_raw`]).
    ///
    /// # Safety
    /// `raw` must be NULL or the argument block Dxgkrnl passed to DxgkDdiOpenAllocation, valid
    /// for `'a` with its array and private data, the array used by nothing else meanwhile.
    pub unsafe fn from_raw(raw: *const sys::DXGKARG_OPENALLOCATION) -> NtResult<Self> {
        // SAFETY: NULL or valid (caller).
        let raw = unsafe { raw.as_ref() }.ok_or(NtError::INVALID_PARAMETER)?;
        let len = check_array(raw.pOpenAllocation, raw.NumAllocations)?;
        // SAFETY: the open's private data as Dxgkrnl passed it (caller).
        unsafe { bytes(raw.pPrivateDriverData, raw.PrivateDriverSize) }?;
        for i in 0..len {
            let info = raw.pOpenAllocation.wrapping_add(i);
            // SAFETY: `i < len` elements of Dxgkrnl's array (caller).
            let info = unsafe { &*info };
            // SAFETY: the element's private data (caller).
            unsafe { bytes(info.pPrivateDriverData, info.PrivateDriverDataSize) }?;
        }
        // INVARIANT: checked above.
        Ok(Self {
            infos: raw.pOpenAllocation,
            len,
            create: raw.Flags.Create() != 0,
            read_only: raw.Flags.ReadOnly() != 0,
            _args: PhantomData,
        })
    }

    /// `NumAllocations`.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `Flags.Create`: the open is part of creating the allocations (not a later open).
    pub fn create(&self) -> bool {
        self.create
    }

    /// `Flags.ReadOnly`.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    fn info(&self, i: usize) -> Option<&sys::DXGK_OPENALLOCATIONINFO> {
        let p = self.infos.wrapping_add(i);
        // SAFETY: `i < len` elements (type invariant).
        (i < self.len).then(|| unsafe { &*p })
    }

    /// Element `i`'s `hAllocation`: Dxgkrnl's (D3DKMT) handle, for DxgkCbGetHandleData.
    pub fn dxgk_allocation(&self, i: usize) -> Option<D3DKMT_HANDLE> {
        self.info(i).map(|x| x.hAllocation)
    }

    /// Element `i`'s private data (what the UMD passed at creation).
    pub fn private_data(&self, i: usize) -> Option<&[u8]> {
        let info = self.info(i)?;
        // SAFETY: checked at decode (type invariant).
        unsafe { bytes(info.pPrivateDriverData, info.PrivateDriverDataSize) }.ok()
    }

    /// The handle [`OpenAllocation::complete`] wrote for element `i` (for unwinding).
    pub fn completed_handle(&self, i: usize) -> Option<DeviceAllocationHandle> {
        DeviceAllocationHandle::from_raw(self.info(i)?.hDeviceSpecificAllocation)
    }

    /// Returns element `i`'s device-specific handle; STATUS_INVALID_PARAMETER past the array.
    pub fn complete(&mut self, i: usize, handle: DeviceAllocationHandle) -> NtResult<()> {
        if i >= self.len {
            return Err(NtError::INVALID_PARAMETER);
        }
        let p = self.infos.wrapping_add(i);
        // SAFETY: `i < len` elements, exclusive (type invariant); one member written.
        unsafe { (*p).hDeviceSpecificAllocation = handle.as_raw() };
        Ok(())
    }
}

/// d3dkmddi.h's `DXGKARG_CLOSEALLOCATION` (dxgk-sys passes it as `*const c_void`): 16 bytes
/// on x64.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[allow(non_snake_case)]
pub struct RawCloseAllocation {
    /// `NumAllocations`.
    pub NumAllocations: u32,
    /// `pOpenHandleList`: the device-specific handles OpenAllocation returned.
    pub pOpenHandleList: *const HANDLE,
}

/// DxgkDdiCloseAllocation's arguments (read-only).
///
/// # Invariants
/// `list` points to `len >= 1` handles valid for `'a`.
pub struct CloseAllocation<'a> {
    list: *const HANDLE,
    len: usize,
    _args: PhantomData<&'a [HANDLE]>,
}

impl core::fmt::Debug for CloseAllocation<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "CloseAllocation({} allocations)", self.len)
    }
}

impl CloseAllocation<'_> {
    /// Decodes Dxgkrnl's argument block; STATUS_INVALID_PARAMETER for NULL, an empty or NULL
    /// list.
    ///
    /// # Safety
    /// `raw` must be NULL or point to the DXGKARG_CLOSEALLOCATION Dxgkrnl passed, valid for
    /// `'a` with its handle list.
    pub unsafe fn from_raw(raw: *const c_void) -> NtResult<Self> {
        // SAFETY: NULL or a valid DXGKARG_CLOSEALLOCATION (caller).
        let raw = unsafe { raw.cast::<RawCloseAllocation>().as_ref() }
            .ok_or(NtError::INVALID_PARAMETER)?;
        let len = check_array(raw.pOpenHandleList, raw.NumAllocations)?;
        // INVARIANT: checked above.
        Ok(Self {
            list: raw.pOpenHandleList,
            len,
            _args: PhantomData,
        })
    }

    /// `NumAllocations`.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Handle `i` (`None` for NULL or past the list).
    pub fn handle(&self, i: usize) -> Option<DeviceAllocationHandle> {
        let p = self.list.wrapping_add(i);
        // SAFETY: `i < len` handles (type invariant).
        let raw = (i < self.len).then(|| unsafe { p.read() })?;
        DeviceAllocationHandle::from_raw(raw)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn create_refuses_null_empty_and_dangling_private_data() {
        // SAFETY: NULL is allowed.
        assert!(unsafe { CreateAllocation::from_raw(core::ptr::null_mut()) }.is_err());
        let mut args = sys::DXGKARG_CREATEALLOCATION::default();
        // SAFETY: a valid block with no array.
        let r = unsafe { CreateAllocation::from_raw(&mut args) };
        assert_eq!(r.err(), Some(NtError::INVALID_PARAMETER));
        let mut infos = [sys::DXGK_ALLOCATIONINFO::default(); 2];
        infos[1].PrivateDriverDataSize = 48; // NULL pointer with a size
        args.NumAllocations = 2;
        args.pAllocationInfo = infos.as_mut_ptr();
        // SAFETY: valid block and array.
        let r = unsafe { CreateAllocation::from_raw(&mut args) };
        assert_eq!(r.err(), Some(NtError::INVALID_PARAMETER));
        let data = [7u8; 48];
        infos[1].pPrivateDriverData = data.as_ptr() as *mut c_void;
        // The write through `infos` invalidated the earlier pointer (Miri): take a fresh one.
        args.pAllocationInfo = infos.as_mut_ptr();
        // SAFETY: valid block, array and data.
        let mut v = unsafe { CreateAllocation::from_raw(&mut args) }.unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v.private_data(0), Some(&[][..]));
        assert_eq!(v.private_data(1), Some(&data[..]));
        assert_eq!(v.private_data(2), None);
        let h = AllocationHandle::from_raw(core::ptr::without_provenance_mut(0x40)).unwrap();
        let d = AllocationDescription {
            size: 8192,
            preferred_segment: 2,
            read_segments: 2,
            write_segments: 2,
            cpu_visible: true,
            accessed_physically: true,
            ..Default::default()
        };
        v.complete(1, &d, h).unwrap();
        assert_eq!(v.complete(2, &d, h), Err(NtError::INVALID_PARAMETER));
        assert_eq!(infos[1].Size, 8192);
        assert_eq!(infos[1].PreferredSegment.Value & 0x1F, 2);
        assert_eq!(infos[1].hAllocation, h.as_raw());
        // SAFETY: the union's flag view was written.
        assert_eq!(unsafe { infos[1].u2.Flags }.CpuVisible(), 1);
        // SAFETY: as above.
        assert_eq!(unsafe { infos[1].u2.Flags }.AccessedPhysically(), 1);
    }

    #[test]
    fn close_and_destroy_read_their_lists() {
        let handles: [HANDLE; 2] = [
            core::ptr::without_provenance_mut(0x10),
            core::ptr::null_mut(),
        ];
        let raw = RawCloseAllocation {
            NumAllocations: 2,
            pOpenHandleList: handles.as_ptr(),
        };
        // SAFETY: a valid block.
        let c = unsafe { CloseAllocation::from_raw((&raw as *const RawCloseAllocation).cast()) }
            .unwrap();
        assert!(c.handle(0).is_some());
        assert!(c.handle(1).is_none());
        assert!(c.handle(2).is_none());
        let d = sys::DXGKARG_DESTROYALLOCATION {
            NumAllocations: 0,
            pAllocationList: handles.as_ptr(),
            ..Default::default()
        };
        // SAFETY: a valid block.
        assert!(unsafe { DestroyAllocation::from_raw(&d) }.is_err());
    }
}
