//! inf/rgpu.inx: the INF of a render-only WDDM display adapter (ddi-reference §7.1), and the
//! stamped rgpu.inf the cross-flavour package ships (DriverVer from the crate version and date).

use std::path::PathBuf;

use rgpu_package::checks::{check, Form, PCI_HARDWARE_ID, ROOT_HARDWARE_ID};
use rgpu_package::inf::{Inf, Section};
use rgpu_package::{package_version, stamp_package_inf, Date, DriverVersion};

fn repo_file(relative: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn template() -> String {
    repo_file("inf/rgpu.inx")
}

fn section<'a>(inf: &'a Inf, name: &str) -> &'a Section {
    inf.section(name)
        .unwrap_or_else(|| panic!("missing section [{name}]"))
}

fn value<'a>(section: &'a Section, key: &str) -> &'a str {
    section
        .get(key)
        .unwrap_or_else(|| panic!("[{}]: missing {key}", section.name))
        .value()
}

#[test]
fn template_passes_every_rule() {
    let problems = check(&template(), Form::Template);
    assert!(
        problems.is_empty(),
        "inf/rgpu.inx:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn version_section_is_a_display_class_driver_package() {
    let inf = Inf::parse(&template()).unwrap();
    let v = section(&inf, "Version");
    assert_eq!(value(v, "Signature"), "$Windows NT$");
    assert_eq!(value(v, "Class"), "Display");
    assert!(value(v, "ClassGuid").eq_ignore_ascii_case("{4D36E968-E325-11CE-BFC1-08002BE10318}"));
    assert_eq!(value(v, "CatalogFile"), "rgpu.cat");
    assert_eq!(value(v, "PnpLockdown"), "1");
    assert!(!value(v, "DriverVer").is_empty());
    assert!(inf.expand(value(v, "Provider")).is_ok());
    assert!(v.get("LayoutFile").is_none());
}

#[test]
fn install_and_service_sections() {
    let inf = Inf::parse(&template()).unwrap();
    assert_eq!(value(section(&inf, "rgpu_Inst"), "FeatureScore"), "FB");

    let services = section(&inf, "rgpu_Inst.Services");
    let add = services.get("AddService").unwrap();
    assert_eq!(add.values[0], "rgpu");
    let flags = u32::from_str_radix(add.values[1].trim_start_matches("0x"), 16).unwrap();
    assert_ne!(flags & 0x2, 0, "SPSVCINST_ASSOCSERVICE");

    let svc = section(&inf, &add.values[2]);
    assert_eq!(value(svc, "ServiceType"), "1");
    assert_eq!(value(svc, "StartType"), "3");
    assert_eq!(value(svc, "ErrorControl"), "0");
    assert_eq!(value(svc, "LoadOrderGroup"), "Video");
    assert_eq!(value(svc, "ServiceBinary"), r"%13%\rgpu.sys");

    let dirs = section(&inf, "DestinationDirs");
    assert_eq!(value(dirs, "DefaultDestDir"), "13");
    assert!(
        dirs.entries.iter().all(|e| e.value() == "13"),
        "{:?}",
        dirs.entries
    );
}

#[test]
fn both_hardware_ids_are_bound() {
    let inf = Inf::parse(&template()).unwrap();
    let models = section(&inf, "rgpu.Models.NT$ARCH$.10.0...17134");
    let ids: Vec<&str> = models
        .entries
        .iter()
        .map(|e| e.values[1].as_str())
        .collect();
    assert!(ids.contains(&PCI_HARDWARE_ID), "{ids:?}");
    assert!(ids.contains(&ROOT_HARDWARE_ID), "{ids:?}");
    assert!(models.entries.iter().all(|e| e.values[0] == "rgpu_Inst"));
}

#[test]
fn every_string_is_defined_and_no_display_only_or_umd_keys() {
    let text = template();
    let inf = Inf::parse(&text).unwrap();
    assert_eq!(inf.undefined_strings(), vec![]);
    for key in [
        "DefaultSettings.",
        "VgaCompatible",
        "EDID_OVERRIDE",
        "Acceleration.Level",
        "UserModeDriverName",
    ] {
        let in_code = text
            .lines()
            .map(|l| l.split(';').next().unwrap())
            .any(|l| l.contains(key));
        assert!(!in_code, "{key} appears outside comments");
    }
}

#[test]
fn stamped_inf_carries_crate_version_and_date() {
    let cargo_toml = repo_file("Cargo.toml");
    let crate_version = package_version(&cargo_toml).unwrap();
    let date = Date::build_date(Some("1741305600")).unwrap(); // 2025-03-07T00:00:00Z
    assert_eq!(date.to_string(), "03/07/2025");

    let stamped = stamp_package_inf(&template(), &cargo_toml, date)
        .unwrap_or_else(|p| panic!("{}", p.join("\n")));
    let inf = Inf::parse(&stamped).unwrap();
    let driver_ver = section(&inf, "Version")
        .get("DriverVer")
        .unwrap()
        .values
        .join(",");
    assert_eq!(driver_ver, format!("03/07/2025,{crate_version}.0"));
    assert!(
        stamped.contains("\r\nDriverVer   = 03/07/2025,"),
        "CRLF and stampinf-like spacing"
    );
    assert!(!stamped.contains("$ARCH$"));
    assert!(inf.section("rgpu.Models.NTamd64.10.0...17134").is_some());
    let version = DriverVersion::from_crate_version(&crate_version).unwrap();
    assert_eq!(
        check(&stamped, Form::Stamped { date, version }),
        Vec::<String>::new()
    );
}

#[test]
fn stamped_check_rejects_a_wrong_driver_ver() {
    let cargo_toml = repo_file("Cargo.toml");
    let date = Date {
        year: 2025,
        month: 3,
        day: 7,
    };
    let stamped = stamp_package_inf(&template(), &cargo_toml, date).unwrap();
    let other_day = Date {
        year: 2025,
        month: 3,
        day: 8,
    };
    let version =
        DriverVersion::from_crate_version(&package_version(&cargo_toml).unwrap()).unwrap();
    let problems = check(
        &stamped,
        Form::Stamped {
            date: other_day,
            version,
        },
    );
    assert!(
        problems.iter().any(|p| p.contains("DriverVer")),
        "{problems:?}"
    );
    let problems = check(&template(), Form::Stamped { date, version });
    assert!(
        problems.iter().any(|p| p.contains("amd64")),
        "unstamped $ARCH$ must fail: {problems:?}"
    );
}

#[test]
fn pre_release_crate_versions_are_refused() {
    let toml = "[package]\nname = \"rgpu\"\nversion = \"0.2.0-dev\"\n";
    let err = stamp_package_inf(
        &template(),
        toml,
        Date {
            year: 2025,
            month: 1,
            day: 1,
        },
    )
    .unwrap_err();
    assert!(err[0].contains("pre-release"), "{err:?}");
}

/// Each broken variant of the template must be caught, with a message naming what is wrong.
#[test]
fn broken_templates_are_rejected() {
    let cases: &[(&str, &str, &str)] = &[
        ("Class       = Display", "Class       = System", "Class"),
        ("{4D36E968-E325-11CE-BFC1-08002BE10318}", "{4D36E97D-E325-11CE-BFC1-08002BE10318}", "ClassGuid"),
        ("PnpLockdown = 1\n", "\n", "PnpLockdown"),
        ("CatalogFile = rgpu.cat\n", "\n", "CatalogFile"),
        ("DriverVer   = 01/01/2025,0.1.0.0\n", "\n", "DriverVer"),
        ("DriverVer   = 01/01/2025,0.1.0.0", "DriverVer   = 2025-01-01,0.1.0.0", "DriverVer"),
        ("Signature   = \"$Windows NT$\"", "Signature   = \"$Chicago$\"", "Signature"),
        ("FeatureScore = FB\n", "\n", "FeatureScore"),
        ("FeatureScore = FB", "FeatureScore = 1FB", "FeatureScore"),
        ("rgpu, 0x00000002,", "rgpu, 0x00000000,", "0x2"),
        ("ServiceType    = 1", "ServiceType    = 2", "ServiceType"),
        ("StartType      = 3", "StartType      = 0", "StartType"),
        ("LoadOrderGroup = Video", "LoadOrderGroup = Base", "LoadOrderGroup"),
        ("ServiceBinary  = %13%\\rgpu.sys", "ServiceBinary  = %12%\\rgpu.sys", "ServiceBinary"),
        ("rgpu.Files.Kmd = 13", "rgpu.Files.Kmd = 12", "DIRID 13"),
        ("DefaultDestDir = 13", "DefaultDestDir = 11", "DefaultDestDir"),
        ("= rgpu_Inst, ROOT\\RGPU", "= rgpu_Inst, ROOT\\OTHER", "ROOT\\RGPU"),
        ("= rgpu_Inst, PCI\\VEN_FFFE&DEV_52A0", "= rgpu_Inst, PCI\\VEN_1234&DEV_0001", "PCI\\VEN_FFFE"),
        ("rgpu.SvcDesc        = \"rgpu WDDM miniport\"\n", "\n", "%rgpu.SvcDesc%"),
        ("ExcludeFromSelect = *", "ExcludeFromSelect = PCI\\X", "ExcludeFromSelect"),
        ("[SourceDisksFiles]\nrgpu.sys = 1", "[SourceDisksFiles]\nother.sys = 1", "SourceDisksFiles"),
        ("CopyFiles = rgpu.Files.Kmd\n", "CopyFiles = rgpu.Files.Kmd\nAddReg = r.AddReg\n[r.AddReg]\nHKR,, DefaultSettings.XResolution, 0x00010001, 1024\n", "render-only"),
        ("CopyFiles = rgpu.Files.Kmd\n", "CopyFiles = rgpu.Files.Kmd\nAddReg = r.AddReg\n[r.AddReg]\nHKR,, UserModeDriverName, 0x00010000, rgpuumd.dll, rgpuumd.dll, rgpuumd.dll, rgpuumd.dll\n", "does not ship"),
        ("PnpLockdown = 1\n", "PnpLockdown = 1\nLayoutFile = layout.inf\n", "LayoutFile"),
        ("ProviderName        = \"rgpu project\"", "ProviderName        = \"r\u{e9}gpu\"", "non-ASCII"),
    ];
    let original = template();
    for (from, to, expect) in cases {
        assert!(
            original.contains(from),
            "test case out of date: template lacks {from:?}"
        );
        let broken = original.replacen(from, to, 1);
        let problems = check(&broken, Form::Template);
        assert!(
            problems.iter().any(|p| p.contains(expect)),
            "replacing {from:?} with {to:?}: expected a problem mentioning {expect:?}, got {problems:?}"
        );
    }
}
