//! Low-resources simulation: every failable kernel function and callback is an *injection
//! point*. [`Machine::fail_nth`] makes the n-th point reached from now fail the way Windows
//! fails it (NULL, STATUS_INSUFFICIENT_RESOURCES or STATUS_NO_MEMORY); [`systematic`] runs a
//! scenario once to count its points, then once per point on a fresh machine with that point
//! failing, and checks every run ends cleanly (no crash, no hang, no leak, no finding).
//!
//! Injection points: ExAllocatePoolWithTag / ExAllocatePool2, IoAllocateMdl,
//! MmMapLockedPagesSpecifyCache, PsCreateSystemThread, DxgkCbAllocatePagesForMdl,
//! DxgkCbAllocateContiguousMemory, DxgkCbMapMdlToIoMmu, DxgkCbMapMemory. (KeInitializeEvent
//! cannot fail on Windows, so events are not points.)

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use dxgk_sys::NTSTATUS;

use crate::machine::{current, Machine, MachineConfig, MachineState};
use crate::verifier::{driver_call_site, Finding};

/// One failure the simulator injected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InjectedFailure {
    /// 1-based index of the injection point among those reached on this machine.
    pub point: u64,
    /// The kernel function or callback that failed.
    pub call: &'static str,
    /// The driver's call site.
    pub driver_site: String,
}

/// Per-machine injection state.
#[derive(Default)]
pub(crate) struct FaultState {
    reached: u64,
    fail_at: Option<u64>,
    injected: Vec<InjectedFailure>,
    /// Names of the points reached, in order (for reports).
    trace: Vec<&'static str>,
}

/// Called by every failable function: counts the point and says whether to fail it.
pub(crate) fn inject_on(machine: &MachineState, call: &'static str) -> bool {
    let mut f = machine.faults.lock();
    f.reached += 1;
    if f.trace.len() < 100_000 {
        f.trace.push(call);
    }
    if f.fail_at == Some(f.reached) {
        f.fail_at = None;
        let point = f.reached;
        drop(f);
        let site = driver_call_site();
        machine.faults.lock().injected.push(InjectedFailure {
            point,
            call,
            driver_site: site,
        });
        true
    } else {
        false
    }
}

/// [`inject_on`] for the current machine.
pub(crate) fn inject(call: &'static str) -> bool {
    inject_on(&current(), call)
}

impl Machine {
    /// Makes the `n`-th injection point reached from now fail (`n` ≥ 1; 1 = the next one).
    /// `fail_nth(0)` cancels a pending injection.
    pub fn fail_nth(&self, n: u64) {
        let mut f = self.state.faults.lock();
        f.fail_at = (n > 0).then(|| f.reached + n);
    }

    /// Injection points reached so far on this machine.
    pub fn injection_points_reached(&self) -> u64 {
        self.state.faults.lock().reached
    }

    /// The failures injected so far.
    pub fn injected_failures(&self) -> Vec<InjectedFailure> {
        self.state.faults.lock().injected.clone()
    }

    /// The names of the injection points reached so far, in order.
    pub fn injection_trace(&self) -> Vec<&'static str> {
        self.state.faults.lock().trace.clone()
    }
}

/// What one run of a systematic sweep did.
#[derive(Clone, Debug)]
pub struct RunReport {
    /// The injection point failed in this run (1-based), or 0 for the clean run.
    pub failed_point: u64,
    /// The call that was failed (None for the clean run, or if the scenario never got there).
    pub failed_call: Option<&'static str>,
    /// The scenario's final status (None when it crashed or hung).
    pub status: Option<NTSTATUS>,
    /// Panic message, if the scenario panicked (a bugcheck on Windows).
    pub crash: Option<String>,
    /// True if the run exceeded its time bound.
    pub hung: bool,
    /// Verifier findings of this run, leak checks included.
    pub findings: Vec<Finding>,
}

impl RunReport {
    /// No crash, no hang, no finding.
    pub fn is_clean(&self) -> bool {
        self.crash.is_none() && !self.hung && self.findings.is_empty()
    }
}

/// The result of [`systematic`].
#[derive(Clone, Debug)]
pub struct Report {
    /// Injection points the clean run reached (= the number of fault runs).
    pub injection_points: u64,
    /// The clean run first, then one per injection point.
    pub runs: Vec<RunReport>,
}

impl Report {
    /// The runs that crashed, hung or left findings.
    pub fn failures(&self) -> Vec<&RunReport> {
        self.runs.iter().filter(|r| !r.is_clean()).collect()
    }

