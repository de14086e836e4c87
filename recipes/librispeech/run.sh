#!/usr/bin/env bash
# LibriSpeech recipe: AST-Base (AudioSet initialisation) + per-frame CTC over unigram word
# pieces, decoded greedily and with the OpenSLR 11 4-gram. Meant for GPUs; see README.md.
cd "$(dirname "$0")"

stage=0
stop_stage=100
force=false
train_set=100                                   # 100 | 460 | 960 hours
eval_sets="dev-clean dev-other test-clean test-other"
valid_set=dev-clean                             # validated on at every epoch end
tune_set=dev-other                              # LM weight / word bonus tuned here
downloads=downloads
mirror=https://www.openslr.org/resources/12
lm_mirror=https://www.openslr.org/resources/11
lm_files=4-gram.arpa.gz                         # add librispeech-lexicon.txt etc. if wanted
checksums=""                                    # md5sum file replacing the published sums (mirrors)
keep_archives=true
token_type=unigram
vocab_size=512
config=""                                       # default conf/ast_base_<train_set>h.yaml
exp=""                                          # default exp/<config name>
ngpu=1                                          # > 1: torchrun, one process per GPU
train_opts=""                                   # extra --set overrides, e.g. "max_steps=100"
average=10
beam_opts=""                                    # extra astctc decode options for beam search
usage="Usage: recipes/librispeech/run.sh [--stage N] [--stop-stage M] [--force] [options]

Stages:
  0 download   OpenSLR 12 archives (md5-checked, resumable) for the training set and the
               evaluation sets, and OpenSLR 11 LM files -> $downloads/
  1 prepare    manifests (transcripts as published, durations from the FLAC headers)
               -> data/train_<N>/, data/<eval set>/manifest.jsonl
  2 shards     webdataset shards -> data/<set>/shards
  3 tokenizer  SentencePiece $token_type, --vocab-size pieces, on the training text
               -> data/lang_<type><size>
  4 lm         OpenSLR 11 4-gram, lower-cased, binarised -> data/lm
  5 train      AST-Base + CTC from the AudioSet checkpoint -> exp/<name> (resumes if killed)
  6 average    average the last --average checkpoints -> exp/<name>/model
  7 greedy     greedy decoding of the evaluation sets -> exp/<name>/decode_<set>_greedy
  8 beam       beam search + 4-gram; alpha/beta tuned on --tune-set -> decode_<set>_beam
  9 score      every decode scored against the full manifest -> exp/<name>/results.md

Options (defaults):
  --train-set $train_set             100 (train-clean-100), 460 (+ train-clean-360),
                                     960 (+ train-other-500)
  --eval-sets \"$eval_sets\"
  --valid-set $valid_set  --tune-set $tune_set
  --downloads $downloads  --keep-archives $keep_archives
  --mirror $mirror
  --lm-mirror $lm_mirror  --lm-files \"$lm_files\"
  --checksums FILE                   md5sum-format file replacing the published md5 sums
  --token-type $token_type  --vocab-size $vocab_size
  --config conf/ast_base_<N>h.yaml  --exp exp/<config name>
  --ngpu $ngpu                            e.g. --ngpu 8 --config conf/ast_base_960h_8gpu.yaml
  --train-opts \"key=value ...\"  --average $average  --beam-opts \"--beam-width 100 ...\"

Data stages (0-4) keep their markers in data/.done, model stages (5-9) in exp/<name>/.done;
a finished stage is skipped (--force redoes it).
"
. ../lib.sh

case "$train_set" in
  100) train_subsets="train-clean-100" ;;
  460) train_subsets="train-clean-100 train-clean-360" ;;
  960) train_subsets="train-clean-100 train-clean-360 train-other-500" ;;
  *) die "--train-set must be 100, 460 or 960, not $train_set" ;;
esac
config=${config:-conf/ast_base_${train_set}h.yaml}
[ -f "$config" ] || die "no config $config"
exp=${exp:-exp/$(basename "$config" .yaml)}
train_dir=data/train_$train_set
lang_dir=data/lang_${token_type}${vocab_size}
all_sets="$eval_sets"
for s in $valid_set $tune_set; do [[ " $all_sets " == *" $s "* ]] || all_sets="$all_sets $s"; done

