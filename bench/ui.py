"""The editor's speed in a browser (issue 10): Playwright driving the system's Chromium
against a real ``oculab standalone``.

    make frontend && .venv/bin/python bench/ui.py [--boxes 500 --repeats 5]

Seeds a project with two 4000x3000 JPEGs of ``--boxes`` predicted boxes each (every box
above the default threshold, so every one is drawn with its confidence label), then
measures, printed and not asserted (goal: open <= 300 ms, drag p95 <= 16.7 ms):

- open to first paint: from navigation start (or from the click on "Next image") to the
  first frame with every box on the image (the editor's ``oculab:editor-ready`` mark, in
  the animation frame where it is drawn; the image is the server's thumbnail until the
  full file is decoded), to the frame with the full resolution
  (``oculab:editor-full-resolution``) and to the frame where the editor takes the mouse
  (``oculab:editor-interactive``: on a first open the first frame is painted on a plain
  canvas, and the Konva stage, whose library loads after that frame, takes over once it
  has drawn; in the app the stage draws the first frame). Cold: a new browser context
  (nothing cached); warm: a reload (scripts and the image from the HTTP cache); in the
  app: "Next image" between the two images (the editor downloads the next image's file
  in advance);
- for the cold opens, what does not depend on the machine's load: the requests, bytes
  and long tasks before the first frame, the phases of an opening (route matched, the
  editor's code evaluated, its data in, first frame) and the server's own time per
  request (from its ``/metrics``);
- frame time while dragging one box (the mouse moving every ~8 ms): the deltas between
  ``requestAnimationFrame`` callbacks, p50/p95/p99/max and the frames over 20 ms.

The browser half is ``frontend/scripts/bench-ui.mjs`` (it uses the frontend's
Playwright); the last line printed is one line of JSON with every figure.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import sys
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFilter
from webbench import SHOTS, BenchError, cookies, run_browser, signed_in, standalone

WIDTH, HEIGHT = 4000, 3000


def photo_like(seed: int) -> bytes:
    """A 4000x3000 JPEG with smooth shapes and grain: decodes like a photograph."""
    rng = random.Random(seed)
    small = Image.new("RGB", (160, 120))
    draw = ImageDraw.Draw(small)
    for _ in range(60):
        x, y = rng.randrange(160), rng.randrange(120)
        r = rng.randrange(5, 40)
        colour = tuple(rng.randrange(256) for _ in range(3))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
    blurred = small.filter(ImageFilter.GaussianBlur(3))
    big = blurred.resize((WIDTH, HEIGHT), Image.Resampling.BICUBIC)
    grain = Image.effect_noise((WIDTH, HEIGHT), 24).convert("RGB")
    out = io.BytesIO()
    Image.blend(big, grain, 0.12).save(out, "JPEG", quality=88)
    return out.getvalue()


def boxes(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    made = []
    for i in range(n):
        w, h = rng.uniform(0.01, 0.08), rng.uniform(0.01, 0.08)
        made.append(
            {
                "class_id": i % 5,
                "x": rng.uniform(0, 1 - w),
                "y": rng.uniform(0, 1 - h),
                "w": w,
                "h": h,
                "source": "manual",
                "confidence": round(rng.uniform(0.3, 0.99), 3),
                "status": "predicted",
            }
        )
    # The box the bench drags: a large one in the middle, on top of the others.
    made.append(
        {
            "class_id": 0,
            "x": 0.4,
            "y": 0.4,
            "w": 0.12,
            "h": 0.12,
            "source": "manual",
            "confidence": 0.9,
            "status": "predicted",
        }
    )
    return made[-n:] if len(made) > n else made


def measure(args: argparse.Namespace) -> dict[str, Any]:
    with standalone("ui") as server:
        http, csrf = signed_in(server.url)
        project = http.post(
            "/api/projects",
            json={"name": "UI bench", "classes": ["car", "person", "bicycle", "truck", "dog"]},
            headers=csrf,
        ).json()
        print(f"seeding two {WIDTH}x{HEIGHT} images with {args.boxes} boxes each", file=sys.stderr)
        files = [("files", (f"frame_{i}.jpg", photo_like(i), "image/jpeg")) for i in range(2)]
        upload = http.post(f"/api/projects/{project['id']}/images", files=files, headers=csrf)
        upload.raise_for_status()
        image_ids = [item["image_id"] for item in upload.json()["items"]]
        seeded = boxes(args.boxes, 1)
        for image_id in image_ids:
            saved = http.put(
                f"/api/images/{image_id}/annotations",
                json={"base_revision": 0, "boxes": seeded},
                headers=csrf,
            )
            saved.raise_for_status()
        return run_browser(
            "bench-ui.mjs",
            {
                "url": server.url,
                "chromium": args.chromium,
                "cookies": cookies(http),
                "projectId": project["id"],
                "imageIds": image_ids,
                "width": WIDTH,
                "height": HEIGHT,
                "repeats": args.repeats,
                "dragMs": args.drag_ms,
                "dragRuns": args.drag_runs,
                "dragBox": seeded[-1],
                "screenshot": str(SHOTS / "bench-ui-editor.png"),
                "trace": str(Path(args.trace).resolve()) if args.trace else None,
            },
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boxes", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--drag-ms", type=int, default=3000)
    parser.add_argument("--drag-runs", type=int, default=3)
    parser.add_argument(
        "--trace",
        help="also record a Chrome trace (JSON, for chrome://tracing or Perfetto) of one "
        "more cold open into this file",
    )
    parser.add_argument("--chromium", default=os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
    args = parser.parse_args()
    try:
        figures = measure(args)
    except BenchError as exc:
        print(exc, file=sys.stderr)
        return 1

    drag = figures["drag_frame_ms"]
    first = {key: figures[f"open_{key}_ms"]["median"] for key in ("cold", "warm", "in_app")}
    full = {key: figures[f"full_resolution_{key}_ms"]["median"] for key in first}
    usable = {key: figures[f"interactive_{key}_ms"]["median"] for key in first}
    print(f"editor, {args.boxes} predicted boxes on a {WIDTH}x{HEIGHT} JPEG")
    print(f"  shown: {figures['boxes_shown']}")
    print("  open to first paint (all boxes, preview image) / to the full resolution drawn:")
    print(f"    cold (new browser context)  {first['cold']:>7} ms / {full['cold']:>7} ms  goal 300")
    print(f"    warm (reload)               {first['warm']:>7} ms / {full['warm']:>7} ms")
    print(f"    in the app (Next image)     {first['in_app']:>7} ms / {full['in_app']:>7} ms")
    print("  open to the editor taking the mouse (the Konva stage drawn):")
    print(
        f"    cold {usable['cold']} ms, warm {usable['warm']} ms, in the app {usable['in_app']} ms"
    )
    spread = figures["open_cold_spread"]
    counts = figures["open_cold_counts"]
    phases = figures["open_cold_phases_ms"]
    print(
        f"  cold open over {args.repeats} runs: median {spread['median']} ms, "
        f"min {spread['min']}, max {spread['max']}"
    )
    print(
        f"    before the first frame (medians; load-independent): {counts['requests']} requests "
        f"({counts['api_requests']} API, {counts['script_requests']} scripts), "
        f"{counts['kb_transferred']} KB, {counts['long_tasks']} long tasks "
        f"({counts['long_task_ms']} ms)"
    )
    print(
        f"    phases from navigation start: route {phases['route']} ms, editor code "
        f"{phases['code']} ms, data in {phases['data']} ms, first frame {phases['ready']} ms"
    )
    print("    server time per request (its /metrics, to the headers), cold opens:")
    for route, row in sorted(figures["open_cold_server"].items()):
        print(f"      {route:<44} {row['requests']:>3} x {row['mean_ms']:>6} ms")
    print(
        f"  drag one box: frame p50 {drag['p50']} ms, p95 {drag['p95']} ms (goal <= 16.7), "
        f"p99 {drag['p99']} ms, max {drag['max']} ms, {drag['over_20ms']} of "
        f"{figures['drag_frames']} frames over 20 ms"
    )
    print(json.dumps({"boxes": args.boxes, **figures}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
