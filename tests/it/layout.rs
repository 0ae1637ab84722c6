//! The layering of `src/` (ARCHITECTURE.md, "Invariants"): which top-level
//! module may import which. Reads every `src/**/*.rs`, collects the
//! `crate::<module>` paths outside comments, and fails on an arrow the table
//! below does not allow, or on a cycle between top-level modules. Keep the
//! table the same as ARCHITECTURE.md's.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module → the modules it may import. `cli` sits on top and may import
/// anything; no other module may import `app` or `cli`.
const ALLOWED: &[(&str, &[&str])] = &[
    ("token", &[]),
    ("build_info", &[]),
    ("config", &["token"]),
    ("telemetry", &["build_info", "config"]),
    ("store", &["token"]),
    ("error", &["store"]),
    ("limit", &["store"]),
    ("upstream", &["config", "telemetry"]),
    ("audit", &["config", "store", "telemetry", "token"]),
    ("usage", &["config", "store", "telemetry", "token"]),
    ("auth", &["audit", "config", "error", "limit", "store", "telemetry", "token"]),
    (
        "state",
        &["audit", "auth", "config", "limit", "store", "telemetry", "token", "usage"],
    ),
    (
        "mcp",
        &["auth", "build_info", "config", "error", "state", "telemetry", "token", "upstream"],
    ),
    (
        "gateway",
        &[
            "audit",
            "auth",
            "config",
            "error",
            "mcp",
            "oauth",
            "state",
            "telemetry",
            "token",
            "upstream",
            "usage",
        ],
    ),
    (
        "admin",
        &[
            "audit",
            "auth",
            "config",
            "error",
            "state",
            "store",
            "telemetry",
            "token",
            "ui",
            "usage",
        ],
    ),
    // Shared browser assets and markup (dashboard and members' pages).
    ("ui", &["config"]),
    // Members' single sign-on (OpenID Connect), mounted by `web`.
    ("sso", &["audit", "config", "error", "state", "store", "token"]),
    // People-facing pages on the public listener (members, later OAuth).
    (
        "web",
        &[
            "audit",
            "auth",
            "config",
            "error",
            "sso",
            "state",
            "store",
            "telemetry",
            "token",
            "ui",
        ],
    ),
    // The authorization server: mounted by `gateway` on the data listener;
    // `web` for who is signed in (oauth::member), never `admin`.
    (
        "oauth",
        &["audit", "auth", "config", "error", "limit", "state", "store", "token", "ui", "web"],
    ),
    ("server", &["error", "gateway", "state", "upstream"]),
    ("demo", &["error", "server"]),
    // Test-only entry points for the fuzz targets (fuzz/): parsers of
    // untrusted input, nothing that holds state.
    ("fuzzing", &["auth", "mcp", "server", "token", "upstream"]),
    (
        "app",
        &[
            "admin",
            "audit",
            "auth",
            "config",
            "gateway",
            "limit",
            "server",
            "state",
            "store",
            "telemetry",
            "token",
            "upstream",
            "usage",
            "web",
        ],
    ),
];

fn collect(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// The top-level modules a source text names as `crate::<module>`, or in a
/// `use crate::{a, b::c}` group; comment lines do not count.
fn imports(text: &str) -> BTreeSet<String> {
    let ident = |s: &str| s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>();
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            if let Some(group) = after.strip_prefix('{') {
                // Only the first level of a group on this line.
                for part in group.split(',') {
                    let m = ident(part.trim());
                    if !m.is_empty() {
                        out.insert(m);
                    }
                }
            } else {
                out.insert(ident(after));
            }
            rest = after;
        }
    }
    out.retain(|m| !m.is_empty());
    out
}

/// The top-level module → imported modules graph of `src/`.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    collect(&src, &mut files);
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(&src).unwrap();
        let first = rel.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
        let module = first.trim_end_matches(".rs").to_owned();
        if module == "lib" || module == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        let deps = g.entry(module.clone()).or_default();
        deps.extend(imports(&text).into_iter().filter(|m| *m != module));
    }
    g
}

#[test]
fn imports_follow_the_layering() {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut wrong = Vec::new();
    for (module, deps) in graph() {
        if module == "cli" {
            assert!(!deps.contains("cli"));
            continue;
        }
        let Some(ok) = allowed.get(module.as_str()) else {
            wrong.push(format!("{module}: a new top-level module; add it to ALLOWED and ARCHITECTURE.md"));
            continue;
        };
        for d in deps {
            if !ok.contains(&d.as_str()) {
                wrong.push(format!("{module} → {d}"));
            }
        }
    }
    assert!(wrong.is_empty(), "arrows the layering forbids:\n{}", wrong.join("\n"));
}

#[test]
fn no_cycles_between_top_level_modules() {
    let g = graph();
    // Depth-first search with colours: grey = on the current path.
    fn visit<'a>(
        n: &'a str,
        g: &'a BTreeMap<String, BTreeSet<String>>,
        colour: &mut BTreeMap<&'a str, u8>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match colour.get(n) {
            Some(1) => {
                let at = path.iter().position(|p| *p == n).unwrap();
                let mut cycle: Vec<String> = path[at..].iter().map(|s| s.to_string()).collect();
                cycle.push(n.to_owned());
                return Some(cycle);
            }
            Some(2) => return None,
            _ => {}
        }
        colour.insert(n, 1);
        path.push(n);
        for d in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(d, g, colour, path) {
                return Some(c);
            }
        }
        path.pop();
        colour.insert(n, 2);
        None
    }
    let mut colour = BTreeMap::new();
    for n in g.keys() {
        if let Some(cycle) = visit(n, &g, &mut colour, &mut Vec::new()) {
            panic!("import cycle: {}", cycle.join(" → "));
        }
    }
}

#[test]
fn the_scanner_sees_groups_and_skips_comments() {
    let found = imports("use crate::{auth::Verifier, store};\n// crate::app is only named here\nlet x = crate::token::now_unix();");
    assert_eq!(found, ["auth", "store", "token"].iter().map(|s| s.to_string()).collect());
}
