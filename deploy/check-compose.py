#!/usr/bin/env python3
"""Offline checks of compose files beyond the compose-spec schema, for machines without the
`docker compose` plugin: every `depends_on` names a service, a `service_healthy` dependency
has a healthcheck and a `service_completed_successfully` one does not restart, named volumes
and networks are declared, bind-mounted files exist, fixed addresses lie in their network's
subnet and outside its dynamic `ip_range`, and HAProxy's `server` lines are the gateway
services. `${VAR:-default}` is read as its default. Usage: check-compose.py FILE... (validate.sh).
"""

import ipaddress
import os
import re
import sys

import yaml

VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def interpolate(value):
    """What compose would see with an empty environment (defaults applied, `$$` kept as `$`)."""
    if isinstance(value, str):
        return VAR.sub(lambda m: m.group(2) or "", value).replace("$$", "$")
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    return value


def check(path):
    base = os.path.dirname(path)
    with open(path, encoding="utf-8") as f:
        doc = interpolate(yaml.safe_load(f))  # PyYAML resolves the `<<` merges
    services = doc.get("services", {})
    volumes = set(doc.get("volumes") or {})
    networks = doc.get("networks") or {}
    bad = []
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        if isinstance(deps, list):
            deps = {d: {"condition": "service_started"} for d in deps}
        for dep, how in deps.items():
            if dep not in services:
                bad.append(f"{name}: depends on unknown service {dep}")
                continue
            cond = (how or {}).get("condition", "service_started")
            if cond == "service_healthy" and "healthcheck" not in services[dep]:
                bad.append(f"{name}: waits for {dep} to be healthy, but {dep} has no healthcheck")
            if cond == "service_completed_successfully" and services[dep].get("restart", "no") != "no":
                bad.append(f"{name}: waits for {dep} to complete, but {dep} restarts")
        for vol in svc.get("volumes") or []:
            src = vol.split(":")[0] if isinstance(vol, str) else vol.get("source", "")
            if src.startswith((".", "/")):
                if not os.path.exists(os.path.join(base, src)):
                    bad.append(f"{name}: bind-mounts {src}, which does not exist")
            elif src and src not in volumes:
                bad.append(f"{name}: uses volume {src}, not declared under volumes:")
        svc_nets = svc.get("networks") or {}
        if isinstance(svc_nets, list):
            svc_nets = {n: None for n in svc_nets}
        for net, how in svc_nets.items():
            if net not in networks and net != "default":
                bad.append(f"{name}: joins network {net}, not declared under networks:")
                continue
            addr = (how or {}).get("ipv4_address")
            if addr:
                ipam = (networks[net] or {}).get("ipam", {}).get("config", [{}])[0]
                ip = ipaddress.ip_address(addr)
                if "subnet" not in ipam or ip not in ipaddress.ip_network(ipam["subnet"]):
                    bad.append(f"{name}: address {addr} is outside network {net}'s subnet")
                if "ip_range" in ipam and ip in ipaddress.ip_network(ipam["ip_range"]):
                    bad.append(f"{name}: address {addr} is inside {net}'s dynamic ip_range")
    gateways = sorted(n for n, s in services.items() if s.get("image", "").startswith("portcullis") and "command" not in s)
    for name, svc in services.items():
        for vol in svc.get("volumes") or []:
            src = vol.split(":")[0] if isinstance(vol, str) else ""
            if src.endswith(".cfg") and "haproxy" in src:
                with open(os.path.join(base, src), encoding="utf-8") as f:
                    servers = sorted(re.findall(r"^\s*server\s+(\S+)\s+(\S+):8080", f.read(), re.M))
                hosts = sorted(h for _, h in servers)
                if hosts != gateways:
                    bad.append(f"{name}: {src} routes to {hosts}, the gateway services are {gateways}")
    return [f"{path}: {m}" for m in bad]


def main():
    bad = [m for p in sys.argv[1:] for m in check(p)]
    for m in bad:
        print(m)
    if bad:
        sys.exit(1)
    print(f"compose references resolve in {len(sys.argv) - 1} file(s)")


main()
