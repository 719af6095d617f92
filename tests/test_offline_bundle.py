"""scripts/offline-bundle.sh end to end, and the bundle's load-images.sh on the inside.

Two tiny images stand in for the api and worker images: podman builds them into a
throw-away storage (FROM scratch, no base image, no network), tagged as `make images`
tags the real ones. The bundled database and Redis point at a registry on a closed
loopback port: skopeo is installed but cannot reach it, as on a build machine without
internet. The pushes go to a real OCI distribution registry (Debian's docker-registry)
on loopback. podman, skopeo and docker-registry are installed with apt when missing,
as `make chromium` does for the browser tests.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.helpers import free_port, wait_until
from tests.processes import helm_path

ROOT = Path(__file__).resolve().parent.parent
BUNDLE_SCRIPT = ROOT / "scripts" / "offline-bundle.sh"
CHART = ROOT / "helm" / "oculab"
APT_PACKAGES = {"podman": "podman", "skopeo": "skopeo", "docker-registry": "docker-registry"}
# Nothing listens on port 9 (discard) of the loopback: a registry that cannot be reached.
UNREACHABLE = "127.0.0.1:9"


def _app_version() -> str:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    return str(chart["appVersion"])


def _ensure_tools() -> None:
    missing = [package for tool, package in APT_PACKAGES.items() if not shutil.which(tool)]
    if not missing:
        return
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", *missing]):
        result = subprocess.run([*sudo, *command], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            pytest.fail(f"these tests need {', '.join(missing)}; apt failed:\n{result.stderr}")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """podman and skopeo on a private storage: the host's images are neither seen nor touched."""
    _ensure_tools()
    base = tmp_path_factory.mktemp("containers")
    storage = base / "storage.conf"
    storage.write_text(
        f'[storage]\ndriver = "vfs"\ngraphroot = "{base / "graph"}"\nrunroot = "{base / "run"}"\n'
    )
    (base / "auth.json").write_text("{}")  # no credentials: the test registry takes none
    registries = base / "registries.conf"
    registries.write_text('unqualified-search-registries = []\nshort-name-mode = "permissive"\n')
    return {
        **os.environ,
        "CONTAINERS_STORAGE_CONF": str(storage),
        "CONTAINERS_REGISTRIES_CONF": str(registries),
        "REGISTRY_AUTH_FILE": str(base / "auth.json"),
        "HELM": str(helm_path()),
        "DOCKER": "",
        "PULL_TIMEOUT": "60",
    }


