//! The operations that encode rgpu commands or update the GART. Each resumes at unit `start`
//! (`MultipassOffset`) and says how far it got; none touches the DMA buffer's bookkeeping,
//! which `dxgk::paging::DmaBuffer::finish` owns.

use dxgk::paging::{
    CopyPageTableEntries, Fill, MapApertureSegment, MapApertureSegment2, Operation, Progress,
    Transfer, TransferSide, UnmapApertureSegment, UpdateMode, UpdatePageTable, VirtualFill,
};
use dxgk_sys::DXGK_PTE;
use rgpu_hw::cmd::{CmdError, Encoder, Target};
use rgpu_hw::pte::Pte;

use super::pte::{convert, convert_repeat, translate_pte, Stores, TableKind};
use super::{PagingContext, PagingError, PAGE};
use crate::caps::APERTURE_SEGMENT_ID;
use dxgk::aperture_views::ViewError;

fn full(e: CmdError) -> bool {
    matches!(e, CmdError::BufferTooSmall { .. })
}

/// A single-command operation: done, or full before it (unit 0).
pub(super) fn once(r: Result<usize, CmdError>) -> Result<Progress, PagingError> {
    match r {
        Ok(_) => Ok(Progress::Done),
        Err(e) if full(e) => Ok(Progress::Full { next: 0 }),
        Err(e) => Err(PagingError::Command(e)),
    }
}

/// The source entries of slots `first..first + n` of an update (just the one with Repeat).
fn sources(
    entries: &[DXGK_PTE],
    repeat: bool,
    first: usize,
    n: usize,
) -> Result<&[DXGK_PTE], PagingError> {
    let range = if repeat { 0..1 } else { first..first + n };
    entries
        .get(range)
        .ok_or(PagingError::Entries { first, count: n })
}

