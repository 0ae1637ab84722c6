#!/usr/bin/env node
// A real MCP client built on the official TypeScript SDK (@modelcontextprotocol/sdk),
// used by tests/py/test_ts_client.py to drive the gateway.
//
//   PORTCULLIS_TOKEN=mwt_... node client.mjs --url http://127.0.0.1:8080/ws/demo \
//       --tool echo --args '{"text":"hi"}' [--progress] [--timeout-ms 20000]
//
// The token is read from the environment (not argv, which other users can see) and sent
// as `Authorization: Bearer <token>` on every request via the transport's requestInit.
// Without PORTCULLIS_TOKEN no Authorization header is sent.
//
// Prints exactly one JSON object on stdout:
//   success: {"ok":true,"protocolVersion","serverVersion","sessionId","tools":[names],
//             "result":{CallToolResult},"progress":[{"progress","total","ms"}],"resultMs"}
//   failure: {"ok":false,"error":{"name","message","code"}}   (exit code 1)
// `ms` / `resultMs` are milliseconds since the tools/call request was sent.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  options: {
    url: { type: "string" },
    tool: { type: "string" },
    args: { type: "string", default: "{}" },
    progress: { type: "boolean", default: false },
    "timeout-ms": { type: "string", default: "20000" },
  },
});

function emit(obj, code) {
  process.stdout.write(JSON.stringify(obj) + "\n", () => process.exit(code));
}

if (!values.url) {
  emit({ ok: false, error: { name: "UsageError", message: "--url is required" } }, 2);
} else {
  const timeoutMs = Number(values["timeout-ms"]);
  const watchdog = setTimeout(() => {
    emit({ ok: false, error: { name: "Timeout", message: `no answer within ${timeoutMs} ms` } }, 3);
  }, timeoutMs);

  const token = process.env.PORTCULLIS_TOKEN;
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  const transport = new StreamableHTTPClientTransport(new URL(values.url), {
    requestInit: { headers },
  });
  const client = new Client({ name: "portcullis-ts-test-client", version: "0.0.0" });

  try {
    await client.connect(transport);
    const out = {
      ok: true,
      protocolVersion: transport.protocolVersion ?? null,
      serverVersion: client.getServerVersion() ?? null,
      sessionId: transport.sessionId ?? null,
    };
    const listed = await client.listTools();
    out.tools = listed.tools.map((t) => t.name);
    if (values.tool) {
      const progress = [];
      const t0 = performance.now();
      const opts = {};
      if (values.progress) {
        opts.onprogress = (p) =>
          progress.push({ progress: p.progress, total: p.total ?? null, ms: performance.now() - t0 });
      }
      out.result = await client.callTool(
        { name: values.tool, arguments: JSON.parse(values.args) },
        undefined,
        opts,
      );
      out.resultMs = performance.now() - t0;
      out.progress = progress;
    }
    try {
      await transport.terminateSession();
    } catch (e) {
      out.terminateError = String(e?.message ?? e);
    }
    await client.close();
    clearTimeout(watchdog);
    emit(out, 0);
  } catch (e) {
    clearTimeout(watchdog);
    try {
      await client.close();
    } catch {}
    emit({ ok: false, error: { name: e?.name ?? "Error", message: String(e?.message ?? e), code: e?.code ?? null } }, 1);
  }
}
