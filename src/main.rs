#![forbid(unsafe_code)]

// mimalloc instead of glibc malloc: the data plane makes a few dozen small,
// short-lived allocations per proxied request (header maps, body frames,
// futures), and on two threads glibc's arena locking and `_int_free` showed
// up in the profile. See docs/benchmarks.md for the before/after figures.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    portcullis::cli::run()
}
