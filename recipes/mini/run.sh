#!/usr/bin/env bash
# Mini recipe: the whole pipeline on a synthetic espeak-ng corpus, on CPU, in minutes.
cd "$(dirname "$0")"

stage=0
stop_stage=100
force=false
num_train=4000
num_dev=100
num_test=200
config=conf/train.yaml
exp=exp/mini
train_opts=""   # extra --set overrides for training, e.g. "max_steps=100"
lm_order=4      # n-gram order of the word LM
beam_opts=""    # extra astctc decode options for beam search, e.g. "--beam-width 32"
usage="Usage: recipes/mini/run.sh [--stage N] [--stop-stage M] [--force] [options]

Stages:
  0 synth      synthesise an English corpus with espeak-ng (test voices unseen in training)
  1 prepare    validate manifests -> data/{train,dev,test}/manifest.jsonl
  2 shards     webdataset shards -> data/<set>/shards
  3 tokenizer  character tokenizer -> data/lang/chars.txt
  4 train      train on CPU -> $exp (resumes from its last checkpoint if killed)
  5 average    average the last checkpoints -> $exp/model
  6 decode     greedy decoding of dev and test -> $exp/decode_<set>_greedy
  7 lm         KenLM ${lm_order}-gram on the training transcripts -> data/lm/${lm_order}gram.{arpa,bin}
               (builds KenLM's lmplz into the venv first if it is missing: lm/build_kenlm.sh)
  8 decode_beam  beam search + LM: tune alpha/beta on dev (-> data/lm/${lm_order}gram.tuned.json),
               decode dev and test -> $exp/decode_<set>_beam
  9 report     print greedy and beam WER and CER (before the lm stages existed, this was stage 7)

Options (defaults):
  --num-train $num_train --num-dev $num_dev --num-test $num_test
  --config $config  --exp $exp  --train-opts \"key=value ...\"
  --lm-order $lm_order  --beam-opts \"--beam-width 32 ...\"
"
. ../lib.sh
done_dir=$exp/.done

synth() { astctc synth --out data/synth --num-train "$num_train" --num-dev "$num_dev" --num-test "$num_test"; }
prepare() { for s in train dev test; do astctc manifest --in data/synth/$s/manifest.jsonl --out data/$s/manifest.jsonl; done; }
shards() { for s in train dev test; do astctc shards --manifest data/$s/manifest.jsonl --out data/$s/shards --max-shard-mb 50; done; }
tokenizer() { astctc tokenizer --type char --manifest data/train/manifest.jsonl --out data/lang; }
train() {
  local sets=(--set "exp_dir=$exp" "${train_sets[@]}")
  astctc_train --config "$config" "${sets[@]}"
}
average() { astctc average --exp "$exp" --last 3 --out "$exp/model"; }
decode() { for s in dev test; do astctc decode --model "$exp/model" --data data/$s/shards --out "$exp/decode_${s}_greedy"; done; }
lm() {
  kenlm_tools
  astctc lm --text data/train/manifest.jsonl --out data/lm --order "$lm_order" --discount-fallback
}
decode_beam() {
  local lm=data/lm/${lm_order}gram.bin
  # shellcheck disable=SC2086  # beam_opts is a list of options
  astctc decode --model "$exp/model" --data data/dev/shards --out "$exp/decode_dev_beam" \
    --method beam --lm "$lm" --tune $beam_opts
  # shellcheck disable=SC2086
  astctc decode --model "$exp/model" --data data/test/shards --out "$exp/decode_test_beam" \
    --method beam --lm "$lm" $beam_opts
}
report() {
  for s in dev test; do
    for m in greedy beam; do
      local f="$exp/decode_${s}_$m/wer.txt"
      [ -f "$f" ] && echo "$s ($m): $(head -n 2 "$f" | tr '\n' ' ')"
    done
  done
  return 0
}

run_stage 0 synth synth
run_stage 1 prepare prepare
run_stage 2 shards shards
run_stage 3 tokenizer tokenizer
run_stage 4 train train
run_stage 5 average average
run_stage 6 decode decode
run_stage 7 lm lm
run_stage 8 decode_beam decode_beam
report_stage 9 report
