//! Misuse the type system must reject (cf. windows-drivers-rs' macro tests).
#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
