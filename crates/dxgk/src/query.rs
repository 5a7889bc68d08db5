//! DxgkDdiQueryAdapterInfo as data: the request decoded once into a [`Request`] whose output
//! writers can only write what Dxgkrnl's buffer holds and the negotiated version defines.
//!
//! Size rules (what a Windows engineer expects):
//! * `DXGK_DRIVERCAPS` grows with every WDK and an older Dxgkrnl passes its own smaller size, so
//!   any size a shipped Windows passes (the per-version sizes of the layouts, or ours) is
//!   accepted and `min(size, ours)` bytes are written; a size below the smallest is
//!   STATUS_BUFFER_TOO_SMALL and any other size STATUS_INVALID_PARAMETER.
//! * `DXGK_PHYSICALADAPTERCAPS` needs the size of the negotiated version.
//! * Every other type needs at least its full structure: a NULL buffer is
//!   STATUS_INVALID_PARAMETER, a short one STATUS_BUFFER_TOO_SMALL; a missing or short input is
//!   STATUS_INVALID_PARAMETER.
//! * Types this module does not decode come back as [`Request::Other`]; answering them (or not)
//!   is the driver's decision.
//!
//! Nothing is written while decoding: a refused request leaves Dxgkrnl's buffers untouched.

use core::marker::PhantomData;
use core::mem::size_of;
use core::ptr::NonNull;

use dxgk_sys as sys;
use dxgk_sys::{
    DXGKARG_QUERYADAPTERINFO, DXGK_DRIVERCAPS, DXGK_FRAMEBUFFERSAVEAREA, DXGK_GPUMMUCAPS,
    DXGK_HARDWARERESERVEDRANGES, DXGK_PAGE_TABLE_LEVEL_DESC, DXGK_PHYSICALADAPTERCAPS,
    DXGK_QUERYADAPTERINFOTYPE, DXGK_QUERYSEGMENTOUT4, DXGK_SEGMENTDESCRIPTOR4,
};

use crate::{NtError, NtResult};

/// A write-only window onto Dxgkrnl's output buffer for one `T`.
///
/// # Invariants
/// `ptr` is valid for writes of `len` bytes for `'a`, and `len <= size_of::<T>()`.
pub struct Output<'a, T> {
    ptr: NonNull<u8>,
    len: usize,
    _buffer: PhantomData<(&'a mut [u8], T)>,
}

impl<T> core::fmt::Debug for Output<'_, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "Output<{}>({} bytes)",
            core::any::type_name::<T>(),
            self.len
        )
    }
}

impl<T> core::fmt::Debug for InOut<'_, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "InOut<{}>", core::any::type_name::<T>())
    }
}

impl<T: Padding> Output<'_, T> {
    /// Bytes [`Output::write`] writes: the part of `T` the buffer (and version) holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for a zero-byte window (never produced by decoding).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Writes the first [`Output::len`] bytes of `value`, its padding as zeros.
    pub fn write(self, value: &T) {
        // SAFETY: the destination holds `len <= size_of::<T>()` writable bytes (type
        // invariant) and cannot overlap `value` (ours).
        unsafe { write_zero_padded(value, self.ptr.as_ptr(), self.len) };
    }
}

/// An in/out `T`: Dxgkrnl passes values in the output buffer and reads the answer back.
///
/// # Invariants
/// `ptr` is valid for reads and writes of `size_of::<T>()` bytes for `'a` (any alignment).
pub struct InOut<'a, T> {
    ptr: NonNull<u8>,
    _buffer: PhantomData<(&'a mut [u8], T)>,
}

impl<T: Copy> InOut<'_, T> {
    /// What Dxgkrnl passed in.
    pub fn get(&self) -> T {
        // SAFETY: `size_of::<T>()` readable bytes (type invariant), read unaligned; Dxgkrnl
        // initializes in/out structures, which are plain C data.
        unsafe { self.ptr.as_ptr().cast::<T>().read_unaligned() }
    }

    /// Writes the answer.
    pub fn set(self, value: &T) {
        // SAFETY: `size_of::<T>()` writable bytes (type invariant), written unaligned.
        unsafe { self.ptr.as_ptr().cast::<T>().write_unaligned(*value) };
    }
}

