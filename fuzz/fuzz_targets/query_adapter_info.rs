//! DxgkDdiQueryAdapterInfo through rgpu's registered DDI table on a started adapter in
//! dxgk-sim. Input layout, contract and invariants: `tests/support/fuzz_harness.rs`.
#![no_main]
#![deny(
    unsafe_op_in_unsafe_fn,
    clippy::undocumented_unsafe_blocks,
    clippy::multiple_unsafe_ops_per_block
)]

#[path = "../../tests/support/fuzz_harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::run_qai(&harness::QaiInput::from_bytes(data));
});
