//! Static checks on the `rgpu.sys` PE image.
//!
//! The cross flavour links `rgpu.sys` with a non-Microsoft toolchain, so nothing in
//! the build itself guarantees the properties that Windows and the HLK expect of a
//! kernel driver image. This crate reads the finished image and checks them:
//!
//! 1. **PE32+ for x86-64, subsystem NATIVE.** The kernel loader only maps images
//!    built for the running machine, and a `.sys` must be a NATIVE (1) image: it runs
//!    without any user-mode subsystem. A cdylib linked as a DLL gets WINDOWS_GUI (2)
//!    unless the linker is told `/SUBSYSTEM:NATIVE`.
//! 2. **Entry point is `DriverEntry`.** The I/O manager calls the image's
//!    `AddressOfEntryPoint` as `DriverEntry(DriverObject, RegistryPath)`. A DLL
//!    link defaults the entry point to `_DllMainCRTStartup` (or none at all), which
//!    would be called with the wrong signature. The image is a cdylib, so
//!    `DriverEntry` is exported and the entry point must be that export's address.
//! 3. **NX_COMPAT and DYNAMIC_BASE.** Required for drivers to load with HVCI /
//!    memory integrity and expected by the HLK; HIGH_ENTROPY_VA and FORCE_INTEGRITY
//!    are reported for information.
//! 4. **Imports only from `ntoskrnl.exe` and `hal.dll`.** A kernel image can only
//!    bind to kernel-mode modules; an import from a user-mode DLL such as
//!    `kernel32.dll` (a stray `std` or CRT dependency) makes the load fail with
//!    STATUS_DRIVER_ENTRYPOINT_NOT_FOUND / image-not-found. Others may be allowed
//!    on the command line.
//! 5. **No banned memory-management imports.** The HLK test for IOMMU-isolated WDDM
//!    drivers (GPU-P / IOMMU DMA remapping) scans the driver's import table: a driver
//!    that opts into IOMMU isolation must let Dxgkrnl own its DMA-visible memory, so it
//!    may not allocate, lock or free physical pages itself with
//!    `MmAllocatePagesForMdl(Ex)`, `MmAllocateContiguousMemory*`,
//!    `MmFreeContiguousMemory`, `MmFreePagesFromMdl` or `MmProbeAndLockPages`
//!    (the NUMA variant `MmAllocateContiguousMemorySpecifyCacheNode` is banned here
//!    too). Imports by ordinal are also rejected: they would hide a banned name, and
//!    kernel imports are always by name.
//! 6. Information only: the section table and every import per DLL.
//!
//! Entry points: [`check_image`] for the whole report, [`parse_image`] plus the
//! individual `check_*` functions for one check at a time.

use std::fmt;

use object::pe;
use object::read::pe::{ExportTarget, ImageNtHeaders, ImageOptionalHeader, Import, PeFile};
use object::LittleEndian as LE;

/// DLLs a kernel driver may always import from (compared case-insensitively).
pub const DEFAULT_ALLOWED_DLLS: &[&str] = &["ntoskrnl.exe", "hal.dll"];

/// Imports that the HLK import scan rejects for IOMMU-isolated WDDM drivers, plus
/// the NUMA variant of `MmAllocateContiguousMemorySpecifyCache`.
pub const BANNED_IMPORTS: &[&str] = &[
    "MmAllocatePagesForMdl",
    "MmAllocatePagesForMdlEx",
    "MmAllocateContiguousMemory",
    "MmAllocateContiguousMemorySpecifyCache",
    "MmAllocateContiguousMemorySpecifyCacheNode",
    "MmFreeContiguousMemory",
    "MmFreePagesFromMdl",
    "MmProbeAndLockPages",
];

/// The name of the export that must be the image's entry point.
pub const DRIVER_ENTRY: &str = "DriverEntry";

