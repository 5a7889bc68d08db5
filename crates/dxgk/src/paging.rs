//! `DxgkDdiBuildPagingBuffer`'s argument, decoded once into typed, borrowed views.
//!
//! [`BuildPagingBuffer::from_raw`] reads the raw `DXGKARG_BUILDPAGINGBUFFER` exactly once:
//! the operation code becomes one [`Op`] variant per `DXGK_OPERATION_*`, the union member it
//! names is copied into typed fields, pointers become slices, [`Mdl`] views and a
//! [`CpuTable`], handles become typed handles, and the DMA buffer becomes a [`DmaBuffer`] —
//! the only code that writes `pDmaBuffer` / `DmaSize` / `MultipassOffset` back. What the DDI
//! guarantees structurally is checked there (NULL pointers, array sizes, alignment, 64-bit
//! overflow of offset + count, unknown codes); what depends on the driver (which segment is an
//! aperture, how many entries a table of some level has, which operations its caps allow) is
//! left to the driver, which no longer needs `unsafe` to act on the result.

use core::fmt;
use core::marker::PhantomData;
use core::ptr::NonNull;

use dxgk_sys as sys;
use sys::{DXGKARG_BUILDPAGINGBUFFER, DXGK_BUILDPAGINGBUFFER_COPY_RANGE, DXGK_PTE};

use crate::aperture_views::{ApertureCpu, ApertureMdl};
use crate::handle::{AllocationHandle, DeviceHandle, ProcessHandle};
pub use crate::mdl::{Mdl, MdlError, Pfns};
use crate::{NtError, NtResult};

/// The page number of a `DXGK_PTE` (its `PageAddress` / `PageTableAddress` union: both
/// members are the same `ULONGLONG`, so reading it is always sound).
#[inline(always)]
pub fn pte_page(p: &DXGK_PTE) -> u64 {
    // SAFETY: both members of the union are a u64 at the same offset: every bit pattern is a
    // valid value of either.
    unsafe { p.u.PageAddress }
}

/// A `DXGK_BUILDPAGINGBUFFER_OPERATION` code that exists (0–17).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    /// DXGK_OPERATION_TRANSFER (0).
    Transfer,
    /// DXGK_OPERATION_FILL (1).
    Fill,
    /// DXGK_OPERATION_DISCARD_CONTENT (2).
    DiscardContent,
    /// DXGK_OPERATION_READ_PHYSICAL (3).
    ReadPhysical,
    /// DXGK_OPERATION_WRITE_PHYSICAL (4).
    WritePhysical,
    /// DXGK_OPERATION_MAP_APERTURE_SEGMENT (5).
    MapApertureSegment,
    /// DXGK_OPERATION_UNMAP_APERTURE_SEGMENT (6).
    UnmapApertureSegment,
    /// DXGK_OPERATION_SPECIAL_LOCK_TRANSFER (7).
    SpecialLockTransfer,
    /// DXGK_OPERATION_VIRTUAL_TRANSFER (8).
    VirtualTransfer,
    /// DXGK_OPERATION_VIRTUAL_FILL (9).
    VirtualFill,
    /// DXGK_OPERATION_INIT_CONTEXT_RESOURCE (10).
    InitContextResource,
    /// DXGK_OPERATION_UPDATE_PAGE_TABLE (11).
    UpdatePageTable,
    /// DXGK_OPERATION_FLUSH_TLB (12).
    FlushTlb,
    /// DXGK_OPERATION_UPDATE_CONTEXT_ALLOCATION (13).
    UpdateContextAllocation,
    /// DXGK_OPERATION_COPY_PAGE_TABLE_ENTRIES (14).
    CopyPageTableEntries,
    /// DXGK_OPERATION_NOTIFY_RESIDENCY (15).
    NotifyResidency,
    /// DXGK_OPERATION_SIGNAL_MONITORED_FENCE (16).
    SignalMonitoredFence,
    /// DXGK_OPERATION_MAP_APERTURE_SEGMENT2 (17).
    MapApertureSegment2,
}

impl Operation {
    const ALL: [Operation; 18] = [
        Operation::Transfer,
        Operation::Fill,
        Operation::DiscardContent,
        Operation::ReadPhysical,
        Operation::WritePhysical,
        Operation::MapApertureSegment,
        Operation::UnmapApertureSegment,
        Operation::SpecialLockTransfer,
        Operation::VirtualTransfer,
        Operation::VirtualFill,
        Operation::InitContextResource,
        Operation::UpdatePageTable,
        Operation::FlushTlb,
        Operation::UpdateContextAllocation,
        Operation::CopyPageTableEntries,
        Operation::NotifyResidency,
        Operation::SignalMonitoredFence,
        Operation::MapApertureSegment2,
    ];

    /// The operation a raw code names, or `None` for a code that does not exist.
    pub fn from_raw(op: sys::DXGK_BUILDPAGINGBUFFER_OPERATION) -> Option<Operation> {
        Self::ALL.into_iter().find(|o| o.raw() == op)
    }

    /// The raw code.
    pub const fn raw(self) -> sys::DXGK_BUILDPAGINGBUFFER_OPERATION {
        match self {
            Operation::Transfer => sys::DXGK_OPERATION_TRANSFER,
            Operation::Fill => sys::DXGK_OPERATION_FILL,
            Operation::DiscardContent => sys::DXGK_OPERATION_DISCARD_CONTENT,
            Operation::ReadPhysical => sys::DXGK_OPERATION_READ_PHYSICAL,
            Operation::WritePhysical => sys::DXGK_OPERATION_WRITE_PHYSICAL,
            Operation::MapApertureSegment => sys::DXGK_OPERATION_MAP_APERTURE_SEGMENT,
            Operation::UnmapApertureSegment => sys::DXGK_OPERATION_UNMAP_APERTURE_SEGMENT,
            Operation::SpecialLockTransfer => sys::DXGK_OPERATION_SPECIAL_LOCK_TRANSFER,
            Operation::VirtualTransfer => sys::DXGK_OPERATION_VIRTUAL_TRANSFER,
            Operation::VirtualFill => sys::DXGK_OPERATION_VIRTUAL_FILL,
            Operation::InitContextResource => sys::DXGK_OPERATION_INIT_CONTEXT_RESOURCE,
            Operation::UpdatePageTable => sys::DXGK_OPERATION_UPDATE_PAGE_TABLE,
            Operation::FlushTlb => sys::DXGK_OPERATION_FLUSH_TLB,
            Operation::UpdateContextAllocation => sys::DXGK_OPERATION_UPDATE_CONTEXT_ALLOCATION,
            Operation::CopyPageTableEntries => sys::DXGK_OPERATION_COPY_PAGE_TABLE_ENTRIES,
            Operation::NotifyResidency => sys::DXGK_OPERATION_NOTIFY_RESIDENCY,
            Operation::SignalMonitoredFence => sys::DXGK_OPERATION_SIGNAL_MONITORED_FENCE,
            Operation::MapApertureSegment2 => sys::DXGK_OPERATION_MAP_APERTURE_SEGMENT2,
        }
    }
}

