//! IRQL per simulated processor (thread). `dxgk-sys` routes KeGetCurrentIrql / KeRaiseIrql /
//! KeLowerIrql here on the host.

use dxgk_sys::KIRQL;

use crate::machine::{current, irql, set_irql};
use crate::verifier::{Finding, Rule};

/// Records an [`Rule::IrqlTooHigh`] finding when the caller runs above `max`.
pub(crate) fn require_irql_at_most(call: &'static str, max: KIRQL) -> bool {
    let now = irql();
    if now > max {
        current().report(Finding::here(
            Rule::IrqlTooHigh,
            call,
            format!("called at IRQL {now}, documented maximum {max}"),
        ));
        false
    } else {
        true
    }
}

#[no_mangle]
pub extern "system" fn DxgkSimKeGetCurrentIrql() -> KIRQL {
    irql()
}

#[no_mangle]
pub extern "system" fn DxgkSimKeRaiseIrql(new_irql: KIRQL) -> KIRQL {
    let old = irql();
    if new_irql < old {
        current().report(Finding::here(
            Rule::IrqlTransition,
            "KeRaiseIrql",
            format!("raise to {new_irql} from higher IRQL {old}"),
        ));
    }
    set_irql(new_irql);
    old
}

#[no_mangle]
pub extern "system" fn DxgkSimKeLowerIrql(new_irql: KIRQL) {
    let old = irql();
    if new_irql > old {
        current().report(Finding::here(
            Rule::IrqlTransition,
            "KeLowerIrql",
            format!("lower to {new_irql} from lower IRQL {old}"),
        ));
    }
    set_irql(new_irql);
    if old >= dxgk_sys::DISPATCH_LEVEL {
        crate::ntoskrnl::dpc::run_if_below_dispatch(&current());
    }
}
