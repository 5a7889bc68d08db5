//! pe-check against synthetic PE images (see `support`): one good image that passes
//! everything, and one variant per failure, each asserting which check fails and that
//! the detail names the culprit.

mod support;

use pe_check::{
    check_banned_imports, check_image, check_import_dlls, check_user_image, parse_image, CheckName,
    CheckResult, ImportedSymbol, Options, Report, RequiredImport,
};
use support::{Spec, Sym, HELPER_OFFSET};

fn report(spec: &Spec) -> Report {
    check_image(&spec.build(), &Options::default())
}

/// Assert that exactly the checks in `failing` fail, and return the first of them.
fn assert_fails_only(report: &Report, failing: &[CheckName]) -> CheckResult {
    let failed: Vec<CheckName> = report.failures().map(|r| r.name).collect();
    assert_eq!(failed, failing, "report: {report:#?}");
    assert!(!report.passed());
    report
        .get(failing[0])
        .cloned()
        .expect("failing check present")
}

#[test]
fn good_image_passes_every_check() {
    let report = report(&Spec::good());
    assert!(report.passed(), "report: {report:#?}");
    let names: Vec<CheckName> = report.results.iter().map(|r| r.name).collect();
    assert_eq!(
        names,
        [
            CheckName::Parse,
            CheckName::Format,
            CheckName::Subsystem,
            CheckName::EntryPoint,
            CheckName::DllCharacteristics,
            CheckName::ImportDlls,
            CheckName::BannedImports,
            CheckName::ImportsByName,
        ]
    );
    // Info lists the sections and every import per DLL.
    let info = report.info.join("\n");
    for needle in [
        "section .text",
        "section .edata",
        "section .idata",
        "ntoskrnl.exe (2): ExAllocatePoolWithTag, DbgPrintEx",
        "HAL.dll (1): KeQueryPerformanceCounter",
        "HIGH_ENTROPY_VA=yes, FORCE_INTEGRITY=no",
    ] {
        assert!(info.contains(needle), "missing {needle:?} in info:\n{info}");
    }
}

#[test]
fn parsed_image_matches_what_was_built() {
    let image = parse_image(&Spec::good().build()).expect("parses");
    assert_eq!(image.machine, 0x8664);
    assert_eq!(image.magic, 0x20b);
    assert_eq!(image.subsystem, 1);
    assert_eq!(image.imports.len(), 2);
    assert_eq!(image.imports[0].dll, "ntoskrnl.exe");
    assert_eq!(
        image.imports[0].symbols,
        [
            ImportedSymbol::Name("ExAllocatePoolWithTag".into()),
            ImportedSymbol::Name("DbgPrintEx".into())
        ]
    );
    let entry = image
        .exports
        .iter()
        .find(|e| e.name.as_deref() == Some("DriverEntry"))
        .expect("DriverEntry exported");
    assert_eq!(entry.rva, Some(image.entry_point));
}

#[test]
fn mm_probe_and_lock_pages_is_banned() {
    let spec = Spec::good().with_import("ntoskrnl.exe", Sym::Name("MmProbeAndLockPages"));
    let result = assert_fails_only(&report(&spec), &[CheckName::BannedImports]);
    assert!(
        result.detail.contains("ntoskrnl.exe!MmProbeAndLockPages"),
        "{result}"
    );
}

#[test]
fn numa_contiguous_allocation_is_banned() {
    let spec = Spec::good().with_import(
        "ntoskrnl.exe",
        Sym::Name("MmAllocateContiguousMemorySpecifyCacheNode"),
    );
    let result = assert_fails_only(&report(&spec), &[CheckName::BannedImports]);
    assert!(
        result
            .detail
            .contains("ntoskrnl.exe!MmAllocateContiguousMemorySpecifyCacheNode"),
        "{result}"
    );
    // Not a prefix match: the non-NUMA name is not reported on its own.
    assert!(!result.detail.contains("SpecifyCache,"), "{result}");
}

#[test]
fn every_banned_import_is_named() {
    let mut spec = Spec::good();
    for name in pe_check::BANNED_IMPORTS {
        spec = spec.with_import("ntoskrnl.exe", Sym::Name(name));
    }
    let image = parse_image(&spec.build()).expect("parses");
    let result = check_banned_imports(&image);
    assert!(!result.passed);
    for name in pe_check::BANNED_IMPORTS {
        assert!(
            result.detail.contains(&format!("ntoskrnl.exe!{name},"))
                || result.detail.ends_with(&format!("ntoskrnl.exe!{name}")),
            "{name} not named in {result}"
        );
    }
    // The allowed imports are not named.
    assert!(!result.detail.contains("ExAllocatePoolWithTag"), "{result}");
}