/// Why an argument block was refused by [`BuildPagingBuffer::from_raw`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The argument pointer is NULL or misaligned.
    BadArguments,
    /// `Operation` is not a DXGK_OPERATION_* code.
    UnknownOperation(i32),
    /// UPDATE_PAGE_TABLE's `UpdateMode` is not a DXGK_PAGETABLEUPDATE_* mode.
    UnknownUpdateMode(i32),
    /// `pDmaBuffer` is NULL (with this `DmaSize`) for an operation that encodes into one.
    NoDmaBuffer {
        /// DmaSize.
        size: u32,
    },
    /// `pDmaBuffer + DmaSize` wraps the address space.
    DmaBufferWraps {
        /// DmaSize.
        size: u32,
    },
    /// A pointer the operation needs is NULL (with a non-zero count where it has one).
    Null(&'static str),
    /// A pointer is not aligned for what it points to.
    Misaligned(&'static str),
    /// A count × element size beyond the address space.
    TooLarge(&'static str),
    /// An offset + count that wraps 64 bits.
    Overflow(&'static str),
    /// UPDATE_PAGE_TABLE names entries past the largest table the driver declared.
    TableRange {
        /// StartIndex.
        start: u32,
        /// NumPageTableEntries.
        count: u32,
        /// Entries in the largest page table (the decode's `max_table_entries`).
        max: u32,
    },
    /// An MDL pointer that is not a valid MDL.
    Mdl {
        /// The field.
        field: &'static str,
        /// Why.
        error: MdlError,
    },
    /// MAP_APERTURE_SEGMENT maps more pages than its MDL holds after `MdlOffset`.
    MdlTooShort {
        /// MdlOffset.
        mdl_offset: u32,
        /// NumberOfPages.
        pages: usize,
        /// Pages the MDL spans.
        mdl_pages: usize,
    },
    /// MAP_APERTURE_SEGMENT2 maps more pages than its ADL holds after `AdlOffset`.
    AdlTooShort {
        /// AdlOffset.
        adl_offset: u32,
        /// NumberOfPages.
        pages: usize,
        /// Adl.PageCount.
        adl_pages: usize,
    },
    /// FLUSH_TLB's `EndVirtualAddress` is below its `StartVirtualAddress`.
    FlushRange {
        /// StartVirtualAddress.
        start: u64,
        /// EndVirtualAddress.
        end: u64,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DecodeError::BadArguments => write!(f, "NULL or misaligned argument block"),
            DecodeError::UnknownOperation(op) => write!(f, "unknown operation {op}"),
            DecodeError::UnknownUpdateMode(m) => write!(f, "unknown UpdateMode {m}"),
            DecodeError::NoDmaBuffer { size } => write!(f, "NULL pDmaBuffer (DmaSize {size})"),
            DecodeError::DmaBufferWraps { size } => {
                write!(f, "pDmaBuffer + DmaSize {size} wraps the address space")
            }
            DecodeError::Null(field) => write!(f, "{field} is NULL"),
            DecodeError::Misaligned(field) => write!(f, "{field} is misaligned"),
            DecodeError::TooLarge(field) => write!(f, "{field}: too many elements"),
            DecodeError::Overflow(what) => write!(f, "{what} overflows"),
            DecodeError::TableRange { start, count, max } => write!(
                f,
                "UpdatePageTable entries {start}+{count} outside the largest ({max}-entry) table"
            ),
            DecodeError::Mdl { field, error } => write!(f, "{field}: {error}"),
            DecodeError::MdlTooShort {
                mdl_offset,
                pages,
                mdl_pages,
            } => write!(
                f,
                "MdlOffset {mdl_offset} + {pages} pages past the MDL's {mdl_pages} pages"
            ),
            DecodeError::AdlTooShort {
                adl_offset,
                pages,
                adl_pages,
            } => write!(
                f,
                "AdlOffset {adl_offset} + {pages} pages past the ADL's {adl_pages} pages"
            ),
            DecodeError::FlushRange { start, end } => {
                write!(
                    f,
                    "FlushTlb range {start:#x}..={end:#x} ends before it starts"
                )
            }
        }
    }
}

impl From<DecodeError> for NtError {
    /// STATUS_NOT_SUPPORTED for an operation code that does not exist (what a miniport answers
    /// for an operation it does not implement), STATUS_INVALID_PARAMETER for everything else.
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::UnknownOperation(_) => NtError::NOT_SUPPORTED,
            _ => NtError::INVALID_PARAMETER,
        }
    }
}

/// A GPU physical address (`D3DGPU_PHYSICAL_ADDRESS`): a segment and an offset in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpuPhysicalAddress {
    /// SegmentId.
    pub segment_id: u32,
    /// SegmentOffset.
    pub offset: u64,
}

impl From<sys::D3DGPU_PHYSICAL_ADDRESS> for GpuPhysicalAddress {
    fn from(a: sys::D3DGPU_PHYSICAL_ADDRESS) -> Self {
        Self {
            segment_id: a.SegmentId,
            offset: a.SegmentOffset,
        }
    }
}

