#!/usr/bin/env bash
# The bounded Miri job CI runs (.ci/run, "Miri" section); docs/miri.md says what it covers.
# Needs the nightly toolchain with miri and rust-src (`cargo +nightly miri setup` done).
# Isolation is off because the verifier formats std backtraces, which ask for the cwd.
set -euo pipefail
cd "$(dirname "$0")/../.."
export MIRIFLAGS="-Zmiri-disable-isolation"
miri() { echo "+ MIRIFLAGS='$MIRIFLAGS' cargo +nightly miri test $*"; cargo +nightly miri test -q "$@"; }

# dxgk-sys inline MDL routines: Stacked Borrows, then Tree Borrows, both with strict provenance.
MIRIFLAGS="-Zmiri-strict-provenance" miri -p dxgk-sys --test inline
MIRIFLAGS="-Zmiri-strict-provenance -Zmiri-tree-borrows" miri -p dxgk-sys --test inline
# dxgk: every test (compile_fail is ignored under Miri: trybuild runs rustc).
miri -p dxgk --lib --test args --test query --test compile_fail --test page_pool
miri -p dxgk --test memory
# The driver's QueryAdapterInfo (caps) tests.
miri --test caps
# dxgk-sim: DbgPrintEx stand-in, pool, and machines running on parallel threads.
miri -p dxgk-sim --lib --test pool
miri -p dxgk-sim --test memory machines_are_independent_in_parallel