#[test]
fn banned_import_from_hal_names_hal() {
    let spec = Spec::good().with_import("HAL.dll", Sym::Name("MmFreePagesFromMdl"));
    let result = assert_fails_only(&report(&spec), &[CheckName::BannedImports]);
    assert!(
        result.detail.contains("HAL.dll!MmFreePagesFromMdl"),
        "{result}"
    );
}

#[test]
fn windows_gui_subsystem_fails() {
    let spec = Spec {
        subsystem: 2,
        ..Spec::good()
    };
    let result = assert_fails_only(&report(&spec), &[CheckName::Subsystem]);
    assert!(
        result.detail.contains("Subsystem=2 (WINDOWS_GUI)"),
        "{result}"
    );
}

#[test]
fn entry_point_not_driver_entry_fails() {
    let spec = Spec {
        entry_offset: HELPER_OFFSET,
        ..Spec::good()
    };
    let result = assert_fails_only(&report(&spec), &[CheckName::EntryPoint]);
    assert!(result.detail.contains("DxgkHelper"), "{result}");
    assert!(result.detail.contains("DriverEntry is at"), "{result}");
}

#[test]
fn missing_driver_entry_export_fails() {
    let spec = Spec {
        exports: vec![("DxgkHelper", HELPER_OFFSET)],
        ..Spec::good()
    };
    let result = assert_fails_only(&report(&spec), &[CheckName::EntryPoint]);
    assert!(
        result.detail.contains("no export named DriverEntry"),
        "{result}"
    );

    let spec = Spec {
        exports: vec![],
        ..Spec::good()
    };
    let result = assert_fails_only(&report(&spec), &[CheckName::EntryPoint]);
    assert!(
        result.detail.contains("no export named DriverEntry"),
        "{result}"
    );
}

#[test]
fn missing_nx_compat_fails() {
    let spec = Spec {
        dll_characteristics: pe_check::DLL_DYNAMIC_BASE,
        ..Spec::good()
    };
    let result = assert_fails_only(&report(&spec), &[CheckName::DllCharacteristics]);
    assert!(result.detail.contains("lacks NX_COMPAT"), "{result}");
    assert!(!result.detail.contains("DYNAMIC_BASE"), "{result}");
}

#[test]
fn missing_dynamic_base_fails() {
    let spec = Spec {
        dll_characteristics: pe_check::DLL_NX_COMPAT,
        ..Spec::good()
    };
    let result = assert_fails_only(&report(&spec), &[CheckName::DllCharacteristics]);
    assert!(result.detail.contains("lacks DYNAMIC_BASE"), "{result}");
}

#[test]
fn kernel32_import_fails_and_can_be_allowed() {
    let spec = Spec::good().with_import("kernel32.dll", Sym::Name("GetTickCount"));
    let result = assert_fails_only(&report(&spec), &[CheckName::ImportDlls]);
    assert!(
        result.detail.contains("kernel32.dll [GetTickCount]"),
        "{result}"
    );
    assert!(!result.detail.contains("ntoskrnl"), "{result}");

    // --allow-import-dll, case-insensitively.
    let opts = Options {
        extra_allowed_dlls: vec!["KERNEL32.DLL".into()],
    };
    let image = parse_image(&spec.build()).expect("parses");
    assert!(check_import_dlls(&image, &opts).passed);
    assert!(check_image(&spec.build(), &opts).passed());
}

fn required(list: &[&str]) -> Vec<RequiredImport> {
    list.iter()
        .map(|s| RequiredImport::parse(s).unwrap())
        .collect()
}

