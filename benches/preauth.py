"""Pre-auth resource bounds (benches/scale.sh part `preauth`, issue 11):
CONNS connections each send one request head announcing a 4 MiB body, then
idle, while a legitimate client calls the gateway on the side. Python
standard library only.

python3 preauth.py MODE HOST PORT PATH PID CONNS HOLD_S LEGIT_TOKEN [TOKEN]

MODE
  unauth    no Authorization header: every connection must get 401 at once
  limited   TOKEN is over its rate limit: every connection must get 429 at once
  slowbody  TOKEN is valid: each connection sends SLOW_BYTES (env, default
            16384) of its body in 4 pieces, then idles; no answer is due
            (the body is incomplete) and the gateway's memory may grow only
            with the bytes it received

LEGIT_PATH (env, default PATH): where the legitimate client calls.

Bounds (env): ANSWER_MS=2000 (latest answer after the head was sent, far
below the 30 s body_read_timeout a body-reading gateway would wait),
MAX_GROWTH_MB=16 (RSS above idle for unauth/limited), for slowbody
2 x bytes received + PER_CONN_KB=16 per connection + MAX_GROWTH_MB;
HARD_CAP_MB=1024 stops the case early (a gateway reserving 4 MiB per head
would otherwise take the machine's memory).

Prints one JSON object; exits 1 when a bound is broken (the reasons are in
"failures").
"""

import asyncio
import json
import os
import sys
import time

MODE, HOST, PORT, PATH = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
PID, CONNS, HOLD = int(sys.argv[5]), int(sys.argv[6]), float(sys.argv[7])
LEGIT = sys.argv[8]
TOKEN = sys.argv[9] if len(sys.argv) > 9 else ""
ANSWER_MS = float(os.environ.get("ANSWER_MS", "2000"))
MAX_GROWTH_MB = float(os.environ.get("MAX_GROWTH_MB", "16"))
PER_CONN_KB = float(os.environ.get("PER_CONN_KB", "16"))
HARD_CAP_MB = float(os.environ.get("HARD_CAP_MB", "1024"))
SLOW_BYTES = int(os.environ.get("SLOW_BYTES", "16384"))
LEGIT_PATH = os.environ.get("LEGIT_PATH", PATH)
ANNOUNCED = 4 * 1024 * 1024
EXPECT = {"unauth": 401, "limited": 429, "slowbody": None}[MODE]
BODY = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x"}}}'

stats = {"mode": MODE, "conns": CONNS, "connected": 0, "answered": 0, "statuses": {}, "answer_ms": [],
         "bytes_sent": 0, "legit_ok": 0, "legit_errors": 0, "errors": [], "aborted": False}
stop = asyncio.Event()


