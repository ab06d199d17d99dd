# Sourced by the project's scripts: one build environment for every command,
# so cargo never rebuilds a dependency because a variable changed.
# Use Debian's libzstd when it is there (saves compiling zstd from source).
if pkg-config --exists libzstd 2>/dev/null; then
  export ZSTD_SYS_USE_PKG_CONFIG=1
fi
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
