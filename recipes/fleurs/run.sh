#!/usr/bin/env bash
# FLEURS recipe: any of its ~100 languages, or several sharing one encoder (with a language-ID
# head): AST-Base (AudioSet initialisation) + per-frame CTC, greedy and beam + n-gram decoding.
cd "$(dirname "$0")"

stage=0
stop_stage=100
force=false
lang=en_us                                      # one or more FLEURS codes: "en_us fr_fr cmn_hans_cn"
eval_splits="dev test"                          # decoded and scored per language
downloads=downloads
mirror=""                                       # directory or URL laid out like the repo (data/<lang>/...)
hf_endpoint=""                                  # a Hugging Face hub mirror (default: HF_ENDPOINT or the hub)
revision=main
keep_archives=true
token_type=unigram                              # unigram | bpe | char (char for Chinese, Japanese ...)
vocab_size=""                                   # default 256 for one language, 1024 for several
lm_order=4
lm_opts="--discount-fallback"                   # lmplz falls back only when its estimate fails
config=""                                       # default conf/ast_base.yaml, several languages:
                                                # conf/ast_base_multilingual.yaml
exp=""                                          # default exp/<config name>_<languages>
ngpu=1
train_opts=""
average=10
beam_opts=""
usage="Usage: recipes/fleurs/run.sh [--stage N] [--stop-stage M] [--force] [options]

