//! A borrowed view of an MDL someone else owns — the MDLs Dxgkrnl and VidMm pass in DDI
//! arguments (MAP_APERTURE_SEGMENT's `pMdl`, a TRANSFER side's `pMdl`).
//!
//! [`Mdl`] is the borrowing counterpart of the owning [`crate::memory::MdlPages`], as Rust for
//! Linux's `SGEntry` is of `SGTable`: it never frees or maps anything, it only reads the header
//! and the PFN array, which it validates once in [`Mdl::from_raw`]. After that every page
//! access is bounds-checked against the pages `(ByteOffset, ByteCount)` span: the PFN array is
//! never read past them.
//!
//! Only the first MDL of a chain (`Next`) is described: VidMm's paging MDLs are single.

use core::fmt;
use core::marker::PhantomData;
use core::mem::size_of;
use core::ptr::NonNull;

use dxgk_sys::{MDL, PFN_NUMBER};

use crate::NtError;

/// Page size an MDL's PFN array counts in.
const PAGE: u64 = 4096;

/// Why a raw MDL was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MdlError {
    /// The MDL pointer is NULL.
    Null,
    /// The MDL pointer is not aligned for an MDL header.
    Misaligned,
    /// `ByteOffset` is not an offset inside the first page.
    ByteOffset(u32),
    /// `StartVa` is not page aligned (its low bits belong in `ByteOffset`).
    StartVa(usize),
    /// `Size` (the header plus PFN array the MDL was built with) is too small for the pages
    /// `ByteOffset` + `ByteCount` span: the byte count exceeds the PFN array.
    PfnArrayTooShort {
        /// The MDL's `Size` field (as the kernel reads it: unsigned).
        size: u16,
        /// `sizeof(MDL) + 8 × pages spanned`.
        needed: u64,
    },
}

impl fmt::Display for MdlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MdlError::Null => write!(f, "NULL MDL"),
            MdlError::Misaligned => write!(f, "misaligned MDL header"),
            MdlError::ByteOffset(o) => write!(f, "MDL ByteOffset {o:#x} is not inside a page"),
            MdlError::StartVa(va) => write!(f, "MDL StartVa {va:#x} is not page aligned"),
            MdlError::PfnArrayTooShort { size, needed } => write!(
                f,
                "MDL Size {size} holds fewer PFNs than its byte count spans ({needed} bytes needed)"
            ),
        }
    }
}

impl From<MdlError> for NtError {
    fn from(_: MdlError) -> Self {
        NtError::INVALID_PARAMETER
    }
}

/// Size in bytes of an MDL header followed by `pages` PFNs.
const fn mdl_size(pages: u64) -> u64 {
    size_of::<MDL>() as u64 + pages * size_of::<PFN_NUMBER>() as u64
}

/// A borrowed, validated MDL: its byte range and the PFNs of the pages that range spans.
///
/// # Invariants
/// `header` points to the MDL the view was made from (only [`Mdl::as_ptr`] uses it after
/// validation); `byte_offset` and `byte_count` are its fields as read then, `byte_offset <
/// 4096`; `pfns` is its PFN array cut to exactly the pages that byte range spans, unchanged
/// for `'a`.
#[derive(Clone, Copy)]
pub struct Mdl<'a> {
    header: NonNull<MDL>,
    byte_offset: u32,
    byte_count: u32,
    pfns: &'a [PFN_NUMBER],
    _mdl: PhantomData<&'a MDL>,
}

impl fmt::Debug for Mdl<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mdl")
            .field("at", &self.header)
            .field("byte_offset", &self.byte_offset)
            .field("byte_count", &self.byte_count)
            .field("pages", &self.pfns.len())
            .finish()
    }
}

