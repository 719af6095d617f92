"""Inspection of uploaded weights in a confined child process.

The restricted loader (workers/ml/checkpoints.py) is the gate; this is the wall behind
it, for the day a bug in torch's unpickler or in ultralytics lets something through.
The child (``python -m workers.ml.inspect_child``):

- gets the weights on stdin, an fd the worker opened read-only, and works in a private
  temporary directory: it needs neither the data directory nor the worker's
  environment (no OCULAB_* variables, so no database URL or secret key);
- has its own, empty network namespace where the kernel allows one (as root:
  ``unshare(CLONE_NEWNET)``; otherwise ``CLONE_NEWUSER|CLONE_NEWNET``), and says so
  in the job log when it has to do without;
- runs under RLIMIT_AS and RLIMIT_CPU from the settings, as ``OCULAB_INSPECT_USER``
  (``nobody``) when started as root, with no_new_privs, and dies with its worker.

Whatever goes wrong in there (a refusal, an exception, a limit, a signal) comes back as
a ValueError with a reason a user can read.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from server.settings import Settings
from workers.ml.yolo import ModelInfo

logger = logging.getLogger(__name__)
REFUSED_EXIT = 3  # the child ran to the end and explains why the weights are unusable
_REPO_ROOT = Path(__file__).resolve().parents[2]
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000
_PR_SET_PDEATHSIG = 1
_PR_SET_NO_NEW_PRIVS = 38
# The variables the child may inherit: enough to find Python and its libraries.
_INHERITED = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "PYTHONPATH", "VIRTUAL_ENV")


@dataclass(frozen=True)
class Limits:
    memory_mb: int
    cpu_seconds: int
    timeout_seconds: float
    user: str  # the account to become when started as root; "" stays root

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            memory_mb=settings.inspect_memory_limit_mb,
            cpu_seconds=settings.inspect_cpu_limit_seconds,
            timeout_seconds=settings.inspect_timeout_seconds,
            user=settings.inspect_user,
        )


# --- the worker's side --------------------------------------------------------------


def inspect_isolated(
    path: Path, limits: Limits, log: Callable[[str], None] = lambda line: None
) -> ModelInfo:
    """Describes the weights at ``path`` from a confined child; ValueError if unusable."""
    workdir = Path(tempfile.mkdtemp(prefix="oculab-inspect-"))
    env = {k: os.environ[k] for k in _INHERITED if k in os.environ}
    env.update(
        {
            "HOME": str(workdir),
            "TMPDIR": str(workdir),
            "YOLO_CONFIG_DIR": str(workdir / "ultralytics"),
            "MPLCONFIGDIR": str(workdir / "matplotlib"),
            "YOLO_OFFLINE": "1",
            "YOLO_AUTOINSTALL": "False",
            "YOLO_VERBOSE": "False",
            "ULTRALYTICS_SAFE_LOAD": "1",
            "CUDA_VISIBLE_DEVICES": "",
            # One thread: the CPU limit then bounds wall time too, and nothing else runs.
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONNOUSERSITE": "1",
        }
    )
    try:
        with open(path, "rb") as weights:
            done = subprocess.run(  # noqa: S603 - our own module, our own arguments
                [
                    sys.executable,
                    "-m",
                    "workers.ml.inspect_child",
                    str(workdir),
                    json.dumps(asdict(limits)),
                    str(os.getpid()),
                ],
                stdin=weights,
                capture_output=True,
                env=env,
                cwd=_REPO_ROOT,
                timeout=limits.timeout_seconds,
                start_new_session=True,
                check=False,
            )
    except subprocess.TimeoutExpired as exc:
        raise ValueError(
            f"inspection did not finish within {limits.timeout_seconds:g} s and was stopped"
        ) from exc
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    result = _result(done.stdout)
    for line in result.get("isolation", []):
        log(f"inspection sandbox: {line}")
        if "NOT isolated" in line:
            logger.warning("model inspection ran without network isolation: %s", line)
    if done.returncode == 0 and "info" in result:
        return ModelInfo(**result["info"])
    if done.returncode == REFUSED_EXIT and "error" in result:
        raise ValueError(str(result["error"])[:2000])
    raise ValueError(_crash_reason(done.returncode, done.stderr, limits))


def _result(stdout: bytes) -> dict[str, Any]:
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines:
        return {}
    try:
        parsed = json.loads(lines[-1])
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _crash_reason(code: int, stderr: bytes, limits: Limits) -> str:
    if code < 0:
        sig = -code
        if sig == signal.SIGXCPU:
            return f"inspection exceeded its CPU time limit ({limits.cpu_seconds} s)"
        if sig == signal.SIGXFSZ:
            return "inspection tried to write more than it may and was stopped"
        if sig == signal.SIGKILL:
            return (
                "inspection was killed (SIGKILL), e.g. for exceeding its memory "
                f"({limits.memory_mb} MiB) or CPU ({limits.cpu_seconds} s) limit"
            )
        return f"inspection crashed (signal {signal.Signals(sig).name})"
    lines = [line for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    last = lines[-1][:300] if lines else "no output"
    return f"inspection failed (exit code {code}): {last}"


# --- the child's side ---------------------------------------------------------------


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def die_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        _libc().prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            sys.exit(REFUSED_EXIT)  # the worker is already gone


def set_limits(limits: Limits) -> str:
    memory = limits.memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    # SIGXCPU at the soft limit; the kernel sends SIGKILL at the hard one.
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 5))
    return f"limits: {limits.memory_mb} MiB address space, {limits.cpu_seconds} s CPU"


def _unshare(flags: int) -> str | None:
    """None on success, else the reason."""
    if not sys.platform.startswith("linux"):
        return "not Linux"
    if _libc().unshare(flags) != 0:
        return os.strerror(ctypes.get_errno())
    return None


def isolate_network_as_root() -> tuple[bool, str]:
    """A fresh network namespace (only a loopback that is down): nothing to reach."""
    if os.geteuid() != 0:
        return False, ""
    failed = _unshare(_CLONE_NEWNET)
    if failed is None:
        return True, "network: own empty namespace (CLONE_NEWNET)"
    return False, f"CLONE_NEWNET failed: {failed}"


def isolate_network_unprivileged(earlier: str) -> str:
    # An unprivileged user namespace grants the right to make a network namespace;
    # the kernel allows it only while the process has a single thread.
    failed = _unshare(_CLONE_NEWUSER | _CLONE_NEWNET)
    if failed is None:
        return "network: own empty namespace (CLONE_NEWUSER|CLONE_NEWNET)"
    reasons = "; ".join(r for r in (earlier, f"CLONE_NEWUSER|CLONE_NEWNET failed: {failed}") if r)
    return f"network: NOT isolated ({reasons})"


def drop_privileges(user: str, workdir: Path) -> str:
    """Becomes ``user`` when running as root, owning only the private work directory."""
    if os.geteuid() != 0:
        return f"user: uid {os.geteuid()} (not root, unchanged)"
    if not user:
        return "user: root (OCULAB_INSPECT_USER is empty)"
    import pwd

    try:
        account = pwd.getpwnam(user)
    except KeyError:
        return f"user: root (no account named {user!r} to switch to)"
    for path in [workdir, *workdir.rglob("*")]:
        os.chown(path, account.pw_uid, account.pw_gid, follow_symlinks=False)
    os.setgroups([])
    os.setgid(account.pw_gid)
    os.setuid(account.pw_uid)
    if sys.platform.startswith("linux"):
        # Nothing it runs can gain privileges back (setuid binaries, file capabilities).
        _libc().prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    return f"user: {user} (uid {account.pw_uid})"


def receive_weights(workdir: Path) -> Path:
    """Copies stdin into a file only this process can read, then caps file writes."""
    target = workdir / "weights.pt"
    with os.fdopen(os.dup(0), "rb") as source, open(target, "xb") as out:
        shutil.copyfileobj(source, out, 1 << 20)
    os.chmod(target, 0o400)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
    return target