/// One decoded paging operation.
#[derive(Debug)]
pub enum Op<'a> {
    /// TRANSFER.
    Transfer(Transfer<'a>),
    /// FILL.
    Fill(Fill),
    /// DISCARD_CONTENT.
    DiscardContent(DiscardContent),
    /// READ_PHYSICAL.
    ReadPhysical(PhysicalAccess),
    /// WRITE_PHYSICAL.
    WritePhysical(PhysicalAccess),
    /// MAP_APERTURE_SEGMENT.
    MapApertureSegment(MapApertureSegment<'a>),
    /// UNMAP_APERTURE_SEGMENT.
    UnmapApertureSegment(UnmapApertureSegment),
    /// SPECIAL_LOCK_TRANSFER: payload not decoded (swizzling ranges; a driver that declares
    /// them needs the decode added here).
    SpecialLockTransfer,
    /// VIRTUAL_TRANSFER.
    VirtualTransfer(VirtualTransfer),
    /// VIRTUAL_FILL.
    VirtualFill(VirtualFill),
    /// INIT_CONTEXT_RESOURCE.
    InitContextResource(InitContextResource),
    /// UPDATE_PAGE_TABLE.
    UpdatePageTable(UpdatePageTable<'a>),
    /// FLUSH_TLB.
    FlushTlb(FlushTlb),
    /// UPDATE_CONTEXT_ALLOCATION.
    UpdateContextAllocation(UpdateContextAllocation<'a>),
    /// COPY_PAGE_TABLE_ENTRIES.
    CopyPageTableEntries(CopyPageTableEntries<'a>),
    /// NOTIFY_RESIDENCY.
    NotifyResidency(NotifyResidency),
    /// SIGNAL_MONITORED_FENCE.
    SignalMonitoredFence(SignalMonitoredFence),
    /// MAP_APERTURE_SEGMENT2 (DMA-remapping drivers): as MAP_APERTURE_SEGMENT, from an ADL.
    MapApertureSegment2(MapApertureSegment2<'a>),
}

impl Op<'_> {
    /// The operation code.
    pub fn operation(&self) -> Operation {
        match self {
            Op::Transfer(_) => Operation::Transfer,
            Op::Fill(_) => Operation::Fill,
            Op::DiscardContent(_) => Operation::DiscardContent,
            Op::ReadPhysical(_) => Operation::ReadPhysical,
            Op::WritePhysical(_) => Operation::WritePhysical,
            Op::MapApertureSegment(_) => Operation::MapApertureSegment,
            Op::UnmapApertureSegment(_) => Operation::UnmapApertureSegment,
            Op::SpecialLockTransfer => Operation::SpecialLockTransfer,
            Op::VirtualTransfer(_) => Operation::VirtualTransfer,
            Op::VirtualFill(_) => Operation::VirtualFill,
            Op::InitContextResource(_) => Operation::InitContextResource,
            Op::UpdatePageTable(_) => Operation::UpdatePageTable,
            Op::FlushTlb(_) => Operation::FlushTlb,
            Op::UpdateContextAllocation(_) => Operation::UpdateContextAllocation,
            Op::CopyPageTableEntries(_) => Operation::CopyPageTableEntries,
            Op::NotifyResidency(_) => Operation::NotifyResidency,
            Op::SignalMonitoredFence(_) => Operation::SignalMonitoredFence,
            Op::MapApertureSegment2(_) => Operation::MapApertureSegment2,
        }
    }
}

/// One side of a TRANSFER: system pages (segment 0, an MDL) or a location in a segment.
#[derive(Clone, Copy, Debug)]
pub enum TransferSide<'a> {
    /// SegmentId 0: the pages of `mdl`, starting at the transfer's `mdl_offset`.
    Mdl {
        /// The MDL.
        mdl: Mdl<'a>,
    },
    /// A segment location.
    Segment {
        /// SegmentId (non-zero).
        id: u32,
        /// SegmentAddress.
        address: i64,
    },
}

/// TRANSFER between two locations, `size` bytes.
#[derive(Clone, Copy, Debug)]
pub struct Transfer<'a> {
    /// hAllocation (None for a plain copy).
    pub allocation: Option<AllocationHandle>,
    /// TransferOffset: bytes already transferred in earlier calls (segment sides only).
    pub transfer_offset: u32,
    /// TransferSize.
    pub size: usize,
    /// Source.
    pub source: TransferSide<'a>,
    /// Destination.
    pub destination: TransferSide<'a>,
    /// DXGK_TRANSFERFLAGS bits (Swizzle, Unswizzle, AllocationIsIdle, TransferStart, TransferEnd).
    pub flags: u32,
    /// MdlOffset: first page of the MDL side(s), in pages.
    pub mdl_offset: u32,
}

/// FILL of a segment location.
#[derive(Clone, Copy, Debug)]
pub struct Fill {
    /// hAllocation.
    pub allocation: Option<AllocationHandle>,
    /// FillSize in bytes.
    pub size: usize,
    /// FillPattern.
    pub pattern: u32,
    /// Destination.SegmentId.
    pub segment_id: u32,
    /// Destination.SegmentAddress.
    pub segment_address: i64,
}

/// DISCARD_CONTENT.
#[derive(Clone, Copy, Debug)]
pub struct DiscardContent {
    /// hAllocation.
    pub allocation: Option<AllocationHandle>,
    /// DXGK_DISCARDCONTENTFLAGS bits (AllocationIsIdle).
    pub flags: u32,
    /// SegmentId.
    pub segment_id: u32,
    /// SegmentAddress.
    pub segment_address: i64,
}

/// READ_PHYSICAL / WRITE_PHYSICAL: a dummy access for coherency.
#[derive(Clone, Copy, Debug)]
pub struct PhysicalAccess {
    /// SegmentId.
    pub segment_id: u32,
    /// PhysicalAddress.
    pub physical_address: i64,
}

/// MAP_APERTURE_SEGMENT: point `pages` aperture pages at the MDL's pages.
///
/// As decoded, the MDL holds `mdl_offset + pages` pages and `offset_in_pages + pages` does not
/// overflow.
#[derive(Clone, Copy, Debug)]
pub struct MapApertureSegment<'a> {
    /// hDevice.
    pub device: Option<DeviceHandle>,
    /// hAllocation (None for DMA buffers).
    pub allocation: Option<AllocationHandle>,
    /// SegmentId.
    pub segment_id: u32,
    /// OffsetInPages: first aperture page.
    pub offset_in_pages: usize,
    /// NumberOfPages.
    pub pages: usize,
    /// pMdl.
    pub mdl: Mdl<'a>,
    /// MdlOffset: first MDL page, in pages.
    pub mdl_offset: u32,
    /// Flags.CacheCoherent.
    pub cache_coherent: bool,
    /// `pMdl` as VidMm keeps it until the UNMAP_APERTURE_SEGMENT of these pages (what a
    /// software GPU registers: [`crate::aperture_views::ApertureViews::map_mdl`]).
    pub retained: ApertureMdl,
}

impl<'a> MapApertureSegment<'a> {
    /// The PFNs to map, in order (`pages` of them), or None if the MDL does not hold them.
    pub fn mdl_pages(&self) -> Option<Pfns<'a>> {
        self.mdl
            .pfns_from(usize::try_from(self.mdl_offset).ok()?, self.pages)
    }
}

/// The device pages of a DXGK_ADL as VidMm passed it: one contiguous run or a page list. The
/// page numbers may be logical (remapped) addresses: never CPU-map them.
#[derive(Clone, Copy, Debug)]
pub enum AdlView<'a> {
    /// `Flags.Contiguous`: `pages` pages from `BasePageNumber`.
    Contiguous {
        /// BasePageNumber.
        base: u64,
        /// PageCount.
        pages: usize,
    },
    /// `Pages[PageCount]`.
    Pages(&'a [sys::DXGK_PAGE_NUMBER]),
}

impl AdlView<'_> {
    /// PageCount.
    pub fn page_count(&self) -> usize {
        match *self {
            AdlView::Contiguous { pages, .. } => pages,
            AdlView::Pages(p) => p.len(),
        }
    }

    /// Device page number of page `i`, None past the end (or if a contiguous run wraps).
    pub fn page(&self, i: usize) -> Option<u64> {
        match *self {
            AdlView::Contiguous { base, pages } if i < pages => base.checked_add(i as u64),
            AdlView::Contiguous { .. } => None,
            AdlView::Pages(p) => p.get(i).map(|&n| n as u64),
        }
    }
}

/// MAP_APERTURE_SEGMENT2: point `pages` aperture pages at the ADL's pages from `adl_offset`.
///
/// As decoded, `adl_offset + pages` ≤ the ADL's page count and `offset_in_pages + pages` does
/// not overflow.
#[derive(Clone, Copy, Debug)]
pub struct MapApertureSegment2<'a> {
    /// hDevice.
    pub device: Option<DeviceHandle>,
    /// hAllocation (None for DMA buffers).
    pub allocation: Option<AllocationHandle>,
    /// SegmentId.
    pub segment_id: u32,
    /// OffsetInPages: first aperture page.
    pub offset_in_pages: usize,
    /// NumberOfPages.
    pub pages: usize,
    /// Adl.
    pub adl: AdlView<'a>,
    /// AdlOffset: first ADL page, in pages.
    pub adl_offset: u32,
    /// Flags.CacheCoherent.
    pub cache_coherent: bool,
    /// CpuVisibleAddress as an address (non-zero only for MapApertureCpuVisible allocations;
    /// never dereferenced by the decode).
    pub cpu_visible_address: usize,
    /// CpuVisibleAddress as VidMm keeps it mapped until the UNMAP_APERTURE_SEGMENT of the
    /// allocation (None when NULL).
    pub cpu_view: Option<ApertureCpu>,
}

