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
//! MAP/UNMAP_APERTURE_SEGMENT fill from VidMm's MDLs — so the driver never computes a device
//! address itself.
//!
//! Operations that cannot occur with rgpu's caps (READ/WRITE_PHYSICAL: no memory segments;
//! SPECIAL_LOCK_TRANSFER: no swizzling; MAP_APERTURE_SEGMENT2: MapAperture2Supported is not
//! declared) return STATUS_NOT_SUPPORTED and log — VidMm treats that as fatal, which is right
//! for an operation the caps exclude.
//!
//! Page sizes: leaf entries are 4 KiB (the device's PAGE_64K entries are never emitted: rgpu
//! declares neither SysMem64KBPageSupported nor memory segments, so VidMm never asks for 64 KiB
//! pages). 64 KiB-page tables (`Use64KBPages`, a PageTablePageSize other than 4 KiB) are refused
//! with STATUS_INVALID_PARAMETER and a log line for the same reason.

use core::mem::size_of;

use dxgk::memory::MdlPages;
use dxgk::sync::SpinLock;
use dxgk::{NtResult, NtStatus};
use dxgk_sys as sys;
use dxgk_sys::{DXGKARG_BUILDPAGINGBUFFER, DXGK_PTE, MDL};
use rgpu_hw::cmd::{CmdError, Encoder, FlushScope, Target};
use rgpu_hw::pte::{self, Pte};

use crate::caps::{APERTURE_SEGMENT_ID, APERTURE_SEGMENT_SIZE, SYSTEM_MEMORY_SEGMENT_ID};

/// The device ASID the system paging process runs in.
pub const PAGING_ASID: u8 = 0;

const PAGE: u64 = 4096;

/// The aperture segment's translation table (a GART kept by the driver): aperture page →
/// logical page + 1 (0 = unmapped). CPU-only memory; the device never reads it.
pub struct Aperture {
    table: SpinLock<MdlPages>,
}

/// Number of pages in the aperture segment.
pub const APERTURE_PAGES: usize = APERTURE_SEGMENT_SIZE / PAGE as usize;

impl Aperture {
    /// Wraps a table of at least `APERTURE_PAGES * 8` zeroed bytes.
    pub fn new(table: MdlPages) -> NtResult<Self> {
        if table.len() < APERTURE_PAGES * 8 {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        Ok(Self {
            table: SpinLock::new(table),
        })
    }

    /// Logical page of aperture page `page`, if mapped.
    pub fn lookup(&self, page: u64) -> Option<u64> {
        let index = usize::try_from(page).ok().filter(|&p| p < APERTURE_PAGES)?;
        let mut raw = [0u8; 8];
        self.table.lock().read(index * 8, &mut raw).ok()?;
        u64::from_le_bytes(raw).checked_sub(1)
    }

    fn set(&self, page: usize, logical_page: Option<u64>) -> NtResult<()> {
        let value = logical_page.map_or(0, |p| p + 1);
        self.table.lock().write(page * 8, &value.to_le_bytes())
    }
}

/// Why a DXGK_PTE could not be translated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PteError {
    /// A segment rgpu does not have.
    UnknownSegment(u64),
    /// An aperture page that is not mapped.
    UnmappedAperture(u64),
    /// An entry pointing at a 64 KiB-page table (PageTablePageSize), which rgpu's caps exclude
    /// (no SysMem64KBPageSupported, no memory segments): the device's leaf tables hold 4 KiB
    /// entries only.
    PageTablePageSize(u64),
}

