//! Over-admission of the cluster limiter (issue 15): three instances share
//! one token's limit through leases; how many requests do they admit beyond
//! what one shared limiter would have?
//!
//! `cargo bench --bench lease` starts a private redis-server and three
//! `ClusterLimiter`s on it, each with its own connection (three instances,
//! as three gateway processes would have; the HTTP layer adds nothing to
//! the count), offers one token's requests to them on a schedule, and
//! records every request's arrival time and verdict. The same arrivals are
//! then fed, in time order, to one exact GCRA (the limit as one limiter
//! would apply it), and for every window of 60 s (or the whole measured
//! phase when shorter) the excess `admitted by the cluster − admitted by
//! the one limiter` is taken; the table shows the largest, as a percentage
//! of the per-minute limit, with the Redis script calls per request.
//!
//! Scenarios (LIMIT requests a minute, default 6000; 3 instances):
//! - steady, even: all three flood until the shared bucket is empty, then
//!   1.5 × the limit spread evenly, for 60 s (measured);
//! - steady, skewed: the same with 70% / 20% / 10% of the traffic;
//! - burst: 0.8 × the limit evenly for 10 s (the instances' leases grow to
//!   their cap and are held), 1 s quiet, then all three flood for 3 s;
//! - instance killed: the bucket emptied as above, 1.5 × the limit for
//!   10 s, then one instance is dropped with its unspent lease and the other
//!   two take all the traffic for 20 s.
//!
//! Environment: LIMIT (requests a minute), SCALE (multiplies every phase's
//! duration, default 1), SMOKE=1 (SCALE=0.08: the test command's run, which
//! checks answers and the bound, not figures).
//!
//! Exits non-zero on a wrong answer: a request decided by the local
//! fallback (Redis is up throughout, so that is a limiter failure), or an
//! excess above the documented bound (the instances' caps, 2% of the limit,
//! plus 2 requests for window edges: the one limiter and the cluster may
//! place a refill unit on either side of a window's edge).

use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis::limit::cluster::{ClusterLimiter, Counted};
use portcullis::limit::lease::max_lease;
use portcullis::store::redis::RedisStore;

const INSTANCES: usize = 3;
const KEY_BASE: u64 = 0x5eed_0000;

/// A phase: for `secs`, instance i is offered `rates[i]` requests a second
/// (`None`: as fast as it answers, 16 at a time, pausing 1 ms after a
/// batch with a refusal; `Some(0.0)`: nothing).
struct Phase {
    secs: f64,
    rates: [Option<f64>; INSTANCES],
}

struct Scenario {
    name: &'static str,
    phases: Vec<Phase>,
    /// The phases measured (indices), the earlier ones set the stage.
    measured_from: usize,
    /// Instance dropped (with its lease) after this phase, if any.
    kill_after: Option<(usize, usize)>,
}

#[derive(Clone, Copy)]
struct Arrival {
    at: f64,
    admitted: bool,
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    std::process::exit(rt.block_on(run()));
}

