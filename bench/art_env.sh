#!/usr/bin/env bash
# Create the IBM ART virtual environment for the side-by-side benchmarks (bench/art_side.py).
#
#   bench/art_env.sh                 # creates .venv-art beside the repository's .venv
#   ART_VENV=/tmp/venv-art bench/art_env.sh
#
# ART stays out of the project's dependencies: it lives in its own venv with the pins of
# bench/requirements-art.txt, except TensorFlow, which follows the version installed in the
# project's .venv (PROJECT_VENV overrides where that is), so that both sides load one .keras file
# with the same kernels. tensorflow-cpu is tried first (no CUDA wheels to fetch); if pip cannot
# resolve it for that version, tensorflow is used.
#
# Idempotent: the resolved requirement list is written to $ART_VENV/.metasentry-art-stamp after a
# successful install; a rerun with the same list does nothing. Delete the stamp (or the venv) to
# force a reinstall.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ART_VENV="${ART_VENV:-$REPO/.venv-art}"
PROJECT_VENV="${PROJECT_VENV:-$REPO/.venv}"
REQUIREMENTS="$REPO/bench/requirements-art.txt"
STAMP="$ART_VENV/.metasentry-art-stamp"
PYTHON="${PYTHON:-}"

if [[ -z "$PYTHON" ]]; then
    if [[ -x "$PROJECT_VENV/bin/python" ]]; then
        # Same interpreter version as the project: the base interpreter its venv was made from.
        PYTHON="$("$PROJECT_VENV/bin/python" -c 'import sys; print(sys._base_executable)')"
    else
        PYTHON="python3"
    fi
fi

tf_version=""
if [[ -x "$PROJECT_VENV/bin/python" ]]; then
    tf_version="$("$PROJECT_VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("tensorflow"))' 2>/dev/null \
        || "$PROJECT_VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("tensorflow-cpu"))' 2>/dev/null \
        || true)"
fi
pinned_tf="$(sed -n 's/^tensorflow\(-cpu\)\?==\(.*\)$/\2/p' "$REQUIREMENTS")"
if [[ -z "$tf_version" ]]; then
    echo "art_env: no TensorFlow found in $PROJECT_VENV; using the pin tensorflow==$pinned_tf"
    tf_version="$pinned_tf"
elif [[ "$tf_version" != "$pinned_tf" ]]; then
    echo "art_env: .venv has tensorflow $tf_version, bench/requirements-art.txt pins $pinned_tf; following .venv"
fi

# The requirement list without its TensorFlow line; TensorFlow is added below.
others="$(grep -v -E '^\s*(#|$)' "$REQUIREMENTS" | grep -v -E '^tensorflow(-cpu)?==')"
wanted="$(printf 'tensorflow==%s\n%s\n' "$tf_version" "$others")"

if [[ -f "$STAMP" ]] && [[ "$(cat "$STAMP")" == "$wanted" ]]; then
    echo "art_env: $ART_VENV is up to date ($(grep adversarial-robustness-toolbox <<<"$wanted"), tensorflow $tf_version)"
    exit 0
fi

echo "art_env: creating $ART_VENV with $("$PYTHON" --version 2>&1) ($PYTHON)"
"$PYTHON" -m venv "$ART_VENV"
pip=("$ART_VENV/bin/python" -m pip install --disable-pip-version-check)

echo "art_env: installing"
sed 's/^/  /' <<<"$others"
# shellcheck disable=SC2086
if "${pip[@]}" "tensorflow-cpu==$tf_version" $others; then
    installed_tf="tensorflow-cpu==$tf_version"
else
    echo "art_env: tensorflow-cpu==$tf_version did not resolve; trying tensorflow==$tf_version"
    # shellcheck disable=SC2086
    "${pip[@]}" "tensorflow==$tf_version" $others
    installed_tf="tensorflow==$tf_version"
fi

"$ART_VENV/bin/python" - <<'PY'
import art, keras, numpy, sklearn, tensorflow
print(f"art_env: installed art {art.__version__}, tensorflow {tensorflow.__version__}, "
      f"keras {keras.__version__}, numpy {numpy.__version__}, scikit-learn {sklearn.__version__}")
PY
echo "art_env: TensorFlow distribution: $installed_tf"
printf '%s' "$wanted" > "$STAMP"
