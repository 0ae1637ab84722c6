//! The verify hot path (issue 3, "Performance"): parse + checksum + SHA-256 +
//! index hit + revoked/expiry check + per-token limiter check, through the
//! crate's public API (`auth::Verifier`, `limit::Limiter`) on a real SQLite
//! store in a temporary directory.
//!
//! `cargo bench --bench verify` runs:
//! - `verify/hit`: a cached workspace token (target < 2 µs);
//! - `verify/bad_checksum`: a token whose checksum does not match (target
//!   < 0.5 µs; nothing shared is touched);
//! - `verify/unknown_negative_hit`: a well-formed unknown token already in the
//!   negative cache (the cost of a flood of random valid-checksum tokens once
//!   the first miss has been answered);
//! - `verify_contended/{same,distinct}_token_{N}_threads`: N threads verifying
//!   at once, all the same token (one index shard, one limiter key) or one
//!   token each; reported per verify (wall time / total verifies).
//!
//! - `usage/record_hit`: counting one answered request for usage analytics
//!   (`usage::Usage::record`) whose key is already in the table.
//!
//! Before the criterion groups it prints the heap allocations per cache-hit
//! verify, per bad-checksum rejection and per usage record of a known key, counted by a global allocator in
//! this bench binary, and exits non-zero unless both are exactly 0 (the
//! hot path's promise; a figure printed but not checked would not notice
//! an allocation creeping in). `cargo bench --bench verify -- --alloc-only`
//! stops after that check.
//! The verify future never awaits on a hit, so it is polled once with
//! `now_or_never` instead of going through a runtime.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use futures_util::FutureExt;
use portcullis::auth::lifecycle::{self, NewTokenRequest};
use portcullis::auth::{IndexOptions, Verifier};
use portcullis::config::Config;
use portcullis::limit::Limiter;
use portcullis::store::TokenStore;
use portcullis::store::sqlite::SqliteStore;
use portcullis::telemetry::Metrics;
use portcullis::token::now_unix;

/// Counts every allocation (and reallocation) made by this process.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call unchanged to the system allocator; the only
// addition is a relaxed counter increment, which cannot affect the memory
// handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A limit high enough never to trip, so the limiter path runs in full.
const PER_MINUTE: u32 = 1_000_000_000;

struct Fixture {
    verifier: Arc<Verifier>,
    limiter: Arc<Limiter>,
    /// Valid workspace tokens, all in the index after `new`.
    tokens: Vec<String>,
    /// `tokens[0]` with its last checksum character changed.
    bad_checksum: String,
    /// Well-formed (valid checksum), unknown to the store, in the negative cache.
    unknown: String,
    _dir: tempfile::TempDir,
    _rt: tokio::runtime::Runtime,
}

impl Fixture {
    fn new(n_tokens: usize) -> Fixture {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let text = "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
                    [[workspaces]]\nslug = \"demo\"\n[[workspaces.servers]]\nname = \"demo\"\nurl = \"http://127.0.0.1:9/mcp\"\n";
        let config = Config::from_toml(Path::new("bench.toml"), text, &|_| None).unwrap();
        let (verifier, tokens, unknown) = rt.block_on(async {
            let store: Arc<dyn TokenStore> = Arc::new(SqliteStore::open(&dir.path().join("bench.db")).unwrap());
            let metrics = Arc::new(Metrics::new(&config));
            let verifier = Arc::new(Verifier::new(Arc::clone(&store), metrics, IndexOptions::default()));
            let mut tokens = Vec::new();
            for i in 0..n_tokens {
                let req = NewTokenRequest {
                    name: format!("bench-{i}"),
                    workspace: Some("demo".into()),
                    created_by: "bench".into(),
                    ..Default::default()
                };
                let (raw, _) = lifecycle::create(Some(&verifier), &store, req, now_unix()).await.unwrap();
                // Fill the index (the miss path reads the store once).
                verifier.verify(&raw, now_unix()).await.unwrap();
                tokens.push(raw);
            }
            // A valid-checksum token that was never stored: the first verify
            // reads the store and records it in the negative cache.
            let unknown = portcullis::token::generate(portcullis::token::TokenKind::Workspace).raw;
            assert!(verifier.verify(&unknown, now_unix()).await.is_err());
            (verifier, tokens, unknown)
        });
        let mut bad_checksum = tokens[0].clone();
        let last = bad_checksum.pop().unwrap();
        bad_checksum.push(if last == 'A' { 'B' } else { 'A' });
        Fixture {
            verifier,
            limiter: Arc::new(Limiter::new()),
            tokens,
            bad_checksum,
            unknown,
            _dir: dir,
            _rt: rt,
        }
    }
}

/// One request's worth of the verify path on a cache hit.
#[inline(always)]
fn verify_hit(verifier: &Verifier, limiter: &Limiter, raw: &str) {
    let entry = verifier
        .verify(raw, now_unix())
        .now_or_never()
        .expect("a cache hit never waits")
        .expect("valid token");
    limiter.check(entry.limiter_key, PER_MINUTE).expect("limit high enough");
    black_box(entry);
}

