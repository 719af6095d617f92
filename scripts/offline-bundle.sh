#!/usr/bin/env bash
# Builds the air-gapped install bundle: the packaged chart, the example values, the
# images the chart runs (as OCI archives, which keep their digests), optional YOLO
# weights, checksums and load-images.sh, which pushes the images into the lab's registry.
# Everything ends up in one archive:
#
#     scripts/offline-bundle.sh [--output DIR] [--values FILE]... [--weights FILE.pt]...
#                               [--platform OS/ARCH] [--no-images]
#
# Images come from the local podman or docker storage first (what `make images` built),
# then from their registry. An image that neither has is listed in images/NOT-SAVED.txt
# and the bundle is written all the same. Environment: HELM, SKOPEO, PODMAN and DOCKER
# name the tools (default: found on PATH; helm also in .tools/, where `make test` caches
# it; an empty value disables one). Without helm the chart is packed with tar.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CHART_DIR="$ROOT/helm/oculab"
OUTPUT="$ROOT/dist"
PLATFORM="linux/amd64"
SAVE_IMAGES=1
VALUES=()
WEIGHTS=()
# Seconds allowed for one image's download from its registry.
PULL_TIMEOUT="${PULL_TIMEOUT:-900}"

usage() {
    sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        -o | --output) OUTPUT="$2"; shift 2 ;;
        -f | --values) VALUES+=("$2"); shift 2 ;;
        -w | --weights) WEIGHTS+=("$2"); shift 2 ;;
        --platform) PLATFORM="$2"; shift 2 ;;
        --no-images) SAVE_IMAGES=0; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "offline-bundle: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done

log() { printf '==> %s\n' "$*"; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }

for weights in "${WEIGHTS[@]+"${WEIGHTS[@]}"}"; do
    [[ -f "$weights" && "$weights" == *.pt ]] || {
        echo "offline-bundle: --weights needs an existing .pt file, not $weights" >&2
        exit 2
    }
done

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

# A tool from its variable (empty: disabled) or PATH.
find_tool() {
    local var="$1" name="$2"
    if [[ -n "${!var+set}" ]]; then
        [[ -n "${!var}" && -x "${!var}" ]] && echo "${!var}"
        return 0
    fi
    command -v "$name" || true
}

mkdir -p "$OUTPUT"
OUTPUT="$(cd "$OUTPUT" && pwd)"
STAGE="$(mktemp -d "$OUTPUT/.bundle.XXXXXX")"
trap 'rm -rf "$STAGE"' EXIT
BUNDLE="$STAGE/$NAME"
mkdir -p "$BUNDLE/chart" "$BUNDLE/images" "$BUNDLE/values"

