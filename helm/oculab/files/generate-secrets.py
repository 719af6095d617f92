"""Creates the release's generated Secret with every value it lacks; never changes one.

Run by the chart's pre-install/pre-upgrade hook Job, so that `helm template` renders no
random value (two renders of the same values are identical: Argo CD and Flux see no
drift) while a trial install still needs no prepared Secret. Standard library only.

Environment: TARGET_NAME (the Secret to complete), LEGACY_NAME (the chart's
own Secret, where chart versions before the hook kept generated values: they are
copied, so an upgrade keeps the session key and the bundled database's password),
GENERATE (JSON {key: length}), KUBERNETES_API and SERVICEACCOUNT_DIR (for tests).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import ssl
import string
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ALPHABET = string.ascii_letters + string.digits
SERVICEACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
ACCOUNT = Path(os.environ.get("SERVICEACCOUNT_DIR", SERVICEACCOUNT))
API = os.environ.get("KUBERNETES_API", "https://kubernetes.default.svc")
if not API.startswith(("https://", "http://")):
    sys.exit(f"KUBERNETES_API must be an http(s) URL, not {API!r}")


def call(method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    content = "application/merge-patch+json" if method == "PATCH" else "application/json"
    request = urllib.request.Request(  # noqa: S310 - API is checked to be http(s) above
        API + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={
            "Authorization": "Bearer " + (ACCOUNT / "token").read_text().strip(),
            "Content-Type": content,
            "Accept": "application/json",
        },
    )
    context = None
    if API.startswith("https://"):
        context = ssl.create_default_context(cafile=str(ACCOUNT / "ca.crt"))
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as response:  # noqa: S310
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, {}


def secret_data(path: str) -> dict[str, str] | None:
    """The Secret's data, {} when it has none, None when it does not exist."""
    status, body = call("GET", path)
    if status == 404:
        return None
    if status != 200:
        sys.exit(f"reading {path} answered {status}: check the hook's Role")
    data: dict[str, str] = body.get("data") or {}
    return data


def main() -> None:
    namespace = (ACCOUNT / "namespace").read_text().strip()
    name = os.environ["TARGET_NAME"]
    wanted: dict[str, int] = json.loads(os.environ["GENERATE"])
    base = f"/api/v1/namespaces/{namespace}/secrets"
    legacy_name = os.environ.get("LEGACY_NAME", "")
    legacy = (secret_data(f"{base}/{legacy_name}") if legacy_name else None) or {}
    for _ in range(5):  # another run may create the Secret between our read and write
        current = secret_data(f"{base}/{name}")
        missing: dict[str, str] = {}
        for key, length in sorted(wanted.items()):
            if current is not None and current.get(key):
                continue
            generated = "".join(secrets.choice(ALPHABET) for _ in range(length))
            missing[key] = legacy.get(key) or base64.b64encode(generated.encode()).decode()
        if not missing:
            print(f"secret {name}: every value exists ({', '.join(sorted(wanted))})")
            return
        if current is None:
            body = {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "Opaque",
                "metadata": {
                    "name": name,
                    "labels": json.loads(os.environ.get("TARGET_LABELS", "{}")),
                },
                "data": missing,
            }
            status, _ = call("POST", base, body)
        else:
            status, _ = call("PATCH", f"{base}/{name}", {"data": missing})
        if status in (200, 201):
            kept = sorted(k for k in missing if k in legacy)
            made = sorted(k for k in missing if k not in legacy)
            print(
                f"secret {name}: generated {made or 'none'},"
                f" copied from {legacy_name}: {kept or 'none'}"
            )
            return
        if status != 409:
            sys.exit(f"writing secret {name} answered {status}: check the hook's Role")
    sys.exit(f"secret {name}: gave up after repeated conflicts")


if __name__ == "__main__":
    main()
