#!/usr/bin/env python3
"""Checks the highly available Redis overlays (deploy/k8s/redis-*) against the Bitnami values
next to them, on the manifests `kubectl kustomize` rendered into DIR (DIR/redis-sentinel.yaml,
DIR/redis-cluster.yaml): the password comes from the chart's Secret and is defined before the
REDIS_URL that expands it, the URL names the chart's pods (and master set), and the gateways
carry the label the chart's network policy admits, and revocations wait for a replica. Usage: check-k8s-ha.py DIR (run by validate.sh).
"""

import sys

import yaml

OVERLAYS = (
    # overlay, Helm release name, URL scheme
    ("redis-sentinel", "redis", "redis+sentinel://"),
    ("redis-cluster", "redis-cluster", "redis+cluster://"),
)


def deployment(path):
    with open(path, encoding="utf-8") as f:
        for doc in yaml.safe_load_all(f):
            if doc and doc["kind"] == "Deployment" and doc["metadata"]["name"] == "portcullis":
                return doc
    raise SystemExit(f"{path}: no Deployment portcullis")


def check(rendered, overlay, release, scheme):
    with open(f"deploy/k8s/{overlay}/bitnami-values.yaml", encoding="utf-8") as f:
        values = yaml.safe_load(f)
    pod = deployment(f"{rendered}/{overlay}.yaml")["spec"]["template"]
    env = pod["spec"]["containers"][0]["env"]
    names = [e["name"] for e in env]
    if names.count("REDIS_URL") != 1 or names.count("REDIS_PASSWORD") != 1:
        return [f"{overlay}: want one REDIS_PASSWORD and one REDIS_URL, got {names}"]
    bad = []
    # $(VAR) expands only variables defined earlier in the list.
    if names.index("REDIS_PASSWORD") > names.index("REDIS_URL"):
        bad.append(f"{overlay}: REDIS_PASSWORD must come before REDIS_URL: {names}")
    secret = env[names.index("REDIS_PASSWORD")]["valueFrom"]["secretKeyRef"]
    if secret != {"name": release, "key": "redis-password"}:
        bad.append(f"{overlay}: password from {secret}; the chart's Secret is {release}, key redis-password")
    url = env[names.index("REDIS_URL")]["value"]
    prefix = f"{scheme}:$(REDIS_PASSWORD)@"
    if not url.startswith(prefix):
        return bad + [f"{overlay}: REDIS_URL {url!r} does not start with {prefix}"]
    hosts = url[len(prefix):].split("/")[0].split(",")
    if overlay == "redis-sentinel":
        want = [f"{release}-node-{i}.{release}-headless:26379" for i in range(values["replica"]["replicaCount"])]
        master = values["sentinel"]["masterSet"]
        if not url.endswith(f"/{master}"):
            bad.append(f"{overlay}: REDIS_URL does not end with the master set /{master}")
        if values["auth"]["sentinel"] is not False:
            bad.append(f"{overlay}: the gateway asks the Sentinels without a password; auth.sentinel must be false")
        if not values["sentinel"]["enabled"]:
            bad.append(f"{overlay}: sentinel.enabled is off")
    else:
        want = [f"{release}-{i}.{release}-headless:6379" for i in range(values["cluster"]["nodes"])]
    if hosts != want:
        bad.append(f"{overlay}: REDIS_URL hosts {hosts}; the chart's pods are {want}")
    wait = {e["name"]: e.get("value") for e in env}.get("PORTCULLIS__STORE__WAIT_REPLICAS")
    if wait != "1":
        bad.append(f"{overlay}: PORTCULLIS__STORE__WAIT_REPLICAS is {wait!r}, want \"1\" (revocations on a replica too)")
    policy = values.get("networkPolicy", {})
    if policy.get("enabled") and policy.get("allowExternal") is False:
        if pod["metadata"]["labels"].get(f"{release}-client") != "true":
            bad.append(f"{overlay}: the chart's network policy admits only pods labelled {release}-client=true")
    return bad


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    bad = [msg for o in OVERLAYS for msg in check(sys.argv[1], *o)]
    for msg in bad:
        print(msg)
    if bad:
        sys.exit(1)
    print("HA overlays agree with their Bitnami values")


main()