/// VidMm's array of segment descriptors in a QUERYSEGMENT4 second call.
///
/// # Invariants
/// `ptr` is valid for writes of `count * stride` bytes for `'a`; `stride > 0`.
#[derive(Debug)]
pub struct SegmentDescriptors<'a> {
    ptr: NonNull<u8>,
    count: usize,
    stride: usize,
    _buffer: PhantomData<&'a mut [u8]>,
}

impl SegmentDescriptors<'_> {
    /// Slots in the array (`NbSegment` as VidMm passed it).
    pub fn count(&self) -> usize {
        self.count
    }

    /// Writes descriptor `index` (the first `min(stride, size)` bytes, padding as zeros);
    /// STATUS_INVALID_PARAMETER past the array.
    pub fn write(&mut self, index: usize, d: &DXGK_SEGMENTDESCRIPTOR4) -> NtResult<()> {
        if index >= self.count {
            return Err(NtError::INVALID_PARAMETER);
        }
        let len = self.stride.min(size_of::<DXGK_SEGMENTDESCRIPTOR4>());
        // INVARIANT use: index < count, so `index * stride + len <= count * stride` (the
        // product was checked for overflow at decode).
        let at = self.ptr.as_ptr().wrapping_add(index * self.stride);
        // SAFETY: `at` starts slot `index`, `len <= stride` writable bytes inside the array
        // (and `len <= size_of` the descriptor); `d` is ours, so they do not overlap.
        unsafe { write_zero_padded(d, at, len) };
        Ok(())
    }
}

/// A C structure Dxgkrnl reads back, with the byte ranges that are padding in its C layout
/// (`../shared/reference/layouts.json`, leaf fields only: bytes no field of any union member
/// covers). Padding has no value in Rust — a copy of a `T` carries uninitialized bytes there
/// (kernel stack contents on Windows) — so the writers here zero it.
pub trait Padding: Copy {
    /// Sorted, disjoint, inside `size_of::<Self>()`.
    const PADDING: &'static [core::ops::Range<usize>];
}

macro_rules! padding {
    ($($t:ty => [$($r:expr),*];)*) => {
        $(impl Padding for $t {
            const PADDING: &'static [core::ops::Range<usize>] = &[$($r),*];
        })*
    };
}

padding! {
    DXGK_DRIVERCAPS => [12..16, 549..552, 588..592];
    DXGK_PHYSICALADAPTERCAPS => [4..8, 28..32];
    DXGK_SEGMENTDESCRIPTOR4 => [4..8, 52..56, 60..64];
    DXGK_GPUMMUCAPS => [];
    DXGK_PAGE_TABLE_LEVEL_DESC => [];
    DXGK_FRAMEBUFFERSAVEAREA => [];
    sys::DXGK_PHYSICAL_MEMORY_CAPS => [];
    sys::DXGK_IOMMU_CAPS => [];
    u32 => [];
}

/// Copies the first `len` bytes of `value` to `dst`, then zeroes `T`'s padding among them.
///
/// # Safety
/// `len <= size_of::<T>()`, `dst` is valid for `len` bytes of writes and does not overlap
/// `value`.
unsafe fn write_zero_padded<T: Padding>(value: &T, dst: *mut u8, len: usize) {
    // SAFETY: `value` has `size_of::<T>() >= len` readable bytes; the caller guarantees `dst`.
    unsafe { core::ptr::copy_nonoverlapping(core::ptr::from_ref(value).cast::<u8>(), dst, len) };
    for gap in T::PADDING.iter().filter(|gap| gap.start < len) {
        let end = gap.end.min(len);
        let at = dst.wrapping_add(gap.start);
        // SAFETY: `gap.start < end <= len`: inside the bytes just written.
        unsafe { at.write_bytes(0, end - gap.start) };
    }
}

