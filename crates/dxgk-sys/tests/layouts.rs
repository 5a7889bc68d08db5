//! Layout tests: every struct, field and bit-field of `layouts.json` against the Rust types.
//!
//! Data-driven. `tests/data/layouts.json` is a copy of `../shared/reference/layouts.json`
//! (kept in the repository so a fresh clone is self-contained); `tests/generated/vectors.rs`
//! (written by `tools/gen-dxgk-sys/gen.py`) maps every C access path to a Rust
//! `offset_of!` / field size and every bit-field to its accessor pair. The JSON is parsed at
//! run time, so a wrong generator, a hand edit of the generated code or a new JSON entry
//! shows up here as a failure listing every mismatch (expected vs got).
//!
//! Entries are keyed by the C path as the JSON spells it (`Transfer.Source.pMdl`,
//! `<anonymous union>`); a path that occurs more than once in one struct (two anonymous
//! unions at the same level) gets `#2`, `#3`… in order of appearance.

use std::collections::{BTreeMap, BTreeSet};
use std::mem::MaybeUninit;
use std::path::PathBuf;

use serde_json::Value;

pub struct StructVec {
    pub name: &'static str,
    pub size: usize,
    pub align: usize,
}

pub struct FieldVec {
    pub strukt: &'static str,
    pub path: &'static str,
    pub offset: usize,
    pub size: usize,
}

/// `run(json_storage_offset, json_storage_size)` -> (raw storage bits after `set_X(!0)`,
/// value `X()` reads back), or `None` if the JSON storage unit lies outside the Rust struct.
pub struct BitVec {
    pub strukt: &'static str,
    pub path: &'static str,
    pub run: fn(usize, usize) -> Option<(u64, u64)>,
}

pub struct SubtypeVec {
    pub name: &'static str,
    pub size: usize,
}

/// Size of the place a raw pointer points to (used by `fsize!`).
pub fn pointee_size<T>(_: *const T) -> usize {
    std::mem::size_of::<T>()
}

/// Size of field `$path` of `$t`, from the field's own type (works through unions and
/// packed structs, no value is read).
macro_rules! fsize {
    ($t:ty, $($f:tt)+) => {{
        let v = ::std::mem::MaybeUninit::<$t>::uninit();
        let p = v.as_ptr();
        // SAFETY: only a place projection inside `v` (no read, no reference), which
        // `&raw const` allows for packed and union fields.
        $crate::pointee_size(unsafe { &raw const (*p).$($f)+ })
    }};
}

#[path = "generated/vectors.rs"]
mod vectors;

/// Behavioural bit-field probe: in an all-zero `T`, call the setter with all ones on the
/// holder `H` found at `holder_off`, then read the raw bytes `[off, off + size)` of `T` as a
/// little-endian integer, and read the getter back.
pub fn run_bitfield<T, H>(
    holder_off: usize,
    off: usize,
    size: usize,
    set: fn(&mut H),
    get: fn(&H) -> u64,
) -> Option<(u64, u64)> {
    let t_size = std::mem::size_of::<T>();
    if size > 8 || off + size > t_size || holder_off + std::mem::size_of::<H>() > t_size {
        return None;
    }
    let mut m = MaybeUninit::<T>::zeroed();
    let base = m.as_mut_ptr().cast::<u8>();
    let hp = base.wrapping_add(holder_off).cast::<H>();
    // SAFETY: `hp` is inside `m` (checked above), whose bytes are all initialised (zeroed);
    // `read_unaligned` has no alignment requirement, and all-zero is a valid `H`.
    let mut h = unsafe { hp.read_unaligned() };
    set(&mut h);
    let got = get(&h);
    // SAFETY: same in-bounds pointer; `write_unaligned` has no alignment requirement.
    unsafe { hp.write_unaligned(h) };
    let mut raw = 0u64;
    for i in 0..size {
        // SAFETY: `off + i < size_of::<T>()` (checked above), so the byte is inside `m`.
        let b = unsafe { base.wrapping_add(off + i).read() };
        raw |= u64::from(b) << (8 * i);
    }
    Some((raw, got))
}

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn layouts() -> Value {
    let p = crate_dir().join("tests/data/layouts.json");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).expect("layouts.json parses")
}

