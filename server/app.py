"""The FastAPI application factory. Everything a request needs hangs off ``app.state``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis
from fastapi import FastAPI
from fastapi.routing import APIRoute
from PIL import Image as PILImage
from prometheus_client import CollectorRegistry
from starlette.concurrency import run_in_threadpool
from starlette.middleware.sessions import SessionMiddleware
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from server import __version__
from server.admin.endpoints import router as admin_router
from server.annotations.endpoints import router as annotations_router
from server.auth.endpoints import router as auth_router
from server.auth.oidc import OidcClient
from server.autolabel.endpoints import router as autolabel_router
from server.datasets.endpoints import router as datasets_router
from server.health.checks import BrokerCollector
from server.health.endpoints import router as health_router
from server.images import decoding
from server.images.endpoints import router as images_router
from server.jobs.endpoints import router as jobs_router
from server.jobs.metrics import JobsCollector
from server.jobs.stream import EventHub
from server.kit.apidocs import install_api_docs
from server.kit.bodylimit import IMPORT_ENVELOPE_BYTES, BodyLimitMiddleware
from server.kit.errors import NotFound, install_error_handlers
from server.kit.headers import SecurityHeadersMiddleware
from server.kit.metrics import HttpMetrics, MetricsMiddleware
from server.kit.ratelimit import MemoryRateLimiter, RateLimiter, RedisRateLimiter
from server.projects import idp
from server.projects.endpoints import router as projects_router
from server.registry.endpoints import router as models_router
from server.settings import Mode, Settings
from server.tokens.endpoints import router as tokens_router
from server.training.endpoints import router as training_router
from server.users.endpoints import router as users_router
from server.web.endpoints import install_web
from workers.machinery import for_api, in_process_jobs


def _unique_operation_id(route: APIRoute) -> str:
    return route.name


def create_app(
    settings: Settings, *, run_jobs: bool = False, demo_owner: int | None = None
) -> FastAPI:
    """The API. ``run_jobs`` (standalone) also runs the scheduler and in-process
    workers on the stub broker for as long as the app lives; ``demo_owner`` then runs
    the demo loop for that user in the background once they are up (first start)."""
    settings.ensure_secret_key()
    machinery = for_api(settings, runs_jobs=run_jobs)
    maker = machinery.sessionmaker
    registry = CollectorRegistry()
    event_hub = EventHub(settings.resolved_database_url, machinery.timeouts)
    registry.register(JobsCollector(maker, settings))
    # Pillow's own bomb guard follows our pixel budget (it errors at twice this).
    PILImage.MAX_IMAGE_PIXELS = settings.max_image_pixels

    rate_limiter: RateLimiter
    redis_client: redis.Redis | None = None
    if settings.mode is Mode.server:
        redis_client = redis.Redis.from_url(settings.resolved_redis_url, socket_timeout=2)
        rate_limiter = RedisRateLimiter(redis_client)
        registry.register(BrokerCollector(redis_client))
    else:
        rate_limiter = MemoryRateLimiter()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        jobs = None
        if run_jobs:
            jobs = in_process_jobs(machinery)
            await run_in_threadpool(jobs.start)
            if demo_owner is not None:
                # Only a first standalone start runs the demo: the other starts do not
                # load it (nor the font libraries its drawing brings).
                from server.demo.loop import start_demo_thread

                start_demo_thread(maker, settings, machinery.storage, machinery.kinds, demo_owner)
        event_hub.start()
        try:
            yield
        finally:
            await event_hub.stop()
            if jobs is not None:
                await run_in_threadpool(jobs.stop)
            machinery.close()
            if redis_client is not None:
                redis_client.close()
            # Here, not after uvicorn.run returns: on SIGTERM uvicorn ends the process by
            # raising the signal again once the app has shut down, and pools left running
            # then would make the resource tracker warn of "leaked semaphore objects".
            await run_in_threadpool(decoding.shutdown)

    app = FastAPI(
        title="Oculab",
        version=__version__,
        description="On-premise computer-vision lab server: datasets, review, YOLO training.",
        generate_unique_id_function=_unique_operation_id,
        lifespan=lifespan,
        # Served from the server's own copy of the assets (kit/apidocs.py), not a CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.engine = machinery.engine
    app.state.sessionmaker = maker
    app.state.kinds = machinery.kinds
    app.state.event_hub = event_hub
    app.state.redis = redis_client
    app.state.storage = machinery.storage
    app.state.registry = registry
    app.state.rate_limiter = rate_limiter
    app.state.oidc = OidcClient(settings) if settings.oidc_enabled else None
    app.state.sync_memberships = idp.sync_group_memberships

    install_error_handlers(app)
    install_api_docs(app)
    if settings.metrics_port is not None:
        # Served on OCULAB_METRICS_PORT instead (server/cli.py), which no ingress routes
        # to; here, ahead of the health router's /metrics, it does not exist.
        @app.get("/metrics", include_in_schema=False)
        def metrics_not_here() -> None:
            raise NotFound("not found")

    for router in (
        health_router,
        auth_router,
        tokens_router,
        users_router,
        projects_router,
        images_router,
        annotations_router,
        datasets_router,
        models_router,
        training_router,
        autolabel_router,
        jobs_router,
        admin_router,
    ):
        app.include_router(router)

    # The SPA last: its client routes match whatever the API did not.
    install_web(app)

    # Middleware runs outermost-last: the proxy headers (when a proxy is trusted) set
    # the client address and scheme before anything reads them, metrics see every
    # response, security headers go on every response (the body caps' 413s too), body
    # caps apply before any handler buffers a body, and the OIDC state cookie is
    # available to /auth/*.
    app.add_middleware(
        SessionMiddleware,
        secret_key=settings.secret_key,
        session_cookie="oculab_oidc",
        max_age=600,
        same_site="lax",
        https_only=settings.public_url.startswith("https://"),
    )
    app.add_middleware(
        BodyLimitMiddleware,
        json_limit=settings.max_json_bytes,
        upload_limit=settings.max_request_bytes,
        import_limit=settings.max_import_bytes + IMPORT_ENVELOPE_BYTES,
    )
    app.add_middleware(SecurityHeadersMiddleware, https=settings.public_url.startswith("https://"))
    app.add_middleware(MetricsMiddleware, metrics=HttpMetrics(registry))
    if settings.forwarded_allow_ips.strip():
        # Here rather than in uvicorn so every way of serving the app (and the tests)
        # believes X-Forwarded-* from the configured proxies only.
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.forwarded_allow_ips)
    return app
