#!/usr/bin/env bash
# Cross build of the user-mode client rgpu-kmt.exe (crates/rgpu-kmt, Windows backend: gdi32's
# D3DKMT functions) on Linux, with rustup's x86_64-pc-windows-gnu target and Debian's mingw-w64:
#
#   tools/cross/build-kmt.sh           -> out/rgpu-kmt.exe, then its PE import check
#   tools/cross/build-kmt.sh --wine    ... then run it under Wine: it must fail cleanly with
#                                      "no rgpu adapter" (exit code 3), Wine having no Dxgkrnl
#
# Installs what it needs when missing (rustup target; gcc-mingw-w64-x86-64 for the linker and
# dlltool; wine64 for --wine — apt needs root, as CI has).
set -euo pipefail

repo="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$repo"
wine_run=0
case "${1:-}" in
    "") ;;
    --wine) wine_run=1 ;;
    *) echo "usage: $0 [--wine]" >&2; exit 2 ;;
esac
say() { echo "build-kmt: $*"; }
die() { echo "build-kmt: error: $*" >&2; exit 1; }
target=x86_64-pc-windows-gnu
apt_install() {
    [[ $(id -u) -eq 0 ]] || die "missing $*: run as root or apt-get install $*"
    say "installing $*"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    timeout 600 apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# --- tools -----------------------------------------------------------------------------------
rustup target list --installed | grep -qx "$target" || { say "rustup target add $target"; rustup target add "$target"; }
command -v x86_64-w64-mingw32-gcc >/dev/null && command -v x86_64-w64-mingw32-dlltool >/dev/null \
    || apt_install gcc-mingw-w64-x86-64

# --- build -----------------------------------------------------------------------------------
# The windows crate binds gdi32 with raw-dylib imports (mingw's dlltool makes the import
# libraries); the linker is mingw's gcc.
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc
cargo build -q --release -p rgpu-kmt --target "$target"
mkdir -p out
cp "target/$target/release/rgpu-kmt.exe" out/rgpu-kmt.exe
say "out/rgpu-kmt.exe: $(stat -c %s out/rgpu-kmt.exe) bytes ($(rustc --version))"

# --- PE imports: the D3DKMT calls are bound from gdi32.dll at load time ----------------------
required=(D3DKMTEnumAdapters2 D3DKMTOpenAdapterFromLuid D3DKMTCreateDevice D3DKMTCreateAllocation2
          D3DKMTMapGpuVirtualAddress D3DKMTSubmitCommand D3DKMTCreateSynchronizationObject2
          D3DKMTWaitForSynchronizationObjectFromCpu D3DKMTLock2 D3DKMTOpenResource2 D3DKMTEscape)
args=()
for f in "${required[@]}"; do args+=(--require-import "gdi32.dll!$f"); done
cargo run -q --release -p pe-check -- out/rgpu-kmt.exe "${args[@]}" | grep -E '^(PASS|FAIL)|^pe-check:' \
    || die "pe-check: out/rgpu-kmt.exe lacks a required gdi32 import"

((wine_run)) || exit 0

# --- Wine: no Dxgkrnl, so no adapter ---------------------------------------------------------
command -v wine >/dev/null && command -v wineserver >/dev/null || apt_install wine64
work="$(mktemp -d /tmp/rgpu-kmt-wine.XXXXXX)"
export WINEPREFIX="$work/prefix" WINEARCH=win64 WINEDLLOVERRIDES="mscoree,mshtml=" WINEDEBUG=-all
unset DISPLAY WAYLAND_DISPLAY
cleanup() { timeout 20 wineserver -k >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
t0=$(date +%s)
timeout 180 wine wineboot -i >"$work/wineboot.log" 2>&1 || { tail -20 "$work/wineboot.log"; die "wineboot failed"; }
cp out/rgpu-kmt.exe "$work/"
# Wine 8.0 lacks bcryptprimitives.dll, which Rust's std imports (see the shim's comment).
if [[ ! -f /usr/lib/x86_64-linux-gnu/wine/x86_64-windows/bcryptprimitives.dll ]]; then
    x86_64-w64-mingw32-gcc -O2 -shared -s -o "$work/bcryptprimitives.dll" \
        tools/wine/bcryptprimitives-shim.c -ladvapi32
    say "wine: $(wine --version) has no bcryptprimitives.dll; using tools/wine/bcryptprimitives-shim.c"
fi
# What Wine 8.0's gdi32 gives: none of the WDDM 2.x D3DKMT exports rgpu-kmt binds, so the
# client refuses to call them and reports no adapter.
reason="adapter enumeration failed: D3DKMTEnumAdapters2 returned STATUS_PROCEDURE_NOT_FOUND (0xc000007a)"
for cmd in selftest info; do
    set +e
    (cd "$work" && timeout 60 wine ./rgpu-kmt.exe "$cmd" >"$work/$cmd.out" 2>"$work/$cmd.err")
    code=$?
    set -e
    last="$(tr -d '\r' <"$work/$cmd.out" | tail -n 1)"
    want="rgpu-kmt $cmd: no rgpu adapter ($reason)"
    if [[ $code -ne 3 || "$last" != "$want" ]] || grep -qi "unimplemented function\|exception" "$work/$cmd.err"; then
        cat "$work/$cmd.out" "$work/$cmd.err" >&2
        die "wine: rgpu-kmt.exe $cmd: exit $code, last line '$last'; expected exit 3 and '$want'"
    fi
    say "wine: rgpu-kmt.exe $cmd -> exit 3, '$last'"
done
say "wine: PASS (clean \"no rgpu adapter\" failure, $(( $(date +%s) - t0 ))s)"