# 1. The chart and the example values.
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
# With --values: exactly the images of that configuration; without: every component on
# (the bundled database and Redis included). global.imageRegistry is cleared: the list
# names where the images come from; load-images.sh puts them under the lab's registry.
IMAGES="$BUNDLE/images.txt"
if [[ -n "$HELM_BIN" ]]; then
    render_args=()
    for v in "${VALUES[@]+"${VALUES[@]}"}"; do render_args+=(-f "$v"); done
    if [[ ${#render_args[@]} -eq 0 ]]; then
        render_args=(--set postgresql.enabled=true --set redis.enabled=true)
    fi
    "$HELM_BIN" template oculab "$CHART_DIR" "${render_args[@]}" --set global.imageRegistry= |
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
# registry/path:tag -> file name; the same function is in load-images.sh.
archive_name() { printf '%s.oci.tar' "$(printf '%s' "$1" | tr '/:@' '___')"; }
SKOPEO_BIN="$(find_tool SKOPEO skopeo)"
PODMAN_BIN="$(find_tool PODMAN podman)"
DOCKER_BIN="$(find_tool DOCKER docker)"
if [[ -n "$DOCKER_BIN" ]] && ! "$DOCKER_BIN" info >/dev/null 2>&1; then
    DOCKER_UNREACHABLE=1
    DOCKER_BIN=""
fi
NOT_SAVED="$BUNDLE/images/NOT-SAVED.txt"
DIGESTS="$BUNDLE/images/digests.txt"
: >"$DIGESTS"
saved=0
missing=0

# The line of a tool's output that says why it failed (not its info chatter).
why() {
    local line
    line="$(printf '%s\n' "$1" | grep -v 'level=info' | grep -E 'level=fatal|[Ee]rror' | tail -n1)"
    printf '%s' "${line:-$(printf '%s\n' "$1" | tail -n1)}"
}

not_saved() {  # image, reason
    missing=$((missing + 1))
    warn "NOT saved: $1: $2"
    printf '%s\t%s\n' "$1" "$2" >>"$NOT_SAVED.list"
}

# Where a local copy of the image is, for skopeo (empty: none).
local_source() {
    if [[ -n "$PODMAN_BIN" ]] && "$PODMAN_BIN" image exists "$1" 2>/dev/null; then
        echo "containers-storage:$1"
    elif [[ -n "$DOCKER_BIN" ]] && "$DOCKER_BIN" image inspect "$1" >/dev/null 2>&1; then
        echo "docker-daemon:$1"
    fi
}

# The digest of the (only) manifest or index in an OCI archive.
archive_digest() {
    "$SKOPEO_BIN" inspect --raw "oci-archive:$1" | sha256sum | sed 's/^\([0-9a-f]*\).*/sha256:\1/'
}

save_with_skopeo() {  # image, archive -> 0 when saved
    local image="$1" archive="$2" source="" err
    local args=(copy --quiet)
    # A digest pin names what the registry holds (often a manifest list): only a copy
    # from there keeps it; a local copy would be compressed anew.
    [[ "$image" == *@sha256:* ]] || source="$(local_source "$image")"
    if [[ -n "${source:-}" ]]; then
        log "saving $image from local storage ($source)"
        # Local layers are uncompressed: compress them once here, and the pushed image
        # keeps this archive's digest.
        args+=(--dest-compress --dest-compress-format gzip "$source")
    elif [[ "$image" == *@sha256:* ]]; then
        # Every platform of the list, so the pinned digest stays valid.
        log "saving $image from its registry (every platform: the digest is pinned)"
        args+=(--multi-arch all --preserve-digests "docker://$image")
    else
        log "saving $image from its registry ($PLATFORM)"
        args+=(--override-os "${PLATFORM%%/*}" --override-arch "${PLATFORM##*/}" "docker://$image")
    fi
    # Only a download gets a time limit: copying a 7 GB local image takes minutes.
    local limit=()
    [[ -z "${source:-}" ]] && limit=(timeout "$PULL_TIMEOUT")
    local status=0
    err="$("${limit[@]+"${limit[@]}"}" "$SKOPEO_BIN" "${args[@]}" "oci-archive:$archive:$image" 2>&1)" || status=$?
    if [[ "$status" -ne 0 ]]; then
        rm -f "$archive"
        if [[ "$status" -eq 124 ]]; then
            not_saved "$image" "no answer from its registry within ${PULL_TIMEOUT}s (PULL_TIMEOUT)"
        else
            not_saved "$image" "$(why "$err")"
        fi
        return 1
    fi
}

save_with_engine() {  # engine, image, archive -> 0 when saved
    local engine="$1" image="$2" archive="$3" err
    if ! "$engine" image inspect "$image" >/dev/null 2>&1; then
        log "pulling $image with $(basename "$engine") ($PLATFORM)"
        local status=0
        err="$(timeout "$PULL_TIMEOUT" "$engine" pull --platform "$PLATFORM" "$image" 2>&1)" || status=$?
        if [[ "$status" -eq 124 ]]; then
            not_saved "$image" "no answer from its registry within ${PULL_TIMEOUT}s (PULL_TIMEOUT)"
            return 1
        elif [[ "$status" -ne 0 ]]; then
            not_saved "$image" "$(why "$err")"
            return 1
        fi
    fi
    log "saving $image with $(basename "$engine")"
    if [[ "$(basename "$engine")" == podman ]]; then
        err="$("$engine" save --format oci-archive -o "$archive" "$image" 2>&1)" || {
            rm -f "$archive"; not_saved "$image" "$(why "$err")"; return 1; }
    else
        # Docker 25+ writes an OCI layout; older daemons a docker-archive, whose digest
        # changes on push (load-images.sh then records the pushed digests).
        err="$("$engine" save -o "$archive" "$image" 2>&1)" || {
            rm -f "$archive"; not_saved "$image" "$(why "$err")"; return 1; }
    fi
}

if [[ "$SAVE_IMAGES" == 0 ]]; then
    log "--no-images: not saving images"
    reason="the bundle was built with --no-images"
elif [[ -z "$SKOPEO_BIN$PODMAN_BIN$DOCKER_BIN" ]]; then
    if [[ -n "${DOCKER_UNREACHABLE:-}" ]]; then
        reason="docker is installed but its daemon is not reachable, and neither skopeo nor podman is installed"
    else
        reason="none of skopeo, podman or docker is installed"
    fi
    warn "images NOT saved: $reason."
else
    reason=""
    while read -r image; do
        archive="$BUNDLE/images/$(archive_name "$image")"
        if [[ -n "$SKOPEO_BIN" ]]; then
            save_with_skopeo "$image" "$archive" || continue
        elif [[ -n "$PODMAN_BIN" ]]; then
            save_with_engine "$PODMAN_BIN" "$image" "$archive" || continue
        else
            save_with_engine "$DOCKER_BIN" "$image" "$archive" || continue
        fi
        saved=$((saved + 1))
        if [[ -n "$SKOPEO_BIN" ]]; then
            digest="$(archive_digest "$archive")"
            if [[ "$image" == *@sha256:* && "$digest" != "${image##*@}" ]]; then
                rm -f "$archive"
                saved=$((saved - 1))
                not_saved "$image" "the saved image has digest $digest, not the pinned one"
                continue
            fi
            printf '%s\t%s\n' "$image" "$digest" >>"$DIGESTS"
        fi
    done <"$IMAGES"
fi

if [[ -n "$reason" ]]; then
    while read -r image; do printf '%s\t%s\n' "$image" "$reason" >>"$NOT_SAVED.list"; done <"$IMAGES"
fi
if [[ -f "$NOT_SAVED.list" ]]; then
    {
        echo "These images are NOT in this bundle (image, then why):"
        echo
        sed 's/^/    /' "$NOT_SAVED.list"
        echo
        echo "Build them (make images) or make their registry reachable, then run"
        echo "scripts/offline-bundle.sh again; or push them into the lab's registry by other"
        echo "means under the same repository paths. load-images.sh skips them with a warning."
    } >"$NOT_SAVED"
    rm -f "$NOT_SAVED.list"
fi

# values/image-digests.yaml pins every saved image by the digest it keeps after
# load-images.sh pushes it (skopeo copies the archive's manifest unchanged).
values_key() {  # image ref -> the chart's images.<key>
    local name="${1%@*}"
    name="${name##*/}"
    case "${name%%:*}" in
        oculab-api) echo api ;;
        oculab-worker) echo worker ;;
        postgres | postgresql) echo postgresql ;;
        redis) echo redis ;;
    esac
}
if [[ -s "$DIGESTS" ]]; then
    {
        echo "# The digests of the bundled images: add with -f to pin every image by digest."
        echo "images:"
        while IFS=$'\t' read -r image digest; do
            key="$(values_key "$image")"
            [[ -n "$key" ]] || continue
            printf '  %s:\n    digest: "%s"\n' "$key" "$digest"
        done <"$DIGESTS"
    } >"$BUNDLE/values/image-digests.yaml"
