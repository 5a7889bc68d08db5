//! `pe-check <path-to-.sys> [--allow-import-dll NAME]...`
//! `pe-check <path-to-.exe> --require-import DLL!SYMBOL...` (user-mode image: format and the
//! required imports only; none of the driver checks)
//!
//! Prints one PASS/FAIL line per check, INFO lines, and a summary; exits 0 when every
//! check passes, 1 when any fails, 2 on a usage or I/O error.

use std::process::ExitCode;

use pe_check::{check_image, check_user_image, Options, RequiredImport};

const USAGE: &str = "usage: pe-check <path-to-.sys> [--allow-import-dll NAME]...\n       pe-check <path-to-.exe> --require-import DLL!SYMBOL...";

fn main() -> ExitCode {
    let mut path = None;
    let mut opts = Options::default();
    let mut required = Vec::new();
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--allow-import-dll") => match args.next() {
                Some(name) => opts
                    .extra_allowed_dlls
                    .push(name.to_string_lossy().into_owned()),
                None => {
                    eprintln!("pe-check: --allow-import-dll needs a DLL name\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
            Some("--require-import") => match args
                .next()
                .and_then(|a| a.to_str().and_then(RequiredImport::parse))
            {
                Some(r) => required.push(r),
                None => {
                    eprintln!("pe-check: --require-import needs DLL!SYMBOL\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
            Some("-h" | "--help") => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            Some(s) if s.starts_with("--allow-import-dll=") => {
                opts.extra_allowed_dlls
                    .push(s["--allow-import-dll=".len()..].to_string());
            }
            Some(s) if s.starts_with('-') && s != "-" => {
                eprintln!("pe-check: unknown option {s}\n{USAGE}");
                return ExitCode::from(2);
            }
            _ if path.is_none() => path = Some(arg),
            _ => {
                eprintln!("pe-check: more than one image given\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let Some(path) = path else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) => {
            eprintln!("pe-check: cannot read {}: {e}", path.to_string_lossy());
            return ExitCode::from(2);
        }
    };

    if !required.is_empty() && !opts.extra_allowed_dlls.is_empty() {
        eprintln!("pe-check: --allow-import-dll is a driver check; it does not mix with --require-import\n{USAGE}");
        return ExitCode::from(2);
    }
    let report = if required.is_empty() {
        check_image(&bytes, &opts)
    } else {
        check_user_image(&bytes, &required)
    };
    println!("pe-check {}", path.to_string_lossy());
    for result in &report.results {
        println!("{result}");
    }
    for line in &report.info {
        println!("INFO {line}");
    }
    let total = report.results.len();
    if report.passed() {
        println!("pe-check: PASS, all {total} checks passed");
        ExitCode::SUCCESS
    } else {
        let names: Vec<&str> = report.failures().map(|r| r.name.as_str()).collect();
        println!(
            "pe-check: FAIL, {} of {total} checks failed: {}",
            names.len(),
            names.join(", ")
        );
        ExitCode::from(1)
    }
}
