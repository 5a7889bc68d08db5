//! Command-buffer format: encoder and decoder.
//!
//! A command buffer is a sequence of little-endian dwords. Every command starts with a header
//! dword `[7:0] opcode, [15:8] flags, [31:16] length in dwords (header included)`, so a decoder
//! can validate and skip it. Operands that name memory are 64-bit addresses whose space is
//! chosen by a flag: a **logical** (IOMMU) address, or a **GPU virtual** address in the ASID of
//! the ring entry that runs the buffer. See `docs/rgpu-device.md` §4.
//!
//! | op | name | len | flags | operands (dwords after the header) |
//! |---|---|---|---|---|
//! | 0x00 | NOP | ≥1 | 0 | ignored padding |
//! | 0x01 | FILL | 6 | `[0]` DST_VIRT | dst(2), size bytes(2), pattern(1) |
//! | 0x02 | COPY | 7 | `[0]` DST_VIRT `[1]` SRC_VIRT | dst(2), src(2), size bytes(2) |
//! | 0x03 | WRITE_PTES | 3+2n | `[0]` DST_VIRT | dst(2), n × entry(2) |
//! | 0x04 | WRITE_DATA | 3+n | `[0]` DST_VIRT | dst(2), n × data(1) |
//! | 0x05 | FLUSH_TLB | 6 | `[1:0]` scope | asid(1), va(2), size bytes(2) |
//! | 0x06 | SET_ROOT | 5 | 0 | asid(1), root(2), root entries(1) |
//! | 0x07 | FENCE | 3 | `[0]` IRQ | value(2) |
//!
//! The encoder never panics and never writes a partial command: it returns
//! [`CmdError::BufferTooSmall`] and leaves the buffer untouched when a command does not fit.

use crate::pte::{ENTRIES_PER_TABLE, TABLE_SIZE};
use crate::regs::NUM_ASIDS;

/// Opcode NOP.
pub const OP_NOP: u8 = 0x00;
/// Opcode FILL.
pub const OP_FILL: u8 = 0x01;
/// Opcode COPY.
pub const OP_COPY: u8 = 0x02;
/// Opcode WRITE_PTES.
pub const OP_WRITE_PTES: u8 = 0x03;
/// Opcode WRITE_DATA.
pub const OP_WRITE_DATA: u8 = 0x04;
/// Opcode FLUSH_TLB.
pub const OP_FLUSH_TLB: u8 = 0x05;
/// Opcode SET_ROOT.
pub const OP_SET_ROOT: u8 = 0x06;
/// Opcode FENCE.
pub const OP_FENCE: u8 = 0x07;

/// FILL/COPY/WRITE_*: the destination is a GPU VA (else logical).
pub const FLAG_DST_VIRTUAL: u8 = 1 << 0;
/// COPY: the source is a GPU VA (else logical).
pub const FLAG_SRC_VIRTUAL: u8 = 1 << 1;
/// FENCE: raise `INT_FENCE` after the write-back.
pub const FLAG_FENCE_IRQ: u8 = 1 << 0;
/// FLUSH_TLB scope: every ASID.
pub const FLUSH_ALL: u8 = 0;
/// FLUSH_TLB scope: one ASID.
pub const FLUSH_ASID: u8 = 1;
/// FLUSH_TLB scope: a VA range in one ASID.
pub const FLUSH_RANGE: u8 = 2;

/// Header: shift of the flags byte.
pub const HDR_FLAGS_SHIFT: u32 = 8;
/// Header: shift of the length field.
pub const HDR_LEN_SHIFT: u32 = 16;
/// Largest command the device fetches, in dwords (8 KiB); only NOP may be longer (up to
/// 65535 dwords, its body is never fetched).
pub const MAX_CMD_DWORDS: usize = 2048;

