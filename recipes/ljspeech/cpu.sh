#!/usr/bin/env bash
# LJSpeech on CPU in minutes: chapter LJ001 (186 clips, 21 min, ../shared/data/ljspeech_lj001),
# the last 36 clips held out (LJ001-0151..0168 dev, LJ001-0169..0186 test), the 150 others
# fine-tuning the mini recipe's model, which heard only synthetic speech. Options are run.sh's
# (e.g. --stage 6 --train-opts "max_steps=800"); a first run trains the mini model when it is
# missing (make demo: ~13 min more).
cd "$(dirname "$0")"
set -euo pipefail
shared=${ASTCTC_SHARED_DATA:-../../../shared/data}
init=../mini/exp/mini/model
if [ ! -f "$init/config.json" ] && [[ " $* " != *" --help "* && " $* " != *" -h "* ]]; then
  echo "$init: missing; training it first (recipes/mini/run.sh, stages 0-5)" >&2
  bash ../mini/run.sh --stop-stage 5
fi
exec bash run.sh --src "$shared/ljspeech_lj001" --dev LJ001-0151..LJ001-0168 --test LJ001-0169..LJ001-0186 \
  --data data/lj001 --config conf/finetune_lj001.yaml --exp exp/lj001 --init "$init" "$@"
