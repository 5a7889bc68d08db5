#!/usr/bin/env bash
# wdk flavour on Linux: check and build drivers/rgpu-wdk (windows-drivers-rs) for
# x86_64-pc-windows-msvc against real WDK headers, PE-check the image, and compare its imports
# and exports with the cross flavour's (tools/cross/build.sh).
#
#   WDK_ROOT=/path/with/Include/<version>/{km,shared,um} tools/wdk-check/run.sh
#
# WDK_ROOT holds the WDK's km/ and shared/ headers (shared/ merged with the Windows SDK's);
# WDK_VERSION picks one of several Include/<version> directories (default: the highest). Without
# WDK_ROOT it says so and exits 0: our CI has no WDK headers. Installs what it needs from Debian
# (as root, like tools/cross/build.sh).
#
# What differs from a Windows build, all of it in target/wdk-check/ (never in the repository or
# in WDK_ROOT; patch_wdk_build.py and wdk_kit.py say exactly what):
# - a scratch copy of wdk-build without its Windows-only parts (the `windows` crate, the
#   registry; the WDK is found through WDKContentRoot), used through [patch.crates-io];
# - a scratch WDKContentRoot: symlinks to WDK_ROOT's headers plus case-variant links, and stub
#   .lib files (the WDK's libraries are not among the headers);
# - a copy of drivers/rgpu-wdk whose relative paths point at this repository, so that its
#   Cargo.lock is not rewritten by the patch;
# - Debian's rustc-web with -Zbuild-std=core,alloc and lld-link, as the cross flavour.
#
# Checks, each of which fails the run:
#  1. `cargo check` and `cargo build --release` of the wdk flavour (0 warnings in rgpu's code);
#  2. the wdk-sys layout comparison: src/wdk_layouts.rs lists exactly the types both dxgk-sys
#     and wdk-sys define, its compile-time assertions hold, and a self-test build that skews
#     every comparison by one byte fails once per type;
#  3. pe-check on the image;
#  4. imports equal to the cross image's except the documented differences below; exports
#     equal except wdk-sys's.
set -euo pipefail

repo="$(cd "$(dirname "$0")/../.." && pwd)"
here="$repo/tools/wdk-check"
triple=x86_64-pc-windows-msvc

if [[ -z "${WDK_ROOT:-}" ]]; then
    echo "wdk-check: WDK_ROOT is not set: skipped (needs the WDK's Include/<version>/{km,shared,um}; docs/packaging.md)"
    exit 0
fi
[[ -d "$WDK_ROOT/Include" ]] || { echo "wdk-check: $WDK_ROOT/Include does not exist" >&2; exit 1; }
version="${WDK_VERSION:-$(find "$WDK_ROOT/Include" -mindepth 1 -maxdepth 1 -name '10.*' -printf '%f\n' | sort -V | tail -1)}"
[[ -n "$version" && -d "$WDK_ROOT/Include/$version/km" ]] || {
    echo "wdk-check: no Include/<version>/km under $WDK_ROOT" >&2; exit 1; }

need=()
for pkg in rustc-web cargo-web rust-web-src lld-19 clang-19; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if ((${#need[@]})); then
    echo "wdk-check: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
llvm=/usr/lib/llvm-19
lld_link="$llvm/bin/lld-link"

scratch="$repo/target/wdk-check"
kit="$scratch/kit"
pkg="$scratch/pkg"
mkdir -p "$scratch" "$pkg/.cargo"
log="$scratch/log"
mkdir -p "$log"

# Copies $1 to $2 only when the content differs, so cargo's mtime fingerprints stay valid and
# the expensive parts (wdk-sys's bindgen, build-std) are reused across runs.
put() { cmp -s "$1" "$2" 2>/dev/null || cp "$1" "$2"; }

# --- scratch wdk-build --------------------------------------------------------------------
wdk_build_src="$(cd "$repo/drivers/rgpu-wdk" && /usr/bin/cargo metadata --format-version 1 --locked 2>/dev/null \
    | python3 -c 'import json,sys; print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"]=="wdk-build").rsplit("/",1)[0])')"
