#!/usr/bin/env bash
# The one prepared script of a GPU session: checks and figures in one run, one table at the end
# (bench/gpu_check.py lists the sections). `--toy` runs it all at CPU size (the test suite does).
#
#   bash bench/gpu_check.sh --install-only                 # the first call: install what has come
#   bash bench/gpu_check.sh [--toy] [--out DIR] [--budget SECONDS] [--smoke DIR] [--pytest] ...
#
# The lent GPU machine has torch but not every package of ours and no network, and one call
# carries at most 64 MiB: wheels placed in .whl/ (bench/README.md, "GPU check", says which and
# how) come over two calls. .whl/small/*.whl (and .whl/*.whl) are installed as they come;
# nvidia-cutlass-dsl-libs-cu13 (88 MiB, what flash-attn-4 compiles its kernels with) comes as
# parts in .whl/part1/ and .whl/part2/, joined and checked against .whl/SHA256SUMS once both
# are here. Everything goes to $ASTCTC_SITE (default /tmp/astctc_site), which stays while the
# machine is warm. A copy of the test clips in .gpucheck/shared/data stands in for ../shared/data.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
SITE=${ASTCTC_SITE:-/tmp/astctc_site}

joined_parts() {  # each wheel split in parts (.whl/part*/NAME.part-*) whose parts add up to its sha256
  local want name parts
  while read -r want name; do
    parts=$(compgen -G ".whl/part*/$name.part-*" | awk -F.part- '{print $NF, $0}' | sort | cut -d' ' -f2- || true)
    [ -n "$parts" ] || continue
    # shellcheck disable=SC2086
    cat $parts >"/tmp/$name"
    if [ "$(sha256sum "/tmp/$name" | cut -d' ' -f1)" = "$want" ]; then
      echo "/tmp/$name"
    else
      echo "$name: $(echo "$parts" | wc -l) part(s) here, not all of them yet (.whl/part2 comes with the next call)" >&2
      rm -f "/tmp/$name"
    fi
  done <.whl/SHA256SUMS
}

install_wheels() {  # all in one pip run, again whenever the set changes: pip --target replaces a
  # top-level folder that a wheel installed by an earlier run holds (the cutlass-dsl wheels share one)
  local key
  key=$(printf '%s\n' "$@" | xargs -n1 basename | sort | sha256sum | cut -d' ' -f1)
  [ "$(cat "$SITE/.wheels" 2>/dev/null)" = "$key" ] && return 0
  rm -rf "$SITE"
  if "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --root-user-action=ignore \
    --target "$SITE" "$@"; then
    echo "$key" >"$SITE/.wheels"
    echo "installed $# wheels into $SITE"
  else
    echo "could not install the wheels of .whl into $SITE" >&2
  fi
}

case " $* " in *" --toy "*) toy=1 ;; *) toy=0 ;; esac
if [ "$toy" = 0 ] && [ -d .whl ]; then
  wheels=$(compgen -G ".whl/small/*.whl" || true; compgen -G ".whl/*.whl" || true)
  if [ -f .whl/SHA256SUMS ]; then wheels="$wheels $(joined_parts)"; fi
  # shellcheck disable=SC2086
  if [ -n "${wheels// /}" ]; then install_wheels $wheels; fi
  rm -f /tmp/nvidia_cutlass_dsl_libs_*.whl
fi
if [ -d "$SITE" ]; then
  # flash-attn-4's CuTe DSL finds its packages through a .pth file, which --target leaves unread
  export PYTHONPATH=$SITE:$SITE/nvidia_cutlass_dsl/dsl_packages${PYTHONPATH:+:$PYTHONPATH}
fi
export FLASH_ATTENTION_CUTE_DSL_CACHE_ENABLED=${FLASH_ATTENTION_CUTE_DSL_CACHE_ENABLED:-1}  # kernels kept on disk
if [ "${1:-}" = "--install-only" ]; then
  for m in soundfile,webdataset,braceexpand flash_attn.cute.interface; do
    if "$PYTHON" -c "import ${m//,/, }" 2>/tmp/astctc_import.txt; then echo "import $m: ok"; else
      echo "import $m: $(tail -1 /tmp/astctc_import.txt)"; fi
  done
  exit 0
fi
if [ -d .gpucheck/shared/data ]; then export ASTCTC_SHARED_DATA=${ASTCTC_SHARED_DATA:-$PWD/.gpucheck/shared/data}; fi
export PYTHONUNBUFFERED=1
exec "$PYTHON" bench/gpu_check.py "$@"