/// The QUERYSEGMENT4 answer VidMm reads back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    /// `NbSegment`: segments the driver describes.
    pub segment_count: u32,
    /// `PagingBufferSegmentId`.
    pub paging_buffer_segment_id: u32,
    /// `PagingBufferSize`.
    pub paging_buffer_size: u32,
    /// `PagingBufferPrivateDataSize`.
    pub paging_buffer_private_data_size: u32,
}

/// DXGKQAITYPE_QUERYSEGMENT4: first call counts (no descriptor array), second fills.
#[derive(Debug)]
pub struct QuerySegment<'a> {
    out: InOut<'a, DXGK_QUERYSEGMENTOUT4>,
    /// The descriptor array of the second call.
    pub descriptors: Option<SegmentDescriptors<'a>>,
}

impl QuerySegment<'_> {
    /// Writes the counts back, keeping VidMm's descriptor pointer and stride.
    pub fn reply(self, info: SegmentInfo) {
        let mut out = self.out.get();
        out.NbSegment = info.segment_count;
        out.PagingBufferSegmentId = info.paging_buffer_segment_id;
        out.PagingBufferSize = info.paging_buffer_size;
        out.PagingBufferPrivateDataSize = info.paging_buffer_private_data_size;
        self.out.set(&out);
    }
}

