//! DxgkDdiBuildPagingBuffer: VidMm's paging operations encoded as rgpu commands.
//!
//! rgpu declares `DXGK_PAGETABLEUPDATE_GPU_VIRTUAL`, so page-table writes travel inside the
//! paging buffer as WRITE_PTES commands executed by the device in the paging process's address
//! space (ASID [`PAGING_ASID`]). The one exception is the CPU_VIRTUAL update Windows forces for
//! the system paging process's own tables (NULL DMA buffer): those entries are written at once
//! with the CPU.
//!
//! Multipass: when the DMA buffer is full the operation returns
//! STATUS_GRAPHICS_INSUFFICIENT_DMA_BUFFER with `MultipassOffset` = the number of *units* done
//! (PTEs for UPDATE_PAGE_TABLE, pages for TRANSFER/FILL, ranges for COPY_PAGE_TABLE_ENTRIES);
//! VidMm submits what was written and calls again with the same operation and that offset, and
//! encoding resumes at exactly that unit: nothing duplicated, nothing lost. A unit is never
//! split between two buffers.
//!
//! Addresses: a DXGK_PTE's page number is a logical page when its `Segment` is 0 or the implicit
//! system-memory segment; for the aperture segment it indexes rgpu's GART ([`Aperture`]), which
//! MAP/UNMAP_APERTURE_SEGMENT fill from VidMm's MDLs (MAP_APERTURE_SEGMENT2: from its ADLs,
//! for an adapter that opted in to DMA remapping) — so the driver never computes a device
//! address itself.
//!
//! Operations that cannot occur with rgpu's caps (READ/WRITE_PHYSICAL: no memory segments;
//! SPECIAL_LOCK_TRANSFER: no swizzling) return STATUS_NOT_SUPPORTED and log — VidMm treats that as fatal, which is right
//! for an operation the caps exclude.
//!
//! Page sizes (64 KiB-page leaf tables): see [`pte`].
//!
//! Layout: the DDI entry layer decodes the raw argument block once with
//! [`dxgk::paging::BuildPagingBuffer::from_raw`]; [`PagingContext::build`] dispatches the
//! decoded [`Op`] to the encoders in `ops`, PTE translation lives in [`pte`] (its SSE2 batch
//! kernel in `simd`, the one file here with intrinsics), the GART in [`aperture`]. Errors are
//! [`PagingError`]s that keep their cause; [`report`] logs one once and converts it to the
//! NTSTATUS VidMm sees.

use core::fmt;

use dxgk::aperture_views::{ApertureViews, ViewError};
use dxgk::handle::ProcessHandle;
use dxgk::paging::{
    BuildPagingBuffer, DecodeError, Op, Operation, OutOfRange, Progress, UpdateMode,
};
use dxgk::{NtError, NtResult};
use rgpu_hw::cmd::{CmdError, Encoder, FlushScope, Target};

pub mod aperture;
mod ops;
pub mod pte;
mod simd;

pub use aperture::{Aperture, ApertureError, APERTURE_PAGES};
pub use pte::{translate_pte, PteError, TableError, TableKind};

/// The device ASID the system paging process runs in.
pub const PAGING_ASID: u8 = 0;

/// Entries of rgpu's largest page table (every level's `PageTableSizeInBytes` is 4 KiB): the
/// bound [`BuildPagingBuffer::from_raw`] checks UPDATE_PAGE_TABLE's entry range against.
pub const MAX_TABLE_ENTRIES: u32 = rgpu_hw::pte::ENTRIES_PER_TABLE as u32;

const PAGE: u64 = 4096;

/// Why rgpu refused a BuildPagingBuffer call, with the cause.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PagingError {
    /// The argument block is malformed (found by the decode in `dxgk`).
    Decode(DecodeError),
    /// An operation rgpu's caps exclude.
    NotSupported(Operation),
    /// MAP/UNMAP_APERTURE_SEGMENT before the adapter has its GART.
    NoAperture,
    /// No DMA buffer for an operation that encodes commands.
    NoDmaBuffer(Operation),
    /// A GPU_PHYSICAL UPDATE_PAGE_TABLE: rgpu declares GPU_VIRTUAL updates.
    GpuPhysicalUpdate,
    /// UPDATE_PAGE_TABLE of a table rgpu does not have.
    Table(TableError),
    /// Entry `index` of an UPDATE_PAGE_TABLE cannot be translated.
    Pte {
        /// Entry of the update (0 = the one at StartIndex).
        index: usize,
        /// Why.
        error: PteError,
    },
    /// The update's entry array lacks slots `first..first + count`.
    Entries {
        /// First slot.
        first: usize,
        /// Slots.
        count: usize,
    },
    /// The command encoder refused a command for another reason than room.
    Command(CmdError),
    /// A segment id the operation cannot use.
    Segment {
        /// The operation.
        op: Operation,
        /// SegmentId.
        id: u32,
    },
    /// A negative segment address.
    SegmentAddress(i64),
    /// An aperture byte address whose page is not mapped (or no aperture yet).
    ApertureAddress(u64),
    /// A TRANSFER aperture address that is not page aligned.
    UnalignedAperture(u64),
    /// A size or address the command needs aligned to 4 bytes.
    Unaligned {
        /// The field.
        what: &'static str,
        /// Its value.
        value: u64,
    },
    /// A TRANSFER's MDL side has no page `page` (it spans `pages`).
    MdlPage {
        /// MdlOffset + the unit's page.
        page: u64,
        /// Pages the MDL spans.
        pages: usize,
    },
    /// The GART update failed.
    Aperture(ApertureError),
    /// Soft rgpu could not register the mapped pages' CPU views.
    Views(ViewError),
    /// MAP_APERTURE_SEGMENT2 without a CpuVisibleAddress on a soft adapter (the engine could
    /// not reach the pages).
    NoCpuView,
    /// COPY_PAGE_TABLE_ENTRIES range `index` is empty or leaves its tables.
    CopyRange {
        /// The range.
        index: u32,
    },
    /// An address computation wraps 64 bits (a table at the top of the address space).
    AddressOverflow(&'static str),
    /// A CPU_VIRTUAL table write outside the updated entries.
    CpuTable(OutOfRange),
}