fn structs_of(j: &Value) -> &serde_json::Map<String, Value> {
    j["structs"].as_object().expect("structs object")
}

fn u(v: &Value) -> usize {
    v.as_u64().expect("unsigned integer") as usize
}

/// (struct, key) -> JSON field, with `#n` suffixes for repeated paths.
fn json_fields(j: &Value) -> BTreeMap<(String, String), Value> {
    let mut out = BTreeMap::new();
    for (sname, s) in structs_of(j) {
        let mut count: BTreeMap<String, usize> = BTreeMap::new();
        for f in s["fields"].as_array().expect("fields") {
            let name = f["name"].as_str().expect("name").to_string();
            let n = count.entry(name.clone()).or_insert(0);
            *n += 1;
            let key = if *n == 1 { name } else { format!("{name}#{n}") };
            out.insert((sname.clone(), key), f.clone());
        }
    }
    out
}

fn fail_if_any(what: &str, errors: &[String]) {
    if !errors.is_empty() {
        panic!(
            "{} {what} mismatch(es):\n  {}",
            errors.len(),
            errors.join("\n  ")
        );
    }
}

#[test]
fn data_copy_matches_shared_reference() {
    let shared = crate_dir().join("../../../shared/reference/layouts.json");
    let copy = crate_dir().join("tests/data/layouts.json");
    match std::fs::read(&shared) {
        Ok(reference) => {
            let ours = std::fs::read(&copy).expect("tests/data/layouts.json");
            assert!(
                reference == ours,
                "{} differs from {}: rerun `python3 tools/gen-dxgk-sys/gen.py`",
                copy.display(),
                shared.display()
            );
        }
        Err(e) => eprintln!(
            "skipping the comparison with {}: {e} (not present in this checkout); \
             the tests use the copy in tests/data",
            shared.display()
        ),
    }
}

#[test]
fn struct_sizes_and_alignments() {
    let j = layouts();
    let structs = structs_of(&j);
    let mut errors = Vec::new();
    let mut seen = BTreeSet::new();
    for v in vectors::structs() {
        seen.insert(v.name);
        match structs.get(v.name) {
            None => errors.push(format!("{}: Rust struct has no JSON entry", v.name)),
            Some(s) => {
                if u(&s["size"]) != v.size {
                    errors.push(format!(
                        "{}: size expected {} got {}",
                        v.name, s["size"], v.size
                    ));
                }
                if u(&s["align"]) != v.align {
                    errors.push(format!(
                        "{}: align expected {} got {}",
                        v.name, s["align"], v.align
                    ));
                }
            }
        }
    }
    for name in structs.keys() {
        if !seen.contains(name.as_str()) {
            errors.push(format!("{name}: JSON struct has no Rust vector"));
        }
    }
    fail_if_any("struct", &errors);
    // layouts.json revision 3: 148 (revisions 1-2) + 8 DMA-remapping callback arguments.
    assert_eq!(seen.len(), 156, "struct count");
}

/// Every generated type must be a JSON struct or one of the sub-types the vectors cover,
/// so a hand-added type without a layout vector fails.
#[test]
fn every_generated_type_is_covered() {
    let j = layouts();
    let structs = structs_of(&j);
    let src = std::fs::read_to_string(crate_dir().join("src/generated/structs.rs"))
        .expect("src/generated/structs.rs");
    let covered: BTreeSet<&str> = vectors::structs()
        .iter()
        .map(|v| v.name)
        .chain(vectors::subtypes().iter().map(|v| v.name))
        .collect();
    let mut errors = Vec::new();
    for line in src.lines() {
        let t = line.trim_start();
        for kw in ["pub struct ", "pub union ", "pub type "] {
            if let Some(rest) = t.strip_prefix(kw) {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let is_helper =
                    kw == "pub type " && !structs.contains_key(&name) || name == "BitfieldInfo";
                if !is_helper && !covered.contains(name.as_str()) {
                    errors.push(format!("{name}: generated type without a layout vector"));
                }
            }
        }
    }
    for s in vectors::subtypes() {
        if !src.contains(&format!("pub struct {} ", s.name))
            && !src.contains(&format!("pub union {} ", s.name))
        {
            errors.push(format!(
                "{}: sub-type vector without a generated type",
                s.name
            ));
        }
    }
    fail_if_any("coverage", &errors);
}

