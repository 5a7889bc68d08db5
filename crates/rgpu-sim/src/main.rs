//! `rgpu-sim run`: the rgpu driver in dxgk-sim through a scenario — load, start, three
//! processes allocating, mapping, filling, transferring and reading back every byte, unmap and
//! evict, teardown — and a readable report of what happened (DDIs, callbacks, IOMMU, paging,
//! device, VidMm, verifier, timings). `--trace FILE` writes a Chrome trace-event JSON file.
//!
//! Exit status: 0 when the verifier is clean and every byte read back is right (also when an
//! injected failure (`--fail-nth`) ended the scenario early and the driver unwound cleanly),
//! 1 for verifier findings, data mismatches or a scenario that failed without an injected
//! failure, 2 for usage errors.

mod report;
mod scenario;
mod trace_json;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use dxgk_sim::{IommuMode, MachineConfig};
use dxgk_sys as sys;

#[derive(Parser, Debug)]
#[command(
    name = "rgpu-sim",
    version,
    about = "Runs the rgpu WDDM driver in the dxgk-sim simulated Windows"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs the default scenario and prints a report.
    Run(RunArgs),
}

/// The WDDM interface version the simulated Windows implements at most.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Interface {
    #[value(name = "2.4")]
    V2_4,
    #[value(name = "2.5")]
    V2_5,
    #[value(name = "2.6")]
    V2_6,
    #[value(name = "2.7")]
    V2_7,
    #[value(name = "2.8")]
    V2_8,
    #[value(name = "2.9")]
    V2_9,
    #[value(name = "3.0")]
    V3_0,
    #[value(name = "3.1")]
    V3_1,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Iommu {
    /// WDDM 2.4 IOMMU isolation: logical page == physical page.
    Identity,
    /// WDDM 3.0 DMA remapping: logical pages never equal physical ones.
    Remapped,
}

/// Which rgpu the scenario runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Device {
    /// A PCI device with the rgpu register BAR (the rgpu-hw model behind simulated MMIO).
    Hardware,
    /// A root-enumerated device with no resources: the driver runs soft rgpu (the model on its
    /// own engine thread inside the driver).
    Soft,
}

/// How much the scenario allocates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Size {
    /// Up to 2 MiB + 12 KiB per allocation (fast, for tests).
    Small,
    /// Up to 16 MiB per allocation.
    Default,
    /// Adds a 256 MiB allocation (and its copy) in the first process.
    Large,
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Newest WDDM interface of the simulated Windows (1803 for 2.4 … 11 22H2 for 3.1).
    #[arg(long, value_enum, default_value = "3.1")]
    pub interface: Interface,
    /// IOMMU mode [default: remapped from 3.0 on for hardware; identity below 3.0 and for
    /// soft, which does not opt in to DMA remapping].
    #[arg(long, value_enum)]
    pub iommu: Option<Iommu>,
    /// Installs the machine's memory at physical address SIZE and up (e.g. 1T: above the rgpu
    /// device's 40-bit reach; suffixes K, M, G, T). Without DMA remapping the adapter is then
    /// refused at start.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub phys_above: Option<u64>,
    /// Fault injection: fail the N-th failable kernel call or callback (1 = the first).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub fail_nth: Option<u64>,
    /// The device the scenario runs on.
    #[arg(long, value_enum, default_value = "hardware")]
    pub device: Device,
    /// Scenario size.
    #[arg(long, value_enum, default_value = "default")]
    pub size: Size,
    /// Writes a Chrome trace-event JSON file (open it in ui.perfetto.dev or chrome://tracing).
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    /// Prints only the verdict (and no progress bar).
    #[arg(long)]
    pub quiet: bool,
}

