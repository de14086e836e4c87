#!/usr/bin/env bash
# LJSpeech recipe: one real reader, read non-fiction. The full corpus on a GPU (AST-Base from the
# AudioSet checkpoint), or on CPU the shared chapter LJ001 fine-tuning a model trained on
# synthetic speech (cpu.sh). Character CTC, greedy and beam search with a KenLM n-gram on the
# training transcripts.
cd "$(dirname "$0")"

stage=0
stop_stage=100
force=false
src=""              # an LJSpeech-layout directory (metadata.csv, wavs/) to use instead of downloading
downloads=downloads
url=https://data.keithito.com/data/speech/LJSpeech-1.1.tar.bz2
checksums=""        # md5sum/sha256sum-format file for an archive from another --url
dev="LJ049"         # held-out chapters or clip ranges (LJ001-0151..LJ001-0168)
test="LJ050"
data=data
config=conf/ast_base_gpu.yaml
exp=""              # default exp/<config name>
init=""             # weights to start from instead of the config's init: an astctc model directory
                    # (its tokenizer is kept, so is its CTC head, and stage 5 scores it as it is,
                    # zero-shot), or another init source (a Whisper encoder: hf://... or a directory)
train_opts=""       # extra --set overrides for training, e.g. "max_steps=100"
average=3
lm_order=4
beam_opts=""        # extra astctc decode options for beam search, e.g. "--beam-width 32"
usage="Usage: recipes/ljspeech/run.sh [--stage N] [--stop-stage M] [--force] [options]

Stages:
  0 download   LJSpeech-1.1.tar.bz2 (sha256-checked, resumable), unpacked -> $downloads/
               (skipped with --src DIR)
  1 prepare    manifests, normalised transcriptions; --dev and --test held out whole
               -> $data/{train,dev,test}/manifest.jsonl
  2 shards     webdataset shards -> $data/<set>/shards
  3 tokenizer  characters of the training text -> $data/lang (with --init MODEL: the model's own)
  4 lm         KenLM ${lm_order}-gram on the training transcripts -> $data/lm
  5 zeroshot   with --init MODEL: the starting model decoded as it is -> exp/<name>/zeroshot
  6 train      -> exp/<name> (resumes from its last checkpoint if killed)
  7 average    the last --average checkpoints -> exp/<name>/model
  8 greedy     greedy decoding of dev and test -> exp/<name>/decode_<set>_greedy
  9 beam       beam search + LM, alpha/beta tuned on dev -> exp/<name>/decode_<set>_beam
 10 report     greedy and beam WER and CER, zero-shot beside them -> exp/<name>/results.md

Options (defaults):
  --src DIR  --downloads $downloads  --url URL  --checksums FILE
  --dev \"$dev\"  --test \"$test\"     chapters (LJ049) or inclusive ranges (LJ001-0151..LJ001-0168)
  --data $data  --config $config  --exp exp/<config name>  --init DIR
  --train-opts \"key=value ...\"  --average $average  --lm-order $lm_order  --beam-opts \"...\"

Data stages (0-4) keep their markers in $data/.done, model stages (5-10) in exp/<name>/.done.
"
. ../lib.sh

[ -f "$config" ] || die "no config $config"
exp=${exp:-exp/$(basename "$config" .yaml)}
[ -z "$init" ] || [[ "$init" == hf://* ]] || [ -f "$init/config.json" ] \
  || die "--init $init: not a model directory (no config.json)"
root=${src:-$downloads/LJSpeech-1.1}

download() {
  local sums=(); [ -n "$checksums" ] && sums=(--checksums "$checksums")
  astctc download ljspeech --out "$downloads" --url "$url" "${sums[@]}"
}
prepare() {
  # shellcheck disable=SC2086  # dev and test are lists
  astctc prepare ljspeech --root "$root" --out "$data" --dev $dev --test $test
}
lm() {
  kenlm_tools
  rm -rf "$data/lm"  # one LM in it: what beam_of (lib.sh) decodes with
  astctc lm --text "$data/train/manifest.jsonl" --out "$data/lm" --order "$lm_order" --discount-fallback
}
# shards, tokenizer, train, average, zeroshot, greedy_of and beam_of: lib.sh's
report() {
  local table="| model | decoding | dev WER | dev CER | test WER | test CER |"$'\n'"|---|---|---|---|---|---|"
  local who dir m s row
  for who in zeroshot fine-tuned; do
    dir=$exp; [ "$who" = zeroshot ] && dir=$exp/zeroshot
    for m in greedy beam; do
      [ -f "$dir/decode_dev_$m/wer.txt" ] || continue
      row="| $who | $m |"
      for s in dev test; do
        local f="$dir/decode_${s}_$m/wer.txt"
        if [ -f "$f" ]; then
          row="$row $(awk '/^%WER/ {print $2}' "$f") | $(awk '/^%CER/ {print $2}' "$f") |"
        else
          row="$row - | - |"
        fi
      done
      table="$table"$'\n'"$row"
    done
  done
  printf '%s\n\nmodel: %s (%s%s), data: %s\n' "$table" "$exp" "$config" "${init:+, from $init}" "$data" \
    | tee "$exp/results.md"
}

done_dir=$data/.done
[ -n "$src" ] || run_stage 0 download download
run_stage 1 prepare prepare
run_stage 2 shards shards
run_stage 3 tokenizer tokenizer
run_stage 4 lm lm
done_dir=$exp/.done
run_stage 5 zeroshot zeroshot
run_stage 6 train train
run_stage 7 average average
run_stage 8 greedy greedy_of "$exp/model" "$exp"
run_stage 9 beam beam_of "$exp/model" "$exp"
report_stage 10 report
