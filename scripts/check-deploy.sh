#!/usr/bin/env bash
# Checks deploy/ offline: the Kubernetes manifests against the API schemas
# (kubernetes-validate, from PyPI, strict: unknown fields fail), and the
# compose file and Dockerfile against what the workspace builds. No Docker
# engine is needed (none runs on the machines this is tested on).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/deploy-venv
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check kubernetes-validate pyyaml
fi
"$venv/bin/kubernetes-validate" --strict --quiet deploy/k8s/*.yaml
"$venv/bin/python" - <<'PY'
import re, sys, yaml

compose = yaml.safe_load(open("deploy/compose.yaml"))
services = compose["services"]
planes = [n for n in services if n.startswith("data-plane-")]
assert "control-plane" in services and "demo-backend" in services, services.keys()
assert len(planes) == 3, planes
for name in planes:
    env = services[name]["environment"]
    assert env["PORTICO_CONTROL_PLANE"] == "http://control-plane:8182", name
    assert services[name]["entrypoint"] == ["/usr/local/bin/portico-dp"], name
build = services["control-plane"]["build"]
dockerfile = open("deploy/" + build["dockerfile"].split("/", 1)[1]).read()
assert dockerfile.count("FROM ") == 2, "a multi-stage build"
cargo = open("control-plane/Cargo.toml").read() + open("data-plane/Cargo.toml").read()
bins = set(re.findall(r'name = "([\w-]+)"\npath', cargo))
for b in ("portico-cp", "portico-dp", "porticoctl"):
    assert b in bins, f"{b} is not a workspace binary"
    assert f"target/release/{b}" in dockerfile, f"the Dockerfile does not ship {b}"
for doc in yaml.safe_load_all(open("deploy/k8s/data-plane.yaml")):
    if doc["kind"] == "Deployment":
        c = doc["spec"]["template"]["spec"]["containers"][0]
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
        assert doc["spec"]["replicas"] == 3
print("deploy: manifests, compose file and Dockerfile check out")
PY
