# Shared helpers for recipes/<corpus>/run.sh: option parsing, logging, stages with done-markers.
#
# A recipe sets its defaults (stage=0 stop_stage=100 force=false plus its own variables) and a
# `usage` text, then sources this file with "$@". Every `--some-name VALUE` option sets the
# variable some_name, which must already exist (a typo is an error, not a silent no-op).

set -euo pipefail

log() { echo "$(date '+%F %T') [$(basename "$PWD")] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) echo "$usage"; exit 0 ;;
    --force) force=true; shift ;;
    --*=*) _opt="${1%%=*}"; _val="${1#*=}"; shift ;&
    --*)
      if [ -z "${_opt:-}" ]; then _opt="$1"; [ $# -ge 2 ] || die "option $1 needs a value"; _val="$2"; shift 2; fi
      _var="${_opt#--}"; _var="${_var//-/_}"
      [ -n "${!_var+x}" ] || die "unknown option $_opt (see --help)"
      printf -v "$_var" '%s' "$_val"; unset _opt ;;
    *) die "unexpected argument $1 (see --help)" ;;
  esac
done

# to_sets ARRAY "key=value ...": ARRAY=(--set key=value ...), `astctc train` arguments
to_sets() { local -n _sets=$1; local _kv; _sets=(); for _kv in $2; do _sets+=(--set "$_kv"); done; }
# --train-opts "key=value ..." (recipes that have it), to go after the recipe's own --set
# options so that the user's win
to_sets train_sets "${train_opts:-}"

# selected N: is stage N within --stage .. --stop-stage?
selected() { [ "$1" -ge "$stage" ] && [ "$1" -le "$stop_stage" ]; }

# run_stage N NAME command...: runs when stage <= N <= stop_stage, unless its done-marker
# exists (then it says so and skips; --force redoes it). The marker is written only on success.
run_stage() {
  local n=$1 name=$2; shift 2
  selected "$n" || return 0
  local marker="$done_dir/stage$n.$name.done"
  if [ -f "$marker" ] && [ "$force" != true ]; then
    log "stage $n ($name): done already ($marker), skipping; --force redoes it"
    return 0
  fi
  log "stage $n ($name): start"
  local t0=$SECONDS
  "$@" || die "stage $n ($name) failed"
  mkdir -p "$done_dir"; date '+%F %T' > "$marker"
  log "stage $n ($name): done in $((SECONDS - t0)) s"
}

# report_stage N command...: runs when stage <= N <= stop_stage, every time (no marker): a
# report is the recipe's answer, printed again on each run.
report_stage() {
  local n=$1; shift
  selected "$n" || return 0
  log "stage $n (report)"
  "$@"
}

# astctc_train ARGS...: `astctc train ARGS`, or with ngpu > 1 (recipes that have it) one process
# per GPU under torchrun
astctc_train() {
  if [ "${ngpu:-1}" -gt 1 ]; then
    torchrun --standalone --nproc_per_node "$ngpu" -m astctc.cli train "$@"
  else
    astctc train "$@"
  fi
}

# kenlm_tools: KenLM's lmplz and build_binary beside astctc (its venv's bin), compiled once by
# lm/build_kenlm.sh (~1.5 min) when either is missing
kenlm_tools() {
  command -v lmplz >/dev/null && command -v build_binary >/dev/null && return 0
  bash ../../lm/build_kenlm.sh --prefix "$(dirname "$(dirname "$(command -v astctc)")")"
}

# use_threads N: torch (OpenMP, MKL) threads per process. On a shared 2-core machine one each
# for training and data loading beats OpenMP threads waiting for one another (10x+ slower under load)
use_threads() { export OMP_NUM_THREADS=$1 MKL_NUM_THREADS=$1; }

# ---- Stages of a recipe with train, dev and test sets under $data (ljspeech, an4,
# mini_librispeech; a recipe's own function of the same name overrides one). They read the
# recipe's variables: data, exp, config, init, average, beam_opts, and lang (default $data/lang).