/// Length of FILL in dwords.
pub const FILL_DWORDS: usize = 6;
/// Length of COPY in dwords.
pub const COPY_DWORDS: usize = 7;
/// Length of FLUSH_TLB in dwords.
pub const FLUSH_TLB_DWORDS: usize = 6;
/// Length of SET_ROOT in dwords.
pub const SET_ROOT_DWORDS: usize = 5;
/// Length of FENCE in dwords.
pub const FENCE_DWORDS: usize = 3;
/// Most entries one WRITE_PTES can carry.
pub const MAX_PTES_PER_CMD: usize = (MAX_CMD_DWORDS - 3) / 2;
/// Most dwords one WRITE_DATA can carry.
pub const MAX_DATA_PER_CMD: usize = MAX_CMD_DWORDS - 3;

/// Bytes taken by a WRITE_PTES of `n` entries.
#[must_use]
pub const fn write_ptes_bytes(n: usize) -> usize {
    (3 + 2 * n) * 4
}

/// How many PTEs a single WRITE_PTES can carry in `bytes` of buffer space (0 if none fit).
#[must_use]
pub const fn ptes_fitting(bytes: usize) -> usize {
    if bytes < write_ptes_bytes(1) {
        return 0;
    }
    let n = (bytes / 4 - 3) / 2;
    if n > MAX_PTES_PER_CMD {
        MAX_PTES_PER_CMD
    } else {
        n
    }
}

/// Where an address operand points.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// A logical (IOMMU) address; privileged buffers only.
    Logical(u64),
    /// A GPU virtual address in the running entry's ASID.
    Virtual(u64),
}

impl Target {
    /// The raw address.
    #[must_use]
    pub const fn addr(self) -> u64 {
        match self {
            Target::Logical(a) | Target::Virtual(a) => a,
        }
    }
    /// Is this a GPU virtual address?
    #[must_use]
    pub const fn is_virtual(self) -> bool {
        matches!(self, Target::Virtual(_))
    }
    const fn from_flag(virt: bool, a: u64) -> Target {
        if virt {
            Target::Virtual(a)
        } else {
            Target::Logical(a)
        }
    }
}

/// Scope of a FLUSH_TLB.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FlushScope {
    /// Every ASID.
    All,
    /// Every translation of one ASID.
    Asid(u8),
    /// Translations of `asid` that overlap `[va, va + size)`.
    Range {
        /// Address space.
        asid: u8,
        /// First byte.
        va: u64,
        /// Length in bytes.
        size: u64,
    },
}

/// A view of little-endian 64-bit words in a byte slice (length a multiple of 8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Qwords<'a>(&'a [u8]);

impl<'a> Qwords<'a> {
    /// Wraps `bytes`; `None` unless the length is a multiple of 8.
    #[must_use]
    pub const fn new(bytes: &'a [u8]) -> Option<Qwords<'a>> {
        if bytes.len().is_multiple_of(8) {
            Some(Qwords(bytes))
        } else {
            None
        }
    }
    /// The raw bytes.
    #[must_use]
    pub const fn bytes(&self) -> &'a [u8] {
        self.0
    }
    /// Number of words.
    #[must_use]
    pub const fn len(&self) -> usize {
        self.0.len() / 8
    }
    /// No words?
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Word `i`, if in range.
    #[must_use]
    pub fn get(&self, i: usize) -> Option<u64> {
        let c = self
            .0
            .get(i.checked_mul(8)?..i.checked_mul(8)?.checked_add(8)?)?;
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        Some(u64::from_le_bytes(w))
    }
    /// The words in order.
    pub fn iter(&self) -> impl Iterator<Item = u64> + 'a {
        self.0.chunks_exact(8).map(|c| {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            u64::from_le_bytes(w)
        })
    }
}

/// A view of little-endian 32-bit words in a byte slice (length a multiple of 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dwords<'a>(&'a [u8]);

impl<'a> Dwords<'a> {
    /// Wraps `bytes`; `None` unless the length is a multiple of 4.
    #[must_use]
    pub const fn new(bytes: &'a [u8]) -> Option<Dwords<'a>> {
        if bytes.len().is_multiple_of(4) {
            Some(Dwords(bytes))
        } else {
            None
        }
    }
    /// The raw bytes.
    #[must_use]
    pub const fn bytes(&self) -> &'a [u8] {
        self.0
    }
    /// Number of words.
    #[must_use]
    pub const fn len(&self) -> usize {
        self.0.len() / 4
    }
    /// No words?
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// The words in order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + 'a {
        self.0
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
    }
}

