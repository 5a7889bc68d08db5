//! A mini VidMm for the soft adapter: the system paging process, its page tables, a paging
//! buffer and one allocation, all in the aperture segment (id 1) as the soft-mode memory
//! contract says (docs/soft-rgpu.md), then one paging submission executed by rgpu's soft engine
//! thread and read back with the CPU. The order follows dxgk-sim's VidMm
//! (crates/dxgk-sim/src/vidmm/mod.rs), which follows Windows:
//!
//! 1. `DxgkDdiCreateProcess` (SystemProcess), `DxgkDdiCreateDevice`, `DxgkDdiCreateContext`
//!    (SystemContext).
//! 2. VidMm memory: nonpaged pool blocks described by MDLs the port builds itself
//!    (`MDL_SOURCE_IS_NONPAGED_POOL` + `MappedSystemVa`; page numbers are tags of the port's
//!    choosing, from [`PFN_BASE`], disjoint from the logical pages `DxgkCbAllocatePagesForMdl`
//!    hands out). One table per level (a single chain covering VA [0, 2 MiB)), the paging
//!    buffer, the allocation, and a dummy page for UNMAP.
//! 3. `MAP_APERTURE_SEGMENT` of every object into the aperture (hAllocation NULL: these are
//!    VidMm's own; the allocation is too — no `DxgkDdiCreateAllocation`, as dxgk-sim's
//!    `Vidmm::allocate` does not call it either).
//! 4. The paging process's tables written with `UPDATE_PAGE_TABLE` CPU_VIRTUAL and a NULL DMA
//!    buffer (what Windows forces for the system paging process), PTEs naming Segment 1 and
//!    aperture pages: root → … → leaf, the leaf mapping the paging buffer and the leaf table
//!    itself (its window, so the GPU can write it). Then `DxgkDdiSetRootPageTable` (segment 1,
//!    the root's aperture offset).
//! 5. The paging buffer: `UPDATE_PAGE_TABLE` GPU_VIRTUAL mapping the allocation at
//!    [`ALLOC_VA`] (written by the engine through the leaf's window), `FLUSH_TLB`,
//!    `FILL_VIRTUAL` of its first half, `TRANSFER_VIRTUAL` of page 2 (CPU-written ramp) to page
//!    3. `DxgkDdiSubmitCommandVirtual` on the system context, fence 1.
//! 6. Wait for DMA_COMPLETED(1) through the interrupt path, compare every byte of the
//!    allocation with the CPU.
//! 7. `UNMAP_APERTURE_SEGMENT` everything, destroy context, device and process, free the
//!    memory; RemoveDevice then checks nothing rgpu allocated is left.

use core::sync::atomic::Ordering;

use dxgk_sys::{
    self as s, DRIVER_INITIALIZATION_DATA, DXGKARG_BUILDPAGINGBUFFER, DXGK_PTE, HANDLE, MDL,
    NTSTATUS, PVOID, STATUS_SUCCESS,
};

use crate::callbacks::{alloc_pages, build_mdl, free_mdl, pool_free};
use crate::interrupt;
use crate::steps::{check, record, Got};

const PAGE: usize = 4096;
/// The aperture segment's id (rgpu's QUERYSEGMENT: segment 1).
const APERTURE: u32 = 1;
/// First page-number tag of VidMm's MDLs (16 GiB): disjoint from the port's
/// AllocatePagesForMdl range (from 2 GiB, a few pages per run).
const PFN_BASE: u64 = 0x40_0000;
/// Paging-process layout, all under the one leaf table (VA [0, 2 MiB)).
const WINDOW_VA: u64 = 0x1000;
const PAGING_BUFFER_VA: u64 = 0x1_0000;
const PAGING_BUFFER_PAGES: usize = 2;
/// Where the allocation is mapped by the GPU_VIRTUAL update.
pub const ALLOC_VA: u64 = 0x10_0000;
const ALLOC_PAGES: usize = 4;
const FILL_PATTERN: u32 = 0x5A3C_C3A5;
/// The fence of the paging submission.
const FENCE: u32 = 1;

/// Page-aligned nonpaged memory described by an MDL of the port's own, mapped in the aperture
/// at `aperture_page` once MAP_APERTURE_SEGMENT succeeded.
struct Block {
    raw: *mut u8,
    cpu: *mut u8,
    pages: usize,
    mdl: *mut MDL,
    pfn: u64,
    aperture_page: usize,
    mapped: bool,
}

