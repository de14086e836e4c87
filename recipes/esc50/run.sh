#!/usr/bin/env bash
# ESC-50 recipe: environmental sound classification, five-fold cross-validation (train on four
# folds, test on the fifth, five times; the figure is the mean accuracy over the folds).
cd "$(dirname "$0")"

stage=0
stop_stage=100
force=false
downloads=downloads
url=""          # archive URL (default: the public master.zip of github.com/karoldvl/ESC-50)
src=downloads/ESC-50-master
folds="1 2 3 4 5"
config=conf/train.yaml
exp=exp/esc50
init=""         # pretrained weights: e.g. hf://MIT/ast-finetuned-audioset-10-10-0.4593 (AST's recipe)
train_opts=""   # extra --set overrides for training, e.g. "max_steps=100"
threads=1       # torch threads per process (one each for training and data loading on 2 cores)
usage="Usage: recipes/esc50/run.sh [--stage N] [--stop-stage M] [--force] [options]

Stages:
  0 download   master.zip -> $downloads/ (resumable, checksum recorded), unpacked
  1 prepare    meta/esc50.csv -> data/fold{1..5}/manifest.jsonl + data/labels/category.txt
  2 shards     webdataset shards per fold -> data/fold<k>/shards; data/cv<k>/train/index.json
               lists the shards of the other four folds (no copies)
  3 train      one model per held-out fold k in --folds -> $exp/fold<k>
  4 average    average the last checkpoints -> $exp/fold<k>/model
  5 evaluate   accuracy, macro-F1, confusion matrix on fold k -> $exp/fold<k>/evaluate
  6 report     accuracy per fold and the cross-validation mean

Options (defaults):
  --downloads $downloads  --url <public archive>  --src $src  --folds \"$folds\"
  --config $config  --exp $exp  --init \"$init\"  --train-opts \"key=value ...\"  --threads $threads
"
. ../lib.sh
done_dir=$exp/.done
use_threads "$threads"

download() { local u=(); [ -n "$url" ] && u=(--url "$url"); astctc download esc50 --out "$downloads" "${u[@]}"; }
prepare() { astctc prepare esc50 --src "$src" --out data; }
shards() {
  for k in 1 2 3 4 5; do astctc shards --manifest data/fold$k/manifest.jsonl --out data/fold$k/shards --max-shard-mb 100; done
  # cross-validation split k: an index over the other four folds' shards (no copies)
  local k j others
  for k in 1 2 3 4 5; do
    others=(); for j in 1 2 3 4 5; do [ "$j" -eq "$k" ] || others+=("data/fold$j/shards"); done
    astctc combine --out "data/cv$k/train" "${others[@]}"
  done
}
train() {
  for k in $folds; do
    local sets=(--set "exp_dir=$exp/fold$k" --set "data.train=data/cv$k/train" --set "data.valid=data/fold$k/shards")
    [ -n "$init" ] && sets+=(--set "init=$init")
    sets+=("${train_sets[@]}")
    astctc_train --config "$config" "${sets[@]}" || return 1
  done
}
average() { for k in $folds; do astctc average --exp "$exp/fold$k" --last 3 --out "$exp/fold$k/model" || return 1; done; }
evaluate() {
  for k in $folds; do
    astctc evaluate --model "$exp/fold$k/model" --data data/fold$k/shards --out "$exp/fold$k/evaluate" || return 1
  done
}
report() {
  python3 - "$exp" $folds <<'EOF'
import json, sys
exp, folds = sys.argv[1], sys.argv[2:]
accs = [json.load(open(f"{exp}/fold{k}/evaluate/scores.json"))["category"]["accuracy"] for k in folds]
for k, acc in zip(folds, accs):
    print(f"fold {k}: accuracy {acc:.2f}%")
print(f"cross-validation ({len(accs)} folds): mean accuracy {sum(accs) / len(accs):.2f}%")
EOF
}

run_stage 0 download download
run_stage 1 prepare prepare
run_stage 2 shards shards
run_stage 3 train train
run_stage 4 average average
run_stage 5 evaluate evaluate
report_stage 6 report
