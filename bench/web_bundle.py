"""Gzipped JavaScript each page of the web app loads, from the Vite build's manifest.

    make frontend && .venv/bin/python bench/web_bundle.py

The sign-in page loads the entry chunk and its static imports; every other page adds
its lazily loaded route chunk(s); the editor's line has the goal too, and the last line
says whether Konva leaked into the sign-in bundle. Goal (issue 10): at most 250 KB gzipped per page.
Printed, not asserted. Sizes are gzip level 9 of the built files (what the server sends
to a browser that accepts gzip: the build's precompressed .gz copies).
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
GOAL_KB = 250.0
# Pages with a goal of their own (issue 10): the editor carries the canvas library.
NAMED = {"src/features/editor/EditorPage.tsx": "editor"}
# Chunks a page imports lazily but always loads: the editor paints its first frame
# without its canvas library, then loads it (counted with the editor, not as a page).
ALSO_LOADS = {"src/features/editor/EditorPage.tsx": ["src/features/editor/konvaKit.ts"]}


def _closure(manifest: dict[str, dict[str, Any]], key: str, seen: set[str]) -> set[str]:
    """The chunk ``key`` and every chunk it imports statically."""
    if key in seen:
        return set()
    seen.add(key)
    files = {str(manifest[key]["file"])}
    for child in manifest[key].get("imports", []):
        files |= _closure(manifest, str(child), seen)
    return files


def _gz_kb(build: Path, files: set[str]) -> float:
    return sum(len(gzip.compress((build / f).read_bytes(), 9)) for f in files) / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", type=Path, default=ROOT / "server" / "web" / "static")
    args = parser.parse_args()
    manifest_path = args.build / ".vite" / "manifest.json"
    if not manifest_path.exists():
        print(f"no build at {args.build}: run `make frontend`", file=sys.stderr)
        return 1
    manifest = json.loads(manifest_path.read_text())
    entry = _closure(manifest, "index.html", set())
    base = _gz_kb(args.build, entry)
    print(f"{'page':<48} {'JS gzipped':>12}")
    print(f"{'sign-in (entry + static imports)':<48} {base:>9.1f} KB   goal <= {GOAL_KB:.0f} KB")
    for key, chunk in sorted(manifest.items()):
        if not chunk.get("isDynamicEntry") or any(key in also for also in ALSO_LOADS.values()):
            continue
        extra = _closure(manifest, key, set()) - entry
        for also in ALSO_LOADS.get(key, []):
            extra |= _closure(manifest, also, set()) - entry
        total = base + _gz_kb(args.build, extra)
        name = f"{NAMED[key]} (+ {key})" if key in NAMED else f"+ {key}"
        goal = f"   goal <= {GOAL_KB:.0f} KB" if key in NAMED else ""
        print(f"{name:<48} {total:>9.1f} KB{goal}")
    # Konva (the editor's canvas) must load with the editor only, never with sign-in.
    konva = any(b"Konva" in (args.build / f).read_bytes() for f in entry)
    print(f"Konva in the sign-in bundle: {'yes' if konva else 'no'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
