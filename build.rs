//! Link settings for the `.sys` image of the root package.
//!
//! * host (tests): nothing; the cdylib keeps kernel imports undefined and test binaries link
//!   `dxgk-sim`, which defines them.
//! * cross flavour (Windows target): lld-link flags for a native driver image
//!   (../shared/reference/cross-build.md).
//!
//! The wdk flavour is another package, `drivers/rgpu-wdk`, with its own build script
//! (`wdk_build::configure_wdk_binary_build`); it compiles this crate's source with
//! `--cfg rgpu_wdk`, declared here so that the root package's builds know the name.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rustc-check-cfg=cfg(rgpu_wdk)");
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if target_os != "windows" {
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
