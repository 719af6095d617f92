"""What the Dockerfile and its lock files promise, read from the files themselves.

A real image build takes minutes and a registry for the base images, so it is a manual
check (docs/install.md, "Images"); these tests hold the properties that make that build
work offline and reproducibly: no frontend image to fetch, bases pinned by digest,
mirror and CA build arguments, dependencies before code, and every wheel pinned by hash
from one index at a time.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
REQUIREMENTS = ROOT / "requirements"
HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[str] = field(default_factory=list)

    def args(self) -> dict[str, str]:
        found = {}
        for line in self.instructions:
            if line.startswith("ARG "):
                name, _, default = line[4:].partition("=")
                found[name.strip()] = default.strip().strip('"')
        return found

    def index(self, prefix: str) -> int:
        return next(i for i, line in enumerate(self.instructions) if line.startswith(prefix))


def _instructions(text: str) -> list[str]:
    """Dockerfile instructions with continuation lines joined and comments dropped."""
    joined, current = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        current = f"{current} {line}" if current else line
        if current.endswith("\\"):
            current = current[:-1].rstrip()
            continue
        joined.append(current)
        current = ""
    return joined


def _parse() -> tuple[dict[str, str], dict[str, Stage]]:
    global_args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    stage: Stage | None = None
    for line in _instructions(DOCKERFILE.read_text()):
        if line.startswith("FROM "):
            parts = line.split()
            stage = Stage(name=parts[3], base=parts[1])
            stages[stage.name] = stage
        elif stage is None and line.startswith("ARG "):
            name, _, default = line[4:].partition("=")
            global_args[name.strip()] = default.strip()
        elif stage is not None:
            stage.instructions.append(line)
    return global_args, stages


def _lock(path: Path) -> dict[str, str]:
    """name -> version; fails on any requirement without a pinned version and a hash."""
    versions = {}
    text = path.read_text()
    blocks = re.split(r"(?m)^(?=[A-Za-z0-9])", "\n".join(
        line for line in text.splitlines() if not line.startswith("#")
    ))  # fmt: skip
    for block in filter(str.strip, blocks):
        match = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", block)
        assert match, f"{path.name}: not pinned with ==: {block!r}"
        assert HASH.search(block), f"{path.name}: no sha256 hash for {match.group(1)}"
        versions[match.group(1).lower()] = match.group(2)
    assert versions, f"{path.name} is empty"
    return versions


def _tested() -> dict[str, str]:
    versions = {}
    for line in (REQUIREMENTS / "ml.lock").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            versions[re.sub(r"[-_.]+", "-", name).lower()] = version.strip()
    return versions


def _torch_locks() -> list[Path]:
    locks = sorted(REQUIREMENTS.glob("torch-*.lock"))
    assert locks, "no requirements/torch-*.lock"
    return locks


def test_dockerfile_asks_for_no_frontend_image() -> None:
    # `# syntax=` makes BuildKit pull docker/dockerfile from Docker Hub before building.
    assert not re.search(r"(?im)^#\s*syntax\s*=", DOCKERFILE.read_text())


def test_base_images_are_pinned_by_digest_through_build_arguments() -> None:
    global_args, stages = _parse()
    for name in ("PYTHON_IMAGE", "NODE_IMAGE"):
        assert re.fullmatch(r"\S+:\S+@sha256:[0-9a-f]{64}", global_args[name]), name
    external = {stage.base for stage in stages.values() if stage.base not in stages}
    assert external == {"${PYTHON_IMAGE}", "${NODE_IMAGE}"}


def test_every_download_goes_through_a_mirror_build_argument() -> None:
    _, stages = _parse()
    assert {"NPM_REGISTRY", "CA_BUNDLE"} <= stages["web"].args().keys()
    assert {"PIP_INDEX_URL", "CA_BUNDLE"} <= stages["build-base"].args().keys()
    assert {"TORCH_VARIANT", "TORCH_INDEX_URL"} <= stages["build-worker"].args().keys()
    npm = " ".join(stages["web"].instructions)
    assert '--registry "$NPM_REGISTRY"' in npm
    # No system packages: nothing that would need a Debian mirror.
    assert "apt-get" not in DOCKERFILE.read_text()


def test_torch_comes_from_one_index_and_every_wheel_is_hash_checked() -> None:
    _, stages = _parse()
    assert not any(
        "--extra-index-url" in line or "PIP_EXTRA_INDEX_URL" in line
        for stage in stages.values()
        for line in stage.instructions
    )
    installs = [
        command
        for stage in stages.values()
        for line in stage.instructions
        for command in line.split("&&")
        if re.search(r"\bpip install\b", command)
    ]
    assert installs
    for command in installs:
        if " -r " in command:
            assert "--require-hashes" in command, command
            assert "--no-deps" in command, command
            assert "--only-binary :all:" in command, command
        else:
            # Local sources only (Oculab, the opencv-python provider): no index at all.
            assert "--no-index" in command, command
            assert "--no-deps" in command, command
    torch_install = next(c for c in installs if "$lock" in c)
    assert '--index-url "${index:-$PIP_INDEX_URL}"' in torch_install


@pytest.mark.parametrize("stage_name", ["build-api", "build-worker"])
def test_dependencies_install_before_the_code_is_copied(stage_name: str) -> None:
    stage = _parse()[1][stage_name]
    first_code = stage.index("COPY server")
    last_locked = max(i for i, line in enumerate(stage.instructions) if "--require-hashes" in line)
    assert last_locked < first_code
    # Only lock files reach the dependency layers: a code change leaves them cached.
    copies_before = [line for line in stage.instructions[:last_locked] if line.startswith("COPY")]
    assert copies_before
    assert all("requirements/" in line for line in copies_before), copies_before


def test_default_torch_variant_is_a_cuda_12_build() -> None:
    variant = _parse()[1]["build-worker"].args()["TORCH_VARIANT"]
    assert variant == "cu126"
    install = (ROOT / "docs" / "install.md").read_text()
    assert "535" in install
    assert "cu126" in install


def test_every_lock_pins_a_version_and_a_hash_per_package() -> None:
    for path in [REQUIREMENTS / "api.lock", REQUIREMENTS / "worker.lock", *_torch_locks()]:
        _lock(path)


def test_image_locks_carry_the_versions_the_tests_ran_with() -> None:
    tested = _tested()
    for path in [REQUIREMENTS / "api.lock", REQUIREMENTS / "worker.lock", *_torch_locks()]:
        for name, version in _lock(path).items():
            if name in tested:
                assert version.split("+")[0] == tested[name], f"{path.name}: {name}"
    worker = _lock(REQUIREMENTS / "worker.lock")
    assert worker["ultralytics"] == tested["ultralytics"]
    for path in _torch_locks():
        torch = _lock(path)
        assert torch["torch"].split("+")[0] == tested["torch"], path.name
        assert torch["torchvision"].split("+")[0] == tested["torchvision"], path.name


def test_worker_locks_split_without_overlap() -> None:
    worker = _lock(REQUIREMENTS / "worker.lock")
    assert "torch" not in worker
    assert "opencv-python" not in worker
    for path in _torch_locks():
        overlap = worker.keys() & _lock(path).keys()
        assert not overlap, f"{path.name} and worker.lock both pin {sorted(overlap)}"
        header = path.read_text()
        assert re.search(r"(?m)^# NVIDIA driver: ", header), path.name
        assert re.search(r"(?m)^# index: ", header), path.name


def test_api_image_lock_holds_no_ml_library() -> None:
    api = _lock(REQUIREMENTS / "api.lock")
    assert not {"torch", "ultralytics", "opencv-python-headless", "numpy"} & api.keys()
    assert {"setuptools", "wheel", "fastapi"} <= api.keys()


def test_opencv_provider_stands_in_for_the_headless_build_of_the_same_version() -> None:
    provider = tomllib.loads(
        (REQUIREMENTS / "opencv-python-provider" / "pyproject.toml").read_text()
    )["project"]
    headless = _lock(REQUIREMENTS / "worker.lock")["opencv-python-headless"]
    assert provider["name"] == "opencv-python"
    assert provider["version"] == headless == _tested()["opencv-python"]
    assert provider["dependencies"] == [f"opencv-python-headless=={headless}"]
