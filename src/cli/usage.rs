//! `portcullis workspace usage WS`: a workspace's usage through the admin
//! API (`GET /v1/workspaces/{ws}/usage`), summed per token, member, server
//! or tool over the range for people, or the API's buckets with `--json`.

use std::collections::BTreeMap;

use clap::Args;
use http::Method;

use super::client::ApiClient;
use super::{CliError, CliResult, output};

#[derive(Args)]
pub struct UsageArgs {
    /// Workspace slug.
    pub workspace: String,
    /// How far back: 24h, 30m, 7d, 2w or seconds.
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = super::duration::parse_duration)]
    pub since: u64,
    /// What to group by.
    #[arg(long, value_name = "DIMENSION", default_value = "member", value_parser = ["member", "token", "server", "tool"])]
    pub by: String,
    /// Bucket width (default: minute up to 48 hours back, else hour).
    #[arg(long, value_parser = ["minute", "hour", "day"])]
    pub bucket: Option<String>,
    /// Print the API's answer (every bucket) as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(client: &ApiClient, args: UsageArgs) -> CliResult {
    if args.since == 0 {
        return Err(CliError::usage("--since must be longer than 0 s, e.g. 24h"));
    }
    let ws = super::client::seg(&args.workspace)?;
    let now = crate::token::now_unix();
    let from = crate::token::format_rfc3339(now.saturating_sub(args.since as i64));
    // Minute buckets follow `--since` exactly; hour buckets start on the hour.
    let bucket = args
        .bucket
        .clone()
        .unwrap_or_else(|| if args.since <= 48 * 3600 { "minute" } else { "hour" }.into());
    let path = format!("/v1/workspaces/{ws}/usage?from={from}&bucket={bucket}&group_by={}", args.by);
    let (_, v) = client.expect(Method::GET, &path, None).await?;
    if args.json {
        output::json(&v);
        return Ok(());
    }
    // Totals per key over the range, most requests first.
    let mut totals: BTreeMap<String, [u64; 3]> = BTreeMap::new();
    for b in v["buckets"].as_array().into_iter().flatten() {
        let t = totals.entry(output::cell(&b["key"])).or_default();
        for (i, f) in ["requests", "errors", "rate_limited"].iter().enumerate() {
            t[i] += b[*f].as_u64().unwrap_or(0);
        }
    }
    let mut rows: Vec<(String, [u64; 3])> = totals.into_iter().collect();
    rows.sort_by(|a, b| b.1[0].cmp(&a.1[0]).then_with(|| a.0.cmp(&b.0)));
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .map(|(k, [r, e, l])| vec![k, r.to_string(), e.to_string(), l.to_string()])
        .collect();
    if rows.is_empty() {
        println!("No requests in workspace {ws} since {from}.");
        return Ok(());
    }
    let head = args.by.to_uppercase();
    output::table(&[&head, "REQUESTS", "ERRORS", "RATE LIMITED"], &rows);
    let folded = v["folded"].as_u64().unwrap_or(0);
    if folded > 0 {
        println!("\n{folded} request(s) are counted under \"other\" (beyond the [usage] cardinality limits).");
    }
    println!("\nSince {from}; \"-\" means no {} applies (see docs/cli.md).", args.by);
    Ok(())
}
