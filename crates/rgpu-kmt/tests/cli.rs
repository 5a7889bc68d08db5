//! The `rgpu-kmt` binary (simulator backend): verdict lines and exit codes.

// The simulator backend (and these options of the CLI) exist only off Windows.
#![cfg(not(windows))]

use std::process::Command;

fn rgpu_kmt(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rgpu-kmt"))
        .args(args)
        .output()
        .expect("run rgpu-kmt");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().expect("exit code"), text)
}

#[test]
fn selftest_passes_and_prints_what_it_verified() {
    let (code, out) = rgpu_kmt(&["selftest", "--iommu", "identity", "--sizes", "4K,1M"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok    1 MiB: "), "{out}");
    assert!(
        out.contains("teardown clean, driver unloaded, no verifier findings"),
        "{out}"
    );
    let last = out.lines().last().unwrap();
    assert!(last.starts_with("rgpu-kmt selftest: PASS ("), "{out}");
}

#[test]
fn no_rgpu_hardware_is_exit_code_3_with_a_clean_message() {
    let (code, out) = rgpu_kmt(&["selftest", "--no-rgpu-hardware", "--quiet"]);
    assert_eq!(code, 3, "{out}");
    assert_eq!(
        out.trim(),
        "rgpu-kmt selftest: no rgpu adapter (D3DKMTEnumAdapters2 found no adapters)"
    );
}

#[test]
fn info_prints_identity_and_counters() {
    let (code, out) = rgpu_kmt(&["info"]);
    assert_eq!(code, 0, "{out}");
    for want in [
        "device ID            0x52475055",
        "escapes answered",
        "rgpu-kmt info: ok",
    ] {
        assert!(out.contains(want), "{want:?} missing:\n{out}");
    }
}

#[test]
fn usage_errors_are_exit_code_2() {
    for args in [
        &[][..],
        &["frobnicate"],
        &["selftest", "--sizes", "4Q"],
        &["info", "--iommu"],
    ] {
        let (code, out) = rgpu_kmt(args);
        assert_eq!(code, 2, "{args:?}: {out}");
        assert!(out.contains("usage: rgpu-kmt"), "{out}");
    }
}