impl MapApertureSegment2<'_> {
    /// The device page numbers to map, in order (`pages` of them).
    pub fn adl_pages(&self) -> impl Iterator<Item = u64> + '_ {
        let first = self.adl_offset as usize;
        (first..first + self.pages).filter_map(|i| self.adl.page(i))
    }
}

/// UNMAP_APERTURE_SEGMENT: point `pages` aperture pages at `dummy_page`.
///
/// As decoded, `offset_in_pages + pages` does not overflow.
#[derive(Clone, Copy, Debug)]
pub struct UnmapApertureSegment {
    /// hDevice.
    pub device: Option<DeviceHandle>,
    /// hAllocation.
    pub allocation: Option<AllocationHandle>,
    /// SegmentId.
    pub segment_id: u32,
    /// OffsetInPages.
    pub offset_in_pages: usize,
    /// NumberOfPages.
    pub pages: usize,
    /// DummyPage: the physical (logical) address the pages must keep pointing at.
    pub dummy_page: i64,
}

/// VIRTUAL_TRANSFER between two paging-process virtual addresses.
#[derive(Clone, Copy, Debug)]
pub struct VirtualTransfer {
    /// hAllocation.
    pub allocation: Option<AllocationHandle>,
    /// AllocationOffsetInBytes (not to be added to the addresses).
    pub allocation_offset: u64,
    /// TransferSizeInBytes.
    pub size: u64,
    /// SourceVirtualAddress.
    pub source_va: u64,
    /// DestinationVirtualAddress.
    pub destination_va: u64,
    /// SourcePageTable (only with LegacyBehaviors.SourcePageTableVaInTransfer).
    pub source_page_table: u64,
    /// DestinationPageTable (same rule).
    pub destination_page_table: u64,
    /// TransferDirection (DXGK_MEMORY_TRANSFER_DIRECTION).
    pub direction: i32,
    /// DXGK_TRANSFERVIRTUALFLAGS bits.
    pub flags: u32,
}

/// VIRTUAL_FILL of a paging-process virtual range.
#[derive(Clone, Copy, Debug)]
pub struct VirtualFill {
    /// hAllocation.
    pub allocation: Option<AllocationHandle>,
    /// AllocationOffsetInBytes.
    pub allocation_offset: u64,
    /// FillSizeInBytes.
    pub size: u64,
    /// FillPattern.
    pub pattern: u32,
    /// DestinationVirtualAddress.
    pub destination_va: u64,
}

/// INIT_CONTEXT_RESOURCE.
#[derive(Clone, Copy, Debug)]
pub struct InitContextResource {
    /// hAllocation.
    pub allocation: Option<AllocationHandle>,
    /// Destination.SegmentId.
    pub segment_id: u32,
    /// Destination.SegmentAddress.
    pub segment_address: i64,
    /// Destination.GpuVirtualAddress.
    pub gpu_va: u64,
}

/// How UPDATE_PAGE_TABLE reaches the table it updates.
#[derive(Debug)]
pub enum UpdateMode<'a> {
    /// DXGK_PAGETABLEUPDATE_CPU_VIRTUAL (paging-process initialization): the CPU writes the
    /// entries now; there is no DMA buffer.
    CpuVirtual(CpuTable<'a>),
    /// DXGK_PAGETABLEUPDATE_GPU_VIRTUAL: the table at `table_va` in the paging process.
    GpuVirtual {
        /// PageTableAddress.GpuVirtual.
        table_va: u64,
    },
    /// DXGK_PAGETABLEUPDATE_GPU_PHYSICAL.
    GpuPhysical {
        /// PageTableAddress.GpuPhysical.
        table: GpuPhysicalAddress,
    },
}

/// UPDATE_PAGE_TABLE: `count` entries starting at `start_index` of the table at `level`.
///
/// As decoded, `start_index + count` does not overflow and is at most the decode's
/// `max_table_entries`, and `entries` holds `count` entries — one with `repeat` (its entry is
/// the source of every slot), none when `count` is 0.
pub struct UpdatePageTable<'a> {
    /// PageTableLevel (0 = leaf).
    pub level: u32,
    /// hAllocation: the page table's allocation.
    pub allocation: Option<AllocationHandle>,
    /// StartIndex.
    pub start_index: u32,
    /// NumPageTableEntries.
    pub count: u32,
    /// pPageTableEntries.
    pub entries: &'a [DXGK_PTE],
    /// Flags.Repeat.
    pub repeat: bool,
    /// Flags.InitialUpdate.
    pub initial_update: bool,
    /// Flags.NotifyEviction.
    pub notify_eviction: bool,
    /// Flags.Use64KBPages.
    pub use_64k: bool,
    /// DriverProtection.
    pub driver_protection: u64,
    /// AllocationOffsetInBytes.
    pub allocation_offset: u64,
    /// hProcess: the driver's process object (hKmdProcess).
    pub process: Option<ProcessHandle>,
    /// UpdateMode with its PageTableAddress.
    pub mode: UpdateMode<'a>,
    /// FirstPteVirtualAddress.
    pub first_pte_va: u64,
}

impl<'a> UpdatePageTable<'a> {
    /// The source entry of slot `i` (< `count`) of the update.
    pub fn entry(&self, i: usize) -> Option<&'a DXGK_PTE> {
        if i >= self.count as usize {
            return None;
        }
        self.entries.get(if self.repeat { 0 } else { i })
    }
}

impl fmt::Debug for UpdatePageTable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpdatePageTable")
            .field("level", &self.level)
            .field("start_index", &self.start_index)
            .field("count", &self.count)
            .field("repeat", &self.repeat)
            .field("use_64k", &self.use_64k)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// The entries one CPU_VIRTUAL UPDATE_PAGE_TABLE may write: `start..end` of the table mapped
/// at `PageTableAddress.CpuVirtual`.
///
/// The view covers only the entries being updated: the size of the whole table depends on its
/// level's `PageTableSizeInBytes` (a 64 KiB-page leaf table is smaller than 4 KiB), while the
/// DDI promises that the updated entries lie inside it.
///
/// # Invariants
/// `base` is 8-byte aligned and entries `start..end` at it are writable for `'a` (the device
/// may read them: writes are volatile); `start <= end`.
pub struct CpuTable<'a> {
    base: NonNull<u64>,
    start: u32,
    end: u32,
    _table: PhantomData<&'a mut [u64]>,
}

impl fmt::Debug for CpuTable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CpuTable")
            .field("at", &self.base)
            .field("entries", &(self.start..self.end))
            .finish()
    }
}

/// A CPU table index outside the entries the update covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfRange(pub u32);

