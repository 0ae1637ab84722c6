// The SDK against a real running gateway (tests/py/test_ts_sdk.py starts
// one and runs `node --test` here with its addresses in the environment):
//   PORTCULLIS_ADMIN_URL, PORTCULLIS_ADMIN_TOKEN  the admin listener and a global admin token
//   PORTCULLIS_TEST_WORKSPACE                     a configured workspace (default "demo")
// Error cases that need a misbehaving server use small node:http servers
// on loopback. No mocks.

import assert from "node:assert/strict";
import http from "node:http";
import { once } from "node:events";
import { inspect } from "node:util";
import { before, describe, test } from "node:test";

import { Portcullis, PortcullisError, PortcullisNetworkError } from "../dist/index.js";

const adminUrl = process.env.PORTCULLIS_ADMIN_URL;
const adminToken = process.env.PORTCULLIS_ADMIN_TOKEN;
const workspace = process.env.PORTCULLIS_TEST_WORKSPACE || "demo";
if (!adminUrl || !adminToken) {
  throw new Error("set PORTCULLIS_ADMIN_URL and PORTCULLIS_ADMIN_TOKEN (tests/py/test_ts_sdk.py does)");
}
const client = new Portcullis({ adminUrl, adminToken, workspace });

/** The PortcullisError a promise rejects with (fails if it resolves or throws something else). */
async function rejection(promise) {
  try {
    await promise;
  } catch (e) {
    if (e instanceof PortcullisError) return e;
    throw e;
  }
  assert.fail("expected a PortcullisError");
}

/** A loopback HTTP server answering with `handler`; closed with `close()`. */
async function server(handler) {
  const s = http.createServer(handler);
  s.listen(0, "127.0.0.1");
  await once(s, "listening");
  return {
    url: `http://127.0.0.1:${s.address().port}`,
    close: () => {
      s.closeAllConnections();
      s.close();
    },
  };
}


describe("tokens", () => {
  let server0;
  before(async () => {
    const ws = (await client.listWorkspaces()).find((w) => w.slug === workspace);
    assert.ok(ws, `workspace ${workspace} is configured`);
    server0 = ws.servers[0].name;
  });

  test("create, get, list, validate, revoke, then 401 on validate", async () => {
    const created = await client.createToken({ name: "sdk-one", expiresIn: 3600, email: "sdk@example.com", servers: [server0] });
    assert.match(created.token, /^mwt_[0-9A-Za-z]{36}$/);
    const { info } = created;
    assert.match(info.id, /^tkn_[0-9A-Za-z]+$/);
    assert.equal(info.external_id, info.id, "info.external_id is the tkn_ id");
    assert.equal(info.name, "sdk-one");
    assert.equal(info.workspace, workspace);
    assert.equal(info.kind, "workspace");
    assert.equal(info.status, "active");
    assert.equal(info.email, "sdk@example.com");
    assert.deepEqual(info.allowed_servers, [server0]);
    assert.equal(info.hint, `${created.token.slice(0, 8)}…`);
    assert.ok(Date.parse(info.expires_at) > Date.now());
    assert.equal(info.revoked_at, null);
    const entry = created.mcpJson.mcpServers[workspace];
    assert.ok(entry.url.endsWith(`/ws/${workspace}`), entry.url);
    assert.deepEqual(entry.headers, { Authorization: `Bearer ${created.token}` });

    const self = await client.validateToken(created.token);
    assert.deepEqual(self, {
      valid: true,
      id: info.id,
      name: "sdk-one",
      kind: "workspace",
      workspace,
      expires_at: info.expires_at,
    });

    const got = await client.getToken(info.id);
    assert.deepEqual(got, info, "get answers the record create answered");
    assert.ok(!JSON.stringify(got).includes(created.token.slice(4)), "never the raw token again");

    const revoked = await client.revokeToken(info.id);
    assert.equal(revoked.status, "revoked");
    assert.equal(revoked.external_id, info.id);
    assert.ok(Date.parse(revoked.revoked_at) <= Date.now() + 1000);
    const again = await client.revokeToken(info.id);
    assert.equal(again.revoked_at, revoked.revoked_at, "revoking twice is not an error and keeps the first time");

    const e = await rejection(client.validateToken(created.token));
    assert.equal(e.status, 401);
    assert.equal(e.code, "unauthorized");
    assert.ok(!e.message.includes(created.token) && !String(e.stack).includes(created.token));
  });

  test("list pages newest first with a cursor, and allTokens walks every page", async () => {
    const a = await client.createToken({ name: "sdk-page-a", memberId: "member-7" });
    const b = await client.createToken({ name: "sdk-page-b" });
    const first = await client.listTokens({ pageSize: 1 });
    assert.equal(first.tokens.length, 1);
    assert.equal(first.tokens[0].id, b.info.id, "newest first");
    assert.equal(first.tokens[0].external_id, b.info.id);
    assert.equal(typeof first.nextCursor, "string");
    const second = await client.listTokens({ pageSize: 1, cursor: first.nextCursor });
    assert.equal(second.tokens[0].id, a.info.id);
    assert.equal(second.tokens[0].member_id, "member-7");

    const seen = [];
    for await (const t of client.allTokens(2)) seen.push(t.id);
    assert.equal(new Set(seen).size, seen.length, "no token twice");
    assert.ok(seen.includes(a.info.id) && seen.includes(b.info.id));
    for (const t of (await client.listTokens()).tokens) assert.ok(!("token" in t));
  });

  test("validateToken() without an argument checks the admin token", async () => {
    const self = await client.validateToken();
    assert.equal(self.valid, true);
    assert.equal(self.kind, "admin");
    assert.match(self.id, /^tkn_/);
  });
});

