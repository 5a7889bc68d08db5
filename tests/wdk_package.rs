//! The wdk flavour's package (drivers/rgpu-wdk) builds this crate's source with the
//! windows-drivers-rs crates, from a manifest of its own. It cannot be built here (Windows + WDK,
//! or tools/wdk-check with WDK headers), so these tests keep the two manifests in step.

use std::collections::BTreeMap;

/// `[section] -> key -> raw value` for the simple `key = value` lines of a Cargo manifest.
fn sections(manifest: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut section = String::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            out.entry(section.clone()).or_default();
        } else if let Some((key, value)) = line.split_once('=') {
            out.entry(section.clone())
                .or_default()
                .insert(key.trim().to_string(), value.trim().to_string());
        }
    }
    out
}

fn read(path: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let full = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
    sections(&std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}")))
}

#[test]
fn wdk_package_has_the_root_package_name_and_version() {
    let root = read("Cargo.toml");
    let wdk = read("drivers/rgpu-wdk/Cargo.toml");
    // cargo make names rgpu.sys/.inf/.cat after the package and stamps its version into DriverVer.
    assert_eq!(wdk["package"]["name"], root["package"]["name"]);
    assert_eq!(wdk["package"]["version"], root["package"]["version"]);
}

#[test]
fn wdk_package_builds_this_source_as_a_cdylib() {
    let wdk = read("drivers/rgpu-wdk/Cargo.toml");
    assert_eq!(wdk["lib"]["path"], "\"../../src/lib.rs\"");
    assert_eq!(wdk["lib"]["crate-type"], "[\"cdylib\"]");
    assert_eq!(
        wdk["package.metadata.wdk.driver-model"]["driver-type"],
        "\"WDM\""
    );
}

#[test]
fn wdk_package_has_every_dependency_of_the_root_package() {
    let root = read("Cargo.toml");
    let wdk = read("drivers/rgpu-wdk/Cargo.toml");
    for name in root["dependencies"].keys() {
        assert!(
            wdk["dependencies"].contains_key(name),
            "drivers/rgpu-wdk/Cargo.toml lacks dependency {name} of the root package"
        );
    }
    // windows-drivers-rs expects the driver to depend on its crates unconditionally.
    for name in ["wdk", "wdk-sys", "wdk-alloc", "wdk-panic"] {
        assert!(wdk["dependencies"].contains_key(name), "{name}");
    }
    assert!(wdk["build-dependencies"].contains_key("wdk-build"));
    assert!(
        wdk["dependencies"]["dxgk-sys"].contains("features = [\"wdk\"]"),
        "dxgk-sys's wdk feature (displib.lib's DxgkInitialize)"
    );
}

#[test]
fn wdk_package_is_its_own_workspace() {
    let root = read("Cargo.toml");
    let wdk = read("drivers/rgpu-wdk/Cargo.toml");
    assert!(wdk.contains_key("workspace"));
    assert!(root["workspace"]["exclude"].contains("\"drivers/rgpu-wdk\""));
    assert!(!root["workspace"]["members"].contains("drivers/rgpu-wdk"));
}
