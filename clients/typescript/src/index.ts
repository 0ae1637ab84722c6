// @portcullis/client: a thin client of the Portcullis admin API over the
// platform's `fetch` (Node 20+, browsers, Deno, Bun). One method per call
// of docs/contract.md §4 and §10; no dependencies; no logging at all, so a
// token can only leave through the request that needs it.

import { PortcullisError, PortcullisNetworkError } from "./errors.js";
import type {
  AuditPage,
  AuditQuery,
  CreateTokenInput,
  CreatedToken,
  Instant,
  McpJson,
  Page,
  SelfCheck,
  TokenInfo,
  TokenPage,
  Usage,
  UsageQuery,
  WorkspaceInfo,
} from "./types.js";

export { PortcullisError, PortcullisNetworkError } from "./errors.js";
export type * from "./types.js";

export interface PortcullisOptions {
  /** Admin listener, e.g. `http://127.0.0.1:9090`. Default: `PORTCULLIS_ADMIN_URL`, else that address. */
  adminUrl?: string;
  /** `mwa_…` admin token. Default: `PORTCULLIS_ADMIN_TOKEN`. */
  adminToken?: string;
  /** Workspace slug the token methods act on. */
  workspace?: string;
  /** Per-request timeout in milliseconds (default 30000); a timeout is a `PortcullisNetworkError`. */
  timeoutMs?: number;
  /** A `fetch` to use instead of the global one (e.g. with a proxy agent). */
  fetch?: typeof fetch;
}

type Query = Record<string, string | number | Instant | undefined>;

function env(name: string): string | undefined {
  // `process` exists in Node, Deno and Bun, not in browsers.
  const p = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process;
  return p?.env?.[name] || undefined;
}

/** The record as sent, plus `external_id` (the same `tkn_` id). */
function withExternalId(record: Omit<TokenInfo, "external_id">): TokenInfo {
  return { ...record, external_id: record.id };
}

export class Portcullis {
  readonly adminUrl: string;
  readonly workspace: string | undefined;
  // Private fields are invisible to console.log, util.inspect and JSON.stringify.
  readonly #adminToken: string;
  readonly #timeoutMs: number;
  readonly #fetch: typeof fetch;

  constructor(options: PortcullisOptions = {}) {
    const url = options.adminUrl ?? env("PORTCULLIS_ADMIN_URL") ?? "http://127.0.0.1:9090";
    this.adminUrl = url.replace(/\/+$/, "");
    const token = options.adminToken ?? env("PORTCULLIS_ADMIN_TOKEN");
    if (!token) {
      throw new TypeError("Portcullis: adminToken is required (or set PORTCULLIS_ADMIN_TOKEN)");
    }
    this.#adminToken = token;
    this.workspace = options.workspace;
    this.#timeoutMs = options.timeoutMs ?? 30_000;
    const f = options.fetch ?? globalThis.fetch;
    if (typeof f !== "function") {
      throw new TypeError("Portcullis: no fetch available (Node 20 or later has one)");
    }
    this.#fetch = f;
  }

