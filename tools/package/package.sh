#!/usr/bin/env bash
# Cross flavour of the driver package, built on Linux without the WDK:
#
#   tools/package/package.sh
#
#   out/package/rgpu.sys       the cross-built driver, Authenticode test-signed (osslsigncode)
#   out/package/rgpu.inf       inf/rgpu.inx stamped: DriverVer = build date (MM/DD/YYYY, UTC;
#                              SOURCE_DATE_EPOCH if set), crate version as a.b.c.0; $ARCH$ = amd64
#   out/package/rgpu-test.cer  the public test certificate, for the test machine to trust
#   out/package/rgpu-kmt.exe   the user-mode client (`rgpu-kmt selftest` / `info` on the test
#                              machine; docs/testing-on-windows.md), unsigned: a user-mode exe
#                              needs no signature under test signing
#   out/rgpu-test.{key,pem,pfx} the test signing key and certificate (generated once, reused,
#                              never committed: /out and *.key *.pem *.pfx are git-ignored)
#
# Runs tools/cross/build.sh first when out/rgpu.sys is missing or older than its sources.
# Not made here: rgpu.cat. A catalog needs inf2cat, which only exists on Windows
# (docs/packaging.md). Installs osslsigncode/openssl from Debian when missing (needs root).
set -euo pipefail

repo="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$repo"
pkg=out/package
key=out/rgpu-test.key
cert=out/rgpu-test.pem
pfx=out/rgpu-test.pfx
pfx_password=rgpu-test            # a throwaway test key; the password only keeps tools happy
subject="/CN=rgpu test signing (untrusted, test machines only)"
say() { echo "package: $*"; }
die() { echo "package: error: $*" >&2; exit 1; }

# --- tools -----------------------------------------------------------------------------------
need=()
command -v osslsigncode >/dev/null || need+=(osslsigncode)
command -v openssl >/dev/null || need+=(openssl)
if ((${#need[@]})); then
    [[ $(id -u) -eq 0 ]] || die "missing ${need[*]}: run as root or apt-get install ${need[*]}"
    say "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# --- rgpu.sys --------------------------------------------------------------------------------
inputs=(src build.rs Cargo.toml Cargo.lock rust-toolchain.toml tools/cross/build.sh
        crates/dxgk-sys crates/dxgk crates/rgpu-hw)
if [[ ! -f out/rgpu.sys ]]; then
    say "out/rgpu.sys missing: running tools/cross/build.sh"
    tools/cross/build.sh
elif newer="$(find "${inputs[@]}" -newer out/rgpu.sys -print -quit)" && [[ -n $newer ]]; then
    say "out/rgpu.sys older than $newer: running tools/cross/build.sh"
    tools/cross/build.sh
else
    say "out/rgpu.sys is up to date"
fi

# --- rgpu-kmt.exe ----------------------------------------------------------------------------
kmt_inputs=(crates/rgpu-kmt crates/rgpu-abi crates/rgpu-hw Cargo.lock tools/cross/build-kmt.sh)
if [[ ! -f out/rgpu-kmt.exe ]]; then
    say "out/rgpu-kmt.exe missing: running tools/cross/build-kmt.sh"
    tools/cross/build-kmt.sh
elif newer="$(find "${kmt_inputs[@]}" -newer out/rgpu-kmt.exe -print -quit)" && [[ -n $newer ]]; then
    say "out/rgpu-kmt.exe older than $newer: running tools/cross/build-kmt.sh"
    tools/cross/build-kmt.sh
else
    say "out/rgpu-kmt.exe is up to date"
fi

rm -rf "$pkg"
mkdir -p "$pkg"
cp out/rgpu-kmt.exe "$pkg/rgpu-kmt.exe"

# --- rgpu.inf (stamping and INF checks: crate rgpu-package, the code tests/inf.rs tests) -----
cargo run -q -p rgpu-package -- stamp inf/rgpu.inx Cargo.toml "$pkg/rgpu.inf"

# --- test certificate ------------------------------------------------------------------------
# Self-signed code-signing certificate. Regenerated only when missing or expiring within 30 days,
# so that signatures stay reproducible (same key, same -time => same bytes).
if [[ ! -f $key || ! -f $cert ]] || ! openssl x509 -in "$cert" -noout -checkend $((30 * 86400)) >/dev/null; then
    say "generating test certificate $cert"
    (umask 077; openssl req -x509 -newkey rsa:3072 -sha256 -days 730 -nodes \
        -keyout "$key" -out "$cert" -subj "$subject" \
        -addext "basicConstraints=critical,CA:FALSE" \
        -addext "keyUsage=critical,digitalSignature" \
        -addext "extendedKeyUsage=codeSigning" 2>/dev/null)
    rm -f "$pfx"
fi
if [[ ! -f $pfx ]]; then
    # For signtool on Windows (signing rgpu.cat after inf2cat). SHA1-3DES PBE: every Windows 10
    # release can import it, unlike OpenSSL 3's AES default on older builds.
    (umask 077; openssl pkcs12 -export -inkey "$key" -in "$cert" -out "$pfx" -name "rgpu test signing" \
        -keypbe PBE-SHA1-3DES -certpbe PBE-SHA1-3DES -macalg sha1 -passout "pass:$pfx_password")
fi
openssl x509 -in "$cert" -outform DER -out "$pkg/rgpu-test.cer"
fingerprint="$(openssl x509 -in "$cert" -noout -fingerprint -sha256 | cut -d= -f2 | tr -d :)"

# --- Authenticode signature on rgpu.sys ------------------------------------------------------
time_args=()
[[ -n ${SOURCE_DATE_EPOCH:-} ]] && time_args=(-time "$SOURCE_DATE_EPOCH")
osslsigncode sign -certs "$cert" -key "$key" -h sha256 -n "rgpu WDDM miniport (test build)" \
    "${time_args[@]}" -in out/rgpu.sys -out "$pkg/rgpu.sys" >/dev/null

# The certificate is self-signed: trust comes from -CAfile (the test cert itself), and
# -require-leaf-hash checks that the signer is this certificate and no other.
verify_log="$(mktemp)"
trap 'rm -f "$verify_log"' EXIT
if ! osslsigncode verify -in "$pkg/rgpu.sys" -CAfile "$cert" -require-leaf-hash "sha256:$fingerprint" \
        >"$verify_log" 2>&1 || ! grep -q '^Signature verification: ok' "$verify_log"; then
    cat "$verify_log" >&2
    die "osslsigncode verify rejected $pkg/rgpu.sys"
fi
# osslsigncode prints one "PE checksum" line when the header checksum is right and a
# current/calculated pair with MISMATCH when it is not (the kernel checks it for drivers).
if ! grep -q '^PE checksum' "$verify_log" || grep -qi 'mismatch' "$verify_log"; then
    cat "$verify_log" >&2
    die "PE checksum of the signed image is wrong"
fi

# The signed image must still pass the PE checks (the signature adds a certificate table).
cargo run -q --release -p pe-check -- "$pkg/rgpu.sys" >/dev/null \
    || die "pe-check rejects the signed $pkg/rgpu.sys"

# --- report ----------------------------------------------------------------------------------
say "signature: $(grep -m1 '^Signature verification' "$verify_log") (signer sha256 $fingerprint, trusted via -CAfile $cert)"
say "package $pkg:"
(cd "$pkg" && for f in *; do printf '  %-14s %8s bytes  sha256 %s\n' "$f" "$(stat -c %s "$f")" "$(sha256sum "$f" | cut -c1-16)"; done)
say "not included: rgpu.cat (run inf2cat + signtool on Windows: docs/packaging.md)"
