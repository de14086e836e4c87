#!/usr/bin/env bash
# The one prepared script of a GPU session: checks and figures in one run, one table at the end
# (bench/gpu_check.py lists the sections). `--toy` runs it all at CPU size (the test suite does).
#
#   bash bench/gpu_check.sh [--toy] [--out DIR] [--budget SECONDS] [--smoke DIR] [--pytest]
#
# The lent GPU machine has torch but not every package of ours and no network: wheels placed in
# .whl/ (bench/README.md, "GPU check", says which and how) are installed first, and a copy of
# the test clips in .gpucheck/shared/data stands in for ../shared/data.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null && ! "$PYTHON" -c "import soundfile, webdataset, braceexpand" 2>/dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/astctc_site .whl/*.whl
  export PYTHONPATH=/tmp/astctc_site${PYTHONPATH:+:$PYTHONPATH}
fi
if [ -d .gpucheck/shared/data ]; then export ASTCTC_SHARED_DATA=${ASTCTC_SHARED_DATA:-$PWD/.gpucheck/shared/data}; fi
export PYTHONUNBUFFERED=1
exec "$PYTHON" bench/gpu_check.py "$@"