describe("errors", () => {
  test("unknown token id: 404 token_not_found", async () => {
    const e = await rejection(client.getToken("tkn_doesnotexist0000"));
    assert.equal(e.status, 404);
    assert.equal(e.code, "token_not_found");
    assert.ok(e instanceof Error && e.name === "PortcullisError");
    const r = await rejection(client.revokeToken("tkn_doesnotexist0000"));
    assert.equal(r.status, 404);
  });

  test("unknown workspace: 404 workspace_not_found", async () => {
    const other = new Portcullis({ adminUrl, adminToken, workspace: "no-such-workspace" });
    const e = await rejection(other.listTokens());
    assert.deepEqual([e.status, e.code], [404, "workspace_not_found"]);
  });

  test("bad admin token: 401 unauthorized, and the token is in no message", async () => {
    const bad = `mwa_${"Z".repeat(36)}`;
    const other = new Portcullis({ adminUrl, adminToken: bad, workspace });
    const e = await rejection(other.listTokens());
    assert.deepEqual([e.status, e.code], [401, "unauthorized"]);
    assert.ok(!e.message.includes(bad) && !String(e.stack).includes(bad) && !inspect(e).includes(bad));
    // A workspace token is not an admin token either.
    const created = await client.createToken({ name: "sdk-not-admin" });
    const asWorkspace = new Portcullis({ adminUrl, adminToken: created.token, workspace });
    assert.equal((await rejection(asWorkspace.listTokens())).status, 401);
  });

  test("bad input: 400 bad_request and 422 invalid_field", async () => {
    const e400 = await rejection(client.listTokens({ pageSize: 0 }));
    assert.deepEqual([e400.status, e400.code], [400, "bad_request"]);
    const e400b = await rejection(client.listTokens({ cursor: "not-a-cursor" }));
    assert.equal(e400b.status, 400);
    const e422 = await rejection(client.createToken({ name: "" }));
    assert.deepEqual([e422.status, e422.code], [422, "invalid_field"]);
    const both = await rejection(client.createToken({ name: "x", memberId: "m", email: "a@b.example" }));
    assert.equal(both.status, 422);
    const server = await rejection(client.createToken({ name: "x", servers: ["no-such-server"] }));
    assert.equal(server.status, 422);
    assert.match(server.message, /no-such-server/);
  });

  test("unreachable gateway: PortcullisNetworkError, not PortcullisError", async () => {
    const s = await server(() => {});
    const url = s.url;
    s.close();
    const other = new Portcullis({ adminUrl: url, adminToken, workspace });
    await assert.rejects(other.listTokens(), (e) => {
      assert.ok(e instanceof PortcullisNetworkError && !(e instanceof PortcullisError));
      assert.match(e.message, /cannot reach the gateway/);
      assert.ok(e.cause, "the underlying error is kept as cause");
      assert.ok(!e.message.includes(adminToken));
      return true;
    });
  });

  test("no answer in time: PortcullisNetworkError naming the timeout", async () => {
    const s = await server(() => {}); // accepts, never answers
    try {
      const other = new Portcullis({ adminUrl: s.url, adminToken, workspace, timeoutMs: 200 });
      await assert.rejects(other.getToken("tkn_x"), (e) => e instanceof PortcullisNetworkError && /no answer within 200 ms/.test(e.message));
    } finally {
      s.close();
    }
  });

  test("an answer without the contract's error body: PortcullisError unexpected_response", async () => {
    const s = await server((_req, res) => {
      res.writeHead(502, { "content-type": "text/html" });
      res.end("<html>bad gateway</html>");
    });
    try {
      const other = new Portcullis({ adminUrl: s.url, adminToken, workspace });
      const e = await rejection(other.listTokens());
      assert.deepEqual([e.status, e.code], [502, "unexpected_response"]);
    } finally {
      s.close();
    }
  });

  test("the admin token is not printed with the client, and is required", () => {
    assert.ok(!inspect(client, { showHidden: true, depth: 5 }).includes(adminToken));
    assert.ok(!JSON.stringify(client).includes(adminToken));
    const saved = process.env.PORTCULLIS_ADMIN_TOKEN;
    delete process.env.PORTCULLIS_ADMIN_TOKEN;
    try {
      assert.throws(() => new Portcullis({ adminUrl, workspace }), TypeError);
    } finally {
      process.env.PORTCULLIS_ADMIN_TOKEN = saved;
    }
    const noWs = new Portcullis({ adminUrl, adminToken });
    return assert.rejects(noWs.listTokens(), TypeError);
  });
});

