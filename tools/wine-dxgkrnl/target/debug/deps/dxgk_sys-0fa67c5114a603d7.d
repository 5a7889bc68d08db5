/work/main/tools/wine-dxgkrnl/target/debug/deps/dxgk_sys-0fa67c5114a603d7.d: /work/main/crates/dxgk-sys/src/lib.rs /work/main/crates/dxgk-sys/src/base.rs /work/main/crates/dxgk-sys/src/generated/mod.rs /work/main/crates/dxgk-sys/src/generated/consts.rs /work/main/crates/dxgk-sys/src/generated/fnptrs.rs /work/main/crates/dxgk-sys/src/generated/structs.rs /work/main/crates/dxgk-sys/src/inline.rs /work/main/crates/dxgk-sys/src/ntoskrnl.rs /work/main/crates/dxgk-sys/src/ntstatus.rs

/work/main/tools/wine-dxgkrnl/target/debug/deps/libdxgk_sys-0fa67c5114a603d7.rmeta: /work/main/crates/dxgk-sys/src/lib.rs /work/main/crates/dxgk-sys/src/base.rs /work/main/crates/dxgk-sys/src/generated/mod.rs /work/main/crates/dxgk-sys/src/generated/consts.rs /work/main/crates/dxgk-sys/src/generated/fnptrs.rs /work/main/crates/dxgk-sys/src/generated/structs.rs /work/main/crates/dxgk-sys/src/inline.rs /work/main/crates/dxgk-sys/src/ntoskrnl.rs /work/main/crates/dxgk-sys/src/ntstatus.rs

/work/main/crates/dxgk-sys/src/lib.rs:
/work/main/crates/dxgk-sys/src/base.rs:
/work/main/crates/dxgk-sys/src/generated/mod.rs:
/work/main/crates/dxgk-sys/src/generated/consts.rs:
/work/main/crates/dxgk-sys/src/generated/fnptrs.rs:
/work/main/crates/dxgk-sys/src/generated/structs.rs:
/work/main/crates/dxgk-sys/src/inline.rs:
/work/main/crates/dxgk-sys/src/ntoskrnl.rs:
/work/main/crates/dxgk-sys/src/ntstatus.rs:
