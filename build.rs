//! Link settings for the `.sys` image.
//!
//! * host (tests): nothing; the cdylib keeps kernel imports undefined and test binaries link
//!   `dxgk-sim`, which defines them.
//! * cross flavour (Windows target, no `wdk` feature): lld-link flags for a native driver
//!   image (../shared/reference/cross-build.md).
//! * wdk flavour (`--features wdk`, Windows + eWDK only): windows-drivers-rs configures
//!   everything (`wdk_build::configure_wdk_binary_build`).

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if target_os != "windows" {
        return;
    }
    #[cfg(feature = "wdk")]
    {
        if let Err(e) = wdk_build::configure_wdk_binary_build() {
            panic!("wdk-build could not configure the driver build: {e:?}");
        }
    }
    #[cfg(not(feature = "wdk"))]
    {
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
}
