//! `dxgk::paging::BuildPagingBuffer::from_raw` alone: raw argument blocks and MDL headers
//! straight into the views, no driver behind them. Input layout, contract and invariants:
//! `DecodeInput` in `tests/support/fuzz_harness.rs`.
#![no_main]
#![deny(
    unsafe_op_in_unsafe_fn,
    clippy::undocumented_unsafe_blocks,
    clippy::multiple_unsafe_ops_per_block
)]

#[path = "../../tests/support/fuzz_harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::run_decode(&harness::DecodeInput::from_bytes(data));
});