impl CpuTable<'_> {
    /// The table indices this view may write.
    pub fn range(&self) -> core::ops::Range<u32> {
        self.start..self.end
    }

    /// Writes `value` into entry `index` (an index into the whole table).
    pub fn write(&mut self, index: u32, value: u64) -> Result<(), OutOfRange> {
        if !self.range().contains(&index) {
            return Err(OutOfRange(index));
        }
        let entry = self.base.as_ptr().wrapping_add(index as usize);
        // SAFETY: `index` is in `start..end`, which the invariant makes writable and aligned.
        unsafe { entry.write_volatile(value) };
        Ok(())
    }
}

/// FLUSH_TLB of one process's address space (the whole space or `start..=end`).
#[derive(Clone, Copy, Debug)]
pub struct FlushTlb {
    /// RootPageTableAddress.
    pub root_page_table: GpuPhysicalAddress,
    /// hProcess (the driver's process object).
    pub process: Option<ProcessHandle>,
    /// StartVirtualAddress.
    pub start: u64,
    /// EndVirtualAddress (inclusive; `start == end == 0` means the whole address space). As
    /// decoded, `end >= start`.
    pub end: u64,
}

impl FlushTlb {
    /// True when the flush covers the whole address space (both addresses 0).
    pub fn whole_address_space(&self) -> bool {
        self.start == 0 && self.end == 0
    }
}

/// UPDATE_CONTEXT_ALLOCATION.
#[derive(Clone, Copy, Debug)]
pub struct UpdateContextAllocation<'a> {
    /// ContextAllocation: GPU VA in the paging process.
    pub context_allocation: u64,
    /// ContextAllocationSize.
    pub size: u64,
    /// pDriverPrivateData / DriverPrivateDataSize.
    pub private_data: &'a [u8],
}

/// COPY_PAGE_TABLE_ENTRIES.
#[derive(Clone, Copy)]
pub struct CopyPageTableEntries<'a> {
    /// pRanges / NumRanges.
    pub ranges: &'a [DXGK_BUILDPAGINGBUFFER_COPY_RANGE],
}

impl fmt::Debug for CopyPageTableEntries<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CopyPageTableEntries")
            .field("ranges", &self.ranges.len())
            .finish()
    }
}

/// NOTIFY_RESIDENCY.
#[derive(Clone, Copy, Debug)]
pub struct NotifyResidency {
    /// hAllocation.
    pub allocation: Option<AllocationHandle>,
    /// PhysicalAddress ((0, 0) on eviction).
    pub physical_address: GpuPhysicalAddress,
    /// Resident.
    pub resident: bool,
}

/// SIGNAL_MONITORED_FENCE.
#[derive(Clone, Copy, Debug)]
pub struct SignalMonitoredFence {
    /// MonitoredFenceGpuVa.
    pub fence_va: u64,
    /// MonitoredFenceValue.
    pub value: u64,
}

/// How far an operation got in one DMA buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Completely encoded.
    Done,
    /// The buffer is full: VidMm calls again with `MultipassOffset = next`.
    Full {
        /// The driver's resume point (its unit: pages, entries, ranges...).
        next: u32,
    },
}

/// The DMA buffer of one BuildPagingBuffer call and its multipass state: the only writer of
/// `pDmaBuffer`, `DmaSize` and `MultipassOffset`.
///
/// # Invariants
/// `args.pDmaBuffer` is non-NULL, writable for `args.DmaSize` bytes and not otherwise
/// accessed for `'a`; `pDmaBuffer + DmaSize` does not wrap.
pub struct DmaBuffer<'a> {
    args: &'a mut DXGKARG_BUILDPAGINGBUFFER,
}

impl fmt::Debug for DmaBuffer<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DmaBuffer")
            .field("at", &self.args.pDmaBuffer)
            .field("size", &self.args.DmaSize)
            .field("resume_offset", &self.args.MultipassOffset)
            .finish()
    }
}

impl DmaBuffer<'_> {
    /// `MultipassOffset` as VidMm passed it: 0 on the first call of an operation, else what
    /// the previous call's [`Progress::Full`] said.
    pub fn resume_offset(&self) -> u32 {
        self.args.MultipassOffset
    }

    /// `DmaSize`: bytes free in the buffer.
    pub fn len(&self) -> usize {
        self.args.DmaSize as usize
    }

    /// True when no byte is free.
    pub fn is_empty(&self) -> bool {
        self.args.DmaSize == 0
    }

    /// `DmaBufferGpuVirtualAddress`: where the device sees the start of the buffer.
    pub fn gpu_va(&self) -> u64 {
        self.args.DmaBufferGpuVirtualAddress
    }

    /// The free bytes, to encode commands into.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: per the invariant, `DmaSize` writable bytes at the non-NULL `pDmaBuffer`
        // that nothing else accesses while `self` is borrowed.
        unsafe {
            core::slice::from_raw_parts_mut(
                self.args.pDmaBuffer.cast::<u8>(),
                self.args.DmaSize as usize,
            )
        }
    }

    /// Reports `written` bytes encoded at the start of the buffer and how far the operation
    /// got: advances `pDmaBuffer` / `DmaSize` past them and sets `MultipassOffset` (0 when
    /// done, `next` when full). Returns `Ok` when done and STATUS_GRAPHICS_INSUFFICIENT_DMA_BUFFER
    /// when full; STATUS_INVALID_PARAMETER, leaving every field as it was, if `written` is
    /// more than the buffer holds.
    pub fn finish(self, written: usize, progress: Progress) -> NtResult<()> {
        let Some(left) = u32::try_from(written)
            .ok()
            .and_then(|w| self.args.DmaSize.checked_sub(w))
        else {
            return Err(NtError::INVALID_PARAMETER);
        };
        // INVARIANT: still inside the buffer (written <= DmaSize); the call ends here.
        self.args.pDmaBuffer = self
            .args
            .pDmaBuffer
            .cast::<u8>()
            .wrapping_add(written)
            .cast();
        self.args.DmaSize = left;
        match progress {
            Progress::Done => {
                self.args.MultipassOffset = 0;
                Ok(())
            }
            Progress::Full { next } => {
                self.args.MultipassOffset = next;
                Err(NtError::GRAPHICS_INSUFFICIENT_DMA_BUFFER)
            }
        }
    }
}

/// One DxgkDdiBuildPagingBuffer call, decoded.
#[derive(Debug)]
pub struct BuildPagingBuffer<'a> {
    /// The operation.
    pub op: Op<'a>,
    /// The DMA buffer: `None` exactly for a CPU_VIRTUAL UPDATE_PAGE_TABLE, which has none.
    pub dma: Option<DmaBuffer<'a>>,
}

/// `len` elements of `T` at `ptr` as a slice: empty for 0 (whatever `ptr` is), refused when
/// NULL, misaligned or too large.
///
/// # Safety
/// For `len > 0`, a non-NULL aligned `ptr` must point to `len` initialized `T`s that are not
/// written for `'a`.
unsafe fn array<'a, T>(
    ptr: *const T,
    len: usize,
    field: &'static str,
) -> Result<&'a [T], DecodeError> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(DecodeError::Null(field));
    }
    if !ptr.is_aligned() {
        return Err(DecodeError::Misaligned(field));
    }
    let bytes = len.checked_mul(core::mem::size_of::<T>());
    if !matches!(bytes, Some(b) if b <= isize::MAX as usize) {
        return Err(DecodeError::TooLarge(field));
    }
    // SAFETY: non-NULL, aligned, `len` elements of at most isize::MAX bytes, initialized and
    // unchanged for 'a per the caller.
    Ok(unsafe { core::slice::from_raw_parts(ptr, len) })
}