Stages:
  0 download   data/<lang>/{train,dev,test}.tsv and audio/<split>.tar.gz of google/fleurs
               (huggingface_hub, or --mirror), checked, unpacked -> $downloads/data/<lang>/
  1 prepare    manifests (transcription column as target, raw kept, durations from the WAV
               headers, labels {\"lang\": <lang>}) -> data/<lang>/<split>/; several languages:
               also data/multi_<langs>/{train,dev} and its languages.txt
  2 shards     webdataset shards -> .../shards
  3 tokenizer  SentencePiece --token-type/--vocab-size (or characters) on the training text
  4 lm         a --lm-order n-gram per language on its training text -> data/<lang>/lm_<N>gram
  5 train      AST-Base + CTC (+ language-ID head with several languages) -> exp/<name>
  6 average    average the last --average checkpoints -> exp/<name>/model
  7 greedy     greedy decoding of --eval-splits per language -> exp/<name>/decode_<lang>_<split>_greedy
  8 beam       beam search + the language's n-gram; alpha/beta tuned on its dev split
  9 score      every decode scored against the full manifest -> exp/<name>/results.md

Options (defaults):
  --lang \"$lang\"                        several: one model, one shared tokenizer
  --eval-splits \"$eval_splits\"
  --downloads $downloads  --keep-archives $keep_archives  --revision $revision
  --mirror DIR|URL                      instead of the hub: a copy laid out like the repo
  --hf-endpoint URL                     a Hugging Face hub mirror
  --token-type $token_type  --vocab-size 256 (one language) | 1024 (several)
  --lm-order $lm_order  --lm-opts \"$lm_opts\"
  --config conf/ast_base.yaml | conf/ast_base_multilingual.yaml  --exp exp/<name>
  --ngpu $ngpu  --train-opts \"key=value ...\"  --average $average  --beam-opts \"...\"

Offline: put the files at $downloads/data/<lang>/ as the download stage's error message says.
Data stages keep their markers in data/.done, model stages in exp/<name>/.done.
"
. ../lib.sh

read -r -a langs <<< "$lang"
[ ${#langs[@]} -ge 1 ] || die "--lang needs at least one FLEURS language code"
tag=$(IFS=+; echo "${langs[*]}")
if [ ${#langs[@]} -eq 1 ]; then
  train_dir=data/$lang/train; valid_dir=data/$lang/dev
  config=${config:-conf/ast_base.yaml}
else
  train_dir=data/multi_$tag/train; valid_dir=data/multi_$tag/dev
  config=${config:-conf/ast_base_multilingual.yaml}
fi
[ -f "$config" ] || die "no config $config"
exp=${exp:-exp/$(basename "$config" .yaml)_$tag}
vocab_size=${vocab_size:-$([ ${#langs[@]} -eq 1 ] && echo 256 || echo 1024)}
lang_dir=data/lang_${tag}_${token_type}$([ "$token_type" = char ] || echo "$vocab_size")

download() {
  local src=()
  [ -n "$mirror" ] && src+=(--mirror "$mirror")
  [ -n "$hf_endpoint" ] && src+=(--hf-endpoint "$hf_endpoint")
  astctc download fleurs --out "$downloads" --lang "${langs[@]}" --revision "$revision" \
    --keep-archives "$keep_archives" "${src[@]}"
}
prepare() {
  for l in "${langs[@]}"; do
    for s in train dev test; do
      astctc prepare fleurs --root "$downloads" --lang "$l" --split "$s" --out "data/$l/$s/manifest.jsonl"
    done
  done
  if [ ${#langs[@]} -gt 1 ]; then  # one training set; the language-ID head's classes, sorted
    for s in train dev; do
      astctc prepare fleurs --root "$downloads" --lang "${langs[@]}" --split "$s" --out "data/multi_$tag/$s/manifest.jsonl"
    done
    printf '%s\n' "${langs[@]}" | LC_ALL=C sort > "$train_dir/languages.txt"
  fi
}
shards() {
  local dirs=()
  for l in "${langs[@]}"; do for s in train dev test; do dirs+=("data/$l/$s"); done; done
  [ ${#langs[@]} -gt 1 ] && dirs+=("$train_dir" "$valid_dir")
  for d in "${dirs[@]}"; do astctc shards --manifest "$d/manifest.jsonl" --out "$d/shards"; done
}
tokenizer() {
  astctc tokenizer --type "$token_type" --vocab-size "$vocab_size" --manifest "$train_dir/manifest.jsonl" --out "$lang_dir"
}
lm() {
  kenlm_tools
  # shellcheck disable=SC2086
  for l in "${langs[@]}"; do
    astctc lm --text "data/$l/train/manifest.jsonl" --order "$lm_order" --out "data/$l/lm_${lm_order}gram" $lm_opts
  done
}
train() {
  local sets=(--set "exp_dir=$exp" --set "data.train=$train_dir/shards" --set "data.valid=$valid_dir/shards"
              --set "data.tokenizer=$lang_dir")
  # a config with a language-ID head (`lang:` under classifiers) gets this run's class list
  if [ ${#langs[@]} -gt 1 ] && grep -q '^ *lang:' "$config"; then
    sets+=(--set "model.classifiers.lang.labels_file=$train_dir/languages.txt")
  fi
  sets+=("${train_sets[@]}")
  astctc_train --config "$config" "${sets[@]}"
}
average() { astctc average --exp "$exp" --last "$average" --out "$exp/model"; }
greedy() {
  for l in "${langs[@]}"; do
    for s in $eval_splits; do
      astctc decode --model "$exp/model" --data "data/$l/$s/shards" --out "$exp/decode_${l}_${s}_greedy"
    done
  done
}
beam() {
  for l in "${langs[@]}"; do
    # the LM linked into the experiment: alpha/beta tuned here belong to this model only
    mkdir -p "$exp/lm_$l"
    for f in data/"$l"/lm_"$lm_order"gram/*; do ln -sfn "$(realpath --relative-to="$exp/lm_$l" "$f")" "$exp/lm_$l/$(basename "$f")"; done
    rm -f "$exp/lm_$l"/*.tuned.json
    # shellcheck disable=SC2086
    astctc decode --model "$exp/model" --data "data/$l/dev/shards" --out "$exp/decode_${l}_dev_beam" \
      --method beam --lm "$exp/lm_$l" --tune $beam_opts
    for s in $eval_splits; do
      [ "$s" = dev ] && continue
      # shellcheck disable=SC2086
      astctc decode --model "$exp/model" --data "data/$l/$s/shards" --out "$exp/decode_${l}_${s}_beam" \
        --method beam --lm "$exp/lm_$l" $beam_opts
    done
  done
}
score() {
  local table="| language | split | greedy WER | greedy CER | beam WER | beam CER |"$'\n'"|---|---|---|---|---|---|"
  for l in "${langs[@]}"; do
    for s in $eval_splits; do
      local row="| $l | $s |"
      for m in greedy beam; do
        local d="$exp/decode_${l}_${s}_$m"
        if [ -f "$d/hyp.trn" ]; then
          astctc score --ref "data/$l/$s/manifest.jsonl" --hyp "$d/hyp.trn" --out "$exp/score_${l}_${s}_$m" >/dev/null
          row="$row $(awk 'NR<=2 {printf "%s | ", $2}' "$exp/score_${l}_${s}_$m/wer.txt")"
        else
          row="$row - | - |"
        fi
      done
      table="$table"$'\n'"${row% }"
    done
  done
  printf '%s\n\nmodel: %s, %s, tokenizer: %s\n' "$table" "$exp" "$config" "$lang_dir" > "$exp/results.md"
}

done_dir=data/.done
run_stage 0 "download_$tag" download
run_stage 1 "prepare_$tag" prepare
run_stage 2 "shards_$tag" shards
run_stage 3 "tokenizer_$(basename "$lang_dir")" tokenizer
run_stage 4 "lm_${tag}_$lm_order" lm
done_dir=$exp/.done
run_stage 5 train train
run_stage 6 average average
run_stage 7 greedy greedy
run_stage 8 beam beam
run_stage 9 score score
if selected 9 && [ -f "$exp/results.md" ]; then cat "$exp/results.md"; fi