def rss_kb():
    with open(f"/proc/{PID}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    return 0


def head(token, length, path=PATH):
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return (f"POST {path} HTTP/1.1\r\nHost: {HOST}:{PORT}\r\n{auth}Content-Type: application/json\r\n"
            f"Accept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2025-06-18\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()


def note(e):
    if len(stats["errors"]) < 5:
        stats["errors"].append(e)


async def heavy(i):
    try:
        reader, writer = await asyncio.open_connection(HOST, PORT)
    except OSError as e:
        note(f"connect: {e!r}")
        return
    stats["connected"] += 1
    try:
        writer.write(head(TOKEN if MODE != "unauth" else "", ANNOUNCED))
        await writer.drain()
        sent = time.monotonic()
        if MODE == "slowbody":
            piece = b"x" * (SLOW_BYTES // 4)
            for _ in range(4):
                await asyncio.sleep(0.25)
                writer.write(piece)
                await writer.drain()
                stats["bytes_sent"] += len(piece)
        # Idle until the case ends, noting any answer.
        line = None
        try:
            line = await asyncio.wait_for(reader.readline(), timeout=max(0.1, HOLD))
        except asyncio.TimeoutError:
            pass
        if line:
            stats["answered"] += 1
            status = int(line.split()[1]) if len(line.split()) > 1 else 0
            stats["statuses"][status] = stats["statuses"].get(status, 0) + 1
            stats["answer_ms"].append((time.monotonic() - sent) * 1000)
        await stop.wait()
    except (OSError, ValueError, asyncio.IncompleteReadError) as e:
        note(f"conn: {e!r}")
    finally:
        writer.close()


async def read_response(reader):
    line = await reader.readline()
    if not line:
        raise ConnectionError("closed")
    status = int(line.split()[1])
    length, chunked = 0, False
    while True:
        h = await reader.readline()
        if h in (b"\r\n", b""):
            break
        k, _, v = h.decode().partition(":")
        if k.strip().lower() == "content-length":
            length = int(v.strip())
        if k.strip().lower() == "transfer-encoding" and "chunked" in v.lower():
            chunked = True
    body = b""
    if chunked:
        while True:
            size = int((await reader.readline()).strip(), 16)
            if size == 0:
                await reader.readline()
                break
            body += (await reader.readexactly(size + 2))[:-2]
    else:
        body = await reader.readexactly(length)
    return status, body


async def legit():
    """One keep-alive client calling every 50 ms until the case ends."""
    reader = writer = None
    while not stop.is_set():
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(HOST, PORT)
            writer.write(head(LEGIT, len(BODY), LEGIT_PATH) + BODY)
            await writer.drain()
            status, body = await asyncio.wait_for(read_response(reader), timeout=5)
            if status == 200 and b'"text":"x"' in body:
                stats["legit_ok"] += 1
            else:
                stats["legit_errors"] += 1
                note(f"legit: {status} {body[:200]!r}")
        except (OSError, ValueError, ConnectionError, asyncio.TimeoutError, asyncio.IncompleteReadError) as e:
            stats["legit_errors"] += 1
            note(f"legit: {e!r}")
            if writer is not None:
                writer.close()
            writer = None
        await asyncio.sleep(0.05)
    if writer is not None:
        writer.close()


async def main():
    idle = rss_kb()
    peak = idle
    side = asyncio.create_task(legit())
    tasks = []
    for i in range(CONNS):
        tasks.append(asyncio.create_task(heavy(i)))
        if i % 100 == 99:
            await asyncio.sleep(0.01)
    deadline = time.monotonic() + HOLD + (1.5 if MODE == "slowbody" else 0.5)
    while time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        peak = max(peak, rss_kb())
        if (peak - idle) / 1024 > HARD_CAP_MB:
            stats["aborted"] = True
            break
    stop.set()
    await asyncio.gather(*tasks, side)
    after = rss_kb()
    growth_mb = (peak - idle) / 1024
    failures = []
    if stats["aborted"]:
        failures.append(f"RSS grew past the {HARD_CAP_MB:.0f} MB hard cap; case stopped early")
    if stats["connected"] < CONNS:
        failures.append(f"{CONNS - stats['connected']} connections could not connect")
    if EXPECT is not None:
        late = [ms for ms in stats["answer_ms"] if ms > ANSWER_MS]
        if stats["answered"] < CONNS:
            failures.append(f"{CONNS - stats['answered']} of {CONNS} connections got no answer within {HOLD:.0f} s")
        if late:
            failures.append(f"{len(late)} answers later than {ANSWER_MS:.0f} ms (latest {max(late):.0f} ms)")
        wrong = {s: n for s, n in stats["statuses"].items() if s != EXPECT}
        if wrong:
            failures.append(f"statuses other than {EXPECT}: {wrong}")
        bound = MAX_GROWTH_MB
    else:
        if stats["answered"]:
            failures.append(f"{stats['answered']} answers to incomplete bodies: {stats['statuses']}")
        bound = (2 * stats["bytes_sent"] / 1024 + PER_CONN_KB * CONNS) / 1024 + MAX_GROWTH_MB
    if growth_mb > bound:
        failures.append(f"RSS grew {growth_mb:.1f} MB above idle, bound {bound:.1f} MB")
    if stats["legit_errors"] or not stats["legit_ok"]:
        failures.append(f"legitimate client: {stats['legit_errors']} errors, {stats['legit_ok']} ok")
    ms = sorted(stats["answer_ms"])
    out = {**stats, "answer_ms": None,
           "answer_p50_ms": round(ms[len(ms) // 2], 1) if ms else None,
           "answer_max_ms": round(ms[-1], 1) if ms else None,
           "rss_idle_kb": idle, "rss_peak_kb": peak, "rss_after_kb": after,
           "growth_mb": round(growth_mb, 1), "bound_mb": round(bound, 1), "failures": failures}
    print(json.dumps(out))
    sys.exit(1 if failures else 0)


asyncio.run(main())
