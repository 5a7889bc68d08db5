//! Simulated machines and the per-thread "current machine".

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::{Arc, Condvar};

use dxgk_sys::KIRQL;

use crate::dxgkrnl::dma::IommuFault;
use crate::dxgkrnl::memory_callbacks::CallbackMemory;
use crate::dxgkrnl::PortState;
use crate::fault::FaultState;
use crate::lock_order::{LockRank, RankedGuard, RankedMutex};
use crate::memory::MemState;
use crate::ntoskrnl::pool::PoolState;
use crate::ntoskrnl::sync::KernelState;
use crate::verifier::{Finding, Rule};

pub use crate::memory::IommuMode;

/// What Windows a machine pretends to be.
#[derive(Clone, Debug)]
pub struct MachineConfig {
    /// Shown in reports, e.g. "Windows 10 1803".
    pub name: String,
    /// Highest DXGKDDI_INTERFACE_VERSION its Dxgkrnl implements.
    pub max_interface_version: u32,
    /// Whether `ExAllocatePool2` exists (Windows 10 2004+; not under Wine).
    pub has_pool2: bool,
    /// How the IOMMU maps device addresses.
    pub iommu: IommuMode,
    /// Physical address where installed memory starts (0: low memory). Pages come from
    /// `[base, base + 2 × PHYSICAL_MEMORY_LIMIT)` (Mm leaves a free frame between
    /// allocations); e.g. 1 TiB puts every page above a 40-bit device's reach.
    pub physical_base: u64,
}

impl MachineConfig {
    /// Windows 10 1803: WDDM 2.4, no ExAllocatePool2.
    pub fn windows_10_1803() -> Self {
        Self {
            name: "Windows 10 1803".into(),
            max_interface_version: dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM2_4,
            has_pool2: false,
            iommu: IommuMode::Identity,
            physical_base: 0,
        }
    }

    /// Windows 10 1709: WDDM 2.3 (too old for rgpu).
    pub fn windows_10_1709() -> Self {
        Self {
            name: "Windows 10 1709".into(),
            max_interface_version: dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM2_3,
            has_pool2: false,
            iommu: IommuMode::Identity,
            physical_base: 0,
        }
    }

    /// Windows 11 22H2: WDDM 3.1, ExAllocatePool2 present, DMA remapping.
    pub fn windows_11_22h2() -> Self {
        Self {
            name: "Windows 11 22H2".into(),
            max_interface_version: dxgk_sys::DXGKDDI_INTERFACE_VERSION_WDDM3_1,
            has_pool2: true,
            iommu: IommuMode::Remapped,
            physical_base: 0,
        }
    }

    /// The same machine with another IOMMU mode.
    pub fn with_iommu(mut self, mode: IommuMode) -> Self {
        self.iommu = mode;
        self
    }

    /// The same machine with installed memory starting at physical address `base` (page
    /// aligned down).
    pub fn with_physical_base(mut self, base: u64) -> Self {
        self.physical_base = base & !(crate::memory::PAGE as u64 - 1);
        self
    }

    /// The highest physical address of installed memory: what Dxgkrnl compares with an
    /// adapter's DXGK_PHYSICAL_MEMORY_CAPS.HighestVisibleAddress.
    pub fn highest_physical_address(&self) -> u64 {
        let first = (crate::memory::FIRST_PHYSICAL_PFN << 12).max(self.physical_base);
        first + 2 * crate::memory::PHYSICAL_MEMORY_LIMIT as u64 - 1
    }
}

/// One line of debug output captured from `DbgPrintEx`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DebugLine {
    pub component: u32,
    pub level: u32,
    pub text: String,
}

/// Everything a machine knows. Shared by the threads running on it.
pub(crate) struct MachineState {
    pub(crate) config: MachineConfig,
    pub(crate) pool: RankedMutex<PoolState>,
    pub(crate) debug: RankedMutex<Vec<DebugLine>>,
    pub(crate) findings: RankedMutex<Vec<Finding>>,
    pub(crate) port: RankedMutex<PortState>,
    /// Dxgkrnl's records of the memory callbacks.
    pub(crate) dxgk_memory: RankedMutex<CallbackMemory>,
    pub(crate) mem: RankedMutex<MemState>,
    pub(crate) faults: RankedMutex<FaultState>,
    pub(crate) calls: RankedMutex<HashMap<&'static str, u64>>,
    pub(crate) kernel: RankedMutex<KernelState>,
    /// Signalled (with `kernel` held) whenever a dispatcher object changes state.
    pub(crate) wake: Condvar,
    pub(crate) iommu_faults: RankedMutex<Vec<IommuFault>>,
    /// Event recording ([`crate::trace`]); off by default.
    pub(crate) trace: crate::trace::TraceState,
}