/// `IMAGE_SUBSYSTEM_NATIVE`.
pub const SUBSYSTEM_NATIVE: u16 = pe::IMAGE_SUBSYSTEM_NATIVE.0;
/// `IMAGE_DLLCHARACTERISTICS_NX_COMPAT`.
pub const DLL_NX_COMPAT: u16 = pe::IMAGE_DLLCHARACTERISTICS_NX_COMPAT.0;
/// `IMAGE_DLLCHARACTERISTICS_DYNAMIC_BASE`.
pub const DLL_DYNAMIC_BASE: u16 = pe::IMAGE_DLLCHARACTERISTICS_DYNAMIC_BASE.0;
/// `IMAGE_DLLCHARACTERISTICS_HIGH_ENTROPY_VA`.
pub const DLL_HIGH_ENTROPY_VA: u16 = pe::IMAGE_DLLCHARACTERISTICS_HIGH_ENTROPY_VA.0;
/// `IMAGE_DLLCHARACTERISTICS_FORCE_INTEGRITY`.
pub const DLL_FORCE_INTEGRITY: u16 = pe::IMAGE_DLLCHARACTERISTICS_FORCE_INTEGRITY.0;

/// Options for [`check_image`].
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// DLLs allowed in addition to [`DEFAULT_ALLOWED_DLLS`] (case-insensitive).
    pub extra_allowed_dlls: Vec<String>,
}

/// Which check a [`CheckResult`] belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CheckName {
    /// The file could be parsed as a PE image at all.
    Parse,
    /// PE32+ (optional header magic 0x20b) for x86-64 (machine 0x8664).
    Format,
    /// Subsystem is NATIVE (1).
    Subsystem,
    /// AddressOfEntryPoint is the exported `DriverEntry`.
    EntryPoint,
    /// DllCharacteristics has NX_COMPAT and DYNAMIC_BASE.
    DllCharacteristics,
    /// Imports come only from allowed DLLs.
    ImportDlls,
    /// No import is in [`BANNED_IMPORTS`].
    BannedImports,
    /// Every import is by name, none by ordinal.
    ImportsByName,
    /// User-mode image mode ([`check_user_image`]): every required `dll!symbol` is imported.
    RequiredImports,
}

impl CheckName {
    /// Short stable name, as printed by the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckName::Parse => "parse",
            CheckName::Format => "format",
            CheckName::Subsystem => "subsystem",
            CheckName::EntryPoint => "entry-point",
            CheckName::DllCharacteristics => "dll-characteristics",
            CheckName::ImportDlls => "import-dlls",
            CheckName::BannedImports => "banned-imports",
            CheckName::ImportsByName => "imports-by-name",
            CheckName::RequiredImports => "required-imports",
        }
    }
}

impl fmt::Display for CheckName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// Which check this is.
    pub name: CheckName,
    /// Whether the image passed it.
    pub passed: bool,
    /// What was found; on failure, names the offending field, import or DLL.
    pub detail: String,
}

impl CheckResult {
    fn pass(name: CheckName, detail: impl Into<String>) -> Self {
        CheckResult {
            name,
            passed: true,
            detail: detail.into(),
        }
    }

    fn fail(name: CheckName, detail: impl Into<String>) -> Self {
        CheckResult {
            name,
            passed: false,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for CheckResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.passed { "PASS" } else { "FAIL" };
        write!(f, "{verdict} {}: {}", self.name, self.detail)
    }
}

/// All check results for one image, plus informational lines.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// One entry per check, in order.
    pub results: Vec<CheckResult>,
    /// Information that is not pass/fail (sections, imports, optional flags).
    pub info: Vec<String>,
}

impl Report {
    /// True when every check passed (and there was at least one).
    pub fn passed(&self) -> bool {
        !self.results.is_empty() && self.results.iter().all(|r| r.passed)
    }

    /// The result of the named check, if it ran.
    pub fn get(&self, name: CheckName) -> Option<&CheckResult> {
        self.results.iter().find(|r| r.name == name)
    }

    /// The checks that failed.
    pub fn failures(&self) -> impl Iterator<Item = &CheckResult> {
        self.results.iter().filter(|r| !r.passed)
    }
}

/// A section header, as far as the checks care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionInfo {
    /// Section name (lossy UTF-8).
    pub name: String,
    /// RVA of the section.
    pub virtual_address: u32,
    /// VirtualSize.
    pub virtual_size: u32,
    /// SizeOfRawData.
    pub raw_size: u32,
    /// Characteristics (`IMAGE_SCN_*`).
    pub characteristics: u32,
}

