#!/usr/bin/env bash
# Re-resolves the digests infra/Dockerfile pins its base images by, where a registry is reachable.
#
#   bash infra/image/pin-digests.sh          print each FROM's tag, pinned digest and current index digest
#   bash infra/image/pin-digests.sh --write  also rewrite infra/Dockerfile with the current digests
#
# The digest of a tag is that of its multi-arch index (what `docker buildx imagetools inspect` prints
# first as `Digest:` and `crane digest` prints), never one platform's manifest: pinning a platform's
# manifest would build that platform's image under `--platform` of another. Uses `crane` when installed,
# else `docker buildx imagetools`. Exit 1 when a pin differs from the registry (without --write), 2 when
# no tool or registry answers.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
dockerfile=infra/Dockerfile
write=no
[ "${1:-}" = --write ] && write=yes

resolve() {
  if command -v crane >/dev/null; then
    crane digest "$1"
  elif docker buildx version >/dev/null 2>&1; then
    docker buildx imagetools inspect "$1" | sed -n 's/^Digest:[[:space:]]*//p' | head -n1
  else
    echo "pin-digests.sh: neither crane nor docker buildx is installed" >&2
    return 2
  fi
}

differs=0
# Every `FROM image[:tag][@digest] [AS name]` with a tag (stages that start from an earlier stage have none).
while read -r ref; do
  tag_ref=${ref%%@*}
  pinned=
  [ "$tag_ref" != "$ref" ] && pinned=${ref#*@}
  current=$(resolve "$tag_ref") || exit 2
  case "$current" in sha256:*) ;; *) echo "pin-digests.sh: no digest for $tag_ref" >&2; exit 2 ;; esac
  if [ "$current" = "$pinned" ]; then
    echo "$tag_ref  $pinned  (current)"
    continue
  fi
  echo "$tag_ref  ${pinned:-unpinned}  -> $current"
  differs=1
  if [ "$write" = yes ]; then
    # Replace the reference on its FROM line only ('|' cannot occur in an image reference).
    sed -i "s|^\(FROM[[:space:]].*\)$(sed 's/[.[\*^$]/\\&/g' <<<"$ref")\([[:space:]]\)|\1$tag_ref@$current\2|" "$dockerfile"
  fi
done < <(awk 'toupper($1) == "FROM" { for (i = 2; i <= NF; i++) if ($i !~ /^--/) { print $i; break } }' "$dockerfile" |
         grep ':' | sort -u)

if [ "$differs" = 1 ] && [ "$write" = yes ]; then
  echo "rewrote $dockerfile: update the evidence comment above its FROM lines and docs/deploy.md, \"Image\"" >&2
  differs=0
fi
exit "$differs"
