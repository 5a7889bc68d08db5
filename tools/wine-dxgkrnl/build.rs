//! Link settings for the fake port's `.sys` image: the same lld-link flags as rgpu's cross
//! flavour (../../build.rs, ../shared/reference/cross-build.md). Host builds (clippy) get none.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default() != "windows" {
        return;
    }
    for arg in [
        "/DRIVER",
        "/SUBSYSTEM:NATIVE",
        "/ENTRY:DriverEntry",
        "/NODEFAULTLIB",
        "/INTEGRITYCHECK",
        "/RELEASE",
        "/DYNAMICBASE",
        "/NXCOMPAT",
        "/MERGE:.edata=.rdata",
        "/MERGE:.rustc=.data",
    ] {
        println!("cargo::rustc-cdylib-link-arg={arg}");
    }
}
