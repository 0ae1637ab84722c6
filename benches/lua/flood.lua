-- wrk script: every request carries a fresh token that no store has.
-- FLOOD=malformed: random 36 characters after the prefix (fails the checksum).
-- FLOOD=unknown:   a well-formed token (valid CRC32 checksum) that is unknown.
local bit = require("bit")
local B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
local mode = os.getenv("FLOOD") or "unknown"
local body = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x"}}}'

local crc_table = {}
for i = 0, 255 do
  local c = i
  for _ = 1, 8 do
    if bit.band(c, 1) == 1 then c = bit.bxor(0xEDB88320, bit.rshift(c, 1)) else c = bit.rshift(c, 1) end
  end
  crc_table[i] = c
end

local function crc32(s)
  local c = 0xFFFFFFFF
  for i = 1, #s do
    c = bit.bxor(crc_table[bit.band(bit.bxor(c, s:byte(i)), 0xFF)], bit.rshift(c, 8))
  end
  c = bit.bxor(c, 0xFFFFFFFF)
  if c < 0 then c = c + 4294967296 end
  return c
end

local function rand62(n)
  local t = {}
  for i = 1, n do
    local k = math.random(1, 62)
    t[i] = B62:sub(k, k)
  end
  return table.concat(t)
end

local function checksum(crc)
  local t = {}
  for i = 6, 1, -1 do
    local d = crc % 62
    t[i] = B62:sub(d + 1, d + 1)
    crc = math.floor(crc / 62)
  end
  return table.concat(t)
end

local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("seed", counter)
end

function init(args)
  math.randomseed(os.time() * 1000 + (seed or 0))
end

function request()
  local tok
  if mode == "malformed" then
    tok = "mwt_" .. rand62(36)
  else
    local r = rand62(30)
    tok = "mwt_" .. r .. checksum(crc32(r))
  end
  return wrk.format("POST", nil, {
    ["Authorization"] = "Bearer " .. tok,
    ["Content-Type"] = "application/json",
    ["Accept"] = "application/json, text/event-stream",
    ["MCP-Protocol-Version"] = "2025-06-18",
  }, body)
end
