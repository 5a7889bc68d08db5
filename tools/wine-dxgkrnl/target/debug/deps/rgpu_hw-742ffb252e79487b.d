/work/main/tools/wine-dxgkrnl/target/debug/deps/rgpu_hw-742ffb252e79487b.d: /work/main/crates/rgpu-hw/src/lib.rs /work/main/crates/rgpu-hw/src/bus.rs /work/main/crates/rgpu-hw/src/cmd.rs /work/main/crates/rgpu-hw/src/device.rs /work/main/crates/rgpu-hw/src/mmu.rs /work/main/crates/rgpu-hw/src/pte.rs /work/main/crates/rgpu-hw/src/regs.rs /work/main/crates/rgpu-hw/src/ring.rs

/work/main/tools/wine-dxgkrnl/target/debug/deps/librgpu_hw-742ffb252e79487b.rmeta: /work/main/crates/rgpu-hw/src/lib.rs /work/main/crates/rgpu-hw/src/bus.rs /work/main/crates/rgpu-hw/src/cmd.rs /work/main/crates/rgpu-hw/src/device.rs /work/main/crates/rgpu-hw/src/mmu.rs /work/main/crates/rgpu-hw/src/pte.rs /work/main/crates/rgpu-hw/src/regs.rs /work/main/crates/rgpu-hw/src/ring.rs

/work/main/crates/rgpu-hw/src/lib.rs:
/work/main/crates/rgpu-hw/src/bus.rs:
/work/main/crates/rgpu-hw/src/cmd.rs:
/work/main/crates/rgpu-hw/src/device.rs:
/work/main/crates/rgpu-hw/src/mmu.rs:
/work/main/crates/rgpu-hw/src/pte.rs:
/work/main/crates/rgpu-hw/src/regs.rs:
/work/main/crates/rgpu-hw/src/ring.rs:
