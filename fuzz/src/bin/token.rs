//! Fuzz target `token`: see `portcullis::fuzzing::token` for what it checks.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        portcullis::fuzzing::token(data);
    });
}
