#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    portcullis::cli::run()
}