#[test]
fn field_offsets_and_sizes() {
    let j = layouts();
    let jf = json_fields(&j);
    let mut errors = Vec::new();
    let mut seen = BTreeSet::new();
    let mut unsized_in_json = 0;
    for v in vectors::fields() {
        let key = (v.strukt.to_string(), v.path.to_string());
        match jf.get(&key) {
            None => errors.push(format!(
                "{}.{}: table entry without a JSON field",
                v.strukt, v.path
            )),
            Some(f) if f["size"].is_null() => {
                // Two anonymous structs (DXGK_MIRACAST_CHUNK_ID's bit-field struct) carry
                // `"size": null` in the JSON: only the offset is known.
                if u(&f["offset"]) != v.offset {
                    errors.push(format!(
                        "{}.{}: expected offset {}, got {}",
                        v.strukt, v.path, f["offset"], v.offset
                    ));
                }
                unsized_in_json += 1;
            }
            Some(f) => {
                if u(&f["offset"]) != v.offset || u(&f["size"]) != v.size {
                    errors.push(format!(
                        "{}.{}: expected offset {} size {}, got offset {} size {}",
                        v.strukt, v.path, f["offset"], f["size"], v.offset, v.size
                    ));
                }
            }
        }
        if !seen.insert(key.clone()) {
            errors.push(format!("{}.{}: duplicate table entry", key.0, key.1));
        }
    }
    for key in jf.keys() {
        if !seen.contains(key) {
            errors.push(format!(
                "{}.{}: JSON field without a table entry",
                key.0, key.1
            ));
        }
    }
    fail_if_any("field", &errors);
    assert_eq!(unsized_in_json, 2, "JSON entries without a size");
    println!(
        "checked {} fields ({unsized_in_json} by offset only: no size in the JSON)",
        seen.len()
    );
}

/// The `operation_union` of DXGKARG_BUILDPAGINGBUFFER lists each operation's members with
/// offsets relative to the operation; check them against the same Rust offsets.
#[test]
fn build_paging_buffer_operation_union() {
    let j = layouts();
    let s = &structs_of(&j)["DXGKARG_BUILDPAGINGBUFFER"];
    let ou = &s["operation_union"];
    let table: BTreeMap<String, (usize, usize)> = vectors::fields()
        .into_iter()
        .filter(|v| v.strukt == "DXGKARG_BUILDPAGINGBUFFER")
        .map(|v| (v.path.to_string(), (v.offset, v.size)))
        .collect();
    let base = u(&ou["offset"]);
    assert_eq!(
        table.get("<anonymous union>").copied(),
        Some((base, u(&ou["size"]))),
        "operation union"
    );
    let mut errors = Vec::new();
    let mut checked = 0;
    for (op, m) in ou["members"].as_object().expect("members") {
        let off = u(&m["offset_in_DXGKARG_BUILDPAGINGBUFFER"]);
        match table.get(op.as_str()) {
            Some(&(o, sz)) if o == off && sz == u(&m["size"]) => {}
            got => errors.push(format!(
                "{op}: expected offset {off} size {}, got {got:?}",
                m["size"]
            )),
        }
        let mut count: BTreeMap<String, usize> = BTreeMap::new();
        for f in m["fields"].as_array().expect("fields") {
            let name = f["name"].as_str().expect("name").to_string();
            let n = count.entry(name.clone()).or_insert(0);
            *n += 1;
            let key = if *n == 1 {
                format!("{op}.{name}")
            } else {
                format!("{op}.{name}#{n}")
            };
            let want = (off + u(&f["offset"]), u(&f["size"]));
            match table.get(&key) {
                Some(&got) if got == want => {}
                got => errors.push(format!("{key}: expected {want:?}, got {got:?}")),
            }
            checked += 1;
        }
    }
    fail_if_any("operation-union", &errors);
    assert!(checked > 150, "checked {checked} operation-union members");
}

