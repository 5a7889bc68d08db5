//! The cross flavour's stampinf: writes `DriverVer = MM/DD/YYYY,a.b.c.0` into `[Version]` and
//! replaces `$ARCH$`, from the crate version and a build date (`SOURCE_DATE_EPOCH` when set).

use std::fmt;

/// A four-part driver version (each part 0..=65535, as DriverVer requires).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DriverVersion(pub [u16; 4]);

impl DriverVersion {
    /// `a.b.c` (a Cargo version without pre-release or build metadata) → `a.b.c.0`.
    pub fn from_crate_version(version: &str) -> Result<Self, String> {
        if version.contains(['-', '+']) {
            return Err(format!(
                "crate version {version:?} has pre-release or build metadata, which DriverVer cannot carry"
            ));
        }
        let parts: Vec<&str> = version.split('.').collect();
        if parts.len() != 3 {
            return Err(format!(
                "crate version {version:?} is not major.minor.patch"
            ));
        }
        let mut out = [0u16; 4];
        for (slot, part) in out.iter_mut().zip(&parts) {
            *slot = part.parse::<u16>().map_err(|_| {
                format!("crate version {version:?}: part {part:?} is not a number in 0..=65535")
            })?;
        }
        Ok(Self(out))
    }
}

impl fmt::Display for DriverVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d] = self.0;
        write!(f, "{a}.{b}.{c}.{d}")
    }
}

/// A calendar date (proleptic Gregorian, UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Date {
    pub year: i64,
    pub month: u32,
    pub day: u32,
}

impl Date {
    /// The UTC date of a Unix time in seconds.
    pub fn from_unix_seconds(seconds: i64) -> Self {
        // Howard Hinnant's civil_from_days.
        let days = seconds.div_euclid(86_400);
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        Self { year, month, day }
    }

    /// The build date: `SOURCE_DATE_EPOCH` (reproducible builds) if set, else the clock.
    /// A malformed `SOURCE_DATE_EPOCH` is an error, as the reproducible-builds spec asks.
    pub fn build_date(source_date_epoch: Option<&str>) -> Result<Self, String> {
        let seconds = match source_date_epoch {
            Some(value) => value.trim().parse::<i64>().map_err(|_| {
                format!("SOURCE_DATE_EPOCH={value:?} is not an integer number of seconds")
            })?,
            None => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_err(|e| format!("system clock before 1970: {e}"))?;
                i64::try_from(now.as_secs()).map_err(|_| "system clock out of range".to_owned())?
            }
        };
        Ok(Self::from_unix_seconds(seconds))
    }
}

/// `MM/DD/YYYY`, as DriverVer wants it.
impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}/{:02}/{:04}", self.month, self.day, self.year)
    }
}

/// The `version` of the `[package]` table of a Cargo.toml (a literal string; `version.workspace`
/// is not supported because the root crate does not use it).
pub fn package_version(cargo_toml: &str) -> Result<String, String> {
    let mut in_package = false;
    for line in cargo_toml.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_package = line == "[package]";
            continue;
        }
        if !in_package {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if key == "version.workspace" {
            return Err(
                "Cargo.toml: version.workspace is not supported; give [package] a literal version"
                    .into(),
            );
        }
        if key != "version" {
            continue;
        }
        let value = value.split('#').next().unwrap_or("").trim();
        return value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .map(str::to_owned)
            .ok_or_else(|| format!("Cargo.toml: [package] version {value} is not a plain string"));
    }
    Err("Cargo.toml: no version in [package]".into())
}

/// The stamped `DriverVer` line.
pub fn driver_ver_line(date: Date, version: DriverVersion) -> String {
    format!("DriverVer   = {date},{version}")
}

