#!/usr/bin/env bash
# Speech Commands v0.02 recipe: keyword spotting with a classification head on the AST encoder,
# 12 classes (10 words, _unknown_, _silence_) or all 35 words; speakers held out.
#
# Full data: stage 0 downloads the training archive and the 12-class test archive (2.4 GB).
# Small run on the shared subset (1200 test clips, 100 per class), without downloading:
#   recipes/speechcommands/run.sh --stage 1 --src ../../../shared/data/speech_commands_v2_test12 \
#       --test-src "" --split-percent "10 20"
# Initialise the encoder from another astctc model (e.g. the FSDD recipe's), same data:
#   recipes/speechcommands/run.sh <the options above> --stage 3 --init ../fsdd/exp/fsdd/model --exp exp/sc12_init_fsdd
cd "$(dirname "$0")"

stage=0
stop_stage=100
force=false
downloads=downloads
url=""          # training archive URL (default: the public one)
test_url=""     # 12-class test archive URL (default: the public one)
src=downloads/speech_commands_v0.02
test_src=downloads/speech_commands_test_set_v0.02   # "" keeps the speaker-hash test split of --src
classes=12
split_percent="10 10"   # dev and test percent of the speakers, for a tree without official lists
data=""         # default data/sc<classes>
config=conf/train.yaml
exp=""          # default exp/sc<classes>
init=""         # pretrained weights for the encoder: an astctc model dir, hf://..., or a HF dir
train_opts=""   # extra --set overrides for training, e.g. "max_steps=100"
threads=1       # torch threads per process (one each for training and data loading on 2 cores)
usage="Usage: recipes/speechcommands/run.sh [--stage N] [--stop-stage M] [--force] [options]

Stages:
  0 download   training + 12-class test archives -> $downloads/ (resumable, checksums recorded)
  1 prepare    -> $data/{train,dev,test}/manifest.jsonl + $data/labels/command.txt
               (official lists for the full archive; otherwise held-out speakers by hash)
  2 shards     webdataset shards -> $data/<set>/shards
  3 train      classifier head 'command' -> $exp (resumes from its last checkpoint if killed)
  4 average    average the last checkpoints -> $exp/model
  5 evaluate   accuracy, macro-F1, confusion matrix on test -> $exp/evaluate_test
  6 report     print the test accuracy

Options (defaults):
  --downloads $downloads  --url <public>  --test-url <public>  --src $src  --test-src $test_src  --classes $classes (12 or 35)
  --split-percent \"$split_percent\" (dev test, speaker-hash split of a tree without lists)
  --data data/sc<classes>  --config $config  --exp exp/sc<classes>  --init \"$init\"  --train-opts \"key=value ...\"
  --threads $threads
"
. ../lib.sh
data=${data:-data/sc$classes}
exp=${exp:-exp/sc$classes}
done_dir=$exp/.done
use_threads "$threads"

download() {
  local u=(); [ -n "$url" ] && u+=(--url "$url"); [ -n "$test_url" ] && u+=(--test-url "$test_url")
  [ -z "$test_src" ] && u+=(--test-url "")   # no test archive wanted
  astctc download speechcommands --out "$downloads" "${u[@]}"
}
prepare() {
  local test_opt=(); [ -n "$test_src" ] && test_opt=(--test-src "$test_src")
  local pct=($split_percent)
  astctc prepare speechcommands --src "$src" "${test_opt[@]}" --out "$data" --classes "$classes" \
    --dev-percent "${pct[0]}" --test-percent "${pct[1]}"
}
shards() { for s in train dev test; do astctc shards --manifest $data/$s/manifest.jsonl --out $data/$s/shards; done; }
train() {
  local sets=(--set "exp_dir=$exp" --set "data.train=$data/train/shards" --set "data.valid=$data/dev/shards"
              --set "model.classifiers.command.labels_file=$data/labels/command.txt")
  [ -n "$init" ] && sets+=(--set "init=$init")
  sets+=("${train_sets[@]}")
  astctc_train --config "$config" "${sets[@]}"
}
average() { astctc average --exp "$exp" --last 3 --out "$exp/model"; }
evaluate() { astctc evaluate --model "$exp/model" --data $data/test/shards --out "$exp/evaluate_test"; }
report() { echo "test ($classes classes): $(head -n 1 "$exp/evaluate_test/command.txt")"; }

run_stage 0 download download
run_stage 1 prepare prepare
run_stage 2 shards shards
run_stage 3 train train
run_stage 4 average average
run_stage 5 evaluate evaluate
report_stage 6 report
