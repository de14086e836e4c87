#!/usr/bin/env bash
# Mini recipe: the whole pipeline on a synthetic espeak-ng corpus, on CPU, in minutes.
cd "$(dirname "$0")"

stage=0
stop_stage=100
force=false
num_train=2000
num_dev=100
num_test=200
config=conf/train.yaml
exp=exp/mini
train_opts=""   # extra --set overrides for training, e.g. "max_steps=100"
usage="Usage: recipes/mini/run.sh [--stage N] [--stop-stage M] [--force] [options]

Stages:
  0 synth      synthesise an English corpus with espeak-ng (test voices unseen in training)
  1 prepare    validate manifests -> data/{train,dev,test}/manifest.jsonl
  2 shards     webdataset shards -> data/<set>/shards
  3 tokenizer  character tokenizer -> data/lang/chars.txt
  4 train      train on CPU -> $exp (resumes from its last checkpoint if killed)
  5 average    average the last checkpoints -> $exp/model
  6 decode     greedy decoding of dev and test -> $exp/decode_<set>_greedy
  7 report     print WER and CER

Options (defaults):
  --num-train $num_train --num-dev $num_dev --num-test $num_test
  --config $config  --exp $exp  --train-opts \"key=value ...\"
"
. ../lib.sh
done_dir=$exp/.done

synth() { astctc synth --out data/synth --num-train "$num_train" --num-dev "$num_dev" --num-test "$num_test"; }
prepare() { for s in train dev test; do astctc manifest --in data/synth/$s/manifest.jsonl --out data/$s/manifest.jsonl; done; }
shards() { for s in train dev test; do astctc shards --manifest data/$s/manifest.jsonl --out data/$s/shards --max-shard-mb 50; done; }
tokenizer() { astctc tokenizer --type char --manifest data/train/manifest.jsonl --out data/lang; }
train() {
  local sets=(--set "exp_dir=$exp"); for kv in $train_opts; do sets+=(--set "$kv"); done
  astctc train --config "$config" "${sets[@]}"
}
average() { astctc average --exp "$exp" --last 3 --out "$exp/model"; }
decode() { for s in dev test; do astctc decode --model "$exp/model" --data data/$s/shards --out "$exp/decode_${s}_greedy"; done; }
report() {
  for s in dev test; do echo "$s (greedy): $(head -n 2 "$exp/decode_${s}_greedy/wer.txt" | tr '\n' ' ')"; done
}

run_stage 0 synth synth
run_stage 1 prepare prepare
run_stage 2 shards shards
run_stage 3 tokenizer tokenizer
run_stage 4 train train
run_stage 5 average average
run_stage 6 decode decode
# the report always prints (it has no marker): it is the recipe's answer
if [ 7 -ge "$stage" ] && [ 7 -le "$stop_stage" ]; then log "stage 7 (report)"; report; fi