describe("usage and audit (contract §10)", () => {
  test("usage() answers buckets", async () => {
    const from = new Date(Date.now() - 3600_000);
    const u = await client.usage({ from, bucket: "minute", groupBy: "token" });
    assert.ok(Array.isArray(u.buckets));
    // tests/py/test_ts_sdk.py made requests with this token before the run
    // and waited for them to be flushed: they must be here.
    const used = process.env.PORTCULLIS_TEST_USED_TOKEN_ID;
    assert.ok(used, "PORTCULLIS_TEST_USED_TOKEN_ID is set by tests/py/test_ts_sdk.py");
    const mine = u.buckets.filter((b) => b.key === used);
    assert.ok(mine.reduce((n, b) => n + b.requests, 0) >= 2, `usage of ${used}: ${JSON.stringify(u.buckets)}`);
    // The API's defaults (hour buckets by member) answer too; keys are strings or null.
    const byMember = await client.usage();
    for (const b of byMember.buckets) assert.ok(b.key === null || typeof b.key === "string", JSON.stringify(b));
    assert.ok(byMember.buckets.every((b) => new Date(b.start).getUTCMinutes() === 0), "hour buckets by default");
    assert.equal(typeof u.folded, "number");
    for (const b of u.buckets) {
      for (const k of ["start", "key", "requests", "errors", "rate_limited"]) assert.ok(k in b, `bucket has ${k}`);
      assert.ok(Date.parse(b.start) >= from.getTime() - 60_000);
    }
    const bad = await rejection(client.usage({ bucket: "fortnight" }));
    assert.ok([400, 422].includes(bad.status), `bad bucket: ${bad.status}`);
  });

  test("audit() lists token_created and token_revoked for a token", async () => {
    const probe = await client.audit({ pageSize: 1 });
    assert.ok(Array.isArray(probe.events));
    assert.ok(probe.nextCursor === null || typeof probe.nextCursor === "string");
    const created = await client.createToken({ name: "sdk-audited" });
    await client.revokeToken(created.info.id);
    let events = [];
    for (let i = 0; i < 30 && events.length < 2; i++) {
      events = (await client.audit({ tokenId: created.info.id })).events;
      if (events.length < 2) await new Promise((r) => setTimeout(r, 100));
    }
    const types = events.map((e) => e.type);
    assert.ok(types.includes("token_created") && types.includes("token_revoked"), `events: ${types}`);
    for (const e of events) {
      assert.equal(e.token_id, created.info.id);
      assert.ok(!JSON.stringify(e).includes(created.token.slice(4)), "never a raw token");
    }
    const onlyCreated = await client.audit({ tokenId: created.info.id, type: "token_created" });
    assert.deepEqual(onlyCreated.events.map((e) => e.type), ["token_created"]);
  });
});