/// # Safety
/// As [`Mdl::from_raw`].
unsafe fn mdl<'a>(raw: *mut sys::MDL, field: &'static str) -> Result<Mdl<'a>, DecodeError> {
    // SAFETY: forwarded.
    unsafe { Mdl::from_raw(raw) }.map_err(|error| DecodeError::Mdl { field, error })
}

/// A TRANSFER side from its SegmentId and the two readings of its union.
///
/// # Safety
/// For segment 0, `raw_mdl` must be valid as [`Mdl::from_raw`] requires.
unsafe fn transfer_side<'a>(
    segment_id: u32,
    raw_mdl: *mut sys::MDL,
    address: i64,
    field: &'static str,
) -> Result<TransferSide<'a>, DecodeError> {
    if segment_id == 0 {
        // SAFETY: per the caller.
        let mdl = unsafe { mdl(raw_mdl, field) }?;
        Ok(TransferSide::Mdl { mdl })
    } else {
        Ok(TransferSide::Segment {
            id: segment_id,
            address,
        })
    }
}

fn pages_end(offset: usize, pages: usize, what: &'static str) -> Result<usize, DecodeError> {
    offset.checked_add(pages).ok_or(DecodeError::Overflow(what))
}

impl<'a> BuildPagingBuffer<'a> {
    /// Decodes Dxgkrnl's argument block once. `max_table_entries` is the number of entries of
    /// the driver's largest page table (its `DXGK_PAGE_TABLE_LEVEL_DESC.PageTableSizeInBytes /
    /// 8`): an UPDATE_PAGE_TABLE naming entries past it cannot be well formed, and is refused
    /// before its entry array is touched.
    ///
    /// Refuses (see [`DecodeError`]): NULL arguments; NULL `pDmaBuffer` (whatever `DmaSize`)
    /// unless the operation is a CPU_VIRTUAL UPDATE_PAGE_TABLE; a DMA buffer that wraps the
    /// address space; operation codes past 17; unknown update modes; NULL or misaligned entry,
    /// range, table, private-data and MDL pointers where the operation needs them (the entry
    /// and table pointers of UPDATE_PAGE_TABLE always: VidMm always passes them); malformed
    /// MDLs ([`Mdl::from_raw`]); `StartIndex + NumPageTableEntries` overflowing or past
    /// `max_table_entries`; `OffsetInPages + NumberOfPages` and `MdlOffset + NumberOfPages`
    /// overflowing; a MAP_APERTURE_SEGMENT MDL with fewer than `MdlOffset + NumberOfPages`
    /// pages; a FLUSH_TLB range that ends before it starts.
    ///
    /// # Safety
    /// `args` must be NULL or Dxgkrnl's argument block for this call, not otherwise accessed
    /// for `'a`, with the pointers in it valid as the DDI documents: `pDmaBuffer` writable for
    /// `DmaSize` bytes; for the operation `Operation` names, `pPageTableEntries` holding
    /// `NumPageTableEntries` entries (1 with Repeat) when that is at most `max_table_entries`,
    /// `PageTableAddress.CpuVirtual` mapping the table's entries `StartIndex..StartIndex +
    /// NumPageTableEntries` (CPU_VIRTUAL mode), `pRanges` holding `NumRanges` ranges,
    /// `pDriverPrivateData` holding `DriverPrivateDataSize` bytes, and every MDL valid as
    /// [`Mdl::from_raw`] requires; all of them readable (the table and DMA buffer writable),
    /// and not written by anyone else, for `'a`. Beyond `'a`, as VidMm guarantees: a
    /// MAP_APERTURE_SEGMENT `pMdl` stays valid that way (its pages locked) until the
    /// UNMAP_APERTURE_SEGMENT of the pages it maps, and a non-NULL MAP_APERTURE_SEGMENT2
    /// `CpuVisibleAddress` maps the allocation's pages, readable and writable, until the
    /// UNMAP_APERTURE_SEGMENT of the allocation.
    pub unsafe fn from_raw(
        args: *mut DXGKARG_BUILDPAGINGBUFFER,
        max_table_entries: u32,
    ) -> Result<BuildPagingBuffer<'a>, DecodeError> {
        if args.is_null() || !args.is_aligned() {
            return Err(DecodeError::BadArguments);
        }
        // SAFETY: non-NULL and aligned; per the caller, Dxgkrnl's block, ours for 'a.
        let a: &'a mut DXGKARG_BUILDPAGINGBUFFER = unsafe { &mut *args };
        let code = a.Operation;
        let cpu_update = code == sys::DXGK_OPERATION_UPDATE_PAGE_TABLE && {
            // SAFETY: the operation names UpdatePageTable as the valid member; plain data.
            let mode = unsafe { a.u.UpdatePageTable.UpdateMode };
            mode == sys::DXGK_PAGETABLEUPDATE_CPU_VIRTUAL
        };
        // The buffer first: a call without one is malformed whatever its operation.
        if !cpu_update {
            if a.pDmaBuffer.is_null() {
                return Err(DecodeError::NoDmaBuffer { size: a.DmaSize });
            }
            if (a.pDmaBuffer as usize)
                .checked_add(a.DmaSize as usize)
                .is_none()
            {
                return Err(DecodeError::DmaBufferWraps { size: a.DmaSize });
            }
        }
        let operation = Operation::from_raw(code).ok_or(DecodeError::UnknownOperation(code.0))?;
        // SAFETY: `operation` names the valid union member; the pointers in it are valid per
        // the caller.
        let op = unsafe { decode_op(operation, a, max_table_entries) }?;
        // INVARIANT (DmaBuffer): pDmaBuffer non-NULL and not wrapping (checked above),
        // writable for DmaSize bytes and ours for 'a (the caller).
        let dma = (!cpu_update).then_some(DmaBuffer { args: a });
        Ok(BuildPagingBuffer { op, dma })
    }
}

