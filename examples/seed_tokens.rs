//! Fills a SQLite token store with many workspace tokens quickly, for the
//! scale benchmarks (`benches/scale.sh`).
//!
//! `cargo run --release --example seed_tokens -- DB COUNT WORKSPACE RAW_OUT [RAW_KEEP]`
//!
//! Opens (and migrates) `DB` through the crate's `SqliteStore`, then inserts
//! `COUNT` tokens for `WORKSPACE` in one transaction with the same columns
//! `SqliteStore::insert` writes, generated with `token::generate` (real
//! tokens: prefix, CSPRNG part, CRC32). The first `RAW_KEEP` (default: all)
//! raw tokens are written to `RAW_OUT`, one a line: the benchmark needs them
//! to call the gateway; a real store never holds them.

use std::io::Write;
use std::path::PathBuf;

use portcullis::store::sqlite::SqliteStore;
use portcullis::token::{self, TokenKind, now_unix};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        eprintln!("usage: seed_tokens DB COUNT WORKSPACE RAW_OUT [RAW_KEEP]");
        std::process::exit(2);
    }
    let db = PathBuf::from(&args[0]);
    let count: usize = args[1].parse().expect("COUNT is a number");
    let workspace = &args[2];
    let keep: usize = args.get(4).map_or(count, |k| k.parse().expect("RAW_KEEP is a number"));
    // Creates the file and runs the migrations exactly as the gateway does.
    drop(SqliteStore::open(&db).expect("open store"));

    let mut conn = rusqlite::Connection::open(&db).expect("open db");
    // Seeding only: durability of a half-written seed does not matter.
    conn.pragma_update(None, "synchronous", "OFF").expect("pragma");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&args[3]).expect("create RAW_OUT"));
    let now = now_unix();
    let tx = conn.transaction().expect("tx");
    {
        let mut stmt = tx
            .prepare(
                "INSERT INTO tokens (hash, id, name, workspace, kind, hint, created_at, created_by) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'seed')",
            )
            .expect("prepare");
        for i in 0..count {
            let new = token::generate(TokenKind::Workspace);
            stmt.execute(rusqlite::params![
                &new.hash[..],
                token::generate_id(),
                format!("seed-{i}"),
                workspace,
                TokenKind::Workspace.as_str(),
                new.hint,
                now,
            ])
            .expect("insert");
            if i < keep {
                writeln!(out, "{}", new.raw).expect("write");
            }
        }
    }
    tx.commit().expect("commit");
    out.flush().expect("flush");
    eprintln!("seeded {count} tokens into {}", db.display());
}
