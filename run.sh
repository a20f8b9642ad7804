#!/usr/bin/env bash
# The README's commands. Each one creates and fills .venv on first use and reuses it after.
set -euo pipefail
cd "$(dirname "$0")"

VENV=.venv
STAMP="$VENV/.installed-$(sha1sum setup.py | cut -c1-12)"

ensure_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
  fi
  # Reinstall only when setup.py changed since the last install.
  if [ ! -f "$STAMP" ]; then
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -e ".[test]"
    rm -f "$VENV"/.installed-*
    touch "$STAMP"
  fi
}

usage() {
  echo "usage: ./run.sh demo [--quick] [--out_dir=DIR] | ./run.sh test [pytest args...]" >&2
  echo "       ./run.sh main --flag=value ... | ./run.sh tensorboard --logdir=MODEL_DIR" >&2
  exit 2
}

[ $# -ge 1 ] || usage
cmd=$1; shift
case "$cmd" in
  demo)
    ensure_venv
    export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-1}
    # Pre-train, transfer, export and predict on generated images; see official_resnet/demo/__init__.py.
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
    ensure_venv
    # TF logs C++ INFO lines per op otherwise; warnings and errors still show.
    export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-1}
    # The whole suite runs in one pytest process per core plus one (at most 4): many tests
    # wait on the subprocesses they start, and the extra process keeps the cores busier
    # (2 cores: 1.89 busy on average against 1.78 with two). A test file per process, so
    # its module fixtures are built once; with arguments, one process. The 15 slowest
    # tests are listed at the end: where to look first when the suite grows slower.
    if [ $# -eq 0 ]; then
      workers=$(( $(nproc) + 1 )); [ "$workers" -le 4 ] || workers=4
      set -- -n "$workers" --dist loadfile --durations=15
    fi
    exec "$VENV/bin/python" -m pytest "$@"
    ;;
  *) usage ;;
esac
