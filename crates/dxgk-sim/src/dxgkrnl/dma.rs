//! Device DMA: a device model's accesses to memory through its adapter's IOMMU domain
//! ([`crate::memory::iommu`]). Faults are recorded against the adapter ([`IommuFault`]) and
//! reported as [`Rule::IommuFault`] findings; a faulting access does not touch memory.

use std::fmt;
use std::sync::Arc;

use super::AdapterId;
use crate::machine::{Machine, MachineState};
use crate::memory::iommu::{Miss, Piece};
use crate::memory::{IommuFaultKind, PAGE};
use crate::verifier::{Finding, Rule};

/// A device access the IOMMU refused. The access had no effect on memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IommuFault {
    pub adapter: AdapterId,
    /// First faulting byte (logical address).
    pub logical_addr: u64,
    pub kind: IommuFaultKind,
    pub write: bool,
    /// The device unit that issued the access (`Debug` of the source passed to [`Dma`]).
    pub source: String,
}

impl fmt::Display for IommuFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "IOMMU fault on adapter {}: {} {:#x} ({:?}) by {}",
            self.adapter.0,
            if self.write { "write" } else { "read" },
            self.logical_addr,
            self.kind,
            self.source
        )
    }
}

/// Device memory access through one adapter's IOMMU (logical addresses). Obtained from
/// [`Machine::dma`]; also handed to [`crate::SimDevice::sync`].
pub struct Dma {
    pub(crate) machine: Arc<MachineState>,
    pub(crate) adapter: AdapterId,
}

impl fmt::Debug for Dma {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Dma(adapter {})", self.adapter.0)
    }
}

impl Dma {
    fn fault_of(
        &self,
        (logical_addr, kind): Miss,
        write: bool,
        source: &dyn fmt::Debug,
    ) -> IommuFault {
        IommuFault {
            adapter: self.adapter,
            logical_addr,
            kind,
            write,
            source: format!("{source:?}"),
        }
    }

    /// Checks every page of the access; returns the host address of each page piece.
    fn translate(
        &self,
        logical: u64,
        len: usize,
        write: bool,
        source: &dyn fmt::Debug,
    ) -> Result<Vec<Piece>, IommuFault> {
        let mut mem = self.machine.mem();
        mem.iommu
            .domain(self.adapter.domain(), self.machine.config.iommu)
            .translate(logical, len, write)
            .map_err(|f| self.fault_of(f, write, source))
    }

    fn fault(&self, f: IommuFault) -> IommuFault {
        self.machine.report(Finding {
            rule: Rule::IommuFault,
            call: "device DMA",
            detail: f.to_string(),
            driver_site: format!("device access by {}", f.source),
        });
        self.machine.iommu_faults.lock().push(f.clone());
        f
    }

    /// The host address of `logical` when `[logical, logical + len)` lies in one mapped page
    /// (every access the rgpu model makes): the fast path, one lookup under the lock the copy
    /// then also holds. `Err(None)` = use the general path; `Err(Some(f))` = fault.
    fn single_page<R>(
        &self,
        logical: u64,
        len: usize,
        write: bool,
        source: &dyn fmt::Debug,
        copy: impl FnOnce(usize) -> R,
    ) -> Result<R, Option<IommuFault>> {
        let off = (logical as usize) & (PAGE - 1);
        if len == 0 || off + len > PAGE {
            return Err(None);
        }
        let mut mem = self.machine.mem();
        let dom = mem
            .iommu
            .domain(self.adapter.domain(), self.machine.config.iommu);
        match dom.host_of(logical, write) {
            Err(f) => Err(Some(self.fault_of(f, write, source))),
            // The page cannot be freed while the memory lock (`mem`) is held during `copy`.
            Ok(host) => Ok(copy(host)),
        }
    }

    /// Device read of `buf.len()` bytes at `logical`. On a fault nothing is read.
    pub fn read(
        &mut self,
        logical: u64,
        buf: &mut [u8],
        source: impl fmt::Debug,
    ) -> Result<(), IommuFault> {
        let len = buf.len();
        let fast = self.single_page(logical, len, false, &source, |host| {
            // SAFETY: `host..host+len` lies in one mapped page, live while the memory lock
            // is held (it is, for the duration of this closure).
            let src = unsafe { std::slice::from_raw_parts(host as *const u8, len) };
            buf.copy_from_slice(src);
        });
        match fast {
            Ok(()) => return Ok(()),
            Err(Some(f)) => return Err(self.fault(f)),
            Err(None) => {}
        }
        match self.translate(logical, buf.len(), false, &source) {
            Ok(pieces) => {
                let _mem = self.machine.mem(); // pages cannot be freed while we copy
                for (host, at, n) in pieces {
                    // SAFETY: `host..host+n` lies in a mapped page whose region is live while
                    // the memory lock is held.
                    let src = unsafe { std::slice::from_raw_parts(host as *const u8, n) };
                    buf[at..at + n].copy_from_slice(src);
                }
                Ok(())
            }
            Err(f) => Err(self.fault(f)),
        }
    }

