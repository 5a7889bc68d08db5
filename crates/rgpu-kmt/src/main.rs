//! `rgpu-kmt <selftest|info> [options]`: rgpu's user-mode client. On Windows it drives the
//! installed driver through gdi32's D3DKMT functions; elsewhere it boots the simulated machine
//! (dxgk-sim with the real driver) and drives that. Exit codes: 0 pass, 1 fail, 2 usage,
//! 3 no rgpu adapter.

use std::io::Write;
use std::process::ExitCode;

use rgpu_kmt::selftest::{self, Options, Verdict, EXIT_USAGE};
use rgpu_kmt::{info, Kmt};

const USAGE: &str = "usage: rgpu-kmt <selftest|info> [options]
  selftest            allocate, map, FILL/COPY through a context, wait on monitored fences,
                      read back every byte through Lock2, share across two devices, clean up
  info                the rgpu adapter, its identity (caps) and the driver's counters
options:
  --sizes LIST        selftest allocation sizes, comma-separated, suffixes K and M
                      (default 4K,20K,1M,16M,64M)
  -q, --quiet         print only the verdict line
simulator backend (not Windows):
  --iommu MODE        identity (WDDM 2.4, Windows 10 1803) or remapped (WDDM 3.1, default)
  --no-rgpu-hardware  no rgpu device behind the simulated adapter (start fails: no adapter)
  --soft              a root-enumerated ROOT\\RGPU instead (no resources: the driver runs soft
                      rgpu; found by its driver description); IOMMU identity unless --iommu
exit codes: 0 pass, 1 fail, 2 usage, 3 no rgpu adapter";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Command {
    Selftest,
    Info,
}

struct Args {
    command: Command,
    options: Options,
    quiet: bool,
    #[cfg_attr(windows, allow(dead_code))]
    sim: SimArgs,
}

#[derive(Default)]
#[cfg_attr(windows, allow(dead_code))]
struct SimArgs {
    /// `--iommu`, if given: identity (true) or remapped.
    identity_iommu: Option<bool>,
    no_hardware: bool,
    soft: bool,
}

fn parse_size(s: &str) -> Option<u64> {
    let (digits, unit) = match s.as_bytes().last()? {
        b'K' | b'k' => (&s[..s.len() - 1], 1u64 << 10),
        b'M' | b'm' => (&s[..s.len() - 1], 1 << 20),
        _ => (s, 1),
    };
    digits.parse::<u64>().ok()?.checked_mul(unit)
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let command = match args.next().as_deref() {
        Some("selftest") => Command::Selftest,
        Some("info") => Command::Info,
        Some(other) => return Err(format!("unknown command {other:?}")),
        None => return Err("no command given".into()),
    };
    let mut a = Args {
        command,
        options: Options::default(),
        quiet: false,
        sim: SimArgs::default(),
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--sizes" => {
                let list = args.next().ok_or("--sizes needs a list")?;
                a.options.sizes = list
                    .split(',')
                    .map(|s| parse_size(s.trim()).ok_or(format!("bad size {s:?}")))
                    .collect::<Result<_, _>>()?;
            }
            "-q" | "--quiet" => a.quiet = true,
            "--iommu" => match args.next().as_deref() {
                Some("identity") => a.sim.identity_iommu = Some(true),
                Some("remapped") => a.sim.identity_iommu = Some(false),
                _ => return Err("--iommu needs identity or remapped".into()),
            },
            "--no-rgpu-hardware" => a.sim.no_hardware = true,
            "--soft" => a.sim.soft = true,
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    Ok(a)
}

fn run_on<K: Kmt + ?Sized>(k: &mut K, a: &Args) -> Verdict {
    let mut sink = std::io::sink();
    let mut stdout = std::io::stdout();
    let log: &mut dyn Write = if a.quiet { &mut sink } else { &mut stdout };
    match a.command {
        Command::Selftest => selftest::run(k, &a.options, log),
        Command::Info => info::run(k, log),
    }
}

fn verdict_line(command: Command, v: &Verdict) -> String {
    match command {
        Command::Selftest => v.to_string(),
        Command::Info => info::verdict_line(v),
    }
}

#[cfg(not(windows))]
fn run(a: &Args) -> Verdict {
    use rgpu_kmt::selftest::{Cause, Failure};
    use rgpu_kmt::sim::{IommuMode, SimConfig, SimKmt};
    let config = SimConfig {
        // A soft adapter does not opt in to DMA remapping (SimConfig::soft): identity unless
        // --iommu says otherwise.
        iommu: if a.sim.identity_iommu.unwrap_or(a.sim.soft) {
            IommuMode::Identity
        } else {
            IommuMode::Remapped
        },
        rgpu_hardware: !a.sim.no_hardware,
        soft: a.sim.soft,
    };
    let mut k = match SimKmt::boot(config) {
        Ok(k) => k,
        Err(e) => {
            return Verdict::Fail(Failure {
                step: "boot the simulated machine".into(),
                cause: Cause::Unexpected(e),
            })
        }
    };
    let v = run_on(&mut k, a);
    let end = k.shutdown();
    for f in &end.findings {
        println!("  verifier: {f}");
    }
    match v {
        Verdict::Pass(_) if !end.clean() => Verdict::Fail(Failure {
            step: "simulator teardown (driver unload, verifier)".into(),
            cause: Cause::Unexpected(
                end.errors
                    .iter()
                    .chain(&end.findings)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
        }),
        Verdict::Pass(s) => {
            if !a.quiet {
                println!(
                    "  ok    simulator: teardown clean, driver unloaded, no verifier findings"
                );
            }
            Verdict::Pass(s)
        }
        other => other,
    }
}

#[cfg(windows)]
fn run(a: &Args) -> Verdict {
    let mut k = rgpu_kmt::windows::WinKmt::new();
    run_on(&mut k, a)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let a = match parse(args.into_iter()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("rgpu-kmt: {e}\n{USAGE}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let v = run(&a);
    println!("{}", verdict_line(a.command, &v));
    ExitCode::from(v.exit_code())
}