/// Copies and checks the union member `operation` names.
///
/// # Safety
/// As [`BuildPagingBuffer::from_raw`], for `a`'s pointers.
unsafe fn decode_op<'a>(
    operation: Operation,
    a: &DXGKARG_BUILDPAGINGBUFFER,
    max_table_entries: u32,
) -> Result<Op<'a>, DecodeError> {
    let handle = AllocationHandle::from_raw;
    // Each arm reads the member its operation names: plain data (integers, pointers, unions
    // of those), which any bit pattern is a value of.
    Ok(match operation {
        Operation::Transfer => {
            // SAFETY: the member the operation names.
            let t = unsafe { a.u.Transfer };
            Op::Transfer(Transfer {
                allocation: handle(t.hAllocation),
                transfer_offset: t.TransferOffset,
                size: t.TransferSize,
                source: {
                    let (id, u) = (t.Source.SegmentId, t.Source.u);
                    // SAFETY: both union members are 8 bytes of plain data (which one counts
                    // is decided by the SegmentId).
                    let raw = unsafe { u.pMdl };
                    // SAFETY: as above.
                    let address = unsafe { u.SegmentAddress };
                    // SAFETY: LARGE_INTEGER is plain data.
                    let address = unsafe { address.QuadPart };
                    // SAFETY: an MDL side's pMdl is valid per the caller.
                    unsafe { transfer_side(id, raw, address, "Source.pMdl") }?
                },
                destination: {
                    let (id, u) = (t.Destination.SegmentId, t.Destination.u);
                    // SAFETY: as for the source.
                    let raw = unsafe { u.pMdl };
                    // SAFETY: as for the source.
                    let address = unsafe { u.SegmentAddress };
                    // SAFETY: LARGE_INTEGER is plain data.
                    let address = unsafe { address.QuadPart };
                    // SAFETY: as for the source.
                    unsafe { transfer_side(id, raw, address, "Destination.pMdl") }?
                },
                flags: t.Flags.Value,
                mdl_offset: t.MdlOffset,
            })
        }
        Operation::Fill => {
            // SAFETY: the member the operation names.
            let f = unsafe { a.u.Fill };
            Op::Fill(Fill {
                allocation: handle(f.hAllocation),
                size: f.FillSize,
                pattern: f.FillPattern,
                segment_id: f.Destination.SegmentId,
                // SAFETY: LARGE_INTEGER is plain data.
                segment_address: unsafe { f.Destination.SegmentAddress.QuadPart },
            })
        }
        Operation::DiscardContent => {
            // SAFETY: the member the operation names.
            let d = unsafe { a.u.DiscardContent };
            Op::DiscardContent(DiscardContent {
                allocation: handle(d.hAllocation),
                flags: d.Flags.Value,
                segment_id: d.SegmentId,
                // SAFETY: LARGE_INTEGER is plain data.
                segment_address: unsafe { d.SegmentAddress.QuadPart },
            })
        }
        Operation::ReadPhysical | Operation::WritePhysical => {
            let (segment_id, address) = if operation == Operation::ReadPhysical {
                // SAFETY: the member the operation names.
                let r = unsafe { a.u.ReadPhysical };
                (r.SegmentId, r.PhysicalAddress)
            } else {
                // SAFETY: the member the operation names.
                let w = unsafe { a.u.WritePhysical };
                (w.SegmentId, w.PhysicalAddress)
            };
            let access = PhysicalAccess {
                segment_id,
                // SAFETY: LARGE_INTEGER is plain data.
                physical_address: unsafe { address.QuadPart },
            };
            if operation == Operation::ReadPhysical {
                Op::ReadPhysical(access)
            } else {
                Op::WritePhysical(access)
            }
        }
        Operation::MapApertureSegment => {
            // SAFETY: the member the operation names.
            let m = unsafe { a.u.MapApertureSegment };
            pages_end(
                m.OffsetInPages,
                m.NumberOfPages,
                "OffsetInPages + NumberOfPages",
            )?;
            // SAFETY: pMdl is valid per the caller.
            let mdl = unsafe { mdl(m.pMdl, "pMdl") }?;
            let holds = usize::try_from(m.MdlOffset)
                .ok()
                .and_then(|o| o.checked_add(m.NumberOfPages))
                .ok_or(DecodeError::Overflow("MdlOffset + NumberOfPages"))?;
            if holds > mdl.page_count() {
                return Err(DecodeError::MdlTooShort {
                    mdl_offset: m.MdlOffset,
                    pages: m.NumberOfPages,
                    mdl_pages: mdl.page_count(),
                });
            }
            Op::MapApertureSegment(MapApertureSegment {
                device: DeviceHandle::from_raw(m.hDevice),
                allocation: handle(m.hAllocation),
                segment_id: m.SegmentId,
                offset_in_pages: m.OffsetInPages,
                pages: m.NumberOfPages,
                mdl,
                mdl_offset: m.MdlOffset,
                cache_coherent: m.Flags.CacheCoherent() != 0,
                retained: ApertureMdl { mdl: mdl.header() },
            })
        }
        Operation::UnmapApertureSegment => {
            // SAFETY: the member the operation names.
            let u = unsafe { a.u.UnmapApertureSegment };
            pages_end(
                u.OffsetInPages,
                u.NumberOfPages,
                "OffsetInPages + NumberOfPages",
            )?;
            Op::UnmapApertureSegment(UnmapApertureSegment {
                device: DeviceHandle::from_raw(u.hDevice),
                allocation: handle(u.hAllocation),
                segment_id: u.SegmentId,
                offset_in_pages: u.OffsetInPages,
                pages: u.NumberOfPages,
                // SAFETY: LARGE_INTEGER is plain data.
                dummy_page: unsafe { u.DummyPage.QuadPart },
            })
        }
        Operation::SpecialLockTransfer => Op::SpecialLockTransfer,
        Operation::VirtualTransfer => {
            // SAFETY: the member the operation names.
            let t = unsafe { a.u.TransferVirtual };
            Op::VirtualTransfer(VirtualTransfer {
                allocation: handle(t.hAllocation),
                allocation_offset: t.AllocationOffsetInBytes,
                size: t.TransferSizeInBytes,
                source_va: t.SourceVirtualAddress,
                destination_va: t.DestinationVirtualAddress,
                source_page_table: t.SourcePageTable,
                destination_page_table: t.DestinationPageTable,
                direction: t.TransferDirection.0,
                flags: t.Flags.Flags,
            })
        }
        Operation::VirtualFill => {
            // SAFETY: the member the operation names.
            let f = unsafe { a.u.FillVirtual };
            Op::VirtualFill(VirtualFill {
                allocation: handle(f.hAllocation),
                allocation_offset: f.AllocationOffsetInBytes,
                size: f.FillSizeInBytes,
                pattern: f.FillPattern,
                destination_va: f.DestinationVirtualAddress,
            })
        }
        Operation::InitContextResource => {
            // SAFETY: the member the operation names.
            let i = unsafe { a.u.InitContextResource };
            Op::InitContextResource(InitContextResource {
                allocation: handle(i.hAllocation),
                segment_id: i.Destination.SegmentId,
                segment_address: {
                    // SAFETY: SegmentAddress is the union's only member; plain data.
                    let address = unsafe { i.Destination.u.SegmentAddress };
                    // SAFETY: LARGE_INTEGER is plain data.
                    unsafe { address.QuadPart }
                },
                gpu_va: i.Destination.GpuVirtualAddress,
            })
        }
        Operation::UpdatePageTable => {
            // SAFETY: the member the operation names; pointers valid per the caller.
            Op::UpdatePageTable(unsafe { update_page_table(a, max_table_entries) }?)
        }
        Operation::FlushTlb => {
            // SAFETY: the member the operation names.
            let f = unsafe { a.u.FlushTlb };
            let (start, end) = (f.StartVirtualAddress, f.EndVirtualAddress);
            if end < start {
                return Err(DecodeError::FlushRange { start, end });
            }
            Op::FlushTlb(FlushTlb {
                root_page_table: f.RootPageTableAddress.into(),
                process: ProcessHandle::from_raw(f.hProcess),
                start,
                end,
            })
        }
        Operation::UpdateContextAllocation => {
            // SAFETY: the member the operation names.
            let u = unsafe { a.u.UpdateContextAllocation };
            // SAFETY: DriverPrivateDataSize bytes at pDriverPrivateData per the caller.
            let private_data = unsafe {
                array(
                    u.pDriverPrivateData.cast::<u8>(),
                    u.DriverPrivateDataSize as usize,
                    "pDriverPrivateData",
                )
            }?;
            Op::UpdateContextAllocation(UpdateContextAllocation {
                context_allocation: u.ContextAllocation,
                size: u.ContextAllocationSize,
                private_data,
            })
        }
        Operation::CopyPageTableEntries => {
            // SAFETY: the member the operation names.
            let c = unsafe { a.u.CopyPageTableEntries };
            // SAFETY: NumRanges ranges at pRanges per the caller.
            let ranges = unsafe { array(c.pRanges.cast_const(), c.NumRanges as usize, "pRanges") }?;
            Op::CopyPageTableEntries(CopyPageTableEntries { ranges })
        }
        Operation::NotifyResidency => {
            // SAFETY: the member the operation names.
            let n = unsafe { a.u.NotifyResidency };
            Op::NotifyResidency(NotifyResidency {
                allocation: handle(n.hAllocation),
                physical_address: n.PhysicalAddress.into(),
                resident: n.Resident() != 0,
            })
        }
        Operation::SignalMonitoredFence => {
            // SAFETY: the member the operation names.
            let s = unsafe { a.u.SignalMonitoredFence };
            Op::SignalMonitoredFence(SignalMonitoredFence {
                fence_va: s.MonitoredFenceGpuVa,
                value: s.MonitoredFenceValue,
            })
        }
        Operation::MapApertureSegment2 => {
            // SAFETY: the member the operation names.
            let m = unsafe { a.u.MapApertureSegment2 };
            pages_end(
                m.OffsetInPages,
                m.NumberOfPages,
                "OffsetInPages + NumberOfPages",
            )?;
            let count = m.Adl.PageCount as usize;
            let adl = if m.Adl.Flags.Contiguous() != 0 {
                // SAFETY: the Contiguous flag selects the BasePageNumber arm (plain data).
                let base = unsafe { m.Adl.u.BasePageNumber } as u64;
                base.checked_add(count as u64)
                    .ok_or(DecodeError::Overflow("Adl.BasePageNumber + PageCount"))?;
                AdlView::Contiguous { base, pages: count }
            } else {
                // SAFETY: a page list: `Pages` points at PageCount entries per the caller.
                let list = unsafe { m.Adl.u.Pages };
                // SAFETY: as above; `array` checks NULL and alignment.
                AdlView::Pages(unsafe { array(list, count, "Adl.Pages") }?)
            };
            let holds = usize::try_from(m.AdlOffset)
                .ok()
                .and_then(|o| o.checked_add(m.NumberOfPages))
                .ok_or(DecodeError::Overflow("AdlOffset + NumberOfPages"))?;
            if holds > count {
                return Err(DecodeError::AdlTooShort {
                    adl_offset: m.AdlOffset,
                    pages: m.NumberOfPages,
                    adl_pages: count,
                });
            }
            Op::MapApertureSegment2(MapApertureSegment2 {
                device: DeviceHandle::from_raw(m.hDevice),
                allocation: handle(m.hAllocation),
                segment_id: m.SegmentId,
                offset_in_pages: m.OffsetInPages,
                pages: m.NumberOfPages,
                adl,
                adl_offset: m.AdlOffset,
                cache_coherent: m.Flags.CacheCoherent() != 0,
                cpu_visible_address: m.CpuVisibleAddress as usize,
                cpu_view: NonNull::new(m.CpuVisibleAddress.cast::<u8>())
                    .map(|base| ApertureCpu { base }),
            })
        }
    })
}

