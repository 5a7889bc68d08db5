//! Compiles the C shims for the variadic kernel exports (`DbgPrintEx`): Rust cannot define a
//! C-variadic function on stable.
fn main() {
    println!("cargo::rerun-if-changed=csrc/variadic.c");
    cc::Build::new()
        .file("csrc/variadic.c")
        .warnings(true)
        .compile("dxgk_sim_variadic");
}
