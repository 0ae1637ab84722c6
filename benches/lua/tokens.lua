-- wrk script: each request uses the next token of TOKENS_FILE (one a line),
-- so that every token is used once; threads split the file and stop when
-- their share is used. The summary line counts non-2xx answers.
local body = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x"}}}'
local threads = {}
local counter = 0
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local n = tonumber(os.getenv("WRK_THREADS") or "1")
  tokens = {}
  local i = 0
  for line in io.lines(os.getenv("TOKENS_FILE")) do
    if i % n == id then table.insert(tokens, line) end
    i = i + 1
  end
  next_i = 1
  done_n = 0
end

function request()
  local tok = tokens[next_i] or tokens[#tokens]
  next_i = next_i + 1
  return wrk.format("POST", nil, {
    ["Authorization"] = "Bearer " .. tok,
    ["Content-Type"] = "application/json",
    ["Accept"] = "application/json, text/event-stream",
    ["MCP-Protocol-Version"] = "2025-06-18",
  }, body)
end

function response(status, headers, body)
  done_n = done_n + 1
  if done_n >= #tokens then wrk.thread:stop() end
end

function done(summary, latency, requests)
  io.write(string.format("RESULT %d %d %d\n", summary.requests, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
