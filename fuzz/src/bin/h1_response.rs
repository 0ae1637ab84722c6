//! Fuzz target `h1_response`: see `portcullis::fuzzing::h1_response` for what it checks.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        portcullis::fuzzing::h1_response(data);
    });
}
