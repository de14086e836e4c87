#!/usr/bin/env bash
# LJSpeech on CPU in minutes: chapter LJ001 (186 clips, 21 min, ../shared/data/ljspeech_lj001),
# the last 36 clips held out (LJ001-0151..0168 dev, LJ001-0169..0186 test), the 150 others for
# fine-tuning. Two starting points:
#   cpu.sh [run.sh options]              the encoder of Whisper tiny.en (../shared/data/whisper_tiny_en)
#   cpu.sh --from mini [run.sh options]  the mini recipe's model, which heard only synthetic speech
#                                        (a first run trains it when missing: make demo, ~13 min)
# Options are run.sh's (e.g. --stage 6 --train-opts "max_steps=800").
cd "$(dirname "$0")"
set -euo pipefail
shared=${ASTCTC_SHARED_DATA:-../../../shared/data}
from=whisper
if [ "${1:-}" = --from ]; then from=${2:?--from needs whisper or mini}; shift 2; fi
case $from in
  whisper) init=$shared/whisper_tiny_en config=conf/whisper_lj001.yaml exp=exp/lj001_whisper data=data/lj001 ;;
  mini)
    # its own data directory: the tokenizer stage copies the mini model's characters
    init=../mini/exp/mini/model config=conf/finetune_lj001.yaml exp=exp/lj001 data=data/lj001_mini
    if [ ! -f "$init/config.json" ] && [[ " $* " != *" --help "* && " $* " != *" -h "* ]]; then
      echo "$init: missing; training it first (recipes/mini/run.sh, stages 0-5)" >&2
      bash ../mini/run.sh --stop-stage 5
    fi ;;
  *) echo "cpu.sh: --from $from: expected whisper or mini" >&2; exit 1 ;;
esac
exec bash run.sh --src "$shared/ljspeech_lj001" --dev LJ001-0151..LJ001-0168 --test LJ001-0169..LJ001-0186 \
  --data "$data" --config "$config" --exp "$exp" --init "$init" "$@"