#[test]
fn bitfield_positions_behaviourally() {
    let j = layouts();
    let jf = json_fields(&j);
    let mut errors = Vec::new();
    let mut seen = BTreeSet::new();
    for v in vectors::bitfields() {
        let key = (v.strukt.to_string(), v.path.to_string());
        seen.insert(key.clone());
        let Some(f) = jf.get(&key) else {
            errors.push(format!(
                "{}.{}: bit-field vector without a JSON field",
                v.strukt, v.path
            ));
            continue;
        };
        if f["kind"] != "bitfield" {
            errors.push(format!(
                "{}.{}: JSON field is not a bit-field",
                v.strukt, v.path
            ));
            continue;
        }
        let (off, size) = (u(&f["offset"]), u(&f["size"]));
        let (bo, bw) = (u(&f["bit_offset"]), u(&f["bit_width"]));
        let mask: u64 = if bw == 64 { !0 } else { (1u64 << bw) - 1 };
        let want_raw = mask << bo;
        match (v.run)(off, size) {
            None => errors.push(format!(
                "{}.{}: storage unit [{off}, {}) outside the Rust struct",
                v.strukt,
                v.path,
                off + size
            )),
            Some((raw, got)) => {
                if raw != want_raw {
                    errors.push(format!(
                        "{}.{}: set to all ones: expected bits {bo}..{} (raw 0x{want_raw:X}) \
                         in the {size}-byte unit at {off}, got raw 0x{raw:X}",
                        v.strukt,
                        v.path,
                        bo + bw
                    ));
                }
                if got != mask {
                    errors.push(format!(
                        "{}.{}: getter after set(all ones): expected 0x{mask:X}, got 0x{got:X}",
                        v.strukt, v.path
                    ));
                }
            }
        }
    }
    for (key, f) in &jf {
        if f["kind"] == "bitfield" && !seen.contains(key) {
            errors.push(format!(
                "{}.{}: JSON bit-field without a probe",
                key.0, key.1
            ));
        }
    }
    fail_if_any("bit-field", &errors);
    println!("checked {} bit-fields", seen.len());
}

/// Each callback-table member must fit in the table's size at the member's `since` version.
#[test]
fn member_since_versus_size_tables() {
    let j = layouts();
    let versions = j["constants"]["DXGKDDI_INTERFACE_VERSION"]
        .as_object()
        .expect("versions");
    let table: BTreeMap<(String, String), (usize, usize)> = vectors::fields()
        .into_iter()
        .map(|v| {
            (
                (v.strukt.to_string(), v.path.to_string()),
                (v.offset, v.size),
            )
        })
        .collect();
    let mut errors = Vec::new();
    let mut checked = 0;
    for (sname, sizes) in [
        (
            "DRIVER_INITIALIZATION_DATA",
            dxgk_sys::DRIVER_INITIALIZATION_DATA_SIZE_BY_VERSION,
        ),
        (
            "DXGKRNL_INTERFACE",
            dxgk_sys::DXGKRNL_INTERFACE_SIZE_BY_VERSION,
        ),
    ] {
        let s = &structs_of(&j)[sname];
        let mut prev_end = 0;
        for f in s["fields"].as_array().expect("fields") {
            let name = f["name"].as_str().expect("name");
            let since = f["since"].as_str().expect("since");
            let ver = u(&versions[since]) as u32;
            let (off, size) = table[&(sname.to_string(), name.to_string())];
            match dxgk_sys::size_at_version(sizes, ver) {
                Some(limit) if off + size <= limit => {}
                got => errors.push(format!(
                    "{sname}.{name}: since {since} (0x{ver:X}) ends at {} but the size \
                     there is {got:?}",
                    off + size
                )),
            }
            // A member of an older version never follows a newer one.
            if off < prev_end {
                errors.push(format!("{sname}.{name}: overlaps the previous member"));
            }
            prev_end = off + size;
            checked += 1;
        }
        // The newest size is the full struct.
        let newest = sizes.last().expect("size table").1;
        if newest != u(&s["size"]) {
            errors.push(format!(
                "{sname}: newest table size {newest} vs {}",
                s["size"]
            ));
        }
    }
    fail_if_any("since/size", &errors);
    assert_eq!(checked, 172 + 73);
}

