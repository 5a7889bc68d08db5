//! What rgpu's INF must say: a render-only WDDM display adapter that runs from the driver store
//! (../shared/reference/ddi-reference.md §7.1; docs/packaging.md lists the rules and sources).
//!
//! [`check`] returns every problem found (empty = good), each naming the section and line.

use crate::inf::{Entry, Inf, Section};
use crate::stamp::{Date, DriverVersion};

/// The display adapter setup class.
pub const DISPLAY_CLASS_GUID: &str = "{4D36E968-E325-11CE-BFC1-08002BE10318}";
/// Hardware ID of the PCI rgpu device (vendor ID is a placeholder until one is assigned).
pub const PCI_HARDWARE_ID: &str = r"PCI\VEN_FFFE&DEV_52A0";
/// Hardware ID of the root-enumerated test device (tools/test-machine).
pub const ROOT_HARDWARE_ID: &str = r"ROOT\RGPU";
/// The kernel-mode driver file and its service.
pub const DRIVER_FILE: &str = "rgpu.sys";
pub const SERVICE_NAME: &str = "rgpu";
pub const CATALOG_FILE: &str = "rgpu.cat";
/// DIRID 13: the driver store (run-from-driver-store, required style since WDDM 2.1).
pub const DIRID_DRIVER_STORE: &str = "13";

/// AddReg value names (or subkeys) that only make sense for an adapter with display outputs.
/// A render-only adapter has no video present sources, so none of these may appear.
pub const DISPLAY_ONLY_VALUES: &[&str] = &[
    "DefaultSettings.XResolution",
    "DefaultSettings.YResolution",
    "DefaultSettings.BitsPerPel",
    "DefaultSettings.VRefresh",
    "DefaultSettings.Flags",
    "DefaultSettings.XPanning",
    "DefaultSettings.YPanning",
    "Acceleration.Level",
    "VgaCompatible",
    "EDID_OVERRIDE",
];

/// Which form of the INF is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// `inf/rgpu.inx`: `$ARCH$` allowed, DriverVer only needs to be present.
    Template,
    /// The packaged `rgpu.inf`: no `$ARCH$`, amd64 models, and exactly this DriverVer.
    Stamped { date: Date, version: DriverVersion },
}

/// All problems with `text` as rgpu's INF in the given form.
pub fn check(text: &str, form: Form) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some((line, c)) = text
        .lines()
        .enumerate()
        .find_map(|(i, l)| l.chars().find(|c| !c.is_ascii()).map(|c| (i + 1, c)))
    {
        problems.push(format!(
            "line {line}: non-ASCII character {c:?}: an ANSI INF depends on the code page (use ASCII or UTF-16)"
        ));
    }
    let inf = match Inf::parse(text) {
        Ok(inf) => inf,
        Err(e) => {
            problems.push(format!("syntax: {e}"));
            return problems;
        }
    };
    let mut c = Checker {
        inf: &inf,
        problems,
    };
    c.version(form);
    c.destination_dirs();
    c.source_files();
    c.control_flags();
    let installs = c.models(form);
    for install in &installs {
        c.install_section(install);
        c.services(install);
    }
    c.strings();
    c.no_display_only_settings();
    c.umd_names_are_shipped();
    c.problems
}

struct Checker<'a> {
    inf: &'a Inf,
    problems: Vec<String>,
}

impl<'a> Checker<'a> {
    fn fail(&mut self, message: String) {
        self.problems.push(message);
    }