impl<'a> Mdl<'a> {
    /// Validates the MDL at `mdl` once and borrows it for `'a`.
    ///
    /// Refuses a NULL or misaligned pointer, a `ByteOffset` outside the first page, a
    /// `StartVa` that is not page aligned, and an MDL whose `Size` is too small for the PFNs its
    /// byte range spans. `Size` is a 16-bit field (`MmInitializeMdl` stores
    /// `(CSHORT)(sizeof(MDL) + 8 × pages)`), so it can only vouch for MDLs of up to
    /// (65535 − 48) / 8 = 8185 pages; for larger ones it must hold exactly that truncated value,
    /// and the PFN array's length rests on the safety contract below.
    ///
    /// # Safety
    /// A non-NULL `mdl` must point to a readable MDL header followed by its PFN array: at
    /// least `Size` bytes in all (at least the header and one PFN per page its byte range spans
    /// when that exceeds what `Size` can record), as Mm builds MDLs and as Dxgkrnl passes them.
    /// The MDL must stay allocated and its PFN array unchanged for `'a` (the header's mapping
    /// state may change: the view keeps its own copy of what it read).
    pub unsafe fn from_raw(mdl: *mut MDL) -> Result<Mdl<'a>, MdlError> {
        let header = NonNull::new(mdl).ok_or(MdlError::Null)?;
        if !header.as_ptr().is_aligned() {
            return Err(MdlError::Misaligned);
        }
        // SAFETY: non-NULL and aligned; the caller guarantees a readable header.
        let h = unsafe { header.read() };
        if u64::from(h.ByteOffset) >= PAGE {
            return Err(MdlError::ByteOffset(h.ByteOffset));
        }
        let start_va = h.StartVa as usize;
        if !(start_va as u64).is_multiple_of(PAGE) {
            return Err(MdlError::StartVa(start_va));
        }
        // u32 + u32 cannot wrap a u64: pages ≤ 2^20 + 1, needed ≤ 48 + 8 × that.
        let pages = (u64::from(h.ByteOffset) + u64::from(h.ByteCount)).div_ceil(PAGE);
        let needed = mdl_size(pages);
        let size = h.Size as u16;
        let fits = if needed <= u64::from(u16::MAX) {
            u64::from(size) >= needed
        } else {
            size == needed as u16
        };
        if !fits {
            return Err(MdlError::PfnArrayTooShort { size, needed });
        }
        let pages =
            usize::try_from(pages).map_err(|_| MdlError::PfnArrayTooShort { size, needed })?;
        // The PFN array follows the header (MmGetMdlPfnArray); `header.add(1)` stays inside the
        // allocation, which holds the header and `pages` PFNs (checked above / the contract).
        let array = header.as_ptr().wrapping_add(1).cast::<PFN_NUMBER>();
        // SAFETY: `array` is aligned (MDL is 8-aligned and 48 bytes long, PFN_NUMBER is 8-aligned)
        // and points to `pages` initialized PFNs readable for `'a` (see above); `pages * 8`
        // is at most 8 MiB + 8, far below isize::MAX.
        let pfns = unsafe { core::slice::from_raw_parts(array, pages) };
        // INVARIANT: the header is valid for 'a, `pfns` is exactly the spanned pages,
        // ByteOffset < 4096.
        Ok(Mdl {
            header,
            byte_offset: h.ByteOffset,
            byte_count: h.ByteCount,
            pfns,
            _mdl: PhantomData,
        })
    }

    /// The raw MDL, to pass back to Dxgkrnl (e.g. `DxgkCbMapMdlToIoMmu`).
    pub fn as_ptr(&self) -> *mut MDL {
        self.header.as_ptr()
    }

    /// The MDL header pointer (non-NULL).
    pub(crate) fn header(&self) -> NonNull<MDL> {
        self.header
    }

    /// Pages the byte range spans (the usable length of the PFN array).
    pub fn page_count(&self) -> usize {
        self.pfns.len()
    }

    /// `ByteCount`: bytes described, starting `byte_offset()` bytes into the first page.
    pub fn byte_count(&self) -> u32 {
        self.byte_count
    }

    /// `ByteOffset`: where the described bytes start in the first page (< 4096).
    pub fn byte_offset(&self) -> u32 {
        self.byte_offset
    }

    /// PFN of page `i` of the span, or `None` past it.
    pub fn pfn(&self, i: usize) -> Option<u64> {
        self.pfns.get(i).map(|&p| p as u64)
    }

    /// Every PFN of the span, in order.
    pub fn pfns(&self) -> Pfns<'a> {
        Pfns {
            inner: self.pfns.iter(),
        }
    }

    /// The PFNs of pages `first..first + n` of the span, or `None` if that runs past it (or
    /// overflows).
    pub fn pfns_from(&self, first: usize, n: usize) -> Option<Pfns<'a>> {
        let end = first.checked_add(n)?;
        self.pfns.get(first..end).map(|s| Pfns { inner: s.iter() })
    }
}

/// Iterator over PFNs of an [`Mdl`] (never past the span it was made for).
#[derive(Clone, Debug)]
pub struct Pfns<'a> {
    inner: core::slice::Iter<'a, PFN_NUMBER>,
}

impl Iterator for Pfns<'_> {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        self.inner.next().map(|&p| p as u64)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl DoubleEndedIterator for Pfns<'_> {
    fn next_back(&mut self) -> Option<u64> {
        self.inner.next_back().map(|&p| p as u64)
    }
}

