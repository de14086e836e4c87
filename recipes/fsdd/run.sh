#!/usr/bin/env bash
# FSDD recipe: one joint model on real speech, a digit classifier and a CTC head sharing one
# AST encoder, trained on CPU in minutes; speaker `theo` is held out for test.
cd "$(dirname "$0")"

stage=0
stop_stage=100
force=false
src=../../../shared/data/fsdd/recordings
test_speakers=theo
synth_voices=100   # espeak-ng voices speaking the ten words, added to training (0: none)
pretrain_sentences=4000  # espeak-ng English sentences (the mini recipe's generator) to pretrain on
pretrain_steps=1600      # phoneme-CTC pretraining of the encoder on them (0: train from scratch)
pretrain_opts=""   # extra --set overrides for pretraining (train_opts apply to stage 5 only)
config=conf/train.yaml
data=data        # where stages 0-3 write (crossval.sh gives each fold its own)
exp=exp/fsdd
synth_from=""    # a $data/synth made already (its shards) to use instead of stage 1's words
                 # (--synth-voices then does nothing; crossval.sh passes the main run's)
init=""          # an encoder to start stage 5 from instead of stage 4's: stage 4 and the
                 # sentences are skipped (crossval.sh passes the main run's pretrained encoder)
train_opts=""   # extra --set overrides for training, e.g. "max_steps=100"
threads=1       # torch threads per process (one each for training and data loading on 2 cores)
usage="Usage: recipes/fsdd/run.sh [--stage N] [--stop-stage M] [--force] [options]

Stages:
  0 prepare    recordings -> silence-trimmed $data/{train,dev,test} (test: $test_speakers) + $data/labels/digit.txt
  1 synth      the ten words in $synth_voices espeak-ng voices, band-limited like FSDD -> $data/synth;
               $pretrain_sentences English sentences in other espeak-ng voices, transcribed in IPA as
               each voice's accent says them -> $data/pretrain
  2 shards     webdataset shards -> $data/<set>/shards; $data/train_all = train + synth (an index, no copies)
  3 tokenizer  SentencePiece BPE over the digit words (each word one piece) -> $data/lang;
               the IPA symbols of the sentences -> $data/pretrain/lang
  4 pretrain   the same encoder with a phoneme CTC head on the sentences, $pretrain_steps steps
               -> $exp/pretrain/model (skipped with --pretrain-steps 0, and with --init DIR)
  5 train      joint CTC + digit classifier on CPU, from the pretrained encoder (or --init) -> $exp
               (resumes from its last checkpoint if killed)
  6 average    average the last checkpoints -> $exp/model
  7 decode     greedy CTC decoding of test -> $exp/decode_test_greedy
  8 evaluate   digit head on test: accuracy, macro-F1, confusion matrix -> $exp/evaluate_test
  9 report     print WER (CTC head) and accuracy (classifier head)

Options (defaults):
  --src $src  --test-speakers $test_speakers  --synth-voices $synth_voices
  --pretrain-sentences $pretrain_sentences  --pretrain-steps $pretrain_steps  --pretrain-opts \"key=value ...\"
  --config $config  --data $data  --exp $exp  --synth-from DIR  --init DIR  --train-opts \"key=value ...\"  --threads $threads
"
. ../lib.sh
done_dir=$exp/.done
to_sets pretrain_sets "$pretrain_opts"
use_threads "$threads"