/// One imported symbol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportedSymbol {
    /// Import by name.
    Name(String),
    /// Import by ordinal.
    Ordinal(u16),
}

impl fmt::Display for ImportedSymbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImportedSymbol::Name(name) => f.write_str(name),
            ImportedSymbol::Ordinal(ordinal) => write!(f, "#{ordinal}"),
        }
    }
}

/// The imports from one DLL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedDll {
    /// The DLL name as written in the image.
    pub dll: String,
    /// True for a delay-load import descriptor.
    pub delay_load: bool,
    /// The imported symbols, in table order.
    pub symbols: Vec<ImportedSymbol>,
}

/// One export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportInfo {
    /// Export name; `None` for an export by ordinal only.
    pub name: Option<String>,
    /// RVA of the export; `None` for a forwarder.
    pub rva: Option<u32>,
}

/// The facts about an image that the checks look at, read once by [`parse_image`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// FileHeader.Machine.
    pub machine: u16,
    /// OptionalHeader.Magic (0x10b PE32, 0x20b PE32+).
    pub magic: u16,
    /// OptionalHeader.Subsystem.
    pub subsystem: u16,
    /// OptionalHeader.DllCharacteristics.
    pub dll_characteristics: u16,
    /// OptionalHeader.AddressOfEntryPoint.
    pub entry_point: u32,
    /// Section table.
    pub sections: Vec<SectionInfo>,
    /// Export table (empty if there is none).
    pub exports: Vec<ExportInfo>,
    /// Import and delay-load import tables.
    pub imports: Vec<ImportedDll>,
}

/// Why an image could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}

