"""Mixed-traffic soak driver (benches/soak.sh, issue 11). Python standard
library only.

python3 soak.py GW_PORT GW_PID UP_PORT UPSTREAM_CMD... (after `--`)

Environment: DURATION (s), SAMPLE_S, KILL_EVERY_S, DOWN_S, TOKEN (a valid
token of workspace `soak`), TIGHT (a token of workspace `tight`, limited to
1 request per minute), WORKERS (concurrent clients per kind).

For DURATION seconds it runs, concurrently and in a loop, clients of each
kind, and checks every answer:
  json       tools/call echo: 200 with the echoed text
  sse        tools/call progress with Accept: text/event-stream: 200, a
             stream of progress notifications and the final result
  unauth     no token, then a malformed token: 401
  limited    the tight token: 429 (its first call may be 200)
  malformed  a body that is not JSON: 400 (-32700); a request line that is
             not HTTP: 400
  aborted    a head and half a body, then the client closes; a full
             request closed before the answer (no answer to check)
Every KILL_EVERY_S it kills the upstream (SIGKILL) and restarts it DOWN_S
later. A 502/503/504 to a json or sse call is right only if the call
overlapped a window in which the upstream was down (plus 1 s after the
restart, for connections the gateway had pooled); anything else not listed
above is a wrong answer.

Every SAMPLE_S it samples the gateway's RSS, open file descriptors and
established TCP connections to the upstream port (the gateway's pooled and
in-use upstream connections). Prints one JSON object with the samples and
the counts; exits 1 if any answer was wrong.
"""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

GW_PORT, GW_PID, UP_PORT = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
UP_CMD = sys.argv[sys.argv.index("--") + 1:]
DURATION = float(os.environ.get("DURATION", "1800"))
SAMPLE_S = float(os.environ.get("SAMPLE_S", "10"))
KILL_EVERY = float(os.environ.get("KILL_EVERY_S", "60"))
DOWN_S = float(os.environ.get("DOWN_S", "2"))
TOKEN = os.environ["TOKEN"]
TIGHT = os.environ["TIGHT"]
WORKERS = int(os.environ.get("WORKERS", "2"))
HOST = "127.0.0.1"
GRACE = 1.0

counts = {}
wrong = []
down = []  # [start, end or None]
stop = asyncio.Event()
up_proc = None


def count(kind, outcome):
    key = f"{kind}:{outcome}"
    counts[key] = counts.get(key, 0) + 1


def bad(kind, detail):
    count(kind, "WRONG")
    if len(wrong) < 20:
        wrong.append(f"{time.monotonic() - T0:.1f}s {kind}: {detail}")


def upstream_was_down(t0, t1):
    for s, e in down:
        e = (e if e is not None else time.monotonic()) + GRACE
        if s <= t1 and t0 <= e:
            return True
    return False


def request(path, body, token=None, accept="application/json, text/event-stream", extra=""):
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return (f"POST {path} HTTP/1.1\r\nHost: {HOST}:{GW_PORT}\r\n{auth}Content-Type: application/json\r\n"
            f"Accept: {accept}\r\nMCP-Protocol-Version: 2025-06-18\r\n{extra}Content-Length: {len(body)}\r\n\r\n"
            ).encode() + body


async def read_response(reader):
    line = await reader.readline()
    if not line:
        raise ConnectionError("closed before the status line")
    status = int(line.split()[1])
    length, chunked = None, False
    while True:
        h = await reader.readline()
        if h in (b"\r\n", b""):
            break
        k, _, v = h.decode("latin-1").partition(":")
        k = k.strip().lower()
        if k == "content-length":
            length = int(v.strip())
        elif k == "transfer-encoding" and "chunked" in v.lower():
            chunked = True
    body = b""
    if chunked:
        while True:
            size = int((await reader.readline()).split(b";")[0].strip(), 16)
            if size == 0:
                await reader.readline()
                break
            body += (await reader.readexactly(size + 2))[:-2]
    elif length is not None:
        body = await reader.readexactly(length)
    else:
        body = await reader.read()
    return status, body


async def exchange(raw, timeout=30):
    reader, writer = await asyncio.open_connection(HOST, GW_PORT)
    try:
        writer.write(raw)
        await writer.drain()
        return await asyncio.wait_for(read_response(reader), timeout)
    finally:
        writer.close()


def call_body(i, name, args, meta=None):
    params = {"name": name, "arguments": args}
    if meta:
        params["_meta"] = meta
    return json.dumps({"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": params}).encode()


async def upstream_kind(kind, make, check):
    """json and sse: right answers, or 5xx while the upstream was down."""
    i = 0
    while not stop.is_set():
        i += 1
        t0 = time.monotonic()
        try:
            status, body = await exchange(make(i))
        except Exception as e:  # noqa: BLE001 - every failure is judged
            if upstream_was_down(t0, time.monotonic()):
                count(kind, "cut-while-upstream-down")
            else:
                bad(kind, f"{e!r}")
            continue
        if status == 200 and check(body):
            count(kind, "ok")
        elif status in (502, 503, 504) and upstream_was_down(t0, time.monotonic()):
            count(kind, f"{status}-while-upstream-down")
        elif status == 200 and upstream_was_down(t0, time.monotonic()) and b'"error"' in body:
            # A stream cut by the upstream's death ends with an error event.
            count(kind, "error-event-while-upstream-down")
        else:
            bad(kind, f"{status} {body[:200]!r}")
        await asyncio.sleep(0.02)


async def json_client():
    await upstream_kind("json", lambda i: request("/ws/soak", call_body(i, "echo", {"text": f"soak-{i}"}), TOKEN),
                        lambda b: b'"text":"soak-' in b and b'"result"' in b)


