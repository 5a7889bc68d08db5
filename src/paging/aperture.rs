//! The aperture segment's GART: which logical page each aperture page stands for, kept by the
//! driver in CPU-only memory and filled by MAP/UNMAP_APERTURE_SEGMENT from VidMm's MDLs.

use dxgk::device_memory::SystemMemory;
use dxgk::sync::SpinLock;
use dxgk::{NtError, NtResult};

use super::PAGE;
use crate::caps::{APERTURE_SEGMENT_ID, APERTURE_SEGMENT_SIZE, SYSTEM_MEMORY_SEGMENT_ID};

/// Number of pages in the aperture segment.
pub const APERTURE_PAGES: usize = APERTURE_SEGMENT_SIZE / PAGE as usize;

/// The aperture segment's translation table (a GART kept by the driver): aperture page →
/// logical page + 1 (0 = unmapped). CPU-only memory; the device never reads it.
pub struct Aperture {
    table: SpinLock<SystemMemory>,
}

/// Why the GART could not be updated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApertureError {
    /// Aperture pages `first..first + pages` are not all inside the aperture.
    OutOfRange {
        /// First aperture page.
        first: usize,
        /// Pages.
        pages: usize,
    },
    /// A logical page number the table cannot hold (it stores page + 1).
    PageNumber(u64),
    /// The table memory refused the write.
    Table(NtError),
}

/// The device (logical) address of byte `offset` of segment `segment` where VidMm placed a page
/// table (DxgkDdiSetRootPageTable): through the GART for the aperture segment, as is for system
/// memory. STATUS_INVALID_PARAMETER for an unmapped aperture page or an unknown segment.
pub fn table_address(aperture: Option<&Aperture>, segment: u32, offset: u64) -> NtResult<u64> {
    match segment {
        APERTURE_SEGMENT_ID => aperture
            .and_then(|a| a.lookup(offset / PAGE))
            .and_then(|logical| logical.checked_mul(PAGE))
            .map(|base| base | (offset % PAGE))
            .ok_or(NtError::INVALID_PARAMETER),
        0 | SYSTEM_MEMORY_SEGMENT_ID => Ok(offset),
        _ => Err(NtError::INVALID_PARAMETER),
    }
}

impl Aperture {
    /// Wraps a table of at least `APERTURE_PAGES * 8` zeroed bytes.
    pub fn new(table: SystemMemory) -> NtResult<Self> {
        if table.len() < APERTURE_PAGES * 8 {
            return Err(NtError::INVALID_PARAMETER);
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

    /// Points aperture pages `first..first + pages` at `logical_pages`, in order (which must
    /// yield `pages` values).
    pub fn map(
        &self,
        first: usize,
        pages: usize,
        logical_pages: impl Iterator<Item = u64>,
    ) -> Result<(), ApertureError> {
        let end = first.checked_add(pages);
        if !matches!(end, Some(e) if e <= APERTURE_PAGES) {
            return Err(ApertureError::OutOfRange { first, pages });
        }
        let mut table = self.table.lock();
        for (page, logical) in (first..first + pages).zip(logical_pages) {
            let value = logical
                .checked_add(1)
                .ok_or(ApertureError::PageNumber(logical))?;
            table
                .write(page * 8, &value.to_le_bytes())
                .map_err(ApertureError::Table)?;
        }
        Ok(())
    }
}
