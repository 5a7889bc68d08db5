//! The DMA bus: the only way the device model touches memory.
//!
//! Addresses are **logical** (IOMMU) addresses. The simulator backs the bus with its IOMMU: an
//! access to an unmapped logical page, or a write to a page mapped read-only, returns a
//! [`DmaFault`] and must not touch memory. The model never issues a transaction that crosses a
//! 4 KiB logical page boundary, and never a zero-length one ([`DmaBus::copy_pieces`] is a
//! sequence of such transactions).

/// Which unit of the device issued a DMA transaction (also `FAULT_STATUS[11:8]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DmaSource {
    /// Reading a 16-byte ring entry.
    RingFetch = 1,
    /// Reading command dwords from a command buffer.
    CommandFetch = 2,
    /// Reading a page-table entry during a translation walk.
    PageWalk = 3,
    /// A data read by a command (COPY source).
    Read = 4,
    /// A data write by a command (FILL, COPY destination, WRITE_PTES, WRITE_DATA).
    Write = 5,
    /// The FENCE write-back to `FENCE_ADDR`.
    FenceWriteback = 6,
}

impl DmaSource {
    /// Decodes the `FAULT_STATUS` source field.
    #[must_use]
    pub const fn from_raw(v: u32) -> Option<DmaSource> {
        Some(match v {
            1 => DmaSource::RingFetch,
            2 => DmaSource::CommandFetch,
            3 => DmaSource::PageWalk,
            4 => DmaSource::Read,
            5 => DmaSource::Write,
            6 => DmaSource::FenceWriteback,
            _ => return None,
        })
    }
}

/// Why the bus refused a transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DmaFaultKind {
    /// No IOMMU mapping for the logical page.
    NotMapped,
    /// A write to a logical page mapped read-only for the device.
    ReadOnly,
    /// Any other bus error (e.g. master abort).
    BusError,
}

/// An IOMMU/bus fault. The transaction it describes had no effect on memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DmaFault {
    /// The logical address that faulted (the bus may report the first faulting byte).
    pub logical_addr: u64,
    /// Why.
    pub kind: DmaFaultKind,
}

/// Memory as seen from the device, in logical (IOMMU) address space.
pub trait DmaBus {
    /// Reads `buf.len()` bytes at `logical_addr`. On error `buf` contents are unspecified.
    fn read(
        &mut self,
        logical_addr: u64,
        buf: &mut [u8],
        source: DmaSource,
    ) -> Result<(), DmaFault>;
    /// Writes `data` at `logical_addr`. On error memory must be unchanged.
    fn write(&mut self, logical_addr: u64, data: &[u8], source: DmaSource) -> Result<(), DmaFault>;

    /// Copies `len` bytes (≤ `scratch.len()`, within one page on each side) from logical `src`
    /// to logical `dst`, as a DMA engine does without staging the data in the device. The
    /// default reads into `scratch` and writes it back; a bus that can copy directly should.
    /// The error says which side faulted (`true` = the write to `dst`); on a fault nothing is
    /// written.
    fn copy(
        &mut self,
        dst: u64,
        src: u64,
        len: usize,
        scratch: &mut [u8],
    ) -> Result<(), (DmaFault, bool)> {
        let buf = scratch.get_mut(..len).ok_or((
            DmaFault {
                logical_addr: src,
                kind: DmaFaultKind::BusError,
            },
            false,
        ))?;
        self.read(src, buf, DmaSource::Read)
            .map_err(|f| (f, false))?;
        self.write(dst, buf, DmaSource::Write)
            .map_err(|f| (f, true))
    }

    /// Copies `len` bytes from logical `src` to logical `dst` as the sequence of [`DmaBus::copy`]
    /// transactions a COPY issues: pieces that end at every 4 KiB page boundary of either side,
    /// in order. The default issues them one by one; a bus that can check and move a run of
    /// pieces at once should, with the same effect: on a fault, the pieces before the faulting
    /// one are copied and nothing of it is; the error says how many bytes were copied, the
    /// fault and which side (`true` = the write).
    fn copy_pieces(
        &mut self,
        dst: u64,
        src: u64,
        len: usize,
        scratch: &mut [u8],
    ) -> Result<(), (usize, DmaFault, bool)> {
        copy_pieces_one_by_one(self, dst, src, len, scratch)
    }
}

