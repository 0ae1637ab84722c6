// The shapes of the admin API's answers (docs/contract.md §4 and §10), as
// the gateway sends them: record fields keep the API's snake_case, so a
// record printed by the SDK reads like one printed by `curl` or the CLI.
// The authoritative description is the gateway's own GET /v1/openapi.json.

export type TokenKind = "workspace" | "admin";
export type TokenStatus = "active" | "revoked" | "expired";

/** A token's record. Never holds the raw token. Timestamps are RFC 3339 UTC. */
export interface TokenInfo {
  /** Public token id, `tkn_…`. */
  id: string;
  /** The same `tkn_…` id, under the name the contract's SDKs share (added by the SDK). */
  external_id: string;
  name: string;
  /** `null` for a global admin token. */
  workspace: string | null;
  kind: TokenKind;
  status: TokenStatus;
  /** Prefix and first 4 random characters, e.g. `mwt_Ab3d…`. */
  hint: string;
  member_id: string | null;
  email: string | null;
  created_at: string;
  /** Admin token id that created it, or `bootstrap`. */
  created_by: string;
  expires_at: string | null;
  revoked_at: string | null;
  /** At most 60 s behind: the gateway writes it in batches. */
  last_used_at: string | null;
  /** `null` = every server of the workspace. */
  allowed_servers: string[] | null;
  requests_per_minute: number | null;
}

/** A ready-to-paste MCP client configuration for one token. */
export interface McpJson {
  mcpServers: Record<string, { url: string; headers: Record<string, string> }>;
}

export interface CreateTokenInput {
  /** 1-200 printable characters. */
  name: string;
  /** Lifetime in seconds; 0 or absent = never expires. */
  expiresIn?: number;
  /** Who the token belongs to: a member id or an email, not both. */
  memberId?: string;
  email?: string;
  /** Servers of the workspace the token may use; absent = all. */
  servers?: string[];
  /** Per-token rate limit; absent = the workspace's. */
  requestsPerMinute?: number;
}

export interface CreatedToken {
  /** The raw `mwt_…` token: shown this once, never retrievable again. */
  token: string;
  info: TokenInfo;
  mcpJson: McpJson;
}

export interface Page {
  pageSize?: number;
  /** `nextCursor` of the previous page. */
  cursor?: string;
}

export interface TokenPage {
  /** Newest first; revoked and expired tokens included. */
  tokens: TokenInfo[];
  /** `null` on the last page. */
  nextCursor: string | null;
}

/** The answer of `GET /v1/tokens/self` for a valid token. */
export interface SelfCheck {
  valid: true;
  id: string;
  name: string;
  kind: TokenKind;
  workspace: string | null;
  expires_at: string | null;
}

/** A time bound: a `Date`, or an RFC 3339 string passed as is. */
export type Instant = Date | string;

export interface UsageQuery {
  /** Default: `to` minus 24 hours. */
  from?: Instant;
  /** Default: now. */
  to?: Instant;
  /** Default `hour`. */
  bucket?: "minute" | "hour" | "day";
  /** Default `member`. */
  groupBy?: "token" | "member" | "server" | "tool";
}

export interface UsageBucket {
  /** Start of the bucket, RFC 3339 UTC. */
  start: string;
  /** The token id, member, server or tool (per `groupBy`); `"other"` for
   * values folded past the gateway's bound; `null` where it does not apply
   * (a request with no member, or refused before a server or tool was known). */
  key: string | null;
  requests: number;
  errors: number;
  rate_limited: number;
}

export interface Usage {
  buckets: UsageBucket[];
  /** Requests counted under the key `other` because the gateway's bound on distinct keys was reached. */
  folded: number;
}

/** The event types of contract §10 (`token_rolled` and `config_reloaded` are reserved). */
export type AuditEventType =
  | "token_created"
  | "token_revoked"
  | "token_rolled"
  | "admin_token_created"
  | "signin"
  | "signout"
  | "config_reloaded"
  | "tool_call"
  | "revoked_token_refused"
  | "member_added"
  | "member_removed"
  | "invite_created"
  | "grant_created"
  | "consent_denied"
  | "oauth_tokens_issued"
  | "grant_revoked";

export interface AuditQuery extends Page {
  from?: Instant;
  to?: Instant;
  type?: AuditEventType;
  tokenId?: string;
  memberId?: string;
}

export interface AuditEvent {
  id: string;
  at: string;
  type: AuditEventType;
  actor: string | null;
  workspace: string | null;
  token_id: string | null;
  /** The token's name at the time of the event. */
  token_name: string | null;
  member_id: string | null;
  server: string | null;
  tool: string | null;
  method: string | null;
  /** HTTP status of a data-plane request. */
  status: number | null;
  duration_ms: number | null;
  request_id: string | null;
}

export interface AuditPage {
  events: AuditEvent[];
  nextCursor: string | null;
}

export interface WorkspaceInfo {
  slug: string;
  url: string;
  requests_per_minute: number;
  servers: { name: string; url: string; timeout_ms: number }[];
}