impl From<DecodeError> for PagingError {
    fn from(e: DecodeError) -> Self {
        PagingError::Decode(e)
    }
}

impl From<TableError> for PagingError {
    fn from(e: TableError) -> Self {
        PagingError::Table(e)
    }
}

impl PagingError {
    /// The NTSTATUS VidMm gets: STATUS_NOT_SUPPORTED for operations the caps exclude (and
    /// codes that do not exist), STATUS_INVALID_DEVICE_STATE before start, the table's own
    /// status for a failed GART write, STATUS_INVALID_PARAMETER for malformed input.
    pub fn status(self) -> NtError {
        match self {
            PagingError::Decode(e) => e.into(),
            PagingError::NotSupported(_) => NtError::NOT_SUPPORTED,
            PagingError::NoAperture => NtError::INVALID_DEVICE_STATE,
            PagingError::Aperture(ApertureError::Table(e)) => e,
            PagingError::Views(e) => e.into(),
            _ => NtError::INVALID_PARAMETER,
        }
    }
}

impl From<PagingError> for NtError {
    fn from(e: PagingError) -> Self {
        e.status()
    }
}

impl fmt::Display for PagingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            PagingError::Decode(e) => write!(f, "malformed arguments: {e}"),
            PagingError::NotSupported(op) => write!(
                f,
                "operation {} ({op:?}) cannot occur with rgpu's caps (no memory segments, no swizzling)",
                op.raw().0
            ),
            PagingError::NoAperture => write!(f, "no aperture before StartDevice"),
            PagingError::NoDmaBuffer(op) => write!(f, "{op:?} without a DMA buffer"),
            PagingError::GpuPhysicalUpdate => write!(
                f,
                "UpdatePageTable: GPU_PHYSICAL mode (rgpu declares GPU_VIRTUAL)"
            ),
            PagingError::Table(e) => write!(f, "UpdatePageTable: {e}"),
            PagingError::Pte { index, error } => {
                write!(f, "UpdatePageTable: entry {index}: {error:?}")
            }
            PagingError::Entries { first, count } => write!(
                f,
                "UpdatePageTable: no source entries for slots {first}+{count}"
            ),
            PagingError::Command(e) => write!(f, "command refused: {e:?}"),
            PagingError::Segment { op, id } => write!(f, "{op:?}: segment {id}"),
            PagingError::SegmentAddress(a) => write!(f, "negative segment address {a:#x}"),
            PagingError::ApertureAddress(a) => {
                write!(f, "aperture address {a:#x} is not mapped")
            }
            PagingError::UnalignedAperture(a) => {
                write!(f, "Transfer: aperture address {a:#x} is not page aligned")
            }
            PagingError::Unaligned { what, value } => {
                write!(f, "{what} {value:#x} is not a multiple of 4")
            }
            PagingError::MdlPage { page, pages } => {
                write!(f, "MDL page {page} past its {pages} pages")
            }
            PagingError::Aperture(e) => write!(f, "GART: {e:?}"),
            PagingError::Views(e) => write!(f, "soft rgpu page registry: {e:?}"),
            PagingError::NoCpuView => write!(
                f,
                "MapApertureSegment2 without CpuVisibleAddress on a soft adapter (its engine needs a CPU view)"
            ),
            PagingError::CopyRange { index } => write!(
                f,
                "CopyPageTableEntries: range {index} is empty or leaves its 512-entry tables"
            ),
            PagingError::AddressOverflow(what) => write!(f, "{what} wraps 64 bits"),
            PagingError::CpuTable(OutOfRange(i)) => {
                write!(f, "UpdatePageTable: CPU table entry {i} outside the update")
            }
        }
    }
}

/// Logs `e` once, with its cause, and returns the status for VidMm.
pub fn report(e: PagingError) -> NtError {
    rgpu_log!(error, "BuildPagingBuffer: {}", e);
    e.status()
}

