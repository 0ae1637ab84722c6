// Type-checked, never run: the README's example and the contract's names
// (docs/contract.md §10) must compile against the published declarations
// (dist/index.d.ts). `npm run typecheck` (tests/py/test_ts_sdk.py runs it).

import { Portcullis, PortcullisError, PortcullisNetworkError } from "../dist/index.js";
import type { AuditEvent, CreatedToken, SelfCheck, TokenInfo, UsageBucket } from "../dist/index.js";

declare const process: { env: Record<string, string | undefined> };

export async function example(): Promise<void> {
  const client = new Portcullis({ adminUrl: "http://127.0.0.1:9090", adminToken: process.env.PORTCULLIS_ADMIN_TOKEN, workspace: "demo" });
  const { token, info, mcpJson }: CreatedToken = await client.createToken({ name: "alice-laptop", expiresIn: 30 * 86400 });
  const id: string = info.external_id;
  const url: string = mcpJson.mcpServers["demo"].url;
  const self: SelfCheck = await client.validateToken(token);
  const again: TokenInfo = await client.getToken(self.id);
  const page = await client.listTokens({ pageSize: 10, cursor: undefined });
  const next: string | null = page.nextCursor;
  await client.createToken({ name: "ci", memberId: "m-1", servers: ["main"], requestsPerMinute: 60 });
  const revoked: TokenInfo = await client.revokeToken(id);
  const buckets: UsageBucket[] = (await client.usage({ from: new Date(), to: "2026-01-01T00:00:00Z", bucket: "hour", groupBy: "tool" })).buckets;
  const events: AuditEvent[] = (await client.audit({ type: "token_created", tokenId: id, memberId: "m-1", pageSize: 5 })).events;
  for await (const t of client.allTokens()) void t.status;
  try {
    await client.validateToken(token);
  } catch (e) {
    if (e instanceof PortcullisError) void [e.status, e.code, e.message];
    if (e instanceof PortcullisNetworkError) void e.cause;
  }
  void [url, again, next, revoked, buckets, events];
  // @ts-expect-error: `servers` is a list of names
  await client.createToken({ name: "x", servers: "main" });
  // @ts-expect-error: no such bucket
  await client.usage({ bucket: "week" });
}