/// Revision 3's DMA-remapping callback arguments: each member fits the struct's size at the
/// member's `since` version, and each struct exists (has a size) from its own `since` on.
#[test]
fn dma_remapping_args_since_versus_size_tables() {
    use dxgk_sys::*;
    let j = layouts();
    let versions = j["constants"]["DXGKDDI_INTERFACE_VERSION"]
        .as_object()
        .expect("versions");
    let ver = |name: &str| u(&versions[name]) as u32;
    let table: BTreeMap<(String, String), (usize, usize)> = vectors::fields()
        .into_iter()
        .map(|v| {
            (
                (v.strukt.to_string(), v.path.to_string()),
                (v.offset, v.size),
            )
        })
        .collect();
    let mut errors = Vec::new();
    let mut checked = 0;
    for (sname, sizes) in [
        (
            "DXGKARGCB_CREATE_PHYSICAL_MEMORY_OBJECT",
            DXGKARGCB_CREATE_PHYSICAL_MEMORY_OBJECT_SIZE_BY_VERSION,
        ),
        (
            "DXGKARGCB_DESTROY_PHYSICAL_MEMORY_OBJECT",
            DXGKARGCB_DESTROY_PHYSICAL_MEMORY_OBJECT_SIZE_BY_VERSION,
        ),
        (
            "DXGKARGCB_OPEN_PHYSICAL_MEMORY_OBJECT",
            DXGKARGCB_OPEN_PHYSICAL_MEMORY_OBJECT_SIZE_BY_VERSION,
        ),
        (
            "DXGKARGCB_CLOSE_PHYSICAL_MEMORY_OBJECT",
            DXGKARGCB_CLOSE_PHYSICAL_MEMORY_OBJECT_SIZE_BY_VERSION,
        ),
        (
            "DXGKARGCB_MAP_PHYSICAL_MEMORY",
            DXGKARGCB_MAP_PHYSICAL_MEMORY_SIZE_BY_VERSION,
        ),
        (
            "DXGKARGCB_UNMAP_PHYSICAL_MEMORY",
            DXGKARGCB_UNMAP_PHYSICAL_MEMORY_SIZE_BY_VERSION,
        ),
        (
            "DXGKARGCB_ALLOCATE_ADL",
            DXGKARGCB_ALLOCATE_ADL_SIZE_BY_VERSION,
        ),
        ("DXGKARGCB_FREE_ADL", DXGKARGCB_FREE_ADL_SIZE_BY_VERSION),
    ] {
        let s = &structs_of(&j)[sname];
        let since = ver(s["since"].as_str().expect("struct since"));
        if size_at_version(sizes, since) != Some(u(&s["size"])) {
            errors.push(format!(
                "{sname}: no size {} at its since 0x{since:X}",
                s["size"]
            ));
        }
        if size_at_version(sizes, since - 1).is_some() {
            errors.push(format!("{sname}: has a size before its since 0x{since:X}"));
        }
        for f in s["fields"].as_array().expect("fields") {
            let Some(fsince) = f["since"].as_str() else {
                continue; // anonymous containers carry no `since`
            };
            let name = f["name"].as_str().expect("name");
            let (off, size) = table[&(sname.to_string(), name.to_string())];
            match size_at_version(sizes, ver(fsince)) {
                Some(limit) if off + size <= limit => {}
                got => errors.push(format!(
                    "{sname}.{name}: since {fsince} ends at {} but the size there is {got:?}",
                    off + size
                )),
            }
            checked += 1;
        }
    }
    fail_if_any("since/size", &errors);
    // 23 + 2 + 3 + 1 + 5 + 3 + 9 + 2 named members.
    assert_eq!(checked, 48);
}