impl MachineState {
    pub(crate) fn pool(&self) -> RankedGuard<'_, PoolState> {
        self.pool.lock()
    }
    pub(crate) fn port(&self) -> RankedGuard<'_, PortState> {
        self.port.lock()
    }
    pub(crate) fn dxgk_memory(&self) -> RankedGuard<'_, CallbackMemory> {
        self.dxgk_memory.lock()
    }
    pub(crate) fn mem(&self) -> RankedGuard<'_, MemState> {
        self.mem.lock()
    }
    pub(crate) fn kernel(&self) -> RankedGuard<'_, KernelState> {
        self.kernel.lock()
    }
    /// Counts one call of a kernel function or callback.
    pub(crate) fn count_call(&self, name: &'static str) {
        *self.calls.lock().entry(name).or_insert(0) += 1;
    }
    pub(crate) fn report(&self, finding: Finding) {
        self.findings.lock().push(finding);
    }
    pub(crate) fn debug_print(&self, line: DebugLine) {
        self.debug.lock().push(line);
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<MachineState>>> = const { RefCell::new(None) };
    static IRQL: Cell<KIRQL> = const { Cell::new(0) };
}

/// The machine the calling thread runs on. Kernel calls outside [`Machine::enter`] are a test
/// harness bug and abort with this message.
pub(crate) fn current() -> Arc<MachineState> {
    CURRENT.with(|c| c.borrow().clone()).unwrap_or_else(|| {
        eprintln!("dxgk-sim: a kernel function was called on a thread with no current machine (use Machine::enter)");
        std::process::abort()
    })
}

pub(crate) fn irql() -> KIRQL {
    IRQL.with(Cell::get)
}

pub(crate) fn set_irql(v: KIRQL) {
    IRQL.with(|c| c.set(v));
}

/// The current machine of this thread, if any (threads the simulator creates inherit it).
pub(crate) fn try_current() -> Option<Arc<MachineState>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Makes `state` the current machine of this (new) thread, at PASSIVE_LEVEL.
pub(crate) fn adopt(state: Arc<MachineState>) {
    CURRENT.with(|c| *c.borrow_mut() = Some(state));
    set_irql(dxgk_sys::PASSIVE_LEVEL);
}

/// A simulated Windows machine.
#[derive(Clone)]
pub struct Machine {
    pub(crate) state: Arc<MachineState>,
}

impl Machine {
    /// A fresh machine: empty pool, no driver loaded.
    pub fn new(config: MachineConfig) -> Self {
        crate::ntoskrnl::debug::install_print_hook();
        let first_pfn = config.physical_base >> 12;
        Self {
            state: Arc::new(MachineState {
                config,
                pool: RankedMutex::new(LockRank::Pool, PoolState::default()),
                debug: RankedMutex::new(LockRank::Debug, Vec::new()),
                findings: RankedMutex::new(LockRank::Findings, Vec::new()),
                port: RankedMutex::new(LockRank::Port, PortState::default()),
                dxgk_memory: RankedMutex::new(LockRank::DxgkMemory, CallbackMemory::default()),
                mem: RankedMutex::new(LockRank::Mem, {
                    let mut mem = MemState::default();
                    mem.mm.start_at(first_pfn);
                    mem
                }),
                faults: RankedMutex::new(LockRank::Faults, FaultState::default()),
                calls: RankedMutex::new(LockRank::Calls, HashMap::new()),
                kernel: RankedMutex::new(LockRank::Kernel, KernelState::default()),
                wake: Condvar::new(),
                iommu_faults: RankedMutex::new(LockRank::IommuFaults, Vec::new()),
                trace: crate::trace::TraceState::default(),
            }),
        }
    }

    /// The configuration this machine was built with.
    pub fn config(&self) -> &MachineConfig {
        &self.state.config
    }

    /// Runs `f` on this thread with this machine current, at PASSIVE_LEVEL; restores the
    /// previous machine and IRQL afterwards (also when `f` panics).
    pub fn enter<R>(&self, f: impl FnOnce() -> R) -> R {
        struct Restore(Option<Arc<MachineState>>, KIRQL);
        impl Drop for Restore {
            fn drop(&mut self) {
                let prev = self.0.take();
                CURRENT.with(|c| *c.borrow_mut() = prev);
                set_irql(self.1);
            }
        }
        let prev = CURRENT.with(|c| c.borrow_mut().replace(self.state.clone()));
        let _restore = Restore(prev, irql());
        set_irql(dxgk_sys::PASSIVE_LEVEL);
        f()
    }

    /// Debug output captured so far.
    pub fn debug_output(&self) -> Vec<DebugLine> {
        self.state.debug.lock().clone()
    }

