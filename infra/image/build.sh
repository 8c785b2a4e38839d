#!/usr/bin/env bash
# The builder stage of infra/Dockerfile, as a script the image and the tests both run.
#
#   bash infra/image/build.sh deps      with only the manifests and Cargo.lock copied: stub every source
#                                       Cargo needs (infra/image/stubs.txt), build the dependencies of
#                                       `flowspike --features isal`, remove the stubs (a cached layer)
#   bash infra/image/build.sh app OUT   with the whole context copied: build flowspike into OUT/flowspike
#                                       and run `OUT/flowspike --version`
#
# Run from anywhere; it works in the workspace root two levels up (the Dockerfile's WORKDIR). `deps`
# refuses to run where a stubbed file already exists: it deletes its stubs afterwards, so it must never
# run in a checkout.
#
# Environment:
#   FLOWSPIKE_BUILD_PROFILE  the cargo profile (default `release`, the image's). tests/infra.rs builds
#                            with `dev` (a release build with ISA-L takes 10+ minutes on 2 cores).
#   PGO=1                    `app` builds profile-guided with bench/pgo.sh instead (the Dockerfile's
#                            `--build-arg PGO=1`; always the release profile).
#   CARGO_BUILD_BUILD_DIR, CARGO_NET_OFFLINE, CARGO_TARGET_DIR  as cargo reads them (the tests set
#                            the first two; the image none).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
profile=${FLOWSPIKE_BUILD_PROFILE:-release}
stubs=infra/image/stubs.txt

die() { echo "infra/image/build.sh: $*" >&2; exit 1; }

# ISA-L (the `isal` feature) is built from source with these; the Dockerfile installs them.
for tool in nasm autoconf automake libtoolize make; do
  command -v "$tool" >/dev/null || die "$tool is missing (the isal feature builds ISA-L from source)"
done

build() {
  cargo build --locked --profile "$profile" -p flowspike --bin flowspike --features isal
}

# The (kind, path) lines of the stub list, comments and blank lines left out.
stub_lines() { sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$stubs"; }

# Every target `cargo metadata` lists must have its file: a target named with an explicit `path` is
# listed whether or not the file exists (Cargo refuses it later, when it builds it).
check_targets() {
  local meta missing=0 path
  meta=$(cargo metadata --locked --no-deps --format-version 1)
  while IFS= read -r path; do
    [ -e "$path" ] || { echo "infra/image/build.sh: no stub for target source $path (add it to $stubs)" >&2; missing=1; }
  done < <(grep -o '"src_path":"[^"]*"' <<<"$meta" | sed 's/^"src_path":"//; s/"$//')
  [ "$missing" = 0 ] || exit 1
}

case "${1:-}" in
  deps)
    [ -f "$stubs" ] || die "no $stubs (copy infra/image/ before this step)"
    while read -r kind path; do
      [ ! -e "$path" ] || die "$path exists: deps runs only where the manifests alone are copied (it deletes its stubs)"
    done < <(stub_lines)
    while read -r kind path; do
      mkdir -p "$(dirname "$path")"
      case "$kind" in
        lib) printf '//! Stub of the image'"'"'s dependency layer (infra/image/build.sh).\n' >"$path" ;;
        bin | test | bench | example) printf '//! Stub of the image'"'"'s dependency layer (infra/image/build.sh).\nfn main() {}\n' >"$path" ;;
        *) die "$stubs: unknown kind '$kind' for $path (lib, bin, test, bench or example)" ;;
      esac
    done < <(stub_lines)
    check_targets
    build
    # The real sources come with the next COPY; leave no stub behind (nor the directories made for them).
    while read -r kind path; do
      rm -f "$path"
      rmdir -p --ignore-fail-on-non-empty "$(dirname "$path")" 2>/dev/null || true
    done < <(stub_lines)
    ;;
  app)
    out=${2:-}
    [ -n "$out" ] || die "usage: build.sh app OUT_DIR"
    # COPY keeps the sources' modification times, which can be older than the stub build's outputs:
    # Cargo would then link the stubs' empty libraries. Touching every source makes them newer.
    find . -path ./target -prune -o -name '*.rs' -exec touch {} +
    if [ "${PGO:-0}" = 1 ]; then
      bash bench/pgo.sh --out "$out/flowspike" --work /tmp/pgo
      rm -rf /tmp/pgo
    else
      build
      case "$profile" in dev) dir=debug ;; *) dir=$profile ;; esac
      install -D -m 0755 "${CARGO_TARGET_DIR:-target}/$dir/flowspike" "$out/flowspike"
    fi
    "$out/flowspike" --version
    ;;
  *)
    sed -n '2,20p' "${BASH_SOURCE[0]}" >&2
    exit 2
    ;;
esac