#[test]
fn size_tables_match_json() {
    let j = layouts();
    let sbv = j["sizes_by_interface_version"].as_object().expect("sizes");
    let tables: [(&str, &[(u32, usize)]); 4] = [
        (
            "DRIVER_INITIALIZATION_DATA",
            dxgk_sys::DRIVER_INITIALIZATION_DATA_SIZE_BY_VERSION,
        ),
        (
            "DXGKRNL_INTERFACE",
            dxgk_sys::DXGKRNL_INTERFACE_SIZE_BY_VERSION,
        ),
        ("DXGK_DRIVERCAPS", dxgk_sys::DXGK_DRIVERCAPS_SIZE_BY_VERSION),
        (
            "DXGKARG_BUILDPAGINGBUFFER",
            dxgk_sys::DXGKARG_BUILDPAGINGBUFFER_SIZE_BY_VERSION,
        ),
    ];
    for (name, table) in tables {
        let mut want: Vec<(u32, usize)> = sbv
            .values()
            .filter_map(|v| {
                v["sizes"][name]
                    .as_u64()
                    .map(|s| (u(&v["value"]) as u32, s as usize))
            })
            .collect();
        want.sort_unstable();
        assert_eq!(table, &want[..], "{name}");
    }
}

#[test]
fn spot_checks_from_the_reference() {
    use dxgk_sys::*;
    use std::mem::{align_of, offset_of, size_of};
    assert_eq!(
        offset_of!(DRIVER_INITIALIZATION_DATA, DxgkDdiBuildPagingBuffer),
        0xE0
    );
    assert_eq!(
        offset_of!(DRIVER_INITIALIZATION_DATA, DxgkDdiCreateProcess),
        0x300
    );
    assert_eq!(
        offset_of!(DRIVER_INITIALIZATION_DATA, DxgkDdiFlushHwQueue),
        0x558
    );
    assert_eq!(size_of::<DRIVER_INITIALIZATION_DATA>(), 0x560);
    assert_eq!(offset_of!(DXGKRNL_INTERFACE, DxgkCbMapMdlToIoMmu), 0x1B0);
    assert_eq!(
        offset_of!(DXGKRNL_INTERFACE, DxgkCbDisconnectDoorbell),
        0x238
    );
    assert_eq!(size_of::<DXGKRNL_INTERFACE>(), 0x240);
    assert_eq!((size_of::<DXGK_PTE>(), align_of::<DXGK_PTE>()), (16, 8));
    assert_eq!(
        (
            size_of::<DXGK_NODEMETADATA>(),
            align_of::<DXGK_NODEMETADATA>()
        ),
        (74, 1)
    );
    assert_eq!(
        (size_of::<DEVICE_OBJECT>(), align_of::<DEVICE_OBJECT>()),
        (0x150, 16)
    );
    assert_eq!(offset_of!(IRP, Tail.Overlay.s.u.CurrentStackLocation), 0xB8);
    assert_eq!(
        offset_of!(DXGKARG_BUILDPAGINGBUFFER, u.UpdatePageTable.StartIndex),
        80
    );
    assert_eq!(DXGKDDI_INTERFACE_VERSION, DXGKDDI_INTERFACE_VERSION_WDDM3_1);
    assert_eq!(DXGKDDI_INTERFACE_VERSION_WDDM3_2, 0x11008);
    assert_eq!(
        DXGK_OPERATION_UPDATE_PAGE_TABLE,
        DXGK_BUILDPAGINGBUFFER_OPERATION(11)
    );
    assert_eq!(DXGKQAITYPE_GPUMMUCAPS, DXGK_QUERYADAPTERINFOTYPE(13));

    // Accessors on a collapsed flag union and on a named flag struct.
    let mut pte = DXGK_PTE::default();
    pte.set_Valid(1);
    pte.set_Segment(0x1F);
    pte.set_Reserved(!0);
    assert_eq!(pte.Flags, 1 | (0x1F << 5) | (((1u64 << 44) - 1) << 20));
    assert_eq!((pte.Valid(), pte.Segment(), pte.Zero()), (1, 0x1F, 0));
    pte.u.PageAddress = 0x1234;
    // SAFETY: both union members are ULONGLONG.
    assert_eq!(unsafe { pte.u.PageTableAddress }, 0x1234);

    let mut caps = DXGK_DRIVERCAPS::default();
    caps.MemoryManagementCaps.set_GpuMmuSupported(1);
    caps.MemoryManagementCaps.set_IoMmuSupported(1);
    assert_eq!(caps.MemoryManagementCaps.Value, (1 << 6) | (1 << 7));
    // The setter masks to the width.
    caps.PresentationCaps.set_AlignmentShift(0xFF);
    assert_eq!(caps.PresentationCaps.Value, 0xF << 10);

    let mut flags = DXGK_UPDATEPAGETABLEFLAGS::default();
    flags.set_Use64KBPages(1);
    assert_eq!(flags._bitfield_1, 1 << 3);

    // Revision 3 (reference README): CREATE's union is 32 bytes (the 28-byte Mdl arm pads to
    // 8), so hPhysicalMemoryObject is at 0x40; padding holes after AccessMode and Flags.
    assert_eq!(size_of::<DXGKARGCB_CREATE_PHYSICAL_MEMORY_OBJECT>(), 80);
    assert_eq!(size_of::<DXGKARGCB_CREATE_PHYSICAL_MEMORY_OBJECT_u>(), 32);
    assert_eq!(
        offset_of!(
            DXGKARGCB_CREATE_PHYSICAL_MEMORY_OBJECT,
            hPhysicalMemoryObject
        ),
        0x40
    );
    assert_eq!(
        offset_of!(
            DXGKARGCB_CREATE_PHYSICAL_MEMORY_OBJECT,
            u.Section.ObjectAttributes
        ),
        0x28
    );
    assert_eq!(offset_of!(DXGKARGCB_MAP_PHYSICAL_MEMORY, Offset), 0x10);
    assert_eq!(offset_of!(DXGKARGCB_ALLOCATE_ADL, pAdl), 0x20);
    // The other seven: (size, align) from the README.
    let sizes = [
        (
            size_of::<DXGKARGCB_DESTROY_PHYSICAL_MEMORY_OBJECT>(),
            align_of::<DXGKARGCB_DESTROY_PHYSICAL_MEMORY_OBJECT>(),
        ),
        (
            size_of::<DXGKARGCB_OPEN_PHYSICAL_MEMORY_OBJECT>(),
            align_of::<DXGKARGCB_OPEN_PHYSICAL_MEMORY_OBJECT>(),
        ),
        (
            size_of::<DXGKARGCB_CLOSE_PHYSICAL_MEMORY_OBJECT>(),
            align_of::<DXGKARGCB_CLOSE_PHYSICAL_MEMORY_OBJECT>(),
        ),
        (
            size_of::<DXGKARGCB_MAP_PHYSICAL_MEMORY>(),
            align_of::<DXGKARGCB_MAP_PHYSICAL_MEMORY>(),
        ),
        (
            size_of::<DXGKARGCB_UNMAP_PHYSICAL_MEMORY>(),
            align_of::<DXGKARGCB_UNMAP_PHYSICAL_MEMORY>(),
        ),
        (
            size_of::<DXGKARGCB_ALLOCATE_ADL>(),
            align_of::<DXGKARGCB_ALLOCATE_ADL>(),
        ),
        (
            size_of::<DXGKARGCB_FREE_ADL>(),
            align_of::<DXGKARGCB_FREE_ADL>(),
        ),
    ];
    assert_eq!(
        sizes,
        [(16, 8), (24, 8), (8, 8), (40, 8), (24, 8), (40, 8), (16, 8)]
    );
    // No named MAPAPERTURESEGMENT2 type: the MapApertureSegment2 arm, 72 bytes at +0x28.
    assert_eq!(
        offset_of!(DXGKARG_BUILDPAGINGBUFFER, u.MapApertureSegment2),
        0x28
    );
    assert_eq!(
        size_of::<DXGKARG_BUILDPAGINGBUFFER_MapApertureSegment2>(),
        72
    );
    assert_eq!(
        DXGK_PHYSICAL_MEMORY_TYPE_IO_SPACE,
        DXGK_PHYSICAL_MEMORY_TYPE(3)
    );
    assert_eq!(DXGK_ACCESS_MODE_USER_MODE, DXGK_ACCESS_MODE(1));

    let mut adl = DXGKARGCB_ALLOCATE_ADL::default();
    adl.Flags.set_PreferContiguous(1);
    assert_eq!(adl.Flags.Value, 1 << 1);
}