  /** Creates a workspace token. The raw token is in the answer this once. */
  async createToken(input: CreateTokenInput): Promise<CreatedToken> {
    const body: Record<string, unknown> = { name: input.name };
    if (input.expiresIn !== undefined) body.expires_in = input.expiresIn;
    if (input.memberId !== undefined) body.member_id = input.memberId;
    if (input.email !== undefined) body.email = input.email;
    if (input.servers !== undefined) body.allowed_servers = input.servers;
    if (input.requestsPerMinute !== undefined) body.requests_per_minute = input.requestsPerMinute;
    const r = await this.#call<{ token: string; info: TokenInfo; mcp_json: McpJson }>("POST", this.#ws("tokens"), {
      body,
    });
    return { token: r.token, info: withExternalId(r.info), mcpJson: r.mcp_json };
  }

  /** One page of the workspace's tokens, newest first. */
  async listTokens(page: Page = {}): Promise<TokenPage> {
    const r = await this.#call<{ tokens: TokenInfo[]; next_cursor: string | null }>("GET", this.#ws("tokens"), {
      query: { page_size: page.pageSize, cursor: page.cursor },
    });
    return { tokens: r.tokens.map(withExternalId), nextCursor: r.next_cursor };
  }

  /** Every token of the workspace, page by page. */
  async *allTokens(pageSize = 200): AsyncGenerator<TokenInfo> {
    let cursor: string | undefined;
    do {
      const page = await this.listTokens({ pageSize, cursor });
      yield* page.tokens;
      cursor = page.nextCursor ?? undefined;
    } while (cursor);
  }

  async getToken(id: string): Promise<TokenInfo> {
    return withExternalId(await this.#call<TokenInfo>("GET", this.#ws("tokens", id)));
  }

  /** Revokes at once, on every instance; revoking twice is not an error. */
  async revokeToken(id: string): Promise<TokenInfo> {
    return withExternalId(await this.#call<TokenInfo>("DELETE", this.#ws("tokens", id)));
  }

  /** Checks `token` (a workspace or admin token), or the admin token itself.
   * An invalid, revoked or expired token throws a `PortcullisError` with
   * status 401. */
  async validateToken(token?: string): Promise<SelfCheck> {
    return this.#call<SelfCheck>("GET", "/v1/tokens/self", { token: token ?? this.#adminToken });
  }

  /** Request counts per time bucket (contract §10). */
  async usage(q: UsageQuery = {}): Promise<Usage> {
    return this.#call<Usage>("GET", this.#ws("usage"), {
      query: { from: q.from, to: q.to, bucket: q.bucket, group_by: q.groupBy },
    });
  }

  /** One page of the workspace's audit events (contract §10). */
  async audit(q: AuditQuery = {}): Promise<AuditPage> {
    const r = await this.#call<{ events: AuditPage["events"]; next_cursor: string | null }>("GET", this.#ws("audit"), {
      query: {
        from: q.from,
        to: q.to,
        type: q.type,
        token_id: q.tokenId,
        member_id: q.memberId,
        page_size: q.pageSize,
        cursor: q.cursor,
      },
    });
    return { events: r.events, nextCursor: r.next_cursor };
  }

  /** The workspaces this admin token may manage, with their servers. */
  async listWorkspaces(): Promise<WorkspaceInfo[]> {
    return (await this.#call<{ workspaces: WorkspaceInfo[] }>("GET", "/v1/workspaces")).workspaces;
  }

  #ws(...rest: string[]): string {
    if (!this.workspace) {
      throw new TypeError("Portcullis: this call needs `workspace` in the constructor's options");
    }
    return ["/v1/workspaces", this.workspace, ...rest].map((s, i) => (i === 0 ? s : encodeURIComponent(s))).join("/");
  }

  async #call<T>(method: string, path: string, opts: { query?: Query; body?: unknown; token?: string } = {}): Promise<T> {
    const url = new URL(this.adminUrl + path);
    for (const [k, v] of Object.entries(opts.query ?? {})) {
      if (v !== undefined && v !== "") url.searchParams.set(k, v instanceof Date ? v.toISOString() : String(v));
    }
    const headers: Record<string, string> = {
      authorization: `Bearer ${opts.token ?? this.#adminToken}`,
      accept: "application/json",
    };
    if (opts.body !== undefined) headers["content-type"] = "application/json";
    const what = `${method} ${url.pathname}`;
    let resp: Response;
    try {
      resp = await this.#fetch(url, {
        method,
        headers,
        body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
        signal: AbortSignal.timeout(this.#timeoutMs),
      });
    } catch (cause) {
      const why = cause instanceof Error && cause.name === "TimeoutError" ? `no answer within ${this.#timeoutMs} ms` : "cannot reach the gateway";
      throw new PortcullisNetworkError(`${what}: ${why} at ${this.adminUrl}`, { cause });
    }
    let text: string;
    try {
      text = await resp.text();
    } catch (cause) {
      throw new PortcullisNetworkError(`${what}: the connection broke while reading the answer`, { cause });
    }
    let json: unknown;
    try {
      json = text === "" ? undefined : JSON.parse(text);
    } catch {
      json = undefined;
    }
    if (!resp.ok) {
      const e = (json as { error?: { code?: unknown; message?: unknown } } | undefined)?.error;
      if (e && typeof e.code === "string" && typeof e.message === "string") {
        throw new PortcullisError(resp.status, e.code, e.message);
      }
      throw new PortcullisError(resp.status, "unexpected_response", `${what}: HTTP ${resp.status} without the gateway's error body`);
    }
    if (json === undefined) {
      throw new PortcullisError(resp.status, "unexpected_response", `${what}: HTTP ${resp.status} without a JSON body`);
    }
    return json as T;
  }
}

export default Portcullis;
