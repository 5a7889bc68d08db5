//! The fuzz harness under `cargo test`: every hand-made seed, every file of the checked-in seed
//! corpora (`fuzz/seeds/<target>/`) and every minimized fuzzer finding
//! (`fuzz/regressions/<target>/`) replayed through `tests/support/fuzz_harness.rs` — the code
//! the cargo-fuzz targets in `fuzz/` run — so the harness and its invariants stay exercised
//! without a fuzzer.
//!
//! Regenerate the seed files after changing the seeds or the input layout with
//! `RGPU_WRITE_FUZZ_SEEDS=1 cargo test --test fuzz_regressions seed_files`.

#[path = "support/fuzz_harness.rs"]
mod fuzz_harness;

use std::path::PathBuf;

use dxgk_sys as sys;
use fuzz_harness::{
    decode_seeds, finish_thread, paging_seeds, qai_seeds, run_decode, run_paging, run_qai,
    DecodeInput, DecodeOutcome, PagingInput, QaiInput,
};

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files of `fuzz/<kind>/<target>/`, sorted.
fn files(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = fuzz_dir().join(kind).join(target);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    v.retain(|p| p.is_file());
    v.sort();
    v
}

fn check_seed_file(target: &str, name: &str, bytes: &[u8]) {
    let path = fuzz_dir().join("seeds").join(target).join(name);
    if std::env::var_os("RGPU_WRITE_FUZZ_SEEDS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
    }
    let on_disk = std::fs::read(&path).unwrap_or_default();
    assert_eq!(
        on_disk,
        bytes,
        "{} is stale: rerun with RGPU_WRITE_FUZZ_SEEDS=1",
        path.display()
    );
}

#[test]
fn seed_files_match_the_seeds_and_decode_back() {
    for (name, input) in paging_seeds() {
        let bytes = input.to_bytes();
        assert_eq!(PagingInput::from_bytes(&bytes), input, "{name}");
        check_seed_file("build_paging_buffer", name, &bytes);
    }
    for (name, input) in qai_seeds() {
        let bytes = input.to_bytes();
        assert_eq!(QaiInput::from_bytes(&bytes), input, "{name}");
        check_seed_file("query_adapter_info", name, &bytes);
    }
    for (name, input) in decode_seeds() {
        let bytes = input.to_bytes();
        assert_eq!(DecodeInput::from_bytes(&bytes), input, "{name}");
        check_seed_file("decode_paging_buffer", name, &bytes);
    }
    // Short inputs read as zeros past their end (libFuzzer starts from tiny inputs).
    assert_eq!(PagingInput::from_bytes(&[]), PagingInput::default());
}

#[test]
fn paging_seeds_reach_what_they_were_made_for() {
    for (name, input) in paging_seeds() {
        let out = run_paging(&input);
        let expected = match name {
            "read_physical_refused" | "unknown_operation" => sys::STATUS_NOT_SUPPORTED,
            n if n.contains("malformed_mdl") => sys::STATUS_INVALID_PARAMETER,
            _ => sys::STATUS_SUCCESS,
        };
        assert_eq!(out.status, expected, "{name}: {out:?}");
        if name.contains("small_dma") {
            assert!(out.passes > 1, "{name}: multipass expected: {out:?}");
        }
    }
    finish_thread();
}

#[test]
fn decode_seeds_reach_what_they_were_made_for() {
    use dxgk::paging::Operation;
    for (name, input) in decode_seeds() {
        let expected = match name {
            "update_gpu" | "update_cpu_no_dma" => {
                DecodeOutcome::Decoded(Operation::UpdatePageTable)
            }
            "map_aperture" => DecodeOutcome::Decoded(Operation::MapApertureSegment),
            "transfer_mdl_to_segment" => DecodeOutcome::Decoded(Operation::Transfer),
            "copy_page_table_entries" => DecodeOutcome::Decoded(Operation::CopyPageTableEntries),
            "flush_tlb" => DecodeOutcome::Decoded(Operation::FlushTlb),
            n if n.starts_with("unknown_operation") => {
                DecodeOutcome::Refused(sys::STATUS_NOT_SUPPORTED)
            }
            _ => DecodeOutcome::Refused(sys::STATUS_INVALID_PARAMETER),
        };
        assert_eq!(run_decode(&input), expected, "{name}");
    }
}

#[test]
fn qai_seeds_reach_what_they_were_made_for() {
    for (name, input) in qai_seeds() {
        let status = run_qai(&input);
        let expected = match name {
            "drivercaps_odd_size" => sys::STATUS_INVALID_PARAMETER,
            "unknown_type" => sys::STATUS_NOT_SUPPORTED,
            _ => sys::STATUS_SUCCESS,
        };
        assert_eq!(status, expected, "{name}");
    }
    finish_thread();
}