/// A decoded (or to-be-encoded) command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// Do nothing; `dwords` is the total length including the header (padding).
    Nop {
        /// Total length in dwords (≥ 1).
        dwords: u16,
    },
    /// Write `pattern` repeatedly over `size` bytes at `dst` (4-byte aligned, size % 4 == 0).
    Fill {
        /// Destination.
        dst: Target,
        /// Bytes.
        size: u64,
        /// The 32-bit pattern, stored little-endian.
        pattern: u32,
    },
    /// Copy `size` bytes from `src` to `dst` (ranges must not overlap).
    Copy {
        /// Destination.
        dst: Target,
        /// Source.
        src: Target,
        /// Bytes.
        size: u64,
    },
    /// Write 64-bit entries at `dst` (8-byte aligned): how paging buffers update page tables.
    WritePtes {
        /// Address of the first entry to write.
        dst: Target,
        /// The entries (1..=[`MAX_PTES_PER_CMD`]).
        entries: Qwords<'a>,
    },
    /// Write 32-bit words at `dst` (4-byte aligned), e.g. a monitored-fence value.
    WriteData {
        /// Address of the first word.
        dst: Target,
        /// The words (1..=[`MAX_DATA_PER_CMD`]).
        data: Dwords<'a>,
    },
    /// Invalidate TLB entries.
    FlushTlb(FlushScope),
    /// Program an ASID's root table (also flushes that ASID's TLB entries).
    SetRoot {
        /// Address space (0..=15).
        asid: u8,
        /// Logical address of the 4 KiB root table.
        root: u64,
        /// Valid root entries (0..=512; 0 disables the ASID).
        entries: u32,
    },
    /// Signal `value` to the fence write-back address and `FENCE_VALUE`.
    Fence {
        /// The value.
        value: u64,
        /// Raise `INT_FENCE`.
        irq: bool,
    },
}

/// Encoding/decoding error. Every variant is also a device `CMD_ERROR` cause.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmdError {
    /// Encoder: not enough room; decoder: the buffer ends inside the command.
    BufferTooSmall {
        /// Bytes the command needs.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// Unknown opcode.
    BadOpcode(u8),
    /// The length field does not fit the opcode (or exceeds [`MAX_CMD_DWORDS`]).
    BadLength {
        /// Opcode.
        opcode: u8,
        /// Length field in dwords.
        dwords: usize,
    },
    /// Undefined flag bits are set.
    BadFlags {
        /// Opcode.
        opcode: u8,
        /// The flags byte.
        flags: u8,
    },
    /// ASID ≥ 16.
    BadAsid(u32),
    /// An address or size violates the command's alignment rule.
    Misaligned,
    /// SET_ROOT entries > 512.
    BadRootEntries(u32),
    /// A payload that is empty or does not fit one command.
    BadPayload,
    /// An operand that the command's flags make unused is not zero.
    ReservedNonZero,
}

impl core::fmt::Display for CmdError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            CmdError::BufferTooSmall { needed, available } => {
                write!(f, "command needs {needed} bytes, {available} available")
            }
            CmdError::BadOpcode(op) => write!(f, "unknown opcode {op:#04x}"),
            CmdError::BadLength { opcode, dwords } => {
                write!(f, "bad length {dwords} dwords for opcode {opcode:#04x}")
            }
            CmdError::BadFlags { opcode, flags } => {
                write!(f, "undefined flags {flags:#04x} for opcode {opcode:#04x}")
            }
            CmdError::BadAsid(a) => write!(f, "ASID {a} out of range"),
            CmdError::Misaligned => f.write_str("misaligned address or size"),
            CmdError::BadRootEntries(n) => write!(f, "root entry count {n} > 512"),
            CmdError::BadPayload => f.write_str("payload empty or too large"),
            CmdError::ReservedNonZero => f.write_str("unused operand is not zero"),
        }
    }
}

/// A decoded header dword.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Opcode.
    pub opcode: u8,
    /// Flags byte.
    pub flags: u8,
    /// Length in dwords, header included.
    pub dwords: u16,
}

