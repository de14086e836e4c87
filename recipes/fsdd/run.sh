#!/usr/bin/env bash
# FSDD recipe: one joint model on real speech, a digit classifier and a CTC head sharing one
# AST encoder, trained on CPU in minutes; speaker `theo` is held out for test.
cd "$(dirname "$0")"

stage=0
stop_stage=100
force=false
src=../../../shared/data/fsdd/recordings
test_speakers=theo
synth_voices=300   # espeak-ng voices speaking the ten words, added to training (0: none)
config=conf/train.yaml
exp=exp/fsdd
train_opts=""   # extra --set overrides for training, e.g. "max_steps=100"
threads=1       # torch threads per process: on a shared 2-core machine one each for training and
                # data loading beats OpenMP threads waiting for one another (10x+ slower under load)
usage="Usage: recipes/fsdd/run.sh [--stage N] [--stop-stage M] [--force] [options]

Stages:
  0 prepare    recordings -> silence-trimmed data/{train,dev,test} (test: $test_speakers) + data/labels/digit.txt
  1 synth      the ten words in $synth_voices espeak-ng voices, band-limited like FSDD -> data/synth
  2 shards     webdataset shards -> data/<set>/shards; data/train_all = train + synth (an index, no copies)
  3 tokenizer  SentencePiece BPE over the digit words (each word one piece) -> data/lang
  4 train      joint CTC + digit classifier on CPU -> $exp (resumes from its last checkpoint if killed)
  5 average    average the last checkpoints -> $exp/model
  6 decode     greedy CTC decoding of test -> $exp/decode_test_greedy
  7 evaluate   digit head on test: accuracy, macro-F1, confusion matrix -> $exp/evaluate_test
  8 report     print WER (CTC head) and accuracy (classifier head)

Options (defaults):
  --src $src  --test-speakers $test_speakers  --synth-voices $synth_voices
  --config $config  --exp $exp  --train-opts \"key=value ...\"  --threads $threads
"
. ../lib.sh
done_dir=$exp/.done
export OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads

prepare() { astctc fsdd prepare --src "$src" --out data --test-speakers "$test_speakers"; }
synth() { rm -rf data/synth; [ "$synth_voices" -eq 0 ] || astctc fsdd synth --out data/synth --voices "$synth_voices"; }
shards() {
  local sets=(train dev test) all=(data/train/shards)
  if [ -f data/synth/manifest.jsonl ]; then sets+=(synth); all+=(data/synth/shards); fi
  # many small shards, read in shuffled order: real and synthetic clips mix within an epoch
  for s in "${sets[@]}"; do astctc shards --manifest data/$s/manifest.jsonl --out data/$s/shards --max-shard-count 150; done
  astctc combine --out data/train_all "${all[@]}"
}
# BPE with room for whole words: with ten words every word becomes one piece, so the CTC head
# spells words, not letters (character CTC measured 47% WER where word pieces gave 22%)
tokenizer() { astctc tokenizer --type bpe --vocab-size 60 --manifest data/train/manifest.jsonl --out data/lang; }
train() {
  local sets=(--set "exp_dir=$exp" "${train_sets[@]}")
  astctc train --config "$config" "${sets[@]}"
}
average() { astctc average --exp "$exp" --last 3 --out "$exp/model"; }
decode() { astctc decode --model "$exp/model" --data data/test/shards --out "$exp/decode_test_greedy"; }
evaluate() { astctc evaluate --model "$exp/model" --data data/test/shards --out "$exp/evaluate_test"; }
report() {
  echo "test ($test_speakers), CTC head (greedy): $(head -n 1 "$exp/decode_test_greedy/wer.txt")"
  echo "test ($test_speakers), digit head: $(head -n 1 "$exp/evaluate_test/digit.txt")"
}

run_stage 0 prepare prepare
run_stage 1 synth synth
run_stage 2 shards shards
run_stage 3 tokenizer tokenizer
run_stage 4 train train
run_stage 5 average average
run_stage 6 decode decode
run_stage 7 evaluate evaluate
report_stage 8 report