impl Block {
    fn new(pages: usize, pfn: u64, aperture_page: usize, fill: u8) -> Option<Block> {
        let bytes = pages * PAGE;
        let (raw, cpu) = alloc_pages(bytes)?;
        // SAFETY: `cpu` has `bytes` bytes inside the block just allocated.
        unsafe { core::ptr::write_bytes(cpu, fill, bytes) };
        // Wine cannot build (MmBuildMdlForNonPagedPool is a stub) or map it: the flags and the
        // system VA are set as that routine would.
        let Some(mdl) = build_mdl(cpu, pages, pfn, s::MDL_SOURCE_IS_NONPAGED_POOL) else {
            pool_free(raw);
            return None;
        };
        Some(Block {
            raw,
            cpu,
            pages,
            mdl,
            pfn,
            aperture_page,
            mapped: false,
        })
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `cpu` holds `pages` pages we own; the engine is idle when this is read.
        unsafe { core::slice::from_raw_parts(self.cpu, self.pages * PAGE) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` is the only CPU view.
        unsafe { core::slice::from_raw_parts_mut(self.cpu, self.pages * PAGE) }
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        free_mdl(self.mdl);
        pool_free(self.raw);
    }
}

fn page_pte(aperture_page: usize) -> DXGK_PTE {
    let mut p = DXGK_PTE::default();
    p.set_Valid(1);
    p.set_Segment(u64::from(APERTURE));
    p.u.PageAddress = aperture_page as u64;
    p
}

fn table_pte(aperture_page: usize) -> DXGK_PTE {
    let mut p = DXGK_PTE::default();
    p.set_Valid(1);
    p.set_Segment(u64::from(APERTURE));
    p.u.PageTableAddress = aperture_page as u64;
    p
}

/// What the soft paging run needs from QueryAdapterInfo.
pub struct Geometry {
    pub levels: u32,
    /// PageTableIndexBitCount per level, leaf first.
    pub bits: [u32; 6],
    /// PagingProcessPageTableSegmentId per level.
    pub paging_table_segment: [u32; 6],
}

struct Objects {
    process: HANDLE,
    device: HANDLE,
    context: HANDLE,
}

struct Run<'a> {
    init: &'a DRIVER_INITIALIZATION_DATA,
    adapter: PVOID,
    objects: Objects,
    /// Tables, leaf first.
    tables: [Option<Block>; 6],
    buffer: Option<Block>,
    alloc: Option<Block>,
    dummy: Option<Block>,
    cursor: usize,
}

fn status_ok(name: &str, st: NTSTATUS) -> bool {
    check(
        st == STATUS_SUCCESS,
        format_args!("{name} status {:#010x}", st as u32),
    )
}

/// Runs the soft paging steps on the started soft adapter; returns the bytes verified.
pub fn run(init: &DRIVER_INITIALIZATION_DATA, adapter: PVOID, geo: &Geometry) -> u64 {
    let mut r = Run {
        init,
        adapter,
        objects: Objects {
            process: core::ptr::null_mut(),
            device: core::ptr::null_mut(),
            context: core::ptr::null_mut(),
        },
        tables: [None, None, None, None, None, None],
        buffer: None,
        alloc: None,
        dummy: None,
        cursor: 0,
    };
    let verified = r.steps(geo);
    r.teardown();
    verified
}

impl Run<'_> {
    fn steps(&mut self, geo: &Geometry) -> u64 {
        let levels = geo.levels as usize;
        let shape_ok = check(
            (2..=6).contains(&levels) && geo.bits[..levels].iter().all(|&b| b == 9),
            format_args!("4 KiB tables of 512 entries at every level (got {levels} levels)"),
        ) & check(
            geo.paging_table_segment[..levels.min(6)]
                .iter()
                .all(|&id| id == APERTURE),
            format_args!(
                "PagingProcessPageTableSegmentId = {APERTURE} (aperture) at every level, got {:?}",
                &geo.paging_table_segment[..levels.min(6)]
            ),
        );
        if !record(
            "SoftPaging/Caps",
            if shape_ok { Got::Done } else { Got::Failed },
            format_args!("{levels} levels, paging-process tables in segment {APERTURE}"),
        ) {
            return 0;
        }
        if !self.create_objects() || !self.allocate(levels) || !self.map_all() {
            return 0;
        }
        if !self.init_tables(levels) || !self.build() {
            return 0;
        }
        if !self.submit_and_wait() {
            return 0;
        }
        self.verify()
    }

    fn create_objects(&mut self) -> bool {
        let (Some(cp), Some(cd), Some(cc)) = (
            self.init.DxgkDdiCreateProcess,
            self.init.DxgkDdiCreateDevice,
            self.init.DxgkDdiCreateContext,
        ) else {
            return record(
                "SoftPaging/CreateProcess",
                Got::NotImplemented(0),
                format_args!("CreateProcess/CreateDevice/CreateContext"),
            );
        };
        let mut pa = s::DXGKARG_CREATEPROCESS {
            hDxgkProcess: 0xD6_0000 as HANDLE,
            ..Default::default()
        };
        pa.Flags.set_SystemProcess(1);
        // SAFETY: rgpu's DDI with its adapter and a valid argument block.
        let st = unsafe { cp(self.adapter, &mut pa) };
        let mut ok = status_ok("CreateProcess", st);
        self.objects.process = pa.hKmdProcess;
        if ok {
            let mut da = s::DXGKARG_CREATEDEVICE {
                hKmdProcess: pa.hKmdProcess,
                ..Default::default()
            };
            // SAFETY: as above.
            let st = unsafe { cd(self.adapter, &mut da) };
            ok = status_ok("CreateDevice", st);
            self.objects.device = da.hDevice;
        }
        if ok {
            let mut ca = s::DXGKARG_CREATECONTEXT::default();
            ca.Flags.set_SystemContext(1);
            // SAFETY: rgpu's DDI with the device it created and a valid argument block.
            let st = unsafe { cc(self.objects.device, &mut ca) };
            ok = status_ok("CreateContext", st);
            self.objects.context = ca.hContext;
        }
        record(
            "SoftPaging/CreateProcess",
            if ok { Got::Done } else { Got::Failed },
            format_args!("system paging process, device and context"),
        )
    }

    fn allocate(&mut self, levels: usize) -> bool {
        let mut pfn = PFN_BASE;
        let mut aperture_page = 0;
        let mut next = |pages: usize, fill: u8| {
            let b = Block::new(pages, pfn, aperture_page, fill);
            pfn += pages as u64 + 1;
            aperture_page += pages;
            b
        };
        // Tables are not zeroed: VidMm initializes every entry through the driver.
        for t in self.tables.iter_mut().take(levels) {
            *t = next(1, 0xDD);
        }
        self.buffer = next(PAGING_BUFFER_PAGES, 0);
        self.alloc = next(ALLOC_PAGES, 0xEE);
        self.dummy = next(1, 0);
        let ok = self.tables.iter().take(levels).all(Option::is_some)
            && self.buffer.is_some()
            && self.alloc.is_some()
            && self.dummy.is_some();
        if let Some(a) = self.alloc.as_mut() {
            // Page 2: content "uploaded" by the CPU, the TRANSFER's source.
            for (i, b) in a.bytes_mut()[2 * PAGE..3 * PAGE].iter_mut().enumerate() {
                *b = (i * 7 + 3) as u8;
            }
        }
        record(
            "SoftPaging/Memory",
            if ok { Got::Done } else { Got::Failed },
            format_args!(
                "{} tables, {} paging-buffer pages, {} allocation pages, MDLs over nonpaged pool",
                levels, PAGING_BUFFER_PAGES, ALLOC_PAGES
            ),
        )
    }

    /// One BuildPagingBuffer call into the paging buffer at the cursor (with the rest of the
    /// buffer as DmaSize); advances the cursor by what rgpu wrote.
    fn build_op(&mut self, set: impl FnOnce(&mut DXGKARG_BUILDPAGINGBUFFER)) -> NTSTATUS {
        let Some(bpb) = self.init.DxgkDdiBuildPagingBuffer else {
            return s::STATUS_NOT_IMPLEMENTED;
        };
        let Some(buffer) = self.buffer.as_ref() else {
            return s::STATUS_NO_MEMORY;
        };
        let size = buffer.pages * PAGE;
        let start = buffer.cpu.wrapping_add(self.cursor);
        let mut a = DXGKARG_BUILDPAGINGBUFFER {
            pDmaBuffer: start.cast(),
            DmaSize: (size - self.cursor) as u32,
            hSystemContext: self.objects.context,
            DmaBufferGpuVirtualAddress: PAGING_BUFFER_VA + self.cursor as u64,
            DmaBufferWriteOffset: self.cursor as u32,
            ..Default::default()
        };
        set(&mut a);
        // SAFETY: rgpu's BuildPagingBuffer with live arguments; the DMA buffer, entry arrays
        // and MDLs they name outlive the call.
        let st = unsafe { bpb(self.adapter, &mut a) };
        let end = (a.pDmaBuffer as usize).wrapping_sub(buffer.cpu as usize);
        if end < self.cursor || end > size {
            say!("  check failed: pDmaBuffer moved to offset {end:#x}, outside the buffer");
            return s::STATUS_INVALID_PARAMETER;
        }
        self.cursor = end;
        st
    }

    fn blocks(&self) -> impl Iterator<Item = &Block> {
        self.tables
            .iter()
            .flatten()
            .chain(self.buffer.iter())
            .chain(self.alloc.iter())
    }

    /// (first aperture page, pages, MDL) of every block (`mapped_only`: of the mapped ones), in
    /// [`Run::blocks`] order; copied out so BuildPagingBuffer calls can follow.
    fn spans(&self, mapped_only: bool) -> [Option<(usize, usize, *mut MDL)>; 9] {
        let mut l = [None; 9];
        let blocks = self.blocks().filter(|b| b.mapped || !mapped_only);
        for (slot, b) in l.iter_mut().zip(blocks) {
            *slot = Some((b.aperture_page, b.pages, b.mdl));
        }
        l
    }

    fn map_all(&mut self) -> bool {
        let list = self.spans(false);
        let mut ok = true;
        let mut pages = 0;
        for (i, (first, n, mdl)) in list.into_iter().flatten().enumerate() {
            let st = self.build_op(|a| {
                a.Operation = s::DXGK_OPERATION_MAP_APERTURE_SEGMENT;
                a.u.MapApertureSegment = s::DXGKARG_BUILDPAGINGBUFFER_MapApertureSegment {
                    hDevice: core::ptr::null_mut(),
                    hAllocation: core::ptr::null_mut(),
                    SegmentId: APERTURE,
                    OffsetInPages: first,
                    NumberOfPages: n,
                    pMdl: mdl,
                    MdlOffset: 0,
                    ..Default::default()
                };
            });
            let mapped = status_ok("MAP_APERTURE_SEGMENT", st);
            if mapped {
                pages += n;
                self.set_mapped(i);
            }
            ok &= mapped;
        }
        record(
            "SoftPaging/MapAperture",
            if ok { Got::Done } else { Got::Failed },
            format_args!("MAP_APERTURE_SEGMENT of {pages} pages (tables, paging buffer, allocation) with the port's MDLs"),
        )
    }

    fn set_mapped(&mut self, i: usize) {
        let tables = self.tables.iter().flatten().count();
        let b = if i < tables {
            self.tables.iter_mut().flatten().nth(i)
        } else if i == tables {
            self.buffer.as_mut()
        } else {
            self.alloc.as_mut()
        };
        if let Some(b) = b {
            b.mapped = true;
        }
    }

    /// The paging process's tables, CPU_VIRTUAL with a NULL DMA buffer, then SetRootPageTable.
    fn init_tables(&mut self, levels: usize) -> bool {
        let Some(bpb) = self.init.DxgkDdiBuildPagingBuffer else {
            return false;
        };
        let mut ok = true;
        for level in 0..levels {
            let mut entries = [DXGK_PTE::default(); 512];
            if level > 0 {
                if let Some(child) = &self.tables[level - 1] {
                    entries[0] = table_pte(child.aperture_page);
                }
            } else {
                if let Some(leaf) = &self.tables[0] {
                    entries[(WINDOW_VA >> 12) as usize] = page_pte(leaf.aperture_page);
                }
                if let Some(b) = &self.buffer {
                    for i in 0..b.pages {
                        entries[(PAGING_BUFFER_VA >> 12) as usize + i] =
                            page_pte(b.aperture_page + i);
                    }
                }
            }
            let Some(table) = &self.tables[level] else {
                return false;
            };
            let mut upt = s::DXGK_BUILDPAGINGBUFFER_UPDATEPAGETABLE {
                PageTableLevel: level as u32,
                pPageTableEntries: entries.as_mut_ptr(),
                StartIndex: 0,
                NumPageTableEntries: 512,
                hProcess: self.objects.process,
                UpdateMode: s::DXGK_PAGETABLEUPDATE_CPU_VIRTUAL,
                FirstPteVirtualAddress: 0,
                ..Default::default()
            };
            upt.PageTableAddress.u.CpuVirtual = table.cpu.cast();
            upt.Flags.set_InitialUpdate(1);
            let mut a = DXGKARG_BUILDPAGINGBUFFER {
                Operation: s::DXGK_OPERATION_UPDATE_PAGE_TABLE,
                hSystemContext: self.objects.context,
                ..Default::default()
            };
            a.u.UpdatePageTable = upt;
            // SAFETY: rgpu's BuildPagingBuffer; the entries and the table outlive the call.
            let st = unsafe { bpb(self.adapter, &mut a) };
            ok &= status_ok("UPDATE_PAGE_TABLE(CPU_VIRTUAL)", st);
        }
        let root = self.tables[levels - 1]
            .as_ref()
            .map_or(0, |t| t.aperture_page);
        match self.init.DxgkDdiSetRootPageTable {
            Some(f) if ok => {
                let mut args = s::DXGKARG_SETROOTPAGETABLE {
                    hContext: self.objects.context,
                    NumEntries: 512,
                    ..Default::default()
                };
                args.Address.SegmentId = APERTURE;
                args.Address.SegmentOffset = (root * PAGE) as u64;
                // SAFETY: rgpu's DDI with its adapter and a valid argument block.
                unsafe { f(self.adapter, &args) };
            }
            Some(_) => {}
            None => ok = false,
        }
        record(
            "SoftPaging/PageTables",
            if ok { Got::Done } else { Got::Failed },
            format_args!(
                "{levels} paging-process tables by UPDATE_PAGE_TABLE CPU_VIRTUAL (segment {APERTURE}), SetRootPageTable(segment {APERTURE}, offset {:#x})",
                root * PAGE
            ),
        )
    }

    /// The paging buffer: map the allocation (GPU_VIRTUAL), flush, fill, transfer.
    fn build(&mut self) -> bool {
        let (Some(alloc_page), Some(root)) = (
            self.alloc.as_ref().map(|a| a.aperture_page),
            self.tables.iter().flatten().last().map(|t| t.aperture_page),
        ) else {
            return false;
        };
        let mut ptes = [DXGK_PTE::default(); ALLOC_PAGES];
        for (i, p) in ptes.iter_mut().enumerate() {
            *p = page_pte(alloc_page + i);
        }
        let process = self.objects.process;
        // HarnessSoftFault: the allocation stays unmapped, so the engine must fault on it.
        let unmapped = crate::port::settings().soft_fault;
        let st = if unmapped {
            say!("  HarnessSoftFault: the allocation is left unmapped (the engine must fault)");
            STATUS_SUCCESS
        } else {
            self.build_op(|a| {
                a.Operation = s::DXGK_OPERATION_UPDATE_PAGE_TABLE;
                a.u.UpdatePageTable = s::DXGK_BUILDPAGINGBUFFER_UPDATEPAGETABLE {
                    PageTableLevel: 0,
                    pPageTableEntries: ptes.as_mut_ptr(),
                    StartIndex: ((ALLOC_VA >> 12) & 511) as u32,
                    NumPageTableEntries: ALLOC_PAGES as u32,
                    hProcess: process,
                    UpdateMode: s::DXGK_PAGETABLEUPDATE_GPU_VIRTUAL,
                    FirstPteVirtualAddress: ALLOC_VA,
                    ..Default::default()
                };
                a.u.UpdatePageTable.PageTableAddress.u.GpuVirtual = WINDOW_VA;
            })
        };
        let mut ok = status_ok("UPDATE_PAGE_TABLE(GPU_VIRTUAL)", st);
        let st = self.build_op(|a| {
            a.Operation = s::DXGK_OPERATION_FLUSH_TLB;
            a.u.FlushTlb = s::DXGK_BUILDPAGINGBUFFER_FLUSHTLB {
                RootPageTableAddress: s::D3DGPU_PHYSICAL_ADDRESS {
                    SegmentId: APERTURE,
                    Padding: 0,
                    SegmentOffset: (root * PAGE) as u64,
                },
                hProcess: process,
                StartVirtualAddress: ALLOC_VA,
                EndVirtualAddress: ALLOC_VA + (ALLOC_PAGES * PAGE) as u64 - 1,
            };
        });
        ok &= status_ok("FLUSH_TLB", st);
        let st = self.build_op(|a| {
            a.Operation = s::DXGK_OPERATION_VIRTUAL_FILL;
            a.u.FillVirtual = s::DXGK_BUILDPAGINGBUFFER_FILLVIRTUAL {
                hAllocation: core::ptr::null_mut(),
                AllocationOffsetInBytes: 0,
                FillSizeInBytes: (2 * PAGE) as u64,
                FillPattern: FILL_PATTERN,
                DestinationVirtualAddress: ALLOC_VA,
            };
        });
        ok &= status_ok("FILL_VIRTUAL", st);
        let st = self.build_op(|a| {
            a.Operation = s::DXGK_OPERATION_VIRTUAL_TRANSFER;
            a.u.TransferVirtual = s::DXGK_BUILDPAGINGBUFFER_TRANSFERVIRTUAL {
                TransferSizeInBytes: PAGE as u64,
                SourceVirtualAddress: ALLOC_VA + (2 * PAGE) as u64,
                DestinationVirtualAddress: ALLOC_VA + (3 * PAGE) as u64,
                ..Default::default()
            };
        });
        ok &= status_ok("TRANSFER_VIRTUAL", st);
        ok &= check(
            self.cursor > 0,
            format_args!("the paging buffer is not empty"),
        );
        record(
            "SoftPaging/BuildPagingBuffer",
            if ok { Got::Done } else { Got::Failed },
            format_args!(
                "{} FLUSH_TLB, FILL_VIRTUAL 8 KiB, TRANSFER_VIRTUAL 4 KiB: {} bytes",
                if unmapped {
                    "(allocation left unmapped)"
                } else {
                    "UPDATE_PAGE_TABLE(GPU_VIRTUAL) of the allocation at 0x100000,"
                },
                self.cursor
            ),
        )
    }

    fn submit_and_wait(&mut self) -> bool {
        let Some(f) = self.init.DxgkDdiSubmitCommandVirtual else {
            return record(
                "SoftPaging/Submit",
                Got::NotImplemented(0),
                format_args!(""),
            );
        };
        let seen = interrupt::notified_count();
        let dpcs = interrupt::DPCS_NOTIFIED.load(Ordering::Acquire);
        let args = s::DXGKARG_SUBMITCOMMANDVIRTUAL {
            hContext: self.objects.context,
            DmaBufferVirtualAddress: PAGING_BUFFER_VA,
            DmaBufferSize: self.cursor as u32,
            SubmissionFenceId: FENCE,
            ..Default::default()
        };
        // SAFETY: rgpu's DDI with its adapter and a valid argument block.
        let st = unsafe { f(self.adapter, &args) };
        let mut result = None;
        let answered = st == STATUS_SUCCESS
            && crate::soft::wait_for(|| {
                (seen..interrupt::notified_count()).any(|i| {
                    interrupt::notified(i).is_some_and(|n| {
                        let done = n.kind == s::DXGK_INTERRUPT_DMA_COMPLETED.0 && n.fence >= FENCE;
                        let fault = n.kind == s::DXGK_INTERRUPT_DMA_FAULTED.0
                            || n.kind == s::DXGK_INTERRUPT_DMA_PAGE_FAULTED.0;
                        done || fault
                    })
                }) && interrupt::DPCS_NOTIFIED.load(Ordering::Acquire) > dpcs
            });
        for i in seen..interrupt::notified_count() {
            if let Some(n) = interrupt::notified(i) {
                result = Some(n);
                if n.kind != s::DXGK_INTERRUPT_DMA_COMPLETED.0 {
                    break;
                }
            }
        }
        let ok = status_ok("SubmitCommandVirtual", st)
            && check(
                answered,
                format_args!(
                    "the engine thread reported fence {FENCE} within the wait (notifications {} -> {})",
                    seen,
                    interrupt::notified_count()
                ),
            )
            && check(
                result.is_some_and(|n| n.kind == s::DXGK_INTERRUPT_DMA_COMPLETED.0 && n.fence == FENCE),
                format_args!(
                    "DMA_COMPLETED(fence {FENCE}), got {result:?} (fault address {:#x})",
                    result.map_or(0, |n| n.address)
                ),
            );
        record(
            "SoftPaging/Complete",
            if ok { Got::Done } else { Got::Failed },
            format_args!(
                "SubmitCommandVirtual fence {FENCE} ({} bytes) -> engine thread -> SynchronizeExecution -> DMA_COMPLETED -> DPC (queued {} / run {} / NotifyDpc {})",
                self.cursor,
                interrupt::DPCS_QUEUED.load(Ordering::Relaxed),
                interrupt::DPCS_RUN.load(Ordering::Relaxed),
                interrupt::DPCS_NOTIFIED.load(Ordering::Relaxed),
            ),
        )
    }

    /// Compares every byte of the allocation; returns how many were compared (0 on a mismatch).
    fn verify(&self) -> u64 {
        let Some(a) = &self.alloc else {
            return 0;
        };
        let bytes = a.bytes();
        let pattern = FILL_PATTERN.to_le_bytes();
        let mut first_bad = None;
        for (i, &b) in bytes.iter().enumerate() {
            let want = match i / PAGE {
                0 | 1 => pattern[i % 4],
                _ => ((i % PAGE) * 7 + 3) as u8,
            };
            if b != want && first_bad.is_none() {
                first_bad = Some((i, b, want));
            }
        }
        let ok = check(
            first_bad.is_none(),
            format_args!(
                "allocation bytes as the engine should have left them; first difference {first_bad:?} (offset, got, want)"
            ),
        );
        record(
            "SoftPaging/ReadBack",
            if ok { Got::Done } else { Got::Failed },
            format_args!(
                "{} bytes compared: 8192 filled with {FILL_PATTERN:#010x}, 4096 CPU-written source untouched, 4096 copied",
                bytes.len()
            ),
        );
        if ok {
            bytes.len() as u64
        } else {
            0
        }
    }

    /// Unmaps every mapped block and destroys the objects; the memory is freed on drop.
    fn teardown(&mut self) {
        let dummy = self.dummy.as_ref().map_or(0, |d| d.pfn << 12);
        let list = self.spans(true);
        let mut ok = true;
        // UNMAP encodes nothing; rewind so the whole buffer is available.
        self.cursor = 0;
        for (first, n, _) in list.into_iter().flatten() {
            let st = self.build_op(|a| {
                a.Operation = s::DXGK_OPERATION_UNMAP_APERTURE_SEGMENT;
                a.u.UnmapApertureSegment = s::DXGKARG_BUILDPAGINGBUFFER_UnmapApertureSegment {
                    hDevice: core::ptr::null_mut(),
                    hAllocation: core::ptr::null_mut(),
                    SegmentId: APERTURE,
                    OffsetInPages: first,
                    NumberOfPages: n,
                    DummyPage: s::LARGE_INTEGER {
                        QuadPart: dummy as i64,
                    },
                };
            });
            ok &= status_ok("UNMAP_APERTURE_SEGMENT", st);
        }
        ok &= check(
            self.cursor == 0,
            format_args!(
                "UNMAP_APERTURE_SEGMENT wrote nothing to submit ({} bytes)",
                self.cursor
            ),
        );
        let o = &self.objects;
        if !o.context.is_null() {
            if let Some(f) = self.init.DxgkDdiDestroyContext {
                // SAFETY: a context rgpu created, destroyed once.
                ok &= status_ok("DestroyContext", unsafe { f(o.context) });
            }
        }
        if !o.device.is_null() {
            if let Some(f) = self.init.DxgkDdiDestroyDevice {
                // SAFETY: a device rgpu created, destroyed once.
                ok &= status_ok("DestroyDevice", unsafe { f(o.device) });
            }
        }
        if !o.process.is_null() {
            if let Some(f) = self.init.DxgkDdiDestroyProcess {
                // SAFETY: a process rgpu created, destroyed once.
                ok &= status_ok("DestroyProcess", unsafe { f(self.adapter, o.process) });
            }
        }
        let any = !o.process.is_null();
        self.tables = [None, None, None, None, None, None];
        self.buffer = None;
        self.alloc = None;
        self.dummy = None;
        if any {
            record(
                "SoftPaging/Teardown",
                if ok { Got::Done } else { Got::Failed },
                format_args!("UNMAP_APERTURE_SEGMENT of every mapping, context, device and process destroyed, VidMm memory freed"),
            );
        }
    }
}