    fn section(&mut self, name: &str) -> Option<&'a Section> {
        let found = self.inf.section(name);
        if found.is_none() {
            self.fail(format!("missing section [{name}]"));
        }
        found
    }

    /// The first value of `key` in `section`, or a problem.
    fn value(&mut self, section: &'a Section, key: &str) -> Option<&'a Entry> {
        let found = section.get(key);
        if found.is_none() {
            self.fail(format!(
                "[{}] (line {}): missing {key}",
                section.name, section.line
            ));
        }
        found
    }

    fn expect_eq(&mut self, section: &'a Section, key: &str, expected: &str) {
        if let Some(entry) = self.value(section, key) {
            if !entry.value().eq_ignore_ascii_case(expected) {
                self.fail(format!(
                    "[{}] line {}: {key} = {:?}, expected {expected:?}",
                    section.name,
                    entry.line,
                    entry.value()
                ));
            }
        }
    }

    fn version(&mut self, form: Form) {
        let Some(v) = self.section("Version") else {
            return;
        };
        self.expect_eq(v, "Signature", "$Windows NT$");
        self.expect_eq(v, "Class", "Display");
        self.expect_eq(v, "ClassGuid", DISPLAY_CLASS_GUID);
        self.value(v, "Provider");
        self.expect_eq(v, "CatalogFile", CATALOG_FILE);
        self.expect_eq(v, "PnpLockdown", "1");
        if let Some(layout) = v.get("LayoutFile") {
            self.fail(format!(
                "[Version] line {}: LayoutFile must not be used by a display INF",
                layout.line
            ));
        }
        let Some(driver_ver) = self.value(v, "DriverVer") else {
            return;
        };
        let written = driver_ver.values.join(",");
        if let Err(why) = parse_driver_ver(&written) {
            self.fail(format!(
                "[Version] line {}: DriverVer = {written:?}: {why}",
                driver_ver.line
            ));
        }
        if let Form::Stamped { date, version } = form {
            let expected = format!("{date},{version}");
            if written != expected {
                self.fail(format!(
                    "[Version] line {}: DriverVer = {written:?}, expected {expected:?}",
                    driver_ver.line
                ));
            }
        }
    }

    fn destination_dirs(&mut self) {
        let Some(dirs) = self.section("DestinationDirs") else {
            return;
        };
        for entry in &dirs.entries {
            if entry.value() != DIRID_DRIVER_STORE {
                self.fail(format!(
                    "[DestinationDirs] line {}: {} = {:?}: every file must go to DIRID 13 (driver store)",
                    entry.line,
                    entry.key.as_deref().unwrap_or("?"),
                    entry.value()
                ));
            }
        }
        self.expect_eq(dirs, "DefaultDestDir", DIRID_DRIVER_STORE);
    }

    fn source_files(&mut self) {
        self.section("SourceDisksNames");
        if let Some(files) = self.section("SourceDisksFiles") {
            if files.get(DRIVER_FILE).is_none() {
                self.fail(format!("[SourceDisksFiles]: {DRIVER_FILE} is not listed"));
            }
        }
    }

    fn control_flags(&mut self) {
        if let Some(flags) = self.section("ControlFlags") {
            self.expect_eq(flags, "ExcludeFromSelect", "*");
        }
    }

    /// Checks `[Manufacturer]` and the models sections; returns the install sections they name.
    fn models(&mut self, form: Form) -> Vec<String> {
        let mut installs: Vec<String> = Vec::new();
        let mut hardware_ids: Vec<String> = Vec::new();
        let Some(manufacturer) = self.section("Manufacturer") else {
            return installs;
        };
        if manufacturer.entries.is_empty() {
            self.fail("[Manufacturer] is empty".into());
        }
        for entry in &manufacturer.entries {
            let Some(models) = entry.values.first().filter(|m| !m.is_empty()) else {
                self.fail(format!(
                    "[Manufacturer] line {}: no models section",
                    entry.line
                ));
                continue;
            };
            let decorations = &entry.values[1..];
            let arch_ok = |d: &String| match form {
                Form::Template => {
                    d.to_ascii_lowercase().starts_with("nt$arch$")
                        || d.to_ascii_lowercase().starts_with("ntamd64")
                }
                Form::Stamped { .. } => d.to_ascii_lowercase().starts_with("ntamd64"),
            };
            if !decorations.iter().any(arch_ok) {
                self.fail(format!(
                    "[Manufacturer] line {}: models {models} have no amd64 decoration (NTamd64 or NT$ARCH$ in the template): {decorations:?}",
                    entry.line
                ));
            }
            for decoration in decorations {
                let name = format!("{models}.{decoration}");
                let Some(section) = self.section(&name) else {
                    continue;
                };
                for model in &section.entries {
                    let (Some(install), Some(ids)) = (model.values.first(), model.values.get(1..))
                    else {
                        continue;
                    };
                    if ids.is_empty() {
                        self.fail(format!("[{name}] line {}: no hardware ID", model.line));
                    }
                    hardware_ids.extend(ids.iter().cloned());
                    if !installs.iter().any(|i| i.eq_ignore_ascii_case(install)) {
                        installs.push(install.clone());
                    }
                }
            }
        }
        for required in [PCI_HARDWARE_ID, ROOT_HARDWARE_ID] {
            if !hardware_ids
                .iter()
                .any(|id| id.eq_ignore_ascii_case(required))
            {
                self.fail(format!(
                    "no model binds hardware ID {required} (found {hardware_ids:?})"
                ));
            }
        }
        installs
    }

    fn install_section(&mut self, install: &str) {
        let Some(section) = self.section(install) else {
            return;
        };
        match section.get("FeatureScore") {
            None => self.fail(format!(
                "[{install}]: missing FeatureScore (mandatory for Class=Display)"
            )),
            Some(score) => {
                let v = score.value();
                if v.is_empty() || v.len() > 2 || u8::from_str_radix(v, 16).is_err() {
                    self.fail(format!(
                        "[{install}] line {}: FeatureScore = {v:?} is not a hex byte",
                        score.line
                    ));
                }
            }
        }
        let mut copies_driver = false;
        for copy in section.get_all("CopyFiles") {
            for list in &copy.values {
                if let Some(file) = list.strip_prefix('@') {
                    copies_driver |= file.eq_ignore_ascii_case(DRIVER_FILE);
                    continue;
                }
                let Some(files) = self.section(list) else {
                    continue;
                };
                copies_driver |= files
                    .entries
                    .iter()
                    .any(|f| f.value().eq_ignore_ascii_case(DRIVER_FILE));
            }
        }
        if !copies_driver {
            self.fail(format!("[{install}]: no CopyFiles copies {DRIVER_FILE}"));
        }
    }

    fn services(&mut self, install: &str) {
        let name = format!("{install}.Services");
        let Some(services) = self.section(&name) else {
            return;
        };
        let Some(add) = services
            .get_all("AddService")
            .find(|a| a.value().eq_ignore_ascii_case(SERVICE_NAME))
        else {
            self.fail(format!("[{name}]: no AddService = {SERVICE_NAME}, ..."));
            return;
        };
        let flags = add.values.get(1).map(String::as_str).unwrap_or("");
        if parse_int(flags).is_none_or(|f| f & 0x2 == 0) {
            self.fail(format!(
                "[{name}] line {}: AddService flags {flags:?} lack SPSVCINST_ASSOCSERVICE (0x2)",
                add.line
            ));
        }
        let Some(service_install) = add.values.get(2).filter(|s| !s.is_empty()) else {
            self.fail(format!(
                "[{name}] line {}: AddService names no service-install section",
                add.line
            ));
            return;
        };
        let Some(service) = self.section(service_install) else {
            return;
        };
        for (key, expected) in [("ServiceType", 1), ("StartType", 3), ("ErrorControl", 0)] {
            if let Some(entry) = self.value(service, key) {
                if parse_int(entry.value()) != Some(expected) {
                    self.fail(format!(
                        "[{}] line {}: {key} = {:?}, expected {expected}",
                        service.name,
                        entry.line,
                        entry.value()
                    ));
                }
            }
        }
        self.expect_eq(service, "LoadOrderGroup", "Video");
        self.expect_eq(service, "ServiceBinary", r"%13%\rgpu.sys");
    }

    fn strings(&mut self) {
        for missing in self.inf.undefined_strings() {
            self.fail(format!(
                "[{}] line {}: %{}% is not defined in [Strings]",
                missing.section, missing.line, missing.name
            ));
        }
    }

    fn add_reg_entries(&self) -> Vec<(&'a Section, &'a Entry)> {
        let inf = self.inf;
        let mut lists: Vec<&str> = Vec::new();
        for section in &inf.sections {
            for entry in section.get_all("AddReg") {
                lists.extend(entry.values.iter().map(String::as_str));
            }
        }
        inf.sections
            .iter()
            .filter(|s| lists.iter().any(|l| l.eq_ignore_ascii_case(&s.name)))
            .flat_map(|s| s.entries.iter().map(move |e| (s, e)))
            .collect()
    }

    fn no_display_only_settings(&mut self) {
        for (section, entry) in self.add_reg_entries() {
            // HKR, subkey, value name, flags, data
            let subkey = entry.values.get(1).map(String::as_str).unwrap_or("");
            let value_name = entry.values.get(2).map(String::as_str).unwrap_or("");
            for forbidden in DISPLAY_ONLY_VALUES {
                let hit = value_name.eq_ignore_ascii_case(forbidden)
                    || subkey
                        .split('\\')
                        .any(|part| part.eq_ignore_ascii_case(forbidden));
                if hit {
                    self.fail(format!(
                        "[{}] line {}: {forbidden} is a display-output setting; rgpu is render-only",
                        section.name, entry.line
                    ));
                }
            }
        }
        for section in &self.inf.sections {
            if section
                .name
                .to_ascii_lowercase()
                .ends_with(".generalconfigdata")
            {
                self.fail(format!(
                    "[{}]: GeneralConfigData is for XDDM video miniports",
                    section.name
                ));
            }
        }
    }

    /// A UMD named in the registry must be a file the package ships (today: none is).
    fn umd_names_are_shipped(&mut self) {
        let shipped: Vec<String> = self
            .inf
            .section("SourceDisksFiles")
            .map(|s| s.entries.iter().filter_map(|e| e.key.clone()).collect())
            .unwrap_or_default();
        for (section, entry) in self.add_reg_entries() {
            let value_name = entry.values.get(2).map(String::as_str).unwrap_or("");
            let umd = [
                "UserModeDriverName",
                "UserModeDriverNameWow",
                "InstalledDisplayDrivers",
            ]
            .iter()
            .any(|n| value_name.eq_ignore_ascii_case(n));
            if !umd {
                continue;
            }
            for name in entry.values.iter().skip(4) {
                let file = name.rsplit('\\').next().unwrap_or(name);
                let file = if file.contains('.') {
                    file.to_owned()
                } else {
                    format!("{file}.dll")
                };
                if !shipped.iter().any(|s| s.eq_ignore_ascii_case(&file)) {
                    self.fail(format!(
                        "[{}] line {}: {value_name} names {name:?}, which the package does not ship",
                        section.name, entry.line
                    ));
                }
            }
        }
    }
}