    /// Device write of `data` at `logical`. On a fault memory is unchanged.
    pub fn write(
        &mut self,
        logical: u64,
        data: &[u8],
        source: impl fmt::Debug,
    ) -> Result<(), IommuFault> {
        let fast = self.single_page(logical, data.len(), true, &source, |host| {
            // SAFETY: as in `read`.
            let dst = unsafe { std::slice::from_raw_parts_mut(host as *mut u8, data.len()) };
            dst.copy_from_slice(data);
        });
        match fast {
            Ok(()) => return Ok(()),
            Err(Some(f)) => return Err(self.fault(f)),
            Err(None) => {}
        }
        match self.translate(logical, data.len(), true, &source) {
            Ok(pieces) => {
                let _mem = self.machine.mem();
                for (host, at, n) in pieces {
                    // SAFETY: as in `read`.
                    let dst = unsafe { std::slice::from_raw_parts_mut(host as *mut u8, n) };
                    dst.copy_from_slice(&data[at..at + n]);
                }
                Ok(())
            }
            Err(f) => Err(self.fault(f)),
        }
    }

    /// Device copy of `len` bytes from `src` to `dst` (each within one page), host memory to
    /// host memory under one lock (a DMA engine does not stage data). The error says which side
    /// faulted (`true` = the write); on a fault nothing is written.
    pub fn copy(&mut self, dst: u64, src: u64, len: usize) -> Result<(), (IommuFault, bool)> {
        let within = |a: u64| len > 0 && ((a as usize) & (PAGE - 1)) + len <= PAGE;
        if !within(src) || !within(dst) {
            // General path (never taken by the rgpu model): stage through a buffer.
            let mut buf = vec![0u8; len];
            self.read(src, &mut buf, "copy source")
                .map_err(|f| (f, false))?;
            return self
                .write(dst, &buf, "copy destination")
                .map_err(|f| (f, true));
        }
        let outcome = {
            let mut mem = self.machine.mem();
            let dom = mem
                .iommu
                .domain(self.adapter.domain(), self.machine.config.iommu);
            // The read side faults first, then the write side (missing, then read-only).
            let s = dom.host_of(src, false).map_err(|f| (f, false));
            let d = dom.host_of(dst, true).map_err(|f| (f, true));
            match (s, d) {
                (Err(e), _) | (_, Err(e)) => Err(e),
                (Ok(s), Ok(d)) => {
                    // SAFETY: both ranges lie in mapped pages that cannot be freed while the
                    // memory lock (`mem`) is held; `copy` tolerates overlap.
                    unsafe { std::ptr::copy(s as *const u8, d as *mut u8, len) };
                    Ok(())
                }
            }
        };
        outcome.map_err(|((addr, kind), write)| {
            let f = IommuFault {
                adapter: self.adapter,
                logical_addr: addr,
                kind,
                write,
                source: if write { "Write" } else { "Read" }.to_string(),
            };
            (self.fault(f), write)
        })
    }

