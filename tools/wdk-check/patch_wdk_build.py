#!/usr/bin/env python3
"""Makes a scratch copy of wdk-build build on a Linux host (tools/wdk-check/run.sh).

usage: patch_wdk_build.py <copy of the wdk-build crate>

wdk-build is Windows-only in exactly four places, and only those are changed:
1. it depends on the `windows` crate (which does not compile on Linux) ...
2. ... to read the Windows Kits root from the registry; here the WDK is found through
   `WDKContentRoot`, which wdk-build checks first anyway;
3. `cargo_make::load_rust_driver_makefile` symlinks with `std::os::windows` (cargo-make only);
4. `utils::{set_var, remove_var}` are `compile_error!` off Windows; they are used by the
   cargo-make helpers only, and here panic if called.
Everything else (WDK layout, bindgen flags, link settings, cargo metadata) runs unchanged.
Each edit must match exactly once, so a wdk-build release that moved the code fails loudly.
"""
import pathlib
import re
import sys


def read(path):
    """Text with its line endings normalised to \n, and the ending the file used."""
    raw = path.read_bytes().decode()
    return raw.replace("\r\n", "\n"), ("\r\n" if "\r\n" in raw else "\n")


def write(path, text, newline):
    path.write_bytes(text.replace("\n", newline).encode())


def replace_once(text, old, new, what):
    count = text.count(old) if isinstance(old, str) else len(old.findall(text))
    if count != 1:
        sys.exit(f"patch_wdk_build: {what}: expected 1 match, found {count}")
    return text.replace(old, new) if isinstance(old, str) else old.sub(new, text)


def main():
    root = pathlib.Path(sys.argv[1])

    manifest = root / "Cargo.toml"
    text, eol = read(manifest)
    # Both `[dependencies.windows]` and `[dev-dependencies.windows]` tables, up to the next table.
    for table in ("dependencies", "dev-dependencies"):
        text = replace_once(
            text,
            re.compile(r"^\[" + re.escape(table) + r"\.windows\]\n(?:(?!\[).*\n)*", re.M),
            "",
            f"[{table}.windows] in Cargo.toml",
        )
    write(manifest, text, eol)

    utils = root / "src" / "utils.rs"
    text, eol = read(utils)
    text = replace_once(
        text,
        re.compile(r"^use windows::\{.*?\};\n", re.M | re.S),
        "// rgpu tools/wdk-check: no `windows` crate and no registry on this host.\n"
        "type HKEY = ();\n"
        "const HKEY_LOCAL_MACHINE: HKEY = ();\n"
        "type PCSTR = &'static str;\n"
        "macro_rules! s {\n    ($s:literal) => {\n        $s\n    };\n}\n",
        "`use windows::{...}` in src/utils.rs",
    )
    text = replace_once(
        text,
        re.compile(
            r"(fn read_registry_key_string_value\(\s*key_handle: HKEY,\s*sub_key: PCSTR,"
            r"\s*value: PCSTR,\s*\) -> Option<String> \{\n).*?(?=^\}\n)",
            re.M | re.S,
        ),
        r"\1    let _ = (key_handle, sub_key, value);\n    None\n",
        "read_registry_key_string_value in src/utils.rs",
    )
    # CStr was only used by the registry code.
    text = replace_once(text, "ffi::{CStr, OsStr},", "ffi::OsStr,", "`use std::ffi::CStr` in src/utils.rs")
    stubs = re.compile(
        r'compile_error!\(\n\s*"windows-drivers-rs is designed to be run on a Windows host.*?\);',
        re.S,
    )
    if len(stubs.findall(text)) != 2:
        sys.exit("patch_wdk_build: compile_error! in utils::set_var/remove_var: expected 2 matches")
    text = stubs.sub('unimplemented!("rgpu tools/wdk-check: cargo-make helper, Windows only")', text)
    write(utils, text, eol)

    cargo_make = root / "src" / "cargo_make.rs"
    text, eol = read(cargo_make)
    old = "std::os::windows::fs::symlink_file("
    if text.count(old) != 2:
        sys.exit(f"patch_wdk_build: {old} in src/cargo_make.rs: expected 2 matches")
    write(cargo_make, text.replace(old, "std::os::unix::fs::symlink("), eol)
    print(f"patch_wdk_build: patched {root} (no windows crate, no registry, unix symlink, set_var)")


if __name__ == "__main__":
    main()