async fn run() -> i32 {
    let limit: u32 = std::env::var("LIMIT").ok().and_then(|v| v.parse().ok()).unwrap_or(6000);
    let smoke = std::env::var("SMOKE").is_ok_and(|v| v == "1");
    let scale: f64 = std::env::var("SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if smoke { 0.08 } else { 1.0 });
    let per_s = f64::from(limit) / 60.0;
    let even = |x: f64| [Some(x * per_s / 3.0); INSTANCES];
    let flood = [None; INSTANCES];
    let scenarios = [
        Scenario {
            name: "steady, even (1.5 x the limit)",
            phases: vec![
                Phase { secs: 3.0, rates: flood },
                Phase {
                    secs: 60.0,
                    rates: even(1.5),
                },
            ],
            measured_from: 1,
            kill_after: None,
        },
        Scenario {
            name: "steady, skewed 70/20/10 (1.5 x the limit)",
            phases: vec![
                Phase { secs: 3.0, rates: flood },
                Phase {
                    secs: 60.0,
                    rates: [Some(1.05 * per_s), Some(0.3 * per_s), Some(0.15 * per_s)],
                },
            ],
            measured_from: 1,
            kill_after: None,
        },
        Scenario {
            name: "burst after 10 s at 0.8 x the limit",
            phases: vec![
                Phase {
                    secs: 10.0,
                    rates: even(0.8),
                },
                Phase {
                    secs: 1.0,
                    rates: [Some(0.0); INSTANCES],
                },
                Phase { secs: 3.0, rates: flood },
            ],
            measured_from: 0,
            kill_after: None,
        },
        Scenario {
            name: "instance killed (1.5 x the limit)",
            phases: vec![
                Phase { secs: 3.0, rates: flood },
                Phase {
                    secs: 10.0,
                    rates: even(1.5),
                },
                Phase {
                    secs: 20.0,
                    rates: [Some(0.75 * per_s), Some(0.75 * per_s), Some(0.0)],
                },
            ],
            measured_from: 1,
            kill_after: Some((2, 1)),
        },
    ];

    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut redis = std::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--dir"])
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server");
    let url = format!("redis://127.0.0.1:{port}/0");
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut rc = loop {
        if let Ok(c) = client.get_multiplexed_async_connection().await {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    let cap = max_lease(limit, INSTANCES as u32);
    let bound = f64::from(cap) * INSTANCES as f64 + 2.0;
    println!(
        "## Cluster limiter: over-admission with {INSTANCES} instances (limit {limit}/min, lease cap {cap} per instance, scale {scale})\n"
    );
    println!(
        "| scenario | requests | admitted (cluster) | admitted (one limiter) | max excess in a 60 s window | % of limit | bound | script calls per request |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut failures = Vec::new();
    for (n, sc) in scenarios.iter().enumerate() {
        let key = KEY_BASE + n as u64;
        let mut limiters = Vec::new();
        for _ in 0..INSTANCES {
            let l = ClusterLimiter::new(RedisStore::connect(&url, Duration::from_secs(2)).await.unwrap());
            l.assume_instances(INSTANCES as u32);
            limiters.push(Arc::new(l));
        }
        let before = script_calls(&mut rc).await;
        let start = Instant::now();
        let total_secs: f64 = sc.phases.iter().map(|p| p.secs * scale).sum();
        let mut tasks = Vec::new();
        for (i, l) in limiters.drain(..).enumerate() {
            let schedule: Vec<(f64, f64, Option<f64>)> = {
                let mut t = 0.0;
                sc.phases
                    .iter()
                    .map(|p| {
                        let s = t;
                        t += p.secs * scale;
                        (s, t, p.rates[i])
                    })
                    .collect()
            };
            let dies_at = sc.kill_after.filter(|(k, _)| *k == i).map(|(_, after)| schedule[after].1);
            tasks.push(tokio::spawn(drive(l, key, limit, start, schedule, dies_at)));
        }
        let mut arrivals = Vec::new();
        let mut fallbacks = 0;
        for t in tasks {
            let (a, f) = t.await.unwrap();
            arrivals.extend(a);
            fallbacks += f;
        }
        let calls = script_calls(&mut rc).await - before;
        arrivals.sort_by(|a, b| a.at.total_cmp(&b.at));
        let ideal = one_limiter(&arrivals, limit);
        let from: f64 = sc.phases[..sc.measured_from].iter().map(|p| p.secs * scale).sum();
        let (excess, cluster_n, ideal_n) = max_excess(&arrivals, &ideal, from, total_secs);
        println!(
            "| {} | {} | {} | {} | {} | {:.2}% | {} ({:.0}%) | {:.4} |",
            sc.name,
            arrivals.len(),
            cluster_n,
            ideal_n,
            excess,
            100.0 * excess as f64 / f64::from(limit),
            bound,
            100.0 * f64::from(cap) * INSTANCES as f64 / f64::from(limit),
            calls as f64 / arrivals.len().max(1) as f64
        );
        if fallbacks > 0 {
            failures.push(format!(
                "{}: {fallbacks} requests decided by the local fallback with Redis up",
                sc.name
            ));
        }
        if excess as f64 > bound {
            failures.push(format!("{}: excess {excess} above the bound {bound}", sc.name));
        }
    }
    println!(
        "\nexcess: the most requests the cluster admitted beyond one exact GCRA fed the same arrivals, over any 60 s window of the measured phases (the whole of them when shorter); bound: {INSTANCES} x the lease cap + 2 (window edges)."
    );
    let _ = redis.kill();
    let _ = redis.wait();
    if failures.is_empty() {
        0
    } else {
        eprintln!("WRONG ANSWERS:\n  {}", failures.join("\n  "));
        1
    }
}

/// Offers requests to one instance on its schedule; the arrivals and how many
/// the fallback decided. Drops the limiter (its lease with it) at `dies_at`.
async fn drive(
    l: Arc<ClusterLimiter>,
    key: u64,
    limit: u32,
    start: Instant,
    schedule: Vec<(f64, f64, Option<f64>)>,
    dies_at: Option<f64>,
) -> (Vec<Arrival>, usize) {
    let mut out = Vec::new();
    let mut fallbacks = 0;
    let tick = 0.005;
    for (from, to, rate) in schedule {
        if dies_at.is_some_and(|d| from >= d) {
            break;
        }
        let mut owed = 0.0;
        loop {
            let now = start.elapsed().as_secs_f64();
            if now >= to {
                break;
            }
            let batch = match rate {
                None => 16,
                Some(r) => {
                    owed += r * tick;
                    let n = owed.floor();
                    owed -= n;
                    n as usize
                }
            };
            let at = start.elapsed().as_secs_f64();
            let verdicts = futures_util::future::join_all((0..batch).map(|_| l.check(key, limit))).await;
            let mut refused = false;
            for (counted, v) in verdicts {
                fallbacks += usize::from(counted == Counted::LocalFallback);
                refused |= v.is_err();
                out.push(Arrival { at, admitted: v.is_ok() });
            }
            if rate.is_none() && refused {
                // Flooding a refusing limiter measures nothing new (cached
                // refusals cost no Redis call) and would record millions.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            if rate.is_some() {
                // Paced: the next tick (not drifting with the batch's time).
                let next = ((now - from) / tick).floor() * tick + tick + from;
                let wait = next - start.elapsed().as_secs_f64();
                if wait > 0.0 {
                    tokio::time::sleep(Duration::from_secs_f64(wait)).await;
                }
            }
        }
    }
    drop(l);
    (out, fallbacks)
}

/// What one exact GCRA (burst = limit, a minute to refill) admits of the
/// same arrivals, in order.
fn one_limiter(arrivals: &[Arrival], limit: u32) -> Vec<bool> {
    let interval = 60.0 / f64::from(limit);
    let mut tat = f64::MIN;
    arrivals
        .iter()
        .map(|a| {
            let t = tat.max(a.at);
            if t + interval - a.at <= 60.0 + 1e-9 {
                tat = t + interval;
                true
            } else {
                false
            }
        })
        .collect()
}

/// Largest `cluster − one limiter` over 60 s windows inside `[from, to]`
/// (stepped by 100 ms; one window when shorter), and the totals there.
fn max_excess(arrivals: &[Arrival], ideal: &[bool], from: f64, to: f64) -> (i64, usize, usize) {
    let count = |a: f64, b: f64| {
        let mut c = 0i64;
        let mut i = 0i64;
        for (x, one) in arrivals.iter().zip(ideal) {
            if x.at >= a && x.at < b {
                c += i64::from(x.admitted);
                i += i64::from(*one);
            }
        }
        (c, i)
    };
    let (c, i) = count(from, to + 1.0);
    let mut worst = c - i;
    let mut s = from;
    while s + 60.0 <= to {
        let (c, i) = count(s, s + 60.0);
        worst = worst.max(c - i);
        s += 0.1;
    }
    (worst, c as usize, i as usize)
}

async fn script_calls(rc: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query_async(rc).await.unwrap();
    info.lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .filter_map(|l| l.split("calls=").nth(1)?.split(',').next()?.parse::<u64>().ok())
        .sum()
}
