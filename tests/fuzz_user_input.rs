//! The user-input fuzz harness (`tests/support/fuzz_user_input.rs`) under `cargo test`: the
//! hand-made seeds reach what they were made for, and every file of `fuzz/seeds/user_input/`
//! and `fuzz/regressions/user_input/` replays clean. Regenerate the seed files with
//! `RGPU_WRITE_FUZZ_SEEDS=1 cargo test --test fuzz_user_input`.

#[path = "support/fuzz_user_input.rs"]
mod fuzz_user_input;

use std::path::PathBuf;

use dxgk_sys as sys;
use fuzz_user_input::{finish_thread, run_user_input, user_input_seeds, Outcome};

fn dir(kind: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(kind)
        .join("user_input")
}

#[test]
fn seeds_reach_what_they_were_made_for_and_match_their_files() {
    for (name, bytes) in user_input_seeds() {
        let path = dir("seeds").join(name);
        if std::env::var_os("RGPU_WRITE_FUZZ_SEEDS").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        }
        assert_eq!(
            std::fs::read(&path).unwrap_or_default(),
            bytes,
            "{} is stale: rerun with RGPU_WRITE_FUZZ_SEEDS=1",
            path.display()
        );
        let want = match name {
            "alloc_short" => Outcome::Allocation(sys::STATUS_BUFFER_TOO_SMALL),
            "escape_bad_version" => Outcome::Escape(sys::STATUS_REVISION_MISMATCH),
            "escape_empty" => Outcome::Escape(sys::STATUS_BUFFER_TOO_SMALL),
            n if n.starts_with("alloc") => Outcome::Allocation(sys::STATUS_SUCCESS),
            _ => Outcome::Escape(sys::STATUS_SUCCESS),
        };
        assert_eq!(run_user_input(&bytes), want, "{name}");
    }
    finish_thread();
}

#[test]
fn every_corpus_and_regression_file_replays_clean() {
    let mut n = 0;
    for kind in ["seeds", "regressions"] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir(kind))
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        for f in files.iter().filter(|p| p.is_file()) {
            run_user_input(&std::fs::read(f).unwrap());
            n += 1;
        }
    }
    assert!(n >= user_input_seeds().len(), "{n} files");
    finish_thread();
}

/// A fuzzer-less sweep: byte flips, truncations and extensions of the seeds (deterministic
/// xorshift), every invariant checked on each.
#[test]
fn mutations_of_the_seeds_keep_every_invariant() {
    let seeds = user_input_seeds();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..1500 {
        let mut b = seeds[i % seeds.len()].1.clone();
        match next() % 4 {
            0 if b.len() > 1 => {
                let at = 1 + (next() as usize) % (b.len() - 1);
                b[at] ^= 1 << (next() % 8);
            }
            1 => b.truncate((next() as usize) % (b.len() + 1)),
            2 => b.push(next() as u8),
            _ if b.len() > 1 => {
                let at = 1 + (next() as usize) % (b.len() - 1);
                b[at] = next() as u8;
            }
            _ => {}
        }
        run_user_input(&b);
    }
    finish_thread();
}
