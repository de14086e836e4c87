#!/usr/bin/env bash
# Build KenLM's lmplz (n-gram estimation) and build_binary (ARPA -> mmap-able binary) from the
# kenlm source distribution on PyPI, and install the two programs into the project's venv.
#
# Why from the sdist: the kenlm wheel only carries the Python query module; the estimation
# tools are C++ programs that Debian does not package. The sdist holds the full C++ tree, so
# PyPI (reachable from CI) is the only source we need.
#
#   lm/build_kenlm.sh [--prefix DIR] [--jobs N] [--python PY] [--force]
#
# Installs into DIR/bin; DIR defaults to $VIRTUAL_ENV, else the repository's .venv. The sdist is
# the one uv.lock pins (sha256-checked); PY (default DIR/bin/python, else python3) fetches it.
# A second run finds both programs working and does nothing.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
prefix="${VIRTUAL_ENV:-$root/.venv}"
jobs=2
force=false
python=""
version="${KENLM_VERSION:-0.3.0}"
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix="$2"; shift 2 ;;
    --jobs) jobs="$2"; shift 2 ;;
    --python) python="$2"; shift 2 ;;
    --force) force=true; shift ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build_kenlm.sh: unknown option $1 (see --help)" >&2; exit 1 ;;
  esac
done
bin="$prefix/bin"
say() { echo "build_kenlm: $*" >&2; }

# a program "works" when its --help output says what it is (read whole: grep -q + pipefail
# would see the SIGPIPE of the program it stopped reading)
works() { [ -x "$bin/$1" ] || return 1; local out; out="$("$bin/$1" --help 2>&1 || true)"; [[ "$out" == *"$2"* ]]; }
if [ "$force" != true ] && works lmplz "Kneser-Ney" && works build_binary "Usage"; then
  say "lmplz and build_binary already installed in $bin; nothing to do (--force rebuilds)"
  exit 0
fi

# Debian build dependencies, installed when missing and we are root (CI and fresh machines are).
pkgs="build-essential cmake libboost-program-options-dev libboost-system-dev libboost-thread-dev
      libboost-test-dev zlib1g-dev libbz2-dev liblzma-dev"
missing=""
for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then
    say "installing Debian packages:$missing"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  else
    say "missing Debian packages:$missing (install them, or run as root)"; exit 1
  fi
fi

if [ -z "$python" ]; then python="$prefix/bin/python"; [ -x "$python" ] || python="$(command -v python3)"; fi
t0=$SECONDS
work="$(mktemp -d "${TMPDIR:-/tmp}/kenlm-build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
# The sdist uv.lock names, checked against the lock's sha256, so the tools match the locked
# Python module; without a lock (a pip user's checkout) pip fetches KENLM_VERSION.
lock_sdist="$("$python" - "$root/uv.lock" <<'PY' 2>/dev/null || true
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    pkg = next(p for p in tomllib.load(f)["package"] if p["name"] == "kenlm")
print(pkg["version"], pkg["sdist"]["url"], pkg["sdist"]["hash"].removeprefix("sha256:"))
PY
)"
if [ -n "$lock_sdist" ]; then
  read -r version url sha <<<"$lock_sdist"
  say "fetching the kenlm $version sdist named in uv.lock"
  "$python" - "$url" "$work/kenlm-$version.tar.gz" "$sha" <<'PY' || { say "could not download $url"; exit 1; }
import hashlib, sys, urllib.request
url, out, sha = sys.argv[1:]
data = urllib.request.urlopen(url, timeout=120).read()
if hashlib.sha256(data).hexdigest() != sha:
    sys.exit(f"build_kenlm: {url}: sha256 differs from uv.lock's")
open(out, "wb").write(data)
PY
else
  say "fetching the kenlm $version sdist from PyPI"
  # --no-binary kenlm (not :all:): with :all: pip would also compile kenlm's build requirement
  # cmake from source just to read the package's metadata.
  "$python" -m pip download --no-deps --no-binary kenlm "kenlm==$version" -d "$work" >"$work/pip.log" 2>&1 \
    || { cat "$work/pip.log" >&2; say "could not download the kenlm sdist"; exit 1; }
fi
tar -xzf "$work"/kenlm-*.tar.gz -C "$work"
src="$(echo "$work"/kenlm-*/)"
say "building lmplz and build_binary with $jobs jobs"
cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release >"$work/cmake.log" 2>&1 \
  || { cat "$work/cmake.log" >&2; say "cmake configuration failed"; exit 1; }
cmake --build "$work/build" --target lmplz build_binary -j "$jobs" >"$work/make.log" 2>&1 \
  || { tail -n 40 "$work/make.log" >&2; say "compilation failed"; exit 1; }
mkdir -p "$bin"
install -m 755 "$work/build/bin/lmplz" "$work/build/bin/build_binary" "$bin/"
works lmplz "Kneser-Ney" && works build_binary "Usage" || { say "installed programs do not run"; exit 1; }
say "installed $bin/lmplz and $bin/build_binary in $((SECONDS - t0)) s"
