//! Packaging for rgpu.sys without the WDK (the cross flavour of the windows-drivers-rs package
//! flow): an INF reader, the checks rgpu's INF must pass, and the DriverVer stamping that
//! stampinf does on Windows. `tools/package/package.sh` drives it through the `rgpu-package`
//! binary; `tests/inf.rs` runs the same code on `inf/rgpu.inx`.

pub mod checks;
pub mod inf;
pub mod stamp;

pub use checks::{check, Form};
pub use stamp::{package_version, stamp, Date, DriverVersion};

/// Stamps `inx` for amd64 with the crate version from `cargo_toml` and `date`, then checks the
/// result. Returns the stamped INF, or every reason it is not a valid rgpu package INF.
pub fn stamp_package_inf(inx: &str, cargo_toml: &str, date: Date) -> Result<String, Vec<String>> {
    let version = package_version(cargo_toml)
        .and_then(|v| DriverVersion::from_crate_version(&v))
        .map_err(|e| vec![e])?;
    let stamped = stamp(inx, date, version, "amd64").map_err(|e| vec![e])?;
    let problems = check(&stamped, Form::Stamped { date, version });
    if problems.is_empty() {
        Ok(stamped)
    } else {
        Err(problems)
    }
}
