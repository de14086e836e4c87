#!/usr/bin/env bash
# AN4 recipe: CMU's census corpus (spelled names and addresses, digits, commands; 74 training
# speakers). ESPnet's split, character CTC from the encoder of Whisper tiny.en, greedy and beam
# search with a KenLM n-gram on the training transcripts. cpu.sh runs it from ../shared/data/an4.
cd "$(dirname "$0")"

stage=0
stop_stage=100
force=false
src=""              # an AN4-layout directory (etc/, wav/) to use instead of downloading
downloads=downloads
url=http://www.speech.cs.cmu.edu/databases/an4/an4_sphere.tar.gz
checksums=""        # md5sum/sha256sum-format file with an4_sphere.tar.gz (CMU publishes no checksum)
num_dev=100         # ESPnet's train_dev: the first N of the sorted training utterances
data=data
shared=${ASTCTC_SHARED_DATA:-../../../shared/data}
config=conf/whisper.yaml
exp=""              # default exp/<config name>
init=auto           # auto: $shared/whisper_tiny_en for a Whisper-stem config; none; an astctc model
                    # directory (its tokenizer and CTC head are kept, stage 5 scores it as it is);
                    # another init source (a Whisper encoder directory, hf://openai/whisper-tiny.en)
train_opts=""       # extra --set overrides for training, e.g. "max_steps=100"
average=3
lm_order=4
beam_opts=""        # extra astctc decode options for beam search, e.g. "--beam-width 32"
usage="Usage: recipes/an4/run.sh [--stage N] [--stop-stage M] [--force] [options]

Stages:
  0 download   an4_sphere.tar.gz from CMU (resumable; UNVERIFIED unless --checksums gives its
               sum: CMU publishes none), unpacked -> $downloads/an4 (skipped with --src DIR)
  1 prepare    manifests by ESPnet's split: the first --num-dev sorted training utterances dev
               (train_dev), the rest train (train_nodev), the 130 test utterances test
               -> $data/{train,dev,test}/manifest.jsonl
  2 shards     webdataset shards -> $data/<set>/shards
  3 tokenizer  characters of the training text -> $data/lang (with --init MODEL: the model's own)
  4 lm         KenLM ${lm_order}-gram on the training transcripts -> $data/lm
  5 zeroshot   with --init MODEL: the starting model decoded as it is -> exp/<name>/zeroshot
  6 train      -> exp/<name> (resumes from its last checkpoint if killed)
  7 average    the last --average checkpoints -> exp/<name>/model
  8 greedy     greedy decoding of dev and test -> exp/<name>/decode_<set>_greedy
  9 beam       beam search + LM, alpha/beta tuned on dev -> exp/<name>/decode_<set>_beam
 10 report     greedy and beam WER and CER (zero-shot beside them) -> exp/<name>/results.md

Options (defaults):
  --src DIR  --downloads $downloads  --url URL  --checksums FILE  --num-dev $num_dev
  --data $data  --shared \$ASTCTC_SHARED_DATA or ../../../shared/data
  --config $config  --exp exp/<config name>  --init auto|none|DIR|hf://...
  --train-opts \"key=value ...\"  --average $average  --lm-order $lm_order  --beam-opts \"...\"

Data stages (0-4) keep their markers in $data/.done, model stages (5-10) in exp/<name>/.done.
"
. ../lib.sh

[ -f "$config" ] || die "no config $config"
exp=${exp:-exp/$(basename "$config" .yaml)}
resolve_init "$shared/whisper_tiny_en"
root=${src:-$downloads/an4}

download() {
  local sums=(); [ -n "$checksums" ] && sums=(--checksums "$checksums")
  astctc download an4 --out "$downloads" --url "$url" "${sums[@]}"
}
prepare() { astctc prepare an4 --root "$root" --out "$data" --num-dev "$num_dev"; }
lm() {
  kenlm_tools
  rm -rf "$data/lm"  # one LM in it: what beam_of decodes with
  # --discount-fallback: a few hundred short utterances of a small vocabulary
  astctc lm --text "$data/train/manifest.jsonl" --out "$data/lm" --order "$lm_order" --discount-fallback
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
