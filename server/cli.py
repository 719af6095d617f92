"""The ``oculab`` command."""

from __future__ import annotations

import argparse
import errno
import fcntl
import getpass
import logging
import os
import secrets
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from http.server import HTTPServer, ThreadingHTTPServer
from typing import IO, TYPE_CHECKING, Any

import sqlalchemy as sa
from pydantic import ValidationError

from server.settings import Mode, Settings

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from server.kit.probe import Check
    from workers.machinery import WorkerProcess

log = logging.getLogger("oculab")


def _settings(mode: Mode) -> Settings:
    try:
        return Settings(mode=mode)
    except ValidationError as exc:
        from server.kit.errors import validation_problems

        problems = validation_problems(exc)
        raise SystemExit(f"oculab: configuration error: {problems}") from None


def _serve(
    settings: Settings,
    host: str,
    port: int,
    *,
    run_jobs: bool = False,
    demo_owner: int | None = None,
) -> None:
    import uvicorn

    from server.app import create_app

    app = create_app(settings, run_jobs=run_jobs, demo_owner=demo_owner)
    if settings.metrics_port is not None:
        _serve_metrics(app.state.registry, host, settings.metrics_port)
    # The app's shutdown stops the upload decoders and the thumbnail renderer: on
    # SIGTERM uvicorn ends the process as soon as that is done.
    uvicorn.run(
        app,
        host=host,
        port=port,
        # create_app applies OCULAB_FORWARDED_ALLOW_IPS itself; uvicorn's own default
        # would trust X-Forwarded-For from any local process.
        proxy_headers=False,
        log_level=settings.log_level,
        access_log=False,
    )


def _serve_metrics(registry: CollectorRegistry, host: str, port: int) -> None:
    """Prometheus /metrics on a port of its own (OCULAB_METRICS_PORT), which the
    ingress does not route to; the API's port then answers 404 there."""
    from prometheus_client import start_http_server

    try:
        start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise SystemExit(
            f"oculab: cannot serve metrics on {host}:{port} (OCULAB_METRICS_PORT): {exc.strerror}"
        ) from None
    log.info("serving metrics on %s:%s/metrics", host, port)


def _upgrade(url: str) -> None:
    from server import migrate

    try:
        migrate.upgrade(url)
    except migrate.SchemaTooNew as exc:
        raise SystemExit(f"oculab: {exc}") from None


