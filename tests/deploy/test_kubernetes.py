"""deploy/kubernetes against Kubernetes and against the code. There is no cluster here,
so each overlay is rendered by ``kubectl kustomize`` (kubectl is required: .ci/run
installs it) and checked:

- every object validates strictly (no unknown field) against the OpenAPI schemas of
  Kubernetes itself (``kubernetes-validate``, Kubernetes ``K8S_VERSION``); the custom
  resources (KEDA's ScaledObject, the Prometheus Operator's ServiceMonitor) against
  closed excerpts of their CRDs' schemas committed in ``tests/deploy/crds/``, and the
  KEDA redis trigger's metadata against the keys KEDA's redis scaler reads;
- every environment variable given to a container is read by the settings class of its
  process (collected from the pydantic-settings classes), every port a container
  declares is one its program serves, and every probe or scrape path is a route of
  ``service.app.create_app``;
- what the deployment relies on: the worker's queue is the list KEDA counts, Redis is
  reachable only from the API and the workers (and KEDA), the store is one
  ReadWriteMany claim mounted at AAE_MODEL_DIR by both, every pod runs as non-root on
  a read-only root, a GPU for each worker in the GPU overlay only.

A test with a deliberately broken copy of a rendered Deployment shows that the checks
of the code's names fail when they should.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from pydantic_settings import BaseSettings
from rq import Queue
from starlette.routing import Match, Mount

from service.app import create_app
from service.settings import ServiceSettings
from tests.test_compose import env_names
from worker.settings import WorkerSettings

ROOT = Path(__file__).resolve().parents[2]
KUSTOMIZE = ROOT / "deploy" / "kubernetes"
OVERLAYS = ["cpu", "gpu"]
K8S_VERSION = "1.32.0"  # kubectl's own minor here; kubernetes-validate ships its schemas
CRD_SCHEMAS = {"ScaledObject": "scaledobject.yaml", "ServiceMonitor": "servicemonitor.yaml"}
# What KEDA's redis scaler reads from a trigger's metadata (keda.sh/docs/2.x/scalers/redis-lists)
KEDA_REDIS_KEYS = {"address", "addressFromEnv", "host", "hostFromEnv", "port", "portFromEnv",
                   "username", "usernameFromEnv", "passwordFromEnv", "databaseIndex",
                   "listName", "listLength", "activationListLength", "enableTLS",
                   "unsafeSsl"}
APP_IMAGE = "aae-serving"
SETTINGS: dict[str, type[BaseSettings]] = {"api": ServiceSettings, "worker": WorkerSettings}
# variables that are not settings, and what reads each
OTHER_ENV = {"MPLCONFIGDIR": "matplotlib (service.figures): its cache, on a read-only root"}
REDIS_PORT = 6379  # redis-server's default; the manifest passes no --port


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.skip("kubectl is not installed (.ci/run installs it)")
    return path


def render(directory: Path) -> list[dict[str, Any]]:
    result = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(KUSTOMIZE / "overlays" / request.param)


@pytest.fixture(scope="module")
def with_servicemonitor(tmp_path_factory) -> list[dict[str, Any]]:
    """The CPU overlay with the optional servicemonitor component, as docs/deploy.md
    says to add it."""
    directory = tmp_path_factory.mktemp("overlay")
    (directory / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [os.path.relpath(KUSTOMIZE / "overlays" / "cpu", directory)],
        "components": [os.path.relpath(KUSTOMIZE / "components" / "servicemonitor",
                                       directory)]}))
    return render(directory)


@pytest.fixture(scope="module")
def app():
    return create_app(ServiceSettings())


def find(objects: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [o for o in objects if o["kind"] == kind
            and (name is None or o["metadata"]["name"] == name)]


def one(objects: list[dict], kind: str, name: str) -> dict:
    found = find(objects, kind, name)
    assert len(found) == 1, f"{kind}/{name}: {len(found)} rendered"
    return found[0]


def pod_spec(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def selects(selector: dict, labels: dict) -> bool:
    """Whether a LabelSelector (matchLabels, matchExpressions with In) selects labels."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In", expression
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def component(workload: dict) -> str:
    return workload["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]


def container_env(container: dict, objects: list[dict]) -> dict[str, Any]:
    """A container's variables: its env, and the data of the ConfigMaps of its envFrom."""
    names: dict[str, Any] = {}
    for source in container.get("envFrom", []):
        config_map = one(objects, "ConfigMap", source["configMapRef"]["name"])
        names.update(config_map["data"])
    for variable in container.get("env", []):
        names[variable["name"]] = variable.get("value", variable.get("valueFrom"))
    return names


def served_ports(container: dict) -> set[int]:
    """The ports a container's program listens on: the API's uvicorn --port (the image's
    CMD unless the container gives a command), Redis' default; a worker serves none."""
    if container["image"].startswith("redis:"):
        assert "--port" not in container.get("args", [])
        return {REDIS_PORT}
    command = container.get("command") or image_command()
    if command[0] == "uvicorn":
        return {int(command[command.index("--port") + 1])}
    return set()


def image_command() -> list[str]:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    cmd = re.search(r"^CMD (\[.*\])$", dockerfile, re.M)
    assert cmd, "the Dockerfile has no CMD"
    return yaml.safe_load(cmd.group(1))


def serves(app, path: str) -> bool:
    """Whether ``GET path`` reaches a route of the app (not a static mount's 404)."""
    scope = {"type": "http", "path": path, "method": "GET", "root_path": "",
             "path_params": {}, "app": app}
    return any(route.matches(scope)[0] is Match.FULL for route in app.router.routes
               if not isinstance(route, Mount))


def code_mismatches(workload: dict, objects: list[dict], app) -> list[str]:
    """What a workload names that the code does not have: variables no settings class of
    its process reads, ports its program does not serve, probe paths that are no route."""
    problems = []
    for container in pod_spec(workload)["containers"]:
        name = f"{workload['metadata']['name']}/{container['name']}"
        served = served_ports(container)
        declared = {p["containerPort"]: p.get("name") for p in container.get("ports", [])}
        problems += [f"{name}: port {port} is not served" for port in declared
                     if port not in served]
        if not container["image"].startswith(APP_IMAGE):
            continue
        readable = env_names(SETTINGS[component(workload)]) | set(OTHER_ENV)
        problems += [f"{name}: {variable} is read by no setting"
                     for variable in container_env(container, objects)
                     if variable not in readable]
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            http = container.get(probe, {}).get("httpGet")
            if http is None:
                continue
            port = http["port"]
            port = next((p for p, n in declared.items() if n == port), None) \
                if isinstance(port, str) else port
            if port not in served:
                problems.append(f"{name}: {probe} on port {http['port']}, not served")
            if not serves(app, http["path"]):
                problems.append(f"{name}: {probe} path {http['path']} is no route")
    return problems


# -- Kubernetes' schemas and the CRDs' ---------------------------------------------------------

def test_both_overlays_render_every_part(overlay):
    _, objects = overlay
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert {("Deployment", "aae-api"), ("Service", "aae-api"), ("Ingress", "aae-api"),
            ("PodDisruptionBudget", "aae-api"), ("HorizontalPodAutoscaler", "aae-api"),
            ("Deployment", "aae-worker"), ("ScaledObject", "aae-worker"),
            ("StatefulSet", "aae-redis"), ("Service", "aae-redis"),
            ("NetworkPolicy", "aae-redis"), ("PersistentVolumeClaim", "aae-store")} <= kinds


def test_every_object_validates_strictly(overlay, with_servicemonitor):
    name, objects = overlay
    custom = set(CRD_SCHEMAS)
    for obj in objects + (with_servicemonitor if name == "cpu" else []):
        where = f"{name}: {obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] in custom:
            schema = yaml.safe_load((ROOT / "tests" / "deploy" / "crds" /
                                     CRD_SCHEMAS[obj["kind"]]).read_text(encoding="utf-8"))
            errors = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(obj)]
            assert not errors, f"{where}: {errors}"
        else:
            try:
                kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{where}: {exc.message} at {list(exc.path)}")