/// The hot path of [`translate_pte`]: entries of system memory (segment 0 or the implicit
/// system-memory segment), which is every entry rgpu's page tables hold outside the aperture.
/// Shifts and masks only (no table, no multiply), so a batch of entries vectorizes with the
/// SSE2 baseline. Returns the entry and a "slow" word that is non-zero when the entry needs the
/// general path (a segment other than 0 or the system-memory segment).
#[inline(always)]
fn translate_fast(flags: u64, page: u64, leaf: bool) -> (u64, u64) {
    // DXGK_PTE bits: 0 Valid, 1 Zero, 2 CacheCoherent, 3 ReadOnly, 4 NoExecute, 5-9 Segment.
    // rgpu bits:     0 VALID, 1 READ_ONLY, 2 NO_EXECUTE, 3 CACHE_COHERENT, 5 ZERO.
    let valid = flags & 1;
    let leaf_flags =
        valid | ((flags >> 2) & 0b110) | ((flags << 1) & 0b1000) | ((flags << 4) & 0b10_0000);
    let mask = 0u64.wrapping_sub(valid);
    let addr = (page << 12) & pte::ADDR_MASK;
    let bits = if leaf { leaf_flags } else { valid };
    // Segment 0 and segment 2 (SYSTEM_MEMORY_SEGMENT_ID) differ only in bit 1 of the segment.
    // A PageTablePageSize other than 4 KiB (bits 17-18) also takes the general path, which
    // refuses it: rgpu declares no 64 KiB page tables.
    let slow = ((flags >> 5) & 0x1F & !(SYSTEM_MEMORY_SEGMENT_ID as u64)) | ((flags >> 17) & 0b11);
    ((addr | bits) & mask, slow)
}

const _: () = assert!(
    pte::VALID == 1
        && pte::READ_ONLY == 1 << 1
        && pte::NO_EXECUTE == 1 << 2
        && pte::CACHE_COHERENT == 1 << 3
        && pte::ZERO == 1 << 5
        && SYSTEM_MEMORY_SEGMENT_ID == 2,
    "translate_fast's shifts assume these bit positions"
);

/// Converts `src` into rgpu entries in `out` (8 bytes each, little-endian) with the fast path;
/// returns false if some entry needs the general path. Kept free of early exits so the loop
/// vectorizes.
#[inline(never)]
fn convert_batch(src: &[DXGK_PTE], out: &mut [u8], leaf: bool) -> bool {
    let mut slow = 0;
    for (p, o) in src.iter().zip(out.chunks_exact_mut(8)) {
        // SAFETY: both union members are the same u64.
        let page = unsafe { p.u.PageAddress };
        let (e, s) = translate_fast(p.Flags, page, leaf);
        slow |= s;
        o.copy_from_slice(&e.to_le_bytes());
    }
    slow == 0
}

/// [`convert_batch`] for the Repeat flag: one source entry for every slot.
fn convert_repeat(p: &DXGK_PTE, out: &mut [u8], leaf: bool) -> bool {
    // SAFETY: both union members are the same u64.
    let page = unsafe { p.u.PageAddress };
    let (e, slow) = translate_fast(p.Flags, page, leaf);
    for o in out.chunks_exact_mut(8) {
        o.copy_from_slice(&e.to_le_bytes());
    }
    slow == 0
}

/// Translates one DXGK_PTE into rgpu's format. `leaf` is level 0.
#[inline]
pub fn translate_pte(
    p: &DXGK_PTE,
    leaf: bool,
    aperture: Option<&Aperture>,
) -> Result<u64, PteError> {
    // SAFETY: both union members are the same u64 (page number of a page or a table).
    let page = unsafe { p.u.PageAddress };
    let (e, slow) = translate_fast(p.Flags, page, leaf);
    if slow == 0 {
        return Ok(e);
    }
    if p.Valid() != 0 && p.PageTablePageSize() != 0 {
        return Err(PteError::PageTablePageSize(p.PageTablePageSize()));
    }
    if p.Valid() == 0 {
        return Ok(Pte::INVALID.raw());
    }
    let segment = p.Segment();
    let logical_page = match segment {
        0 => page,
        s if s == u64::from(SYSTEM_MEMORY_SEGMENT_ID) => page,
        s if s == u64::from(APERTURE_SEGMENT_ID) => aperture
            .and_then(|a| a.lookup(page))
            .ok_or(PteError::UnmappedAperture(page))?,
        s => return Err(PteError::UnknownSegment(s)),
    };
    let addr = logical_page << 12;
    if !leaf {
        return Ok(Pte::table(addr).raw());
    }
    let mut flags = 0;
    if p.ReadOnly() != 0 {
        flags |= pte::READ_ONLY;
    }
    if p.NoExecute() != 0 {
        flags |= pte::NO_EXECUTE;
    }
    if p.CacheCoherent() != 0 {
        flags |= pte::CACHE_COHERENT;
    }
    if p.Zero() != 0 {
        flags |= pte::ZERO;
    }
    Ok(Pte::leaf(addr, flags).raw())
}