def _run(
    command: list[str], env: dict[str, str], cwd: Path = ROOT, timeout: int = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def local_images(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Two tiny images, tagged like `make images` tags the real ones."""
    refs = []
    for name in ("oculab-api", "oculab-worker"):
        context = tmp_path_factory.mktemp(name)
        (context / "hello.txt").write_text(f"{name}: a stand-in for the real image\n")
        (context / "Containerfile").write_text(
            f'FROM scratch\nCOPY hello.txt /hello.txt\nLABEL org.oculab.test="{name}"\n'
        )
        ref = f"ghcr.io/oculab/{name}:{_app_version()}"
        result = _run(["podman", "build", "-q", "-t", ref, str(context)], env)
        assert result.returncode == 0, result.stderr
        refs.append(ref)
    return refs


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, env: dict[str, str]) -> Iterator[str]:
    """A real OCI distribution registry on loopback (plain HTTP, no auth)."""
    base = tmp_path_factory.mktemp("registry")
    port = free_port()
    config = base / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log: {level: warn}\n"
        f"storage: {{filesystem: {{rootdirectory: {base / 'data'}}}}}\n"
        f"http: {{addr: '127.0.0.1:{port}'}}\n"
    )
    log = (base / "registry.log").open("w")
    process = subprocess.Popen(
        ["docker-registry", "serve", str(config)], stdout=log, stderr=subprocess.STDOUT
    )
    address = f"127.0.0.1:{port}"
    try:

        def serving() -> bool:
            try:
                with urllib.request.urlopen(f"http://{address}/v2/", timeout=2):
                    return True
            except OSError:
                if process.poll() is not None:
                    pytest.fail(
                        f"the registry did not start: {(base / 'registry.log').read_text()}"
                    )
                return False

        wait_until(
            serving,
            20,
            lambda: f"the registry did not start: {(base / 'registry.log').read_text()}",
            0.2,
        )
        yield address
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


@pytest.fixture(scope="module")
def bundle(
    env: dict[str, str], local_images: list[str], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """The bundle, built and unpacked: local images, unreachable database and Redis images."""
    work = tmp_path_factory.mktemp("bundle")
    values = work / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "postgresql": {"enabled": True},
                "redis": {"enabled": True},
                "images": {
                    "postgresql": {"registry": UNREACHABLE},
                    "redis": {"registry": UNREACHABLE},
                },
                # Set in the values, yet the bundle lists where the images come from.
                "global": {"imageRegistry": "registry.lab.example:5000"},
            }
        )
    )
    weights = work / "yolo-tiny.pt"
    weights.write_bytes(b"stand-in weights: uploaded after install, never loaded here")
    out = work / "dist"
    result = _run(
        [
            "bash", str(BUNDLE_SCRIPT), "--output", str(out), "-f", str(values),
            "--weights", str(weights),
        ],
        env,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    archive = out / f"oculab-offline-{_app_version()}.tar.gz"
    with tarfile.open(archive) as tar:
        tar.extractall(work / "unpacked", filter="data")
    return work / "unpacked" / f"oculab-offline-{_app_version()}", result


def _digest_of_tag(env: dict[str, str], ref: str) -> str:
    result = _run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"], env)
    assert result.returncode == 0, result.stderr
    return "sha256:" + hashlib.sha256(result.stdout.encode()).hexdigest()


def test_bundle_saves_local_images_and_lists_what_it_could_not_save(
    bundle: tuple[Path, subprocess.CompletedProcess[str]], local_images: list[str]
) -> None:
    root, result = bundle
    version = _app_version()
    images = (root / "images.txt").read_text().split()
    # Source references, not the values file's global.imageRegistry.
    assert sorted(images) == sorted(
        [
            *local_images,
            f"{UNREACHABLE}/library/postgres:17.6",
            f"{UNREACHABLE}/library/redis:7.4.5",
        ]
    ), images
    for ref in local_images:
        assert (root / "images" / f"{ref.replace('/', '_').replace(':', '_')}.oci.tar").is_file()
    not_saved = (root / "images" / "NOT-SAVED.txt").read_text()
    assert f"{UNREACHABLE}/library/postgres:17.6" in not_saved
    assert f"{UNREACHABLE}/library/redis:7.4.5" in not_saved
    assert "oculab-api" not in not_saved
    assert "NOT saved" in result.stderr
    assert "2 of 4 saved" in (root / "README.md").read_text()
    assert (root / "weights" / "yolo-tiny.pt").is_file()
    assert (root / "chart" / f"oculab-{version}.tgz").is_file()
    assert (root / "values" / "production.yaml").is_file()
    digests = yaml.safe_load((root / "values" / "image-digests.yaml").read_text())["images"]
    assert set(digests) == {"api", "worker"}
    assert all(entry["digest"].startswith("sha256:") for entry in digests.values())
    checked = subprocess.run(
        ["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=root, capture_output=True, check=False
    )
    assert checked.returncode == 0, checked.stdout
    listed = {line.split()[1] for line in (root / "SHA256SUMS").read_text().splitlines()}
    assert "./weights/yolo-tiny.pt" in listed
    assert "./load-images.sh" in listed


def test_pushed_images_keep_the_bundled_digests(
    bundle: tuple[Path, subprocess.CompletedProcess[str]], registry: str, env: dict[str, str]
) -> None:
    root, _ = bundle
    result = _run(["./load-images.sh", "--insecure", registry], {**env, "TOOL": "skopeo"}, cwd=root)
    # The two images that are not in the bundle are skipped, loudly.
    assert result.returncode == 1, result.stderr
    assert "library/postgres:17.6 is not in this bundle" in result.stderr
    bundled = yaml.safe_load((root / "values" / "image-digests.yaml").read_text())["images"]
    pushed = yaml.safe_load((root / "pushed-digests.yaml").read_text())["images"]
    assert pushed == bundled
    version = _app_version()
    for key, repository in (("api", "oculab/oculab-api"), ("worker", "oculab/oculab-worker")):
        assert _digest_of_tag(env, f"{registry}/{repository}:{version}") == bundled[key]["digest"]

    # The chart, pointed at the lab's registry and pinned by the bundle's digests, names
    # images that the registry serves.
    rendered = _run(
        [
            env["HELM"], "template", "oculab", str(root / "chart" / f"oculab-{version}.tgz"),
            "--set", f"global.imageRegistry={registry}",
            "--set", "database.url=postgresql+psycopg://oculab@db.lab.example/oculab",
            "--set", "broker.url=redis://redis.lab.example:6379/0",
            "-f", str(root / "values" / "image-digests.yaml"),
        ],
        env,
    )  # fmt: skip
    assert rendered.returncode == 0, rendered.stderr
    refs = {
        line.split("image:", 1)[1].strip().strip('"')
        for line in rendered.stdout.splitlines()
        if line.strip().startswith("image:")
    }
    assert f"{registry}/oculab/oculab-api@{bundled['api']['digest']}" in refs
    for ref in refs:
        found = _run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"], env)
        assert found.returncode == 0, f"{ref}: {found.stderr}"


def test_podman_push_records_the_digests_the_registry_has(
    bundle: tuple[Path, subprocess.CompletedProcess[str]], registry: str, env: dict[str, str]
) -> None:
    root, _ = bundle
    target = f"{registry}/podman"
    result = _run(["./load-images.sh", "--insecure", target], {**env, "TOOL": "podman"}, cwd=root)
    assert result.returncode == 1, result.stderr  # the two missing images again
    pushed = yaml.safe_load((root / "pushed-digests.yaml").read_text())["images"]
    version = _app_version()
    for key, repository in (("api", "oculab/oculab-api"), ("worker", "oculab/oculab-worker")):
        assert _digest_of_tag(env, f"{target}/{repository}:{version}") == pushed[key]["digest"]


def test_bundle_without_skopeo_podman_or_docker_says_so(
    env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "dist"
    result = _run(
        ["bash", str(BUNDLE_SCRIPT), "--output", str(out)],
        {**env, "SKOPEO": "", "PODMAN": "", "DOCKER": ""},
    )
    assert result.returncode == 0, result.stderr
    assert "images NOT saved: none of skopeo, podman or docker is installed" in result.stderr
    with tarfile.open(out / f"oculab-offline-{_app_version()}.tar.gz") as tar:
        names = tar.getnames()
    assert any(name.endswith("images/NOT-SAVED.txt") for name in names)
    assert not any(name.endswith(".oci.tar") for name in names)


def test_bundle_refuses_weights_that_are_not_pt_files(env: dict[str, str], tmp_path: Path) -> None:
    notes = tmp_path / "weights.txt"
    notes.write_text("not weights")
    result = _run(
        ["bash", str(BUNDLE_SCRIPT), "--output", str(tmp_path), "--weights", str(notes)], env
    )
    assert result.returncode == 2
    assert "--weights needs an existing .pt file" in result.stderr
