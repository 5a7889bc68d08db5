//! `rgpu-kmt info`: the rgpu adapter, its identity (what the driver reports of the device and
//! itself — the caps a client needs) and the driver's counters, through the escape interface.

use std::io::Write;

use crate::selftest::{counters, find_rgpu, Failure, Verdict};
use crate::Kmt;

/// Prints the adapter, identity and counters; the verdict says whether it could.
pub fn run<K: Kmt + ?Sized>(k: &mut K, out: &mut dyn Write) -> Verdict {
    let _ = writeln!(out, "rgpu-kmt info on {}", k.describe());
    let (adapter, luid, id) = match find_rgpu(k, out) {
        Ok(f) => f,
        Err(why) => return Verdict::NoAdapter(why),
    };
    let _ = writeln!(out, "adapter");
    let _ = writeln!(out, "  LUID                 {luid}");
    let _ = writeln!(out, "identity (escape)");
    let _ = writeln!(out, "  escape version       {}", id.escape_version);
    let _ = writeln!(out, "  DXGK interface       {:#x}", id.interface_version);
    let _ = writeln!(out, "  device ID            {:#010x}", id.device_id);
    let _ = writeln!(out, "  device version       {:#x}", id.device_version);
    let _ = writeln!(out, "  driver version       {:#x}", id.driver_version);
    let _ = writeln!(out, "  flags                {:#x}", id.flags);
    let _ = writeln!(out, "  segments             {}", id.segment_count);
    let _ = writeln!(out, "  aperture bytes       {}", id.aperture_bytes);
    let result = counters(k, adapter);
    let _ = k.close_adapter(adapter);
    match result {
        Ok(c) => {
            let _ = writeln!(out, "counters (escape)");
            for (name, v) in c.named() {
                let _ = writeln!(out, "  {name:<28} {v}");
            }
            Verdict::Pass(Default::default())
        }
        Err(cause) => Verdict::Fail(Failure {
            step: "counters escape".into(),
            cause,
        }),
    }
}

/// The verdict line `info` prints.
pub fn verdict_line(v: &Verdict) -> String {
    match v {
        Verdict::Pass(_) => "rgpu-kmt info: ok".into(),
        Verdict::Fail(f) => format!("rgpu-kmt info: FAIL at {}: {}", f.step, f.cause),
        Verdict::NoAdapter(why) => format!("rgpu-kmt info: no rgpu adapter ({why})"),
    }
}
