//! Fuzz target `jsonrpc`: see `portcullis::fuzzing::jsonrpc` for what it checks.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        portcullis::fuzzing::jsonrpc(data);
    });
}
