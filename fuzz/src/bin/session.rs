//! Fuzz target `session`: see `portcullis::fuzzing::session` for what it checks.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        portcullis::fuzzing::session(data);
    });
}
