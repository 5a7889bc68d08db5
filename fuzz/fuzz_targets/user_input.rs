//! What user mode hands rgpu directly — the DxgkDdiEscape buffer and DxgkDdiCreateAllocation's
//! private data — through dxgk-sim's D3DKMT front end on a started adapter. Input layout,
//! contract and invariants: `tests/support/fuzz_user_input.rs`.
#![no_main]
#![deny(
    unsafe_op_in_unsafe_fn,
    clippy::undocumented_unsafe_blocks,
    clippy::multiple_unsafe_ops_per_block
)]

#[path = "../../tests/support/fuzz_user_input.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::run_user_input(data);
});