prepare() { astctc prepare fsdd --src "$src" --out "$data" --test-speakers "$test_speakers"; }
synth() {
  [ ! "$synth_from" -ef "$data/synth" ] || die "--synth-from $synth_from is this run's own synth directory"
  rm -rf "$data/synth" "$data/pretrain"
  [ "$synth_voices" -eq 0 ] || [ -n "$synth_from" ] || astctc prepare fsdd --synth "$synth_voices" --out "$data/synth"
  # sentences: every phone in many contexts, where the digit words show each in one; the mini
  # recipe's corpus, whose test voices are not needed here. No band-limiting: the mel filters
  # stop at 4 kHz (conf), so what lies above FSDD's band never reaches the model.
  # Phonemes, not letters: the encoder learns to hear phones, not English spelling (conf/train.yaml)
  [ "$pretrain_steps" -eq 0 ] || [ -n "$init" ] || astctc synth --out "$data/pretrain" --num-train "$pretrain_sentences" \
    --num-dev 50 --num-test 0 --transcript phonemes
}
shards() {
  local sets=(train dev test) all=("$data/train/shards")
  if [ -n "$synth_from" ]; then
    [ -f "$synth_from/shards/index.json" ] || die "--synth-from $synth_from: no shards/index.json there"
    all+=("$synth_from/shards")
  elif [ -f "$data/synth/manifest.jsonl" ]; then sets+=(synth); all+=("$data/synth/shards"); fi
  # many small shards, read in shuffled order: real and synthetic clips mix within an epoch
  for s in "${sets[@]}"; do astctc shards --manifest "$data/$s/manifest.jsonl" --out "$data/$s/shards" --max-shard-count 150; done
  astctc combine --out "$data/train_all" "${all[@]}"
  for s in train dev; do
    [ ! -f "$data/pretrain/$s/manifest.jsonl" ] || astctc shards --manifest "$data/pretrain/$s/manifest.jsonl" --out "$data/pretrain/$s/shards"
  done
}
# BPE with room for whole words: with ten words every word becomes one piece, so the CTC head
# spells words, not letters (character CTC measured 47% WER where word pieces gave 22%)
tokenizer() {
  astctc tokenizer --type bpe --vocab-size 60 --manifest "$data/train/manifest.jsonl" --out "$data/lang"
  [ ! -f "$data/pretrain/train/manifest.jsonl" ] || \
    astctc tokenizer --type char --manifest "$data/pretrain/train/manifest.jsonl" --out "$data/pretrain/lang"
}
# The encoder of $config, its heads swapped for one phoneme CTC head: what is learnt is which
# sounds are which phones, across many voices; the digit model then starts from that encoder
# (its own CTC and digit heads start new). Clips up to 5 s: the encoder's position table.
pretrain() {
  if [ -n "$init" ]; then log "--init $init: stage 5 starts from it"; return 0; fi
  if [ "$pretrain_steps" -eq 0 ]; then log "--pretrain-steps 0: training from scratch"; return 0; fi
  astctc_train --config "$config" --set "exp_dir=$exp/pretrain" --set "max_steps=$pretrain_steps" \
    --set "model.classifiers={}" --set "loss_weights={}" --set data.train="$data/pretrain/train/shards" \
    --set data.valid="$data/pretrain/dev/shards" --set data.tokenizer="$data/pretrain/lang" \
    --set data.max_batch_seconds=10 --set data.num_buckets=0 --set data.max_duration=5.0 \
    --set optim.lr=2e-3 --set optim.warmup_steps=200 --set "checkpoint_every=$pretrain_steps" --set keep_checkpoints=1 \
    "${pretrain_sets[@]}"
  astctc average --exp "$exp/pretrain" --last 1 --out "$exp/pretrain/model"
}
train() {
  local sets=(--set "exp_dir=$exp" --set "data.train=$data/train_all" --set "data.valid=$data/dev/shards"
              --set "data.tokenizer=$data/lang" --set "model.classifiers.digit.labels_file=$data/labels/digit.txt")
  if [ -n "$init" ]; then sets+=(--set "init=$init")
  elif [ "$pretrain_steps" -ne 0 ]; then sets+=(--set "init=$exp/pretrain/model"); fi
  astctc_train --config "$config" "${sets[@]}" "${train_sets[@]}"
}
average() { astctc average --exp "$exp" --last 3 --out "$exp/model"; }
decode() { astctc decode --model "$exp/model" --data "$data/test/shards" --out "$exp/decode_test_greedy"; }
evaluate() { astctc evaluate --model "$exp/model" --data "$data/test/shards" --out "$exp/evaluate_test"; }
report() {
  echo "test ($test_speakers), CTC head (greedy): $(head -n 1 "$exp/decode_test_greedy/wer.txt")"
  echo "test ($test_speakers), digit head: $(head -n 1 "$exp/evaluate_test/digit.txt")"
}

run_stage 0 prepare prepare
run_stage 1 synth synth
run_stage 2 shards shards
run_stage 3 tokenizer tokenizer
run_stage 4 pretrain pretrain
run_stage 5 train train
run_stage 6 average average
run_stage 7 decode decode
run_stage 8 evaluate evaluate
report_stage 9 report
