// A Passive token proves the current thread runs at PASSIVE_LEVEL: it cannot move to another
// thread (or a DPC) where that is not true.
use dxgk::irql::Passive;

fn needs_send<T: Send>(_: T) {}

fn main() {
    let token = Passive::check().unwrap();
    needs_send(token);
}
