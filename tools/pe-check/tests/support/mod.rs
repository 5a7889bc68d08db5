//! Synthetic PE images for the tests, laid out by `object::write::pe::Writer`.
//!
//! The writer handles the DOS header, NT headers, section table and alignment; the
//! export and import directories are assembled here by hand (object has no writer for
//! them), following the PE/COFF spec:
//!
//! ```text
//! .text   0x40 bytes of `ret`; DriverEntry at +0x00, DxgkHelper at +0x10
//! .edata  IMAGE_EXPORT_DIRECTORY, address table, name pointer table (sorted),
//!         ordinal table, DLL name, export names
//! .idata  IMAGE_IMPORT_DESCRIPTOR[n + 1 null], then per DLL the lookup table and the
//!         IAT (identical before binding), then hint/name entries and DLL names
//! ```

use object::pe;
use object::write::pe::{NtHeaders, Writer};

/// One import thunk.
#[derive(Debug, Clone)]
pub enum Sym {
    /// Import by name (hint 0).
    Name(&'static str),
    /// Import by ordinal.
    Ordinal(u16),
}

/// What to put in a synthetic image.
#[derive(Debug, Clone)]
pub struct Spec {
    /// PE32+ (true) or PE32 (false).
    pub is_64: bool,
    /// FileHeader.Machine.
    pub machine: u16,
    /// OptionalHeader.Subsystem.
    pub subsystem: u16,
    /// OptionalHeader.DllCharacteristics.
    pub dll_characteristics: u16,
    /// AddressOfEntryPoint, as an offset into `.text`.
    pub entry_offset: u32,
    /// Exports: name and offset into `.text`.
    pub exports: Vec<(&'static str, u32)>,
    /// Imports per DLL.
    pub imports: Vec<(&'static str, Vec<Sym>)>,
}

/// Offset of `DriverEntry` in `.text`.
pub const DRIVER_ENTRY_OFFSET: u32 = 0x00;
/// Offset of the second exported function in `.text`.
pub const HELPER_OFFSET: u32 = 0x10;
/// Size of `.text`.
const TEXT_SIZE: u32 = 0x40;

impl Spec {
    /// An image that passes every check: PE32+ x86-64, NATIVE, entry point at the
    /// exported `DriverEntry`, NX + DYNAMIC_BASE (+ HIGH_ENTROPY_VA), imports by name
    /// from ntoskrnl.exe and hal.dll only.
    pub fn good() -> Self {
        Spec {
            is_64: true,
            machine: pe::IMAGE_FILE_MACHINE_AMD64.0,
            subsystem: pe::IMAGE_SUBSYSTEM_NATIVE.0,
            dll_characteristics: pe::IMAGE_DLLCHARACTERISTICS_NX_COMPAT.0
                | pe::IMAGE_DLLCHARACTERISTICS_DYNAMIC_BASE.0
                | pe::IMAGE_DLLCHARACTERISTICS_HIGH_ENTROPY_VA.0,
            entry_offset: DRIVER_ENTRY_OFFSET,
            exports: vec![
                ("DriverEntry", DRIVER_ENTRY_OFFSET),
                ("DxgkHelper", HELPER_OFFSET),
            ],
            imports: vec![
                (
                    "ntoskrnl.exe",
                    vec![Sym::Name("ExAllocatePoolWithTag"), Sym::Name("DbgPrintEx")],
                ),
                ("HAL.dll", vec![Sym::Name("KeQueryPerformanceCounter")]),
            ],
        }
    }

    /// Add an import, to the existing descriptor for `dll` if there is one.
    pub fn with_import(mut self, dll: &'static str, sym: Sym) -> Self {
        match self.imports.iter_mut().find(|(d, _)| *d == dll) {
            Some((_, syms)) => syms.push(sym),
            None => self.imports.push((dll, vec![sym])),
        }
        self
    }

    /// Lay the image out and return its bytes.
    pub fn build(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = Writer::new(self.is_64, 0x1000, 0x200, &mut out);
        w.reserve_dos_header_and_stub();
        w.reserve_nt_headers(pe::IMAGE_NUMBEROF_DIRECTORY_ENTRIES);
        let section_num =
            1 + u16::from(!self.exports.is_empty()) + u16::from(!self.imports.is_empty());
        w.reserve_section_headers(section_num);

        let text = w.reserve_text_section(TEXT_SIZE);
        // Sizes do not depend on the base RVA, so lay out at 0 first to reserve.
        let edata = (!self.exports.is_empty()).then(|| {
            let len = self.export_data(0, 0).len() as u32;
            w.reserve_edata_section(len)
        });
        let idata = (!self.imports.is_empty()).then(|| {
            let len = self.import_data(0).len() as u32;
            w.reserve_idata_section(len)
        });

        w.write_dos_header_and_stub().expect("DOS header");
        w.write_nt_headers(NtHeaders {
            machine: pe::Machine(self.machine),
            time_date_stamp: 0,
            // EXECUTABLE_IMAGE | LARGE_ADDRESS_AWARE
            characteristics: pe::FileFlags(0x0002 | 0x0020),
            major_linker_version: 14,
            minor_linker_version: 0,
            address_of_entry_point: text.virtual_address + self.entry_offset,
            image_base: if self.is_64 { 0x1_4000_0000 } else { 0x1_0000 },
            major_operating_system_version: 10,
            minor_operating_system_version: 0,
            major_image_version: 0,
            minor_image_version: 0,
            major_subsystem_version: 10,
            minor_subsystem_version: 0,
            subsystem: pe::Subsystem(self.subsystem),
            dll_characteristics: pe::DllFlags(self.dll_characteristics),
            size_of_stack_reserve: 0x4_0000,
            size_of_stack_commit: 0x1000,
            size_of_heap_reserve: 0,
            size_of_heap_commit: 0,
        });
        w.write_section_headers();
        // `ret` everywhere: the checks never look at code bytes.
        w.write_section(text.file_offset, &[0xC3; TEXT_SIZE as usize]);
        if let Some(edata) = edata {
            let data = self.export_data(edata.virtual_address, text.virtual_address);
            w.write_section(edata.file_offset, &data);
        }
        if let Some(idata) = idata {
            let data = self.import_data(idata.virtual_address);
            w.write_section(idata.file_offset, &data);
        }
        assert_eq!(w.reserved_len(), w.len(), "writer layout mismatch");
        out
    }

    /// The export directory, placed at RVA `base`; function RVAs are `.text`-relative.
    fn export_data(&self, base: u32, text_rva: u32) -> Vec<u8> {
        let mut exports = self.exports.clone();
        exports.sort_by_key(|(name, _)| *name); // name pointer table must be sorted
        let n = exports.len() as u32;
        // Fixed-size part: 40-byte directory, then the three tables.
        let eat = 40;
        let npt = eat + 4 * n;
        let ords = npt + 4 * n;
        let mut buf = vec![0u8; (ords + 2 * n) as usize];
        let dll_name = append_str(&mut buf, "rgpu.sys");

        put32(&mut buf, 12, base + dll_name); // Name
        put32(&mut buf, 16, 1); // Base (first ordinal)
        put32(&mut buf, 20, n); // NumberOfFunctions
        put32(&mut buf, 24, n); // NumberOfNames
        put32(&mut buf, 28, base + eat); // AddressOfFunctions
        put32(&mut buf, 32, base + npt); // AddressOfNames
        put32(&mut buf, 36, base + ords); // AddressOfNameOrdinals
        for (i, (name, offset)) in exports.iter().enumerate() {
            let i = i as u32;
            put32(&mut buf, eat + 4 * i, text_rva + offset);
            let name_off = append_str(&mut buf, name);
            put32(&mut buf, npt + 4 * i, base + name_off);
            put16(&mut buf, ords + 2 * i, i as u16); // index into the address table
        }
        buf
    }

    /// The import directory and its tables, placed at RVA `base`.
    fn import_data(&self, base: u32) -> Vec<u8> {
        let thunk_size: u32 = if self.is_64 { 8 } else { 4 };
        let ordinal_flag: u64 = if self.is_64 { 1 << 63 } else { 1 << 31 };
        // Descriptors (20 bytes each, plus the all-zero terminator), then for each DLL
        // its lookup table and IAT, each `len + 1` thunks (zero-terminated).
        let mut table_offsets = Vec::new();
        let mut next = 20 * (self.imports.len() as u32 + 1);
        for (_, syms) in &self.imports {
            let table_len = thunk_size * (syms.len() as u32 + 1);
            table_offsets.push((next, next + table_len));
            next += 2 * table_len;
        }
        let mut buf = vec![0u8; next as usize];

        for (d, ((dll, syms), (ilt, iat))) in self.imports.iter().zip(&table_offsets).enumerate() {
            let desc = 20 * d as u32;
            for (i, sym) in syms.iter().enumerate() {
                let thunk = match sym {
                    Sym::Ordinal(ordinal) => ordinal_flag | u64::from(*ordinal),
                    Sym::Name(name) => {
                        // IMAGE_IMPORT_BY_NAME: 2-aligned, u16 hint, NUL-terminated name.
                        if buf.len() % 2 == 1 {
                            buf.push(0);
                        }
                        let hint_name = buf.len() as u32;
                        buf.extend_from_slice(&0u16.to_le_bytes());
                        append_str(&mut buf, name);
                        u64::from(base + hint_name)
                    }
                };
                for table in [ilt, iat] {
                    let at = table + thunk_size * i as u32;
                    if self.is_64 {
                        buf[at as usize..at as usize + 8].copy_from_slice(&thunk.to_le_bytes());
                    } else {
                        put32(&mut buf, at, thunk as u32);
                    }
                }
            }
            let name = append_str(&mut buf, dll);
            put32(&mut buf, desc, base + ilt); // OriginalFirstThunk
            put32(&mut buf, desc + 12, base + name); // Name
            put32(&mut buf, desc + 16, base + iat); // FirstThunk
        }
        buf
    }
}

/// Append a NUL-terminated string; return its offset in `buf`.
fn append_str(buf: &mut Vec<u8>, s: &str) -> u32 {
    let at = buf.len() as u32;
    buf.extend_from_slice(s.as_bytes());
    buf.push(0);
    at
}

fn put32(buf: &mut [u8], at: u32, value: u32) {
    buf[at as usize..at as usize + 4].copy_from_slice(&value.to_le_bytes());
}

fn put16(buf: &mut [u8], at: u32, value: u16) {
    buf[at as usize..at as usize + 2].copy_from_slice(&value.to_le_bytes());
}