fn allocations_per_hit(f: &Fixture) -> f64 {
    const N: u64 = 100_000;
    for _ in 0..1000 {
        verify_hit(&f.verifier, &f.limiter, &f.tokens[0]);
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..N {
        verify_hit(&f.verifier, &f.limiter, &f.tokens[0]);
    }
    (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / N as f64
}

fn allocations_per_bad_checksum(f: &Fixture) -> f64 {
    const N: u64 = 100_000;
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..N {
        let r = f.verifier.verify(&f.bad_checksum, now_unix()).now_or_never().expect("no wait");
        black_box(r.is_err());
    }
    (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / N as f64
}

/// Usage counters as the gateway holds them (default `[usage]`).
fn usage_counters() -> portcullis::usage::Usage {
    let text = "[[workspaces]]\nslug = \"demo\"\n[[workspaces.servers]]\nname = \"demo\"\nurl = \"http://127.0.0.1:9/mcp\"\n";
    portcullis::usage::Usage::new(&Config::from_toml(Path::new("bench.toml"), text, &|_| None).unwrap())
}

/// What the gateway counts for a `tools/call` of `echo` answered 200.
fn usage_request(status: u16) -> portcullis::usage::Request<'static> {
    portcullis::usage::Request {
        workspace: 0,
        token_id: "tkn_0123456789abcdefghijkl",
        token_key: 0x1234_5678_9abc_def0,
        member_id: Some("alice"),
        server: Some(0),
        tool: Some(b"echo"),
        status,
    }
}

fn allocations_per_usage_record() -> f64 {
    const N: u64 = 100_000;
    let usage = usage_counters();
    // The first request of a key describes its slot (the one allocation).
    usage.record(usage_request(200));
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for i in 0..N {
        usage.record(black_box(usage_request(if i % 10 == 0 { 429 } else { 200 })));
    }
    (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / N as f64
}

fn single(c: &mut Criterion) {
    let f = Fixture::new(1);
    let mut g = c.benchmark_group("verify");
    g.bench_function("hit", |b| b.iter(|| verify_hit(&f.verifier, &f.limiter, black_box(&f.tokens[0]))));
    g.bench_function("bad_checksum", |b| {
        b.iter(|| {
            let r = f
                .verifier
                .verify(black_box(&f.bad_checksum), now_unix())
                .now_or_never()
                .expect("no wait");
            black_box(r.is_err())
        })
    });
    g.bench_function("unknown_negative_hit", |b| {
        b.iter(|| {
            let r = f
                .verifier
                .verify(black_box(&f.unknown), now_unix())
                .now_or_never()
                .expect("no wait");
            black_box(r.is_err())
        })
    });
    g.finish();
    let usage = usage_counters();
    c.bench_function("usage/record_hit", |b| b.iter(|| usage.record(black_box(usage_request(200)))));
}

/// `threads` threads share `iters` verifies; the figure is wall time per
/// verify, i.e. the inverse of the aggregate throughput.
fn contended_run(f: &Fixture, threads: usize, distinct: bool, iters: u64) -> Duration {
    let per_thread = iters.div_ceil(threads as u64);
    let barrier = std::sync::Barrier::new(threads + 1);
    std::thread::scope(|s| {
        for t in 0..threads {
            let token = if distinct { &f.tokens[t] } else { &f.tokens[0] };
            let barrier = &barrier;
            s.spawn(move || {
                barrier.wait();
                for _ in 0..per_thread {
                    verify_hit(&f.verifier, &f.limiter, token);
                }
            });
        }
        barrier.wait();
        let start = Instant::now();
        // The scope joins every thread before returning.
        start
    })
    .elapsed()
}

fn contended(c: &mut Criterion) {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).max(2) * 2;
    let f = Fixture::new(threads);
    let mut g = c.benchmark_group("verify_contended");
    g.bench_function(format!("same_token_{threads}_threads"), |b| {
        b.iter_custom(|iters| contended_run(&f, threads, false, iters))
    });
    g.bench_function(format!("distinct_tokens_{threads}_threads"), |b| {
        b.iter_custom(|iters| contended_run(&f, threads, true, iters))
    });
    g.finish();
}

criterion_group!(benches, single, contended);

fn main() {
    let f = Fixture::new(1);
    let hit = allocations_per_hit(&f);
    let bad = allocations_per_bad_checksum(&f);
    let usage = allocations_per_usage_record();
    println!("heap allocations per cache-hit verify (verify + limiter check): {hit:.3}");
    println!("heap allocations per bad-checksum rejection: {bad:.3}");
    println!("heap allocations per usage record of a known key: {usage:.3}");
    drop(f);
    // Exactly zero: one allocation in the 100 000 runs shows as a non-zero
    // fraction.
    if hit != 0.0 || bad != 0.0 || usage != 0.0 {
        eprintln!("FAILED: the hot path must not allocate (cache hit {hit}, bad checksum {bad}, usage record {usage} per call)");
        std::process::exit(1);
    }
    if std::env::args().any(|a| a == "--alloc-only") {
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