impl PagingContext<'_> {
    /// CPU_VIRTUAL update (paging-process initialization): every entry is checked before the
    /// first is written, so a refused update leaves the table as it was.
    pub(super) fn update_page_table_cpu(
        &self,
        upt: UpdatePageTable<'_>,
    ) -> Result<(), PagingError> {
        let UpdateMode::CpuVirtual(mut table) = upt.mode else {
            return Err(PagingError::NoDmaBuffer(Operation::UpdatePageTable));
        };
        let kind = TableKind::of(upt.level, upt.use_64k, upt.start_index, upt.count)?;
        let entry = |i: usize| {
            let src = sources(upt.entries, upt.repeat, i, 1)?
                .first()
                .ok_or(PagingError::Entries { first: i, count: 1 })?;
            translate_pte(src, kind, self.aperture)
                .map_err(|error| PagingError::Pte { index: i, error })
        };
        for i in 0..upt.count as usize {
            entry(i)?;
        }
        for (i, index) in (0..upt.count as usize).zip(upt.start_index..) {
            table
                .write(index, entry(i)?)
                .map_err(PagingError::CpuTable)?;
        }
        Ok(())
    }

    /// GPU_VIRTUAL update: WRITE_PTES into the table at `table_va` in the paging process.
    #[inline(always)]
    pub(super) fn update_page_table_gpu(
        &self,
        upt: &UpdatePageTable<'_>,
        table_va: u64,
        start: u32,
        enc: &mut Encoder<'_>,
    ) -> Result<Progress, PagingError> {
        let kind = TableKind::of(upt.level, upt.use_64k, upt.start_index, upt.count)?;
        let total = upt.count;
        // A DMA buffer larger than the cache is streamed to memory (see `simd::Stores`).
        let stores = Stores::for_dma_buffer(enc.remaining());
        let mut done = start;
        while done < total {
            // `ptes_fitting` is at most MAX_PTES_PER_CMD.
            let fitting =
                |room: usize| ((total - done) as usize).min(rgpu_hw::cmd::ptes_fitting(room));
            let mut n = fitting(enc.remaining());
            if n == 0 {
                return Ok(Progress::Full { next: done });
            }
            // Streaming stores move 16 aligned bytes, and the entries are 8: a payload at 4
            // mod 8 (after the 12-byte header) would have to be shifted into every store. A
            // one-dword NOP in front puts it at 0 or 8 mod 16 instead (only when the command
            // still fits after it; multipass units are unaffected).
            let payload_at = || enc.written().as_ptr() as usize + enc.position() + 12;
            if stores == Stores::Streaming
                && payload_at() % 8 == 4
                && fitting(enc.remaining() - 4) > 0
            {
                enc.nop(1).map_err(PagingError::Command)?;
                n = fitting(enc.remaining());
            }
            let first = done as usize;
            // A table VA at the top of the address space would wrap (found by fuzzing).
            // StartIndex + done < StartIndex + NumPageTableEntries, which TableKind::of bounds.
            let dst = table_va
                .checked_add(u64::from(upt.start_index + done) * 8)
                .ok_or(PagingError::AddressOverflow(
                    "UpdatePageTable: table VA + entry",
                ))?;
            let (src, repeated) = match upt.repeat {
                false => (sources(upt.entries, false, first, n)?, None),
                true => (&[][..], sources(upt.entries, true, first, n)?.first()),
            };
            let mut bad = None;
            let aperture = self.aperture;
            enc.write_ptes_into(Target::Virtual(dst), n, |payload| {
                let all_fast = match repeated {
                    Some(p) => convert_repeat(p, payload, kind),
                    None => convert(src, payload, kind, stores),
                };
                if all_fast {
                    return;
                }
                // Some entries are aperture (or unknown) pages: redo those the slow way.
                for (i, out) in payload.chunks_exact_mut(8).enumerate() {
                    let Some(p) = repeated.or_else(|| src.get(i)) else {
                        break;
                    };
                    let e = translate_pte(p, kind, aperture).unwrap_or_else(|e| {
                        bad.get_or_insert((first + i, e));
                        Pte::INVALID.raw()
                    });
                    out.copy_from_slice(&e.to_le_bytes());
                }
            })
            .map_err(PagingError::Command)?;
            if let Some((index, error)) = bad {
                return Err(PagingError::Pte { index, error });
            }
            done += n as u32;
        }
        Ok(Progress::Done)
    }

    /// Logical address of byte `offset` of the aperture segment.
    fn aperture_address(&self, offset: u64) -> Result<u64, PagingError> {
        let page = self
            .aperture
            .and_then(|a| a.lookup(offset / PAGE))
            .ok_or(PagingError::ApertureAddress(offset))?;
        Ok((page << 12) | (offset % PAGE))
    }

    /// TRANSFER between MDL pages and aperture locations, one 4 KiB page per unit.
    pub(super) fn transfer(
        &self,
        t: &Transfer<'_>,
        start: u32,
        enc: &mut Encoder<'_>,
    ) -> Result<Progress, PagingError> {
        let size = t.size as u64;
        let pages = size.div_ceil(PAGE);
        let mut unit = u64::from(start);
        while unit < pages {
            let off = unit * PAGE;
            let len = (size - off).min(PAGE);
            let src = self.location(&t.source, t, off)?;
            let dst = self.location(&t.destination, t, off)?;
            match enc.copy(Target::Logical(dst), Target::Logical(src), len) {
                Ok(_) => unit += 1,
                Err(e) if full(e) => return Ok(Progress::Full { next: unit as u32 }),
                Err(e) => return Err(PagingError::Command(e)),
            }
        }
        Ok(Progress::Done)
    }

    /// Logical address of byte `off` of a transfer side.
    fn location(
        &self,
        side: &TransferSide<'_>,
        t: &Transfer<'_>,
        off: u64,
    ) -> Result<u64, PagingError> {
        match *side {
            TransferSide::Mdl { mdl } => {
                let page = u64::from(t.mdl_offset) + off / PAGE;
                let pfn = usize::try_from(page).ok().and_then(|p| mdl.pfn(p)).ok_or(
                    PagingError::MdlPage {
                        page,
                        pages: mdl.page_count(),
                    },
                )?;
                Ok((pfn << 12) | (off % PAGE))
            }
            TransferSide::Segment { id, address } if id == APERTURE_SEGMENT_ID => {
                let base =
                    u64::try_from(address).map_err(|_| PagingError::SegmentAddress(address))?;
                let start = base + u64::from(t.transfer_offset);
                // A unit is one page on both sides: from inside an aperture page, its COPY would
                // run into the next aperture page, whose logical page need not be adjacent
                // (found by fuzzing; tests/fuzz_regressions.rs).
                if start % PAGE != 0 {
                    return Err(PagingError::UnalignedAperture(start));
                }
                let at = start
                    .checked_add(off)
                    .ok_or(PagingError::AddressOverflow("Transfer: aperture address"))?;
                self.aperture_address(at)
            }
            TransferSide::Segment { id, .. } => Err(PagingError::Segment {
                op: Operation::Transfer,
                id,
            }),
        }
    }

    /// FILL of an aperture location, one page per unit.
    pub(super) fn fill(
        &self,
        f: &Fill,
        start: u32,
        enc: &mut Encoder<'_>,
    ) -> Result<Progress, PagingError> {
        if f.segment_id != APERTURE_SEGMENT_ID {
            return Err(PagingError::Segment {
                op: Operation::Fill,
                id: f.segment_id,
            });
        }
        if !f.size.is_multiple_of(4) {
            return Err(PagingError::Unaligned {
                what: "FillSize",
                value: f.size as u64,
            });
        }
        let base = u64::try_from(f.segment_address)
            .map_err(|_| PagingError::SegmentAddress(f.segment_address))?;
        let size = f.size as u64;
        let mut unit = u64::from(start);
        loop {
            // Unit k is the part of the fill inside the k-th aperture page it touches (the
            // first one may start inside its page). Found by fuzzing: units used to start every
            // 4 KiB from `base`, skipping the tail of each page after an unaligned start.
            let off = (unit * PAGE).saturating_sub(base % PAGE);
            if off >= size {
                break;
            }
            let at = base
                .checked_add(off)
                .ok_or(PagingError::AddressOverflow("Fill: aperture address"))?;
            let len = (size - off).min(PAGE - at % PAGE);
            let dst = self.aperture_address(at)?;
            match enc.fill(Target::Logical(dst), len, f.pattern) {
                Ok(_) => unit += 1,
                Err(e) if full(e) => return Ok(Progress::Full { next: unit as u32 }),
                Err(e) => return Err(PagingError::Command(e)),
            }
        }
        Ok(Progress::Done)
    }

    /// VIRTUAL_FILL: one FILL command.
    pub(super) fn virtual_fill(
        &self,
        f: &VirtualFill,
        enc: &mut Encoder<'_>,
    ) -> Result<Progress, PagingError> {
        for (what, value) in [
            ("FillSizeInBytes", f.size),
            ("DestinationVirtualAddress", f.destination_va),
        ] {
            if value % 4 != 0 {
                return Err(PagingError::Unaligned { what, value });
            }
        }
        once(enc.fill(Target::Virtual(f.destination_va), f.size, f.pattern))
    }

    /// MAP_APERTURE_SEGMENT: point aperture pages at the MDL's pages.
    pub(super) fn map_aperture(&self, m: &MapApertureSegment<'_>) -> Result<(), PagingError> {
        let aperture = self.aperture_segment(Operation::MapApertureSegment, m.segment_id)?;
        let pfns = m.mdl_pages().ok_or(PagingError::MdlPage {
            page: u64::from(m.mdl_offset) + m.pages as u64,
            pages: m.mdl.page_count(),
        })?;
        if let Some(views) = self.views {
            // Soft rgpu: the engine reaches these pages through the MDL's system VA.
            match views.map_mdl(m.retained, m.mdl_offset as usize, pfns.clone()) {
                Ok(()) => {}
                // Out of system VA or registry room: VidMm cannot take a failed MAP, so the
                // pages stay without a CPU view and the engine faults on them (DMA_PAGE_FAULTED,
                // then TDR), as a GPU would on a page its GART could not map.
                Err(e @ (ViewError::Map(_) | ViewError::Full | ViewError::TooManyMdls)) => {
                    rgpu_log!(
                        error,
                        "BuildPagingBuffer: soft rgpu: aperture pages {}+{} get no CPU view ({:?}); the engine will fault on them",
                        m.offset_in_pages,
                        m.pages,
                        e
                    );
                }
                Err(e) => return Err(PagingError::Views(e)),
            }
        }
        aperture
            .map(m.offset_in_pages, m.pages, pfns.clone())
            .map_err(PagingError::Aperture)
            .inspect_err(|_| {
                if let Some(views) = self.views {
                    views.unmap(pfns);
                }
            })
    }

    /// MAP_APERTURE_SEGMENT2 (DMA remapping): point aperture pages at the ADL's device pages
    /// from `AdlOffset` — contiguous or a page list, the decode checked that they are there.
    /// The GART is CPU memory (no DMA, nothing to resume), the CPU-visible address needs no
    /// mapping of rgpu's own, and CacheCoherent changes nothing: the device snoops.
    pub(super) fn map_aperture2(&self, m: &MapApertureSegment2<'_>) -> Result<(), PagingError> {
        let aperture = self.aperture_segment(Operation::MapApertureSegment2, m.segment_id)?;
        if let Some(views) = self.views {
            // Soft rgpu: the engine reaches these pages through CpuVisibleAddress (page
            // AdlOffset + i of the allocation for ADL page AdlOffset + i).
            let cpu = m.cpu_view.ok_or(PagingError::NoCpuView)?;
            let first = m.adl_offset as usize;
            // The decode checked that ADL pages first..first + pages exist.
            let pages = (first..first + m.pages).map(move |i| m.adl.page(i).unwrap_or(u64::MAX));
            views
                .map_cpu(cpu, first, pages)
                .map_err(PagingError::Views)?;
        }
        aperture
            .map(m.offset_in_pages, m.pages, m.adl_pages())
            .map_err(PagingError::Aperture)
            .inspect_err(|_| {
                if let Some(views) = self.views {
                    views.unmap(m.adl_pages());
                }
            })
    }

    /// The GART, if `segment_id` is the aperture segment `op` must address.
    fn aperture_segment(
        &self,
        op: Operation,
        segment_id: u32,
    ) -> Result<&super::Aperture, PagingError> {
        let aperture = self.aperture.ok_or(PagingError::NoAperture)?;
        if segment_id != APERTURE_SEGMENT_ID {
            return Err(PagingError::Segment { op, id: segment_id });
        }
        Ok(aperture)
    }

    /// UNMAP_APERTURE_SEGMENT: point the pages at VidMm's dummy page (they must stay
    /// accessible).
    pub(super) fn unmap_aperture(&self, u: &UnmapApertureSegment) -> Result<(), PagingError> {
        let aperture = self.aperture_segment(Operation::UnmapApertureSegment, u.segment_id)?;
        let dummy = u.dummy_page as u64 >> 12;
        if let Some(views) = self.views {
            // The logical pages these aperture pages stood for leave the soft engine's reach.
            let first = u.offset_in_pages as u64;
            views.unmap(
                (first..first.saturating_add(u.pages as u64)).filter_map(|p| aperture.lookup(p)),
            );
        }
        aperture
            .map(u.offset_in_pages, u.pages, core::iter::repeat(dummy))
            .map_err(PagingError::Aperture)
    }
}

