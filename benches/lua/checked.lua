-- wrk script: legit.lua's request, with every answer checked. A response is
-- wrong unless it is 200 and carries the echoed text of a JSON-RPC result
-- for id 1; the RESULT line gets a seventh field, the count of wrong
-- answers (status or body). Used where the figure is not throughput
-- (callgrind.sh): the check costs wrk time per response, not the gateway.
wrk.method = "POST"
wrk.body = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x"}}}'
wrk.headers["Authorization"] = "Bearer " .. os.getenv("TOKEN")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["MCP-Protocol-Version"] = "2025-06-18"

local threads = {}
function setup(thread)
  table.insert(threads, thread)
end
function init(args)
  wrong = 0
end
function response(status, headers, body)
  if status ~= 200 or not body:find('"text":"x"', 1, true) or not body:find('"id":1', 1, true)
      or not body:find('"result"', 1, true) then
    wrong = wrong + 1
  end
end
function done(summary, latency, requests)
  local bad = 0
  for _, t in ipairs(threads) do bad = bad + t:get("wrong") end
  local e = summary.errors
  io.write(string.format("RESULT %.1f %.1f %.1f %d %d %d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status, bad))
end
