#!/usr/bin/env bash
# The one entry point. First use creates .venv and installs the kit (a fresh machine needs no other step).
#   ./run.sh EXPERIMENT.yaml [key=value ...]   train + evaluate (SFT or GRPO, from the YAML)
#   ./run.sh test [pytest args]                the test suite
#   ./run.sh bench NAME                        benchmarks/bench.py: data, train, records, hostile, attention, samples_hash
#   ./run.sh data synth|preview ...            procedural scenes, previews
#   ./run.sh eval ... | serve EXPERIMENT.yaml  evaluation, vLLM server
set -euo pipefail
cd "$(dirname "$0")"
VENV=${RLKIT_VENV:-.venv}
PY="$VENV/bin/python"
stamp="$VENV/.rlkit-installed"
if [ ! -x "$PY" ] || [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "[run.sh] setting up $VENV (first run: installs torch, transformers, trl; a few minutes)" >&2
  [ -x "$PY" ] || python3 -m venv "$VENV"
  "$PY" -m pip install -q --upgrade pip
  "$PY" -m pip install -q -e ".[dev]"
  touch "$stamp"
fi
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-0}
case "${1:-}" in
  test) shift; exec "$PY" -m pytest "$@" ;;
  bench) shift; exec "$PY" benchmarks/bench.py "$@" ;;  # harnesses live beside the kit, not in it
  "") echo "usage: ./run.sh EXPERIMENT.yaml | test | bench NAME | data ... | eval ... | serve ..." >&2; exit 2 ;;
  *) exec "$PY" -m rlkit "$@" ;;
esac