def test_the_crd_excerpts_are_closed():
    """An open schema would let any field through: every object in the excerpts is
    closed, and a field the CRD does not have is refused."""
    def objects(node: Any):
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                yield node
            for value in node.values():
                yield from objects(value)
        elif isinstance(node, list):
            for value in node:
                yield from objects(value)
    for file in CRD_SCHEMAS.values():
        schema = yaml.safe_load((ROOT / "tests" / "deploy" / "crds" / file).read_text())
        assert all(o.get("additionalProperties") is False for o in objects(schema)), file
    scaled = yaml.safe_load((ROOT / "tests" / "deploy" / "crds" / "scaledobject.yaml").read_text())
    wrong = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
             "metadata": {"name": "x"}, "spec": {"scaleTargetRef": {"name": "x"},
                                                 "triggers": [], "minReplicas": 0}}
    assert not jsonschema.Draft7Validator(scaled).is_valid(wrong)


# -- the manifests against the code ------------------------------------------------------------

def test_variables_ports_and_probes_are_the_codes(overlay, app):
    _, objects = overlay
    for workload in find(objects, "Deployment") + find(objects, "StatefulSet"):
        assert code_mismatches(workload, objects, app) == []


def test_the_checks_catch_what_the_code_lacks(overlay, app):
    """A setting that does not exist, a port nothing serves, a probe on no route."""
    _, objects = overlay
    api = copy.deepcopy(one(objects, "Deployment", "aae-api"))
    container = pod_spec(api)["containers"][0]
    container["env"].append({"name": "AAE_WORKER_DEVICE", "value": "cuda"})  # the worker's
    container["ports"].append({"name": "extra", "containerPort": 9000})
    container["readinessProbe"]["httpGet"]["path"] = "/ready"
    assert sorted(code_mismatches(api, objects, app)) == [
        "aae-api/api: AAE_WORKER_DEVICE is read by no setting",
        "aae-api/api: port 9000 is not served",
        "aae-api/api: readinessProbe path /ready is no route"]


