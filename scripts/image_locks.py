"""Writes the hash-pinned lock files the images install from (pip --require-hashes).

    python scripts/image_locks.py common            # requirements/api.lock, worker.lock
    python scripts/image_locks.py torch cu126       # requirements/torch-cu126.lock

The versions come from requirements/ml.lock (what the tests ran with); the hashes from
the index pip resolves against. Every lock is for the images' platform (CPython 3.11,
glibc 2.36 = Debian bookworm, x86_64), not for the machine that runs this script.

- api.lock: the API image (no extras) plus the build backend (setuptools, wheel), so
  the image builds Oculab itself without build isolation and every wheel is verified.
- worker.lock: the worker image minus torch's CUDA-specific part, from PyPI (or the
  lab's mirror). OpenCV is the headless build; requirements/opencv-python-provider
  declares that it provides `opencv-python`, which ultralytics depends on.
- torch-<variant>.lock: torch, torchvision and their CUDA libraries from the variant's
  own index. The Dockerfile installs it with `--index-url` (never `--extra-index-url`,
  which would let PyPI's build of the same version win).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "requirements"
TESTED = REQUIREMENTS / "ml.lock"

# The images' platform: python:3.11-slim-bookworm on amd64 (glibc 2.36).
PYTHON_VERSION = "3.11"
GLIBC_MINOR = 36
PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in range(GLIBC_MINOR, 4, -1)] + [
    "manylinux2014_x86_64",
    "manylinux2010_x86_64",
    "manylinux1_x86_64",
    "linux_x86_64",
]
# Building Oculab (pyproject.toml's build-system) and the opencv-python provider.
BUILD_REQUIREMENTS = ["setuptools>=77", "wheel"]
# pip evaluates dependency markers with the interpreter running it, not --python-version:
# what a marker adds on an older 3.11 patch release must be named here, or `pip check`
# fails in an image with that Python (redis needs async-timeout below 3.11.3).
MARKER_REQUIREMENTS = ["async-timeout>=4.0.3"]


@dataclass(frozen=True)
class Variant:
    """A build of torch: where it comes from and what it needs on the node."""

    index: str  # empty: pip's configured index (PyPI or the lab's mirror)
    local_version: str  # the "+cu126" part of the version on PyTorch's indexes
    driver: str  # the NVIDIA driver the node needs


# PyPI's Linux wheels of torch 2.14 are built for CUDA 13.0; PyTorch's own indexes carry
# the CUDA 12 builds. CUDA 12 builds run on any R525+ driver through CUDA's minor-version
# compatibility; R535 is the oldest long-term branch still supported by NVIDIA.
VARIANTS = {
    "cu126": Variant("https://download.pytorch.org/whl/cu126", "+cu126", ">= 535 (R535 LTSB)"),
    "cu128": Variant("https://download.pytorch.org/whl/cu128", "+cu128", ">= 570"),
    "cu130": Variant("", "", ">= 580 (R580)"),
    "cpu": Variant("https://download.pytorch.org/whl/cpu", "+cpu", "none (CPU only)"),
}

# Packages whose build depends on the CUDA variant: they come from the variant's index.
_CUDA_SPECIFIC = re.compile(r"^(torch|torchvision|triton|nvidia-.*|cuda-.*)$")
# ...except these, which Oculab itself requires and which PyPI serves for every variant.
_NOT_CUDA_SPECIFIC = {"nvidia-ml-py"}
# The worker uses OpenCV's headless build (no X11/GL libraries in the image).
_OPENCV_GUI = "opencv-python"
_OPENCV_HEADLESS = "opencv-python-headless"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def is_cuda_specific(name: str) -> bool:
    name = canonical(name)
    return bool(_CUDA_SPECIFIC.match(name)) and name not in _NOT_CUDA_SPECIFIC


def tested_versions() -> dict[str, str]:
    versions = {}
    for line in TESTED.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            versions[canonical(name)] = version.strip()
    return versions


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    sha256: str

    def line(self) -> str:
        return f"{self.name}=={self.version} \\\n    --hash=sha256:{self.sha256}"


def resolve(
    requirements: list[str],
    constraints: list[str],
    index: str | None = None,
    *,
    no_deps: bool = False,
) -> list[Pin]:
    """pip's resolution for the images' platform, with the hash of each chosen wheel."""
    with tempfile.TemporaryDirectory() as tmp:
        constraints_file = Path(tmp) / "constraints.txt"
        constraints_file.write_text("\n".join(constraints) + "\n")
        report = Path(tmp) / "report.json"
        command = [
            sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
            "--quiet", "--report", str(report), "--only-binary", ":all:",
            "--python-version", PYTHON_VERSION, "--implementation", "cp",
            "--abi", f"cp{PYTHON_VERSION.replace('.', '')}",
            *(arg for platform in PLATFORMS for arg in ("--platform", platform)),
            "-c", str(constraints_file),
        ]  # fmt: skip
        if index:
            # torch's own index first; PyPI only for torch's plain dependencies (numpy,
            # sympy...), which the variant's index may not carry at worker.lock's
            # versions. Only the CUDA-specific part is kept (lock_torch), and the image
            # installs that from the variant's index alone.
            pypi = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple")
            command += ["--isolated", "--index-url", index, "--extra-index-url", pypi]
        if no_deps:
            command.append("--no-deps")
        # The command is pip with this script's own arguments.
        if subprocess.run([*command, *requirements], cwd=ROOT).returncode != 0:  # noqa: S603
            where = index or "pip's configured index"
            raise SystemExit(
                f"pip could not resolve {' '.join(requirements)} from {where}"
                " (is the index reachable from here?)"
            )
        installs = json.loads(report.read_text())["install"]
    pins = []
    for item in installs:
        name, version = item["metadata"]["name"], item["metadata"]["version"]
        if canonical(name) == "oculab":
            continue
        hashes = item["download_info"].get("archive_info", {}).get("hashes", {})
        if "sha256" not in hashes:
            raise SystemExit(f"{name} {version}: the index gave no sha256 for its wheel")
        pins.append(Pin(canonical(name), version, hashes["sha256"]))
    return sorted(pins, key=lambda pin: pin.name)


def write_lock(path: Path, header: list[str], pins: list[Pin]) -> None:
    lines = [f"# {line}" if line else "#" for line in header]
    lines += [pin.line() for pin in pins]
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path.relative_to(ROOT)} ({len(pins)} packages)")


def _constraints(versions: dict[str, str], *, headless: bool) -> list[str]:
    constraints = [f"{name}=={version}" for name, version in versions.items()]
    if headless and _OPENCV_GUI in versions:
        constraints.append(f"{_OPENCV_HEADLESS}=={versions[_OPENCV_GUI]}")
    return constraints


def lock_common() -> None:
    versions = tested_versions()
    generated = "Generated by `make lock-images` (scripts/image_locks.py) from ml.lock's versions."
    extra = [*BUILD_REQUIREMENTS, *MARKER_REQUIREMENTS]
    api = resolve([".", *extra], _constraints(versions, headless=False))
    write_lock(
        REQUIREMENTS / "api.lock",
        [
            "The API image: `pip install --require-hashes --no-deps -r requirements/api.lock`.",
            generated,
            "For CPython 3.11 on Debian bookworm, x86_64.",
        ],
        api,
    )
    resolved = resolve([".[ml]", *extra], _constraints(versions, headless=True))
    opencv = next(pin for pin in resolved if pin.name == _OPENCV_GUI)
    # The headless wheel's hash (its dependency, numpy, is in the resolution already).
    headless = resolve([f"{_OPENCV_HEADLESS}=={opencv.version}"], [], no_deps=True)
    worker = [pin for pin in resolved if pin.name != _OPENCV_GUI and not is_cuda_specific(pin.name)]
    worker = sorted(worker + headless, key=lambda pin: pin.name)
    write_lock(
        REQUIREMENTS / "worker.lock",
        [
            "The worker image without torch's CUDA-specific part (requirements/torch-*.lock).",
            generated,
            f"{_OPENCV_HEADLESS} stands in for {_OPENCV_GUI} "
            "(requirements/opencv-python-provider).",
            "For CPython 3.11 on Debian bookworm, x86_64.",
        ],
        worker,
    )
    # The provider's version must match what it stands in for (pip check compares them).
    provider = REQUIREMENTS / "opencv-python-provider" / "pyproject.toml"
    text = provider.read_text()
    text = re.sub(r'(?m)^version = ".*"$', f'version = "{opencv.version}"', text)
    text = re.sub(
        r'"opencv-python-headless==[^"]*"', f'"{_OPENCV_HEADLESS}=={opencv.version}"', text
    )
    provider.write_text(text)


def _parse_lock(path: Path) -> dict[str, str]:
    versions = {}
    for line in path.read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, rest = line.split("==", 1)
            versions[canonical(name)] = rest.split()[0]
    return versions


def lock_torch(variant_name: str) -> None:
    variant = VARIANTS[variant_name]
    versions = tested_versions()
    worker = _parse_lock(REQUIREMENTS / "worker.lock")
    wanted = [
        f"{name}=={versions[name]}{variant.local_version}" for name in ("torch", "torchvision")
    ]
    # torch's plain dependencies (numpy, sympy, ...) at the worker lock's versions.
    constraints = [f"{name}=={version}" for name, version in worker.items()]
    resolved = resolve(wanted, constraints, variant.index or None)
    pins = []
    for pin in resolved:
        if is_cuda_specific(pin.name) or pin.name not in worker:
            pins.append(pin)
        elif worker[pin.name] != pin.version:
            raise SystemExit(f"{pin.name}: {pin.version} here, {worker[pin.name]} in worker.lock")
    write_lock(
        REQUIREMENTS / f"torch-{variant_name}.lock",
        [
            f"torch {versions['torch']} for the worker image, variant {variant_name}.",
            f"index: {variant.index}" if variant.index else "index: PyPI (or PIP_INDEX_URL)",
            f"NVIDIA driver: {variant.driver}",
            f"Generated by `make lock-worker CUDA={variant_name}` (scripts/image_locks.py).",
            "Install with --index-url (never --extra-index-url) and --require-hashes.",
        ],
        pins,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("common", help="requirements/api.lock and requirements/worker.lock")
    torch = sub.add_parser("torch", help="requirements/torch-<variant>.lock")
    torch.add_argument("variant", choices=sorted(VARIANTS))
    args = parser.parse_args()
    if args.command == "common":
        lock_common()
    else:
        lock_torch(args.variant)


if __name__ == "__main__":
    main()
