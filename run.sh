#!/usr/bin/env bash
# The README's commands. Each one creates and fills .venv on first use and reuses it after.
# Paths given to demo, main and tensorboard mean what they mean in the caller's directory:
# only `test` runs inside the repository.
set -euo pipefail
REPO=$(cd "$(dirname "$0")" && pwd)

VENV=$REPO/.venv
SETUP_HASH=$(sha1sum "$REPO/setup.py" | cut -c1-12)
# What is installed for this setup.py: the package (demo, main, tensorboard), or the package
# with the test extras (torch, torchvision, timm, pytest), which earlier versions always installed.
RUN_STAMP=$VENV/.installed-run-$SETUP_HASH
TEST_STAMP=$VENV/.installed-$SETUP_HASH

# ensure_venv [test]: install the package, with the test extras when asked, unless this
# setup.py's install is already there.
ensure_venv() {
  local extras=${1:-} stamp=$RUN_STAMP
  [ -z "$extras" ] || stamp=$TEST_STAMP
  if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
  fi
  if [ -f "$stamp" ] || { [ -z "$extras" ] && [ -f "$TEST_STAMP" ]; }; then
    return
  fi
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -e "$REPO${extras:+[$extras]}"
  # Stamps of an older setup.py go; the new one says what is installed now.
  for old in "$VENV"/.installed-*; do
    case $old in *-"$SETUP_HASH") ;; *) rm -f "$old" ;; esac
  done
  touch "$stamp"
}

# The official tensorflow/models code the parity tests and benchmarks compare against, in
# .official (benchmarks/official.py's INSTALL command, run in the repository); installed
# again when that command changes.
ensure_official() {
  local install stamp
  install=$(cd "$REPO" && .venv/bin/python -c 'from benchmarks import official; print(official.INSTALL)')
  stamp=$REPO/.official/.installed-$(echo "$install" | sha1sum | cut -c1-12)
  if [ ! -f "$stamp" ]; then
    (cd "$REPO" && $install)
    mkdir -p "$REPO/.official" && touch "$stamp"
  fi
}

usage() {
  echo "usage: ./run.sh demo [--quick] [--out_dir=DIR] | ./run.sh test [fast] [pytest args...]" >&2
  echo "       ./run.sh main --flag=value ... | ./run.sh tensorboard --logdir=MODEL_DIR" >&2
  exit 2
}

[ $# -ge 1 ] || usage
cmd=$1; shift
case "$cmd" in
  demo)
    ensure_venv
    export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-1}
    # Pre-train, transfer, export and predict on generated images; see official_resnet/demo/stages.py.
    exec "$VENV/bin/python" -m official_resnet.demo "$@"
    ;;
  main)
    ensure_venv
    export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-1}
    # The command line, inside .venv: python -m official_resnet.main with these flags.
    exec "$VENV/bin/python" -m official_resnet.main "$@"
    ;;
  tensorboard)
    ensure_venv
    # TensorBoard of .venv (installed with the package), e.g. --logdir=MODEL_DIR.
    exec "$VENV/bin/tensorboard" "$@"
    ;;
  test)
    ensure_venv test
    ensure_official
    cd "$REPO"
    # TF logs C++ INFO lines per op otherwise; warnings and errors still show.
    export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-1}
    # The whole suite (no arguments) and the fast tier (`fast`: no test that starts a
    # process or a cluster, see pytest.ini) run in one pytest process per core plus one
    # (at most 4): many tests wait on the subprocesses they start, and the extra process
    # keeps the cores busier (2 cores: 1.89 busy on average against 1.78 with two). A test
    # file per process, so its module fixtures are built once, the longest files first (by
    # the test times of the last run, kept in .pytest_cache: tests/conftest.py); with other
    # arguments, one process. The 15 slowest tests are listed at the end: where to look
    # first when the suite grows slower.
    tier=()
    if [ "${1:-}" = fast ]; then
      shift; tier=(-m "not slow")
      # In-process tests only, more workers than cores: one intra-op thread each, not a
      # pool per core in each (2 cores: 2:46 and 333 CPU s against 3:02 and 365 CPU s).
      # Not for the whole suite, whose subprocesses would inherit it.
      export TF_NUM_INTRAOP_THREADS=${TF_NUM_INTRAOP_THREADS:-1}
    fi
    if [ $# -eq 0 ]; then
      workers=$(( $(nproc) + 1 )); [ "$workers" -le 4 ] || workers=4
      set -- -n "$workers" --dist loadfile --no-loadscope-reorder --durations=15
    fi
    set -- "${tier[@]}" "$@"
    exec "$VENV/bin/python" -m pytest "$@"
    ;;
  *) usage ;;
esac
