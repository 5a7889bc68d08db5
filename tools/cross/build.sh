#!/usr/bin/env bash
# Cross flavour: build rgpu.sys for x86_64-pc-windows-msvc on Debian 12, without the WDK.
#
#   tools/cross/build.sh [--debug]      -> out/rgpu.sys
#
# Recipe measured in ../shared/reference/cross-build.md: Debian's rustc-web (its std source
# matches it exactly, which rustup's compilers do not), -Zbuild-std for core+alloc,
# compiler-builtins-mem for memcpy & co., lld-link from lld-19. Linker flags come from build.rs.
# Installs the Debian packages when missing (needs root, as CI has).
set -euo pipefail

repo="$(cd "$(dirname "$0")/../.." && pwd)"
profile=release
[[ "${1:-}" == "--debug" ]] && profile=debug

need=()
for pkg in rustc-web cargo-web rust-web-src lld-19; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if ((${#need[@]})); then
    echo "cross-build: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Debian's toolchain, not rustup's proxies (which would pick rust-toolchain.toml's 1.95).
export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1
export CARGO_TARGET_X86_64_PC_WINDOWS_MSVC_LINKER=/usr/lib/llvm-19/bin/lld-link
export CARGO_TARGET_DIR="$repo/target/cross"
# panic=abort for the whole image (core/alloc included); tests on the host keep unwinding.
export CARGO_PROFILE_RELEASE_PANIC=abort CARGO_PROFILE_DEV_PANIC=abort

args=(build -p rgpu --target x86_64-pc-windows-msvc
      -Zbuild-std=core,alloc -Zbuild-std-features=compiler-builtins-mem)
[[ $profile == release ]] && args+=(--release)
# Debug builds: avoids undefined fma/fmaf from compiler_builtins (cross-build.md, "Dev profile").
args+=(--config 'profile.dev.package.compiler_builtins.codegen-units=10000')

echo "cross-build: $(/usr/bin/rustc --version) + $(/usr/lib/llvm-19/bin/lld-link --version | head -1)"
(cd "$repo" && /usr/bin/cargo "${args[@]}")

mkdir -p "$repo/out"
cp "$CARGO_TARGET_DIR/x86_64-pc-windows-msvc/$profile/rgpu.dll" "$repo/out/rgpu.sys"
echo "cross-build: wrote out/rgpu.sys ($(stat -c %s "$repo/out/rgpu.sys") bytes)"
