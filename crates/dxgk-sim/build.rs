//! Compiles the C shims for the variadic kernel exports (`DbgPrintEx`): Rust cannot define a
//! C-variadic function on stable. Not under Miri, which cannot run C: there `DbgPrintEx` is
//! Rust (src/ntoskrnl/debug/variadic.rs).
fn main() {
    println!("cargo::rerun-if-changed=csrc/variadic.c");
    if std::env::var_os("CARGO_CFG_MIRI").is_some() {
        return;
    }
    cc::Build::new()
        .file("csrc/variadic.c")
        .warnings(true)
        .compile("dxgk_sim_variadic");
}