#[test]
fn user_image_mode_checks_only_format_and_the_required_imports() {
    // A console exe: not NATIVE, entry point not DriverEntry, user-mode DLLs — none of which
    // the user-image mode judges.
    let mut spec = Spec::good()
        .with_import("gdi32.dll", Sym::Name("D3DKMTCreateAllocation2"))
        .with_import("kernel32.dll", Sym::Name("GetTickCount"));
    spec.subsystem = 3;
    spec.entry_offset = HELPER_OFFSET;
    let bytes = spec.build();
    let want = required(&[
        "GDI32.dll!D3DKMTCreateAllocation2",
        "kernel32.dll!GetTickCount",
    ]);
    let r = check_user_image(&bytes, &want);
    let names: Vec<CheckName> = r.results.iter().map(|r| r.name).collect();
    assert_eq!(
        names,
        [
            CheckName::Parse,
            CheckName::Format,
            CheckName::RequiredImports
        ]
    );
    assert!(r.passed(), "{r:#?}");

    let r = check_user_image(&bytes, &required(&["gdi32.dll!D3DKMTLock2"]));
    let f = assert_fails_only(&r, &[CheckName::RequiredImports]);
    assert_eq!(f.detail, "not imported: gdi32.dll!D3DKMTLock2");
    // The right symbol from the wrong DLL is not it either.
    let r = check_user_image(&bytes, &required(&["user32.dll!D3DKMTCreateAllocation2"]));
    assert_fails_only(&r, &[CheckName::RequiredImports]);
    assert!(RequiredImport::parse("gdi32.dll").is_none());
    assert!(RequiredImport::parse("!x").is_none());
}

#[test]
fn import_by_ordinal_fails() {
    let spec = Spec::good().with_import("ntoskrnl.exe", Sym::Ordinal(42));
    let result = assert_fails_only(&report(&spec), &[CheckName::ImportsByName]);
    assert!(result.detail.contains("ntoskrnl.exe!#42"), "{result}");
}

#[test]
fn pe32_and_wrong_machine_fail_format() {
    let spec = Spec {
        is_64: false,
        machine: 0x014c, // i386
        ..Spec::good()
    };
    let result = assert_fails_only(&report(&spec), &[CheckName::Format]);
    assert!(
        result.detail.contains("Magic=0x10b (not PE32+)"),
        "{result}"
    );
    assert!(result.detail.contains("(not x86-64)"), "{result}");

    let spec = Spec {
        machine: 0xaa64, // ARM64
        ..Spec::good()
    };
    let result = assert_fails_only(&report(&spec), &[CheckName::Format]);
    assert!(result.detail.contains("Machine=0xaa64"), "{result}");
}

#[test]
fn several_failures_are_all_reported() {
    let spec = Spec {
        subsystem: 3,
        dll_characteristics: 0,
        ..Spec::good()
    }
    .with_import("kernel32.dll", Sym::Name("MmProbeAndLockPages"));
    assert_fails_only(
        &report(&spec),
        &[
            CheckName::Subsystem,
            CheckName::DllCharacteristics,
            CheckName::ImportDlls,
            CheckName::BannedImports,
        ],
    );
}