/// What BuildPagingBuffer needs from the adapter.
pub struct PagingContext<'a> {
    /// The adapter's GART (None before start).
    pub aperture: Option<&'a Aperture>,
    /// Soft rgpu's registry of aperture pages' CPU views (None on hardware): MAP/UNMAP feed it.
    pub views: Option<&'a ApertureViews>,
    /// Maps a KMD process handle (`hProcess`) to the device ASID it runs in, so that TLB
    /// flushes hit one address space; None (or a handle it does not know) flushes every ASID.
    pub asid_of: Option<&'a dyn Fn(ProcessHandle) -> Option<u8>>,
}

impl PagingContext<'_> {
    /// Runs one decoded DxgkDdiBuildPagingBuffer call. Returns SUCCESS, INSUFFICIENT_DMA_BUFFER
    /// (with the DMA buffer's `MultipassOffset`, `pDmaBuffer` and `DmaSize` updated), or — for
    /// malformed input and operations rgpu's caps exclude — the error's status, logged once
    /// with its cause (nothing is reported written then).
    pub fn build(&self, req: BuildPagingBuffer<'_>) -> NtResult<()> {
        let BuildPagingBuffer { op, dma } = req;
        let Some(mut dma) = dma else {
            return self.update_without_dma(op).map_err(report);
        };
        let start = dma.resume_offset();
        let mut enc = Encoder::new(dma.as_mut_slice());
        let progress = self.encode(op, start, &mut enc).map_err(report)?;
        let written = enc.position();
        dma.finish(written, progress)
    }

    /// The one operation without a DMA buffer: a CPU_VIRTUAL UPDATE_PAGE_TABLE.
    fn update_without_dma(&self, op: Op<'_>) -> Result<(), PagingError> {
        match op {
            Op::UpdatePageTable(upt) => self.update_page_table_cpu(upt),
            other => Err(PagingError::NoDmaBuffer(other.operation())),
        }
    }

    /// Encodes `op` from unit `start` into `enc`.
    fn encode(
        &self,
        op: Op<'_>,
        start: u32,
        enc: &mut Encoder<'_>,
    ) -> Result<Progress, PagingError> {
        match op {
            Op::UpdatePageTable(upt) => match upt.mode {
                UpdateMode::GpuVirtual { table_va } => {
                    self.update_page_table_gpu(&upt, table_va, start, enc)
                }
                UpdateMode::GpuPhysical { .. } => Err(PagingError::GpuPhysicalUpdate),
                // A CPU_VIRTUAL update never carries a DMA buffer; none is written.
                UpdateMode::CpuVirtual(_) => {
                    self.update_page_table_cpu(upt).map(|()| Progress::Done)
                }
            },
            Op::FlushTlb(f) => {
                // The process's own address space when the driver knows it (hProcess is the
                // process object rgpu created), else every ASID. Both 0 = the whole VA space;
                // a range is flushed inclusive of its end address (flushing one extra page is
                // harmless). The decode guarantees end >= start.
                let asid = self
                    .asid_of
                    .zip(f.process)
                    .and_then(|(asid_of, p)| asid_of(p));
                let scope = match asid {
                    None => FlushScope::All,
                    Some(asid) if f.whole_address_space() => FlushScope::Asid(asid),
                    Some(asid) => FlushScope::Range {
                        asid,
                        va: f.start,
                        size: (f.end - f.start).saturating_add(1),
                    },
                };
                ops::once(enc.flush_tlb(scope))
            }
            Op::VirtualFill(f) => self.virtual_fill(&f, enc),
            Op::VirtualTransfer(t) => ops::once(enc.copy(
                Target::Virtual(t.destination_va),
                Target::Virtual(t.source_va),
                t.size,
            )),
            Op::Transfer(t) => self.transfer(&t, start, enc),
            Op::Fill(f) => self.fill(&f, start, enc),
            Op::SignalMonitoredFence(s) => ops::once(enc.write_data(
                Target::Virtual(s.fence_va),
                &[s.value as u32, (s.value >> 32) as u32],
            )),
            Op::CopyPageTableEntries(c) => ops::copy_page_table_entries(&c, start, enc),
            Op::MapApertureSegment(m) => self.map_aperture(&m).map(|()| Progress::Done),
            Op::MapApertureSegment2(m) => self.map_aperture2(&m).map(|()| Progress::Done),
            Op::UnmapApertureSegment(u) => self.unmap_aperture(&u).map(|()| Progress::Done),
            // Nothing for the device to do: no content to discard in system memory, no
            // residency bookkeeping (no AccessedPhysically allocations), no context
            // allocations or resources.
            Op::DiscardContent(_)
            | Op::NotifyResidency(_)
            | Op::UpdateContextAllocation(_)
            | Op::InitContextResource(_) => Ok(Progress::Done),
            Op::ReadPhysical(_) | Op::WritePhysical(_) | Op::SpecialLockTransfer => {
                Err(PagingError::NotSupported(op.operation()))
            }
        }
    }
}
