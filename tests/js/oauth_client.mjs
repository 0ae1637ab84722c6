// The TypeScript SDK's own OAuth client (an OAuthClientProvider given to
// StreamableHTTPClientTransport) against the gateway's authorization server,
// given only the workspace URL. The "browser" is fetch carrying a member's
// session cookie: it opens the authorization URL, reads the consent form and
// posts Allow, as tests/py/test_oauth.py's chromium does for the Python SDK.
// Prints one JSON line: what it saw.
//
//   node oauth_client.mjs --url <ws url> --cookie portcullis_member=… --wait-ms 4000
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { UnauthorizedError } from "@modelcontextprotocol/sdk/client/auth.js";

const arg = (name) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : undefined;
};
const url = new URL(arg("url"));
const cookie = arg("cookie");
const waitMs = Number(arg("wait-ms") ?? "0");
const redirectUrl = "http://127.0.0.1:53999/callback";

const seen = { tokens: [] };
let pendingCode;

const provider = {
  get redirectUrl() { return redirectUrl; },
  get clientMetadata() {
    return { client_name: "TypeScript SDK test", redirect_uris: [redirectUrl], grant_types: ["authorization_code", "refresh_token"], response_types: ["code"], token_endpoint_auth_method: "none" };
  },
  _client: undefined, _tokens: undefined, _verifier: undefined,
  clientInformation() { return this._client; },
  saveClientInformation(c) { this._client = c; },
  tokens() { return this._tokens; },
  saveTokens(t) { this._tokens = t; seen.tokens.push({ access: t.access_token.slice(0, 4), refresh: t.refresh_token?.slice(0, 4), a: t.access_token, r: t.refresh_token }); },
  saveCodeVerifier(v) { this._verifier = v; },
  codeVerifier() { return this._verifier; },
  async redirectToAuthorization(authorizationUrl) {
    // The person's browser: the consent page, then Allow.
    const page = await fetch(authorizationUrl, { headers: { cookie }, redirect: "manual" });
    const html = await page.text();
    seen.consentStatus = page.status;
    const field = (n) => html.split(`name="${n}" value="`)[1]?.split('"')[0];
    seen.client = html.split('data-testid="consent-client">')[1]?.split("<")[0];
    const body = new URLSearchParams({ request: field("request"), sig: field("sig"), decision: "allow" });
    for (const m of html.matchAll(/name="(server_[^"]+)"/g)) body.set(m[1], "on");
    const origin = `${authorizationUrl.protocol}//${authorizationUrl.host}`;
    const r = await fetch(new URL("/oauth/authorize", authorizationUrl), {
      method: "POST", body, redirect: "manual",
      headers: { cookie, origin, "sec-fetch-site": "same-origin", "content-type": "application/x-www-form-urlencoded" },
    });
    const loc = new URL(r.headers.get("location"));
    seen.iss = loc.searchParams.get("iss");
    pendingCode = loc.searchParams.get("code");
  },
};

const connect = async () => {
  const transport = new StreamableHTTPClientTransport(url, { authProvider: provider });
  const client = new Client({ name: "ts-oauth-test", version: "1.0.0" });
  try {
    await client.connect(transport);
  } catch (e) {
    if (!(e instanceof UnauthorizedError) || !pendingCode) throw e;
    seen.unauthorizedFirst = true;
    await transport.finishAuth(pendingCode);
    return connect();
  }
  return client;
};

try {
  const client = await connect();
  seen.tools = (await client.listTools()).tools.map((t) => t.name);
  seen.echo1 = (await client.callTool({ name: "echo", arguments: { text: "ts via oauth" } })).content?.[0]?.text;
  if (waitMs > 0) {
    await new Promise((r) => setTimeout(r, waitMs));
    seen.echo2 = (await client.callTool({ name: "echo", arguments: { text: "ts after refresh" } })).content?.[0]?.text;
  }
  await client.close();
  seen.ok = true;
} catch (e) {
  seen.ok = false;
  seen.error = String(e?.stack ?? e);
}
console.log(JSON.stringify(seen));