def _lock_data_dir(settings: Settings) -> IO[str]:
    """One standalone process per data dir: they would share SQLite and in-memory jobs."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    handle = open(settings.data_dir / "standalone.lock", "w")  # noqa: SIM115 - held till exit
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise SystemExit(
            f"oculab: another Oculab standalone process is using {settings.data_dir.resolve()}"
        ) from None
    return handle


def cmd_standalone(args: argparse.Namespace) -> None:
    from concurrent.futures import ThreadPoolExecutor

    settings = _settings(Mode.standalone)
    lock = _lock_data_dir(settings)
    settings.ensure_secret_key()
    _upgrade(settings.resolved_database_url)
    # The first admin's Argon2id hash is half a second of C that lets go of the GIL:
    # made on a thread while this one imports the app, not before it. The app still
    # serves only once the admin exists.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bootstrap") as pool:
        bootstrap = pool.submit(_bootstrap_standalone, settings)
        _import_app()
        admin_id, password = bootstrap.result()
    marker = settings.data_dir / ".demo-seeded"
    demo_owner = None
    if settings.seed_demo and not marker.exists():
        marker.write_text("1\n")  # once, even if this first start is interrupted
        demo_owner = admin_id
    url = f"http://{args.host}:{args.port}"
    print("", flush=True)
    print(f"  Oculab is starting at {url}   (open it in a browser and sign in)", flush=True)
    print(f"  API docs:  {url}/docs", flush=True)
    print(f"  Data:      {settings.data_dir.resolve()}", flush=True)
    if password is not None:
        print(f"  Login:     admin / {password}   (printed once; keep it)", flush=True)
    else:
        print("  Login:     admin (password as set on first start)", flush=True)
    if demo_owner is not None:
        print("  Demo:      the 'Demo: shapes' project imports, trains, promotes and", flush=True)
        print("             auto-labels in the background (about a minute on a CPU);", flush=True)
        print("             then its predicted images wait under 'Review predictions'", flush=True)
    print("", flush=True)
    _serve(settings, args.host, args.port, run_jobs=True, demo_owner=demo_owner)
    lock.close()


def _import_app() -> None:
    """Imports what serving needs (most of a start's time), so that it can overlap."""
    import uvicorn  # noqa: F401

    import server.app  # noqa: F401


def _bootstrap_standalone(settings: Settings) -> tuple[int, str | None]:
    """First start: the local admin. Returns its id and a new password, if one was made."""
    from server.auth import service as auth
    from server.kit.db import make_engine, make_sessionmaker

    engine = make_engine(settings.resolved_database_url, pool_size=1)
    password: str | None = None
    try:
        with make_sessionmaker(engine)() as db, db.begin():
            admin = auth.get_local_user(db, "admin")
            if admin is None:
                password = settings.admin_password or secrets.token_urlsafe(12)
                admin = auth.create_local_user(db, "admin", password, is_admin=True)
                if settings.admin_password:
                    password = "(from OCULAB_ADMIN_PASSWORD)"  # noqa: S105
            admin_id = admin.id
    finally:
        engine.dispose()
    return admin_id, password


def cmd_demo(args: argparse.Namespace) -> None:
    """Runs the demo loop in this process, on the standalone data dir, and reports."""
    from server.demo.loop import DemoFailed, DemoPlan, run_demo
    from workers.machinery import standalone_jobs

    settings = _settings(Mode.standalone)
    lock = _lock_data_dir(settings)
    settings.ensure_secret_key()
    _upgrade(settings.resolved_database_url)
    admin_id, password = _bootstrap_standalone(settings)
    if password is not None:
        print(f"local admin: admin / {password}   (printed once; keep it)")
    given = {"epochs": args.epochs, "imgsz": args.imgsz, "warmup_epochs": args.warmup_epochs}
    plan = DemoPlan(**{key: value for key, value in given.items() if value is not None})
    try:
        with standalone_jobs(settings) as machinery:
            report = run_demo(
                machinery.sessionmaker,
                settings,
                machinery.storage,
                machinery.kinds,
                admin_id,
                lambda line: print(f"  {line}", flush=True),
                plan,
            )
    except DemoFailed as exc:
        raise SystemExit(f"oculab demo: {exc}") from None
    finally:
        lock.close()
    seconds = report.seconds
    print("")
    print(
        f"Demo finished in {seconds['total']:.0f} s (import {seconds['import']:.0f} s, "
        f"training {seconds['train']:.0f} s, auto-label {seconds['autolabel']:.0f} s)."
    )
    print(
        f"  model {report.model_id}: mAP50 {report.metrics.get('mAP50', 0.0):.3f}, "
        f"mAP50-95 {report.metrics.get('mAP50-95', 0.0):.3f} on the validation split"
    )
    print(
        f"  auto-labeled {report.predicted_images} new images with "
        f"{report.predicted_boxes} boxes to review"
    )
    print(
        f"  look: `make run`, then GET /api/projects/{report.project_id}, "
        f"/api/models/{report.model_id}, and "
        f"/api/projects/{report.project_id}/images?status=predicted"
    )


def cmd_api(args: argparse.Namespace) -> None:
    settings = _settings(Mode.server)
    _require_schema(settings, "the API never migrates on start-up")
    _serve(settings, args.host, args.port)


def _require_schema(settings: Settings, note: str = "") -> None:
    """Starts only on a schema this code may use: its own head, or a newer one whose
    migrations keep it compatible (server/migrate.py, the upgrade contract)."""
    from server import migrate

    try:
        status = migrate.schema_status(settings.resolved_database_url)
    except sa.exc.OperationalError as exc:
        raise SystemExit(f"oculab: cannot reach the database: {exc.orig}") from None
    if not status.usable:
        raise SystemExit(f"oculab: {status.describe()}" + (f" ({note})" if note else ""))
    if status.state is migrate.SchemaState.newer_compatible:
        log.info("%s", status.describe())


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        log.info("received %s; stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def cmd_worker(args: argparse.Namespace) -> None:
    settings = _settings(Mode.server)
    pools = args.pool or [settings.gpu_pool]
    unknown = [p for p in pools if p not in settings.pools]
    if unknown:
        raise SystemExit(
            f"oculab: unknown pool(s) {', '.join(unknown)}; configured: "
            f"{', '.join(settings.pools)} (OCULAB_POOLS)"
        )
    gpu_pools = [p for p in pools if settings.is_gpu_pool(p)]
    if len(gpu_pools) > 1:
        raise SystemExit(
            f"oculab: a worker serves at most one GPU pool (got {', '.join(gpu_pools)}): "
            "its GPUs are that pool's slots; run one worker per GPU pool"
        )
    _require_schema(settings)

    from workers.machinery import CannotStart, worker_process

    process: WorkerProcess | None = None
    metrics = None
    if args.metrics_port != 0:
        # Read when Dramatiq's Prometheus module is first imported: this worker's own
        # multiprocess directory, never another worker's on the same host.
        os.environ.setdefault("dramatiq_prom_db", tempfile.mkdtemp(prefix="oculab-prom-"))
        # Bound before anything else: a taken port stops the worker before it takes any
        # job, and the port it logs is certainly its own.
        metrics = _metrics_server(args.metrics_port, lambda: _worker_health(process))

    try:
        process = worker_process(
            settings,
            pools,
            slots=args.slots,
            max_jobs=args.max_jobs,
            prometheus=metrics is not None,
        )
    except CannotStart as exc:
        raise SystemExit(f"oculab: {exc}") from exc
    worker = process.worker
    stop = _stop_on_signals()
    process.broker.emit_after("process_boot")
    if metrics is not None:
        threading.Thread(target=metrics.serve_forever, daemon=True, name="metrics").start()
    worker.start()
    ending = args.max_jobs is not None or args.idle_exit is not None
    while not stop.wait(0.2 if ending else None):
        reason = worker.exit_reason(args.idle_exit)
        if reason is not None:
            log.info("worker %s exits: %s", worker.id, reason)
            break
    worker.stop()
    if metrics is not None:
        metrics.shutdown()
    process.close()


# Where the scheduler serves /healthz unless --health-port says otherwise.
DEFAULT_SCHEDULER_HEALTH_PORT = 8090

# Where Dramatiq's Prometheus exporter listens unless --metrics-port says otherwise;
# the next ports up are tried when it is taken (several workers on one host).
DEFAULT_METRICS_PORT = 9191
_METRICS_PORT_TRIES = 64


def _worker_health(process: WorkerProcess | None) -> tuple[bool, dict[str, Any]]:
    """The worker's ``/healthz``: healthy while its last heartbeat that reached the
    database is younger than OCULAB_WORKER_LIVENESS_SECONDS. A long job does not stop
    the heartbeat thread; a frozen process or one cut off from the database does, and
    is then restarted, freeing its GPU."""
    if process is None:
        return False, {"status": "starting", "heartbeat_age_s": None}
    worker = process.worker
    fresh, age = worker.beat.reading()
    return fresh, {
        "status": "ok" if fresh else "stale",
        "worker": worker.id,
        "heartbeat_age_s": round(age, 3) if age is not None else None,
        "stale_after_s": worker.beat.limit_seconds,
    }


def _metrics_server(port: int | None, health: Check) -> HTTPServer:
    """Binds the worker's metrics endpoint (Prometheus at ``/``, ``/metrics``, and
    ``/healthz``). An explicit port is a promise to whoever scrapes or probes it (the
    Helm chart's probes): taken means exit with a clear message. The default moves to
    the next free port and says so in the log, so a second worker on a host neither
    crashes nor silently goes unscraped."""
    from dramatiq.middleware.prometheus import HTTP_HOST, _metrics_handler

    from server.kit.probe import handler

    handler_class = handler(health, _metrics_handler)

    candidates = (
        [port]
        if port is not None
        else list(range(DEFAULT_METRICS_PORT, DEFAULT_METRICS_PORT + _METRICS_PORT_TRIES))
    )
    for candidate in candidates:
        try:
            server = ThreadingHTTPServer((HTTP_HOST, candidate), handler_class)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise SystemExit(
                    f"oculab: cannot serve metrics on {HTTP_HOST}:{candidate}: {exc.strerror}"
                ) from None
            continue
        if candidate != candidates[0]:
            log.warning(
                "metrics port %s is taken (another worker on this host?); serving metrics "
                "on port %s instead",
                candidates[0],
                candidate,
            )
        log.info("serving worker metrics on port %s", candidate)
        return server
    if port is not None:
        raise SystemExit(
            f"oculab: metrics port {port} is already in use on this host; give each worker "
            "its own --metrics-port, or --metrics-port 0 to serve no metrics"
        )
    raise SystemExit(
        f"oculab: no free metrics port in {candidates[0]}-{candidates[-1]}; pass "
        "--metrics-port, or --metrics-port 0 to serve no metrics"
    )


def cmd_scheduler(args: argparse.Namespace) -> None:
    settings = _settings(Mode.server)
    _require_schema(settings)
    probe = None
    if args.health_port:
        from server.kit.probe import serve

        try:
            probe = serve(args.health_host, args.health_port, lambda: scheduler.health())
        except OSError as exc:
            raise SystemExit(
                f"oculab: cannot serve /healthz on port {args.health_port}: {exc.strerror}; "
                "pass another --health-port, or 0 for none"
            ) from None

    from server.kit.db import is_postgresql
    from workers.machinery import scheduler_process

    process = scheduler_process(settings)
    scheduler = process.scheduler
    stop = _stop_on_signals()
    listen_url = settings.resolved_database_url if is_postgresql(process.machinery.engine) else None
    if probe is not None:
        threading.Thread(target=probe.serve_forever, daemon=True, name="healthz").start()
        log.info("serving /healthz on port %s", args.health_port)
    log.info("scheduler running for pools %s", ", ".join(settings.pools))
    scheduler.run_forever(stop, listen_url)
    if probe is not None:
        probe.shutdown()
    process.close()


def cmd_migrate(args: argparse.Namespace) -> None:
    from server import migrate

    # OCULAB_MODE=server (as in the chart) makes a missing OCULAB_DATABASE_URL an
    # error instead of a quiet migration of a local SQLite file.
    settings = _settings(Mode(os.environ.get("OCULAB_MODE", Mode.standalone)))
    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    url = settings.resolved_database_url
    if args.check or args.wait:
        # For init containers: succeed once `oculab migrate` (a Job) has run, on a
        # schema this code may use.
        deadline = time.monotonic() + (args.wait or 0)
        while True:
            try:
                status = migrate.schema_status(url)
                if status.usable:
                    print(status.describe())
                    return
                if status.state is migrate.SchemaState.newer_incompatible:
                    # Waiting cannot help: only a downgrade by the newer release can.
                    raise SystemExit(f"oculab: {status.describe()}")
                problem = status.describe()
            except sa.exc.OperationalError as exc:
                problem = f"cannot reach the database: {exc.orig}"
            if time.monotonic() >= deadline:
                raise SystemExit(f"oculab: {problem}")
            time.sleep(2)
    if args.wait_db:
        try:
            migrate.wait_for_database(url, args.wait_db)
        except sa.exc.OperationalError as exc:
            raise SystemExit(
                f"oculab: the database did not accept connections within {args.wait_db:g} s: "
                f"{exc.orig}"
            ) from None
    try:
        status = migrate.upgrade(url)
    except migrate.SchemaTooNew as exc:
        raise SystemExit(f"oculab: {exc}") from None
    except sa.exc.OperationalError as exc:
        raise SystemExit(f"oculab: cannot reach the database: {exc.orig}") from None
    print(status.describe())


def cmd_create_admin(args: argparse.Namespace) -> None:
    from server.auth import service as auth
    from server.kit.db import make_engine, make_sessionmaker

    settings = _settings(Mode.standalone)
    password = os.environ.get("OCULAB_ADMIN_PASSWORD") or ""
    generated = False
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    elif not password and sys.stdin.isatty():
        password = getpass.getpass(f"Password for {args.username}: ")
    if not password:
        password = secrets.token_urlsafe(12)
        generated = True
    engine = make_engine(settings.resolved_database_url, pool_size=1)
    try:
        with make_sessionmaker(engine)() as db, db.begin():
            user = auth.get_local_user(db, args.username)
            if user is None:
                auth.create_local_user(db, args.username, password, is_admin=True)
                action = "created"
            else:
                auth.set_password(db, user, password)
                user.is_admin = True
                user.is_active = True
                action = "updated"
    except Exception as exc:
        from server.kit.errors import OculabError

        if isinstance(exc, OculabError):
            raise SystemExit(f"oculab: {exc.detail}") from None
        raise
    finally:
        engine.dispose()
    print(f"admin {args.username!r} {action}")
    if generated:
        print(f"password: {password}")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {value})")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds (got {text})")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0..65535 (got {value})")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="oculab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    for name, func, help_text in (
        (
            "standalone",
            cmd_standalone,
            "API + in-process workers on SQLite and a local data dir (evaluation, single lab)",
        ),
        ("api", cmd_api, "the API server (server mode: Postgres, Redis, shared storage)"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, default=8000)
        p.set_defaults(func=func)

    p = sub.add_parser(
        "demo",
        help="run the whole loop on synthetic data, offline, and report (standalone data dir)",
    )
    # Defaults (None) are the demo plan's own: 50 epochs at 160 px, 3 warm-up epochs.
    p.add_argument("--epochs", type=int)
    p.add_argument("--imgsz", type=int, help="training image size")
    p.add_argument(
        "--warmup-epochs",
        type=float,
        help="learning-rate warm-up (0 learns fastest in a short run)",
    )
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("worker", help="run jobs from one or more pools (server mode)")
    p.add_argument(
        "--pool", action="append", help="pool to consume (repeatable; default: the first GPU pool)"
    )
    p.add_argument(
        "--slots",
        type=int,
        default=None,
        help="jobs at once in each pool (default: one per GPU, else 1)",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help=(
            f"port for Dramatiq's Prometheus metrics: given, it must be free; by default "
            f"{DEFAULT_METRICS_PORT}, or the next free port (logged); 0 turns metrics off"
        ),
    )
    p.add_argument(
        "--max-jobs",
        type=_positive_int,
        default=None,
        metavar="N",
        help="exit (status 0) once N jobs have finished; never during a job (KEDA ScaledJob)",
    )
    p.add_argument(
        "--idle-exit",
        type=_positive_float,
        default=None,
        metavar="SECONDS",
        help="exit (status 0) after this long without a job to run",
    )
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("scheduler", help="admit queued jobs fairly and recover lost ones")
    p.add_argument(
        "--health-port",
        type=_port,
        default=DEFAULT_SCHEDULER_HEALTH_PORT,
        help=(
            f"port for GET /healthz (liveness and readiness; default "
            f"{DEFAULT_SCHEDULER_HEALTH_PORT}); 0 serves none"
        ),
    )
    p.add_argument("--health-host", default="0.0.0.0", help=argparse.SUPPRESS)  # noqa: S104
    p.set_defaults(func=cmd_scheduler)

    p = sub.add_parser("migrate", help="apply database migrations up to the latest revision")
    p.add_argument(
        "--check",
        action="store_true",
        help="only check: exit 1 unless the schema is at the latest revision",
    )
    p.add_argument(
        "--wait",
        type=float,
        default=0,
        metavar="SECONDS",
        help="like --check, but keep checking for up to this long",
    )
    p.add_argument(
        "--wait-db",
        type=_positive_float,
        default=None,
        metavar="SECONDS",
        help="first wait up to this long for the database to accept connections",
    )
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("create-admin", help="create a local admin, or reset one's password")
    p.add_argument("--username", default="admin")
    p.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    p.set_defaults(func=cmd_create_admin)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Alembic announces every plugin it loads at INFO; the migration lines are enough.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