def test_services_ingress_and_scraping_reach_served_ports_and_routes(overlay, with_servicemonitor,
                                                                     app):
    _, objects = overlay
    workloads = find(objects, "Deployment") + find(objects, "StatefulSet")

    def target(service: dict, port_name: str) -> None:
        pods = [w for w in workloads if selects({"matchLabels": service["spec"]["selector"]},
                                                w["spec"]["template"]["metadata"]["labels"])]
        assert pods, f"Service {service['metadata']['name']} selects no pods"
        port = next(p for p in service["spec"]["ports"] if p["name"] == port_name)
        for workload in pods:
            named = {p.get("name"): p["containerPort"] for c in pod_spec(workload)["containers"]
                     for p in c.get("ports", [])}
            assert port["targetPort"] in named or port["targetPort"] in named.values()

    for service in find(objects, "Service"):
        for port in service["spec"]["ports"]:
            target(service, port["name"])
    for rule in one(objects, "Ingress", "aae-api")["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            target(one(objects, "Service", backend["name"]), backend["port"]["name"])
    api = one(objects, "Deployment", "aae-api")
    annotations = api["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert serves(app, annotations["prometheus.io/path"])
    assert int(annotations["prometheus.io/port"]) in served_ports(pod_spec(api)["containers"][0])
    monitor = one(with_servicemonitor, "ServiceMonitor", "aae-api")
    service = one(with_servicemonitor, "Service", "aae-api")
    assert selects(monitor["spec"]["selector"], service["metadata"]["labels"])
    for endpoint in monitor["spec"]["endpoints"]:
        assert serves(app, endpoint["path"])
        target(service, endpoint["port"])


# -- what the deployment relies on -------------------------------------------------------------

def test_keda_counts_the_workers_queue_in_this_redis(overlay):
    _, objects = overlay
    worker = one(objects, "Deployment", "aae-worker")
    scaled = one(objects, "ScaledObject", "aae-worker")
    assert scaled["spec"]["scaleTargetRef"]["name"] == worker["metadata"]["name"]
    assert scaled["spec"]["minReplicaCount"] == 0 < scaled["spec"]["maxReplicaCount"]
    assert "replicas" not in worker["spec"]  # KEDA owns the count; an apply must not reset it
    [trigger] = scaled["spec"]["triggers"]
    assert trigger["type"] == "redis"
    assert set(trigger["metadata"]) <= KEDA_REDIS_KEYS
    env = container_env(pod_spec(worker)["containers"][0], objects)
    settings = WorkerSettings(redis_url=env["AAE_REDIS_URL"], queue=env["AAE_QUEUE"])
    assert trigger["metadata"]["listName"] == Queue.redis_queue_namespace_prefix + settings.queue
    # the workers' Redis, by the name KEDA's operator (in its own namespace) resolves
    redis = one(objects, "Service", "aae-redis")
    host, port = trigger["metadata"]["address"].rsplit(":", 1)
    namespace = redis["metadata"]["namespace"]
    assert host == f"aae-redis.{namespace}.svc.cluster.local"
    assert settings.redis_url == f"redis://aae-redis:{port}/{trigger['metadata']['databaseIndex']}"
    assert int(port) in {p["port"] for p in redis["spec"]["ports"]}


def test_only_the_api_workers_and_keda_reach_redis(overlay):
    _, objects = overlay
    policy = one(objects, "NetworkPolicy", "aae-redis")["spec"]
    redis = one(objects, "StatefulSet", "aae-redis")
    assert selects(policy["podSelector"], redis["spec"]["template"]["metadata"]["labels"])
    assert policy["policyTypes"] == ["Ingress"]
    [rule] = policy["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": REDIS_PORT}]
    same_namespace = [peer["podSelector"] for peer in rule["from"] if set(peer) == {"podSelector"}]
    allowed = {component(w) for w in find(objects, "Deployment") + find(objects, "StatefulSet")
               if any(selects(s, w["spec"]["template"]["metadata"]["labels"])
                      for s in same_namespace)}
    assert allowed == {"api", "worker"}
    [keda] = [peer for peer in rule["from"] if "namespaceSelector" in peer]
    assert keda["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "keda"}}


def test_redis_keeps_its_append_only_file_on_a_claim(overlay):
    _, objects = overlay
    redis = one(objects, "StatefulSet", "aae-redis")
    [container] = pod_spec(redis)["containers"]
    args = container["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    data_dir = args[args.index("--dir") + 1]
    [claim] = redis["spec"]["volumeClaimTemplates"]
    assert {m["name"]: m["mountPath"] for m in container["volumeMounts"]}[
        claim["metadata"]["name"]] == data_dir


def test_api_and_workers_share_one_readwritemany_store_at_the_model_dir(overlay):
    _, objects = overlay
    claims = set()
    for name in ("aae-api", "aae-worker"):
        workload = one(objects, "Deployment", name)
        [container] = pod_spec(workload)["containers"]
        model_dir = container_env(container, objects)["AAE_MODEL_DIR"]
        [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == model_dir]
        assert not mount.get("readOnly", False)
        [volume] = [v for v in pod_spec(workload)["volumes"] if v["name"] == mount["name"]]
        claims.add(volume["persistentVolumeClaim"]["claimName"])
    [claim] = claims
    assert one(objects, "PersistentVolumeClaim", claim)["spec"]["accessModes"] == ["ReadWriteMany"]


def test_every_pod_is_non_root_on_a_read_only_root_with_a_writable_tmp(overlay):
    _, objects = overlay
    for workload in find(objects, "Deployment") + find(objects, "StatefulSet"):
        spec = pod_spec(workload)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] > 0
        for container in spec["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"]["drop"] == ["ALL"]
            if container["image"].startswith(APP_IMAGE):  # tempfile, matplotlib's cache
                mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
                volumes = {v["name"]: v for v in spec["volumes"]}
                assert "emptyDir" in volumes[mounts["/tmp"]]
            if component(workload) == "api":  # the figures: matplotlib's cache
                assert container_env(container, objects)["MPLCONFIGDIR"].startswith("/tmp/")


def test_the_api_is_replicated_probed_budgeted_and_autoscaled(overlay):
    _, objects = overlay
    api = one(objects, "Deployment", "aae-api")
    hpa = one(objects, "HorizontalPodAutoscaler", "aae-api")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": "aae-api"}
    assert hpa["spec"]["minReplicas"] >= 2 and "replicas" not in api["spec"]
    pdb = one(objects, "PodDisruptionBudget", "aae-api")
    assert selects(pdb["spec"]["selector"], api["spec"]["template"]["metadata"]["labels"])
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]  # a drain can proceed
    [container] = pod_spec(api)["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    key = container_env(container, objects)["AAE_API_KEY"]
    assert key == {"secretKeyRef": {"name": "aae-api-key", "key": "api-key"}}


def test_gpus_go_to_the_workers_of_the_gpu_overlay_only(overlay):
    name, objects = overlay
    worker = one(objects, "Deployment", "aae-worker")
    [container] = pod_spec(worker)["containers"]
    env = container_env(container, objects)
    gpus = container["resources"]["limits"].get("nvidia.com/gpu")
    assert (gpus, env["AAE_WORKER_DEVICE"]) == ((1, "cuda") if name == "gpu" else (None, "cpu"))
    assert container["image"] == f"{APP_IMAGE}:{'cuda' if name == 'gpu' else 'cpu'}"
    [api] = pod_spec(one(objects, "Deployment", "aae-api"))["containers"]
    assert "nvidia.com/gpu" not in api["resources"].get("limits", {})
    assert api["image"] == f"{APP_IMAGE}:cpu"
    # a stopped worker has several epochs' time to save a resumable state (every epoch)
    assert int(env["AAE_CHECKPOINT_EVERY"]) == 1
    assert pod_spec(worker)["terminationGracePeriodSeconds"] >= 300