wdk_build_version="$(basename "$wdk_build_src")"
stamp="$(sha256sum "$here/patch_wdk_build.py" | cut -c1-16)-$wdk_build_version"
if [[ "$(cat "$scratch/wdk-build.stamp" 2>/dev/null)" != "$stamp" ]]; then
    rm -rf "$scratch/wdk-build"
    cp -r "$wdk_build_src" "$scratch/wdk-build"
    python3 "$here/patch_wdk_build.py" "$scratch/wdk-build"
    echo "$stamp" > "$scratch/wdk-build.stamp"
fi

# --- scratch WDKContentRoot ---------------------------------------------------------------
rm -rf "$kit/Include"
python3 "$here/wdk_kit.py" include "$WDK_ROOT" "$version" "$kit"
mkdir -p "$kit/Lib/$version/km/x64"   # filled after the first pass, when the bindings exist

# --- the package, with paths pointing at this repository --------------------------------
sed "s#\"\.\./\.\./#\"$repo/#g" "$repo/drivers/rgpu-wdk/Cargo.toml" > "$scratch/Cargo.toml.new"
if grep -q '"\.\./' "$scratch/Cargo.toml.new"; then
    echo "wdk-check: drivers/rgpu-wdk/Cargo.toml has a relative path this script does not rewrite" >&2
    exit 1
fi
put "$scratch/Cargo.toml.new" "$pkg/Cargo.toml"
put "$repo/drivers/rgpu-wdk/build.rs" "$pkg/build.rs"
put "$repo/drivers/rgpu-wdk/.cargo/config.toml" "$pkg/.cargo/config.toml"
put "$repo/drivers/rgpu-wdk/Cargo.lock" "$pkg/Cargo.lock"   # cargo then locks the patched wdk-build

export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1
export CARGO_TARGET_X86_64_PC_WINDOWS_MSVC_LINKER="$lld_link"
export LIBCLANG_PATH="$llvm/lib" CLANG_PATH="$llvm/bin/clang"
export WDKContentRoot="$kit"
unset RUSTFLAGS CARGO_TARGET_DIR CARGO_BUILD_TARGET_DIR
# The warning "patch `wdk-build` ... was not used in the crate graph" comes from -Zbuild-std's
# separate resolve of the standard library; the driver's graph does use the patch.
cargo_wdk() {
    (cd "$pkg" && /usr/bin/cargo "$@" --release --target "$triple" -Zbuild-std=core,alloc \
        --config "patch.crates-io.wdk-build.path=\"$scratch/wdk-build\"")
}
echo "wdk-check: WDK headers $version from $WDK_ROOT; $(/usr/bin/rustc --version); $("$llvm/bin/clang" --version | head -1); $("$lld_link" --version | head -1)"

# --- 1. check ------------------------------------------------------------------------------
cargo_wdk check --message-format short 2>&1 | tee "$log/check.txt" | grep -v '^\s*\(Compiling\|Checking\|Finished\|Blocking\)' || true
grep -q '^\s*Finished' "$log/check.txt" || { echo "wdk-check: FAIL cargo check" >&2; exit 1; }
warnings=$(grep -c "^$repo/\(src\|crates\)/.*warning" "$log/check.txt" || true)
[[ "$warnings" == 0 ]] || { echo "wdk-check: FAIL $warnings warnings in rgpu's code" >&2; exit 1; }

out_dir="$(ls -d "$pkg"/target/"$triple"/release/build/wdk-sys-*/out 2>/dev/null | while read -r d; do
    [[ -f "$d/types.rs" ]] && echo "$d"; done | head -1)"
[[ -n "$out_dir" ]] || { echo "wdk-check: no wdk-sys bindings under $pkg/target" >&2; exit 1; }

# --- 2. layouts ------------------------------------------------------------------------------
python3 "$here/wdk_kit.py" common-types "$repo/crates/dxgk-sys/src" "$out_dir" | LC_ALL=C sort > "$log/common-types.txt"
for list in same_layout:layout opaque_in_dxgk_sys:opaque; do
    sed -n "/^${list%%:*}!(/,/^);/p" "$repo/src/wdk_layouts.rs" | grep -o '^\s*[A-Za-z_][A-Za-z0-9_]*,' \
        | tr -d ' ,' | sed "s/\$/ ${list##*:}/"
