//! Fuzz harness for rgpu's untrusted-input DDIs, shared by the cargo-fuzz targets in `fuzz/`
//! (included with `#[path]`) and by `tests/fuzz_regressions.rs`, which replays the seed corpus
//! and every minimized finding through exactly this code under `cargo test --workspace`.
//!
//! * [`PagingInput`] → DxgkDdiBuildPagingBuffer, called through the DDI table rgpu registered,
//!   on a started adapter (rgpu device model behind the BAR, real GART) in dxgk-sim.
//! * [`QaiInput`] → DxgkDdiQueryAdapterInfo through the same table.
//! * DxgkDdiEscape and allocation private data: `tests/support/fuzz_user_input.rs` (target `user_input`).
//!
//! # The contract the harness keeps
//!
//! Dxgkrnl's argument blocks carry pointers the miniport may trust: the DMA buffer is valid for
//! `DmaSize` bytes, `pPageTableEntries` holds `NumPageTableEntries` entries (1 with Repeat),
//! `pRanges` holds `NumRanges` ranges, an MDL is a real MDL header followed by the PFN array of
//! the pages it spans, QueryAdapterInfo's buffers are valid for their sizes, QUERYSEGMENT4's
//! descriptor array holds `NbSegment` entries of `SegmentDescriptorStride` bytes. The fuzzer
//! attacks sizes, counts, indices, offsets, levels, flags, segment ids, operation codes and
//! addresses that the device (not the CPU) uses — never pointer validity: every pointer the
//! harness passes points at host memory sized exactly as the contract says, followed by guard
//! bytes. Two bounds keep that memory finite, both above anything Windows passes: an array
//! whose count is the fuzzer's is allocated for at most [`MAX_ARRAY`] elements — page-table
//! entries past that must be refused before they are read (a table has 512 entries), while
//! NumRanges itself is capped there (nothing bounds it for the driver to check) — and DmaSize
//! stays at most 64 KiB + 1 (rgpu asks for 64 KiB paging buffers).
//!
//! # Input encoding
//!
//! Inputs are fixed-layout little-endian records ([`PagingInput::from_bytes`]; missing bytes
//! read as 0), so a corpus file stays meaningful across harness changes that append fields.
//! (Not the `arbitrary` crate: `cargo test --workspace` replays corpus files through this
//! module, and the root package has no `arbitrary` dependency.)
//!
//! # State
//!
//! One machine and started adapter per thread, reused across inputs. BuildPagingBuffer only
//! changes adapter state through MAP/UNMAP_APERTURE_SEGMENT (the GART): after an input that
//! succeeded with one of those, and every [`RESET_EVERY`] inputs (the simulator keeps every
//! debug line), the adapter is stopped, removed and unloaded — with the simulator's leak checks
//! — and a fresh one is started, so each input runs against the same baseline GART.

#![allow(dead_code)]

use std::cell::RefCell;
use std::mem::ManuallyDrop;

use dxgk_sim::devices::RgpuDevice;
use dxgk_sim::{AdapterConfig, AdapterId, Machine, MachineConfig};
use dxgk_sys as sys;
use rgpu::caps::{APERTURE_SEGMENT_ID, SYSTEM_MEMORY_SEGMENT_ID};
use rgpu::paging::APERTURE_PAGES;
use rgpu_hw::cmd::{Command, Decoder, Target};

/// Largest array the harness allocates for a fuzzer-chosen count.
pub const MAX_ARRAY: usize = 4096;
/// Guard bytes after every buffer the driver may write.
pub const GUARD: usize = 64;
const GUARD_BYTE: u8 = 0xA5;
/// Fill of the DMA buffer before a call: bytes past what the driver reports as written must
/// still hold it.
const DMA_FILL: u8 = 0xCD;
/// Largest single paging command rgpu emits per unit (COPY, 7 dwords): a buffer at least this
/// big always has room for one unit.
const MAX_UNIT_BYTES: u32 = 28;
/// Passes of one operation before the harness gives up (VidMm would too).
const MAX_PASSES: usize = 8192;
/// Inputs per machine before it is rebuilt.
pub const RESET_EVERY: u32 = 2048;
/// Aperture pages mapped at start (PFN = [`BASELINE_PFN`] + page): the first and last 16.
pub const BASELINE_PAGES: usize = 16;
pub const BASELINE_PFN: usize = 0x8000;
const PAGE: u64 = 4096;

// ---------------------------------------------------------------------------------------------
// Fixed-layout input records.

/// A little-endian reader that yields zeros past the end of its data.
pub struct Reader<'a>(&'a [u8]);

