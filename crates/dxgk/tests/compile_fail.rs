//! Misuse the type system must reject (cf. windows-drivers-rs' macro tests).
#[test]
#[cfg_attr(miri, ignore = "trybuild runs rustc, which Miri cannot execute")]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
