//! `rgpu-package`: the stamping and INF checks behind tools/package/package.sh.
//!
//! ```text
//! rgpu-package stamp <template.inx> <Cargo.toml> <out.inf>   # DriverVer from the crate version
//!                                                             # and SOURCE_DATE_EPOCH or today
//! rgpu-package check <template.inx>                          # the template rules only
//! ```

use std::process::ExitCode;

use rgpu_package::{check, stamp_package_inf, Date, Form};

fn read(path: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))
}

fn run(args: &[String]) -> Result<(), Vec<String>> {
    match args {
        [cmd, inx, cargo_toml, out] if cmd == "stamp" => {
            let epoch = std::env::var("SOURCE_DATE_EPOCH").ok();
            let date = Date::build_date(epoch.as_deref()).map_err(|e| vec![e])?;
            let stamped = stamp_package_inf(&read(inx).map_err(|e| vec![e])?, &read(cargo_toml).map_err(|e| vec![e])?, date)?;
            std::fs::write(out, &stamped).map_err(|e| vec![format!("{out}: {e}")])?;
            let line = stamped.lines().find(|l| l.starts_with("DriverVer")).unwrap_or("");
            println!("rgpu-package: wrote {out}: {line}");
            Ok(())
        }
        [cmd, inx] if cmd == "check" => {
            let problems = check(&read(inx).map_err(|e| vec![e])?, Form::Template);
            if problems.is_empty() {
                println!("rgpu-package: {inx}: ok");
                Ok(())
            } else {
                Err(problems)
            }
        }
        _ => Err(vec![
            "usage: rgpu-package stamp <template.inx> <Cargo.toml> <out.inf> | rgpu-package check <template.inx>".into(),
        ]),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(problems) => {
            for p in problems {
                eprintln!("rgpu-package: {p}");
            }
            ExitCode::FAILURE
        }
    }
}
