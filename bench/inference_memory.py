"""Memory of ``oculab standalone`` around ML jobs: the API process's resident set idle,
and after an upload, a model inspection, an auto-label job and a prediction (its peak
too), with the inference process's printed separately. The API process runs the jobs'
workers in-process but never loads torch, ultralytics or OpenCV: the model runs in the
inference process (workers/inference.py), which exits once idle.

Run from the repository root (needs the ml extra)::

    .venv/bin/python bench/inference_memory.py [--images 64]

The reference is Label Studio 1.23.2's server: with ``--label-studio`` measured in this
run after Oculab's (bench/label_studio.py: idle 2 s after it is healthy, like Oculab's,
and its peak after importing the same JPEGs and saving an annotation on each); without
it 393 MiB idle and 515 MiB peak, recorded for issue 13 on another day and machine. The
goal is an API process <= 150 MiB idle and <= 0.5x Label Studio's peak.
Stdout gets a summary and, as its last line, one JSON object.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import label_studio
from common import (
    children,
    command_line,
    free_port,
    healthy,
    memory_mib,
    oculab_env,
    scratch_dir,
    stop,
)
from label_studio import RECORDED

# Recorded for issue 13 on another day and machine; used only without --label-studio.
LABEL_STUDIO_IDLE_MIB = 393
LABEL_STUDIO_PEAK_MIB = 515


def jpeg(seed: int) -> bytes:
    from PIL import Image

    image = Image.effect_noise((640, 480), 40 + seed % 50).convert("RGB")
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return out.getvalue()


def wait_job(client: httpx.Client, job_id: int) -> dict[str, Any]:
    while True:
        job: dict[str, Any] = client.get(f"/api/jobs/{job_id}").json()
        if job["state"] in ("succeeded", "failed", "canceled"):
            if job["state"] != "succeeded":
                raise SystemExit(f"job {job_id} {job['state']}: {job.get('error')}")
            return job
        time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument(
        "--label-studio",
        action="store_true",
        help="also measure Label Studio 1.23.2's memory in this run (installs it into"
        " bench/.venvs/ the first time) and compare with that",
    )
    args = parser.parse_args()
    with scratch_dir("oculab-bench-memory-") as root:
        run(args.images, root, args.label_studio)


def label_studio_memory(images: int, measure: bool) -> dict[str, float]:
    """Label Studio's idle and peak RSS, measured now on the same JPEGs, or the record."""
    if not measure:
        return {"idle_rss_mib": LABEL_STUDIO_IDLE_MIB, "peak_rss_mib": LABEL_STUDIO_PEAK_MIB}
    return label_studio.memory([(f"{i}.jpg", jpeg(i)) for i in range(images)])


def run(images: int, root: Path, measure_label_studio: bool = False) -> None:
    from workers.ml import yolo

    yolo.configure_offline(root / "weights")
    from ultralytics import YOLO

    weights = root / "yolo11n.pt"
    YOLO("yolo11n.yaml").save(str(weights))

    port = free_port()
    env = oculab_env(data_dir=str(root / "data"), seed_demo="false")
    process = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "standalone", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        output = ""
        assert process.stdout is not None
        while "Login:" not in output and (line := process.stdout.readline()):
            output += line
        password = re.search(r"Login:\s+admin / (\S+)", output)
        assert password, output
        while not healthy(port):
            time.sleep(0.05)
        time.sleep(2)
        idle = memory_mib(process.pid)
        client = httpx.Client(base_url=base, timeout=300)
        login = client.post(
            "/api/auth/local/login", json={"username": "admin", "password": password.group(1)}
        )
        client.headers["X-CSRF-Token"] = login.json()["csrf_token"]
        project_id = client.post("/api/projects", json={"name": "p", "classes": ["person"]}).json()[
            "id"
        ]
        files = [("files", (f"{i}.jpg", jpeg(i), "image/jpeg")) for i in range(images)]
        assert client.post(f"/api/projects/{project_id}/images", files=files).status_code == 201
        model = client.post(
            "/api/models",
            params={"project_id": project_id},
            files={"file": ("yolo11n.pt", weights.read_bytes(), "application/octet-stream")},
        ).json()
        wait_job(client, model["inspect_job_id"])
        model_id = model["model"]["id"]
        job = client.post(
            f"/api/projects/{project_id}/jobs/autolabel", json={"model_id": model_id}
        ).json()
        labelled = wait_job(client, job["id"])
        predicted = client.post(
            f"/api/models/{model_id}/predict",
            files=[("files", ("a.jpg", jpeg(999), "image/jpeg"))],
        )
        assert predicted.status_code == 200, predicted.text
        after = memory_mib(process.pid)
        everyone = children(process.pid)
        kids = {
            pid: memory_mib(pid)
            for pid in everyone
            if "workers.ml.inference_child" in command_line(pid)
        }
        # E.g. the upload decode pool (server/images/decoding.py).
        others = {pid: memory_mib(pid) for pid in everyone if pid not in kids}
        client.close()
    finally:
        stop(process, timeout=20)
    # After Oculab's server has gone, so the two never share the machine.
    ls = label_studio_memory(images, measure_label_studio)
    ls_note = "measured in this run" if measure_label_studio else RECORDED

    figures = {
        "images": images,
        "autolabel_device": labelled["result"]["device"],
        "api_idle_rss_mib": round(idle["VmRSS"], 1),
        "api_rss_after_jobs_mib": round(after["VmRSS"], 1),
        "api_peak_rss_mib": round(after["VmHWM"], 1),
        "inference_process_rss_mib": [round(m["VmRSS"], 1) for m in kids.values()],
        "inference_process_peak_mib": [round(m["VmHWM"], 1) for m in kids.values()],
        "other_children_rss_mib": [round(m["VmRSS"], 1) for m in others.values()],
        "label_studio_idle_rss_mib": round(ls["idle_rss_mib"], 1),
        "label_studio_peak_rss_mib": round(ls["peak_rss_mib"], 1),
        "label_studio_measured": measure_label_studio,
        "ratio_idle_vs_label_studio": round(idle["VmRSS"] / ls["idle_rss_mib"], 3),
        "ratio_peak_vs_label_studio": round(after["VmHWM"] / ls["peak_rss_mib"], 3),
    }
    print("Memory of oculab standalone around ML jobs (API process; inference apart)")
    print(
        f"  API process idle            {figures['api_idle_rss_mib']:8.1f} MiB  (goal <= 150; "
        f"{figures['ratio_idle_vs_label_studio']:.3f} x Label Studio's "
        f"{ls['idle_rss_mib']:.0f})"
    )
    print(f"  API process after the jobs  {figures['api_rss_after_jobs_mib']:8.1f} MiB")
    print(
        f"  API process peak            {figures['api_peak_rss_mib']:8.1f} MiB  "
        f"({figures['ratio_peak_vs_label_studio']:.3f} x Label Studio's "
        f"{ls['peak_rss_mib']:.0f}; goal <= 0.5)"
    )
    print(f"  Label Studio 1.23.2: idle and peak {ls_note}")
    for pid, m in kids.items():
        print(f"  inference process {pid}     {m['VmRSS']:8.1f} MiB (peak {m['VmHWM']:.1f})")
    for pid, m in others.items():
        print(f"  other child {pid}           {m['VmRSS']:8.1f} MiB (peak {m['VmHWM']:.1f})")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