/// [`DmaBus::copy_pieces`] as the sequence of [`DmaBus::copy`] calls it stands for (the
/// default implementation, also for buses that must see every piece).
pub fn copy_pieces_one_by_one<B: DmaBus + ?Sized>(
    bus: &mut B,
    dst: u64,
    src: u64,
    len: usize,
    scratch: &mut [u8],
) -> Result<(), (usize, DmaFault, bool)> {
    let mut done = 0;
    while done < len {
        const PAGE: u64 = 4096;
        let to_boundary = |a: u64| (PAGE - a.wrapping_add(done as u64) % PAGE) as usize;
        let n = (len - done).min(to_boundary(src)).min(to_boundary(dst));
        let at = |a: u64| a.wrapping_add(done as u64);
        bus.copy(at(dst), at(src), n, scratch)
            .map_err(|(f, write)| (done, f, write))?;
        done += n;
    }
    Ok(())
}

impl<B: DmaBus + ?Sized> DmaBus for &mut B {
    fn read(
        &mut self,
        logical_addr: u64,
        buf: &mut [u8],
        source: DmaSource,
    ) -> Result<(), DmaFault> {
        (**self).read(logical_addr, buf, source)
    }
    fn write(&mut self, logical_addr: u64, data: &[u8], source: DmaSource) -> Result<(), DmaFault> {
        (**self).write(logical_addr, data, source)
    }
    fn copy(
        &mut self,
        dst: u64,
        src: u64,
        len: usize,
        scratch: &mut [u8],
    ) -> Result<(), (DmaFault, bool)> {
        (**self).copy(dst, src, len, scratch)
    }
    fn copy_pieces(
        &mut self,
        dst: u64,
        src: u64,
        len: usize,
        scratch: &mut [u8],
    ) -> Result<(), (usize, DmaFault, bool)> {
        (**self).copy_pieces(dst, src, len, scratch)
    }
}

/// The device's address decoder: forwards transactions entirely below `limit` (the
/// [`crate::regs::DMA_ADDRESS_LIMIT`] in the model) and refuses any other one with a
/// [`DmaFaultKind::BusError`] at its first unreachable byte, without touching memory — the
/// device has only `DMA_ADDRESS_BITS` address lines.
#[derive(Debug)]
pub struct AddressLimit<B> {
    inner: B,
    limit: u64,
}

impl<B: DmaBus> AddressLimit<B> {
    /// `inner` seen through `limit` address lines' worth of logical space.
    pub fn new(inner: B, limit: u64) -> Self {
        Self { inner, limit }
    }

    fn check(&self, addr: u64, len: usize) -> Result<(), DmaFault> {
        let end = addr.checked_add(len as u64);
        if matches!(end, Some(e) if e <= self.limit) {
            return Ok(());
        }
        Err(DmaFault {
            logical_addr: addr.max(self.limit),
            kind: DmaFaultKind::BusError,
        })
    }
}

impl<B: DmaBus> DmaBus for AddressLimit<B> {
    fn read(
        &mut self,
        logical_addr: u64,
        buf: &mut [u8],
        source: DmaSource,
    ) -> Result<(), DmaFault> {
        self.check(logical_addr, buf.len())?;
        self.inner.read(logical_addr, buf, source)
    }

    fn write(&mut self, logical_addr: u64, data: &[u8], source: DmaSource) -> Result<(), DmaFault> {
        self.check(logical_addr, data.len())?;
        self.inner.write(logical_addr, data, source)
    }

    fn copy(
        &mut self,
        dst: u64,
        src: u64,
        len: usize,
        scratch: &mut [u8],
    ) -> Result<(), (DmaFault, bool)> {
        self.check(src, len).map_err(|f| (f, false))?;
        self.check(dst, len).map_err(|f| (f, true))?;
        self.inner.copy(dst, src, len, scratch)
    }

    fn copy_pieces(
        &mut self,
        dst: u64,
        src: u64,
        len: usize,
        scratch: &mut [u8],
    ) -> Result<(), (usize, DmaFault, bool)> {
        if self.check(src, len).is_ok() && self.check(dst, len).is_ok() {
            return self.inner.copy_pieces(dst, src, len, scratch);
        }
        // Some piece is out of reach: issue them one by one so the ones before it happen.
        copy_pieces_one_by_one(self, dst, src, len, scratch)
    }
}