/// One decoded DxgkDdiQueryAdapterInfo request.
#[derive(Debug)]
pub enum Request<'a> {
    /// DXGKQAITYPE_DRIVERCAPS (the window is the size Dxgkrnl's version passed).
    DriverCaps(Output<'a, DXGK_DRIVERCAPS>),
    /// DXGKQAITYPE_GPUMMUCAPS.
    GpuMmuCaps {
        /// `DXGK_QUERYGPUMMUCAPSIN.PhysicalAdapterIndex`.
        physical_adapter: u32,
        out: Output<'a, DXGK_GPUMMUCAPS>,
    },
    /// DXGKQAITYPE_PAGETABLELEVELDESC.
    PageTableLevelDesc {
        /// `PhysicalAdapterIndex`.
        physical_adapter: u32,
        /// `LevelIndex` (0 = leaf).
        level: u32,
        out: Output<'a, DXGK_PAGE_TABLE_LEVEL_DESC>,
    },
    /// DXGKQAITYPE_QUERYSEGMENT4.
    QuerySegment(QuerySegment<'a>),
    /// DXGKQAITYPE_PHYSICALADAPTERCAPS (the window is the negotiated version's size).
    PhysicalAdapterCaps(Output<'a, DXGK_PHYSICALADAPTERCAPS>),
    /// DXGKQAITYPE_NUMPOWERCOMPONENTS.
    NumPowerComponents(Output<'a, u32>),
    /// DXGKQAITYPE_FRAMEBUFFERSAVESIZE.
    FrameBufferSaveSize(Output<'a, DXGK_FRAMEBUFFERSAVEAREA>),
    /// DXGKQAITYPE_HARDWARERESERVEDRANGES (in/out: the count, then the ranges).
    HardwareReservedRanges(InOut<'a, DXGK_HARDWARERESERVEDRANGES>),
    /// DXGKQAITYPE_PHYSICAL_MEMORY_CAPS (WDDM 2.9+; DMA remapping opt-in, asked before
    /// StartDevice, so decoded whatever `interface` is).
    PhysicalMemoryCaps(Output<'a, sys::DXGK_PHYSICAL_MEMORY_CAPS>),
    /// DXGKQAITYPE_IOMMU_CAPS (WDDM 2.9+; asked before StartDevice like the above).
    IommuCaps(Output<'a, sys::DXGK_IOMMU_CAPS>),
    /// A type this module does not decode.
    Other(DXGK_QUERYADAPTERINFOTYPE),
}

/// Sizes of DXGK_DRIVERCAPS that shipped Windows versions pass (and ours).
fn known_driver_caps_sizes() -> impl Iterator<Item = usize> {
    sys::DXGK_DRIVERCAPS_SIZE_BY_VERSION
        .iter()
        .map(|&(_, s)| s)
        .chain(core::iter::once(size_of::<DXGK_DRIVERCAPS>()))
}

/// Size of `DXGK_PHYSICALADAPTERCAPS` at `interface` (the newest layout at or below it).
pub fn physical_adapter_caps_size(interface: u32) -> usize {
    sys::DXGK_PHYSICALADAPTERCAPS_SIZE_BY_VERSION
        .iter()
        .rev()
        .find(|(v, _)| *v <= interface)
        .map_or(size_of::<DXGK_PHYSICALADAPTERCAPS>(), |&(_, s)| s)
}

/// The raw buffers of one request, as Dxgkrnl passed them.
struct Buffers {
    input: *const u8,
    input_size: usize,
    output: *mut u8,
    output_size: usize,
}

impl Buffers {
    /// The input as a `T` (copied: inputs may be unaligned).
    ///
    /// # Safety
    /// `input` must be NULL or valid for `input_size` bytes.
    unsafe fn input<T: Copy>(&self) -> NtResult<T> {
        if self.input.is_null() || self.input_size < size_of::<T>() {
            return Err(NtError::INVALID_PARAMETER);
        }
        // SAFETY: non-null with at least size_of::<T>() readable bytes (caller); T is plain C
        // data for which Dxgkrnl wrote every byte; the read is unaligned.
        Ok(unsafe { self.input.cast::<T>().read_unaligned() })
    }

    /// A window of `len ≤ size_of::<T>()` bytes onto the output, which must hold `need` bytes.
    ///
    /// # Safety
    /// `output` must be NULL or valid for `output_size` bytes for `'a`.
    unsafe fn output<'a, T>(&self, need: usize, len: usize) -> NtResult<Output<'a, T>> {
        let ptr = NonNull::new(self.output).ok_or(NtError::INVALID_PARAMETER)?;
        if self.output_size < need {
            return Err(NtError::BUFFER_TOO_SMALL);
        }
        debug_assert!(len <= size_of::<T>() && len <= self.output_size);
        // INVARIANT: `len ≤ need ≤ output_size` writable bytes (caller), `len ≤ size_of::<T>()`.
        Ok(Output {
            ptr,
            len: len.min(size_of::<T>()).min(self.output_size),
            _buffer: PhantomData,
        })
    }

    /// The output as an in/out `T`, which must fit entirely.
    ///
    /// # Safety
    /// As [`Buffers::output`].
    unsafe fn in_out<'a, T>(&self) -> NtResult<InOut<'a, T>> {
        let ptr = NonNull::new(self.output).ok_or(NtError::INVALID_PARAMETER)?;
        if self.output_size < size_of::<T>() {
            return Err(NtError::BUFFER_TOO_SMALL);
        }
        // INVARIANT: size_of::<T>() ≤ output_size valid bytes (caller).
        Ok(InOut {
            ptr,
            _buffer: PhantomData,
        })
    }

    /// A full-size output window for a fixed-size `T`.
    ///
    /// # Safety
    /// As [`Buffers::output`].
    unsafe fn full<'a, T>(&self) -> NtResult<Output<'a, T>> {
        // SAFETY: per the caller.
        unsafe { self.output(size_of::<T>(), size_of::<T>()) }
    }
}

impl<'a> Request<'a> {
    /// Decodes Dxgkrnl's arguments for an adapter on interface `interface`.
    ///
    /// # Safety
    /// `args.pInputData` / `args.pOutputData` must be NULL or valid for `InputDataSize` /
    /// `OutputDataSize` bytes for `'a` (reads, and reads and writes respectively), not used
    /// through any other pointer meanwhile — Dxgkrnl's contract for the DDI. For
    /// QUERYSEGMENT4, a non-NULL `pSegmentDescriptor` must be valid for writes of
    /// `NbSegment * SegmentDescriptorStride` bytes.
    pub unsafe fn decode(args: &DXGKARG_QUERYADAPTERINFO, interface: u32) -> NtResult<Self> {
        let b = Buffers {
            input: args.pInputData.cast::<u8>().cast_const(),
            input_size: args.InputDataSize as usize,
            output: args.pOutputData.cast::<u8>(),
            output_size: args.OutputDataSize as usize,
        };
        let ty = args.Type;
        // SAFETY (every arm): the buffers are valid as the caller guarantees.
        Ok(if ty == sys::DXGKQAITYPE_DRIVERCAPS {
            if b.output.is_null() {
                return Err(NtError::INVALID_PARAMETER);
            }
            let smallest = known_driver_caps_sizes().min().unwrap_or(0);
            if b.output_size < smallest {
                return Err(NtError::BUFFER_TOO_SMALL);
            }
            if !known_driver_caps_sizes().any(|s| s == b.output_size) {
                return Err(NtError::INVALID_PARAMETER);
            }
            let len = b.output_size.min(size_of::<DXGK_DRIVERCAPS>());
            // SAFETY: see above.
            Request::DriverCaps(unsafe { b.output(len, len) }?)
        } else if ty == sys::DXGKQAITYPE_GPUMMUCAPS {
            // SAFETY: see above.
            let input: sys::DXGK_QUERYGPUMMUCAPSIN = unsafe { b.input() }?;
            Request::GpuMmuCaps {
                physical_adapter: input.PhysicalAdapterIndex,
                // SAFETY: see above.
                out: unsafe { b.full() }?,
            }
        } else if ty == sys::DXGKQAITYPE_PAGETABLELEVELDESC {
            // SAFETY: see above.
            let input: sys::DXGK_QUERYPAGETABLELEVELDESCIN = unsafe { b.input() }?;
            Request::PageTableLevelDesc {
                physical_adapter: u32::from(input.PhysicalAdapterIndex),
                level: u32::from(input.LevelIndex),
                // SAFETY: see above.
                out: unsafe { b.full() }?,
            }
        } else if ty == sys::DXGKQAITYPE_QUERYSEGMENT4 {
            // SAFETY: see above.
            let out: InOut<'a, DXGK_QUERYSEGMENTOUT4> = unsafe { b.in_out() }?;
            let passed = out.get();
            let descriptors = match NonNull::new(passed.pSegmentDescriptor) {
                None => None,
                Some(ptr) => {
                    let (count, stride) =
                        (passed.NbSegment as usize, passed.SegmentDescriptorStride);
                    if stride == 0 || count.checked_mul(stride).is_none() {
                        return Err(NtError::INVALID_PARAMETER);
                    }
                    // INVARIANT: VidMm's array of `count` slots of `stride > 0` bytes (caller).
                    Some(SegmentDescriptors {
                        ptr,
                        count,
                        stride,
                        _buffer: PhantomData,
                    })
                }
            };
            Request::QuerySegment(QuerySegment { out, descriptors })
        } else if ty == sys::DXGKQAITYPE_PHYSICALADAPTERCAPS {
            let size = physical_adapter_caps_size(interface);
            let len = size.min(size_of::<DXGK_PHYSICALADAPTERCAPS>());
            // SAFETY: see above.
            Request::PhysicalAdapterCaps(unsafe { b.output(size, len) }?)
        } else if ty == sys::DXGKQAITYPE_NUMPOWERCOMPONENTS {
            // SAFETY: see above.
            Request::NumPowerComponents(unsafe { b.full() }?)
        } else if ty == sys::DXGKQAITYPE_FRAMEBUFFERSAVESIZE {
            // SAFETY: see above.
            Request::FrameBufferSaveSize(unsafe { b.full() }?)
        } else if ty == sys::DXGKQAITYPE_HARDWARERESERVEDRANGES {
            // SAFETY: see above.
            Request::HardwareReservedRanges(unsafe { b.in_out() }?)
        } else if ty == sys::DXGKQAITYPE_PHYSICAL_MEMORY_CAPS {
            // SAFETY: see above.
            Request::PhysicalMemoryCaps(unsafe { b.full() }?)
        } else if ty == sys::DXGKQAITYPE_IOMMU_CAPS {
            // SAFETY: see above.
            Request::IommuCaps(unsafe { b.full() }?)
        } else {
            Request::Other(ty)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every data byte of the descriptor reaches the slot and every padding byte is zero (C's
    /// layout has 12 of them: after `Flags`, in the aperture, after `NumInvalidMemoryRanges`).
    /// Under Miri a missed data range or copied padding also shows as uninitialized bytes.
    #[test]
    fn descriptor_slots_get_every_data_byte_and_zeroed_padding() {
        let mut d = DXGK_SEGMENTDESCRIPTOR4::default();
        d.Flags.Value = u32::MAX;
        d.BaseAddress.QuadPart = -1;
        d.Size = usize::MAX;
        d.CommitLimit = usize::MAX;
        d.SystemMemoryEndAddress = usize::MAX;
        d.u.CpuHostAperture = sys::DXGK_CPUHOSTAPERTURE {
            PhysicalAddress: u64::MAX,
            SizeInPages: u32::MAX,
        };
        d.NumInvalidMemoryRanges = u32::MAX;
        d.VprRangeStartOffset = usize::MAX;
        d.VprRangeSize = usize::MAX;
        d.VprAlignment = u32::MAX;
        d.NumVprSupported = u32::MAX;
        d.VprReserveSize = u32::MAX;
        d.NumUEFIFrameBufferRanges = u32::MAX;
        const SIZE: usize = size_of::<DXGK_SEGMENTDESCRIPTOR4>();
        let mut slot = [0x5a_u8; SIZE];
        let mut slots = SegmentDescriptors {
            ptr: NonNull::new(slot.as_mut_ptr()).unwrap(),
            count: 1,
            stride: SIZE,
            _buffer: PhantomData,
        };
        slots.write(0, &d).unwrap();
        let zeros = (0..SIZE).filter(|&i| slot[i] == 0);
        assert!(
            zeros.eq([4, 5, 6, 7, 52, 53, 54, 55, 60, 61, 62, 63]),
            "{slot:?}"
        );
        assert!(slot.iter().all(|&b| b == 0 || b == 0xff));
    }

    /// A `T` whose every byte, padding included, is 0xFF (built bytewise, so the padding is
    /// initialized memory here: only the writer can make it zero).
    fn all_ones<T: Padding>() -> T {
        let mut v = core::mem::MaybeUninit::<T>::uninit();
        // SAFETY: `size_of::<T>()` bytes of our own storage.
        unsafe {
            v.as_mut_ptr()
                .cast::<u8>()
                .write_bytes(0xff, size_of::<T>())
        };
        // SAFETY: these `T`s are integers, bitfields and unions of them: any bytes are valid.
        unsafe { v.assume_init() }
    }

    fn padding_is_zeroed_by_output<T: Padding>() {
        const MAX: usize = 1024;
        let mut buf = [0x5a_u8; MAX];
        let size = size_of::<T>();
        let out = Output::<T> {
            ptr: NonNull::new(buf.as_mut_ptr()).unwrap(),
            len: size,
            _buffer: PhantomData,
        };
        out.write(&all_ones::<T>());
        for (i, &b) in buf[..size].iter().enumerate() {
            let padding = T::PADDING.iter().any(|r| r.contains(&i));
            assert_eq!(b, if padding { 0 } else { 0xff }, "byte {i} of {size}");
        }
        assert!(buf[size..].iter().all(|&b| b == 0x5a));
    }

    #[test]
    fn output_writes_zeros_in_the_c_padding_and_the_value_elsewhere() {
        padding_is_zeroed_by_output::<DXGK_DRIVERCAPS>();
        padding_is_zeroed_by_output::<DXGK_PHYSICALADAPTERCAPS>();
        padding_is_zeroed_by_output::<DXGK_GPUMMUCAPS>();
        padding_is_zeroed_by_output::<u32>();
    }
}
