"""All configuration, from ``OCULAB_*`` environment variables.

One class, built once per process and handed down explicitly: no module-level globals.
"""

from __future__ import annotations

import json
import re
import secrets
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, quote, urlencode, urlsplit, urlunsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from server.kit.db import DbTimeouts
from server.kit.roles import Role


class Mode(StrEnum):
    standalone = "standalone"
    server = "server"


_POOL_NAME = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
_INSECURE_SECRETS = {"", "changeme", "change-me", "secret", "oculab"}


def _split_list(value: Any) -> Any:
    """Accept ``a,b,c`` or a JSON list for list-valued settings."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


def _with_query(url: str, name: str, value: str) -> str:
    """``url`` with ``name=value`` added to its query, unless empty or already there."""
    parts = urlsplit(url)
    if not value or name in parse_qs(parts.query):
        return url
    query = "&".join(q for q in (parts.query, urlencode({name: value}, quote_via=quote)) if q)
    return urlunsplit(parts._replace(query=query))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OCULAB_", extra="ignore")

    mode: Mode = Mode.standalone
    data_dir: Path = Path("./oculab-data")
    database_url: str | None = None
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Put into the Redis URL percent-encoded (see resolved_redis_url), so that any
    # password works, however many @ : / % it holds. Empty: the URL's own, if any.
    redis_password: str = ""
    # A PEM bundle of the CAs to trust for the IdP (OIDC), PostgreSQL (as sslrootcert,
    # unless the URL names one) and rediss:// (as ssl_ca_certs): an internal CA.
    ca_bundle: Path | None = None
    # `oculab api` serves Prometheus /metrics on this port instead of the API's (whose
    # /metrics then answers 404, so the ingress never exposes it). None: the API's port.
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    # PostgreSQL client timeouts, so that a database that is down or unreachable turns
    # into a quick 503 (API) or a retry (workers, scheduler) instead of a hang. A
    # connection attempt gives up after connect_timeout; an established connection
    # whose server stops answering is declared dead after about tcp_timeout (TCP
    # keepalives + TCP_USER_TIMEOUT); a request waits pool_timeout for a free pooled
    # connection. statement_timeout bounds each statement of API requests and the
    # scheduler (0: none); job statements (imports, exports) are not bounded by it.
    # Behind PgBouncer, set statement_timeout 0 or `ignore_startup_parameters = options`.
    database_connect_timeout_seconds: float = Field(default=5, gt=0)
    database_tcp_timeout_seconds: float = Field(default=30, ge=3)
    database_pool_timeout_seconds: float = Field(default=10, gt=0)
    database_statement_timeout_seconds: float = Field(default=60, ge=0)
    # The externally visible base URL (``https://oculab.lab.example``). Used to build the
    # OIDC redirect URI, to decide whether cookies are ``Secure`` and whether to send
    # HSTS. Empty: derived from each request.
    public_url: str = ""
    # Proxies whose X-Forwarded-For/Proto are believed (comma-separated addresses or
    # CIDRs, or "*"). Empty trusts none: any local process could otherwise pick the
    # address that the audit log and the rate limits see.
    forwarded_allow_ips: str = ""
    secret_key: str = ""
    log_level: str = "info"

    # Sessions and local accounts
    session_max_age_hours: float = Field(default=168, gt=0)
    session_idle_timeout_hours: float = Field(default=24, gt=0)
    local_accounts: bool = True
    admin_password: str = ""

    # OIDC single sign-on
    oidc_issuer: str = ""
    oidc_discovery_url: str = ""
    oidc_client_id: str = ""
    oidc_client_secret: str = ""
    # The IdP's name on the sign-in button ("Sign in with <name>"). Empty: the host of
    # the issuer (or of the discovery URL).
    oidc_display_name: str = Field(default="", max_length=100)
    oidc_scopes: str = "openid profile email"
    oidc_groups_claim: str = "groups"
    oidc_username_claim: str = "preferred_username"
    oidc_admin_groups: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # {"<idp group>": {"<project name>": "owner|annotator|viewer"}}
    oidc_project_roles: dict[str, dict[str, Role]] = Field(default_factory=dict)
    oidc_clock_skew_seconds: int = Field(default=60, ge=0, le=600)
    # When set, ``Authorization: Bearer <JWT>`` access tokens (RFC 9068, ``typ: at+jwt``)
    # issued by the IdP for this audience are accepted (validated against the IdP's JWKS,
    # issuer, audience and expiry). They authenticate a user who has signed in before;
    # they never change that user's groups or roles.
    oidc_jwt_audience: str = ""
    oidc_timeout_seconds: float = Field(default=10, gt=0)
    # Sign-out also ends the session at the IdP (RP-initiated logout) when the IdP
    # advertises an end_session_endpoint. Off: only Oculab's session ends.
    oidc_provider_logout: bool = True
    # Where the IdP sends the browser after that sign-out; register it at the IdP.
    # Empty: the public URL's root (``<public_url>/``, else derived from the request).
    oidc_post_logout_redirect_uri: str = ""

    # Uploads and images
    max_upload_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    max_request_bytes: int = Field(default=4 * 1024 * 1024 * 1024, gt=0)
    max_json_bytes: int = Field(default=16 * 1024 * 1024, gt=0)
    max_files_per_request: int = Field(default=1000, gt=0)
    max_image_pixels: int = Field(default=40_000_000, gt=0)
    max_boxes_per_image: int = Field(default=5000, gt=0)
    thumbnail_size: int = Field(default=256, ge=32, le=1024)
    fsync: bool = True
    # How uploads are made durable (server/kit/storage.py): "file", an fsync per file
    # and folder; "filesystem", two syncfs per batch (for a data directory on a local
    # filesystem of its own); "auto", "filesystem" when a whole local filesystem (ext4,
    # XFS, Btrfs) is mounted at the data directory on Linux, else "file".
    storage_sync: Literal["auto", "file", "filesystem"] = "auto"

    # Abuse limits (per client address and per account, per minute)
    # Local login: per (address, username), per address (password spraying) and per
    # username; the last is much higher, so failures from elsewhere cannot lock the
    # real user out. OIDC callbacks use the first, per address.
    login_rate_limit_per_minute: int = Field(default=10, gt=0)
    login_address_rate_limit_per_minute: int = Field(default=50, gt=0)
    login_account_rate_limit_per_minute: int = Field(default=100, gt=0)
    # Predict jobs jump every queue (interactive priority), so each user gets a budget.
    predict_rate_limit_per_minute: int = Field(default=30, gt=0)
    token_rate_limit_per_minute: int = Field(default=20, gt=0)

    # Demo data seeded on the first standalone start
    seed_demo: bool = True

    # Jobs and workers. Pools are Dramatiq queues; names in ``cpu_pools`` are CPU pools,
    # every other pool is a GPU pool (one job per GPU).
    pools: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["gpu", "cpu"])
    cpu_pools: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["cpu"])
    gpu_jobs_per_user: int = Field(default=2, ge=1)
    cpu_jobs_per_user: int = Field(default=4, ge=1)
    job_max_attempts: int = Field(default=3, ge=1, le=20)
    heartbeat_interval_seconds: float = Field(default=5, gt=0)
    heartbeat_timeout_seconds: float = Field(default=30, gt=0)
    scheduler_interval_seconds: float = Field(default=1, gt=0)
    # The scheduler's /healthz answers 503 once its loop has not completed a pass for
    # this long (wedged on a lock or a dead connection).
    scheduler_stale_seconds: float = Field(default=30, gt=0)
    # A worker's /healthz answers 503 once its last successful heartbeat is this old, so
    # that a hung worker is restarted and frees its GPU.
    worker_liveness_seconds: float = Field(default=120, gt=0)
    # Messages admitted ahead per CPU slot, so a worker finishing a short job finds the
    # next one already in hand. GPU pools admit none ahead: their jobs are long and the
    # fair order matters more than a few milliseconds.
    cpu_admit_ahead: int = Field(default=1, ge=0, le=8)
    # A message the scheduler sent is considered lost if Redis no longer holds it after
    # this long (e.g. Redis restarted empty); the job is then sent again.
    message_check_grace_seconds: float = Field(default=5, ge=0)
    gpu_job_time_limit_hours: float = Field(default=72, gt=0)
    cpu_job_time_limit_hours: float = Field(default=6, gt=0)
    worker_shutdown_timeout_seconds: float = Field(default=60, gt=0)
    # Extra modules whose import registers more job kinds (plugins, test kinds).
    job_modules: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # In-process worker slots of ``oculab standalone``.
    # None: one per GPU found, or 1 on the CPU; 0 runs no GPU pool worker at all.
    standalone_gpu_slots: int | None = Field(default=None, ge=0, le=16)
    standalone_cpu_slots: int = Field(default=2, ge=0, le=64)
    # Models and inference
    max_model_bytes: int = Field(default=2 * 1024**3, gt=0)
    max_predict_images: int = Field(default=16, ge=1, le=256)
    # A predict request waits this long for a worker to start it, then answers 503.
    predict_queue_seconds: float = Field(default=10, gt=0)
    predict_timeout_seconds: float = Field(default=60, gt=0)
    # While longer jobs (training, auto-label) hold every live slot of the GPU pool, a
    # predict request runs in the CPU pool instead of waiting (the response says so).
    predict_cpu_fallback: bool = True
    autolabel_batch: int = Field(default=16, ge=1, le=256)
    # Threads decoding an auto-label job's images ahead of the model. None: sized to the
    # device (on a GPU up to 8, one CPU left free; on the CPU one).
    autolabel_decode_threads: int | None = Field(default=None, ge=1, le=64)
    # Auto-label and predict run in an inference process per worker slot
    # (workers/inference.py), kept warm between jobs; idle this long, it exits and gives
    # its memory back.
    inference_idle_seconds: float = Field(default=300, gt=0)
    # Uploaded weights are inspected in a confined child process (workers/ml/sandbox.py):
    # these limits, no network, and this account instead of root ("" stays root).
    inspect_memory_limit_mb: int = Field(default=8192, ge=1024)
    inspect_cpu_limit_seconds: int = Field(default=120, ge=1)
    inspect_timeout_seconds: float = Field(default=300, gt=0)
    inspect_user: str = "nobody"
    max_import_bytes: int = Field(default=20 * 1024**3, gt=0)
    max_import_entries: int = Field(default=200_000, gt=0)
    max_import_unpacked_bytes: int = Field(default=100 * 1024**3, gt=0)
    max_import_ratio: int = Field(default=200, gt=1)
    # Label files parsed whole by the import job (a thread of the API in standalone
    # mode): data.yaml / classes.txt, and all of a zip's COCO JSON files together.
    max_class_file_bytes: int = Field(default=1024 * 1024, gt=0)
    max_coco_json_bytes: int = Field(default=512 * 1024 * 1024, gt=0)

    @field_validator("oidc_admin_groups", "pools", "cpu_pools", "job_modules", mode="before")
    @classmethod
    def _parse_groups(cls, value: Any) -> Any:
        return _split_list(value)

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.mode is Mode.server:
            if not self.database_url:
                raise ValueError("OCULAB_DATABASE_URL is required in server mode")
            if self.secret_key in _INSECURE_SECRETS or len(self.secret_key) < 32:
                raise ValueError(
                    "OCULAB_SECRET_KEY must be set to a random value of at least 32 "
                    "characters in server mode (e.g. `openssl rand -hex 32`)"
                )
        for pool in self.pools:
            if not _POOL_NAME.match(pool):
                raise ValueError(f"pool name {pool!r} must match {_POOL_NAME.pattern}")
        if not self.cpu_pool:
            raise ValueError("at least one pool must be a CPU pool (imports, exports)")
        if self.ca_bundle is not None and not self.ca_bundle.is_file():
            raise ValueError(f"OCULAB_CA_BUNDLE: no file at {self.ca_bundle}")
        if self.oidc_enabled and not self.oidc_client_id:
            raise ValueError("OCULAB_OIDC_CLIENT_ID is required when OIDC is configured")
        return self

    def db_timeouts(self, *, statements: bool) -> DbTimeouts:
        """``statements``: whether this process's statements are bounded (API requests
        and the scheduler are; jobs run long statements under their own time limit)."""
        return DbTimeouts(
            connect_seconds=self.database_connect_timeout_seconds,
            tcp_seconds=self.database_tcp_timeout_seconds,
            statement_seconds=self.database_statement_timeout_seconds if statements else 0,
            pool_seconds=self.database_pool_timeout_seconds,
        )

    @property
    def cpu_pool(self) -> str:
        """The pool imports, exports and model inspection run in."""
        return next((p for p in self.pools if p in self.cpu_pools), "")

    @property
    def gpu_pool(self) -> str:
        """The default pool for training and auto-labeling."""
        return next((p for p in self.pools if p not in self.cpu_pools), self.cpu_pool)

    def is_gpu_pool(self, pool: str) -> bool:
        return pool not in self.cpu_pools

    def admit_ahead(self, pool: str) -> int:
        return 0 if self.is_gpu_pool(pool) else self.cpu_admit_ahead

    def jobs_per_user(self, pool: str) -> int:
        return self.gpu_jobs_per_user if self.is_gpu_pool(pool) else self.cpu_jobs_per_user

    @property
    def oidc_enabled(self) -> bool:
        return bool(self.oidc_issuer or self.oidc_discovery_url)

    @property
    def oidc_name(self) -> str:
        """What the sign-in page calls the IdP."""
        if self.oidc_display_name.strip():
            return self.oidc_display_name.strip()
        host = urlsplit(self.oidc_issuer or self.oidc_discovery_url).hostname or ""
        return host.removeprefix("www.") or "single sign-on"

    @property
    def oidc_metadata_url(self) -> str:
        if self.oidc_discovery_url:
            return self.oidc_discovery_url
        return self.oidc_issuer.rstrip("/") + "/.well-known/openid-configuration"

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return _with_query(
                self.database_url,
                "sslrootcert",
                str(self.ca_bundle)
                if self.ca_bundle and self.database_url.startswith("postgres")
                else "",
            )
        return f"sqlite:///{(self.data_dir / 'oculab.db').resolve()}"

    @property
    def resolved_redis_url(self) -> str:
        """The Redis URL every client uses: with OCULAB_REDIS_PASSWORD and, for
        rediss://, OCULAB_CA_BUNDLE put in."""
        url = self.redis_url
        if self.redis_password:
            parts = urlsplit(url)
            user = parts.username or ""
            host = parts.netloc.rsplit("@", 1)[-1]
            netloc = f"{user}:{quote(self.redis_password, safe='')}@{host}"
            url = urlunsplit(parts._replace(netloc=netloc))
        if self.ca_bundle and url.startswith("rediss://"):
            url = _with_query(url, "ssl_ca_certs", str(self.ca_bundle))
        return url

    def ensure_secret_key(self) -> None:
        """Standalone mode keeps a generated key in the data dir so sessions survive restarts."""
        if self.secret_key:
            return
        path = self.data_dir / "secret_key"
        if path.exists():
            self.secret_key = path.read_text().strip()
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        key = secrets.token_hex(32)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(key)
        tmp.chmod(0o600)
        tmp.replace(path)
        self.secret_key = key
