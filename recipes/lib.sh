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

command -v astctc >/dev/null || die "astctc is not on PATH (make setup, then use .venv/bin)"
