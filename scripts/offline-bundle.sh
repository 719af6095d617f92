#!/usr/bin/env bash
# Builds the air-gapped install bundle: the packaged chart, the list of images it runs,
# the images themselves (saved with skopeo or docker when either can reach a registry),
# example values files, the install guide and a script that pushes the images into the
# lab's registry. Everything ends up in one archive:
#
#     scripts/offline-bundle.sh [--output DIR] [--values FILE]... [--platform OS/ARCH] [--no-images]
#
# Environment: HELM, SKOPEO and DOCKER name the tools (default: found on PATH; helm also
# in .tools/, where `make test` caches it). Without helm the chart is packed with tar.
# Without skopeo or a reachable docker daemon the bundle holds no images: it says so and
# lists them, and load-images.sh on a connected machine can fetch them later.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CHART_DIR="$ROOT/helm/oculab"
OUTPUT="$ROOT/dist"
PLATFORM="linux/amd64"
SAVE_IMAGES=1
VALUES=()

usage() {
    sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        -o | --output) OUTPUT="$2"; shift 2 ;;
        -f | --values) VALUES+=("$2"); shift 2 ;;
        --platform) PLATFORM="$2"; shift 2 ;;
        --no-images) SAVE_IMAGES=0; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "offline-bundle: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done

log() { printf '==> %s\n' "$*"; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }

chart_field() { awk -v key="$1:" '$1 == key { gsub(/"/, "", $2); print $2; exit }' "$CHART_DIR/Chart.yaml"; }
VERSION="$(chart_field version)"
APP_VERSION="$(chart_field appVersion)"
NAME="oculab-offline-$VERSION"

find_helm() {
    if [[ -n "${HELM:-}" ]]; then
        [[ -x "$HELM" ]] && { echo "$HELM"; return; }
        warn "HELM=$HELM is not executable"
    fi
    if command -v helm >/dev/null 2>&1; then command -v helm; return; fi
    local cached
    cached="$(find "$ROOT/.tools" -path '*/helm' -type f -perm -u+x 2>/dev/null | sort | tail -n1 || true)"
    [[ -n "$cached" ]] && echo "$cached"
}

mkdir -p "$OUTPUT"
OUTPUT="$(cd "$OUTPUT" && pwd)"
STAGE="$(mktemp -d "$OUTPUT/.bundle.XXXXXX")"
trap 'rm -rf "$STAGE"' EXIT
BUNDLE="$STAGE/$NAME"
mkdir -p "$BUNDLE/chart" "$BUNDLE/images" "$BUNDLE/values"

# 1. The chart.
HELM_BIN="$(find_helm || true)"
if [[ -n "$HELM_BIN" ]]; then
    log "packaging the chart with $("$HELM_BIN" version --short 2>/dev/null || echo helm)"
    "$HELM_BIN" package "$CHART_DIR" --destination "$BUNDLE/chart" >/dev/null
else
    warn "helm not found: packing the chart directory with tar (installable all the same)"
    tar -C "$(dirname "$CHART_DIR")" -czf "$BUNDLE/chart/oculab-$VERSION.tgz" "$(basename "$CHART_DIR")"
fi
cp "$CHART_DIR"/examples/*.yaml "$BUNDLE/values/"

# 2. The image list: what the chart renders, so it cannot drift from the templates.
# With --values: exactly the images of that configuration; without: every component
# on (the bundled database and Redis included).
IMAGES="$BUNDLE/images.txt"
if [[ -n "$HELM_BIN" ]]; then
    render_args=()
    for v in "${VALUES[@]+"${VALUES[@]}"}"; do render_args+=(-f "$v"); done
    if [[ ${#render_args[@]} -eq 0 ]]; then
        render_args=(--set postgresql.enabled=true --set redis.enabled=true)
    fi
    "$HELM_BIN" template oculab "$CHART_DIR" "${render_args[@]}" |
        sed -n 's/^[[:space:]]*image:[[:space:]]*"\{0,1\}\([^"[:space:]]*\)"\{0,1\}[[:space:]]*$/\1/p' |
        sort -u >"$IMAGES"
else
    sed -n 's/^[[:space:]]*image:[[:space:]]*\([^[:space:]]*\)[[:space:]]*$/\1/p' "$CHART_DIR/Chart.yaml" |
        sort -u >"$IMAGES"
fi
[[ -s "$IMAGES" ]] || { echo "offline-bundle: found no images" >&2; exit 1; }
log "images ($(wc -l <"$IMAGES")):"
sed 's/^/      /' "$IMAGES"

# 3. The images themselves.
archive_name() { printf '%s.tar' "$(printf '%s' "$1" | tr '/:@' '___')"; }
SKOPEO_BIN="${SKOPEO-$(command -v skopeo || true)}"
DOCKER_BIN="${DOCKER-$(command -v docker || true)}"
SAVED_WITH=""
if [[ "$SAVE_IMAGES" == 0 ]]; then
    SAVED_WITH=""
    log "--no-images: not saving images"
elif [[ -n "$SKOPEO_BIN" && -x "$SKOPEO_BIN" ]]; then
    SAVED_WITH="skopeo"
    os="${PLATFORM%%/*}"
    arch="${PLATFORM##*/}"
    while read -r image; do
        log "saving $image with skopeo ($PLATFORM)"
        "$SKOPEO_BIN" copy --override-os "$os" --override-arch "$arch" \
            "docker://$image" "docker-archive:$BUNDLE/images/$(archive_name "$image"):$image"
    done <"$IMAGES"