# resolve_init WHISPER_DIR: --init auto is WHISPER_DIR for a config whose encoder has Whisper's
# stem (the weights that fit it) and nothing otherwise; none is nothing; what is left must be
# a model directory or hf://
resolve_init() {
  case $init in
    auto)
      init=""
      if grep -qE '^[[:space:]]*stem:[[:space:]]*whisper' "$config"; then
        init=$1
        [ -f "$init/config.json" ] \
          || die "--init auto: no Whisper encoder in $init (--shared DIR, --init hf://openai/whisper-tiny.en or --init none)"
      fi ;;
    none) init="" ;;
  esac
  [ -z "$init" ] || [[ "$init" == hf://* ]] || [ -f "$init/config.json" ] \
    || die "--init $init: not a model directory (no config.json)"
}
# init_is_model: $init is an astctc model (features.json beside its weights): it brings its
# tokenizer (its CTC head is kept) and can be scored as it is
init_is_model() { [ -n "${init:-}" ] && [ -f "$init/features.json" ]; }
shards() {
  local s
  for s in train dev test; do astctc shards --manifest "$data/$s/manifest.jsonl" --out "$data/$s/shards"; done
}
# tokenizer [astctc tokenizer options]: on the training text (default --type char), or the
# tokenizer of the astctc model given as --init
tokenizer() {
  local out=${lang:-$data/lang} f
  if init_is_model; then
    mkdir -p "$out"
    for f in chars.txt tokenizer.model; do if [ -f "$init/$f" ]; then cp "$init/$f" "$out/"; fi; done
    return 0
  fi
  [ $# -gt 0 ] || set -- --type char
  astctc tokenizer --manifest "$data/train/manifest.jsonl" --out "$out" "$@"
}
train() {
  local sets=(--set "exp_dir=$exp" --set "data.train=$data/train/shards" --set "data.valid=$data/dev/shards"
              --set "data.tokenizer=${lang:-$data/lang}")
  [ -n "$init" ] && sets+=(--set "init=$init")
  sets+=("${train_sets[@]}")
  astctc_train --config "$config" "${sets[@]}"
}
average() { astctc average --exp "$exp" --last "$average" --out "$exp/model"; }
# greedy_of MODEL OUT: greedy decoding of dev and test -> OUT/decode_<set>_greedy
greedy_of() {
  local s
  for s in dev test; do astctc decode --model "$1" --data "$data/$s/shards" --out "$2/decode_${s}_greedy"; done
}
# beam_of MODEL OUT: beam search with the LM in $data/lm (the lm stage leaves one there),
# alpha/beta tuned on dev -> OUT/decode_<set>_beam
beam_of() {
  local model=$1 out=$2 f
  # the LM files are linked into OUT, so the alpha/beta tuned on dev belong to this model alone
  rm -rf "$out/lm" && mkdir -p "$out/lm"
  for f in "$data"/lm/*; do ln -sfn "$(realpath --relative-to="$out/lm" "$f")" "$out/lm/$(basename "$f")"; done
  rm -f "$out"/lm/*.tuned.json
  # shellcheck disable=SC2086  # beam_opts is a list of options
  astctc decode --model "$model" --data "$data/dev/shards" --out "$out/decode_dev_beam" --method beam \
    --lm "$out/lm" --tune $beam_opts
  # shellcheck disable=SC2086
  astctc decode --model "$model" --data "$data/test/shards" --out "$out/decode_test_beam" --method beam \
    --lm "$out/lm" $beam_opts
}
# zeroshot: the astctc model given as --init, decoded as it is -> $exp/zeroshot
zeroshot() {
  if ! init_is_model; then log "no astctc model to start from: nothing to score zero-shot"; return 0; fi
  greedy_of "$init" "$exp/zeroshot" && beam_of "$init" "$exp/zeroshot"
}
# report: greedy and beam WER and CER of dev and test, zero-shot beside trained, and the
# recipe's $report_note -> $exp/results.md (printed too)
report() {
  local table="| model | decoding | dev WER | dev CER | test WER | test CER |"$'\n'"|---|---|---|---|---|---|"
  local who label dir m s row f
  for who in zeroshot trained; do
    dir=$exp label=$who
    if [ "$who" = zeroshot ]; then dir=$exp/zeroshot; elif [ -n "${init:-}" ]; then label=fine-tuned; fi
    for m in greedy beam; do
      [ -f "$dir/decode_dev_$m/wer.txt" ] || continue
      row="| $label | $m |"
      for s in dev test; do
        f="$dir/decode_${s}_$m/wer.txt"
        if [ -f "$f" ]; then
          row="$row $(awk '/^%WER/ {print $2}' "$f") | $(awk '/^%CER/ {print $2}' "$f") |"
        else
          row="$row - | - |"
        fi
      done
      table="$table"$'\n'"$row"
    done
  done
  {
    printf '%s\n\nmodel: %s (%s%s), data: %s\n' "$table" "$exp" "$config" "${init:+, from $init}" "$data"
    if [ -n "${report_note:-}" ]; then printf '%s\n' "$report_note"; fi
  } | tee "$exp/results.md"
}

command -v astctc >/dev/null || die "astctc is not on PATH (make setup, then use .venv/bin)"
