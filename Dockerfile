# syntax=docker/dockerfile:1
#
# Oculab's two images, from one file:
#
#   docker build --target api    -t registry.lab.example/oculab/oculab-api:0.1.0 .
#   docker build --target worker -t registry.lab.example/oculab/oculab-worker:0.1.0 .
#
# api:    the API, the scheduler, migrations and `helm test` (no torch, ~200 MB).
# worker: the job workers: torch with CUDA (PyPI's Linux wheels bundle the CUDA
#         runtime; the node needs only the NVIDIA driver and device plugin) and
#         ultralytics. Several GB.
# Both run as the unprivileged user 10001 and keep nothing outside /data and /tmp, so
# they work with a read-only root filesystem. Build args pin what changes rarely.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG NODE_IMAGE=node:20-bookworm-slim

# ---- web: the SPA (frontend/), built by Vite into server/web/static/ -----------------
FROM ${NODE_IMAGE} AS web
WORKDIR /src/frontend
COPY frontend/package.json frontend/package-lock.json ./
RUN PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund
COPY frontend/ ./
RUN npm run build && test -f /src/server/web/static/index.html

# ---- base: the runtime user and Python settings shared by both images --------------
FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/oculab \
    PATH=/opt/oculab/bin:$PATH \
    HOME=/tmp \
    OCULAB_DATA_DIR=/data
RUN groupadd --system --gid 10001 oculab \
 && useradd --system --uid 10001 --gid oculab --no-create-home --home-dir /tmp \
        --shell /usr/sbin/nologin oculab \
 && mkdir -p /data && chown 10001:10001 /data

# ---- build-api: the application into a virtualenv, without the ML extra -------------
FROM base AS build-api
RUN python -m venv /opt/oculab
WORKDIR /src
COPY pyproject.toml README.md ./
COPY server ./server
COPY workers ./workers
COPY migrations ./migrations
# The built web app travels inside the package (package data); the API serves it at /.
COPY --from=web /src/server/web/static ./server/web/static
RUN pip install . && pip check \
 && python -c "import importlib.resources as r; assert (r.files('server.web') / 'static' / 'index.html').is_file()"

# ---- api ------------------------------------------------------------------------------
FROM base AS api
COPY --from=build-api /opt/oculab /opt/oculab
USER 10001:10001
WORKDIR /tmp
EXPOSE 8000
ENTRYPOINT ["oculab"]
CMD ["api", "--host", "0.0.0.0", "--port", "8000"]

# ---- build-worker: the same application with torch (CUDA) and ultralytics ------------
FROM base AS build-worker
# An index with other CUDA builds of torch (e.g. PyTorch's own cu118 index for older
# drivers); empty: PyPI's default Linux wheels.
ARG TORCH_INDEX_URL=""
RUN python -m venv /opt/oculab
WORKDIR /src
COPY pyproject.toml README.md ./
COPY server ./server
COPY workers ./workers
COPY migrations ./migrations
# OpenCV: the headless build instead of ultralytics' default (no X11/GL libraries).
# Versions come from requirements/ml.lock: what the tests ran with.
COPY requirements ./requirements
# hadolint ignore=DL3013
RUN if [ -n "$TORCH_INDEX_URL" ]; then \
        pip install -c requirements/ml.lock --extra-index-url "$TORCH_INDEX_URL" torch torchvision; \
    fi \
 && pip install -c requirements/ml.lock '.[ml]' \
 && pip uninstall -y opencv-python \
 && pip install opencv-python-headless \
 && python -c "import torch, ultralytics; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

# ---- worker ---------------------------------------------------------------------------
FROM base AS worker
# Debian's stable release pins these libraries for the base image's lifetime.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libglib2.0-0 libgomp1 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build-worker /opt/oculab /opt/oculab
# Ultralytics never downloads (weights come only through POST /api/models) and never
# pip-installs; Oculab also points its settings into $OCULAB_DATA_DIR/ultralytics.
# NVIDIA_VISIBLE_DEVICES is left to the device plugin, so a pod sees only its GPUs.
ENV YOLO_OFFLINE=1 \
    YOLO_AUTOINSTALL=False \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    MPLCONFIGDIR=/tmp/matplotlib
USER 10001:10001
WORKDIR /tmp
EXPOSE 9191
ENTRYPOINT ["oculab"]
CMD ["worker", "--pool", "gpu"]
