//! Fuzz target `sse`: see `portcullis::fuzzing::sse` for what it checks.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        portcullis::fuzzing::sse(data);
    });
}
