#!/usr/bin/env bash
# Mini LibriSpeech recipe (OpenSLR 31: train-clean-5, 5 h of read audiobooks, and dev-clean-2):
# character CTC (or word pieces) from the encoder of Whisper tiny.en, or an AST from scratch
# (conf/ast_scratch.yaml); greedy and beam search with a 4-gram. cpu.sh runs it from
# ../shared/data (train-clean-5 only: two speakers held out for dev, librispeech_sample as test).
cd "$(dirname "$0")"

stage=0
stop_stage=100
force=false
src=""                  # a directory holding LibriSpeech/train-clean-5 to use instead of downloading
test_src=""             # LibriSpeech-layout directories to test on (default: test-clean, downloaded)
dev_speakers="6272 3242"  # without dev-clean-2 (a --src of train-clean-5 alone): held out whole
downloads=downloads
mirror=https://www.openslr.org/resources/31
ls_mirror=https://www.openslr.org/resources/12
lm_mirror=https://www.openslr.org/resources/11
checksums=""            # md5sum/sha256sum-format file replacing the published md5 sums (mirrors)
lm_file=4-gram.arpa.gz  # the OpenSLR 11 ARPA the download brings (3-gram.pruned.1e-7.arpa.gz: 34 MB)
lm_text=""              # instead: text files to train a --lm-order-gram on (plain or .gz)
lm_order=4
token_type=char         # char | unigram | bpe
vocab_size=256          # pieces, for unigram or bpe
data=data
shared=${ASTCTC_SHARED_DATA:-../../../shared/data}
config=conf/whisper.yaml
exp=""                  # default exp/<config name>
init=auto               # auto: $shared/whisper_tiny_en for a Whisper-stem config; none; an astctc model
                        # directory (its tokenizer and CTC head are kept, stage 5 scores it as it is);
                        # another init source (a Whisper encoder directory, hf://openai/whisper-tiny.en)
train_opts=""           # extra --set overrides for training, e.g. "max_steps=100"
average=3
beam_opts=""            # extra astctc decode options for beam search, e.g. "--beam-width 32"
usage="Usage: recipes/mini_librispeech/run.sh [--stage N] [--stop-stage M] [--force] [options]

Stages:
  0 download   OpenSLR 31 train-clean-5 and dev-clean-2 (md5-checked, resumable); without
               --test-src OpenSLR 12 test-clean; without --lm-text OpenSLR 11 --lm-file
               -> $downloads/ (skipped with --src DIR)
  1 prepare    manifests: train-clean-5 train; dev-clean-2 dev, or where there is none (--src)
               the --dev-speakers of train-clean-5 held out whole; --test-src (or test-clean)
               test; with --lm-text, that text less the dev and test transcripts
               -> $data/{train,dev,test}/manifest.jsonl, $data/lm_text.txt
  2 shards     webdataset shards -> $data/<set>/shards
  3 tokenizer  characters (--token-type char) or --vocab-size pieces of the training text
               -> $data/lang_<type> (with --init MODEL: the model's own)
  4 lm         --lm-text: KenLM --lm-order-gram on it; downloaded: the OpenSLR 11 --lm-file,
               lower-cased; neither (--src): a --lm-order-gram on the training transcripts
               -> $data/lm
  5 zeroshot   with --init MODEL: the starting model decoded as it is -> exp/<name>/zeroshot
  6 train      -> exp/<name> (resumes from its last checkpoint if killed)
  7 average    the last --average checkpoints -> exp/<name>/model
  8 greedy     greedy decoding of dev and test -> exp/<name>/decode_<set>_greedy
  9 beam       beam search + LM, alpha/beta tuned on dev -> exp/<name>/decode_<set>_beam
 10 report     greedy and beam WER and CER (zero-shot beside them) -> exp/<name>/results.md

Options (defaults):
  --src DIR  --test-src \"DIR ...\"  --dev-speakers \"$dev_speakers\"
  --downloads $downloads  --mirror $mirror
  --ls-mirror $ls_mirror  --lm-mirror $lm_mirror  --checksums FILE
  --lm-file $lm_file  --lm-text \"FILE ...\"  --lm-order $lm_order
  --token-type $token_type  --vocab-size $vocab_size
  --data $data  --shared \$ASTCTC_SHARED_DATA or ../../../shared/data
  --config $config (or conf/ast_scratch.yaml)  --exp exp/<config name>  --init auto|none|DIR|hf://...
  --train-opts \"key=value ...\"  --average $average  --beam-opts \"...\"

Data stages (0-4) keep their markers in $data/.done, model stages (5-10) in exp/<name>/.done.
"
. ../lib.sh

[ -f "$config" ] || die "no config $config"
case $token_type in char | unigram | bpe) ;; *) die "--token-type must be char, unigram or bpe, not $token_type" ;; esac
exp=${exp:-exp/$(basename "$config" .yaml)}
resolve_init "$shared/whisper_tiny_en"
root=${src:-$downloads}
if [ -z "$test_src" ]; then
  [ -z "$src" ] || die "--src needs --test-src DIR (e.g. $shared/librispeech_sample): no test-clean is downloaded"
  test_src=$downloads/LibriSpeech/test-clean
fi
lang_name=$token_type; [ "$token_type" = char ] || lang_name=$token_type$vocab_size
lang=$data/lang_$lang_name

download() {
  local opts=(--mirror "$mirror" --ls-mirror "$ls_mirror" --lm-mirror "$lm_mirror")
  [ -n "$checksums" ] && opts+=(--checksums "$checksums")
  [[ "$test_src" == "$downloads/LibriSpeech/test-clean" ]] && opts+=(--test-subsets test-clean)
  [ -z "$lm_text" ] && opts+=(--lm-files "$lm_file")
  astctc download mini_librispeech --out "$downloads" "${opts[@]}"
}
prepare() {
  # shellcheck disable=SC2086  # lists
  astctc prepare mini_librispeech --root "$root" --out "$data" --test-src $test_src \
    --dev-speakers $dev_speakers ${lm_text:+--lm-text $lm_text}
}
lm() {
  kenlm_tools
  rm -rf "$data/lm"  # one LM in it: what beam_of decodes with
  if [ -n "$lm_text" ]; then
    astctc lm --text "$data/lm_text.txt" --out "$data/lm" --order "$lm_order"
  elif [ -z "$src" ]; then
    astctc lm --arpa "$downloads/lm/$lm_file" --out "$data/lm"
  else
    astctc lm --text "$data/train/manifest.jsonl" --out "$data/lm" --order "$lm_order" --discount-fallback
  fi
}
done_dir=$data/.done
[ -n "$src" ] || run_stage 0 download download
run_stage 1 prepare prepare
run_stage 2 shards shards
run_stage 3 "tokenizer_$lang_name" tokenizer --type "$token_type" --vocab-size "$vocab_size"
run_stage 4 lm lm
done_dir=$exp/.done
run_stage 5 zeroshot zeroshot
run_stage 6 train train
run_stage 7 average average
run_stage 8 greedy greedy_of "$exp/model" "$exp"
run_stage 9 beam beam_of "$exp/model" "$exp"
dev_from="speakers $dev_speakers of train-clean-5"
grep -qs '"subset": "dev-clean-2"' "$data/dev/manifest.jsonl" && dev_from=dev-clean-2
# shellcheck disable=SC2034  # report prints it
report_note="dev: $dev_from; test: $test_src"
report_stage 10 report
