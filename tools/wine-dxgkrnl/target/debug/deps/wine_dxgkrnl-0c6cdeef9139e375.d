/work/main/tools/wine-dxgkrnl/target/debug/deps/wine_dxgkrnl-0c6cdeef9139e375.d: src/lib.rs src/log.rs src/kernel.rs src/callbacks.rs src/device.rs src/port.rs src/settings.rs src/state.rs src/steps.rs src/wine_hook.rs Cargo.toml

/work/main/tools/wine-dxgkrnl/target/debug/deps/libwine_dxgkrnl-0c6cdeef9139e375.rmeta: src/lib.rs src/log.rs src/kernel.rs src/callbacks.rs src/device.rs src/port.rs src/settings.rs src/state.rs src/steps.rs src/wine_hook.rs Cargo.toml

src/lib.rs:
src/log.rs:
src/kernel.rs:
src/callbacks.rs:
src/device.rs:
src/port.rs:
src/settings.rs:
src/state.rs:
src/steps.rs:
src/wine_hook.rs:
Cargo.toml:

# env-dep:CLIPPY_ARGS=-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__
# env-dep:CLIPPY_CONF_DIR