#[test]
fn garbage_is_a_clean_parse_failure() {
    let mut mz_garbage = b"MZ".to_vec();
    mz_garbage.extend((0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    for bytes in [
        &b""[..],
        b"not a PE file at all",
        &[0xffu8; 4096],
        &mz_garbage,
    ] {
        let report = check_image(bytes, &Options::default());
        assert!(!report.passed());
        assert_eq!(report.results.len(), 1, "{report:#?}");
        assert_eq!(report.results[0].name, CheckName::Parse);
        assert!(!report.results[0].detail.is_empty());
    }
}

#[test]
fn every_truncation_fails_without_panicking() {
    let good = Spec::good().build();
    assert!(check_image(&good, &Options::default()).passed());
    for len in 0..good.len() {
        let report = check_image(&good[..len], &Options::default());
        assert!(!report.passed(), "truncated to {len} bytes still passes");
    }
    // Only the last section's file-alignment padding missing: named as truncation.
    let report = check_image(&good[..good.len() - 1], &Options::default());
    let parse = report.get(CheckName::Parse).expect("parse result");
    assert!(
        !parse.passed && parse.detail.contains("truncated: section .idata"),
        "{parse}"
    );
    // Headers intact, sections cut off: still a parse failure, not a panic.
    let report = check_image(&good[..0x400], &Options::default());
    assert_eq!(report.get(CheckName::Parse).map(|r| r.passed), Some(false));
}

#[test]
fn corrupted_import_rva_is_a_clean_failure() {
    let mut bytes = Spec::good().build();
    // Point the import directory (data directory 1) far outside the image.
    let e_lfanew = u32::from_le_bytes(bytes[0x3c..0x40].try_into().unwrap()) as usize;
    let import_dir = e_lfanew + 4 + 20 + 112 + 8; // signature, file header, fixed opt header, dir 0
    bytes[import_dir..import_dir + 4].copy_from_slice(&0x7fff_0000u32.to_le_bytes());
    let report = check_image(&bytes, &Options::default());
    assert!(!report.passed());
    assert_eq!(report.get(CheckName::Parse).map(|r| r.passed), Some(false));
}

mod cli {
    use super::*;
    use std::path::PathBuf;
    use std::process::Command;

    fn write_image(name: &str, spec: &Spec) -> PathBuf {
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
        std::fs::write(&path, spec.build()).expect("write image");
        path
    }

    fn run(args: &[&std::ffi::OsStr]) -> (i32, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_pe-check"))
            .args(args)
            .output()
            .expect("run pe-check");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code().expect("exit code"), text)
    }

    #[test]
    fn good_image_exits_zero() {
        let path = write_image("good.sys", &Spec::good());
        let (code, out) = run(&[path.as_os_str()]);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("PASS entry-point"), "{out}");
        assert!(out.contains("INFO imports ntoskrnl.exe"), "{out}");
        assert!(out.contains("pe-check: PASS"), "{out}");
        assert!(!out.contains("FAIL"), "{out}");
    }

    #[test]
    fn bad_image_exits_nonzero_naming_the_import() {
        let spec = Spec::good()
            .with_import("kernel32.dll", Sym::Name("GetTickCount"))
            .with_import("ntoskrnl.exe", Sym::Name("MmAllocatePagesForMdlEx"));
        let path = write_image("bad.sys", &spec);
        let (code, out) = run(&[path.as_os_str()]);
        assert_eq!(code, 1, "{out}");
        assert!(
            out.contains(
                "FAIL banned-imports: banned import(s): ntoskrnl.exe!MmAllocatePagesForMdlEx"
            ),
            "{out}"
        );
        assert!(out.contains("FAIL import-dlls"), "{out}");
        assert!(
            out.contains("2 of 8 checks failed: import-dlls, banned-imports"),
            "{out}"
        );

        // Allowing kernel32.dll leaves only the banned import.
        let (code, out) = run(&[
            path.as_os_str(),
            "--allow-import-dll".as_ref(),
            "Kernel32.dll".as_ref(),
        ]);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains("PASS import-dlls"), "{out}");
        assert!(
            out.contains("1 of 8 checks failed: banned-imports"),
            "{out}"
        );
    }

    #[test]
    fn require_import_mode_from_the_command_line() {
        let spec = Spec::good().with_import("gdi32.dll", Sym::Name("D3DKMTCreateAllocation2"));
        let path = write_image("client.exe", &spec);
        let arg = |s: &'static str| -> &std::ffi::OsStr { s.as_ref() };
        let (code, out) = run(&[
            path.as_os_str(),
            arg("--require-import"),
            arg("gdi32.dll!D3DKMTCreateAllocation2"),
        ]);
        assert_eq!(code, 0, "{out}");
        assert!(
            out.contains("PASS required-imports: gdi32.dll!D3DKMTCreateAllocation2"),
            "{out}"
        );
        assert!(out.contains("all 3 checks passed"), "{out}");
        let (code, out) = run(&[
            path.as_os_str(),
            arg("--require-import"),
            arg("gdi32.dll!D3DKMTEscape"),
        ]);
        assert_eq!(code, 1, "{out}");
        assert!(
            out.contains("FAIL required-imports: not imported: gdi32.dll!D3DKMTEscape"),
            "{out}"
        );
        let (code, _) = run(&[path.as_os_str(), arg("--require-import"), arg("nobang")]);
        assert_eq!(code, 2);
    }

    #[test]
    fn garbage_and_usage_errors() {
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("garbage.sys");
        std::fs::write(&path, b"MZ\x90\x00 definitely not a driver").unwrap();
        let (code, out) = run(&[path.as_os_str()]);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains("FAIL parse"), "{out}");

        let (code, _) = run(&[]);
        assert_eq!(code, 2);
        let missing = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("no-such.sys");
        let (code, out) = run(&[missing.as_os_str()]);
        assert_eq!(code, 2, "{out}");
        let (code, _) = run(&[path.as_os_str(), "--allow-import-dll".as_ref()]);
        assert_eq!(code, 2);
    }
}
