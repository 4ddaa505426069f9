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
# The replicated control plane: etcd, every replica named, every data
# plane pointed at all of them.
ha = yaml.safe_load(open("deploy/compose-ha.yaml"))["services"]
replicas = sorted(n for n in ha if n.startswith("control-plane-"))
assert "etcd" in ha and len(replicas) == 3, ha.keys()
for name in replicas:
    env = ha[name]["environment"]
    assert env["PORTICO_STORE"] == "etcd" and env["PORTICO_ETCD_ENDPOINTS"] == "http://etcd:2379", name
    assert env["PORTICO_REPLICA_ID"] == name and env["PORTICO_ADVERTISE_GRPC"] == f"{name}:8182", name
for name in (n for n in ha if n.startswith("data-plane-")):
    urls = ha[name]["environment"]["PORTICO_CONTROL_PLANE"].split(",")
    assert sorted(urls) == [f"http://{r}:8182" for r in replicas], name
cp = [d for d in yaml.safe_load_all(open("deploy/k8s/control-plane.yaml")) if d]
sts = next(d for d in cp if d["kind"] == "StatefulSet")
assert sts["spec"]["replicas"] == 3
env = {e["name"]: e.get("value") for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]}
assert env["PORTICO_STORE"] == "etcd", "the replicas share etcd"
pods = next(d for d in cp if d["kind"] == "Service" and d["metadata"]["name"] == sts["spec"]["serviceName"])
assert pods["spec"]["clusterIP"] == "None", "per-replica names need a headless Service"
pdb = next(d for d in cp if d["kind"] == "PodDisruptionBudget")
assert pdb["spec"]["minAvailable"] == 2
for doc in yaml.safe_load_all(open("deploy/k8s/data-plane.yaml")):
    if doc["kind"] == "Deployment":
        c = doc["spec"]["template"]["spec"]["containers"][0]
        urls = next(e["value"] for e in c["env"] if e["name"] == "PORTICO_CONTROL_PLANE").split(",")
        assert urls == [f"http://{sts['metadata']['name']}-{i}.{sts['spec']['serviceName']}:8182" for i in range(3)], urls
etcd = next(d for d in yaml.safe_load_all(open("deploy/k8s/etcd.yaml")) if d["kind"] == "StatefulSet")
members = next(e["value"] for e in etcd["spec"]["template"]["spec"]["containers"][0]["env"] if e["name"] == "ETCD_INITIAL_CLUSTER")
assert len(members.split(",")) == etcd["spec"]["replicas"] == 3
for i in range(3):
    assert f"portico-etcd-{i}.portico-etcd:2379" in env["PORTICO_ETCD_ENDPOINTS"]
for doc in yaml.safe_load_all(open("deploy/k8s/data-plane.yaml")):
    if doc["kind"] == "Deployment":
        c = doc["spec"]["template"]["spec"]["containers"][0]
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
        assert doc["spec"]["replicas"] == 3
        env = {e["name"]: e.get("value") for e in c["env"]}
        seconds = lambda v: int(v.rstrip("s"))
        drain = seconds(env["PORTICO_SHUTDOWN_DELAY"]) + seconds(env["PORTICO_SHUTDOWN_GRACE"])
        assert doc["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > drain, \
            "the termination grace must cover the shutdown delay and grace"
for path, port in (("deploy/k8s/data-plane.yaml", "8184"), ("deploy/k8s/control-plane.yaml", "8183")):
    for doc in yaml.safe_load_all(open(path)):
        if doc["kind"] in ("Deployment", "StatefulSet"):
            notes = doc["spec"]["template"]["metadata"]["annotations"]
            assert notes["prometheus.io/scrape"] == "true" and notes["prometheus.io/port"] == port, path
unit = open("deploy/systemd/portico-dp.service").read()
assert "Type=notify" in unit and "NotifyAccess=all" in unit
assert "portico-dp --upgrade" in unit and "kill -QUIT" in unit, "reload is the upgrade path"
print("deploy: manifests, compose file, Dockerfile and systemd unit check out")
PY
# The Prometheus scrape config as Prometheus reads it.
./scripts/setup.sh promtool:prometheus
promtool check config --syntax-only deploy/prometheus.yml >/dev/null
# The unit file as systemd parses it (binaries and the env file are not
# installed here, so they are stood in for); any complaint fails.
./scripts/setup.sh systemd-analyze:systemd
unit_dir=$(mktemp -d)
trap 'rm -rf "$unit_dir"' EXIT
sed 's#/usr/local/bin/portico-dp#/bin/true#; s#^EnvironmentFile=.*#EnvironmentFile=-/dev/null#' \
  deploy/systemd/portico-dp.service > "$unit_dir/portico-dp.service"
complaints=$(systemd-analyze verify "$unit_dir/portico-dp.service" 2>&1)
if [ -n "$complaints" ]; then
  echo "deploy/systemd/portico-dp.service: $complaints" >&2
  exit 1
fi