elif [[ -n "$DOCKER_BIN" && -x "$DOCKER_BIN" ]] && "$DOCKER_BIN" info >/dev/null 2>&1; then
    SAVED_WITH="docker"
    while read -r image; do
        log "saving $image with docker ($PLATFORM)"
        "$DOCKER_BIN" pull --platform "$PLATFORM" "$image" >/dev/null
        "$DOCKER_BIN" save -o "$BUNDLE/images/$(archive_name "$image")" "$image"
    done <"$IMAGES"
else
    if [[ -n "$DOCKER_BIN" && -x "$DOCKER_BIN" ]]; then
        reason="docker is installed but its daemon is not reachable, and skopeo is not installed"
    else
        reason="neither skopeo nor docker is installed"
    fi
    warn "images NOT saved: $reason."
    warn "the bundle lists them in images.txt; run load-images.sh --save on a machine that can reach the registries."
    cat >"$BUNDLE/images/NOT-SAVED.txt" <<EOF
The images were not saved into this bundle: $reason
on the machine that built it. images.txt lists them. To complete the bundle, on a
machine with skopeo (or docker) that can reach the public registries:

    ./load-images.sh --save        # writes images/*.tar next to this file
EOF
fi

# 4. The script that moves the images into the lab's registry.
cat >"$BUNDLE/load-images.sh" <<'EOF'
#!/usr/bin/env bash
# Pushes the bundled images into the lab's registry, keeping their repository paths:
#     ./load-images.sh registry.lab.example:5000
# then install with --set global.imageRegistry=registry.lab.example:5000.
#     ./load-images.sh --save    fetches and saves the images into images/ (needs internet)
set -euo pipefail
cd "$(dirname "$0")"
archive_name() { printf '%s.tar' "$(printf '%s' "$1" | tr '/:@' '___')"; }
target_path() { printf '%s' "${1#*/}"; }   # drop the source registry host
if [[ "${1:-}" == "--save" ]]; then
    while read -r image; do
        if command -v skopeo >/dev/null; then
            skopeo copy "docker://$image" "docker-archive:images/$(archive_name "$image"):$image"
        else
            docker pull "$image" && docker save -o "images/$(archive_name "$image")" "$image"
        fi
    done <images.txt
    exit 0
fi
registry="${1:?usage: $0 REGISTRY (e.g. registry.lab.example:5000) | --save}"
while read -r image; do
    archive="images/$(archive_name "$image")"
    [[ -f "$archive" ]] || { echo "missing $archive (run ./load-images.sh --save where there is internet)" >&2; exit 1; }
    target="$registry/$(target_path "$image")"
    echo "==> $image -> $target"
    if command -v skopeo >/dev/null; then
        skopeo copy "docker-archive:$archive" "docker://$target"
    else
        docker load -i "$archive" >/dev/null
        docker tag "$image" "$target"
        docker push "$target"
    fi
done <images.txt
EOF
chmod +x "$BUNDLE/load-images.sh"

# 5. The guide.
cp "$ROOT/docs/install.md" "$BUNDLE/install.md"
cat >"$BUNDLE/README.md" <<EOF
# Oculab $APP_VERSION offline install bundle

Chart $VERSION, built $(date -u +%Y-%m-%dT%H:%M:%SZ).
Images: $(if [[ -n "$SAVED_WITH" ]]; then echo "saved with $SAVED_WITH in images/"; else echo "NOT included (see images/NOT-SAVED.txt)"; fi).

1. Push the images into the lab's registry (from a machine with skopeo or docker that
   reaches it):

       ./load-images.sh registry.lab.example:5000

2. Write your values file (start from values/production.yaml; install.md explains every
   part) and set \`global.imageRegistry: registry.lab.example:5000\`.

3. Install:

       helm install oculab chart/oculab-$VERSION.tgz -n oculab --create-namespace -f my-values.yaml
       helm test oculab -n oculab

images.txt lists every image; SHA256SUMS covers every file. install.md is the full
guide (prerequisites, identity provider, upgrades, backups, troubleshooting).
EOF

(cd "$BUNDLE" && find . -type f ! -name SHA256SUMS -print0 | sort -z | xargs -0 sha256sum >SHA256SUMS)

# 6. One archive.
ARCHIVE="$OUTPUT/$NAME.tar.gz"
tar -C "$STAGE" -czf "$ARCHIVE.tmp" "$NAME"
mv "$ARCHIVE.tmp" "$ARCHIVE"
log "wrote $ARCHIVE ($(du -h "$ARCHIVE" | cut -f1))"
if [[ -z "$SAVED_WITH" ]]; then
    log "the bundle holds the chart and the image list, but no images"
fi
