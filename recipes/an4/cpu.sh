#!/usr/bin/env bash
# AN4 on CPU from ../shared/data/an4 (the upstream layout, its SPHERE audio losslessly as FLAC):
# no download, the same split and stages as run.sh; its data stages in data/shared.
# Options are run.sh's (e.g. --stage 6 --train-opts "max_steps=800").
cd "$(dirname "$0")"
set -euo pipefail
shared=${ASTCTC_SHARED_DATA:-../../../shared/data}
exec bash run.sh --src "$shared/an4" --shared "$shared" --data data/shared "$@"