impl Interface {
    /// (DXGKDDI_INTERFACE_VERSION, Windows release name, ExAllocatePool2 present).
    fn machine(self) -> (u32, &'static str, bool) {
        match self {
            Interface::V2_4 => (
                sys::DXGKDDI_INTERFACE_VERSION_WDDM2_4,
                "Windows 10 1803",
                false,
            ),
            Interface::V2_5 => (
                sys::DXGKDDI_INTERFACE_VERSION_WDDM2_5,
                "Windows 10 1809",
                false,
            ),
            Interface::V2_6 => (
                sys::DXGKDDI_INTERFACE_VERSION_WDDM2_6,
                "Windows 10 1903",
                false,
            ),
            Interface::V2_7 => (
                sys::DXGKDDI_INTERFACE_VERSION_WDDM2_7,
                "Windows 10 2004",
                true,
            ),
            Interface::V2_8 => (
                sys::DXGKDDI_INTERFACE_VERSION_WDDM2_8,
                "Windows (WDDM 2.8)",
                true,
            ),
            Interface::V2_9 => (
                sys::DXGKDDI_INTERFACE_VERSION_WDDM2_9,
                "Windows (WDDM 2.9)",
                true,
            ),
            Interface::V3_0 => (
                sys::DXGKDDI_INTERFACE_VERSION_WDDM3_0,
                "Windows 11 21H2",
                true,
            ),
            Interface::V3_1 => (
                sys::DXGKDDI_INTERFACE_VERSION_WDDM3_1,
                "Windows 11 22H2",
                true,
            ),
        }
    }
}

/// `1T`, `512G`, `4096`: a byte count with an optional binary K/M/G/T suffix.
fn parse_size(s: &str) -> Result<u64, String> {
    let (digits, shift) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(format!("unknown size suffix {c:?} (K, M, G or T)")),
            };
            (&s[..i], shift)
        }
        _ => (s, 0),
    };
    let n: u64 = digits.parse().map_err(|e| format!("{s:?}: {e}"))?;
    n.checked_shl(shift)
        .filter(|v| v >> shift == n)
        .ok_or_else(|| format!("{s:?} does not fit in 64 bits"))
}

/// The machine `--interface`, `--iommu` and `--device` describe. Without `--iommu`: remapped
/// from WDDM 3.0 on for hardware (rgpu opts in to DMA remapping), identity otherwise — a soft
/// (root-enumerated) rgpu never opts in (docs/soft-rgpu.md), and Dxgkrnl maps an adapter that
/// did not opt in 1:1.
pub fn machine_config(interface: Interface, iommu: Option<Iommu>, device: Device) -> MachineConfig {
    let (version, name, has_pool2) = interface.machine();
    let mode = match iommu {
        Some(Iommu::Identity) => IommuMode::Identity,
        Some(Iommu::Remapped) => IommuMode::Remapped,
        None if device == Device::Hardware && version >= sys::DXGKDDI_INTERFACE_VERSION_WDDM3_0 => {
            IommuMode::Remapped
        }
        None => IommuMode::Identity,
    };
    MachineConfig {
        name: name.into(),
        max_interface_version: version,
        has_pool2,
        iommu: mode,
        physical_base: 0,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run(&args),
    }
}

fn run(args: &RunArgs) -> ExitCode {
    let config = machine_config(args.interface, args.iommu, args.device)
        .with_physical_base(args.phys_above.unwrap_or(0));
    let show_progress = !args.quiet && std::io::stderr().is_terminal();
    let outcome = scenario::run(config, args.device, args.size, args.fail_nth, show_progress);
    let rep = report::Report::new(&outcome);
    if args.quiet {
        println!("{}", rep.verdict_line());
    } else {
        print!("{}", rep.render());
    }
    if let Some(path) = &args.trace {
        let json = trace_json::chrome_trace(&outcome);
        let text = serde_json::to_string(&json).expect("trace JSON");
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("rgpu-sim: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        if !args.quiet {
            println!(
                "trace: {} ({} events; open in ui.perfetto.dev or chrome://tracing)",
                path.display(),
                outcome.events.len()
            );
        }
    }
    if rep.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