fn perr(what: &str, e: object::read::Error) -> ParseError {
    ParseError(format!("{what}: {e}"))
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Parse a PE32 or PE32+ image into an [`Image`]. Never panics on malformed input.
pub fn parse_image(bytes: &[u8]) -> Result<Image, ParseError> {
    let magic =
        object::read::pe::optional_header_magic(bytes).map_err(|e| perr("not a PE image", e))?;
    match magic {
        pe::IMAGE_NT_OPTIONAL_HDR64_MAGIC => parse_as::<pe::ImageNtHeaders64>(bytes),
        pe::IMAGE_NT_OPTIONAL_HDR32_MAGIC => parse_as::<pe::ImageNtHeaders32>(bytes),
        other => Err(ParseError(format!(
            "unknown optional header magic {other:#x}"
        ))),
    }
}

fn parse_as<Pe: ImageNtHeaders>(bytes: &[u8]) -> Result<Image, ParseError> {
    let file = PeFile::<Pe>::parse(bytes).map_err(|e| perr("not a PE image", e))?;
    let nt = file.nt_headers();
    let opt = nt.optional_header();

    // A truncated file (an interrupted copy) can still have readable tables while its
    // last section's raw data runs past the end; the loader would reject it.
    for s in file.section_table().iter() {
        let start = u64::from(s.pointer_to_raw_data.get(LE));
        let end = start + u64::from(s.size_of_raw_data.get(LE));
        if end > bytes.len() as u64 {
            return Err(ParseError(format!(
                "truncated: section {} raw data ends at {end:#x}, file is {:#x} bytes",
                lossy(s.raw_name()),
                bytes.len()
            )));
        }
    }

    let sections = file
        .section_table()
        .iter()
        .map(|s| SectionInfo {
            name: lossy(s.raw_name()),
            virtual_address: s.virtual_address.get(LE),
            virtual_size: s.virtual_size.get(LE),
            raw_size: s.size_of_raw_data.get(LE),
            characteristics: s.characteristics.get(LE).0,
        })
        .collect();

    let mut exports = Vec::new();
    if let Some(table) = file
        .export_table()
        .map_err(|e| perr("bad export table", e))?
    {
        for export in table.exports().map_err(|e| perr("bad export table", e))? {
            exports.push(ExportInfo {
                name: export.name.map(lossy),
                rva: match export.target {
                    ExportTarget::Address(rva) => Some(rva),
                    _ => None,
                },
            });
        }
    }

    let mut imports = Vec::new();
    if let Some(table) = file
        .import_table()
        .map_err(|e| perr("bad import table", e))?
    {
        let mut descriptors = table
            .descriptors()
            .map_err(|e| perr("bad import table", e))?;
        while let Some(desc) = descriptors
            .next()
            .map_err(|e| perr("bad import descriptor", e))?
        {
            let dll = lossy(
                table
                    .name(desc.name.get(LE))
                    .map_err(|e| perr("bad import DLL name", e))?,
            );
            // The lookup table (OriginalFirstThunk) survives binding; fall back to
            // the IAT for linkers that leave it zero.
            let first = match desc.original_first_thunk.get(LE) {
                0 => desc.first_thunk.get(LE),
                rva => rva,
            };
            let mut thunks = table
                .thunks(first)
                .map_err(|e| perr(&format!("bad import thunks for {dll}"), e))?;
            let mut symbols = Vec::new();
            while let Some(thunk) = thunks
                .next::<Pe>()
                .map_err(|e| perr(&format!("bad import thunks for {dll}"), e))?
            {
                let import = table
                    .import::<Pe>(thunk)
                    .map_err(|e| perr(&format!("bad import name for {dll}"), e))?;
                symbols.push(symbol(import));
            }
            imports.push(ImportedDll {
                dll,
                delay_load: false,
                symbols,
            });
        }
    }
    if let Some(table) = file
        .delay_load_import_table()
        .map_err(|e| perr("bad delay-load import table", e))?
    {
        let mut descriptors = table
            .descriptors()
            .map_err(|e| perr("bad delay-load import table", e))?;
        while let Some(desc) = descriptors
            .next()
            .map_err(|e| perr("bad delay-load import descriptor", e))?
        {
            let dll = lossy(
                table
                    .name(desc.dll_name_rva.get(LE))
                    .map_err(|e| perr("bad delay-load DLL name", e))?,
            );
            let mut thunks = table
                .thunks(desc.import_name_table_rva.get(LE))
                .map_err(|e| perr(&format!("bad delay-load thunks for {dll}"), e))?;
            let mut symbols = Vec::new();
            while let Some(thunk) = thunks
                .next::<Pe>()
                .map_err(|e| perr(&format!("bad delay-load thunks for {dll}"), e))?
            {
                let import = table
                    .import::<Pe>(thunk)
                    .map_err(|e| perr(&format!("bad delay-load import for {dll}"), e))?;
                symbols.push(symbol(import));
            }
            imports.push(ImportedDll {
                dll,
                delay_load: true,
                symbols,
            });
        }
    }

    Ok(Image {
        machine: nt.file_header().machine.get(LE).0,
        magic: opt.magic(),
        subsystem: opt.subsystem().0,
        dll_characteristics: opt.dll_characteristics().0,
        entry_point: opt.address_of_entry_point(),
        sections,
        exports,
        imports,
    })
}

fn symbol(import: Import<'_>) -> ImportedSymbol {
    match import {
        Import::Name(_hint, name) => ImportedSymbol::Name(lossy(name)),
        Import::Ordinal(ordinal) => ImportedSymbol::Ordinal(ordinal),
    }
}

/// Check 1a: PE32+ image for x86-64.
pub fn check_format(image: &Image) -> CheckResult {
    let is_plus = image.magic == pe::IMAGE_NT_OPTIONAL_HDR64_MAGIC;
    let is_amd64 = image.machine == pe::IMAGE_FILE_MACHINE_AMD64.0;
    let detail = format!(
        "OptionalHeader.Magic={:#x} ({}), FileHeader.Machine={:#06x} ({})",
        image.magic,
        if is_plus { "PE32+" } else { "not PE32+" },
        image.machine,
        if is_amd64 { "x86-64" } else { "not x86-64" },
    );
    if is_plus && is_amd64 {
        CheckResult::pass(CheckName::Format, detail)
    } else {
        CheckResult::fail(CheckName::Format, detail)
    }
}

fn subsystem_name(subsystem: u16) -> &'static str {
    match subsystem {
        0 => "UNKNOWN",
        1 => "NATIVE",
        2 => "WINDOWS_GUI",
        3 => "WINDOWS_CUI",
        8 => "NATIVE_WINDOWS",
        10 => "EFI_APPLICATION",
        11 => "EFI_BOOT_SERVICE_DRIVER",
        12 => "EFI_RUNTIME_DRIVER",
        16 => "WINDOWS_BOOT_APPLICATION",
        _ => "other",
    }
}

