//! Driver Verifier-style findings.

use std::fmt;

/// The rule a driver broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rule {
    /// Pool still allocated when the driver unloaded.
    PoolLeak,
    /// A pool pointer that is not a live block (double free or garbage).
    PoolUnknownPointer,
    /// ExFreePoolWithTag with a tag other than the allocation's.
    PoolTagMismatch,
    /// Bytes past the end (or before the start) of a pool block were written.
    PoolOverrun,
    /// A kernel function or callback called above its documented IRQL.
    IrqlTooHigh,
    /// IRQL raised/lowered inconsistently.
    IrqlTransition,
    /// Bad arguments to a kernel function or callback.
    InvalidArgument,
    /// A DDI protocol rule (e.g. an invalid DRIVER_INITIALIZATION_DATA, a BuildPagingBuffer
    /// status Dxgkrnl does not accept, a DDI set missing for the caps the driver reported).
    DdiProtocol,
    /// A kernel function or callback called below the IRQL it requires (e.g. DxgkCbNotifyDpc
    /// outside the DPC, DxgkCbNotifyInterrupt outside the ISR).
    IrqlTooLow,
    /// Memory-callback or MDL misuse: unknown or stale handle, double free / double unmap, free
    /// while mapped (IOMMU or system VA), an MDL changed while IOMMU-mapped, IoFreeMdl on a
    /// Dxgkrnl MDL, unmap of a never-mapped VA, an ADL used after DxgkCbFreeAdl (also by a
    /// paging operation), an UNMAP_APERTURE_SEGMENT of a range no MAP operation mapped.
    MdlMisuse,
    /// The device accessed a logical address the IOMMU does not map (or wrote a read-only page).
    IommuFault,
    /// Something still allocated, mapped or running when the adapter was removed or the driver
    /// unloaded (MDL pages, contiguous memory, IOMMU or MMIO mappings, driver MDLs, handles,
    /// threads).
    ResourceLeak,
    /// A wait that would have blocked past the simulator's bound (the test would hang), or a
    /// spin lock that could not be acquired (deadlock).
    PossibleHang,
    /// Spin lock misuse: release of a lock not held, recursive acquire.
    SpinLockMisuse,
    /// A callback that does not exist in the negotiated interface, or that the simulator does
    /// not model, was reached.
    CallbackUnavailable,
}

/// One rule violation: what, where in the kernel, and where in the driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub rule: Rule,
    /// The kernel function or callback that detected it.
    pub call: &'static str,
    pub detail: String,
    /// The first frame outside the simulator and the standard library, if symbols allow.
    pub driver_site: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{:?}] in {}: {} (driver call site: {})",
            self.rule, self.call, self.detail, self.driver_site
        )
    }
}

impl Finding {
    /// A finding whose driver call site is taken from the current stack.
    pub fn here(rule: Rule, call: &'static str, detail: impl Into<String>) -> Self {
        Self {
            rule,
            call,
            detail: detail.into(),
            driver_site: driver_call_site(),
        }
    }
}

/// The innermost stack frame that belongs to neither the simulator nor the Rust runtime.
pub fn driver_call_site() -> String {
    let bt = std::backtrace::Backtrace::force_capture().to_string();
    let mut lines = bt.lines().map(str::trim);
    while let Some(line) = lines.next() {
        // Frames look like "12: crate::module::function" followed by "at path:line:col".
        let Some((_, symbol)) = line.split_once(": ") else {
            continue;
        };
        // Unmangled symbols (no "::") are the simulator's own kernel exports.
        let runtime = [
            "dxgk_sim::",
            "std::",
            "core::",
            "alloc::",
            "backtrace::",
            "<",
        ];
        if !symbol.contains("::") || runtime.iter().any(|p| symbol.starts_with(p)) {
            continue;
        }
        let at = lines.next().unwrap_or("").trim_start_matches("at ");
        return format!("{symbol} {at}").trim().to_string();
    }
    "unknown (no symbols)".into()
}
