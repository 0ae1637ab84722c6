#!/usr/bin/env node
// A TypeScript-SDK MCP client for the multi-server ("aggregating") workspace tests
// (tests/py/test_multi_server.py). Unlike client.mjs it makes several calls in one session
// and also lists prompts, resources and resource templates.
//
//   PORTCULLIS_TOKEN=mwt_... node multi_client.mjs --url http://127.0.0.1:8080/ws/team \
//       --calls '[{"name":"py__echo","arguments":{"text":"hi"}}, ...]' \
//       [--prompt '{"name":"py__greet","arguments":{"name":"Ada"}}'] \
//       [--read 'py-upstream://info'] [--progress] [--timeout-ms 20000]
//
// The token comes from the environment (never argv). Prints exactly one JSON object:
//   success: {"ok":true,"protocolVersion","serverVersion","serverCapabilities","sessionId",
//             "tools":[{name,inputSchema}],"prompts":[names],"resources":[uris],
//             "resourceTemplates":[uriTemplates],
//             "results":[{"name","result"|"error","progress":[{progress,total,ms}],"ms"}],
//             "prompt":GetPromptResult?, "read":ReadResourceResult?, "terminateError"?}
//   failure: {"ok":false,"stage","error":{"name","message","code"}}   (exit code 1)
// A failing call does not end the run: its entry carries "error" instead of "result".
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  options: {
    url: { type: "string" },
    calls: { type: "string", default: "[]" },
    prompt: { type: "string" },
    read: { type: "string" },
    progress: { type: "boolean", default: false },
    "timeout-ms": { type: "string", default: "20000" },
  },
});

function emit(obj, code) {
  process.stdout.write(JSON.stringify(obj) + "\n", () => process.exit(code));
}

function errInfo(e) {
  return { name: e?.name ?? "Error", message: String(e?.message ?? e), code: e?.code ?? null };
}

async function listAll(fn, key) {
  const out = [];
  let cursor;
  for (let page = 0; page < 50; page++) {
    const res = await fn(cursor ? { cursor } : undefined);
    out.push(...res[key]);
    cursor = res.nextCursor;
    if (!cursor) break;
  }
  return out;
}

if (!values.url) {
  emit({ ok: false, stage: "usage", error: { name: "UsageError", message: "--url is required" } }, 2);
} else {
  const timeoutMs = Number(values["timeout-ms"]);
  const watchdog = setTimeout(() => {
    emit({ ok: false, stage: "timeout", error: { name: "Timeout", message: `no answer within ${timeoutMs} ms` } }, 3);
  }, timeoutMs);

  const token = process.env.PORTCULLIS_TOKEN;
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  const transport = new StreamableHTTPClientTransport(new URL(values.url), { requestInit: { headers } });
  const client = new Client({ name: "portcullis-ts-multi-client", version: "0.0.0" });
  let stage = "connect";
  try {
    await client.connect(transport);
    const caps = client.getServerCapabilities() ?? {};
    const out = {
      ok: true,
      protocolVersion: transport.protocolVersion ?? null,
      serverVersion: client.getServerVersion() ?? null,
      serverCapabilities: caps,
      sessionId: transport.sessionId ?? null,
    };
    stage = "tools/list";
    out.tools = (await listAll((p) => client.listTools(p), "tools")).map((t) => ({ name: t.name, inputSchema: t.inputSchema }));
    if (caps.prompts) {
      stage = "prompts/list";
      out.prompts = (await listAll((p) => client.listPrompts(p), "prompts")).map((p) => p.name);
    }
    if (caps.resources) {
      stage = "resources/list";
      out.resources = (await listAll((p) => client.listResources(p), "resources")).map((r) => r.uri);
      stage = "resources/templates/list";
      out.resourceTemplates = (await listAll((p) => client.listResourceTemplates(p), "resourceTemplates")).map(
        (r) => r.uriTemplate,
      );
    }
    stage = "tools/call";
    out.results = [];
    for (const call of JSON.parse(values.calls)) {
      const progress = [];
      const t0 = performance.now();
      const opts = {};
      if (values.progress) {
        opts.onprogress = (p) => progress.push({ progress: p.progress, total: p.total ?? null, ms: performance.now() - t0 });
      }
      const entry = { name: call.name, progress };
      try {
        entry.result = await client.callTool({ name: call.name, arguments: call.arguments ?? {} }, undefined, opts);
      } catch (e) {
        entry.error = errInfo(e);
      }
      entry.ms = performance.now() - t0;
      out.results.push(entry);
    }
    if (values.prompt) {
      stage = "prompts/get";
      const p = JSON.parse(values.prompt);
      out.prompt = await client.getPrompt({ name: p.name, arguments: p.arguments ?? {} });
    }
    if (values.read) {
      stage = "resources/read";
      out.read = await client.readResource({ uri: values.read });
    }
    stage = "terminate";
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
    emit({ ok: false, stage, error: errInfo(e) }, 1);
  }
}
