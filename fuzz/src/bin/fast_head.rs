//! Fuzz target `fast_head`: see `portcullis::fuzzing::fast_head` for what it checks.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        portcullis::fuzzing::fast_head(data);
    });
}