    /// Device copy of `len` bytes from `src` to `dst` as the pieces a COPY issues (each ending
    /// at every page boundary of either side, in order), checked and moved under one lock:
    /// each side is translated a stretch at a time (consecutive mapped logical pages on
    /// consecutive host pages: `PagesFrom::stretch`), and the bytes
    /// where both sides' stretches overlap move as one `memcpy` — a 64 KiB GPU page is one
    /// walk and one copy, not sixteen. Where the host ranges overlap, one piece at a time.
    /// Same effect as one [`Dma::copy`] per piece: on a fault the pieces before the faulting
    /// one are copied; the error says how many bytes, and which side faulted.
    pub fn copy_pieces(
        &mut self,
        dst: u64,
        src: u64,
        len: usize,
    ) -> Result<(), (usize, IommuFault, bool)> {
        let wraps = |a: u64| a.checked_add(len as u64).is_none();
        if wraps(src) || wraps(dst) {
            // Pages in increasing order only: a range that wraps goes piece by piece.
            let mut done = 0;
            while done < len {
                let (s_at, d_at) = (src.wrapping_add(done as u64), dst.wrapping_add(done as u64));
                let to_boundary = |a: u64| PAGE - (a as usize & (PAGE - 1));
                let n = (len - done).min(to_boundary(s_at)).min(to_boundary(d_at));
                self.copy(d_at, s_at, n).map_err(|(f, w)| (done, f, w))?;
                done += n;
            }
            return Ok(());
        }
        let outcome = {
            let mut mem = self.machine.mem();
            let dom = mem
                .iommu
                .domain(self.adapter.domain(), self.machine.config.iommu);
            let mut src_pages = dom.pages_from(src);
            let mut dst_pages = dom.pages_from(dst);
            let mut done = 0usize;
            let mut fault = None;
            while done < len {
                let (s_at, d_at) = (src.wrapping_add(done as u64), dst.wrapping_add(done as u64));
                let left = len - done;
                // The read side faults first, then the write side (missing, then read-only).
                let s = src_pages.stretch(s_at, left, false).map_err(|f| (f, false));
                let d = dst_pages.stretch(d_at, left, true).map_err(|f| (f, true));
                let ((s, s_n), (d, d_n)) = match (s, d) {
                    (Err(e), _) | (_, Err(e)) => {
                        fault = Some(e);
                        break;
                    }
                    (Ok(s), Ok(d)) => (s, d),
                };
                let mut n = s_n.min(d_n);
                if s < d + n && d < s + n {
                    // Overlapping host ranges: piece by piece, as `Dma::copy` would.
                    let to_boundary = |a: u64| PAGE - (a as usize & (PAGE - 1));
                    n = n.min(to_boundary(s_at)).min(to_boundary(d_at));
                }
                // SAFETY: both ranges lie in mapped pages (`stretch` checked each of them) that
                // cannot be freed while the memory lock (`mem`) is held; `copy` tolerates
                // overlap (overlapping ranges are a single piece, which is what `Dma::copy`
                // does).
                unsafe { std::ptr::copy(s as *const u8, d as *mut u8, n) };
                done += n;
            }
            match fault {
                None => Ok(()),
                Some(f) => Err((done, f)),
            }
        };
        outcome.map_err(|(done, ((addr, kind), write))| {
            let f = IommuFault {
                adapter: self.adapter,
                logical_addr: addr,
                kind,
                write,
                source: if write { "Write" } else { "Read" }.to_string(),
            };
            (done, self.fault(f), write)
        })
    }

    /// Whether `logical`'s page is mapped (no fault recorded).
    pub fn is_mapped(&self, logical: u64) -> bool {
        let mut mem = self.machine.mem();
        mem.iommu
            .domain(self.adapter.domain(), self.machine.config.iommu)
            .pages
            .contains_key(&(logical >> 12))
    }
}

impl Machine {
    /// Device DMA through `adapter`'s IOMMU.
    pub fn dma(&self, adapter: AdapterId) -> Dma {
        Dma {
            machine: self.state.clone(),
            adapter,
        }
    }

    /// Makes a mapped logical page read-only (or writable again) for the device, as VidMm does
    /// for read-only allocations. False if the page is not mapped.
    pub fn set_logical_page_writable(
        &self,
        adapter: AdapterId,
        logical: u64,
        writable: bool,
    ) -> bool {
        let mut mem = self.state.mem();
        let mode = self.state.config.iommu;
        mem.iommu
            .domain(adapter.domain(), mode)
            .set_writable(logical, writable)
    }
}
#[cfg(feature = "rgpu-hw")]
impl rgpu_hw::bus::DmaBus for Dma {
    fn read(
        &mut self,
        logical_addr: u64,
        buf: &mut [u8],
        source: rgpu_hw::bus::DmaSource,
    ) -> Result<(), rgpu_hw::bus::DmaFault> {
        Dma::read(self, logical_addr, buf, source).map_err(to_rgpu_fault)
    }

    fn write(
        &mut self,
        logical_addr: u64,
        data: &[u8],
        source: rgpu_hw::bus::DmaSource,
    ) -> Result<(), rgpu_hw::bus::DmaFault> {
        Dma::write(self, logical_addr, data, source).map_err(to_rgpu_fault)
    }

    fn copy(
        &mut self,
        dst: u64,
        src: u64,
        len: usize,
        _scratch: &mut [u8],
    ) -> Result<(), (rgpu_hw::bus::DmaFault, bool)> {
        Dma::copy(self, dst, src, len).map_err(|(f, w)| (to_rgpu_fault(f), w))
    }

    fn copy_pieces(
        &mut self,
        dst: u64,
        src: u64,
        len: usize,
        _scratch: &mut [u8],
    ) -> Result<(), (usize, rgpu_hw::bus::DmaFault, bool)> {
        Dma::copy_pieces(self, dst, src, len).map_err(|(n, f, w)| (n, to_rgpu_fault(f), w))
    }
}

#[cfg(feature = "rgpu-hw")]
fn to_rgpu_fault(f: IommuFault) -> rgpu_hw::bus::DmaFault {
    rgpu_hw::bus::DmaFault {
        logical_addr: f.logical_addr,
        kind: match f.kind {
            IommuFaultKind::NotMapped => rgpu_hw::bus::DmaFaultKind::NotMapped,
            IommuFaultKind::ReadOnly => rgpu_hw::bus::DmaFaultKind::ReadOnly,
        },
    }
}
