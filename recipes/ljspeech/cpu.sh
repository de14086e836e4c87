#!/usr/bin/env bash
# LJSpeech on CPU in minutes: chapter LJ001 (186 clips, 21 min, ../shared/data/ljspeech_lj001),
# the last 36 clips held out (LJ001-0151..0168 dev, LJ001-0169..0186 test), the 150 others for
# fine-tuning. Three starting points:
#   cpu.sh [run.sh options]          the encoder of Whisper tiny.en (../shared/data/whisper_tiny_en)
#   cpu.sh --from mini_librispeech   the Mini LibriSpeech recipe's model (that encoder fine-tuned
#                                    on 5 h of 26 speakers; a first run trains it when missing, ~35 min)
#   cpu.sh --from mini               the mini recipe's model, which heard only synthetic speech
#                                    (a first run trains it when missing: make demo, ~13 min)
# Options are run.sh's (e.g. --stage 6 --train-opts "max_steps=800").
cd "$(dirname "$0")"
set -euo pipefail
shared=${ASTCTC_SHARED_DATA:-../../../shared/data}
from=whisper
if [ "${1:-}" = --from ]; then from=${2:?--from needs whisper, mini_librispeech or mini}; shift 2; fi
help=false; [[ " $* " == *" --help "* || " $* " == *" -h "* ]] && help=true
# needs MODEL SCRIPT ARGS...: train the model a start needs when it is missing (not for --help)
needs() {
  local model=$1; shift
  if [ ! -f "$model/config.json" ] && [ "$help" = false ]; then
    echo "$model: missing; training it first ($*)" >&2
    bash "$@"
  fi
}
# each start has its own data directory: the tokenizer stage copies a starting model's tokenizer
case $from in
  whisper) init=$shared/whisper_tiny_en config=conf/whisper_lj001.yaml exp=exp/lj001_whisper data=data/lj001 ;;
  mini_librispeech)
    init=../mini_librispeech/exp/whisper/model config=conf/whisper_mls_lj001.yaml exp=exp/lj001_mls data=data/lj001_mls
    needs "$init" ../mini_librispeech/cpu.sh --stop-stage 7 ;;
  mini)
    init=../mini/exp/mini/model config=conf/finetune_lj001.yaml exp=exp/lj001 data=data/lj001_mini
    needs "$init" ../mini/run.sh --stop-stage 5 ;;
  *) echo "cpu.sh: --from $from: expected whisper, mini_librispeech or mini" >&2; exit 1 ;;
esac
exec bash run.sh --src "$shared/ljspeech_lj001" --dev LJ001-0151..LJ001-0168 --test LJ001-0169..LJ001-0186 \
  --data "$data" --config "$config" --exp "$exp" --init "$init" "$@"
