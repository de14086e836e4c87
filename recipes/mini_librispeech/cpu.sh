#!/usr/bin/env bash
# Mini LibriSpeech on CPU from ../shared/data, no download: train-clean-5 (its audio as Opus),
# speakers 6272 (F) and 3242 (M) held out whole for dev (the copy has no dev-clean-2), the 13
# clips of librispeech_sample (test-clean and dev-clean, speakers in no training set) as test,
# and a 4-gram on the transcripts of train-clean-100 less the dev sentences. Data stages in
# data/shared. Options are run.sh's (e.g. --config conf/ast_scratch.yaml, --stage 6).
cd "$(dirname "$0")"
set -euo pipefail
shared=${ASTCTC_SHARED_DATA:-../../../shared/data}
exec bash run.sh --src "$shared/mini_librispeech" --test-src "$shared/librispeech_sample" \
  --lm-text "$shared/librispeech_text/train-clean-100.lm.txt.gz" --shared "$shared" --data data/shared "$@"