/// What the DMA buffer looks like to an operation encoder.
struct Out<'a> {
    enc: Encoder<'a>,
}

/// Result of encoding an operation from a given unit.
enum Progress {
    Done,
    /// Stopped before unit `next`: the buffer is full.
    Full {
        next: u32,
    },
}

fn full(e: CmdError) -> bool {
    matches!(e, CmdError::BufferTooSmall { .. })
}

/// What BuildPagingBuffer needs from the adapter.
pub struct PagingContext<'a> {
    /// The adapter's GART (None before start).
    pub aperture: Option<&'a Aperture>,
    /// Maps a KMD process handle (`hProcess`) to the device ASID it runs in, so that TLB
    /// flushes hit one address space; None (or a handle it does not know) flushes every ASID.
    pub asid_of: Option<&'a dyn Fn(sys::HANDLE) -> Option<u8>>,
}

impl PagingContext<'_> {
    /// Runs DxgkDdiBuildPagingBuffer on `args`. Returns SUCCESS, INSUFFICIENT_DMA_BUFFER (with
    /// `MultipassOffset` and `pDmaBuffer` updated), or a failure for malformed input and
    /// operations rgpu's caps exclude.
    ///
    /// # Safety
    /// `args` must be Dxgkrnl's argument block: `pDmaBuffer` valid for `DmaSize` bytes (or NULL),
    /// and the pointers inside the operation's arguments valid as documented.
    pub unsafe fn build(&self, args: &mut DXGKARG_BUILDPAGINGBUFFER) -> NtResult<()> {
        let op = args.Operation;
        let start = args.MultipassOffset;
        // CPU-virtual page-table initialization has no DMA buffer at all.
        if op == sys::DXGK_OPERATION_UPDATE_PAGE_TABLE {
            // SAFETY: the operation says UpdatePageTable is the valid union member.
            let upt = unsafe { args.u.UpdatePageTable };
            if upt.UpdateMode == sys::DXGK_PAGETABLEUPDATE_CPU_VIRTUAL {
                // SAFETY: per the caller, the entries and the CPU address are valid.
                return unsafe { self.update_page_table_cpu(&upt) };
            }
        }
        if args.pDmaBuffer.is_null() {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        // SAFETY: per the caller, pDmaBuffer is valid for DmaSize bytes and exclusively ours
        // for this call.
        let buf = unsafe {
            core::slice::from_raw_parts_mut(args.pDmaBuffer.cast::<u8>(), args.DmaSize as usize)
        };
        let mut out = Out {
            enc: Encoder::new(buf),
        };
        // SAFETY: each arm reads the union member its operation code names; pointer arguments
        // are valid per the caller.
        let progress = unsafe { self.encode(op, args, start, &mut out) }?;
        let written = out.enc.written().len();
        // SAFETY: `written <= DmaSize`: still inside the DMA buffer.
        args.pDmaBuffer = unsafe { args.pDmaBuffer.cast::<u8>().add(written) }.cast();
        args.DmaSize -= written as u32;
        match progress {
            Progress::Done => {
                args.MultipassOffset = 0;
                Ok(())
            }
            Progress::Full { next } => {
                args.MultipassOffset = next;
                Err(NtStatus::GRAPHICS_INSUFFICIENT_DMA_BUFFER)
            }
        }
    }

    /// # Safety
    /// As [`PagingContext::build`]; `op` selects the valid union member.
    unsafe fn encode(
        &self,
        op: sys::DXGK_BUILDPAGINGBUFFER_OPERATION,
        args: &DXGKARG_BUILDPAGINGBUFFER,
        start: u32,
        out: &mut Out<'_>,
    ) -> NtResult<Progress> {
        use sys::*;
        if op == DXGK_OPERATION_UPDATE_PAGE_TABLE {
            // SAFETY: union member named by the operation.
            let upt = unsafe { args.u.UpdatePageTable };
            // SAFETY: per the caller, pPageTableEntries holds the documented entries.
            unsafe { self.update_page_table_gpu(&upt, start, out) }
        } else if op == DXGK_OPERATION_FLUSH_TLB {
            // SAFETY: union member named by the operation.
            let f = unsafe { args.u.FlushTlb };
            let (start, end) = (f.StartVirtualAddress, f.EndVirtualAddress);
            if end < start {
                return Err(NtStatus::INVALID_PARAMETER);
            }
            // The process's own address space when the driver knows it (hProcess is the
            // process object rgpu created), else every ASID. Both 0 = the whole VA space; a range
            // is flushed inclusive of its end address (flushing one extra page is harmless).
            let scope = match self.asid_of.and_then(|asid_of| asid_of(f.hProcess)) {
                None => FlushScope::All,
                Some(asid) if start == 0 && end == 0 => FlushScope::Asid(asid),
                Some(asid) => FlushScope::Range {
                    asid,
                    va: start,
                    size: (end - start).saturating_add(1),
                },
            };
            once(out.enc.flush_tlb(scope))
        } else if op == DXGK_OPERATION_VIRTUAL_FILL {
            // SAFETY: union member named by the operation.
            let f = unsafe { args.u.FillVirtual };
            if f.FillSizeInBytes % 4 != 0 || f.DestinationVirtualAddress % 4 != 0 {
                return Err(NtStatus::INVALID_PARAMETER);
            }
            once(out.enc.fill(
                Target::Virtual(f.DestinationVirtualAddress),
                f.FillSizeInBytes,
                f.FillPattern,
            ))
        } else if op == DXGK_OPERATION_VIRTUAL_TRANSFER {
            // SAFETY: union member named by the operation.
            let t = unsafe { args.u.TransferVirtual };
            once(out.enc.copy(
                Target::Virtual(t.DestinationVirtualAddress),
                Target::Virtual(t.SourceVirtualAddress),
                t.TransferSizeInBytes,
            ))
        } else if op == DXGK_OPERATION_TRANSFER {
            // SAFETY: union member named by the operation.
            let t = unsafe { args.u.Transfer };
            // SAFETY: MDL pointers valid per the caller.
            unsafe { self.transfer(&t, start, out) }
        } else if op == DXGK_OPERATION_FILL {
            // SAFETY: union member named by the operation.
            let f = unsafe { args.u.Fill };
            self.fill(&f, start, out)
        } else if op == DXGK_OPERATION_SIGNAL_MONITORED_FENCE {
            // SAFETY: union member named by the operation.
            let s = unsafe { args.u.SignalMonitoredFence };
            let v = s.MonitoredFenceValue;
            once(out.enc.write_data(
                Target::Virtual(s.MonitoredFenceGpuVa),
                &[v as u32, (v >> 32) as u32],
            ))
        } else if op == DXGK_OPERATION_COPY_PAGE_TABLE_ENTRIES {
            // SAFETY: union member named by the operation.
            let c = unsafe { args.u.CopyPageTableEntries };
            // SAFETY: pRanges holds NumRanges ranges per the caller.
            unsafe { copy_page_table_entries(&c, start, out) }
        } else if op == DXGK_OPERATION_MAP_APERTURE_SEGMENT {
            // SAFETY: union member named by the operation.
            let m = unsafe { args.u.MapApertureSegment };
            // SAFETY: pMdl valid per the caller.
            unsafe { self.map_aperture(&m) }.map(|()| Progress::Done)
        } else if op == DXGK_OPERATION_UNMAP_APERTURE_SEGMENT {
            // SAFETY: union member named by the operation.
            let u = unsafe { args.u.UnmapApertureSegment };
            self.unmap_aperture(&u).map(|()| Progress::Done)
        } else if op == DXGK_OPERATION_DISCARD_CONTENT
            || op == DXGK_OPERATION_NOTIFY_RESIDENCY
            || op == DXGK_OPERATION_UPDATE_CONTEXT_ALLOCATION
            || op == DXGK_OPERATION_INIT_CONTEXT_RESOURCE
        {
            // Nothing for the device to do: no content to discard in system memory, no
            // residency bookkeeping (no AccessedPhysically allocations), no context
            // allocations or resources.
            Ok(Progress::Done)
        } else {
            rgpu_log!(
                error,
                "BuildPagingBuffer: operation {} cannot occur with rgpu's caps (no memory segments, no swizzling, no MapAperture2)",
                op.0
            );
            Err(NtStatus::NOT_SUPPORTED)
        }
    }

    /// CPU_VIRTUAL update (paging-process initialization): entries written at once.
    ///
    /// # Safety
    /// `upt.pPageTableEntries` holds the entries and `CpuVirtual` maps the table.
    unsafe fn update_page_table_cpu(
        &self,
        upt: &sys::DXGK_BUILDPAGINGBUFFER_UPDATEPAGETABLE,
    ) -> NtResult<()> {
        // SAFETY: CPU_VIRTUAL mode: CpuVirtual is the valid member.
        let table = unsafe { upt.PageTableAddress.u.CpuVirtual }.cast::<u64>();
        check_range(upt)?;
        if table.is_null() || upt.pPageTableEntries.is_null() {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        let leaf = upt.PageTableLevel == 0;
        for i in 0..upt.NumPageTableEntries as usize {
            let src_index = if upt.Flags.Repeat() != 0 { 0 } else { i };
            // SAFETY: `src_index < NumPageTableEntries` entries provided by VidMm.
            let src = unsafe { elem(upt.pPageTableEntries, src_index) };
            let entry = translate_pte(src, leaf, self.aperture).map_err(|e| {
                rgpu_log!(error, "UpdatePageTable: entry {}: {:?}", i, e);
                NtStatus::INVALID_PARAMETER
            })?;
            // SAFETY: StartIndex + i < 512 (check_range): inside the 4 KiB table.
            let dst = unsafe { table.add(upt.StartIndex as usize + i) };
            // SAFETY: `dst` is an aligned entry of the CPU-mapped table.
            unsafe { dst.write_volatile(entry) };
        }
        Ok(())
    }

    /// GPU_VIRTUAL update: WRITE_PTES into the table at its paging-process VA.
    ///
    /// # Safety
    /// `upt.pPageTableEntries` holds `NumPageTableEntries` entries (1 with Repeat).
    unsafe fn update_page_table_gpu(
        &self,
        upt: &sys::DXGK_BUILDPAGINGBUFFER_UPDATEPAGETABLE,
        start: u32,
        out: &mut Out<'_>,
    ) -> NtResult<Progress> {
        check_range(upt)?;
        if upt.pPageTableEntries.is_null() {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        // SAFETY: GPU_VIRTUAL mode: GpuVirtual is the valid member.
        let table_va = unsafe { upt.PageTableAddress.u.GpuVirtual };
        let leaf = upt.PageTableLevel == 0;
        let total = upt.NumPageTableEntries;
        let repeat = upt.Flags.Repeat() != 0;
        let mut done = start;
        while done < total {
            let n = ((total - done) as usize)
                .min(rgpu_hw::cmd::MAX_PTES_PER_CMD)
                .min(rgpu_hw::cmd::ptes_fitting(out.enc.remaining()));
            if n == 0 {
                return Ok(Progress::Full { next: done });
            }
            let first = done as usize;
            // A table VA at the top of the address space would wrap (found by fuzzing).
            let dst = table_va
                .checked_add(u64::from(upt.StartIndex + done) * 8)
                .ok_or(NtStatus::INVALID_PARAMETER)?;
            let mut bad = None;
            let aperture = self.aperture;
            out.enc
                .write_ptes_into(Target::Virtual(dst), n, |payload| {
                    let (offset, len) = if repeat { (0, 1) } else { (first, n) };
                    // SAFETY: VidMm provides `NumPageTableEntries` entries (1 with Repeat), and
                    // `first + n <= NumPageTableEntries`.
                    let base = unsafe { upt.pPageTableEntries.add(offset) };
                    // SAFETY: `len` initialized entries start at `base` (see above).
                    let src = unsafe { core::slice::from_raw_parts(base, len) };
                    let all_fast = if repeat {
                        convert_repeat(&src[0], payload, leaf)
                    } else {
                        convert_batch(src, payload, leaf)
                    };
                    if all_fast {
                        return;
                    }
                    // Some entries are aperture (or unknown) pages: redo those the slow way.
                    for (i, out) in payload.chunks_exact_mut(8).enumerate() {
                        let p = &src[if repeat { 0 } else { i }];
                        let e = translate_pte(p, leaf, aperture).unwrap_or_else(|e| {
                            bad.get_or_insert((first + i, e));
                            Pte::INVALID.raw()
                        });
                        out.copy_from_slice(&e.to_le_bytes());
                    }
                })
                .map_err(|e| {
                    rgpu_log!(error, "UpdatePageTable: {:?}", e);
                    NtStatus::INVALID_PARAMETER
                })?;
            if let Some((i, e)) = bad {
                rgpu_log!(error, "UpdatePageTable: entry {}: {:?}", i, e);
                return Err(NtStatus::INVALID_PARAMETER);
            }
            done += n as u32;
        }
        Ok(Progress::Done)
    }

    /// Logical address of byte `offset` of an aperture-segment location.
    fn aperture_address(&self, offset: u64) -> NtResult<u64> {
        let page = self
            .aperture
            .and_then(|a| a.lookup(offset / PAGE))
            .ok_or(NtStatus::INVALID_PARAMETER)?;
        Ok((page << 12) | (offset % PAGE))
    }

    /// TRANSFER between MDL pages and aperture locations, one 4 KiB page per unit.
    ///
    /// # Safety
    /// MDL pointers (SegmentId 0) must be valid MDLs covering the transfer.
    unsafe fn transfer(
        &self,
        t: &sys::DXGKARG_BUILDPAGINGBUFFER_Transfer,
        start: u32,
        out: &mut Out<'_>,
    ) -> NtResult<Progress> {
        let size = t.TransferSize as u64;
        let pages = size.div_ceil(PAGE);
        let mut unit = u64::from(start);
        while unit < pages {
            let off = unit * PAGE;
            let len = (size - off).min(PAGE);
            // SAFETY: plain data read of the union (which member counts is decided by SegmentId).
            let src_address = unsafe { t.Source.u.SegmentAddress };
            // SAFETY: LARGE_INTEGER is plain data.
            let src_address = unsafe { src_address.QuadPart };
            // SAFETY: as above.
            let src_mdl = unsafe { t.Source.u.pMdl };
            // SAFETY: as above.
            let dst_address = unsafe { t.Destination.u.SegmentAddress };
            // SAFETY: LARGE_INTEGER is plain data.
            let dst_address = unsafe { dst_address.QuadPart };
            // SAFETY: as above.
            let dst_mdl = unsafe { t.Destination.u.pMdl };
            // SAFETY: MDLs valid per the caller.
            let src = unsafe { self.location(t.Source.SegmentId, src_address, src_mdl, t, off) }?;
            // SAFETY: as above.
            let dst =
                unsafe { self.location(t.Destination.SegmentId, dst_address, dst_mdl, t, off) }?;
            match out
                .enc
                .copy(Target::Logical(dst), Target::Logical(src), len)
            {
                Ok(_) => unit += 1,
                Err(e) if full(e) => return Ok(Progress::Full { next: unit as u32 }),
                Err(_) => return Err(NtStatus::INVALID_PARAMETER),
            }
        }
        Ok(Progress::Done)
    }

    /// Logical address of byte `off` of a transfer side.
    ///
    /// # Safety
    /// For `segment == 0`, `mdl` must be a valid MDL with enough pages after `MdlOffset`.
    unsafe fn location(
        &self,
        segment: u32,
        segment_address: i64,
        mdl: *mut MDL,
        t: &sys::DXGKARG_BUILDPAGINGBUFFER_Transfer,
        off: u64,
    ) -> NtResult<u64> {
        if segment == 0 {
            if mdl.is_null() {
                return Err(NtStatus::INVALID_PARAMETER);
            }
            let page = u64::from(t.MdlOffset) + off / PAGE;
            // SAFETY: valid MDL per the caller.
            let count = unsafe { mdl_page_count(mdl) };
            if page >= count as u64 {
                return Err(NtStatus::INVALID_PARAMETER);
            }
            // SAFETY: valid MDL per the caller.
            let pfns = unsafe { sys::MmGetMdlPfnArray(mdl) };
            // SAFETY: `page < count`.
            let pfn = *unsafe { elem(pfns, page as usize) } as u64;
            Ok((pfn << 12) | (off % PAGE))
        } else if segment == APERTURE_SEGMENT_ID {
            let base = u64::try_from(segment_address).map_err(|_| NtStatus::INVALID_PARAMETER)?;
            let start = base + u64::from(t.TransferOffset);
            // A unit is one page on both sides: from inside an aperture page, its COPY would run
            // into the next aperture page, whose logical page need not be adjacent (found by
            // fuzzing; tests/fuzz_regressions.rs).
            if start % PAGE != 0 {
                rgpu_log!(
                    error,
                    "Transfer: aperture address {:#x} is not page aligned",
                    start
                );
                return Err(NtStatus::INVALID_PARAMETER);
            }
            self.aperture_address(start + off)
        } else {
            Err(NtStatus::INVALID_PARAMETER)
        }
    }

    /// FILL of an aperture location, one page per unit.
    fn fill(
        &self,
        f: &sys::DXGKARG_BUILDPAGINGBUFFER_Fill,
        start: u32,
        out: &mut Out<'_>,
    ) -> NtResult<Progress> {
        if f.Destination.SegmentId != APERTURE_SEGMENT_ID || !f.FillSize.is_multiple_of(4) {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        // SAFETY: LARGE_INTEGER is plain data.
        let base = u64::try_from(unsafe { f.Destination.SegmentAddress.QuadPart })
            .map_err(|_| NtStatus::INVALID_PARAMETER)?;
        let size = f.FillSize as u64;
        let mut unit = u64::from(start);
        loop {
            // Unit k is the part of the fill inside the k-th aperture page it touches (the
            // first one may start inside its page). Found by fuzzing: units used to start every
            // 4 KiB from `base`, skipping the tail of each page after an unaligned start.
            let off = (unit * PAGE).saturating_sub(base % PAGE);
            if off >= size {
                break;
            }
            let len = (size - off).min(PAGE - (base + off) % PAGE);
            let dst = self.aperture_address(base + off)?;
            match out.enc.fill(Target::Logical(dst), len, f.FillPattern) {
                Ok(_) => unit += 1,
                Err(e) if full(e) => return Ok(Progress::Full { next: unit as u32 }),
                Err(_) => return Err(NtStatus::INVALID_PARAMETER),
            }
        }
        Ok(Progress::Done)
    }

    /// MAP_APERTURE_SEGMENT: point aperture pages at the MDL's pages.
    ///
    /// # Safety
    /// `m.pMdl` must be a valid MDL with `MdlOffset + NumberOfPages` pages.
    unsafe fn map_aperture(
        &self,
        m: &sys::DXGKARG_BUILDPAGINGBUFFER_MapApertureSegment,
    ) -> NtResult<()> {
        let aperture = self.aperture.ok_or(NtStatus::INVALID_DEVICE_STATE)?;
        if m.SegmentId != APERTURE_SEGMENT_ID || m.pMdl.is_null() {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        let end = m
            .OffsetInPages
            .checked_add(m.NumberOfPages)
            .ok_or(NtStatus::INVALID_PARAMETER)?;
        if end > APERTURE_PAGES {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        // SAFETY: valid MDL per the caller.
        let count = unsafe { mdl_page_count(m.pMdl) };
        if (m.MdlOffset as usize).saturating_add(m.NumberOfPages) > count {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        // SAFETY: valid MDL per the caller.
        let pfns = unsafe { sys::MmGetMdlPfnArray(m.pMdl) };
        for i in 0..m.NumberOfPages {
            // SAFETY: MdlOffset + i < count (checked above).
            let pfn = *unsafe { elem(pfns, m.MdlOffset as usize + i) } as u64;
            aperture.set(m.OffsetInPages + i, Some(pfn))?;
        }
        Ok(())
    }

    /// UNMAP_APERTURE_SEGMENT: point the pages at VidMm's dummy page (they must stay accessible).
    fn unmap_aperture(
        &self,
        u: &sys::DXGKARG_BUILDPAGINGBUFFER_UnmapApertureSegment,
    ) -> NtResult<()> {
        let aperture = self.aperture.ok_or(NtStatus::INVALID_DEVICE_STATE)?;
        if u.SegmentId != APERTURE_SEGMENT_ID {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        let end = u
            .OffsetInPages
            .checked_add(u.NumberOfPages)
            .ok_or(NtStatus::INVALID_PARAMETER)?;
        if end > APERTURE_PAGES {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        // SAFETY: LARGE_INTEGER is plain data.
        let dummy = unsafe { u.DummyPage.QuadPart } as u64 >> 12;
        for i in 0..u.NumberOfPages {
            aperture.set(u.OffsetInPages + i, Some(dummy))?;
        }
        Ok(())
    }
}

/// COPY_PAGE_TABLE_ENTRIES: one COPY per range.
///
/// # Safety
/// `c.pRanges` holds `c.NumRanges` ranges.
unsafe fn copy_page_table_entries(
    c: &sys::DXGK_BUILDPAGINGBUFFER_COPYPAGETABLEENTRIES,
    start: u32,
    out: &mut Out<'_>,
) -> NtResult<Progress> {
    if c.NumRanges > 0 && c.pRanges.is_null() {
        return Err(NtStatus::INVALID_PARAMETER);
    }
    let mut unit = start;
    while unit < c.NumRanges {
        // SAFETY: `unit < NumRanges`.
        let r = unsafe { elem(c.pRanges, unit as usize) };
        let n = u64::from(r.NumPageTableEntries);
        if u64::from(r.SrcStartPteIndex) + n > 512
            || u64::from(r.DstStartPteIndex) + n > 512
            || n == 0
        {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        // Table VAs at the top of the address space would wrap (found by fuzzing).
        let (Some(src), Some(dst)) = (
            r.SrcPageTableAddress
                .checked_add(u64::from(r.SrcStartPteIndex) * 8),
            r.DstPageTableAddress
                .checked_add(u64::from(r.DstStartPteIndex) * 8),
        ) else {
            return Err(NtStatus::INVALID_PARAMETER);
        };
        match out
            .enc
            .copy(Target::Virtual(dst), Target::Virtual(src), n * 8)
        {
            Ok(_) => unit += 1,
            Err(e) if full(e) => return Ok(Progress::Full { next: unit }),
            Err(_) => return Err(NtStatus::INVALID_PARAMETER),
        }
    }
    Ok(Progress::Done)
}

fn once(r: Result<usize, CmdError>) -> NtResult<Progress> {
    match r {
        Ok(_) => Ok(Progress::Done),
        Err(e) if full(e) => Ok(Progress::Full { next: 0 }),
        Err(e) => {
            rgpu_log!(error, "BuildPagingBuffer: {:?}", e);
            Err(NtStatus::INVALID_PARAMETER)
        }
    }
}

fn check_range(upt: &sys::DXGK_BUILDPAGINGBUFFER_UPDATEPAGETABLE) -> NtResult<()> {
    if upt.Flags.Use64KBPages() != 0 {
        rgpu_log!(
            error,
            "UpdatePageTable: Use64KBPages cannot occur: rgpu declares no 64 KiB page tables"
        );
        return Err(NtStatus::INVALID_PARAMETER);
    }
    let end = upt.StartIndex.checked_add(upt.NumPageTableEntries);
    if upt.PageTableLevel as usize >= pte::LEVELS
        || !matches!(end, Some(e) if e as usize <= pte::ENTRIES_PER_TABLE)
    {
        rgpu_log!(
            error,
            "UpdatePageTable: level {} entries {}+{} outside a 512-entry table",
            upt.PageTableLevel,
            upt.StartIndex,
            upt.NumPageTableEntries
        );
        return Err(NtStatus::INVALID_PARAMETER);
    }
    Ok(())
}

/// Pages an MDL spans.
///
/// # Safety
/// `mdl` must be valid.
unsafe fn mdl_page_count(mdl: *mut MDL) -> usize {
    // SAFETY: valid MDL per the caller.
    let va = unsafe { sys::MmGetMdlVirtualAddress(mdl) } as usize;
    // SAFETY: as above.
    let bytes = unsafe { sys::MmGetMdlByteCount(mdl) } as usize;
    sys::ADDRESS_AND_SIZE_TO_SPAN_PAGES(va, bytes)
}

const _: () = assert!(size_of::<DXGK_PTE>() == 16);

/// Element `i` of a C array.
///
/// # Safety
/// `base` must point to an array of more than `i` initialized `T`s that outlives `'a`.
unsafe fn elem<'a, T>(base: *const T, i: usize) -> &'a T {
    // SAFETY: `i` is in bounds per the caller.
    let p = unsafe { base.add(i) };
    // SAFETY: `p` points to an initialized element per the caller.
    unsafe { &*p }
}