/// Stamps an INF template: replaces the `DriverVer` line of `[Version]` (adds one after the header
/// if there is none), replaces every `$ARCH$` with `arch`, and writes CRLF line endings.
pub fn stamp(inx: &str, date: Date, version: DriverVersion, arch: &str) -> Result<String, String> {
    let mut lines: Vec<String> = inx.lines().map(|l| l.replace("$ARCH$", arch)).collect();
    let mut version_header = None;
    let mut driver_ver = Vec::new();
    let mut in_version = false;
    for (i, line) in lines.iter().enumerate() {
        let code = line.split(';').next().unwrap_or("").trim();
        if code.starts_with('[') {
            in_version = code.eq_ignore_ascii_case("[Version]");
            if in_version && version_header.is_none() {
                version_header = Some(i);
            }
            continue;
        }
        if in_version {
            let key = code.split('=').next().unwrap_or("").trim();
            if code.contains('=') && key.eq_ignore_ascii_case("DriverVer") {
                driver_ver.push(i);
            }
        }
    }
    let Some(header) = version_header else {
        return Err("INF template has no [Version] section".into());
    };
    let stamped = driver_ver_line(date, version);
    match driver_ver.as_slice() {
        [] => lines.insert(header + 1, stamped),
        [one] => lines[*one] = stamped,
        many => return Err(format!("[Version] has {} DriverVer lines", many.len())),
    }
    let mut out = lines.join("\r\n");
    out.push_str("\r\n");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(Date::from_unix_seconds(0).to_string(), "01/01/1970");
        assert_eq!(
            Date::from_unix_seconds(951_782_400).to_string(),
            "02/29/2000"
        );
        assert_eq!(
            Date::from_unix_seconds(1_735_689_599).to_string(),
            "12/31/2024"
        );
        assert_eq!(
            Date::from_unix_seconds(1_735_689_600).to_string(),
            "01/01/2025"
        );
        assert_eq!(Date::from_unix_seconds(-1).to_string(), "12/31/1969");
    }

    #[test]
    fn source_date_epoch_wins_and_must_be_numeric() {
        assert_eq!(
            Date::build_date(Some("1700000000")).unwrap().to_string(),
            "11/14/2023"
        );
        assert!(Date::build_date(Some("yesterday")).is_err());
        assert!(Date::build_date(None).unwrap().year >= 2024);
    }

    #[test]
    fn crate_versions() {
        assert_eq!(
            DriverVersion::from_crate_version("0.1.0")
                .unwrap()
                .to_string(),
            "0.1.0.0"
        );
        assert_eq!(
            DriverVersion::from_crate_version("1.22.65535").unwrap().0,
            [1, 22, 65535, 0]
        );
        assert!(DriverVersion::from_crate_version("0.1.0-dev").is_err());
        assert!(DriverVersion::from_crate_version("0.1").is_err());
        assert!(DriverVersion::from_crate_version("0.65536.0").is_err());
    }

    #[test]
    fn package_version_reads_only_the_package_table() {
        let toml = "[workspace]\nversion = \"9.9.9\"\n[package]\nname = \"x\"\nversion = \"1.2.3\" # c\n[dependencies]\n";
        assert_eq!(package_version(toml).unwrap(), "1.2.3");
        assert!(package_version("[package]\nversion.workspace = true\n").is_err());
        assert!(package_version("[package]\nname = \"x\"\n").is_err());
    }

    #[test]
    fn stamping_replaces_or_adds_driver_ver() {
        let date = Date {
            year: 2025,
            month: 3,
            day: 7,
        };
        let version = DriverVersion([0, 1, 0, 0]);
        let out = stamp(
            "[Version]\nDriverVer = 01/01/2000,9.9.9.9 ; old\n[M.NT$ARCH$]\n",
            date,
            version,
            "amd64",
        )
        .unwrap();
        assert_eq!(
            out,
            "[Version]\r\nDriverVer   = 03/07/2025,0.1.0.0\r\n[M.NTamd64]\r\n"
        );
        let out = stamp("[Version]\nClass = Display\n", date, version, "amd64").unwrap();
        assert_eq!(
            out,
            "[Version]\r\nDriverVer   = 03/07/2025,0.1.0.0\r\nClass = Display\r\n"
        );
        assert!(stamp("[Strings]\n", date, version, "amd64").is_err());
        assert!(stamp(
            "[Version]\nDriverVer=a\ndriverver=b\n",
            date,
            version,
            "amd64"
        )
        .is_err());
    }

    #[test]
    fn driver_ver_outside_version_is_left_alone() {
        let date = Date {
            year: 2025,
            month: 12,
            day: 31,
        };
        let out = stamp(
            "[Other]\nDriverVer = x\n[Version]\n",
            date,
            DriverVersion([1, 2, 3, 0]),
            "arm64",
        )
        .unwrap();
        assert_eq!(
            out,
            "[Other]\r\nDriverVer = x\r\n[Version]\r\nDriverVer   = 12/31/2025,1.2.3.0\r\n"
        );
    }
}
