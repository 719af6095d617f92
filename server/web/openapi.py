"""Writes the API's OpenAPI document, from which the SPA's typed client is generated.

    python -m server.web.openapi frontend/src/api/openapi.json

``make openapi`` runs this and then ``openapi-typescript`` (frontend/scripts/gen-api.mjs);
tests/test_frontend.py fails when the committed files are stale.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from server.settings import Mode, Settings


def openapi_document() -> dict[str, Any]:
    """The document of an app with default settings (the routes never depend on them)."""
    # Upward on purpose (tests/test_layers.py): the writer builds the app it documents.
    from server.app import create_app

    with tempfile.TemporaryDirectory(prefix="oculab-openapi-") as tmp:
        settings = Settings(
            mode=Mode.standalone,
            data_dir=Path(tmp),
            database_url=f"sqlite:///{Path(tmp) / 'openapi.db'}",
            secret_key="openapi-" + "x" * 32,
            seed_demo=False,
            fsync=False,
        )
        app = create_app(settings)
        try:
            return app.openapi()
        finally:
            app.state.engine.dispose()


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    text = render(openapi_document())
    if len(argv) > 1:
        Path(argv[1]).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
