# Shared by the scripts: where cargo builds, and the Debian packages the build needs.
# Sourced, not run.

# Outside the work tree, so builds survive between checkouts and CI reuses them.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/idem/target}"

# RocksDB's C++ goes through ccache: any change among the build dependencies (a new crate can
# shift feature unification under bindgen) reruns RocksDB's build script, and without a cache
# that recompiles all of it (about 10 minutes on 2 cores).
export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/idem/ccache}"
export CC="ccache cc" CXX="ccache c++"

# Installs Debian packages (with sudo unless root); the first argument says what for.
apt_install() {
  local why=$1
  shift
  [ $# -gt 0 ] || return 0
  echo "installing $* ($why)" >&2
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@"
}

# Installs, when missing, what the build needs: clang and libclang for the rocksdb crate's
# bindings, ccache for its C++.
install_build_deps() {
  local missing=()
  command -v clang >/dev/null 2>&1 || missing+=(clang)
  dpkg -s libclang-dev >/dev/null 2>&1 || missing+=(libclang-dev)
  command -v ccache >/dev/null 2>&1 || missing+=(ccache)
  apt_install "needed to build RocksDB's bindings" "${missing[@]}"
}

# Headless Chromium and its WebDriver, for the portals' browser tests (tests/tests/browser.rs).
install_browser_deps() {
  local missing=()
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
  apt_install "the portals' browser tests" "${missing[@]}"
}