/// Check 1b: Subsystem is IMAGE_SUBSYSTEM_NATIVE.
pub fn check_subsystem(image: &Image) -> CheckResult {
    let detail = format!(
        "OptionalHeader.Subsystem={} ({}), expected {SUBSYSTEM_NATIVE} (NATIVE)",
        image.subsystem,
        subsystem_name(image.subsystem)
    );
    if image.subsystem == SUBSYSTEM_NATIVE {
        CheckResult::pass(CheckName::Subsystem, detail)
    } else {
        CheckResult::fail(CheckName::Subsystem, detail)
    }
}

/// Check 2: AddressOfEntryPoint is the RVA of the exported `DriverEntry`.
pub fn check_entry_point(image: &Image) -> CheckResult {
    let entry = image.entry_point;
    let at_entry: Vec<&str> = image
        .exports
        .iter()
        .filter(|e| e.rva == Some(entry))
        .filter_map(|e| e.name.as_deref())
        .collect();
    let at_entry = if at_entry.is_empty() {
        "no export".to_string()
    } else {
        at_entry.join(", ")
    };
    let driver_entry = image
        .exports
        .iter()
        .find(|e| e.name.as_deref() == Some(DRIVER_ENTRY));
    match driver_entry {
        None => CheckResult::fail(
            CheckName::EntryPoint,
            format!("no export named {DRIVER_ENTRY}; AddressOfEntryPoint={entry:#x} ({at_entry})"),
        ),
        Some(ExportInfo { rva: None, .. }) => CheckResult::fail(
            CheckName::EntryPoint,
            format!("{DRIVER_ENTRY} is a forwarder, not code in this image"),
        ),
        Some(ExportInfo { rva: Some(rva), .. }) if *rva == entry => CheckResult::pass(
            CheckName::EntryPoint,
            format!("AddressOfEntryPoint={entry:#x} = {DRIVER_ENTRY}"),
        ),
        Some(ExportInfo { rva: Some(rva), .. }) => CheckResult::fail(
            CheckName::EntryPoint,
            format!(
                "AddressOfEntryPoint={entry:#x} ({at_entry}) but {DRIVER_ENTRY} is at {rva:#x}"
            ),
        ),
    }
}

/// Check 3: DllCharacteristics has NX_COMPAT and DYNAMIC_BASE.
pub fn check_dll_characteristics(image: &Image) -> CheckResult {
    let flags = image.dll_characteristics;
    let missing: Vec<&str> = [
        (DLL_NX_COMPAT, "NX_COMPAT"),
        (DLL_DYNAMIC_BASE, "DYNAMIC_BASE"),
    ]
    .iter()
    .filter(|(bit, _)| flags & bit == 0)
    .map(|(_, name)| *name)
    .collect();
    if missing.is_empty() {
        CheckResult::pass(
            CheckName::DllCharacteristics,
            format!("DllCharacteristics={flags:#06x} has NX_COMPAT, DYNAMIC_BASE"),
        )
    } else {
        CheckResult::fail(
            CheckName::DllCharacteristics,
            format!(
                "DllCharacteristics={flags:#06x} lacks {}",
                missing.join(", ")
            ),
        )
    }
}

fn dll_allowed(dll: &str, opts: &Options) -> bool {
    DEFAULT_ALLOWED_DLLS
        .iter()
        .copied()
        .chain(opts.extra_allowed_dlls.iter().map(String::as_str))
        .any(|allowed| allowed.eq_ignore_ascii_case(dll))
}

