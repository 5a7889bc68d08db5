//! The page registry behind [`LogicalMemory`]: (logical page, CPU view) pairs for the memory
//! the driver owns or was given, whichever memory path supplied it. An address not registered is
//! refused as [`DmaFaultKind::NotMapped`] (the IOMMU fault of the hardware path).

#![forbid(unsafe_code)]

use dxgk::aperture_views::ApertureViews;
use dxgk::memory::SharedPages;
use rgpu_hw::bus::DmaFaultKind;

use super::{LogicalMemory, PAGE};

/// One registered logical page: its address and where its bytes are in a CPU view.
#[derive(Clone, Copy)]
pub struct PageEntry<'a> {
    /// The page's logical (device) address, page aligned.
    pub logical: u64,
    /// The CPU view holding it.
    pub view: SharedPages<'a>,
    /// Byte offset of the page in `view`.
    pub offset: usize,
}

/// A fixed set of registered pages (the driver's own: ring, fence page), looked up linearly.
pub struct Pages<'a, const N: usize> {
    entries: [Option<PageEntry<'a>>; N],
}

impl<'a, const N: usize> Pages<'a, N> {
    /// No pages.
    pub fn new() -> Self {
        Self { entries: [None; N] }
    }

    /// Registers `entry` (a page-aligned logical address whose page lies inside the view).
    /// False when full or malformed (nothing registered).
    pub fn register(&mut self, entry: PageEntry<'a>) -> bool {
        let fits = entry.logical.is_multiple_of(PAGE)
            && entry
                .offset
                .checked_add(PAGE as usize)
                .is_some_and(|end| end <= entry.view.len());
        let Some(slot) = self.entries.iter_mut().find(|e| e.is_none()) else {
            return false;
        };
        if fits {
            *slot = Some(entry);
        }
        fits
    }

    /// The view and byte offset of `logical` for `len` bytes inside one page.
    fn find(&self, logical: u64, len: usize) -> Result<(SharedPages<'a>, usize), DmaFaultKind> {
        let page = logical & !(PAGE - 1);
        let within = (logical - page) as usize;
        if within + len > PAGE as usize {
            return Err(DmaFaultKind::NotMapped);
        }
        self.entries
            .iter()
            .flatten()
            .find(|e| e.logical == page)
            .map(|e| (e.view, e.offset + within))
            .ok_or(DmaFaultKind::NotMapped)
    }
}

impl<const N: usize> Default for Pages<'_, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> LogicalMemory for Pages<'_, N> {
    fn read(&self, logical: u64, buf: &mut [u8]) -> Result<(), DmaFaultKind> {
        let (view, at) = self.find(logical, buf.len())?;
        view.read(at, buf).map_err(|_| DmaFaultKind::NotMapped)
    }

    fn write(&self, logical: u64, data: &[u8]) -> Result<(), DmaFaultKind> {
        let (view, at) = self.find(logical, data.len())?;
        view.write(at, data).map_err(|_| DmaFaultKind::NotMapped)
    }
}

/// Everything a soft engine reaches: the driver's own pages, then the aperture pages VidMm
/// mapped (the registry: one hash probe per page run).
pub struct SoftMemory<'a> {
    /// Ring and fence page.
    pub own: Pages<'a, 2>,
    /// The aperture pages' CPU views.
    pub views: Option<&'a ApertureViews>,
}

impl LogicalMemory for SoftMemory<'_> {
    fn read(&self, logical: u64, buf: &mut [u8]) -> Result<(), DmaFaultKind> {
        if self.own.read(logical, buf).is_ok() {
            return Ok(());
        }
        match self.views {
            Some(v) if v.read(logical, buf) => Ok(()),
            _ => Err(DmaFaultKind::NotMapped),
        }
    }

    fn write(&self, logical: u64, data: &[u8]) -> Result<(), DmaFaultKind> {
        if self.own.write(logical, data).is_ok() {
            return Ok(());
        }
        match self.views {
            Some(v) if v.write(logical, data) => Ok(()),
            _ => Err(DmaFaultKind::NotMapped),
        }
    }
}
