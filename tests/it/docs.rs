//! Every reference in the documentation resolves inside the repository: a
//! reader following a link or a path named in `docs/*.md`, the README or
//! ARCHITECTURE.md must find the file.

use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Top-level directories of the repository: a backticked path starting with
/// one of them names a file of the repository.
const REPO_DIRS: [&str; 10] = [
    "src/",
    "clients/",
    "tests/",
    "docs/",
    "deploy/",
    "config/",
    "scripts/",
    "benches/",
    "examples/",
    ".ci/",
];

fn documents() -> Vec<PathBuf> {
    let mut docs: Vec<PathBuf> = std::fs::read_dir(Path::new(ROOT).join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    for f in ["README.md", "ARCHITECTURE.md", "deploy/README.md", "clients/typescript/README.md"] {
        docs.push(Path::new(ROOT).join(f));
    }
    docs.sort();
    docs
}

/// `(target)` of every Markdown link `[text](target)`.
fn links(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("](") {
        rest = &rest[i + 2..];
        if let Some(end) = rest.find(')') {
            out.push(rest[..end].trim());
            rest = &rest[end..];
        }
    }
    out
}

/// Backticked words that look like paths of repository files.
fn code_paths(text: &str) -> Vec<&str> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| !s.contains(|c: char| c.is_whitespace() || "<>*{}$…|=,:?".contains(c)))
        .filter(|s| REPO_DIRS.iter().any(|d| s.starts_with(d)) || s.ends_with(".md"))
        .collect()
}

/// Files the docs name that a run writes (docs/conformance.md: results).
const GENERATED: [&str; 1] = ["summary.md"];

fn exists(base: &Path, target: &str) -> bool {
    let target = target.split('#').next().unwrap_or_default();
    target.is_empty() || base.join(target).exists()
}

#[test]
fn every_reference_in_the_docs_resolves() {
    let mut broken = Vec::new();
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).unwrap();
        let dir = doc.parent().unwrap();
        let name = doc.strip_prefix(ROOT).unwrap().display().to_string();
        for l in links(&text) {
            if l.starts_with("http://") || l.starts_with("https://") || l.starts_with("mailto:") || l.starts_with('#') {
                continue;
            }
            if !exists(dir, l) {
                broken.push(format!("{name}: link ({l})"));
            }
        }
        for p in code_paths(&text) {
            // A path in backticks is relative to the repository root (as in
            // "see `src/config.rs`"), or to the document for sibling docs.
            if !GENERATED.contains(&p) && !exists(Path::new(ROOT), p) && !exists(dir, p) {
                broken.push(format!("{name}: `{p}`"));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "references that do not resolve inside the repository:\n{}",
        broken.join("\n")
    );
}

#[test]
fn the_checker_finds_what_it_should() {
    assert_eq!(
        links("see [a](docs/x.md#y) and [b](https://e.com)"),
        vec!["docs/x.md#y", "https://e.com"]
    );
    assert_eq!(
        code_paths("`src/config.rs`, `shared/docs/contract.md`, `data/x.db`, `PORTCULLIS_LOG`, `tests/<x>/`"),
        vec!["src/config.rs", "shared/docs/contract.md"]
    );
    assert!(!exists(Path::new(ROOT), "shared/docs/contract.md"));
}
