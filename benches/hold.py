"""Holds many keep-alive connections and SSE streams open against the gateway
(used by benches/scale.sh; Python standard library only).

python3 hold.py HOST PORT PATH TOKEN CONNS STREAMS HOLD_S PID

- CONNS keep-alive connections each send an MCP `tools/call` (echo) on
  connect and then every PING_S seconds (env, default 5) until HOLD_S is over;
- STREAMS connections each POST the demo `progress` tool with
  `Accept: text/event-stream`, so that the answer is an SSE stream that stays
  open for about HOLD_S seconds (steps x interval), and read it to the end.
While holding it samples the RSS of process PID. Prints one JSON object.
"""

import asyncio
import json
import sys
import time

HOST, PORT, PATH, TOKEN = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
CONNS, STREAMS, HOLD, PID = int(sys.argv[5]), int(sys.argv[6]), float(sys.argv[7]), int(sys.argv[8])
import os

PING = float(os.environ.get("PING_S", "5"))

stats = {"requests_ok": 0, "request_errors": 0, "connect_errors": 0, "streams_ok": 0, "stream_errors": 0,
         "sse_events": 0, "error_samples": []}


def rss_kb():
    with open(f"/proc/{PID}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    return 0


def request(body, sse=False):
    accept = "text/event-stream" if sse else "application/json, text/event-stream"
    b = json.dumps(body).encode()
    head = (f"POST {PATH} HTTP/1.1\r\nHost: {HOST}:{PORT}\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: application/json\r\nAccept: {accept}\r\nMCP-Protocol-Version: 2025-06-18\r\n"
            f"Content-Length: {len(b)}\r\n\r\n").encode()
    return head + b


async def read_response(reader):
    """Reads one HTTP/1.1 response (Content-Length or chunked); returns (status, body)."""
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("closed")
    status = int(status_line.split()[1])
    headers = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        k, _, v = line.decode().partition(":")
        headers[k.strip().lower()] = v.strip()
    body = b""
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        while True:
            size = int((await reader.readline()).strip(), 16)
            if size == 0:
                await reader.readline()
                break
            chunk = await reader.readexactly(size + 2)
            body += chunk[:-2]
            stats["sse_events"] += chunk.count(b"data: ")
    return status, body


def error(kind, e):
    stats[kind] += 1
    if len(stats["error_samples"]) < 5:
        stats["error_samples"].append(f"{kind}: {e!r}")


async def keepalive_conn(i, deadline):
    try:
        reader, writer = await asyncio.open_connection(HOST, PORT)
    except OSError as e:
        error("connect_errors", e)
        return
    req = request({"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "k"}}})
    try:
        # Spread the pings over the interval.
        await asyncio.sleep((i % 1000) / 1000 * PING)
        while True:
            writer.write(req)
            await writer.drain()
            status, _ = await read_response(reader)
            if status == 200:
                stats["requests_ok"] += 1
            else:
                error("request_errors", f"status {status}")
            if time.monotonic() + PING > deadline:
                break
            await asyncio.sleep(PING)
    except Exception as e:  # noqa: BLE001 - every failure counts as an error
        error("request_errors", e)
    finally:
        writer.close()


async def stream_conn(i, steps, interval_ms):
    try:
        reader, writer = await asyncio.open_connection(HOST, PORT)
    except OSError as e:
        error("connect_errors", e)
        return
    req = request({"jsonrpc": "2.0", "id": i, "method": "tools/call",
                   "params": {"name": "progress", "arguments": {"steps": steps, "interval_ms": interval_ms},
                              "_meta": {"progressToken": i}}}, sse=True)
    try:
        writer.write(req)
        await writer.drain()
        status, body = await read_response(reader)
        if status == 200 and b"done after" in body:
            stats["streams_ok"] += 1
        else:
            error("stream_errors", f"status {status} body {body[-200:]!r}")
    except Exception as e:  # noqa: BLE001
        error("stream_errors", e)
    finally:
        writer.close()


async def main():
    start = time.monotonic()
    deadline = start + HOLD
    base = rss_kb()
    steps = 100
    interval_ms = max(1, int(HOLD * 1000 / steps))
    tasks = []
    for i in range(CONNS):
        tasks.append(asyncio.create_task(keepalive_conn(i, deadline)))
        if i % 500 == 499:
            await asyncio.sleep(0.05)
    for i in range(STREAMS):
        tasks.append(asyncio.create_task(stream_conn(i, steps, interval_ms)))
    samples = []
    while time.monotonic() < deadline:
        await asyncio.sleep(min(2, max(0.1, deadline - time.monotonic())))
        samples.append(rss_kb())
    await asyncio.gather(*tasks)
    peak = max(samples) if samples else rss_kb()
    held = CONNS + STREAMS
    print(json.dumps({**stats, "conns": CONNS, "streams": STREAMS, "hold_s": HOLD,
                      "rss_before_kb": base, "rss_peak_kb": peak, "rss_after_kb": rss_kb(),
                      "bytes_per_connection": round((peak - base) * 1024 / held) if held else 0,
                      "elapsed_s": round(time.monotonic() - start, 1)}))


asyncio.run(main())
