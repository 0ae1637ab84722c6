//! Build metadata for `portcullis version` and the `portcullis_build_info`
//! metric (git commit, build date), and the crate names that can appear as
//! log targets (to tell `PORTCULLIS_LOG=hyper` from a typo like `verbose`).
//! Everything degrades to "unknown" when git or date are not available
//! (e.g. a build from a source tarball).

use std::process::Command;

fn run(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=Cargo.lock");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let commit = run("git", &["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    // Rebuild when HEAD moves: HEAD itself and the branch it points at.
    if let Some(head) = run("git", &["rev-parse", "--git-path", "HEAD"]) {
        println!("cargo:rerun-if-changed={head}");
    }
    if let Some(r) = run("git", &["symbolic-ref", "-q", "HEAD"])
        && let Some(p) = run("git", &["rev-parse", "--git-path", &r])
    {
        println!("cargo:rerun-if-changed={p}");
    }
    // Reproducible builds set SOURCE_DATE_EPOCH; otherwise the wall clock.
    let date = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(epoch) => run("date", &["-u", "-d", &format!("@{epoch}"), "+%Y-%m-%dT%H:%M:%SZ"]),
        Err(_) => run("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
    }
    .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=PORTCULLIS_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=PORTCULLIS_BUILD_DATE={date}");

    let lock = std::fs::read_to_string("Cargo.lock").unwrap_or_default();
    let mut crates: Vec<String> = lock
        .lines()
        .filter_map(|l| l.strip_prefix("name = \""))
        .filter_map(|l| l.strip_suffix('"'))
        .map(|n| n.replace('-', "_"))
        .collect();
    crates.sort();
    crates.dedup();
    let out = std::path::Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("log_targets.rs");
    let body: String = crates.iter().map(|c| format!("    {c:?},\n")).collect();
    std::fs::write(
        out,
        format!("/// Crates in Cargo.lock: the roots of every possible log target.\npub const KNOWN_CRATES: &[&str] = &[\n{body}];\n"),
    )
    .expect("write log_targets.rs");
}
