#!/usr/bin/env bash
# Create the virtual environment of the drift benchmark's peers (alibi-detect with its PyTorch
# backend, and river), used by bench/drift_peers.py.
#
#   bench/drift_env.sh                       # creates .venv-drift beside the repository's .venv
#   DRIFT_VENV=/tmp/venv-drift bench/drift_env.sh
#
# The peers stay out of the project's dependencies: alibi-detect pins numpy<2 while the
# project runs numpy 2, so they live in their own venv with the pins of
# bench/requirements-drift-peers.txt. PyTorch is the CPU build: the PyTorch CPU wheel index is
# added when it answers (TORCH_INDEX overrides the address; TORCH_INDEX=none skips it), else pip
# resolves torch from its configured indexes and find-links. TensorFlow is not installed: the
# benchmark uses alibi-detect's PyTorch backend only, and KSDrift needs no backend.
#
# Idempotent: the requirement list is written to $DRIFT_VENV/.metasentry-drift-stamp after a
# successful install and import check; a rerun with the same list does nothing. Delete the
# stamp (or the venv) to force a reinstall.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DRIFT_VENV="${DRIFT_VENV:-$REPO/.venv-drift}"
PROJECT_VENV="${PROJECT_VENV:-$REPO/.venv}"
REQUIREMENTS="$REPO/bench/requirements-drift-peers.txt"
STAMP="$DRIFT_VENV/.metasentry-drift-stamp"
TORCH_INDEX="${TORCH_INDEX:-https://download.pytorch.org/whl/cpu}"
PYTHON="${PYTHON:-}"

if [[ -z "$PYTHON" ]]; then
    if [[ -x "$PROJECT_VENV/bin/python" ]]; then
        # Same interpreter version as the project: the base interpreter its venv was made from.
        PYTHON="$("$PROJECT_VENV/bin/python" -c 'import sys; print(sys._base_executable)')"
    else
        PYTHON="python3"
    fi
fi

wanted="$(grep -v -E '^\s*(#|$)' "$REQUIREMENTS")"

if [[ -f "$STAMP" ]] && [[ "$(cat "$STAMP")" == "$wanted" ]]; then
    echo "drift_env: $DRIFT_VENV is up to date ($(tr '\n' ' ' <<<"$wanted"))"
    exit 0
fi

echo "drift_env: creating $DRIFT_VENV with $("$PYTHON" --version 2>&1) ($PYTHON)"
"$PYTHON" -m venv "$DRIFT_VENV"
pip=("$DRIFT_VENV/bin/python" -m pip install --disable-pip-version-check)

extra=()
if [[ "$TORCH_INDEX" != "none" ]] && "$PYTHON" - "$TORCH_INDEX" <<'PY'
import sys, urllib.request
try:
    urllib.request.urlopen(sys.argv[1] + "/", timeout=10)
except Exception:
    sys.exit(1)
PY
then
    echo "drift_env: using the PyTorch CPU index $TORCH_INDEX"
    extra=(--extra-index-url "$TORCH_INDEX")
else
    echo "drift_env: the PyTorch CPU index is not reachable; torch comes from the configured indexes"
fi

echo "drift_env: installing"
sed 's/^/  /' <<<"$wanted"
# shellcheck disable=SC2086
"${pip[@]}" "${extra[@]}" $wanted

"$DRIFT_VENV/bin/python" - <<'PY'
import alibi_detect, numpy, river, torch
from alibi_detect.cd import KSDrift, MMDDrift, MMDDriftOnline  # noqa: F401  (the torch backend)
from river import drift  # noqa: F401

print(f"drift_env: installed alibi-detect {alibi_detect.__version__}, torch {torch.__version__}, "
      f"river {river.__version__}, numpy {numpy.__version__}")
PY
printf '%s' "$wanted" > "$STAMP"