fn descriptor_label(dll: &ImportedDll) -> String {
    if dll.delay_load {
        format!("{} (delay-load)", dll.dll)
    } else {
        dll.dll.clone()
    }
}

/// Check 4: every import descriptor names an allowed DLL.
pub fn check_import_dlls(image: &Image, opts: &Options) -> CheckResult {
    let bad: Vec<String> = image
        .imports
        .iter()
        .filter(|d| !dll_allowed(&d.dll, opts))
        .map(|d| {
            // Name a few symbols so the culprit is findable; the INFO lines list all.
            const SHOWN: usize = 4;
            let mut symbols: Vec<String> = d
                .symbols
                .iter()
                .take(SHOWN)
                .map(ToString::to_string)
                .collect();
            if d.symbols.len() > SHOWN {
                symbols.push(format!("+{} more", d.symbols.len() - SHOWN));
            }
            format!("{} [{}]", descriptor_label(d), symbols.join(", "))
        })
        .collect();
    if bad.is_empty() {
        let dlls: Vec<String> = image.imports.iter().map(descriptor_label).collect();
        let dlls = if dlls.is_empty() {
            "no imports".to_string()
        } else {
            dlls.join(", ")
        };
        CheckResult::pass(CheckName::ImportDlls, format!("imports from {dlls}"))
    } else {
        CheckResult::fail(
            CheckName::ImportDlls,
            format!("imports from disallowed DLL(s): {}", bad.join("; ")),
        )
    }
}

/// Check 5a: no import is one of [`BANNED_IMPORTS`] (exact, case-sensitive, as the
/// kernel's export names are).
pub fn check_banned_imports(image: &Image) -> CheckResult {
    let mut bad = Vec::new();
    for dll in &image.imports {
        for symbol in &dll.symbols {
            if let ImportedSymbol::Name(name) = symbol {
                if BANNED_IMPORTS.contains(&name.as_str()) {
                    bad.push(format!("{}!{name}", dll.dll));
                }
            }
        }
    }
    if bad.is_empty() {
        CheckResult::pass(
            CheckName::BannedImports,
            "none of the HLK IOMMU-isolation banned imports",
        )
    } else {
        CheckResult::fail(
            CheckName::BannedImports,
            format!("banned import(s): {}", bad.join(", ")),
        )
    }
}

/// Check 5b: no import by ordinal.
pub fn check_imports_by_name(image: &Image) -> CheckResult {
    let mut bad = Vec::new();
    for dll in &image.imports {
        for symbol in &dll.symbols {
            if let ImportedSymbol::Ordinal(ordinal) = symbol {
                bad.push(format!("{}!#{ordinal}", dll.dll));
            }
        }
    }
    if bad.is_empty() {
        CheckResult::pass(CheckName::ImportsByName, "all imports by name")
    } else {
        CheckResult::fail(
            CheckName::ImportsByName,
            format!("import(s) by ordinal: {}", bad.join(", ")),
        )
    }
}

fn section_flags(characteristics: u32) -> String {
    const NAMES: &[(u32, &str)] = &[
        (0x0000_0020, "CODE"),
        (0x0000_0040, "IDATA"),
        (0x0000_0080, "UDATA"),
        (0x0200_0000, "DISCARDABLE"),
        (0x0800_0000, "NOT_PAGED"),
        (0x2000_0000, "EXECUTE"),
        (0x4000_0000, "READ"),
        (0x8000_0000, "WRITE"),
    ];
    let names: Vec<&str> = NAMES
        .iter()
        .filter(|(bit, _)| characteristics & bit != 0)
        .map(|(_, name)| *name)
        .collect();
    names.join("|")
}