/// COPY_PAGE_TABLE_ENTRIES: one COPY per range.
pub(super) fn copy_page_table_entries(
    c: &CopyPageTableEntries<'_>,
    start: u32,
    enc: &mut Encoder<'_>,
) -> Result<Progress, PagingError> {
    let mut unit = start;
    while let Some(r) = c.ranges.get(unit as usize) {
        let n = u64::from(r.NumPageTableEntries);
        if u64::from(r.SrcStartPteIndex) + n > 512
            || u64::from(r.DstStartPteIndex) + n > 512
            || n == 0
        {
            return Err(PagingError::CopyRange { index: unit });
        }
        // Table VAs at the top of the address space would wrap (found by fuzzing).
        let (Some(src), Some(dst)) = (
            r.SrcPageTableAddress
                .checked_add(u64::from(r.SrcStartPteIndex) * 8),
            r.DstPageTableAddress
                .checked_add(u64::from(r.DstStartPteIndex) * 8),
        ) else {
            return Err(PagingError::AddressOverflow(
                "CopyPageTableEntries: table VA + entry",
            ));
        };
        match enc.copy(Target::Virtual(dst), Target::Virtual(src), n * 8) {
            Ok(_) => unit += 1,
            Err(e) if full(e) => return Ok(Progress::Full { next: unit }),
            Err(e) => return Err(PagingError::Command(e)),
        }
    }
    Ok(Progress::Done)
}
