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

# curl and jq, which the README's walkthrough uses (run as written by tests/tests/readme.rs).
install_walkthrough_deps() {
  local missing=()
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  command -v jq >/dev/null 2>&1 || missing+=(jq)
  apt_install "the README's walkthrough" "${missing[@]}"
}

# systemd-analyze checks the deployment's unit file (api/tests/deploy.rs); nothing is started.
install_deploy_deps() {
  local missing=()
  command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
  apt_install "the check of deploy/idemd.service" "${missing[@]}"
}

# Keeps the shared target directory from filling the disk: every dependency change leaves a
# new copy of each test executable (about 100 MB each) beside the old ones, and nothing
# removes them. Old test executables are never inputs of a build, so all but the newest two
# of each name go. While the directory is still over IDEM_TARGET_MAX_GB (default 40), first
# the incremental caches go (our crates compile once from scratch), then everything: the next
# build is cold, with RocksDB's C++ from ccache.
prune_target_dir() {
  local deps="$CARGO_TARGET_DIR/debug/deps"
  if [ -d "$deps" ]; then
    # Test executables are named NAME-HASH (16 hex digits), with no extension.
    find "$deps" -maxdepth 1 -type f -executable -regextype posix-extended -regex '.*-[0-9a-f]{16}' -printf '%T@ %p\n' |
      sort -rn |
      awk '{ name = $2; sub(/-[0-9a-f]+$/, "", name); if (++seen[name] > 2) print $2 }' |
      xargs -r rm -f
  fi
  local max_gb="${IDEM_TARGET_MAX_GB:-40}" dir
  for dir in "$CARGO_TARGET_DIR"/*/incremental "$CARGO_TARGET_DIR"; do
    [ -e "$dir" ] || continue
    [ "$(du -sk "$CARGO_TARGET_DIR" | cut -f1)" -gt $((max_gb * 1024 * 1024)) ] || return 0
    echo "the target directory $CARGO_TARGET_DIR holds over ${max_gb} GB: removing $dir" >&2
    rm -rf "$dir"
  done
}