/// Information lines: optional DllCharacteristics flags, sections, and imports per DLL.
pub fn info_lines(image: &Image) -> Vec<String> {
    let mut info = Vec::new();
    let flag = |bit: u16| {
        if image.dll_characteristics & bit != 0 {
            "yes"
        } else {
            "no"
        }
    };
    info.push(format!(
        "dll-characteristics: HIGH_ENTROPY_VA={}, FORCE_INTEGRITY={}",
        flag(DLL_HIGH_ENTROPY_VA),
        flag(DLL_FORCE_INTEGRITY)
    ));
    for s in &image.sections {
        let wx = if s.characteristics & 0xA000_0000 == 0xA000_0000 {
            " (writable+executable)"
        } else {
            ""
        };
        info.push(format!(
            "section {:<8} rva={:#010x} vsize={:#x} raw={:#x} flags={:#010x} [{}]{wx}",
            s.name,
            s.virtual_address,
            s.virtual_size,
            s.raw_size,
            s.characteristics,
            section_flags(s.characteristics)
        ));
    }
    for dll in &image.imports {
        let symbols: Vec<String> = dll.symbols.iter().map(ToString::to_string).collect();
        info.push(format!(
            "imports {} ({}): {}",
            descriptor_label(dll),
            symbols.len(),
            symbols.join(", ")
        ));
    }
    info
}

/// One import a user-mode image must have: `dll!symbol`, e.g. `gdi32.dll!D3DKMTCreateAllocation2`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequiredImport {
    /// DLL name (compared case-insensitively).
    pub dll: String,
    /// Symbol, imported by name.
    pub symbol: String,
}

impl RequiredImport {
    /// Parses `dll!symbol`.
    pub fn parse(s: &str) -> Option<Self> {
        let (dll, symbol) = s.split_once('!')?;
        (!dll.is_empty() && !symbol.is_empty()).then(|| RequiredImport {
            dll: dll.to_string(),
            symbol: symbol.to_string(),
        })
    }
}

impl fmt::Display for RequiredImport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}!{}", self.dll, self.symbol)
    }
}

/// Checks every `required` import is in the import table (not delay-loaded: bound at load).
pub fn check_required_imports(image: &Image, required: &[RequiredImport]) -> CheckResult {
    let missing: Vec<String> = required
        .iter()
        .filter(|r| {
            !image.imports.iter().any(|d| {
                !d.delay_load
                    && d.dll.eq_ignore_ascii_case(&r.dll)
                    && d.symbols.contains(&ImportedSymbol::Name(r.symbol.clone()))
            })
        })
        .map(|r| r.to_string())
        .collect();
    let names: Vec<String> = required.iter().map(|r| r.to_string()).collect();
    if required.is_empty() {
        CheckResult::fail(CheckName::RequiredImports, "no import required")
    } else if missing.is_empty() {
        CheckResult::pass(CheckName::RequiredImports, names.join(", "))
    } else {
        CheckResult::fail(
            CheckName::RequiredImports,
            format!("not imported: {}", missing.join(", ")),
        )
    }
}

/// A report of `checks` on a parsed image, after the parse result; a file that cannot be
/// parsed yields a single failed [`CheckName::Parse`] result.
fn report_on(bytes: &[u8], checks: impl FnOnce(&Image) -> Vec<CheckResult>) -> Report {
    match parse_image(bytes) {
        Err(e) => Report {
            results: vec![CheckResult::fail(CheckName::Parse, e.0)],
            info: Vec::new(),
        },
        Ok(image) => {
            let mut results = vec![CheckResult::pass(
                CheckName::Parse,
                format!("{} bytes", bytes.len()),
            )];
            results.extend(checks(&image));
            Report {
                results,
                info: info_lines(&image),
            }
        }
    }
}

/// The user-mode image mode (`pe-check --require-import DLL!SYMBOL ...`): the image parses, is
/// PE32+ x86-64, and imports every `required` symbol. None of the driver checks apply.
pub fn check_user_image(bytes: &[u8], required: &[RequiredImport]) -> Report {
    report_on(bytes, |image| {
        vec![check_format(image), check_required_imports(image, required)]
    })
}

/// Run every check on an image. A file that cannot be parsed yields a report with a
/// single failed [`CheckName::Parse`] result.
pub fn check_image(bytes: &[u8], opts: &Options) -> Report {
    report_on(bytes, |image| {
        vec![
            check_format(image),
            check_subsystem(image),
            check_entry_point(image),
            check_dll_characteristics(image),
            check_import_dlls(image, opts),
            check_banned_imports(image),
            check_imports_by_name(image),
        ]
    })
}
