#!/usr/bin/env python3
"""Validates a rendered overlay (`kubectl kustomize overlays/<env>`): every object against the
Kubernetes schemas of one version with kubernetes-validate --strict, the ServiceMonitor (a CRD,
whose schema kubernetes-validate does not bundle) against schemas/servicemonitor-v1.schema.json,
and the DaemonSet against what docs/deploy.md promises (host network, three capabilities and
nothing else, probes on the operations port, Secrets mounted 0400).

Usage: validate.py RENDERED.yaml [--kubernetes 1.29]
Run by tests/tests/deploy_kubernetes.rs (`cargo xtask test`). Exits 1 on any failure.
"""

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile

import jsonschema
import yaml

HERE = pathlib.Path(__file__).resolve().parent
CAPABILITIES = {"BPF", "NET_ADMIN", "PERFMON"}
METRICS_PORT = 9464


def check_daemonset(ds, failures):
    def need(cond, what):
        if not cond:
            failures.append(f"DaemonSet {ds['metadata']['name']}: {what}")

    pod = ds["spec"]["template"]["spec"]
    need(pod.get("hostNetwork") is True, "hostNetwork must be true (XDP on the node's NICs)")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    bpffs = [v for v in volumes.values() if v.get("hostPath", {}).get("path") == "/sys/fs/bpf"]
    need(len(bpffs) == 1, "bpffs (/sys/fs/bpf) must be a hostPath volume")
    need(any("configMap" in v for v in volumes.values()), "the config must come from a ConfigMap")
    secrets = [v for v in volumes.values() if "secret" in v]
    need(len(secrets) >= 2, "keys and TLS must come from Secrets")
    for v in secrets:
        need(v["secret"].get("defaultMode") == 0o400,
             f"Secret volume {v['name']} must be mounted with defaultMode 0400 (mecgw refuses "
             "key files others can read; the Kubernetes default is 0644)")
    (c,) = [c for c in pod["containers"] if c["name"] == "mecgw"]
    sc = c.get("securityContext", {})
    need(sc.get("privileged") is False, "must not be privileged")
    need(sc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation must be false")
    need(sc.get("capabilities", {}).get("drop") == ["ALL"], "must drop ALL capabilities")
    added = sc.get("capabilities", {}).get("add", [])
    need(set(added) == CAPABILITIES and len(added) == len(CAPABILITIES),
         f"must add exactly {sorted(CAPABILITIES)}, not {added}")
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    need(ports.get("metrics") == METRICS_PORT, f"port 'metrics' must be {METRICS_PORT}")
    for probe, path in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")]:
        get = c.get(probe, {}).get("httpGet", {})
        need(get.get("path") == path and get.get("port") in ("metrics", METRICS_PORT),
             f"{probe} must GET {path} on the operations port")
    env = {e["name"]: e for e in c.get("env", [])}
    node_ip = env.get("NODE_IP", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
    need(node_ip == "status.hostIP", "NODE_IP must come from status.hostIP")
    need(env.get("MECGW_METRICS_LISTEN", {}).get("value") == f"$(NODE_IP):{METRICS_PORT}",
         "MECGW_METRICS_LISTEN must be $(NODE_IP):9464 (reachable by kubelet and Prometheus)")
    config_names = {v["configMap"]["name"] for v in volumes.values() if "configMap" in v}
    return config_names


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("rendered")
    parser.add_argument("--kubernetes", default="1.29")
    args = parser.parse_args()
    docs = [d for d in yaml.safe_load_all(pathlib.Path(args.rendered).read_text()) if d]
    failures = []
    core = [d for d in docs if d.get("kind") != "ServiceMonitor"]
    monitors = [d for d in docs if d.get("kind") == "ServiceMonitor"]

    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        yaml.safe_dump_all(core, f)
        f.flush()
        out = subprocess.run(
            [sys.executable, "-m", "kubernetes_validate", "--strict", "-k", args.kubernetes, f.name],
            capture_output=True, text=True)
    text = (out.stdout + out.stderr).replace(f.name, args.rendered)
    print(text, end="")
    passed = text.count(" passed for resource ")
    if out.returncode != 0 or passed != len(core) or "WARN" in text or "ERROR" in text:
        failures.append(f"kubernetes-validate --strict -k {args.kubernetes}: "
                        f"{passed} of {len(core)} objects passed (exit {out.returncode})")

    schema = json.loads((HERE / "schemas" / "servicemonitor-v1.schema.json").read_text())
    for m in monitors:
        errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(m), key=str)
        for e in errors:
            failures.append(f"ServiceMonitor {m['metadata'].get('name')}: "
                            f"{'/'.join(map(str, e.absolute_path))}: {e.message}")
        if not errors:
            print(f"INFO {args.rendered} passed for resource "
                  f"servicemonitor/{m['metadata']['name']} against servicemonitor-v1.schema.json")
    if len(monitors) != 1:
        failures.append(f"expected one ServiceMonitor, found {len(monitors)}")

    daemonsets = [d for d in docs if d.get("kind") == "DaemonSet"]
    if len(daemonsets) != 1:
        failures.append(f"expected one DaemonSet, found {len(daemonsets)}")
    for ds in daemonsets:
        wanted = check_daemonset(ds, failures)
        have = {d["metadata"]["name"] for d in docs if d.get("kind") == "ConfigMap"}
        for name in wanted - have:
            failures.append(f"the DaemonSet mounts ConfigMap {name}, which is not rendered")

    for f in failures:
        print(f"FAIL {f}")
    print(f"validate: {len(docs)} objects, {len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
