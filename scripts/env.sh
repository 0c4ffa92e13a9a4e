# Shared by the scripts: where cargo builds, and the Debian packages the build needs.
# Sourced, not run.

# Outside the work tree, so builds survive between checkouts and CI reuses them.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/idem/target}"

# Installs, when missing, what the rocksdb crate's bindings need to build (clang, libclang).
install_build_deps() {
  local missing=()
  command -v clang >/dev/null 2>&1 || missing+=(clang)
  dpkg -s libclang-dev >/dev/null 2>&1 || missing+=(libclang-dev)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]} (needed to build RocksDB's bindings)" >&2
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
  fi
}
