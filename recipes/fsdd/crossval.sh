#!/usr/bin/env bash
# Leave-one-speaker-out over FSDD: one held-out speaker says little (the seed alone moves theo's
# accuracy by 1-2 points, and the speakers differ by 15), so each speaker is held out in turn.
# Every fold is run.sh (stages 0-3, 5-9) with its own data and exp directories, starting from
# the main run's pretrained encoder: stage 4 learns from synthetic speech only, so it is the
# same for every fold and is not repeated; nor are the synthetic digit words (stage 1), the
# same voices in every fold.
cd "$(dirname "$0")"

force=false
speakers="george jackson lucas nicolas yweweler"  # theo is the main run's (run.sh)
exp=exp/fsdd      # the main run: its $exp/pretrain/model starts every fold
data=data         # the main run's data: its synth/ words go into every fold's training set
run_opts=""       # more run.sh options for every fold, e.g. "--train-opts seed=1"
usage="Usage: recipes/fsdd/crossval.sh [--speakers \"a b ...\"] [--exp DIR] [--run-opts \"...\"] [--force]

Each speaker in turn is held out: run.sh --test-speakers S --data data/cv/S --exp \$exp/cv/S
--init \$exp/pretrain/model --synth-from \$data/synth \$run_opts. Then a table of every fold's
accuracy and WER, with their means. Run ./run.sh first (it makes the pretrained encoder and
the synthetic words).

Options (defaults): --speakers \"$speakers\"  --exp $exp  --data $data  --run-opts \"$run_opts\"
"
. ../lib.sh

init=$exp/pretrain/model
[ -f "$init/config.json" ] || die "no pretrained encoder in $init: run ./run.sh first (stage 4)"
extra=()
# the main run's synthetic words, if it made any (run.sh --synth-voices 0 makes none)
[ ! -f "$data/synth/shards/index.json" ] || extra+=(--synth-from "$data/synth")
[ "$force" != true ] || extra+=(--force)
eval "opts=($run_opts)"  # honours quotes: --run-opts "--train-opts 'seed=1 max_steps=100'"
for s in $speakers; do
  log "fold $s"
  ./run.sh --test-speakers "$s" --data "data/cv/$s" --exp "$exp/cv/$s" --init "$init" \
    --stop-stage 8 "${extra[@]}" "${opts[@]}"
done

# one row per fold: accuracy (digit head) and WER (CTC head), then the means
printf "%-12s %10s %8s\n" "held out" "accuracy" "WER"
for s in $speakers; do
  acc=$(grep -o 'accuracy [0-9.]*%' "$exp/cv/$s/evaluate_test/digit.txt" | head -n 1 | tr -dc '0-9.')
  wer=$(grep -o '%WER [0-9.]*' "$exp/cv/$s/decode_test_greedy/wer.txt" | head -n 1 | tr -dc '0-9.')
  printf "%-12s %9s%% %7s%%\n" "$s" "$acc" "$wer"
done | tee "$exp/cv/folds.txt"
awk '{a += $2; w += $3; n++} END {printf "%-12s %9.2f%% %7.2f%%\n", "mean", a / n, w / n}' "$exp/cv/folds.txt" \
  | tee -a "$exp/cv/folds.txt"
