// Summarise @modelcontextprotocol/conformance server results (one `-o DIR` per run) side by side.
//
//   node summarize.mjs [--markdown] LABEL=DIR [LABEL=DIR ...]
//
// A scenario's verdict in a run: "pass" (no FAILURE check), "FAIL" (at least one FAILURE),
// "-" (not run). WARNING checks are counted but do not fail a scenario, as in the suite.
// Exit status 3 when a scenario passes in the first run of a pair and fails in the second
// (pairs are LABEL/direct and LABEL/gateway for the same upstream): that is a failure the
// gateway (or the nginx hop in front of it) introduced. A run labelled LABEL/aggregate (the
// aggregating workspace) is compared with reference/direct instead; a scenario that fails there
// only counts when it is not listed, with its reason, in multi-by-design.txt.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const argv = process.argv.slice(2);
const markdown = argv.includes("--markdown");
const runs = argv.filter((a) => a.includes("=")).map((a) => {
  const i = a.indexOf("=");
  return { label: a.slice(0, i), dir: a.slice(i + 1) };
});

function load(dir) {
  const out = new Map();
  if (!fs.existsSync(dir)) return out;
  // Directory names end in the scenario's start time: sorting on it gives the suite's order.
  const stamp = (e) => e.slice(-24);
  const ents = fs.readdirSync(dir).sort((a, b) => (stamp(a) < stamp(b) ? -1 : stamp(a) > stamp(b) ? 1 : 0));
  for (const ent of ents) {
    const m = /^server-(.+)-\d{4}-\d\d-\d\dT[\d-]+Z$/.exec(ent);
    const f = path.join(dir, ent, "checks.json");
    if (!m || !fs.existsSync(f)) continue;
    const checks = JSON.parse(fs.readFileSync(f, "utf8"));
    const count = (s) => checks.filter((c) => c.status === s).length;
    const failures = checks.filter((c) => c.status === "FAILURE").map((c) => `${c.id}: ${c.errorMessage ?? c.description}`);
    const warnings = checks.filter((c) => c.status === "WARNING").map((c) => `${c.id}: ${c.errorMessage ?? c.description}`);
    out.set(m[1], { pass: count("SUCCESS"), fail: count("FAILURE"), warn: count("WARNING"), failures, warnings });
  }
  return out;
}

const data = runs.map((r) => ({ ...r, res: load(r.dir) }));
const scenarios = [];
for (const d of data) for (const s of d.res.keys()) if (!scenarios.includes(s)) scenarios.push(s);

const cell = (r) => {
  if (!r) return "-";
  const v = r.fail > 0 ? "FAIL" : "pass";
  return `${v} ${r.pass}/${r.pass + r.fail}${r.warn ? ` (${r.warn}w)` : ""}`;
};

// Expected failures of the aggregating workspace: "scenario  reason" per line.
const byDesign = new Map();
const designFile = path.join(path.dirname(fileURLToPath(import.meta.url)), "multi-by-design.txt");
if (fs.existsSync(designFile)) {
  for (const line of fs.readFileSync(designFile, "utf8").split("\n")) {
    const m = /^([a-z0-9-]+)\s+(.*)$/.exec(line.trim());
    if (m && !line.startsWith("#")) byDesign.set(m[1], m[2]);
  }
}
const aggregates = data.filter((d) => d.label.endsWith("/aggregate"));
const aggBase = data.find((x) => x.label === "reference/direct");
// Classification of a scenario through the aggregating workspace, next to the reference direct.
const classify = (s) => {
  const a = aggBase?.res.get(s), r = aggregates[0]?.res.get(s);
  if (!a || !r) return "-";
  if (r.fail === 0) {
    if (a.fail > 0) return "passes only via multi";
    return r.pass === 0 && a.pass > 0 ? "pass, vacuous (no checks ran)" : "same";
  }
  if (a.fail > 0) return "(b) fails directly too";
  return byDesign.has(s) ? "(a) by design" : "(c) GATEWAY";
};

const header = ["scenario", ...data.map((d) => d.label), ...(aggregates.length && aggBase ? ["aggregate vs direct"] : [])];
const rows = scenarios.map((s) => [s, ...data.map((d) => cell(d.res.get(s))), ...(aggregates.length && aggBase ? [classify(s)] : [])]);
if (markdown) {
  console.log(`| ${header.join(" | ")} |`);
  console.log(`|${header.map(() => "---").join("|")}|`);
  for (const r of rows) console.log(`| ${r.join(" | ")} |`);
} else {
  const w = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r) => r.map((c, i) => c.padEnd(w[i])).join("  ");
  console.log(line(header));
  console.log(line(w.map((n) => "-".repeat(n))));
  for (const r of rows) console.log(line(r));
}

const totals = data.map((d) => {
  let p = 0, f = 0;
  for (const r of d.res.values()) (r.fail > 0 ? f++ : p++);
  return `${d.label}: ${p} passed, ${f} failed`;
});
console.log("");
for (const t of totals) console.log(t);

// Failure details per run.
console.log("");
for (const d of data) {
  const lines = [];
  for (const [s, r] of d.res) for (const f of r.failures) lines.push(`  ${s} :: ${f}`);
  if (lines.length) console.log(`failures in ${d.label}:\n${lines.join("\n")}`);
}

// Regressions: passes directly, fails through the gateway.
let regressions = 0;
for (const d of data) {
  if (!d.label.endsWith("/gateway")) continue;
  const base = data.find((x) => x.label === d.label.replace(/\/gateway$/, "/direct"));
  if (!base) continue;
  for (const s of scenarios) {
    const a = base.res.get(s), b = d.res.get(s);
    if (a && a.fail === 0 && (!b || b.fail > 0)) {
      regressions++;
      console.log(`GATEWAY REGRESSION ${d.label} ${s}: ${(b?.failures ?? ["not run"]).join("; ")}`);
    }
  }
}
// The aggregating workspace against the reference server directly.
for (const d of aggregates) {
  if (!aggBase) break;
  for (const s of scenarios) {
    const a = aggBase.res.get(s), b = d.res.get(s);
    if (!a || a.fail > 0) continue;
    if (b && b.fail === 0) {
      if (byDesign.has(s)) console.log(`note ${d.label} ${s}: listed in multi-by-design.txt but passes`);
      continue;
    }
    if (b && byDesign.has(s)) {
      console.log(`by design ${d.label} ${s}: ${byDesign.get(s)}`);
    } else {
      regressions++;
      console.log(`GATEWAY REGRESSION ${d.label} ${s}: ${(b?.failures ?? ["not run"]).join("; ")}`);
    }
  }
}
console.log(regressions ? `${regressions} scenario(s) pass directly but fail through the gateway` : "no scenario fails through the gateway that passes directly (by-design failures of the aggregating workspace aside)");
process.exit(regressions ? 3 : 0);