done | LC_ALL=C sort > "$log/listed-types.txt"
if ! diff -u "$log/common-types.txt" "$log/listed-types.txt" > "$log/types.diff"; then
    echo "wdk-check: FAIL src/wdk_layouts.rs does not list exactly the types both dxgk-sys and wdk-sys define (- missing or in the other list, + extra):" >&2
    grep '^[-+][A-Za-z_]' "$log/types.diff" >&2
    exit 1
fi
ntypes=$(wc -l < "$log/common-types.txt")
nopaque=$(grep -c ' opaque$' "$log/common-types.txt" || true)
# The self-test adds 1 to every dxgk-sys size: each comparison must then fail, which shows the
# assertions are compiled and evaluated for every listed type.
RGPU_WDK_LAYOUT_SELFTEST=1 cargo_wdk check --message-format short > "$log/selftest.txt" 2>&1 || true
nfail=$(grep -c 'wdk-sys layout mismatch' "$log/selftest.txt" || true)
[[ "$nfail" == "$ntypes" ]] || {
    echo "wdk-check: FAIL layout self-test: $nfail of $ntypes assertions fired (log: $log/selftest.txt)" >&2; exit 1; }

# --- build -----------------------------------------------------------------------------------
python3 "$here/wdk_kit.py" libs "$kit" "$version" "$out_dir" "$lld_link" "$llvm/bin/clang"
# Cargo does not track the .lib files: remove the image so that it is linked against these.
rm -f "$pkg/target/$triple/release/rgpu.dll" "$pkg/target/$triple/release/deps/rgpu.dll"
cargo_wdk build --message-format short > "$log/build.txt" 2>&1 || {
    cat "$log/build.txt" >&2; echo "wdk-check: FAIL cargo build" >&2; exit 1; }
mkdir -p "$repo/out/wdk"
cp "$pkg/target/$triple/release/rgpu.dll" "$repo/out/wdk/rgpu.sys"

# --- 3. pe-check, cross flavour for comparison ------------------------------------------------
"$repo/tools/cross/build.sh" > "$log/cross.txt" 2>&1 || {
    cat "$log/cross.txt" >&2; echo "wdk-check: FAIL cross build" >&2; exit 1; }
(cd "$repo" && cargo build -q --release -p pe-check)
pe_check="$repo/target/release/pe-check"
"$pe_check" "$repo/out/wdk/rgpu.sys" > "$log/pe-check-wdk.txt" || {
    cat "$log/pe-check-wdk.txt" >&2; echo "wdk-check: FAIL pe-check" >&2; exit 1; }
"$pe_check" "$repo/out/rgpu.sys" > "$log/pe-check-cross.txt"

# --- 4. imports and exports -------------------------------------------------------------------
python3 "$here/compare.py" "$log/pe-check-cross.txt" "$log/pe-check-wdk.txt" \
    "$repo/out/rgpu.sys" "$repo/out/wdk/rgpu.sys" > "$log/compare.txt" || {
    cat "$log/compare.txt" >&2; echo "wdk-check: FAIL import/export comparison" >&2; exit 1; }

echo
echo "=== wdk-check summary"
echo "headers:   WDK $version km/ + shared/ ($WDK_ROOT)"
echo "toolchain: $(/usr/bin/rustc --version), -Zbuild-std=core,alloc; $("$llvm/bin/clang" --version | head -1) (bindgen); $("$lld_link" --version | head -1)"
echo "wdk-build: $wdk_build_version, scratch copy patched by tools/wdk-check/patch_wdk_build.py"
echo "check:     cargo check --release --target $triple: ok, 0 warnings in rgpu's code"
echo "layouts:   $ntypes types both dxgk-sys and wdk-sys define: $((ntypes - nopaque)) with equal (size, align), $nopaque opaque in dxgk-sys (compile-time); self-test: $nfail of $ntypes assertions fire"
echo "build:     out/wdk/rgpu.sys, $(stat -c %s "$repo/out/wdk/rgpu.sys") bytes (stub .lib files: tools/wdk-check/wdk_kit.py)"
echo "pe-check:  $(tail -1 "$log/pe-check-wdk.txt")"
cat "$log/compare.txt"