impl ExactSizeIterator for Pfns<'_> {}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec;
    use std::vec::Vec;

    /// An MDL as Mm builds it: header, then one PFN per spanned page (`extra` more words of
    /// room), with `Size` as given.
    fn build(size: i16, offset: u32, count: u32, pfns: usize) -> Vec<u64> {
        let mut words = vec![0u64; size_of::<MDL>() / 8 + pfns];
        for (i, w) in words[size_of::<MDL>() / 8..].iter_mut().enumerate() {
            *w = 0x100 + i as u64;
        }
        let h = MDL {
            Size: size,
            ByteOffset: offset,
            ByteCount: count,
            StartVa: 0x7000_0000 as _,
            ..Default::default()
        };
        // SAFETY: `words` holds at least a header's worth of 8-aligned bytes.
        unsafe { words.as_mut_ptr().cast::<MDL>().write(h) };
        words
    }

    fn view(words: &mut [u64]) -> Result<Mdl<'_>, MdlError> {
        // SAFETY: `words` is an MDL header followed by room for the PFNs it claims (the tests
        // below keep Size within the allocation).
        unsafe { Mdl::from_raw(words.as_mut_ptr().cast()) }
    }

    #[test]
    fn a_well_formed_mdl_yields_exactly_its_spanned_pfns() {
        let mut w = build(48 + 3 * 8, 0x800, 2 * 4096, 3);
        let m = view(&mut w).unwrap();
        assert_eq!(
            (m.page_count(), m.byte_offset(), m.byte_count()),
            (3, 0x800, 8192)
        );
        assert_eq!(m.pfns().collect::<Vec<_>>(), [0x100, 0x101, 0x102]);
        assert_eq!(m.pfn(2), Some(0x102));
        assert_eq!(m.pfn(3), None);
        assert_eq!(
            m.pfns_from(1, 2).unwrap().collect::<Vec<_>>(),
            [0x101, 0x102]
        );
        assert!(m.pfns_from(2, 2).is_none());
        assert!(m.pfns_from(usize::MAX, 2).is_none());
        assert_eq!(m.pfns_from(3, 0).unwrap().len(), 0);
    }

    #[test]
    fn malformed_headers_are_refused() {
        assert_eq!(
            // SAFETY: NULL is refused before any read.
            unsafe { Mdl::from_raw(core::ptr::null_mut()) }.unwrap_err(),
            MdlError::Null
        );
        // Byte count exceeding the PFN array: 3 pages spanned, room (Size) for 2.
        let mut w = build(48 + 2 * 8, 0x800, 2 * 4096, 3);
        assert_eq!(
            view(&mut w).unwrap_err(),
            MdlError::PfnArrayTooShort {
                size: 64,
                needed: 72
            }
        );
        let mut w = build(0, 0, 4096, 1);
        assert!(matches!(
            view(&mut w),
            Err(MdlError::PfnArrayTooShort { .. })
        ));
        let mut w = build(48 + 8, 4096, 1, 1);
        assert_eq!(view(&mut w).unwrap_err(), MdlError::ByteOffset(4096));
        let mut w = build(48 + 8, u32::MAX, u32::MAX, 1);
        assert_eq!(view(&mut w).unwrap_err(), MdlError::ByteOffset(u32::MAX));
        let mut w = build(48 + 8, 0, 4096, 1);
        // SAFETY: overwriting a field of the header written by `build`.
        unsafe { (*w.as_mut_ptr().cast::<MDL>()).StartVa = 0x7000_0010 as _ };
        assert_eq!(view(&mut w).unwrap_err(), MdlError::StartVa(0x7000_0010));
    }

    #[test]
    fn large_mdls_carry_the_truncated_size_mminitializemdl_stores() {
        // 16384 pages (64 MiB): 48 + 131072 bytes, stored as (CSHORT)131120 = 48.
        let pages = 16384;
        let needed = 48 + 8 * pages as u64;
        let mut w = build(needed as u16 as i16, 0, (pages * 4096) as u32, pages);
        let m = view(&mut w).unwrap();
        assert_eq!(m.page_count(), pages);
        assert_eq!(m.pfns().next_back(), Some(0x100 + pages as u64 - 1));
        // Any other value cannot be that MDL's header.
        let mut w = build(0x7FFF, 0, (pages * 4096) as u32, pages);
        assert!(matches!(
            view(&mut w),
            Err(MdlError::PfnArrayTooShort { .. })
        ));
        // 4090..8185 pages: Size is "negative" as a CSHORT but read unsigned.
        let pages = 5000;
        let mut w = build(
            (48 + 8 * pages) as u16 as i16,
            0,
            (pages * 4096) as u32,
            pages,
        );
        assert_eq!(view(&mut w).unwrap().page_count(), pages);
    }
}
