#
# Oculab's two images, from one file (`make images` builds both with podman or docker):
#
#   docker build --target api    -t registry.lab.example/oculab/oculab-api:0.1.0 .
#   docker build --target worker -t registry.lab.example/oculab/oculab-worker:0.1.0 .
#
# api:    the API, the scheduler, migrations and `helm test` (no torch, ~300 MB).
# worker: the job workers: torch with CUDA (the wheels bundle the CUDA runtime; the node
#         needs only the NVIDIA driver and device plugin) and ultralytics. Several GB.
# Both run as the unprivileged user 10001 and keep nothing outside /data and /tmp, so
# they work with a read-only root filesystem.
#
# No `# syntax=` line: BuildKit would fetch that frontend image from Docker Hub, which
# an offline build cannot reach. Everything here works with the built-in frontend,
# BuildKit's or buildah's (podman).
#
# Offline builds: every download goes through these build arguments.
#   PIP_INDEX_URL     the lab's PyPI mirror (devpi, Nexus, Artifactory...)
#   TORCH_INDEX_URL   the mirror of torch's index (default: the URL in the torch lock)
#   NPM_REGISTRY      the lab's npm registry
#   CA_BUNDLE         PEM text of the CA that signs those mirrors' certificates:
#                     --build-arg CA_BUNDLE="$(cat lab-ca.pem)"
#   PYTHON_IMAGE, NODE_IMAGE   the base images, pinned by digest; point them at the
#                     lab's registry (same digest) when Docker Hub is out of reach.
# Credentials in a URL end up in the image history: use a mirror that allows anonymous
# reads from the build network, or a netrc the builder provides.
#
# Each dependency layer is built from the lock files alone, before the code is copied:
# a code change rebuilds only the last layers, not the 4 GB of wheels.

# Refresh: skopeo inspect --format '{{.Digest}}' docker://docker.io/library/python:3.11-slim-bookworm
ARG PYTHON_IMAGE=docker.io/library/python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91
ARG NODE_IMAGE=docker.io/library/node:20-bookworm-slim@sha256:2cf067cfed83d5ea958367df9f966191a942351a2df77d6f0193e162b5febfc0

# ---- web: the SPA (frontend/), built by Vite into server/web/static/ -----------------
FROM ${NODE_IMAGE} AS web
ARG NPM_REGISTRY=https://registry.npmjs.org/
ARG CA_BUNDLE=""
ENV PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
WORKDIR /src/frontend
COPY frontend/package.json frontend/package-lock.json ./
# package-lock.json holds the public registry's tarball URLs; npm fetches them from
# --registry instead. NODE_EXTRA_CA_CERTS adds the CA to Node's own roots.
RUN if [ -n "$CA_BUNDLE" ]; then \
        printf '%s\n' "$CA_BUNDLE" > /tmp/build-ca.pem && export NODE_EXTRA_CA_CERTS=/tmp/build-ca.pem; \
    fi \
 && npm ci --no-audit --no-fund --registry "$NPM_REGISTRY"
COPY frontend/ ./
RUN npm run build && test -f /src/server/web/static/index.html

# ---- base: the runtime user and Python settings shared by both images --------------
FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/oculab \
    PATH=/opt/oculab/bin:$PATH \
    HOME=/tmp \
    OCULAB_DATA_DIR=/data
RUN groupadd --system --gid 10001 oculab \
 && useradd --system --uid 10001 --gid oculab --no-create-home --home-dir /tmp \
        --shell /usr/sbin/nologin oculab \
 && mkdir -p /data && chown 10001:10001 /data

# ---- build-base: pip, pointed at the lab's mirror and trusting its CA ------------------
FROM base AS build-base
ARG PIP_INDEX_URL=https://pypi.org/simple
ARG CA_BUNDLE=""
# Locked installs take only wheels (no sdist runs code at build time), each checked
# against the lock's hash.
ENV PIP_INDEX_URL=${PIP_INDEX_URL} \
    PIP_CERT=/etc/oculab-build-ca.pem \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN { cat /etc/ssl/certs/ca-certificates.crt; printf '%s\n' "$CA_BUNDLE"; } > "$PIP_CERT" \
 && python3 -m venv /opt/oculab
WORKDIR /src

# ---- build-api: the application into a virtualenv, without the ML extra -------------
FROM build-base AS build-api
COPY requirements/api.lock ./requirements/
RUN pip install --require-hashes --no-deps --only-binary :all: -r requirements/api.lock
COPY pyproject.toml README.md ./
COPY server ./server
COPY workers ./workers
COPY migrations ./migrations
# The built web app travels inside the package (package data); the API serves it at /.
COPY --from=web /src/server/web/static ./server/web/static
# Dependencies are all in place: Oculab itself builds offline, with the locked setuptools.
RUN pip install --no-deps --no-index --no-build-isolation . && pip check \
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
FROM build-base AS build-worker
# Which build of torch: requirements/torch-<variant>.lock (docs/install.md lists the
# drivers each needs). cu126 runs on NVIDIA drivers >= 535; PyPI's own build of torch
# 2.14 (cu130) needs >= 580.
ARG TORCH_VARIANT=cu126
ARG TORCH_INDEX_URL=""
# 1. torch, torchvision and their CUDA libraries, from the variant's index only
#    (--index-url: with --extra-index-url, PyPI's CUDA 13 build of the same version
#    could win).
COPY requirements/torch-*.lock ./requirements/
RUN lock="requirements/torch-${TORCH_VARIANT}.lock" \
 && if [ ! -f "$lock" ]; then \
        echo "no $lock: run 'make lock-worker CUDA=${TORCH_VARIANT}' where its index is reachable" >&2; \
        exit 1; \
    fi \
 && index="${TORCH_INDEX_URL:-$(sed -n 's|^# index: \(https\{0,1\}://[^ ]*\).*|\1|p' "$lock")}" \
 && pip install --require-hashes --no-deps --only-binary :all: --index-url "${index:-$PIP_INDEX_URL}" -r "$lock"
# 2. Everything else from PyPI (or the lab's mirror); OpenCV's headless build stands in
#    for opencv-python (requirements/opencv-python-provider), so `pip check` holds.
COPY requirements/worker.lock ./requirements/
COPY requirements/opencv-python-provider ./requirements/opencv-python-provider
RUN pip install --require-hashes --no-deps --only-binary :all: -r requirements/worker.lock \
 && pip install --no-deps --no-index --no-build-isolation ./requirements/opencv-python-provider
# 3. Oculab itself.
COPY pyproject.toml README.md ./
COPY server ./server
COPY workers ./workers
COPY migrations ./migrations
RUN pip install --no-deps --no-index --no-build-isolation . && pip check \
 && python -c "import cv2, torch, ultralytics; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

# ---- worker ---------------------------------------------------------------------------
FROM base AS worker
# No system packages: torch's wheel carries libgomp and OpenCV's headless wheel its own
# libraries, so the image builds without a Debian mirror.
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