impl Header {
    /// Splits a header dword.
    #[must_use]
    pub const fn from_raw(w: u32) -> Header {
        Header {
            opcode: w as u8,
            flags: (w >> HDR_FLAGS_SHIFT) as u8,
            dwords: (w >> HDR_LEN_SHIFT) as u16,
        }
    }
    /// Builds a header dword.
    #[must_use]
    pub const fn raw(self) -> u32 {
        self.opcode as u32
            | ((self.flags as u32) << HDR_FLAGS_SHIFT)
            | ((self.dwords as u32) << HDR_LEN_SHIFT)
    }
}

fn check_asid(asid: u32) -> Result<(), CmdError> {
    if (asid as usize) < NUM_ASIDS {
        Ok(())
    } else {
        Err(CmdError::BadAsid(asid))
    }
}

impl Command<'_> {
    /// Opcode of this command.
    #[must_use]
    pub const fn opcode(&self) -> u8 {
        match self {
            Command::Nop { .. } => OP_NOP,
            Command::Fill { .. } => OP_FILL,
            Command::Copy { .. } => OP_COPY,
            Command::WritePtes { .. } => OP_WRITE_PTES,
            Command::WriteData { .. } => OP_WRITE_DATA,
            Command::FlushTlb(_) => OP_FLUSH_TLB,
            Command::SetRoot { .. } => OP_SET_ROOT,
            Command::Fence { .. } => OP_FENCE,
        }
    }

    /// Encoded length in dwords.
    #[must_use]
    pub const fn dwords(&self) -> usize {
        match self {
            Command::Nop { dwords } => *dwords as usize,
            Command::Fill { .. } => FILL_DWORDS,
            Command::Copy { .. } => COPY_DWORDS,
            Command::WritePtes { entries, .. } => 3 + 2 * entries.len(),
            Command::WriteData { data, .. } => 3 + data.len(),
            Command::FlushTlb(_) => FLUSH_TLB_DWORDS,
            Command::SetRoot { .. } => SET_ROOT_DWORDS,
            Command::Fence { .. } => FENCE_DWORDS,
        }
    }

    /// Encoded length in bytes.
    #[must_use]
    pub const fn bytes(&self) -> usize {
        self.dwords() * 4
    }

    /// Does the command require a privileged ring entry?
    #[must_use]
    pub const fn is_privileged(&self) -> bool {
        match self {
            Command::Nop { .. } => false,
            Command::Fill { dst, .. } | Command::WriteData { dst, .. } => !dst.is_virtual(),
            Command::Copy { dst, src, .. } => !dst.is_virtual() || !src.is_virtual(),
            Command::WritePtes { .. }
            | Command::FlushTlb(_)
            | Command::SetRoot { .. }
            | Command::Fence { .. } => true,
        }
    }

    /// Checks the static rules (alignment, ranges, payload sizes) shared by encoder and decoder.
    pub fn validate(&self) -> Result<(), CmdError> {
        match *self {
            Command::Nop { dwords } => {
                if dwords == 0 {
                    return Err(CmdError::BadLength {
                        opcode: OP_NOP,
                        dwords: 0,
                    });
                }
            }
            Command::Fill { dst, size, .. } => {
                if dst.addr() % 4 != 0 || size % 4 != 0 {
                    return Err(CmdError::Misaligned);
                }
            }
            Command::Copy { .. } | Command::Fence { .. } => {}
            Command::WritePtes { dst, entries } => {
                if dst.addr() % 8 != 0 {
                    return Err(CmdError::Misaligned);
                }
                if entries.is_empty() || entries.len() > MAX_PTES_PER_CMD {
                    return Err(CmdError::BadPayload);
                }
            }
            Command::WriteData { dst, data } => {
                if dst.addr() % 4 != 0 {
                    return Err(CmdError::Misaligned);
                }
                if data.is_empty() || data.len() > MAX_DATA_PER_CMD {
                    return Err(CmdError::BadPayload);
                }
            }
            Command::FlushTlb(scope) => match scope {
                FlushScope::All => {}
                FlushScope::Asid(a) | FlushScope::Range { asid: a, .. } => check_asid(a as u32)?,
            },
            Command::SetRoot {
                asid,
                root,
                entries,
            } => {
                check_asid(asid as u32)?;
                if root % TABLE_SIZE as u64 != 0 {
                    return Err(CmdError::Misaligned);
                }
                if entries as usize > ENTRIES_PER_TABLE {
                    return Err(CmdError::BadRootEntries(entries));
                }
            }
        }
        Ok(())
    }

    fn flags(&self) -> u8 {
        let dv = |t: Target| if t.is_virtual() { FLAG_DST_VIRTUAL } else { 0 };
        match *self {
            Command::Nop { .. } | Command::SetRoot { .. } => 0,
            Command::Fill { dst, .. }
            | Command::WritePtes { dst, .. }
            | Command::WriteData { dst, .. } => dv(dst),
            Command::Copy { dst, src, .. } => {
                dv(dst)
                    | if src.is_virtual() {
                        FLAG_SRC_VIRTUAL
                    } else {
                        0
                    }
            }
            Command::FlushTlb(s) => match s {
                FlushScope::All => FLUSH_ALL,
                FlushScope::Asid(_) => FLUSH_ASID,
                FlushScope::Range { .. } => FLUSH_RANGE,
            },
            Command::Fence { irq, .. } => {
                if irq {
                    FLAG_FENCE_IRQ
                } else {
                    0
                }
            }
        }
    }
}