async def sse_client():
    await upstream_kind("sse", lambda i: request(
        "/ws/soak", call_body(i, "progress", {"steps": 3, "interval_ms": 50}, {"progressToken": i}), TOKEN,
        accept="text/event-stream"),
        lambda b: b.count(b"notifications/progress") == 3 and b"done after" in b)


async def simple(kind, make, want, forwards=False):
    """Answers the gateway gives itself; `forwards`: a call that may reach
    the upstream (the tight token's one call a minute), so 502/503/504 is
    right for it while the upstream was down, as for json and sse."""
    i = 0
    while not stop.is_set():
        i += 1
        try:
            t0 = time.monotonic()
            status, body = await exchange(make(i))
            if status in want:
                count(kind, str(status))
            elif forwards and status in (502, 503, 504) and upstream_was_down(t0, time.monotonic()):
                count(kind, f"{status}-while-upstream-down")
            else:
                bad(kind, f"{status} (want {want}) {body[:200]!r}")
        except Exception as e:  # noqa: BLE001
            bad(kind, f"{e!r}")
        await asyncio.sleep(0.05)


async def unauth_client():
    await simple("unauth", lambda i: request("/ws/soak", call_body(i, "echo", {"text": "x"}),
                                             None if i % 2 else "mwt_not_a_real_token"), {401})


async def limited_client():
    # The tight token's one request per minute may fall in this run once;
    # that one is forwarded, and may meet the upstream down.
    await simple("limited", lambda i: request("/ws/tight", call_body(i, "echo", {"text": "x"}), TIGHT), {429, 200},
                 forwards=True)


async def malformed_client():
    def make(i):
        if i % 2:
            return request("/ws/soak", b'{"jsonrpc":"2.0","id":1,"method":', TOKEN)
        return b"NOT HTTP AT ALL\r\n\r\n"
    await simple("malformed", make, {400})


async def aborted_client():
    i = 0
    while not stop.is_set():
        i += 1
        try:
            reader, writer = await asyncio.open_connection(HOST, GW_PORT)
            raw = request("/ws/soak", call_body(i, "progress", {"steps": 3, "interval_ms": 50}), TOKEN,
                          accept="text/event-stream" if i % 3 == 0 else "application/json, text/event-stream")
            # Half a body; or the whole request, closed before the answer.
            writer.write(raw[: len(raw) - 20] if i % 2 else raw)
            await writer.drain()
            await asyncio.sleep(0.01)
            writer.close()
            count("aborted", "sent")
        except OSError as e:
            bad("aborted", f"{e!r}")
        await asyncio.sleep(0.05)


def start_upstream():
    global up_proc
    up_proc = subprocess.Popen(UP_CMD, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def wait_upstream():
    for _ in range(100):
        try:
            _, w = await asyncio.open_connection(HOST, UP_PORT)
            w.close()
            return True
        except OSError:
            await asyncio.sleep(0.05)
    return False


async def chaos():
    """Kills the upstream every KILL_EVERY seconds; restarts it DOWN_S later."""
    restarts = 0
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), KILL_EVERY)
            break
        except asyncio.TimeoutError:
            pass
        down.append([time.monotonic(), None])
        up_proc.send_signal(signal.SIGKILL)
        up_proc.wait()
        await asyncio.sleep(DOWN_S)
        start_upstream()
        if not await wait_upstream():
            bad("chaos", "the upstream did not restart")
        down[-1][1] = time.monotonic()
        restarts += 1
    return restarts


def gateway_sample():
    with open(f"/proc/{GW_PID}/status") as f:
        rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS"))
    fds = len(os.listdir(f"/proc/{GW_PID}/fd"))
    # Established connections whose remote end is the upstream's port: the
    # gateway's side of its upstream connections (pooled or in use).
    port_hex = f":{UP_PORT:04X}"
    up = 0
    with open("/proc/net/tcp") as f:
        for line in list(f)[1:]:
            parts = line.split()
            if parts[2].endswith(port_hex) and parts[3] == "01":
                up += 1
    return {"t": round(time.monotonic() - T0, 1), "rss_kb": rss, "fds": fds, "upstream_conns": up}


async def sampler(samples):
    while not stop.is_set():
        samples.append(gateway_sample())
        try:
            await asyncio.wait_for(stop.wait(), SAMPLE_S)
        except asyncio.TimeoutError:
            pass


async def main():
    global T0
    T0 = time.monotonic()
    start_upstream()
    if not await wait_upstream():
        print(json.dumps({"failures": ["the upstream did not start"]}))
        sys.exit(1)
    samples = []
    tasks = [asyncio.create_task(sampler(samples))]
    for _ in range(WORKERS):
        tasks += [asyncio.create_task(c()) for c in (json_client, sse_client, unauth_client, malformed_client,
                                                       aborted_client)]
    tasks.append(asyncio.create_task(limited_client()))
    chaos_task = asyncio.create_task(chaos())
    await asyncio.sleep(DURATION)
    stop.set()
    await asyncio.gather(*tasks)
    restarts = await chaos_task
    # After the traffic: let aborted and idle connections settle, then the
    # final sample (descriptors must be back near the first sample's).
    await asyncio.sleep(2)
    samples.append(gateway_sample())
    up_proc.send_signal(signal.SIGTERM)
    up_proc.wait()
    print(json.dumps({"duration_s": DURATION, "upstream_restarts": restarts, "counts": counts,
                      "wrong": sum(v for k, v in counts.items() if k.endswith(":WRONG")),
                      "wrong_samples": wrong, "samples": samples}))


T0 = 0.0
asyncio.run(main())