/// Parses `MM/DD/YYYY,w.x.y.z` (the version part is optional in INF syntax; rgpu always has it).
pub fn parse_driver_ver(text: &str) -> Result<(Date, DriverVersion), String> {
    let (date, version) = text.split_once(',').ok_or("no version after the date")?;
    let date_parts: Vec<&str> = date.trim().split('/').collect();
    let [m, d, y] = date_parts.as_slice() else {
        return Err("date is not MM/DD/YYYY".into());
    };
    if m.len() != 2 || d.len() != 2 || y.len() != 4 {
        return Err("date is not MM/DD/YYYY".into());
    }
    let (month, day, year) = match (m.parse::<u32>(), d.parse::<u32>(), y.parse::<i64>()) {
        (Ok(m), Ok(d), Ok(y)) if (1..=12).contains(&m) && (1..=31).contains(&d) => (m, d, y),
        _ => return Err("date is not a valid MM/DD/YYYY".into()),
    };
    let parts: Vec<&str> = version.trim().split('.').collect();
    if parts.len() != 4 {
        return Err("version is not w.x.y.z".into());
    }
    let mut v = [0u16; 4];
    for (slot, part) in v.iter_mut().zip(&parts) {
        *slot = part
            .parse()
            .map_err(|_| format!("version part {part:?} is not in 0..=65535"))?;
    }
    Ok((Date { year, month, day }, DriverVersion(v)))
}

fn parse_int(text: &str) -> Option<u64> {
    let t = text.trim();
    match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => t.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_ver_syntax() {
        let (date, version) = parse_driver_ver("03/07/2025,0.1.0.0").unwrap();
        assert_eq!(
            (date.to_string(), version.to_string()),
            ("03/07/2025".into(), "0.1.0.0".into())
        );
        for bad in [
            "3/7/2025,0.1.0.0",
            "03/07/2025",
            "13/07/2025,0.1.0.0",
            "03/07/2025,0.1.0",
            "03/07/2025,0.1.0.70000",
        ] {
            assert!(parse_driver_ver(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn integers() {
        assert_eq!(parse_int("0x00000002"), Some(2));
        assert_eq!(parse_int("3"), Some(3));
        assert_eq!(parse_int("x"), None);
    }
}