/// Writes `cmd` at the start of `out`; returns the bytes written. Validates first; on any
/// error nothing is written. Never panics.
pub fn encode(cmd: &Command<'_>, out: &mut [u8]) -> Result<usize, CmdError> {
    cmd.validate()?;
    let dwords = cmd.dwords();
    if dwords > u16::MAX as usize || (cmd.opcode() != OP_NOP && dwords > MAX_CMD_DWORDS) {
        return Err(CmdError::BadPayload);
    }
    let needed = dwords * 4;
    let Some(out) = out.get_mut(..needed) else {
        return Err(CmdError::BufferTooSmall {
            needed,
            available: out.len(),
        });
    };
    let mut w = Writer { out, pos: 0 };
    w.u32(
        Header {
            opcode: cmd.opcode(),
            flags: cmd.flags(),
            dwords: dwords as u16,
        }
        .raw(),
    );
    match *cmd {
        Command::Nop { .. } => w.zero_rest(),
        Command::Fill { dst, size, pattern } => {
            w.u64(dst.addr());
            w.u64(size);
            w.u32(pattern);
        }
        Command::Copy { dst, src, size } => {
            w.u64(dst.addr());
            w.u64(src.addr());
            w.u64(size);
        }
        Command::WritePtes { dst, entries } => {
            w.u64(dst.addr());
            w.bytes(entries.bytes());
        }
        Command::WriteData { dst, data } => {
            w.u64(dst.addr());
            w.bytes(data.bytes());
        }
        Command::FlushTlb(scope) => {
            let (asid, va, size) = match scope {
                FlushScope::All => (0, 0, 0),
                FlushScope::Asid(a) => (a, 0, 0),
                FlushScope::Range { asid, va, size } => (asid, va, size),
            };
            w.u32(asid as u32);
            w.u64(va);
            w.u64(size);
        }
        Command::SetRoot {
            asid,
            root,
            entries,
        } => {
            w.u32(asid as u32);
            w.u64(root);
            w.u32(entries);
        }
        Command::Fence { value, .. } => w.u64(value),
    }
    Ok(needed)
}

/// Little-endian writer over a slice already checked to be exactly the command's size.
struct Writer<'a> {
    out: &'a mut [u8],
    pos: usize,
}

impl Writer<'_> {
    fn bytes(&mut self, b: &[u8]) {
        if let Some(d) = self.out.get_mut(self.pos..self.pos + b.len()) {
            d.copy_from_slice(b);
        }
        self.pos += b.len();
    }
    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
    fn zero_rest(&mut self) {
        if let Some(d) = self.out.get_mut(self.pos..) {
            d.fill(0);
        }
        self.pos = self.out.len();
    }
}