    /// A one-line-per-run summary.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "systematic fault injection: {} injection point(s) exercised\n",
            self.injection_points
        );
        for r in &self.runs {
            let what = match r.failed_call {
                Some(c) => format!("point {:>3} ({c})", r.failed_point),
                None if r.failed_point == 0 => "clean run".to_string(),
                None => format!("point {:>3} (not reached)", r.failed_point),
            };
            let outcome = if let Some(c) = &r.crash {
                format!("CRASH: {c}")
            } else if r.hung {
                "HANG".to_string()
            } else {
                format!("status {:#010x}", r.status.unwrap_or(0) as u32)
            };
            s.push_str(&format!("  {what}: {outcome}"));
            for f in &r.findings {
                s.push_str(&format!("\n      {f}"));
            }
            s.push('\n');
        }
        s
    }

    /// Panics with [`Report::summary`] if any run crashed, hung, leaked or left a finding.
    pub fn assert_clean(&self) {
        if !self.failures().is_empty() {
            panic!("{}", self.summary());
        }
    }
}

/// Options of a systematic sweep.
#[derive(Clone, Debug)]
pub struct Systematic {
    /// The machine each run gets (fresh every time).
    pub config: MachineConfig,
    /// Time bound per run; a run that takes longer is reported as a hang (its thread is
    /// abandoned).
    pub per_run_timeout: Duration,
}

impl Default for Systematic {
    fn default() -> Self {
        Self {
            config: MachineConfig::windows_10_1803(),
            per_run_timeout: Duration::from_secs(20),
        }
    }
}

impl Systematic {
    /// Runs the sweep and returns the report without asserting.
    pub fn run<F>(&self, scenario: F) -> Report
    where
        F: Fn(&Machine) -> NTSTATUS + Send + Sync + 'static,
    {
        let scenario = Arc::new(scenario);
        let clean = self.one_run(&scenario, 0);
        let points = clean.1;
        let mut runs = vec![clean.0];
        for n in 1..=points {
            runs.push(self.one_run(&scenario, n).0);
        }
        Report {
            injection_points: points,
            runs,
        }
    }

    fn one_run<F>(&self, scenario: &Arc<F>, fail: u64) -> (RunReport, u64)
    where
        F: Fn(&Machine) -> NTSTATUS + Send + Sync + 'static,
    {
        let machine = Machine::new(self.config.clone());
        if fail > 0 {
            machine.fail_nth(fail);
        }
        let (tx, rx) = mpsc::channel();
        let m2 = machine.clone();
        let sc = scenario.clone();
        let handle = std::thread::Builder::new()
            .name(format!("dxgk-sim systematic run {fail}"))
            .spawn(move || {
                let r =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| m2.enter(|| sc(&m2))));
                let _ = tx.send(r);
            })
            .expect("spawn a systematic run");
        let (status, crash, hung) = match rx.recv_timeout(self.per_run_timeout) {
            Ok(Ok(status)) => (Some(status), None, false),
            Ok(Err(panic)) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic".into());
                (None, Some(msg), false)
            }
            Err(_) => (None, None, true),
        };
        if !hung {
            let _ = handle.join();
            machine.check_leaks();
        }
        let injected = machine.injected_failures();
        let report = RunReport {
            failed_point: fail,
            failed_call: injected.first().map(|i| i.call),
            status,
            crash,
            hung,
            findings: machine.findings(),
        };
        (report, machine.injection_points_reached())
    }
}

/// Runs `scenario` on a fresh Windows 10 1803 machine to count the injection points it reaches,
/// then once per point with that point failing (fresh machine each time); prints how many points
/// it exercised and each run's final status, and panics if any run crashed, hung (bounded time
/// per run), leaked or left a verifier finding. The scenario runs with its machine current
/// (inside [`Machine::enter`]) and must leave nothing allocated (it unloads what it loads).
pub fn systematic<F>(scenario: F) -> Report
where
    F: Fn(&Machine) -> NTSTATUS + Send + Sync + 'static,
{
    systematic_on(MachineConfig::windows_10_1803(), scenario)
}

/// [`systematic`] on the given machine configuration.
pub fn systematic_on<F>(config: MachineConfig, scenario: F) -> Report
where
    F: Fn(&Machine) -> NTSTATUS + Send + Sync + 'static,
{
    let report = Systematic {
        config,
        ..Systematic::default()
    }
    .run(scenario);
    println!("{}", report.summary());
    report.assert_clean();
    report
}
