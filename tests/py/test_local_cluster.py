"""deploy/local-cluster.sh with a highly available Redis: gateways behind HAProxy on a Redis
Cluster (3 masters + 3 replicas) or on a Sentinel-watched primary with two replicas.

What an operator relies on: a token created on one instance works through the load balancer
and on every instance; once revoked on another instance it is refused (401) on every one of
them; the gateways ride out the SIGKILL of the Redis node holding the token store (the Cluster
or the Sentinels promote a replica) without ever accepting a revoked token, and the revocation
acknowledged before it holds after it (store.wait_replicas = 1); a Cluster shard left without
a replica refuses (503) to acknowledge a revocation until its old master is back as a replica;
and `down` leaves no process behind.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from conftest import ROOT, free_port, port_open, wait_until
from mcp_helpers import OP_TIMEOUT, jsonrpc, mcp_client, raw_post, text_of

pytestmark = pytest.mark.anyio

SCRIPT = ROOT / "deploy" / "local-cluster.sh"
INSTANCES = 3


def _run(*args: str, timeout: float = 120) -> dict[str, Any]:
    out = subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"local-cluster.sh {' '.join(args)} failed:\n{out.stderr}"
    return json.loads(out.stdout)


def _ours(d: Path) -> list[str]:
    """Live processes whose command line or working directory is under `d`."""
    found = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(p / "cwd")
        except OSError:
            continue
        if cmd and (str(d) in cmd or cwd == str(d) or cwd.startswith(f"{d}/")):
            found.append(f"{p.name}: {cmd.strip()} (cwd {cwd})")
    return found


def _echo_status(base: str, token: str) -> int:
    body = jsonrpc("tools/call", {"name": "echo", "arguments": {"text": "x"}}, id=7)
    return raw_post(f"{base}/ws/demo", body, token=token).status_code


def _admin(method: str, url: str, admin: str, **kw: Any) -> httpx.Response:
    return httpx.request(method, url, headers={"Authorization": f"Bearer {admin}"}, timeout=15, **kw)


@pytest.mark.parametrize("mode", ["cluster", "sentinel"])
async def test_gateways_on_ha_redis_share_tokens_and_revocations_and_survive_a_master_loss(
    mode, portcullis_bin, procs, tmp_path
):
    for tool in ("redis-server", "redis-cli"):
        assert shutil.which(tool), f"{tool} is missing (scripts/test-deps.sh installs it)"

    up_port = free_port()
    upstream = procs.start(
        f"demo-upstream-{mode}", [portcullis_bin, "demo-upstream", "--listen", f"127.0.0.1:{up_port}"]
    )
    wait_until(lambda: port_open(up_port), f"demo upstream on port {up_port}", procs=[upstream])

    d = tmp_path / "cluster"
    try:
        info = _run(
            "up", "--dir", str(d), "--redis", mode, "--instances", str(INSTANCES),
            "--grace-ms", "1000", "--upstream", f"http://127.0.0.1:{up_port}/mcp",
            "--bin", str(portcullis_bin),
        )
        await _exercise(mode, info, portcullis_bin, d)
    finally:
        subprocess.run([str(SCRIPT), "down", "--dir", str(d)], capture_output=True, timeout=120)
    leftovers = _ours(d)
    assert not leftovers, "processes left after down:\n" + "\n".join(leftovers)
    for node in info["redis"]["nodes"] + info["redis"]["sentinels"]:
        assert not port_open(node["port"]), f"port {node['port']} still open after down"


def _token_store_master(info: dict[str, Any]) -> int:
    """Index (1-based) of the node holding the gateway's token store: in a Cluster the master
    of the slot of its hash tag `{t}` (src/store/redis_keys.rs), with Sentinel the primary."""
    nodes = info["redis"]["nodes"]
    if info["redis"]["mode"] == "sentinel":
        return next(n["index"] for n in nodes if n["role"] == "master")
    port = str(nodes[0]["port"])
    slot = int(subprocess.run(["redis-cli", "-p", port, "cluster", "keyslot", "portcullis:{t}:tokens:seq"],
                              capture_output=True, text=True, check=True).stdout)
    for line in subprocess.run(["redis-cli", "-p", port, "cluster", "nodes"],
                               capture_output=True, text=True, check=True).stdout.splitlines():
        f = line.split()
        if "master" not in f[2]:
            continue
        for r in f[8:]:
            lo, _, hi = r.partition("-")
            if not r.startswith("[") and int(lo) <= slot <= int(hi or lo):
                node_port = int(f[1].split("@")[0].rsplit(":", 1)[1])
                return next(n["index"] for n in nodes if n["port"] == node_port)
    raise AssertionError(f"no master serves slot {slot}")


async def _exercise(mode: str, info: dict[str, Any], bin_: Path, d: Path) -> None:
    redis = info["redis"]
    assert redis["mode"] == mode
    # An acknowledged revocation is on a replica too (store.wait_replicas), so losing the
    # primary cannot bring the token back.
    assert redis["wait_replicas"] == 1
    roles = sorted(n["role"] for n in redis["nodes"])
    if mode == "cluster":
        assert redis["url"].startswith("redis+cluster://127.0.0.1:")
        assert roles == ["master"] * 3 + ["replica"] * 3, roles
        assert redis["sentinels"] == []
    else:
        assert redis["url"].startswith("redis+sentinel://127.0.0.1:") and redis["url"].endswith("/portcullis")
        assert roles == ["master"] + ["replica"] * 2, roles
        assert len(redis["sentinels"]) == 3 and all(s["pid"] for s in redis["sentinels"])
    assert all(n["pid"] for n in redis["nodes"])
    for inst in info["instances"]:
        text = Path(inst["config"]).read_text(encoding="utf-8")
        assert f'url = "{redis["url"]}"' in text and "wait_replicas = 1" in text

    # Offline bootstrap against the shared store, as an operator would.
    out = subprocess.run(
        [bin_, "admin", "token", "create", "--name", "ops", "--json", "--config", info["instances"][0]["config"]],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    admin = json.loads(out.stdout)["token"]
    inst = info["instances"]
    lb = info["lb_url"]

    async def create_and_use(creator: int) -> tuple[str, str]:
        r = _admin("POST", f"{inst[creator]['admin']}/v1/workspaces/demo/tokens", admin, json={"name": "t"})
        assert r.status_code == 201, r.text
        token, token_id = r.json()["token"], r.json()["info"]["id"]
        # A real MCP session through the load balancer.
        with anyio.fail_after(OP_TIMEOUT):
            async with mcp_client(f"{lb}/ws/demo", token) as client:
                result = await client.call_tool("echo", {"text": f"via haproxy on redis {mode}"})
                assert not result.is_error and text_of(result) == f"via haproxy on redis {mode}"
        for i, it in enumerate(inst):
            assert _echo_status(it["data"], token) == 200, f"instance {i + 1} refused a live token"
        return token, token_id

    def revoke(revoker: int, token_id: str) -> httpx.Response:
        return _admin("DELETE", f"{inst[revoker]['admin']}/v1/workspaces/demo/tokens/{token_id}", admin)

    def refused_everywhere(token: str, revoker: int) -> None:
        for i, it in enumerate(inst):
            assert _echo_status(it["data"], token) == 401, f"instance {i + 1} accepted a token revoked on {revoker + 1}"
        for _ in inst:
            assert _echo_status(lb, token) == 401, "the load balancer let a revoked token through"

    revoked, revoked_id = await create_and_use(0)
    r = revoke(1, revoked_id)
    assert r.status_code == 200, r.text
    refused_everywhere(revoked, 1)

    # Lose the node holding the token store the hard way (SIGKILL). A replica takes over
    # (the Cluster itself, or the Sentinels); the gateways follow it on their own.
    victim = _token_store_master(info)
    _run("stop-redis", "--dir", str(d), "--node", str(victim), "--kill")
    for i, it in enumerate(inst):
        # Fail closed (503) while an instance cannot confirm revocations, never 200.
        assert _echo_status(it["data"], revoked) in (401, 503), f"instance {i + 1} let a revoked token in"
    after = _run("wait-redis", "--dir", str(d))
    nodes = after["redis"]["nodes"]
    assert nodes[victim - 1]["pid"] is None
    assert sum(n["role"] == "master" for n in nodes) == (3 if mode == "cluster" else 1), nodes
    assert _token_store_master(after) != victim
    for it in inst:
        wait_until(
            lambda it=it: httpx.get(f"{it['admin']}/readyz", timeout=5).status_code == 200,
            f"{it['admin']}/readyz after the failover",
            timeout=30,
        )
    # The revocation acknowledged before the failover holds after it, on every instance.
    refused_everywhere(revoked, 1)

    token, token_id = await create_and_use(2)
    r = revoke(0, token_id)
    if mode == "cluster":
        # The promoted master has no replica left: with wait_replicas = 1 a revocation cannot
        # be made durable, so it is refused (503, safe to retry) rather than acknowledged.
        assert r.status_code == 503, r.text
    else:
        # The new primary still has a replica.
        assert r.status_code == 200, r.text

    # The old master comes back as a replica of its successor; the revocation goes through.
    back = _run("start-redis", "--dir", str(d), "--node", str(victim))
    assert back["redis"]["nodes"][victim - 1]["role"] == "replica", back["redis"]["nodes"]
    if mode == "cluster":
        r = revoke(0, token_id)
        assert r.status_code == 200, r.text
    refused_everywhere(token, 0)