/// # Safety
/// `a.Operation` is UPDATE_PAGE_TABLE; its pointers are valid as
/// [`BuildPagingBuffer::from_raw`] requires.
unsafe fn update_page_table<'a>(
    a: &DXGKARG_BUILDPAGINGBUFFER,
    max_table_entries: u32,
) -> Result<UpdatePageTable<'a>, DecodeError> {
    // SAFETY: the member the operation names; plain data.
    let u = unsafe { a.u.UpdatePageTable };
    let (start, count) = (u.StartIndex, u.NumPageTableEntries);
    let end = start
        .checked_add(count)
        .ok_or(DecodeError::Overflow("StartIndex + NumPageTableEntries"))?;
    if end > max_table_entries {
        return Err(DecodeError::TableRange {
            start,
            count,
            max: max_table_entries,
        });
    }
    let repeat = u.Flags.Repeat() != 0;
    // VidMm always passes its entry array, even for an empty update.
    if u.pPageTableEntries.is_null() {
        return Err(DecodeError::Null("pPageTableEntries"));
    }
    let provided = if repeat { count.min(1) } else { count };
    // SAFETY: `provided` entries (NumPageTableEntries, 1 with Repeat; count <= max_table_entries)
    // at pPageTableEntries per the caller.
    let entries = unsafe {
        array(
            u.pPageTableEntries.cast_const(),
            provided as usize,
            "pPageTableEntries",
        )
    }?;
    let mode = if u.UpdateMode == sys::DXGK_PAGETABLEUPDATE_CPU_VIRTUAL {
        // SAFETY: CPU_VIRTUAL names CpuVirtual as the valid member (a pointer).
        let table = unsafe { u.PageTableAddress.u.CpuVirtual }.cast::<u64>();
        let base = NonNull::new(table).ok_or(DecodeError::Null("PageTableAddress.CpuVirtual"))?;
        if !table.is_aligned() {
            return Err(DecodeError::Misaligned("PageTableAddress.CpuVirtual"));
        }
        // INVARIANT: aligned; entries start..end writable for 'a per the caller; start <= end.
        UpdateMode::CpuVirtual(CpuTable {
            base,
            start,
            end,
            _table: PhantomData,
        })
    } else if u.UpdateMode == sys::DXGK_PAGETABLEUPDATE_GPU_VIRTUAL {
        UpdateMode::GpuVirtual {
            // SAFETY: GPU_VIRTUAL names GpuVirtual as the valid member; plain data.
            table_va: unsafe { u.PageTableAddress.u.GpuVirtual },
        }
    } else if u.UpdateMode == sys::DXGK_PAGETABLEUPDATE_GPU_PHYSICAL {
        UpdateMode::GpuPhysical {
            // SAFETY: GPU_PHYSICAL names GpuPhysical as the valid member; plain data.
            table: unsafe { u.PageTableAddress.u.GpuPhysical }.into(),
        }
    } else {
        return Err(DecodeError::UnknownUpdateMode(u.UpdateMode.0));
    };
    Ok(UpdatePageTable {
        level: u.PageTableLevel,
        allocation: AllocationHandle::from_raw(u.hAllocation),
        start_index: start,
        count,
        entries,
        repeat,
        initial_update: u.Flags.InitialUpdate() != 0,
        notify_eviction: u.Flags.NotifyEviction() != 0,
        use_64k: u.Flags.Use64KBPages() != 0,
        driver_protection: u.DriverProtection,
        allocation_offset: u.AllocationOffsetInBytes,
        process: ProcessHandle::from_raw(u.hProcess),
        mode,
        first_pte_va: u.FirstPteVirtualAddress,
    })
}