/// A field of an input record.
pub trait Field: Sized {
    fn read(r: &mut Reader<'_>) -> Self;
    fn write(&self, out: &mut Vec<u8>);
}

macro_rules! int_field {
    ($($t:ty),*) => {$(
        impl Field for $t {
            fn read(r: &mut Reader<'_>) -> Self {
                let mut b = [0u8; core::mem::size_of::<$t>()];
                let n = b.len().min(r.0.len());
                b[..n].copy_from_slice(&r.0[..n]);
                r.0 = &r.0[n..];
                <$t>::from_le_bytes(b)
            }
            fn write(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}
int_field!(u8, u16, u32, u64, i32, i64);

impl<T: Field + Copy + Default, const N: usize> Field for [T; N] {
    fn read(r: &mut Reader<'_>) -> Self {
        let mut a = [T::default(); N];
        for x in &mut a {
            *x = T::read(r);
        }
        a
    }
    fn write(&self, out: &mut Vec<u8>) {
        for x in self {
            x.write(out);
        }
    }
}

macro_rules! record {
    ($(#[$m:meta])* pub struct $name:ident { $($(#[$fm:meta])* pub $f:ident: $t:ty,)* }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct $name { $($(#[$fm])* pub $f: $t,)* }
        impl $name {
            /// Decodes a corpus file (missing bytes read as 0, extra bytes are ignored).
            pub fn from_bytes(data: &[u8]) -> Self {
                let mut r = Reader(data);
                Self { $($f: Field::read(&mut r),)* }
            }
            /// Encodes as a corpus file.
            pub fn to_bytes(self) -> Vec<u8> {
                let mut out = Vec::new();
                $(Field::write(&self.$f, &mut out);)*
                out
            }
        }
    };
}

record! {
    /// One DxgkDdiBuildPagingBuffer operation, run to completion the way VidMm does (a new DMA
    /// buffer of the same size after each STATUS_GRAPHICS_INSUFFICIENT_DMA_BUFFER).
    pub struct PagingInput {
        /// `op < 0xE0`: operation `op % 18` (every defined code); otherwise `op_raw`.
        pub op: u8,
        pub op_raw: i32,
        /// DmaSize: class `dma_class % 4` → 0, `dma % 64`, `dma % 4097`, `dma % 65537`.
        pub dma_class: u8,
        pub dma: u32,
        /// First MultipassOffset: class `offset_class % 4` → 0, `offset % 1024`, `offset`, 0.
        pub offset_class: u8,
        pub offset: u32,
        /// Bits 0-1: UpdateMode (0 CPU_VIRTUAL, 1 GPU_VIRTUAL, 2 GPU_PHYSICAL, 3 `op_raw`);
        /// bit 2: NULL DMA buffer for CPU_VIRTUAL; bit 3: NULL entry / range / MDL / table
        /// pointer.
        pub mode: u8,
        /// Segment ids (Transfer source, destination; Fill, Map/Unmap use `segment[1]`):
        /// `small(x, 4)`.
        pub segment: [u32; 2],
        /// Virtual / segment addresses, DummyPage, fence value.
        pub addr: [u64; 3],
        /// TransferSize / FillSize / FillSizeInBytes / TransferSizeInBytes / page counts:
        /// `small64(size, 64 pages + 1)`.
        pub size: u64,
        /// [0] PageTableLevel (`small(x, 6)`), [1] StartIndex (`small(x, 600)`),
        /// [2] NumPageTableEntries / NumRanges (`small(x, 600)`), [3] TransferOffset /
        /// MdlOffset / OffsetInPages (`small(x, 8192)`).
        pub index: [u32; 4],
        /// DXGK_UPDATEPAGETABLEFLAGS (bit 0 Repeat) and the fill pattern.
        pub flags: u32,
        /// DXGK_PTE templates: entry `i` is `pte_flags[i % 2]`, page `pte_page[i % 2] + i`.
        pub pte_flags: [u64; 2],
        pub pte_page: [u64; 2],
        /// MDLs (source, destination): ByteOffset `% 4096`, ByteCount `% (512 pages + 1)`.
        pub mdl_offset: [u16; 2],
        pub mdl_bytes: [u32; 2],
        /// COPY_PAGE_TABLE_ENTRIES range templates (range `i` uses `i % 2`): entry count,
        /// source start, destination start (each `small(x, 600)`).
        pub range: [u32; 6],
        /// MDL header damage (source, destination), so that the decode's MDL checks are
        /// reached through the DDI: bits 0-15 are added to the correct `Size` (as a CSHORT;
        /// the allocation always holds the larger of the two), bit 16 keeps `mdl_offset` as
        /// the ByteOffset without reducing it to the first page, bit 17 misaligns StartVa.
        pub mdl_damage: [u32; 2],
    }
}

record! {
    /// One DxgkDdiQueryAdapterInfo call.
    pub struct QaiInput {
        /// `ty < 0xC0`: Type `ty % 40` (every defined type and a few past them); else `ty_raw`.
        pub ty: u8,
        pub ty_raw: i32,
        /// Input: InputDataSize `in_size % 257` (0: NULL pointer unless bit 0 of `null`),
        /// content repeats `in_bytes`.
        pub in_size: u16,
        pub in_bytes: [u8; 8],
        /// Output: OutputDataSize `out_size % 2049`, content repeats `out_bytes`.
        pub out_size: u16,
        pub out_bytes: [u8; 8],
        /// Bit 0: NULL input pointer; bit 1: NULL output pointer; bit 2: a QUERYSEGMENT4
        /// descriptor array (else pSegmentDescriptor NULL).
        pub null: u8,
        /// QUERYSEGMENT4 in/out: NbSegment `% 4`, stride `% 600` (raw when bit 15 is set).
        pub nb_segment: u8,
        pub stride: u16,
    }
}

fn small(x: u32, m: u32) -> u32 {
    if x & 0x8000_0000 == 0 {
        x % m
    } else {
        x
    }
}

fn small64(x: u64, m: u64) -> u64 {
    if x >> 63 == 0 {
        x % m
    } else {
        x
    }
}

// ---------------------------------------------------------------------------------------------
// The machine and its started adapter.

/// A machine with rgpu loaded and one started adapter.
pub struct Fixture {
    pub m: Machine,
    pub id: AdapterId,
    pub adapter: sys::HANDLE,
    pub ddis: sys::DRIVER_INITIALIZATION_DATA,
    inputs: u32,
}

impl Fixture {
    /// Loads rgpu, starts an adapter with the rgpu device model and maps the baseline GART.
    pub fn new() -> Self {
        let m = Machine::new(MachineConfig::windows_11_22h2());
        assert_eq!(m.load_driver(rgpu::ddi::DriverEntry), sys::STATUS_SUCCESS);
        let id = m.add_adapter(AdapterConfig {
            device: Some(Box::new(RgpuDevice::new())),
        });
        assert_eq!(
            m.start_adapter(id),
            sys::STATUS_SUCCESS,
            "{:?}",
            m.findings()
        );
        let ddis = m.registered_driver().expect("DDI table");
        let adapter = m.adapter(id).context;
        let f = Self {
            m,
            id,
            adapter,
            ddis,
            inputs: 0,
        };
        for first in [0, APERTURE_PAGES - BASELINE_PAGES] {
            let mut mdl = Mdl::new(
                0x10_0000,
                0,
                (BASELINE_PAGES as u32) * 4096,
                BASELINE_PFN + first,
            );
            let mut dma = vec![0u8; 64];
            let mut a = sys::DXGKARG_BUILDPAGINGBUFFER {
                pDmaBuffer: dma.as_mut_ptr().cast(),
                DmaSize: 64,
                Operation: sys::DXGK_OPERATION_MAP_APERTURE_SEGMENT,
                ..Default::default()
            };
            a.u.MapApertureSegment = sys::DXGKARG_BUILDPAGINGBUFFER_MapApertureSegment {
                SegmentId: APERTURE_SEGMENT_ID,
                OffsetInPages: first,
                NumberOfPages: BASELINE_PAGES,
                pMdl: mdl.as_ptr(),
                ..Default::default()
            };
            assert_eq!(f.build(&mut a), sys::STATUS_SUCCESS, "baseline GART");
        }
        f
    }

    /// DxgkDdiBuildPagingBuffer through the registered DDI table.
    pub fn build(&self, args: &mut sys::DXGKARG_BUILDPAGINGBUFFER) -> sys::NTSTATUS {
        let ddi = self
            .ddis
            .DxgkDdiBuildPagingBuffer
            .expect("BuildPagingBuffer");
        // SAFETY: the adapter handle AddDevice returned for a started adapter; `args` and every
        // pointer in it are valid as the DDI contract says (see the module documentation).
        self.m.enter(|| unsafe { ddi(self.adapter, args) })
    }

    /// DxgkDdiQueryAdapterInfo through the registered DDI table.
    pub fn query(&self, args: &sys::DXGKARG_QUERYADAPTERINFO) -> sys::NTSTATUS {
        let ddi = self.ddis.DxgkDdiQueryAdapterInfo.expect("QueryAdapterInfo");
        // SAFETY: the adapter handle from AddDevice; buffers valid for their sizes.
        self.m.enter(|| unsafe { ddi(self.adapter, args) })
    }

    /// Verifier findings must stay at none.
    pub fn assert_no_findings(&self, what: &str) {
        let f = self.m.findings();
        assert!(f.is_empty(), "{what}: verifier findings: {f:#?}");
    }

    /// Stops, removes and unloads, with the simulator's leak checks.
    pub fn teardown(self) {
        assert_eq!(self.m.stop_adapter(self.id), sys::STATUS_SUCCESS);
        assert_eq!(self.m.remove_adapter(self.id), sys::STATUS_SUCCESS);
        self.m.unload_driver();
        self.m.check_leaks();
        self.assert_no_findings("teardown");
    }
}

impl Default for Fixture {
    fn default() -> Self {
        Self::new()
    }
}

thread_local! {
    /// Never dropped implicitly: a fixture still alive when the process exits (libFuzzer exits
    /// from `main`) stays as it is, so the memory it reaches stays reachable for
    /// LeakSanitizer — dropping it there would free the driver's pool blocks (dxgk-sim releases
    /// them with the machine) while the MDLs they point to are only torn down by RemoveDevice.
    /// [`with_fixture`] and [`finish_thread`] take it out and tear it down properly.
    static FIXTURE: RefCell<Option<ManuallyDrop<Fixture>>> = const { RefCell::new(None) };
}

/// Runs `f` on this thread's fixture; `f` returns whether it changed adapter state, in which
/// case (and every [`RESET_EVERY`] inputs) the fixture is rebuilt before the next input.
pub fn with_fixture(f: impl FnOnce(&Fixture) -> bool) {
    FIXTURE.with(|cell| {
        let mut slot = cell.borrow_mut();
        let fx = slot.get_or_insert_with(|| ManuallyDrop::new(Fixture::new()));
        fx.inputs += 1;
        let dirty = f(fx);
        if dirty || fx.inputs >= RESET_EVERY {
            if let Some(old) = slot.take() {
                ManuallyDrop::into_inner(old).teardown();
            }
        }
    });
}

/// Tears down this thread's fixture (with the leak checks), if it has one.
pub fn finish_thread() {
    if let Some(fx) = FIXTURE.with(|cell| cell.borrow_mut().take()) {
        ManuallyDrop::into_inner(fx).teardown();
    }
}

// ---------------------------------------------------------------------------------------------
// Host memory standing in for the OS's.

/// A buffer of `len` bytes the driver may write, followed by [`GUARD`] guard bytes.
pub struct Guarded {
    bytes: Vec<u8>,
    len: usize,
}

impl Guarded {
    pub fn new(len: usize, fill: u8) -> Self {
        let mut bytes = vec![fill; len + GUARD];
        bytes[len..].fill(GUARD_BYTE);
        Self { bytes, len }
    }
    pub fn ptr(&mut self) -> *mut u8 {
        self.bytes.as_mut_ptr()
    }
    pub fn data(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.bytes[..self.len]
    }
    pub fn assert_guard(&self, what: &str) {
        if let Some(i) = self.bytes[self.len..].iter().position(|&b| b != GUARD_BYTE) {
            panic!(
                "{what}: wrote past the end of a {}-byte buffer (guard byte +{i})",
                self.len
            );
        }
    }
}

/// An MDL as the OS builds it: the header, then one PFN per page the buffer spans.
pub struct Mdl {
    words: Vec<usize>,
    pub pages: usize,
}

const MDL_WORDS: usize = core::mem::size_of::<sys::MDL>() / core::mem::size_of::<usize>();
const _: () =
    assert!(core::mem::size_of::<sys::MDL>().is_multiple_of(core::mem::size_of::<usize>()));

impl Mdl {
    /// An MDL of `byte_count` bytes at `start_va + byte_offset` (`start_va` page aligned,
    /// never dereferenced), whose pages are `first_pfn`, `first_pfn + 1`, ...
    pub fn new(start_va: usize, byte_offset: u32, byte_count: u32, first_pfn: usize) -> Self {
        Self::damaged(start_va, byte_offset, byte_count, first_pfn, 0, 0)
    }

    /// As [`Mdl::new`] with `size_delta` added to the header's `Size`; the allocation holds
    /// the larger of the two sizes, so that the header never claims memory that is not there.
    pub fn damaged(
        start_va: usize,
        byte_offset: u32,
        byte_count: u32,
        first_pfn: usize,
        size_delta: i16,
        va_delta: usize,
    ) -> Self {
        let pages = sys::ADDRESS_AND_SIZE_TO_SPAN_PAGES(
            start_va + byte_offset as usize,
            byte_count as usize,
        );
        let size = ((core::mem::size_of::<sys::MDL>() + pages * 8) as i16).wrapping_add(size_delta);
        let claimed = (size as u16 as usize).saturating_sub(core::mem::size_of::<sys::MDL>());
        let mut words = vec![0usize; MDL_WORDS + pages.max(claimed.div_ceil(8))];
        for (i, w) in words[MDL_WORDS..].iter_mut().enumerate() {
            *w = first_pfn + i;
        }
        let header = sys::MDL {
            Size: size,
            StartVa: (start_va + va_delta) as sys::PVOID,
            ByteOffset: byte_offset,
            ByteCount: byte_count,
            ..Default::default()
        };
        // SAFETY: `words` starts with MDL_WORDS usize-aligned words, room for the header (MDL is
        // 8-byte aligned, as usize is).
        unsafe { words.as_mut_ptr().cast::<sys::MDL>().write(header) };
        Self { words, pages }
    }
    pub fn as_ptr(&mut self) -> *mut sys::MDL {
        self.words.as_mut_ptr().cast()
    }

    /// Whether dxgk's MDL view must accept this header ([`reference_mdl_span`]).
    pub fn well_formed(&self) -> bool {
        // SAFETY: `words` starts with the header `damaged` wrote.
        let h = unsafe { self.words.as_ptr().cast::<sys::MDL>().read() };
        reference_mdl_span(&h).is_some()
    }
}

/// The pages an MDL header spans if dxgk's view must accept it — a reference written from the
/// MDL rules (ByteOffset inside the first page, StartVa page aligned, `Size` covering the
/// spanned PFNs, or their CSHORT truncation when it cannot), not from the view's code.
pub fn reference_mdl_span(h: &sys::MDL) -> Option<usize> {
    if h.ByteOffset >= 4096 || !(h.StartVa as usize).is_multiple_of(4096) {
        return None;
    }
    let pages = (u64::from(h.ByteOffset) + u64::from(h.ByteCount)).div_ceil(4096);
    let needed = core::mem::size_of::<sys::MDL>() as u64 + 8 * pages;
    let ok = if needed <= 0xFFFF {
        u64::from(h.Size as u16) >= needed
    } else {
        h.Size as u16 == needed as u16
    };
    ok.then_some(pages as usize)
}

// ---------------------------------------------------------------------------------------------
// BuildPagingBuffer.

/// What the harness built for one input; kept alive across the passes.
struct PagingCall {
    args: sys::DXGKARG_BUILDPAGINGBUFFER,
    entries: Vec<sys::DXGK_PTE>,
    ranges: Vec<sys::DXGK_BUILDPAGINGBUFFER_COPY_RANGE>,
    mdls: [Mdl; 2],
    /// CPU_VIRTUAL page table: 4 KiB + guard.
    table: Guarded,
    null_dma: bool,
    /// Which of `mdls` the operation's arguments point at.
    uses_mdl: [bool; 2],
}

const TABLE_FILL: u8 = 0xEE;

fn operation(input: &PagingInput) -> sys::DXGK_BUILDPAGINGBUFFER_OPERATION {
    if input.op < 0xE0 {
        sys::DXGK_BUILDPAGINGBUFFER_OPERATION(i32::from(input.op % 18))
    } else {
        sys::DXGK_BUILDPAGINGBUFFER_OPERATION(input.op_raw)
    }
}

fn dma_size(input: &PagingInput) -> u32 {
    match input.dma_class % 4 {
        0 => 0,
        1 => input.dma % 64,
        2 => input.dma % 4097,
        _ => input.dma % 65537,
    }
}

fn first_offset(input: &PagingInput) -> u32 {
    match input.offset_class % 4 {
        1 => input.offset % 1024,
        2 => input.offset,
        _ => 0,
    }
}

fn pte(input: &PagingInput, i: usize) -> sys::DXGK_PTE {
    let mut p = sys::DXGK_PTE {
        Flags: input.pte_flags[i % 2],
        ..Default::default()
    };
    p.u.PageAddress = input.pte_page[i % 2].wrapping_add(i as u64);
    p
}

impl PagingCall {
    fn new(input: &PagingInput) -> Self {
        let op = operation(input);
        let null_ptr = input.mode & 8 != 0;
        let mut call = PagingCall {
            args: sys::DXGKARG_BUILDPAGINGBUFFER {
                Operation: op,
                ..Default::default()
            },
            entries: Vec::new(),
            ranges: Vec::new(),
            mdls: [0, 1].map(|s| {
                let damage = input.mdl_damage[s];
                let offset = u32::from(input.mdl_offset[s]);
                Mdl::damaged(
                    0x4000_0000 * (s + 1),
                    if damage & 1 << 16 != 0 {
                        offset
                    } else {
                        offset % 4096
                    },
                    input.mdl_bytes[s] % (512 * 4096 + 1),
                    0x10_0000 * (s + 1),
                    damage as u16 as i16,
                    if damage & 1 << 17 != 0 { 0x10 } else { 0 },
                )
            }),
            table: Guarded::new(4096, TABLE_FILL),
            null_dma: false,
            uses_mdl: [false; 2],
        };
        let segment = |s: usize| small(input.segment[s], 4);
        let size = small64(input.size, 64 * PAGE + 1);
        let count = small(input.index[2], 600);
        let offset3 = small(input.index[3], 8192);
        let u = &mut call.args.u;
        if op == sys::DXGK_OPERATION_UPDATE_PAGE_TABLE {
            let mode = match input.mode & 3 {
                0 => sys::DXGK_PAGETABLEUPDATE_CPU_VIRTUAL,
                1 => sys::DXGK_PAGETABLEUPDATE_GPU_VIRTUAL,
                2 => sys::DXGK_PAGETABLEUPDATE_GPU_PHYSICAL,
                _ => sys::DXGK_PAGETABLEUPDATEMODE(input.op_raw),
            };
            let flags = sys::DXGK_UPDATEPAGETABLEFLAGS {
                _bitfield_1: input.flags,
            };
            let provided = if flags.Repeat() != 0 {
                1
            } else {
                count as usize
            };
            call.entries = (0..provided.min(MAX_ARRAY))
                .map(|i| pte(input, i))
                .collect();
            let mut upt = sys::DXGK_BUILDPAGINGBUFFER_UPDATEPAGETABLE {
                PageTableLevel: small(input.index[0], 6),
                pPageTableEntries: if null_ptr {
                    core::ptr::null_mut()
                } else {
                    call.entries.as_mut_ptr()
                },
                StartIndex: small(input.index[1], 600),
                NumPageTableEntries: count,
                UpdateMode: mode,
                Flags: flags,
                ..Default::default()
            };
            if mode == sys::DXGK_PAGETABLEUPDATE_CPU_VIRTUAL {
                upt.PageTableAddress.u.CpuVirtual = if null_ptr {
                    core::ptr::null_mut()
                } else {
                    call.table.ptr().cast()
                };
                call.null_dma = input.mode & 4 != 0;
            } else {
                upt.PageTableAddress.u.GpuVirtual = input.addr[0];
            }
            u.UpdatePageTable = upt;
        } else if op == sys::DXGK_OPERATION_FLUSH_TLB {
            u.FlushTlb.StartVirtualAddress = input.addr[0];
            u.FlushTlb.EndVirtualAddress = input.addr[1];
        } else if op == sys::DXGK_OPERATION_VIRTUAL_FILL {
            u.FillVirtual.DestinationVirtualAddress = input.addr[0];
            u.FillVirtual.FillSizeInBytes = size;
            u.FillVirtual.FillPattern = input.flags;
        } else if op == sys::DXGK_OPERATION_VIRTUAL_TRANSFER {
            u.TransferVirtual.SourceVirtualAddress = input.addr[0];
            u.TransferVirtual.DestinationVirtualAddress = input.addr[1];
            u.TransferVirtual.TransferSizeInBytes = size;
        } else if op == sys::DXGK_OPERATION_TRANSFER {
            let mut t = sys::DXGKARG_BUILDPAGINGBUFFER_Transfer {
                TransferOffset: offset3,
                TransferSize: size as usize,
                MdlOffset: small(input.index[1], 600),
                ..Default::default()
            };
            t.Source.SegmentId = segment(0);
            t.Destination.SegmentId = segment(1);
            // Segment 0 is system memory: the side is an MDL. Otherwise a segment address.
            call.uses_mdl = [
                t.Source.SegmentId == 0 && !null_ptr,
                t.Destination.SegmentId == 0 && !null_ptr,
            ];
            if t.Source.SegmentId == 0 {
                t.Source.u.pMdl = if null_ptr {
                    core::ptr::null_mut()
                } else {
                    call.mdls[0].as_ptr()
                };
            } else {
                t.Source.u.SegmentAddress.QuadPart = input.addr[0] as i64;
            }
            if t.Destination.SegmentId == 0 {
                t.Destination.u.pMdl = if null_ptr {
                    core::ptr::null_mut()
                } else {
                    call.mdls[1].as_ptr()
                };
            } else {
                t.Destination.u.SegmentAddress.QuadPart = input.addr[1] as i64;
            }
            u.Transfer = t;
        } else if op == sys::DXGK_OPERATION_FILL {
            let mut f = sys::DXGKARG_BUILDPAGINGBUFFER_Fill {
                FillSize: size as usize,
                FillPattern: input.flags,
                ..Default::default()
            };
            f.Destination.SegmentId = segment(1);
            f.Destination.SegmentAddress.QuadPart = input.addr[0] as i64;
            u.Fill = f;
        } else if op == sys::DXGK_OPERATION_MAP_APERTURE_SEGMENT {
            call.uses_mdl = [!null_ptr, false];
            u.MapApertureSegment = sys::DXGKARG_BUILDPAGINGBUFFER_MapApertureSegment {
                SegmentId: segment(1),
                OffsetInPages: small64(input.addr[0], APERTURE_PAGES as u64 + 64) as usize,
                NumberOfPages: small64(input.size, 1024) as usize,
                pMdl: if null_ptr {
                    core::ptr::null_mut()
                } else {
                    call.mdls[0].as_ptr()
                },
                MdlOffset: offset3,
                ..Default::default()
            };
        } else if op == sys::DXGK_OPERATION_UNMAP_APERTURE_SEGMENT {
            let mut m = sys::DXGKARG_BUILDPAGINGBUFFER_UnmapApertureSegment {
                SegmentId: segment(1),
                OffsetInPages: small64(input.addr[0], APERTURE_PAGES as u64 + 64) as usize,
                NumberOfPages: small64(input.size, 1024) as usize,
                ..Default::default()
            };
            m.DummyPage.QuadPart = input.addr[2] as i64;
            u.UnmapApertureSegment = m;
        } else if op == sys::DXGK_OPERATION_COPY_PAGE_TABLE_ENTRIES {
            // The ranges are VidMm's array with no bound the driver could check NumRanges
            // against: the count stays within what the harness allocates.
            let count = count.min(MAX_ARRAY as u32);
            call.ranges = (0..count as usize)
                .map(|i| {
                    let t = i % 2;
                    sys::DXGK_BUILDPAGINGBUFFER_COPY_RANGE {
                        NumPageTableEntries: small(input.range[3 * t], 600),
                        SrcPageTableAddress: input.addr[0].wrapping_add(PAGE * i as u64),
                        DstPageTableAddress: input.addr[1].wrapping_add(PAGE * i as u64),
                        SrcStartPteIndex: small(input.range[3 * t + 1], 600),
                        DstStartPteIndex: small(input.range[3 * t + 2], 600),
                    }
                })
                .collect();
            u.CopyPageTableEntries = sys::DXGK_BUILDPAGINGBUFFER_COPYPAGETABLEENTRIES {
                NumRanges: count,
                pRanges: if null_ptr {
                    core::ptr::null_mut()
                } else {
                    call.ranges.as_mut_ptr()
                },
            };
        } else if op == sys::DXGK_OPERATION_SIGNAL_MONITORED_FENCE {
            u.SignalMonitoredFence.MonitoredFenceGpuVa = input.addr[0];
            u.SignalMonitoredFence.MonitoredFenceValue = input.addr[2];
        }
        // Every other operation carries no pointer rgpu may follow: its argument block stays
        // zero (rgpu reads none of it).
        call
    }
}

/// Operations rgpu's caps exclude (and codes that do not exist) must be refused.
fn must_be_refused(op: sys::DXGK_BUILDPAGINGBUFFER_OPERATION) -> bool {
    !(0..=17).contains(&op.0)
        || [
            sys::DXGK_OPERATION_READ_PHYSICAL,
            sys::DXGK_OPERATION_WRITE_PHYSICAL,
            sys::DXGK_OPERATION_SPECIAL_LOCK_TRANSFER,
        ]
        .contains(&op)
}

/// What one input produced, for tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PagingOutcome {
    /// Status of the last pass.
    pub status: sys::NTSTATUS,
    /// Passes made (1 + INSUFFICIENT_DMA_BUFFER answers followed).
    pub passes: usize,
    /// Bytes of commands over all passes.
    pub bytes: usize,
}

/// Runs one BuildPagingBuffer input against this thread's fixture and checks every invariant
/// (panics on a violation).
pub fn run_paging(input: &PagingInput) -> PagingOutcome {
    let mut outcome = PagingOutcome::default();
    with_fixture(|fx| {
        outcome = run_paging_on(fx, input);
        let op = operation(input);
        outcome.status == sys::STATUS_SUCCESS
            && (op == sys::DXGK_OPERATION_MAP_APERTURE_SEGMENT
                || op == sys::DXGK_OPERATION_UNMAP_APERTURE_SEGMENT)
    });
    outcome
}

/// [`run_paging`] on a given fixture.
pub fn run_paging_on(fx: &Fixture, input: &PagingInput) -> PagingOutcome {
    let call = PagingCall::new(input);
    let op = call.args.Operation;
    let dma_size = dma_size(input);
    let start = first_offset(input);
    let mut offset = start;
    let mut commands: Vec<OwnedCommand> = Vec::new();
    let mut outcome = PagingOutcome::default();
    loop {
        outcome.passes += 1;
        let mut dma = Guarded::new(dma_size as usize, DMA_FILL);
        let mut args = call.args;
        args.MultipassOffset = offset;
        if call.null_dma {
            args.pDmaBuffer = core::ptr::null_mut();
            args.DmaSize = 0;
        } else {
            args.pDmaBuffer = dma.ptr().cast();
            args.DmaSize = dma_size;
        }
        let given = args.DmaSize;
        let base = args.pDmaBuffer;
        let status = fx.build(&mut args);
        outcome.status = status;
        let what = format!("BuildPagingBuffer op {} pass {}", op.0, outcome.passes);
        dma.assert_guard(&what);
        call.table
            .assert_guard(&format!("{what}: CPU_VIRTUAL page table"));
        fx.assert_no_findings(&what);
        assert!(
            status == sys::STATUS_SUCCESS || status < 0,
            "{what}: returned {status:#010x}, neither success nor an error"
        );
        if must_be_refused(op) {
            assert!(
                status < 0,
                "{what}: an operation rgpu excludes was accepted"
            );
        }
        // An argument MDL the view must refuse: the decode refuses the call before anything
        // is encoded.
        if (0..2).any(|s| call.uses_mdl[s] && !call.mdls[s].well_formed()) {
            assert_eq!(
                status,
                sys::STATUS_INVALID_PARAMETER,
                "{what}: a malformed MDL was accepted"
            );
            assert_eq!(args.DmaSize, given, "{what}: wrote with a malformed MDL");
            return outcome;
        }
        let insufficient = status == sys::STATUS_GRAPHICS_INSUFFICIENT_DMA_BUFFER;
        if status != sys::STATUS_SUCCESS && !insufficient {
            return outcome; // refused (fatal to VidMm): no further rules apply
        }
        // pDmaBuffer / DmaSize advanced by exactly what was written.
        assert!(args.DmaSize <= given, "{what}: DmaSize grew");
        let written = (given - args.DmaSize) as usize;
        assert_eq!(
            args.pDmaBuffer as usize,
            base as usize + written,
            "{what}: pDmaBuffer does not follow DmaSize"
        );
        if !call.null_dma {
            let bytes = dma.data();
            if let Some(i) = bytes[written..].iter().position(|&b| b != DMA_FILL) {
                panic!(
                    "{what}: byte {} of the DMA buffer changed but only {written} reported written",
                    written + i
                );
            }
            for item in Decoder::new(&bytes[..written]) {
                match item {
                    Ok((_, cmd)) => commands.push(OwnedCommand::from(&cmd)),
                    Err((at, e)) => panic!("{what}: bytes at {at} do not decode: {e:?}"),
                }
            }
        }
        outcome.bytes += written;
        if status == sys::STATUS_SUCCESS {
            break;
        }
        // INSUFFICIENT_DMA_BUFFER: progress, or a buffer too small for any unit. (A single-unit
        // operation answers MultipassOffset 0 whatever it was given: VidMm only ever passes it
        // back what the driver returned, so that is not going back.)
        let next = args.MultipassOffset;
        if written == 0 && next <= offset {
            assert!(
                dma_size < MAX_UNIT_BYTES,
                "{what}: no progress with a {dma_size}-byte buffer (one unit needs at most {MAX_UNIT_BYTES})"
            );
            return outcome;
        }
        assert!(
            next > offset,
            "{what}: wrote {written} bytes but MultipassOffset went from {offset} to {next}"
        );
        offset = next;
        if outcome.passes >= MAX_PASSES {
            return outcome;
        }
    }
    check_commands(input, &call, start, &commands);
    outcome
}

/// A decoded command without borrowed payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OwnedCommand {
    WritePtes {
        dst: Target,
        entries: Vec<u64>,
    },
    Copy {
        dst: Target,
        src: Target,
        size: u64,
    },
    Fill {
        dst: Target,
        size: u64,
        pattern: u32,
    },
    WriteData {
        dst: Target,
        data: Vec<u32>,
    },
    FlushTlb,
    Other(String),
}

impl From<&Command<'_>> for OwnedCommand {
    fn from(c: &Command<'_>) -> Self {
        match *c {
            Command::WritePtes { dst, entries } => OwnedCommand::WritePtes {
                dst,
                entries: entries.iter().collect(),
            },
            Command::Copy { dst, src, size } => OwnedCommand::Copy { dst, src, size },
            Command::Fill { dst, size, pattern } => OwnedCommand::Fill { dst, size, pattern },
            Command::WriteData { dst, data } => OwnedCommand::WriteData {
                dst,
                data: data.iter().collect(),
            },
            Command::FlushTlb(_) => OwnedCommand::FlushTlb,
            ref other => OwnedCommand::Other(format!("{other:?}")),
        }
    }
}

/// A logical (device-physical) target must stay inside one 4 KiB page: logical pages behind
/// an MDL or the GART are not contiguous.
fn assert_within_page(what: &str, t: Target, size: u64) {
    if let Target::Logical(a) = t {
        assert!(
            a % PAGE + size <= PAGE,
            "{what}: {size} bytes at logical {a:#x} cross a page boundary"
        );
    }
}

/// What a completed operation must have encoded, over all its passes.
fn check_commands(input: &PagingInput, call: &PagingCall, start: u32, cmds: &[OwnedCommand]) {
    let op = call.args.Operation;
    let what = format!("BuildPagingBuffer op {}", op.0);
    for c in cmds {
        if let OwnedCommand::Other(s) = c {
            panic!("{what}: a paging buffer holds {s}");
        }
    }
    // Each arm reads the union member its operation code names, which `PagingCall::new` wrote.
    if op == sys::DXGK_OPERATION_UPDATE_PAGE_TABLE {
        // SAFETY: the member named by the operation.
        let upt = unsafe { call.args.u.UpdatePageTable };
        if upt.UpdateMode == sys::DXGK_PAGETABLEUPDATE_CPU_VIRTUAL {
            assert!(cmds.is_empty(), "{what}: CPU_VIRTUAL wrote commands");
            let first = upt.StartIndex as usize * 8;
            let end = first + upt.NumPageTableEntries as usize * 8;
            let t = call.table.data();
            assert!(
                t[..first].iter().chain(&t[end..]).all(|&b| b == TABLE_FILL),
                "{what}: CPU_VIRTUAL wrote outside entries {}..{}",
                upt.StartIndex,
                upt.StartIndex + upt.NumPageTableEntries
            );
            return;
        }
        // SAFETY: GPU modes: GpuVirtual is the member written.
        let va = unsafe { upt.PageTableAddress.u.GpuVirtual };
        let mut next = u64::from(upt.StartIndex) + u64::from(start);
        for c in cmds {
            let OwnedCommand::WritePtes { dst, entries } = c else {
                panic!("{what}: unexpected {c:?}");
            };
            assert_eq!(
                *dst,
                Target::Virtual(va.wrapping_add(next * 8)),
                "{what}: entries out of order"
            );
            next += entries.len() as u64;
        }
        let end = u64::from(upt.StartIndex) + u64::from(upt.NumPageTableEntries);
        assert_eq!(
            next,
            end.max(u64::from(upt.StartIndex) + u64::from(start)),
            "{what}: not every entry written once"
        );
    } else if op == sys::DXGK_OPERATION_TRANSFER || op == sys::DXGK_OPERATION_FILL {
        let mut total = 0u64;
        for c in cmds {
            match *c {
                OwnedCommand::Copy { dst, src, size } if op == sys::DXGK_OPERATION_TRANSFER => {
                    assert_within_page(&what, dst, size);
                    assert_within_page(&what, src, size);
                    assert!(
                        !dst.is_virtual() && !src.is_virtual(),
                        "{what}: virtual target"
                    );
                    total += size;
                }
                OwnedCommand::Fill { dst, size, pattern } if op == sys::DXGK_OPERATION_FILL => {
                    assert_within_page(&what, dst, size);
                    assert!(!dst.is_virtual(), "{what}: virtual target");
                    assert_eq!(pattern, input.flags, "{what}: fill pattern");
                    total += size;
                }
                ref c => panic!("{what}: unexpected {c:?}"),
            }
        }
        let size = if op == sys::DXGK_OPERATION_TRANSFER {
            // SAFETY: the member named by the operation.
            unsafe { call.args.u.Transfer }.TransferSize as u64
        } else {
            // SAFETY: the member named by the operation.
            unsafe { call.args.u.Fill }.FillSize as u64
        };
        if start == 0 {
            assert_eq!(total, size, "{what}: bytes encoded != the operation's size");
        }
    } else if op == sys::DXGK_OPERATION_COPY_PAGE_TABLE_ENTRIES {
        // SAFETY: the member named by the operation.
        let c = unsafe { call.args.u.CopyPageTableEntries };
        assert!(
            cmds.iter().all(
                |x| matches!(x, OwnedCommand::Copy { dst, src, .. } if dst.is_virtual() && src.is_virtual())
            ),
            "{what}: {cmds:?}"
        );
        assert_eq!(
            cmds.len() as u64,
            u64::from(c.NumRanges.saturating_sub(start)),
            "{what}: one COPY per range"
        );
    } else if op == sys::DXGK_OPERATION_FLUSH_TLB {
        assert_eq!(cmds, [OwnedCommand::FlushTlb], "{what}");
    } else if op == sys::DXGK_OPERATION_VIRTUAL_FILL {
        // SAFETY: the member named by the operation.
        let f = unsafe { call.args.u.FillVirtual };
        let expected = OwnedCommand::Fill {
            dst: Target::Virtual(f.DestinationVirtualAddress),
            size: f.FillSizeInBytes,
            pattern: f.FillPattern,
        };
        assert_eq!(cmds, [expected], "{what}");
    } else if op == sys::DXGK_OPERATION_VIRTUAL_TRANSFER {
        // SAFETY: the member named by the operation.
        let t = unsafe { call.args.u.TransferVirtual };
        let expected = OwnedCommand::Copy {
            dst: Target::Virtual(t.DestinationVirtualAddress),
            src: Target::Virtual(t.SourceVirtualAddress),
            size: t.TransferSizeInBytes,
        };
        assert_eq!(cmds, [expected], "{what}");
    } else if op == sys::DXGK_OPERATION_SIGNAL_MONITORED_FENCE {
        // SAFETY: the member named by the operation.
        let s = unsafe { call.args.u.SignalMonitoredFence };
        let v = s.MonitoredFenceValue;
        let expected = OwnedCommand::WriteData {
            dst: Target::Virtual(s.MonitoredFenceGpuVa),
            data: vec![v as u32, (v >> 32) as u32],
        };
        assert_eq!(cmds, [expected], "{what}");
    } else {
        assert!(cmds.is_empty(), "{what}: wrote {cmds:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// QueryAdapterInfo.

/// Types rgpu answers.
pub const ANSWERED_TYPES: &[sys::DXGK_QUERYADAPTERINFOTYPE] = &[
    sys::DXGKQAITYPE_DRIVERCAPS,
    sys::DXGKQAITYPE_GPUMMUCAPS,
    sys::DXGKQAITYPE_PAGETABLELEVELDESC,
    sys::DXGKQAITYPE_QUERYSEGMENT4,
    sys::DXGKQAITYPE_PHYSICALADAPTERCAPS,
    sys::DXGKQAITYPE_NUMPOWERCOMPONENTS,
    sys::DXGKQAITYPE_FRAMEBUFFERSAVESIZE,
    sys::DXGKQAITYPE_HARDWARERESERVEDRANGES,
    // The WDDM 3.0 DMA-remapping opt-in caps, answered before StartDevice.
    sys::DXGKQAITYPE_PHYSICAL_MEMORY_CAPS,
    sys::DXGKQAITYPE_IOMMU_CAPS,
];

fn qai_type(input: &QaiInput) -> sys::DXGK_QUERYADAPTERINFOTYPE {
    if input.ty < 0xC0 {
        sys::DXGK_QUERYADAPTERINFOTYPE(i32::from(input.ty % 40))
    } else {
        sys::DXGK_QUERYADAPTERINFOTYPE(input.ty_raw)
    }
}

/// Runs one QueryAdapterInfo input against this thread's fixture and checks the invariants.
pub fn run_qai(input: &QaiInput) -> sys::NTSTATUS {
    let mut status = 0;
    with_fixture(|fx| {
        status = run_qai_on(fx, input);
        false
    });
    status
}

/// [`run_qai`] on a given fixture.
pub fn run_qai_on(fx: &Fixture, input: &QaiInput) -> sys::NTSTATUS {
    let ty = qai_type(input);
    let what = format!("QueryAdapterInfo type {}", ty.0);
    let in_size = usize::from(input.in_size % 257);
    let out_size = usize::from(input.out_size % 2049);
    let mut inp = Guarded::new(in_size, 0);
    for (i, b) in inp.data_mut().iter_mut().enumerate() {
        *b = input.in_bytes[i % 8];
    }
    let mut out = Guarded::new(out_size, 0);
    for (i, b) in out.data_mut().iter_mut().enumerate() {
        *b = input.out_bytes[i % 8];
    }
    // QUERYSEGMENT4 is in/out: VidMm's descriptor array pointer must be valid.
    let nb = u32::from(input.nb_segment % 4);
    let stride = if input.stride & 0x8000 != 0 {
        usize::from(input.stride)
    } else {
        usize::from(input.stride % 600)
    };
    let with_array = input.null & 4 != 0;
    let mut descriptors = Guarded::new(if with_array { nb as usize * stride } else { 0 }, 0x5A);
    if out_size >= core::mem::size_of::<sys::DXGK_QUERYSEGMENTOUT4>()
        && ty == sys::DXGKQAITYPE_QUERYSEGMENT4
    {
        let q = sys::DXGK_QUERYSEGMENTOUT4 {
            NbSegment: nb,
            pSegmentDescriptor: if with_array {
                descriptors.ptr()
            } else {
                core::ptr::null_mut()
            },
            SegmentDescriptorStride: stride,
            ..Default::default()
        };
        // SAFETY: the output buffer holds at least a DXGK_QUERYSEGMENTOUT4; unaligned write of
        // plain data.
        unsafe {
            out.ptr()
                .cast::<sys::DXGK_QUERYSEGMENTOUT4>()
                .write_unaligned(q)
        };
    }
    if out_size >= core::mem::size_of::<sys::DXGK_HARDWARERESERVEDRANGES>()
        && ty == sys::DXGKQAITYPE_HARDWARERESERVEDRANGES
    {
        let r = sys::DXGK_HARDWARERESERVEDRANGES {
            NumRanges: 0,
            pPhysicalRanges: core::ptr::null_mut(),
        };
        // SAFETY: the output buffer holds at least a DXGK_HARDWARERESERVEDRANGES.
        unsafe {
            out.ptr()
                .cast::<sys::DXGK_HARDWARERESERVEDRANGES>()
                .write_unaligned(r)
        };
    }
    let out_before = out.data().to_vec();
    let in_before = inp.data().to_vec();
    let desc_before = descriptors.data().to_vec();
    let args = sys::DXGKARG_QUERYADAPTERINFO {
        Type: ty,
        pInputData: if input.null & 1 != 0 || in_size == 0 {
            core::ptr::null_mut()
        } else {
            inp.ptr().cast()
        },
        InputDataSize: in_size as u32,
        pOutputData: if input.null & 2 != 0 {
            core::ptr::null_mut()
        } else {
            out.ptr().cast()
        },
        OutputDataSize: out_size as u32,
        ..Default::default()
    };
    let status = fx.query(&args);
    out.assert_guard(&format!("{what}: output"));
    inp.assert_guard(&format!("{what}: input"));
    descriptors.assert_guard(&format!("{what}: segment descriptors"));
    fx.assert_no_findings(&what);
    assert_eq!(inp.data(), &in_before[..], "{what}: the input was modified");
    assert!(
        status == sys::STATUS_SUCCESS || status < 0,
        "{what}: returned {status:#010x}, neither success nor an error"
    );
    if !ANSWERED_TYPES.contains(&ty) {
        assert_eq!(
            status,
            sys::STATUS_NOT_SUPPORTED,
            "{what}: a type rgpu does not answer"
        );
    }
    if status != sys::STATUS_SUCCESS {
        assert_eq!(
            out.data(),
            &out_before[..],
            "{what}: output written on failure"
        );
        assert_eq!(
            descriptors.data(),
            &desc_before[..],
            "{what}: descriptors written on failure"
        );
    } else if ty == sys::DXGKQAITYPE_QUERYSEGMENT4 {
        // SAFETY: success means the output held a DXGK_QUERYSEGMENTOUT4.
        let q = unsafe {
            out.ptr()
                .cast::<sys::DXGK_QUERYSEGMENTOUT4>()
                .read_unaligned()
        };
        assert_eq!(q.NbSegment, 1, "{what}");
        assert_eq!(q.PagingBufferSegmentId, APERTURE_SEGMENT_ID, "{what}");
    } else if ty == sys::DXGKQAITYPE_PAGETABLELEVELDESC {
        // SAFETY: success means the output held a DXGK_PAGE_TABLE_LEVEL_DESC.
        let d = unsafe {
            out.ptr()
                .cast::<sys::DXGK_PAGE_TABLE_LEVEL_DESC>()
                .read_unaligned()
        };
        assert_eq!(d.PageTableSegmentId, SYSTEM_MEMORY_SEGMENT_ID, "{what}");
    }
    status
}

// ---------------------------------------------------------------------------------------------
// Seeds: hand-made inputs that start the fuzzer in every operation's valid region.

/// Hand-made BuildPagingBuffer inputs (written to `fuzz/seeds/build_paging_buffer/`).
pub fn paging_seeds() -> Vec<(&'static str, PagingInput)> {
    let full = |op: i32| PagingInput {
        op: op as u8,
        dma_class: 3,
        dma: 65536,
        ..Default::default()
    };
    let aperture_pte = (u64::from(APERTURE_SEGMENT_ID) << 5) | 1;
    vec![
        (
            "update_gpu_512",
            PagingInput {
                mode: 1,
                addr: [0x4000_0000, 0, 0],
                index: [0, 0, 512, 0],
                pte_flags: [1, 1 | 8],
                pte_page: [0x1000, 0x2000],
                ..full(11)
            },
        ),
        (
            "update_gpu_multipass_small_dma",
            PagingInput {
                mode: 1,
                dma_class: 1,
                dma: 40,
                addr: [0x4000_0000, 0, 0],
                index: [1, 3, 100, 0],
                pte_flags: [1, 1],
                ..full(11)
            },
        ),
        (
            "update_gpu_repeat_aperture",
            PagingInput {
                mode: 1,
                addr: [0x9000, 0, 0],
                index: [0, 10, 20, 0],
                flags: 1,
                pte_flags: [aperture_pte, aperture_pte],
                pte_page: [3, 3],
                ..full(11)
            },
        ),
        (
            "update_cpu_virtual",
            PagingInput {
                mode: 4,
                index: [1, 100, 4, 0],
                pte_flags: [1, 1],
                pte_page: [0x500, 0x500],
                ..full(11)
            },
        ),
        (
            "flush_tlb_range",
            PagingInput {
                addr: [0x1000, 0x9000, 0],
                ..full(12)
            },
        ),
        (
            "virtual_fill",
            PagingInput {
                addr: [0x10_0000, 0, 0],
                size: 0x3000,
                flags: 0xDEAD_BEEF,
                ..full(9)
            },
        ),
        (
            "virtual_transfer",
            PagingInput {
                addr: [0x1000, 0x9000, 0],
                size: 0x2000,
                ..full(8)
            },
        ),
        (
            "transfer_mdl_to_aperture",
            PagingInput {
                segment: [0, APERTURE_SEGMENT_ID],
                addr: [0, 0, 0],
                size: 4 * PAGE,
                mdl_bytes: [4 * 4096, 0],
                ..full(0)
            },
        ),
        (
            "transfer_aperture_to_mdl_small_dma",
            PagingInput {
                segment: [APERTURE_SEGMENT_ID, 0],
                dma_class: 1,
                dma: 30,
                size: 3 * PAGE,
                mdl_bytes: [0, 3 * 4096],
                ..full(0)
            },
        ),
        (
            "fill_aperture",
            PagingInput {
                segment: [0, APERTURE_SEGMENT_ID],
                addr: [PAGE, 0, 0],
                size: 5 * PAGE,
                flags: 0x1234_5678,
                ..full(1)
            },
        ),
        (
            "map_aperture",
            PagingInput {
                segment: [0, APERTURE_SEGMENT_ID],
                addr: [100, 0, 0],
                size: 3,
                mdl_bytes: [3 * 4096, 0],
                ..full(5)
            },
        ),
        (
            "map_aperture_malformed_mdl_short_pfn_array",
            PagingInput {
                segment: [0, APERTURE_SEGMENT_ID],
                addr: [100, 0, 0],
                size: 3,
                mdl_bytes: [3 * 4096, 0],
                mdl_damage: [(-8i16) as u16 as u32, 0],
                ..full(5)
            },
        ),
        (
            "transfer_malformed_mdl_byte_offset_past_page",
            PagingInput {
                segment: [APERTURE_SEGMENT_ID, 0],
                size: PAGE,
                mdl_offset: [0, 5000],
                mdl_bytes: [0, 4096],
                mdl_damage: [0, 1 << 16],
                ..full(0)
            },
        ),
        (
            "unmap_aperture",
            PagingInput {
                segment: [0, APERTURE_SEGMENT_ID],
                addr: [0, 0, 0x7000],
                size: 8,
                ..full(6)
            },
        ),
        (
            "copy_page_table_entries",
            PagingInput {
                addr: [0x20_0000, 0x30_0000, 0],
                index: [0, 0, 3, 0],
                range: [16, 0, 8, 512, 0, 0],
                ..full(14)
            },
        ),
        (
            "signal_monitored_fence",
            PagingInput {
                addr: [0x8000, 0, 0x1_0000_0002],
                ..full(16)
            },
        ),
        ("discard_content", full(2)),
        ("read_physical_refused", full(3)),
        (
            "unknown_operation",
            PagingInput {
                op: 0xFF,
                op_raw: 99,
                ..full(0)
            },
        ),
    ]
}

/// Hand-made QueryAdapterInfo inputs (written to `fuzz/seeds/query_adapter_info/`).
pub fn qai_seeds() -> Vec<(&'static str, QaiInput)> {
    let size = |n: usize| n as u16;
    vec![
        (
            "drivercaps_full",
            QaiInput {
                ty: 1,
                out_size: size(core::mem::size_of::<sys::DXGK_DRIVERCAPS>()),
                ..Default::default()
            },
        ),
        (
            "drivercaps_odd_size",
            QaiInput {
                ty: 1,
                out_size: size(core::mem::size_of::<sys::DXGK_DRIVERCAPS>() - 3),
                ..Default::default()
            },
        ),
        (
            "gpummucaps",
            QaiInput {
                ty: 13,
                in_size: 4,
                out_size: size(core::mem::size_of::<sys::DXGK_GPUMMUCAPS>()),
                ..Default::default()
            },
        ),
        (
            "pagetableleveldesc_level3",
            QaiInput {
                ty: 14,
                in_size: 4,
                in_bytes: [3, 0, 0, 0, 3, 0, 0, 0],
                out_size: size(core::mem::size_of::<sys::DXGK_PAGE_TABLE_LEVEL_DESC>()),
                ..Default::default()
            },
        ),
        (
            "querysegment4_fill",
            QaiInput {
                ty: 11,
                out_size: size(core::mem::size_of::<sys::DXGK_QUERYSEGMENTOUT4>()),
                null: 4,
                nb_segment: 1,
                stride: size(core::mem::size_of::<sys::DXGK_SEGMENTDESCRIPTOR4>()),
                ..Default::default()
            },
        ),
        (
            "physicaladaptercaps",
            QaiInput {
                ty: 15,
                out_size: 512,
                ..Default::default()
            },
        ),
        (
            "hardwarereservedranges",
            QaiInput {
                ty: 22,
                out_size: size(core::mem::size_of::<sys::DXGK_HARDWARERESERVEDRANGES>()),
                ..Default::default()
            },
        ),
        (
            "unknown_type",
            QaiInput {
                ty: 0xFF,
                ty_raw: -5,
                out_size: 64,
                ..Default::default()
            },
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// The decode alone: raw argument blocks and MDL headers straight into dxgk's views.

record! {
    /// One raw `DXGKARG_BUILDPAGINGBUFFER` for `dxgk::paging::BuildPagingBuffer::from_raw`,
    /// with no driver behind it. Every byte of the block is the fuzzer's except the pointers
    /// the decode may follow, which the harness points at memory sized as the DDI contract says
    /// (or NULL), so that what is fuzzed is exactly what the decode must validate.
    pub struct DecodeInput {
        /// The argument block's 320 bytes, as little-endian words.
        pub args: [[u64; 8]; 5],
        /// The two MDL headers' 48 bytes (`Size`, `StartVa`, `ByteCount`, `ByteOffset`...).
        pub mdl: [[u64; 6]; 2],
        /// Bit 0: NULL DMA buffer; bit 1: operation `Operation % 20` (every code and two
        /// past them) instead of the raw one; bit 2: NULL entry / range / data / table / MDL
        /// pointers; bit 3: ByteCount of the MDLs `% 65 pages`.
        pub control: u32,
        /// The decode's `max_table_entries`: `% 1025`.
        pub max_table_entries: u16,
    }
}

/// What the decode harness checked, for tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeOutcome {
    /// Decoded to this operation.
    Decoded(dxgk::paging::Operation),
    /// Refused with this status.
    Refused(sys::NTSTATUS),
}

/// An MDL built from fuzzer header bytes: the allocation holds `Size` bytes, or the whole
/// spanned PFN array when `Size` cannot record it (the decode's safety contract).
fn raw_mdl(header: &[u64; 6], small: bool) -> Vec<u64> {
    let mut bytes = [0u8; 48];
    for (b, w) in bytes.chunks_exact_mut(8).zip(header) {
        b.copy_from_slice(&w.to_le_bytes());
    }
    // SAFETY: MDL is plain data (integers and pointers): any 48 bytes are a value.
    let mut h: sys::MDL = unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast()) };
    if small {
        h.ByteCount %= 65 * 4096;
    }
    let header_bytes = core::mem::size_of::<sys::MDL>();
    let pages = (u64::from(h.ByteOffset) + u64::from(h.ByteCount)).div_ceil(4096) as usize;
    let needed = header_bytes + 8 * pages;
    let claimed = (h.Size as u16 as usize).max(header_bytes);
    let bytes = if needed > 0xFFFF && h.Size as u16 == needed as u16 {
        needed
    } else {
        claimed
    };
    let mut words = vec![0u64; bytes.div_ceil(8)];
    for (i, w) in words[header_bytes / 8..].iter_mut().enumerate() {
        *w = 0x7_0000 + i as u64;
    }
    // SAFETY: `words` holds at least an 8-aligned header.
    unsafe { words.as_mut_ptr().cast::<sys::MDL>().write(h) };
    words
}

/// [`reference_mdl_span`] of a raw MDL built by [`raw_mdl`].
fn raw_mdl_well_formed(words: &[u64]) -> Option<usize> {
    // SAFETY: `words` starts with the header `raw_mdl` wrote.
    let h = unsafe { words.as_ptr().cast::<sys::MDL>().read() };
    reference_mdl_span(&h)
}

/// Checks an MDL view against the MDL it was made from.
fn check_mdl_view(what: &str, view: &dxgk::mdl::Mdl<'_>, words: &[u64]) {
    let pages = raw_mdl_well_formed(words).unwrap_or_else(|| {
        panic!("{what}: the view accepted an MDL the reference refuses: {view:?}")
    });
    assert_eq!(view.page_count(), pages, "{what}: page count");
    let pfns = view.pfns();
    assert_eq!(pfns.len(), pages, "{what}: iterator length");
    // The first and last PFNs are the ones the harness wrote (never past the allocation).
    if pages > 0 {
        assert_eq!(view.pfn(0), Some(0x7_0000), "{what}: first PFN");
        assert_eq!(
            view.pfn(pages - 1),
            Some(0x7_0000 + pages as u64 - 1),
            "{what}: last PFN"
        );
    }
    assert_eq!(view.pfn(pages), None, "{what}: past the span");
}

/// Runs one decode input and checks every property of the views (panics on a violation).
pub fn run_decode(input: &DecodeInput) -> DecodeOutcome {
    use dxgk::paging::{BuildPagingBuffer, DecodeError, Op, TransferSide, UpdateMode};

    let c = input.control;
    let null_ptr = c & 4 != 0;
    let small = c & 8 != 0;
    let max_entries = u32::from(input.max_table_entries % 1025);
    let mut bytes = [0u8; 320];
    for (b, w) in bytes.chunks_exact_mut(8).zip(input.args.iter().flatten()) {
        b.copy_from_slice(&w.to_le_bytes());
    }
    const _: () = assert!(core::mem::size_of::<sys::DXGKARG_BUILDPAGINGBUFFER>() == 320);
    // SAFETY: the argument block is plain data (integers, pointers, unions of them): any 320
    // bytes are a value.
    let mut a: sys::DXGKARG_BUILDPAGINGBUFFER =
        unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast()) };
    if c & 2 != 0 {
        a.Operation = sys::DXGK_BUILDPAGINGBUFFER_OPERATION(a.Operation.0.rem_euclid(20));
    }
    let op = a.Operation;
    let what = format!("decode op {}", op.0);
    // The pointers the decode may follow, as the contract says (or NULL).
    a.DmaSize %= 65537;
    let mut dma = Guarded::new(a.DmaSize as usize, DMA_FILL);
    a.pDmaBuffer = if c & 1 != 0 {
        core::ptr::null_mut()
    } else {
        dma.ptr().cast()
    };
    a.pDmaBufferPrivateData = core::ptr::null_mut();
    let mut mdls = [raw_mdl(&input.mdl[0], small), raw_mdl(&input.mdl[1], small)];
    let mdl_ptr = |m: &mut Vec<u64>| {
        if null_ptr {
            core::ptr::null_mut()
        } else {
            m.as_mut_ptr().cast::<sys::MDL>()
        }
    };
    let mut entries: Vec<sys::DXGK_PTE> = Vec::new();
    let mut ranges: Vec<sys::DXGK_BUILDPAGINGBUFFER_COPY_RANGE> = Vec::new();
    let mut adl_pages: Vec<sys::DXGK_PAGE_NUMBER> = Vec::new();
    let mut private = Guarded::new(0, 0);
    let mut table = Guarded::new(max_entries as usize * 8, TABLE_FILL);
    // Each arm rewrites pointer fields of the member the code names: writes only.
    if op == sys::DXGK_OPERATION_UPDATE_PAGE_TABLE {
        // SAFETY: plain data, read to size the arrays.
        let u = unsafe { a.u.UpdatePageTable };
        let provided = if u.Flags.Repeat() != 0 {
            u.NumPageTableEntries.min(1)
        } else {
            u.NumPageTableEntries
        };
        // Entries past the largest table must be refused before they are read.
        entries.resize(provided.min(max_entries) as usize, sys::DXGK_PTE::default());
        a.u.UpdatePageTable.pPageTableEntries = if null_ptr {
            core::ptr::null_mut()
        } else {
            entries.as_mut_ptr()
        };
        a.u.UpdatePageTable.pPageTableEntries64KB = core::ptr::null_mut();
        if u.UpdateMode == sys::DXGK_PAGETABLEUPDATE_CPU_VIRTUAL {
            a.u.UpdatePageTable.PageTableAddress.u.CpuVirtual = if null_ptr {
                core::ptr::null_mut()
            } else {
                table.ptr().cast()
            };
        }
    } else if op == sys::DXGK_OPERATION_MAP_APERTURE_SEGMENT {
        a.u.MapApertureSegment.pMdl = mdl_ptr(&mut mdls[0]);
    } else if op == sys::DXGK_OPERATION_TRANSFER {
        // SAFETY: plain data.
        let t = unsafe { a.u.Transfer };
        if t.Source.SegmentId == 0 {
            a.u.Transfer.Source.u.pMdl = mdl_ptr(&mut mdls[0]);
        }
        if t.Destination.SegmentId == 0 {
            a.u.Transfer.Destination.u.pMdl = mdl_ptr(&mut mdls[1]);
        }
    } else if op == sys::DXGK_OPERATION_MAP_APERTURE_SEGMENT2
        // SAFETY: plain data.
        && unsafe { a.u.MapApertureSegment2.Adl.Flags }.Contiguous() == 0
    {
        // A page list: PageCount entries (bounded by the harness) at Pages, or NULL.
        // SAFETY: plain data.
        let n = unsafe { a.u.MapApertureSegment2.Adl.PageCount }.min(MAX_ARRAY as u32);
        adl_pages.resize(n as usize, 0x1234);
        a.u.MapApertureSegment2.Adl.PageCount = n;
        a.u.MapApertureSegment2.Adl.u.Pages = if null_ptr {
            core::ptr::null()
        } else {
            adl_pages.as_ptr()
        };
    } else if op == sys::DXGK_OPERATION_COPY_PAGE_TABLE_ENTRIES {
        // Nothing bounds NumRanges for the decode to check: it stays what the harness holds.
        // SAFETY: plain data.
        let n = unsafe { a.u.CopyPageTableEntries.NumRanges }.min(MAX_ARRAY as u32);
        ranges.resize(n as usize, Default::default());
        a.u.CopyPageTableEntries.NumRanges = n;
        a.u.CopyPageTableEntries.pRanges = if null_ptr {
            core::ptr::null_mut()
        } else {
            ranges.as_mut_ptr()
        };
    } else if op == sys::DXGK_OPERATION_UPDATE_CONTEXT_ALLOCATION {
        // SAFETY: plain data.
        let n = unsafe { a.u.UpdateContextAllocation.DriverPrivateDataSize } % 4097;
        private = Guarded::new(n as usize, 0x11);
        a.u.UpdateContextAllocation.DriverPrivateDataSize = n;
        a.u.UpdateContextAllocation.pDriverPrivateData = if null_ptr {
            core::ptr::null_mut()
        } else {
            private.ptr().cast()
        };
    }
    let before = a;
    // SAFETY: every pointer the decode may follow was set above as the contract says.
    let decoded = unsafe { BuildPagingBuffer::from_raw(&mut a, max_entries) };
    let req = match decoded {
        Err(e) => {
            if let DecodeError::UnknownOperation(code) = e {
                assert!(
                    !(0..18).contains(&code),
                    "{what}: a defined code refused as unknown"
                );
            }
            let status = dxgk::NtError::from(e).raw();
            assert_eq!(
                status == sys::STATUS_NOT_SUPPORTED,
                matches!(e, DecodeError::UnknownOperation(_)),
                "{what}: {e:?}"
            );
            assert_eq!(
                a.DmaSize, before.DmaSize,
                "{what}: refused, yet DmaSize changed"
            );
            return DecodeOutcome::Refused(status);
        }
        Ok(req) => req,
    };
    let operation = req.op.operation();
    assert_eq!(operation.raw(), op, "{what}: decoded as {operation:?}");
    let cpu =
        matches!(&req.op, Op::UpdatePageTable(u) if matches!(u.mode, UpdateMode::CpuVirtual(_)));
    assert_eq!(
        req.dma.is_none(),
        cpu,
        "{what}: a DMA buffer exactly when not CPU_VIRTUAL"
    );
    match req.op {
        Op::UpdatePageTable(u) => {
            let end = u64::from(u.start_index) + u64::from(u.count);
            assert!(
                end <= u64::from(max_entries),
                "{what}: entries past the largest table"
            );
            let provided = if u.repeat { u.count.min(1) } else { u.count };
            assert_eq!(
                u.entries.len(),
                provided as usize,
                "{what}: entry array length"
            );
            assert!(
                u.entries.len() <= entries.len(),
                "{what}: past the harness's entries"
            );
            if let UpdateMode::CpuVirtual(mut t) = u.mode {
                assert_eq!(
                    t.range(),
                    u.start_index..end as u32,
                    "{what}: CPU table window"
                );
                for i in t.range() {
                    t.write(i, 0x1111_2222_3333_4444).unwrap();
                }
                assert!(t.write(end as u32, 0).is_err(), "{what}: past the window");
                table.assert_guard(&format!("{what}: CPU table"));
                let data = table.data();
                let window = u.start_index as usize * 8..end as usize * 8;
                assert!(
                    data.iter()
                        .enumerate()
                        .all(|(i, &b)| window.contains(&i) || b == TABLE_FILL),
                    "{what}: CPU table written outside its window"
                );
            }
        }
        Op::MapApertureSegment(m) => {
            check_mdl_view(&what, &m.mdl, &mdls[0]);
            let pfns = m
                .mdl_pages()
                .expect("the decode checked the MDL holds the pages");
            assert_eq!(pfns.len(), m.pages, "{what}: pages to map");
            assert!(m.offset_in_pages.checked_add(m.pages).is_some());
        }
        Op::Transfer(t) => {
            for (side, words) in [(t.source, &mdls[0]), (t.destination, &mdls[1])] {
                if let TransferSide::Mdl { mdl } = side {
                    check_mdl_view(&what, &mdl, words);
                }
            }
        }
        Op::CopyPageTableEntries(c) => {
            // SAFETY: plain data.
            let n = unsafe { before.u.CopyPageTableEntries.NumRanges };
            assert_eq!(c.ranges.len(), n as usize, "{what}: ranges");
        }
        Op::UpdateContextAllocation(u) => {
            assert_eq!(
                u.private_data.len(),
                private.data().len(),
                "{what}: private data"
            );
        }
        Op::FlushTlb(f) => assert!(f.end >= f.start, "{what}: range"),
        _ => {}
    }
    if let Some(mut buf) = req.dma {
        assert_eq!(buf.len(), before.DmaSize as usize, "{what}: DMA size");
        assert_eq!(
            buf.resume_offset(),
            before.MultipassOffset,
            "{what}: resume offset"
        );
        buf.as_mut_slice().fill(0x5A);
        let written = buf.len() / 2;
        let next = before.MultipassOffset.wrapping_add(1);
        let r = buf.finish(written, dxgk::paging::Progress::Full { next });
        assert_eq!(r, Err(dxgk::NtError::GRAPHICS_INSUFFICIENT_DMA_BUFFER));
        assert_eq!(a.DmaSize as usize, before.DmaSize as usize - written);
        assert_eq!(a.pDmaBuffer as usize, before.pDmaBuffer as usize + written);
        assert_eq!(a.MultipassOffset, next);
        dma.assert_guard(&format!("{what}: DMA buffer"));
    }
    DecodeOutcome::Decoded(operation)
}

/// Hand-made decode inputs (written to `fuzz/seeds/decode_paging_buffer/`).
pub fn decode_seeds() -> Vec<(&'static str, DecodeInput)> {
    /// An input whose argument block is `a` (pointers are the harness's anyway).
    fn input(a: &sys::DXGKARG_BUILDPAGINGBUFFER, mdl: [[u64; 6]; 2], control: u32) -> DecodeInput {
        let mut bytes = [0u8; 320];
        // SAFETY: 320 bytes of plain data.
        unsafe { core::ptr::write_unaligned(bytes.as_mut_ptr().cast(), *a) };
        let mut args = [[0u64; 8]; 5];
        for (w, b) in args.iter_mut().flatten().zip(bytes.chunks_exact(8)) {
            *w = u64::from_le_bytes(b.try_into().unwrap());
        }
        DecodeInput {
            args,
            mdl,
            control,
            max_table_entries: 512,
        }
    }
    /// An MDL header of `pages` pages (Size + `size_delta`, ByteOffset `offset`).
    fn header(pages: u64, offset: u32, size_delta: i64) -> [u64; 6] {
        let size = (48 + 8 * pages as i64 + size_delta) as u64 & 0xFFFF;
        let count = pages * 4096 - u64::from(offset);
        [0, size, 0, 0, 0, count | u64::from(offset) << 32]
    }
    let base = |op: sys::DXGK_BUILDPAGINGBUFFER_OPERATION| sys::DXGKARG_BUILDPAGINGBUFFER {
        DmaSize: 4096,
        Operation: op,
        ..Default::default()
    };
    let good = [header(4, 0, 0), header(2, 0x800, 0)];
    let mut upt = base(sys::DXGK_OPERATION_UPDATE_PAGE_TABLE);
    upt.u.UpdatePageTable.StartIndex = 500;
    upt.u.UpdatePageTable.NumPageTableEntries = 12;
    upt.u.UpdatePageTable.UpdateMode = sys::DXGK_PAGETABLEUPDATE_GPU_VIRTUAL;
    let mut upt_cpu = upt;
    upt_cpu.u.UpdatePageTable.UpdateMode = sys::DXGK_PAGETABLEUPDATE_CPU_VIRTUAL;
    let mut upt_past = upt;
    upt_past.u.UpdatePageTable.NumPageTableEntries = 13;
    let mut map = base(sys::DXGK_OPERATION_MAP_APERTURE_SEGMENT);
    map.u.MapApertureSegment.NumberOfPages = 3;
    map.u.MapApertureSegment.MdlOffset = 1;
    let mut map_overflow = map;
    map_overflow.u.MapApertureSegment.OffsetInPages = usize::MAX;
    let mut transfer = base(sys::DXGK_OPERATION_TRANSFER);
    transfer.u.Transfer.TransferSize = 8192;
    transfer.u.Transfer.Destination.SegmentId = 1;
    let mut copy = base(sys::DXGK_OPERATION_COPY_PAGE_TABLE_ENTRIES);
    copy.u.CopyPageTableEntries.NumRanges = 3;
    let mut flush = base(sys::DXGK_OPERATION_FLUSH_TLB);
    flush.u.FlushTlb.EndVirtualAddress = 0x1000;
    vec![
        ("update_gpu", input(&upt, good, 0)),
        ("update_cpu_no_dma", input(&upt_cpu, good, 1)),
        ("update_past_the_table", input(&upt_past, good, 0)),
        ("map_aperture", input(&map, good, 0)),
        (
            "map_aperture_short_pfn_array",
            input(&map, [header(4, 0, -8), good[1]], 0),
        ),
        (
            "map_aperture_byte_offset_past_page",
            input(&map, [header(4, 4096, 0), good[1]], 0),
        ),
        (
            "map_aperture_offset_overflow",
            input(&map_overflow, good, 0),
        ),
        ("transfer_mdl_to_segment", input(&transfer, good, 0)),
        ("copy_page_table_entries", input(&copy, good, 0)),
        ("flush_tlb", input(&flush, good, 0)),
        ("null_dma_buffer", input(&flush, good, 1)),
        (
            "unknown_operation_18",
            input(&base(sys::DXGK_BUILDPAGINGBUFFER_OPERATION(18)), good, 0),
        ),
        (
            "unknown_operation_ffff",
            input(
                &base(sys::DXGK_BUILDPAGINGBUFFER_OPERATION(0xFFFF)),
                good,
                0,
            ),
        ),
    ]
}
