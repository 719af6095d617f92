#!/usr/bin/env bash
# Pushes the bundled images into the lab's registry, keeping their repository paths
# (the bundle's copy of scripts/offline-load-images.sh):
#
#     ./load-images.sh [--insecure] registry.lab.example:5000
#
# then install with --set global.imageRegistry=registry.lab.example:5000 and
# -f pushed-digests.yaml (the digests as the registry has them). Uses skopeo (keeps every
# digest), else podman, else docker 25+ (both recompress layers: the registry's digests
# then differ from images/digests.txt, and pushed-digests.yaml has the right ones).
# TOOL=skopeo|podman|docker picks one. Log in to the registry first
# (`skopeo login`, `podman login` or `docker login`). --insecure: plain HTTP or an
# untrusted certificate (skopeo and podman; docker needs "insecure-registries").
set -euo pipefail
cd "$(dirname "$0")"

insecure=0
if [[ "${1:-}" == "--insecure" ]]; then insecure=1; shift; fi
registry="${1:?usage: $0 [--insecure] REGISTRY (e.g. registry.lab.example:5000)}"
registry="${registry%/}"

# Must match offline-bundle.sh.
archive_name() { printf '%s.oci.tar' "$(printf '%s' "$1" | tr '/:@' '___')"; }
# registry.example/path/name:tag -> path/name:tag. The first part is a registry when it
# has a dot or a colon or is localhost (Docker's rule); the chart's global.imageRegistry
# replaces exactly that part.
target_path() {
    local first="${1%%/*}"
    if [[ "$1" == */* && ( "$first" == *.* || "$first" == *:* || "$first" == localhost ) ]]; then
        printf '%s' "${1#*/}"
    else
        printf '%s' "$1"
    fi
}
values_key() {  # must match offline-bundle.sh
    local name="${1%@*}"
    name="${name##*/}"
    case "${name%%:*}" in
        oculab-api) echo api ;;
        oculab-worker) echo worker ;;
        postgres | postgresql) echo postgresql ;;
        redis) echo redis ;;
    esac
}

tool="${TOOL:-}"
if [[ -z "$tool" ]]; then
    for candidate in skopeo podman docker; do
        command -v "$candidate" >/dev/null && { tool="$candidate"; break; }
    done
fi
[[ -n "$tool" ]] || { echo "load-images: needs skopeo, podman or docker" >&2; exit 1; }
echo "==> pushing with $tool into $registry"

if [[ -f SHA256SUMS ]] && command -v sha256sum >/dev/null; then
    sha256sum --quiet -c SHA256SUMS || { echo "load-images: the bundle is damaged (SHA256SUMS)" >&2; exit 1; }
fi

digests="$(mktemp)"
trap 'rm -f "$digests"' EXIT
pushed=0
skipped=0
while read -r image; do
    archive="images/$(archive_name "$image")"
    if [[ ! -f "$archive" ]]; then
        echo "WARNING: $image is not in this bundle (see images/NOT-SAVED.txt); skipped" >&2
        skipped=$((skipped + 1))
        continue
    fi
    path="$(target_path "$image")"
    target="$registry/$path"
    echo "==> $image -> $target"
    case "$tool" in
        skopeo)
            flags=(--preserve-digests)
            tls=()
            [[ "$image" == *@sha256:* ]] && flags+=(--multi-arch all)
            [[ "$insecure" == 1 ]] && flags+=(--dest-tls-verify=false) && tls=(--tls-verify=false)
            skopeo copy --quiet "${flags[@]}" "oci-archive:$archive" "docker://$target"
            # The digest as the registry serves it (of the manifest, or of the list).
            digest="sha256:$(skopeo inspect --raw "${tls[@]+"${tls[@]}"}" "docker://$target" | sha256sum | cut -d' ' -f1)"
            ;;
        podman)
            loaded="$(podman load -q -i "$archive" | sed -n 's/^Loaded image[s]*: *//p' | tail -n1)"
            podman tag "${loaded:-$image}" "$target"
            digestfile="$(mktemp)"
            tls=()
            [[ "$insecure" == 1 ]] && tls=(--tls-verify=false)
            podman push -q "${tls[@]+"${tls[@]}"}" --digestfile "$digestfile" "$target"
            digest="$(cat "$digestfile")"
            rm -f "$digestfile"
            ;;
        docker)
            loaded="$(docker load -q -i "$archive" | sed -n 's/^Loaded image[^:]*: *//p' | tail -n1)"
            docker tag "${loaded:-$image}" "$target"
            digest="$(docker push "$target" | sed -n 's/.*digest: \(sha256:[0-9a-f]*\).*/\1/p' | tail -n1)"
            ;;
        *) echo "load-images: TOOL must be skopeo, podman or docker" >&2; exit 2 ;;
    esac
    printf '%s\t%s\t%s\n' "$image" "$target" "$digest" >>"$digests"
    expected="$(awk -F'\t' -v i="$image" '$1 == i { print $2 }' images/digests.txt 2>/dev/null || true)"
    if [[ -n "$expected" && "$expected" != "$digest" ]]; then
        echo "NOTE: $target has digest $digest ($tool recompressed it; the bundle had $expected)." >&2
    fi
    pushed=$((pushed + 1))
done <images.txt

{
    echo "# The digests of the images load-images.sh pushed into $registry:"
    echo "# helm install ... --set global.imageRegistry=$registry -f pushed-digests.yaml"
    echo "images:"
    while IFS=$'\t' read -r image _target digest; do
        key="$(values_key "$image")"
        [[ -n "$key" && -n "$digest" ]] || continue
        printf '  %s:\n    digest: "%s"\n' "$key" "$digest"
    done <"$digests"
} >pushed-digests.yaml
echo "==> pushed $pushed image(s), skipped $skipped; wrote pushed-digests.yaml"
[[ "$skipped" -eq 0 ]]