/// Little-endian reader over one command's bytes (length checked by the caller).
struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let s = self.b.get(self.pos..self.pos + n).unwrap_or(&[]);
        self.pos += n;
        s
    }
    fn u32(&mut self) -> u32 {
        let s = self.take(4);
        let mut w = [0u8; 4];
        if let Some(src) = s.get(..4) {
            w.copy_from_slice(src);
        }
        u32::from_le_bytes(w)
    }
    fn u64(&mut self) -> u64 {
        let lo = self.u32() as u64;
        lo | ((self.u32() as u64) << 32)
    }
}

/// Decodes and validates the command at the start of `bytes`; returns it and its length in
/// bytes. Never panics.
pub fn decode(bytes: &[u8]) -> Result<(Command<'_>, usize), CmdError> {
    let Some(h) = bytes.get(..4) else {
        return Err(CmdError::BufferTooSmall {
            needed: 4,
            available: bytes.len(),
        });
    };
    let h = Header::from_raw(u32::from_le_bytes([h[0], h[1], h[2], h[3]]));
    let dwords = h.dwords as usize;
    let bad_len = Err(CmdError::BadLength {
        opcode: h.opcode,
        dwords,
    });
    let bad_flags = Err(CmdError::BadFlags {
        opcode: h.opcode,
        flags: h.flags,
    });
    // Length sanity per opcode before touching the body.
    let len_ok = match h.opcode {
        OP_NOP => dwords >= 1,
        OP_FILL => dwords == FILL_DWORDS,
        OP_COPY => dwords == COPY_DWORDS,
        OP_WRITE_PTES => (5..=MAX_CMD_DWORDS).contains(&dwords) && dwords % 2 == 1,
        OP_WRITE_DATA => (4..=MAX_CMD_DWORDS).contains(&dwords),
        OP_FLUSH_TLB => dwords == FLUSH_TLB_DWORDS,
        OP_SET_ROOT => dwords == SET_ROOT_DWORDS,
        OP_FENCE => dwords == FENCE_DWORDS,
        op => return Err(CmdError::BadOpcode(op)),
    };
    if !len_ok {
        return bad_len;
    }
    let needed = dwords * 4;
    let Some(body) = bytes.get(..needed) else {
        return Err(CmdError::BufferTooSmall {
            needed,
            available: bytes.len(),
        });
    };
    let mut r = Reader { b: body, pos: 4 };
    let f = h.flags;
    let dst_virt = f & FLAG_DST_VIRTUAL != 0;
    let cmd = match h.opcode {
        OP_NOP => {
            if f != 0 {
                return bad_flags;
            }
            Command::Nop { dwords: h.dwords }
        }
        OP_FILL => {
            if f & !FLAG_DST_VIRTUAL != 0 {
                return bad_flags;
            }
            Command::Fill {
                dst: Target::from_flag(dst_virt, r.u64()),
                size: r.u64(),
                pattern: r.u32(),
            }
        }
        OP_COPY => {
            if f & !(FLAG_DST_VIRTUAL | FLAG_SRC_VIRTUAL) != 0 {
                return bad_flags;
            }
            Command::Copy {
                dst: Target::from_flag(dst_virt, r.u64()),
                src: Target::from_flag(f & FLAG_SRC_VIRTUAL != 0, r.u64()),
                size: r.u64(),
            }
        }
        OP_WRITE_PTES | OP_WRITE_DATA => {
            if f & !FLAG_DST_VIRTUAL != 0 {
                return bad_flags;
            }
            let dst = Target::from_flag(dst_virt, r.u64());
            let payload = r.take(needed - 12);
            if h.opcode == OP_WRITE_PTES {
                let Some(entries) = Qwords::new(payload) else {
                    return bad_len;
                };
                Command::WritePtes { dst, entries }
            } else {
                let Some(data) = Dwords::new(payload) else {
                    return bad_len;
                };
                Command::WriteData { dst, data }
            }
        }
        OP_FLUSH_TLB => {
            let asid = r.u32();
            let va = r.u64();
            let size = r.u64();
            let scope = match f {
                FLUSH_ALL if asid == 0 && va == 0 && size == 0 => FlushScope::All,
                FLUSH_ASID if va == 0 && size == 0 => {
                    check_asid(asid)?;
                    FlushScope::Asid(asid as u8)
                }
                FLUSH_RANGE => {
                    check_asid(asid)?;
                    FlushScope::Range {
                        asid: asid as u8,
                        va,
                        size,
                    }
                }
                FLUSH_ALL | FLUSH_ASID => return Err(CmdError::ReservedNonZero),
                _ => return bad_flags,
            };
            Command::FlushTlb(scope)
        }
        OP_SET_ROOT => {
            if f != 0 {
                return bad_flags;
            }
            let asid = r.u32();
            check_asid(asid)?;
            Command::SetRoot {
                asid: asid as u8,
                root: r.u64(),
                entries: r.u32(),
            }
        }
        _ => {
            // OP_FENCE (other opcodes were rejected above).
            if f & !FLAG_FENCE_IRQ != 0 {
                return bad_flags;
            }
            Command::Fence {
                value: r.u64(),
                irq: f & FLAG_FENCE_IRQ != 0,
            }
        }
    };
    cmd.validate()?;
    Ok((cmd, needed))
}