    /// True when some captured debug line contains `needle`.
    pub fn debug_contains(&self, needle: &str) -> bool {
        self.state
            .debug
            .lock()
            .iter()
            .any(|l| l.text.contains(needle))
    }

    /// Verifier findings so far.
    pub fn findings(&self) -> Vec<Finding> {
        self.state.findings.lock().clone()
    }

    /// Findings of one rule.
    pub fn findings_of(&self, rule: Rule) -> Vec<Finding> {
        self.findings()
            .into_iter()
            .filter(|f| f.rule == rule)
            .collect()
    }

    /// The DDI table the driver registered through DxgkInitialize, if it did.
    pub fn registered_driver(&self) -> Option<dxgk_sys::DRIVER_INITIALIZATION_DATA> {
        self.state.port().registered.as_deref().copied()
    }

    /// Edits the DDI table the driver registered (Dxgkrnl's copy), for tests that interpose on
    /// a DDI: e.g. a wrapper of DxgkDdiQueryAdapterInfo that changes an answer, or a spy on
    /// DxgkDdiBuildPagingBuffer that records what VidMm passes, each forwarding to the
    /// driver's own function (which the test keeps from [`Machine::registered_driver`]).
    /// Affects adapters started and VidMm instances created afterwards. False if no driver
    /// registered.
    pub fn edit_registered_driver(
        &self,
        edit: impl FnOnce(&mut dxgk_sys::DRIVER_INITIALIZATION_DATA),
    ) -> bool {
        match self.state.port().registered.as_deref_mut() {
            Some(d) => {
                edit(d);
                true
            }
            None => false,
        }
    }

    /// Every interface version the driver offered to DxgkInitialize, in order.
    pub fn offered_interface_versions(&self) -> Vec<u32> {
        self.state.port().offered_versions.clone()
    }

    /// Number of pool allocations made so far.
    pub fn pool_allocation_count(&self) -> u64 {
        self.state.pool().total_allocations
    }

    /// Live pool blocks: (tag as text, size).
    pub fn pool_in_use(&self) -> Vec<(String, usize)> {
        self.state.pool().live_blocks()
    }

    /// Reports every live pool block as a leak (what Driver Verifier does at unload).
    pub fn check_pool_leaks(&self) {
        let leaks = self.state.pool().leak_findings();
        for f in leaks {
            self.state.report(f);
        }
    }

    /// Number of calls of the named kernel function or callback so far
    /// (e.g. "DxgkCbAllocatePagesForMdl", "KeAcquireSpinLockRaiseToDpc").
    pub fn callback_calls(&self, name: &str) -> u64 {
        self.state.calls.lock().get(name).copied().unwrap_or(0)
    }

    /// Every kernel function and callback called so far with its call count, sorted by name.
    pub fn call_counts(&self) -> Vec<(&'static str, u64)> {
        let mut v: Vec<_> = self
            .state
            .calls
            .lock()
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect();
        v.sort();
        v
    }

    /// IOMMU faults recorded so far (every adapter).
    pub fn iommu_faults(&self) -> Vec<IommuFault> {
        self.state.iommu_faults.lock().clone()
    }

    /// Reports as [`Rule::ResourceLeak`] everything the driver still holds on any adapter: MDL
    /// pages, contiguous memory, IOMMU mappings, MMIO mappings, driver MDLs, system-VA
    /// mappings, kernel handles and running threads. The PnP path runs the per-adapter part of
    /// this after DxgkDdiRemoveDevice and the rest at unload; tests that drive callbacks
    /// directly call it themselves.
    pub fn check_resource_leaks(&self) {
        let mut f =
            crate::dxgkrnl::memory_callbacks::leak_findings(&self.state, None, "leak check");
        f.extend(self.state.mem().mm.leak_findings("leak check"));
        f.extend(crate::dxgkrnl::mmio_leak_findings(
            &self.state,
            None,
            "leak check",
        ));
        f.extend(self.state.kernel().leak_findings("leak check"));
        for x in f {
            self.state.report(x);
        }
    }

    /// Every leak check at once: pool ([`Machine::check_pool_leaks`]) and resources
    /// ([`Machine::check_resource_leaks`]).
    pub fn check_leaks(&self) {
        self.check_pool_leaks();
        self.check_resource_leaks();
    }

    /// Panics with every finding, one per line, if there is any.
    pub fn assert_clean(&self) {
        let findings = self.findings();
        if !findings.is_empty() {
            let mut msg = format!(
                "dxgk-sim verifier: {} finding(s) on {}:\n",
                findings.len(),
                self.state.config.name
            );
            for f in &findings {
                msg.push_str(&format!("  {f}\n"));
            }
            panic!("{msg}");
        }
    }
}