download() {
  local sums=(); [ -n "$checksums" ] && sums=(--checksums "$checksums")
  # shellcheck disable=SC2086
  astctc download librispeech --out "$downloads" --subsets $train_subsets $all_sets --lm-files $lm_files \
    --mirror "$mirror" --lm-mirror "$lm_mirror" --keep-archives "$keep_archives" "${sums[@]}"
}
prepare() {
  # shellcheck disable=SC2086
  astctc prepare librispeech --root "$downloads" --subsets $train_subsets --out "$train_dir/manifest.jsonl"
  for s in $all_sets; do astctc prepare librispeech --root "$downloads" --subsets "$s" --out "data/$s/manifest.jsonl"; done
}
shards() {
  for d in "$train_dir" $(printf 'data/%s ' $all_sets); do
    astctc shards --manifest "$d/manifest.jsonl" --out "$d/shards"
  done
}
tokenizer() {
  astctc tokenizer --type "$token_type" --vocab-size "$vocab_size" --manifest "$train_dir/manifest.jsonl" --out "$lang_dir"
}
lm() {
  kenlm_tools
  astctc lm --arpa "$downloads/lm/4-gram.arpa.gz" --out data/lm
}
train() {
  local sets=(--set "exp_dir=$exp" --set "data.train=$train_dir/shards" --set "data.valid=data/$valid_set/shards"
              --set "data.tokenizer=$lang_dir")
  sets+=("${train_sets[@]}")
  astctc_train --config "$config" "${sets[@]}"
}
average() { astctc average --exp "$exp" --last "$average" --out "$exp/model"; }
greedy() {
  for s in $eval_sets; do astctc decode --model "$exp/model" --data "data/$s/shards" --out "$exp/decode_${s}_greedy"; done
}
beam() {
  # the LM files are linked into the experiment, so the tuned alpha/beta (written beside the
  # LM) belong to this acoustic model and not to every model sharing data/lm
  mkdir -p "$exp/lm"
  for f in data/lm/*; do ln -sfn "$(realpath --relative-to="$exp/lm" "$f")" "$exp/lm/$(basename "$f")"; done
  rm -f "$exp"/lm/*.tuned.json
  # shellcheck disable=SC2086
  astctc decode --model "$exp/model" --data "data/$tune_set/shards" --out "$exp/decode_${tune_set}_beam" \
    --method beam --lm "$exp/lm" --tune $beam_opts
  for s in $eval_sets; do
    [ "$s" = "$tune_set" ] && continue
    # shellcheck disable=SC2086
    astctc decode --model "$exp/model" --data "data/$s/shards" --out "$exp/decode_${s}_beam" --method beam \
      --lm "$exp/lm" $beam_opts
  done
}
score() {
  local table="| set | greedy WER | beam + 4-gram WER |"$'\n'"|---|---|---|"
  for s in $eval_sets; do
    local row="| $s |"
    for m in greedy beam; do
      if [ -f "$exp/decode_${s}_$m/hyp.trn" ]; then
        astctc score --ref "data/$s/manifest.jsonl" --hyp "$exp/decode_${s}_$m/hyp.trn" --out "$exp/score_${s}_$m" >/dev/null
        row="$row $(awk 'NR==1 {print $2}' "$exp/score_${s}_$m/wer.txt") |"
      else
        row="$row - |"
      fi
    done
    table="$table"$'\n'"$row"
  done
  printf '%s\n\nmodel: %s, %s, data: train-%s (%s)\n' "$table" "$exp" "$config" "$train_set" "$train_subsets" \
    > "$exp/results.md"
}

done_dir=data/.done
run_stage 0 "download_train$train_set" download
run_stage 1 "prepare_train$train_set" prepare
run_stage 2 "shards_train$train_set" shards
run_stage 3 "tokenizer_train${train_set}_$token_type$vocab_size" tokenizer
run_stage 4 lm lm
done_dir=$exp/.done
run_stage 5 train train
run_stage 6 average average
run_stage 7 greedy greedy
run_stage 8 beam beam
run_stage 9 score score
if selected 9 && [ -f "$exp/results.md" ]; then cat "$exp/results.md"; fi
