# ISA-L's build tools (the `isal` feature builds ISA-L from source), shared by tests/run.sh and
# bench/compare/run.sh; sourced, not run.
#   isal_tools          true when nasm, autoconf, automake, libtool and make are all there
#   install_isal_tools  installs them with apt-get when missing and running as root (best effort)
#   isal_features       the cargo arguments for the isal feature when its tools are there (see below)
isal_tools() { for t in nasm autoconf automake libtoolize make; do command -v "$t" >/dev/null || return 1; done; }
install_isal_tools() {
  if ! isal_tools && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y -qq nasm autoconf automake libtool make >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq nasm autoconf automake libtool make >/dev/null 2>&1; } \
      || true
  fi
}
# isal_features: installs the tools when it can, then prints `--features isal` when they are all
# there, else a note on stderr and nothing (the default build: zlib-rs inflates streamed gzip).
isal_features() {
  install_isal_tools
  if isal_tools; then
    echo "--features isal"
  else
    echo "note: building without the isal feature (zlib-rs inflates streamed gzip)" >&2
  fi
}
