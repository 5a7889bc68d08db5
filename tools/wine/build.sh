#!/usr/bin/env bash
# Wine test tooling: cross-build the fake Dxgkrnl port (tools/wine-dxgkrnl) for
# x86_64-pc-windows-msvc, exactly like tools/cross/build.sh builds rgpu.sys (Debian rustc-web,
# -Zbuild-std, lld-link; ../shared/reference/cross-build.md).
#
#   tools/wine/build.sh          -> out/wine/dxgkrnl.sys
#
# Separate target dir (target/cross-wine) so it never invalidates rgpu's cross build.
set -euo pipefail

repo="$(cd "$(dirname "$0")/../.." && pwd)"
need=()
for pkg in rustc-web cargo-web rust-web-src lld-19; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if ((${#need[@]})); then
    echo "wine-build: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1
export CARGO_TARGET_X86_64_PC_WINDOWS_MSVC_LINKER=/usr/lib/llvm-19/bin/lld-link
export CARGO_TARGET_DIR="$repo/target/cross-wine"

(cd "$repo/tools/wine-dxgkrnl" && /usr/bin/cargo build --release --target x86_64-pc-windows-msvc \
    -Zbuild-std=core,alloc -Zbuild-std-features=compiler-builtins-mem)

mkdir -p "$repo/out/wine"
cp "$CARGO_TARGET_DIR/x86_64-pc-windows-msvc/release/wine_dxgkrnl.dll" "$repo/out/wine/dxgkrnl.sys"
echo "wine-build: wrote out/wine/dxgkrnl.sys ($(stat -c %s "$repo/out/wine/dxgkrnl.sys") bytes)"
