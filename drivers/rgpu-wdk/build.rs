//! Build script of the wdk flavour: windows-drivers-rs configures the driver link (WDM: /DRIVER,
//! /SUBSYSTEM:NATIVE, /ENTRY:DriverEntry, the WDK's km library path, ...) and `rgpu_wdk` selects
//! the wdk flavour in ../../src (seam.rs, log.rs, wdk_layouts.rs).

fn main() -> Result<(), wdk_build::ConfigError> {
    println!("cargo::rustc-cfg=rgpu_wdk");
    wdk_build::configure_wdk_binary_build()
}