#[test]
fn every_corpus_and_regression_file_replays_clean() {
    let mut n = 0;
    for kind in ["seeds", "regressions"] {
        for path in files(kind, "build_paging_buffer") {
            run_paging(&PagingInput::from_bytes(&std::fs::read(&path).unwrap()));
            n += 1;
        }
        for path in files(kind, "query_adapter_info") {
            run_qai(&QaiInput::from_bytes(&std::fs::read(&path).unwrap()));
            n += 1;
        }
        for path in files(kind, "decode_paging_buffer") {
            run_decode(&DecodeInput::from_bytes(&std::fs::read(&path).unwrap()));
            n += 1;
        }
    }
    assert!(
        n >= paging_seeds().len() + qai_seeds().len() + decode_seeds().len(),
        "{n} files"
    );
    finish_thread();
}

/// Prints a corpus file or crash artifact as the harness decodes it:
/// `RGPU_FUZZ_INPUT=fuzz/artifacts/build_paging_buffer/crash-… cargo test --test
/// fuzz_regressions show_input -- --ignored --nocapture` (a path with `query_adapter_info` in
/// it decodes as a QueryAdapterInfo input, one with `decode_paging_buffer` as a decode input).
#[test]
#[ignore = "a tool: set RGPU_FUZZ_INPUT"]
fn show_input() {
    let path = std::env::var("RGPU_FUZZ_INPUT").expect("RGPU_FUZZ_INPUT=<file>");
    let bytes = std::fs::read(&path).unwrap();
    if path.contains("query_adapter_info") {
        println!("{:#?}", QaiInput::from_bytes(&bytes));
    } else if path.contains("decode_paging_buffer") {
        println!("{:#?}", DecodeInput::from_bytes(&bytes));
    } else {
        println!("{:#?}", PagingInput::from_bytes(&bytes));
    }
}

// ---------------------------------------------------------------------------------------------
// Findings, minimized (the fuzzer's inputs are in fuzz/regressions/build_paging_buffer/).

fn paging(input: PagingInput) -> sys::NTSTATUS {
    let status = run_paging(&input).status;
    finish_thread();
    status
}

/// TRANSFER from aperture offset 0x27: each 4 KiB COPY started inside one GART page and ran
/// into the next, whose logical page need not be adjacent. Now refused.
#[test]
fn regression_transfer_from_inside_an_aperture_page_is_refused() {
    let input = PagingInput {
        op: sys::DXGK_OPERATION_TRANSFER.0 as u8,
        dma_class: 3,
        dma: 65536,
        segment: [rgpu::caps::APERTURE_SEGMENT_ID, 0],
        size: 0x3100,
        index: [0, 0, 0, 0x27],
        mdl_bytes: [0, 4 * 4096],
        ..Default::default()
    };
    assert_eq!(paging(input), sys::STATUS_INVALID_PARAMETER);
    let aligned = PagingInput {
        index: [0, 0, 0, 0x1000],
        ..input
    };
    assert_eq!(paging(aligned), sys::STATUS_SUCCESS);
}

/// FILL of aperture 0x3D00..0x8DB8: units were taken every 4 KiB from the start, so after the
/// first (partial) page the first 0xD00 bytes of every page were skipped. Now every byte is
/// filled exactly once (the harness sums the FILL commands).
#[test]
fn regression_fill_from_inside_an_aperture_page_fills_every_byte() {
    for dma in [65536, 24, 30] {
        let input = PagingInput {
            op: sys::DXGK_OPERATION_FILL.0 as u8,
            dma_class: 3,
            dma,
            segment: [0, rgpu::caps::APERTURE_SEGMENT_ID],
            addr: [0x3D00, 0, 0],
            size: 0x50B8,
            ..Default::default()
        };
        assert_eq!(paging(input), sys::STATUS_SUCCESS, "DMA size {dma}");
    }
}

/// UPDATE_PAGE_TABLE (GPU_VIRTUAL) of a table at VA 0xFFFF_FFFF_FFFF_FFFF: the entry address
/// overflowed (a panic — a bugcheck — with overflow checks). Now refused.
#[test]
fn regression_update_page_table_at_the_top_of_the_address_space_is_refused() {
    let input = PagingInput {
        op: sys::DXGK_OPERATION_UPDATE_PAGE_TABLE.0 as u8,
        dma_class: 3,
        dma: 65536,
        mode: 1,
        addr: [u64::MAX, 0, 0],
        index: [0, 0x20, 8, 0],
        ..Default::default()
    };
    assert_eq!(paging(input), sys::STATUS_INVALID_PARAMETER);
}

/// COPY_PAGE_TABLE_ENTRIES from a table at VA 0xFFFF_FFFF_FFFF_FFF8, start index 1: same
/// overflow. Now refused.
#[test]
fn regression_copy_page_table_entries_at_the_top_of_the_address_space_is_refused() {
    let input = PagingInput {
        op: sys::DXGK_OPERATION_COPY_PAGE_TABLE_ENTRIES.0 as u8,
        dma_class: 3,
        dma: 65536,
        addr: [0xFFFF_FFFF_FFFF_FFF8, 0x1000, 0],
        index: [0, 0, 1, 0],
        range: [8, 1, 1, 8, 1, 1],
        ..Default::default()
    };
    assert_eq!(paging(input), sys::STATUS_INVALID_PARAMETER);
}