fi
[[ -s "$DIGESTS" ]] || rm -f "$DIGESTS"

# 4. Optional YOLO weights, to upload once Oculab runs (the workers never download).
if [[ ${#WEIGHTS[@]} -gt 0 ]]; then
    mkdir -p "$BUNDLE/weights"
    for weights in "${WEIGHTS[@]}"; do cp "$weights" "$BUNDLE/weights/"; done
fi

# 5. The script that moves the images into the lab's registry, and the guide.
cp "$ROOT/scripts/offline-load-images.sh" "$BUNDLE/load-images.sh"
chmod +x "$BUNDLE/load-images.sh"
cp "$ROOT/docs/install.md" "$BUNDLE/install.md"
if [[ "$saved" -gt 0 ]]; then
    images_line="$saved of $(wc -l <"$IMAGES") saved in images/ as OCI archives"
    [[ "$missing" -gt 0 ]] && images_line="$images_line; the rest NOT included (see images/NOT-SAVED.txt)"
else
    images_line="NOT included (see images/NOT-SAVED.txt)"
fi
cat >"$BUNDLE/README.md" <<EOF
# Oculab $APP_VERSION offline install bundle

Chart $VERSION, built $(date -u +%Y-%m-%dT%H:%M:%SZ).
Images: $images_line.

1. Check the bundle, then push the images into the lab's registry (from a machine with
   skopeo, podman or docker 25+ that reaches it; log in to the registry first):

       sha256sum -c SHA256SUMS
       ./load-images.sh registry.lab.example:5000

   It keeps each image's repository path (registry.lab.example:5000/oculab/oculab-api)
   and writes pushed-digests.yaml, the digests as the registry has them.

2. Write your values file (start from values/production.yaml; install.md explains every
   part) and set \`global.imageRegistry: registry.lab.example:5000\`.

3. Install, pinning the images by digest:

       helm install oculab chart/oculab-$VERSION.tgz -n oculab --create-namespace \\
         -f my-values.yaml -f pushed-digests.yaml
       helm test oculab -n oculab

4. weights/ (when present): YOLO \`.pt\` files to upload into a project once Oculab
   runs (Models page, or \`curl -H "Authorization: Bearer \$TOKEN"
   -F file=@weights/yolo11n.pt "https://oculab.lab.example/api/models?project_id=1"\`).

images.txt lists every image; images/digests.txt the digest of each saved one;
SHA256SUMS covers every file. install.md is the full guide.
EOF

(cd "$BUNDLE" && find . -type f -print0 | sort -z | xargs -0 sha256sum >"$STAGE/SHA256SUMS")
mv "$STAGE/SHA256SUMS" "$BUNDLE/SHA256SUMS"

# 6. One archive; gzip -1: the image layers are compressed already.
ARCHIVE="$OUTPUT/$NAME.tar.gz"
tar -C "$STAGE" -cf - "$NAME" | gzip -1 >"$ARCHIVE.tmp"
mv "$ARCHIVE.tmp" "$ARCHIVE"
log "wrote $ARCHIVE ($(du -h "$ARCHIVE" | cut -f1))"
if [[ "$saved" -eq 0 ]]; then
    log "the bundle holds the chart and the image list, but no images"
elif [[ "$missing" -gt 0 ]]; then
    log "$missing image(s) NOT saved: see images/NOT-SAVED.txt in the bundle"
fi