/// Iterates over the commands of a buffer: yields `Ok((offset, command))` and stops after the
/// first error (which it yields as `Err((offset, error))`).
#[derive(Clone, Debug)]
pub struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
    failed: bool,
}

impl<'a> Decoder<'a> {
    /// Decodes `buf` from its start.
    #[must_use]
    pub const fn new(buf: &'a [u8]) -> Decoder<'a> {
        Decoder {
            buf,
            pos: 0,
            failed: false,
        }
    }
}

impl<'a> Iterator for Decoder<'a> {
    type Item = Result<(usize, Command<'a>), (usize, CmdError)>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.buf.len() {
            return None;
        }
        let at = self.pos;
        match decode(self.buf.get(at..)?) {
            Ok((c, n)) => {
                self.pos += n;
                Some(Ok((at, c)))
            }
            Err(e) => {
                self.failed = true;
                Some(Err((at, e)))
            }
        }
    }
}

/// A cursor that appends commands to a caller-provided buffer (a DMA/paging buffer).
///
/// Every method either appends one whole command and returns its size in bytes, or returns an
/// error and leaves the buffer and the cursor unchanged.
#[derive(Debug)]
pub struct Encoder<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Encoder<'a> {
    /// Starts appending at the beginning of `buf`.
    #[must_use]
    pub fn new(buf: &'a mut [u8]) -> Encoder<'a> {
        Encoder { buf, pos: 0 }
    }
    /// Bytes written so far.
    #[must_use]
    pub const fn position(&self) -> usize {
        self.pos
    }
    /// Bytes still free.
    #[must_use]
    pub const fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    /// The bytes written so far.
    #[must_use]
    pub fn written(&self) -> &[u8] {
        self.buf.get(..self.pos).unwrap_or(&[])
    }
    /// Appends any command.
    pub fn push(&mut self, cmd: &Command<'_>) -> Result<usize, CmdError> {
        let out = self.buf.get_mut(self.pos..).unwrap_or(&mut []);
        let n = encode(cmd, out)?;
        self.pos += n;
        Ok(n)
    }
    /// Appends a NOP of `dwords` total dwords (padding).
    pub fn nop(&mut self, dwords: u16) -> Result<usize, CmdError> {
        self.push(&Command::Nop { dwords })
    }
    /// Appends FILL.
    pub fn fill(&mut self, dst: Target, size: u64, pattern: u32) -> Result<usize, CmdError> {
        self.push(&Command::Fill { dst, size, pattern })
    }
    /// Appends COPY.
    pub fn copy(&mut self, dst: Target, src: Target, size: u64) -> Result<usize, CmdError> {
        self.push(&Command::Copy { dst, src, size })
    }
    /// Appends FLUSH_TLB.
    pub fn flush_tlb(&mut self, scope: FlushScope) -> Result<usize, CmdError> {
        self.push(&Command::FlushTlb(scope))
    }
    /// Appends SET_ROOT.
    pub fn set_root(&mut self, asid: u8, root: u64, entries: u32) -> Result<usize, CmdError> {
        self.push(&Command::SetRoot {
            asid,
            root,
            entries,
        })
    }
    /// Appends FENCE.
    pub fn fence(&mut self, value: u64, irq: bool) -> Result<usize, CmdError> {
        self.push(&Command::Fence { value, irq })
    }
    /// Appends WRITE_DATA with `data`.
    pub fn write_data(&mut self, dst: Target, data: &[u32]) -> Result<usize, CmdError> {
        let n = data.len();
        self.payload_cmd(OP_WRITE_DATA, dst, n, 4, MAX_DATA_PER_CMD, |i, out| {
            if let (Some(v), Some(o)) = (data.get(i), out.get_mut(..4)) {
                o.copy_from_slice(&v.to_le_bytes());
            }
        })
    }
    /// Appends WRITE_PTES with `entries`.
    pub fn write_ptes(&mut self, dst: Target, entries: &[u64]) -> Result<usize, CmdError> {
        self.write_ptes_with(dst, entries.len(), |i| entries.get(i).copied().unwrap_or(0))
    }
    /// Appends WRITE_PTES of `count` entries produced by `entry(i)` — lets a driver convert
    /// `DXGK_PTE`s straight into the buffer. `entry` is not called if the command does not fit.
    pub fn write_ptes_with(
        &mut self,
        dst: Target,
        count: usize,
        mut entry: impl FnMut(usize) -> u64,
    ) -> Result<usize, CmdError> {
        if !dst.addr().is_multiple_of(8) {
            return Err(CmdError::Misaligned);
        }
        self.payload_cmd(OP_WRITE_PTES, dst, count, 8, MAX_PTES_PER_CMD, |i, out| {
            if let Some(o) = out.get_mut(..8) {
                o.copy_from_slice(&entry(i).to_le_bytes());
            }
        })
    }

    /// Appends WRITE_PTES of `count` entries whose little-endian bytes `fill` writes into the
    /// command's payload (`count * 8` bytes) in one go — the bulk form of
    /// [`Encoder::write_ptes_with`], which lets a driver convert a whole batch of OS entries
    /// with a loop the compiler can vectorize. `fill` is not called if the command does not fit.
    /// Inlined: a driver's paging path calls it once per batch, and the closure's captures then
    /// stay in registers.
    #[inline]
    pub fn write_ptes_into(
        &mut self,
        dst: Target,
        count: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<usize, CmdError> {
        if !dst.addr().is_multiple_of(8) {
            return Err(CmdError::Misaligned);
        }
        self.payload_bulk(OP_WRITE_PTES, dst, count, 8, MAX_PTES_PER_CMD, fill)
    }

    #[inline]
    fn payload_bulk(
        &mut self,
        opcode: u8,
        dst: Target,
        count: usize,
        item: usize,
        max: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<usize, CmdError> {
        if count == 0 || count > max {
            return Err(CmdError::BadPayload);
        }
        let needed = 12 + count * item;
        let available = self.remaining();
        let Some(out) = self.buf.get_mut(self.pos..self.pos + needed) else {
            return Err(CmdError::BufferTooSmall { needed, available });
        };
        let hdr = Header {
            opcode,
            flags: if dst.is_virtual() {
                FLAG_DST_VIRTUAL
            } else {
                0
            },
            dwords: (needed / 4) as u16,
        };
        let (head, body) = out.split_at_mut(12);
        head[0..4].copy_from_slice(&hdr.raw().to_le_bytes());
        head[4..12].copy_from_slice(&dst.addr().to_le_bytes());
        fill(body);
        self.pos += needed;
        Ok(needed)
    }

    fn payload_cmd(
        &mut self,
        opcode: u8,
        dst: Target,
        count: usize,
        item: usize,
        max: usize,
        mut put: impl FnMut(usize, &mut [u8]),
    ) -> Result<usize, CmdError> {
        if !dst.addr().is_multiple_of(4) {
            return Err(CmdError::Misaligned);
        }
        self.payload_bulk(opcode, dst, count, item, max, |body| {
            for (i, chunk) in body.chunks_exact_mut(item).enumerate() {
                put(i, chunk);
            }
        })
    }
}
