#!/usr/bin/env bash
# The GPU check (benchmarks/README.md): dlvision's training measured on a GPU, the GPU tests,
# and the book's pages in the full profile, with results as JSON in one folder ($OUT).
#
#   bash benchmarks/gpu_check.sh --prepare      here, before a GPU run: export the pages (jupytext)
#                                               and fetch the wheels the GPU image lacks
#   bash benchmarks/gpu_check.sh                on the GPU machine (about 7.5 minutes)
#   bash benchmarks/gpu_check.sh --dry-run      on the CPU, tiny sizes (CI: tests/test_gpu_check.py)
#
# Other options go to benchmarks/gpu_check.py (--out DIR, --budget SECONDS, --skip, --pages).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if [ "${1:-}" = "--prepare" ]; then
    exec "$PY" benchmarks/gpu_check.py "$@"
fi

export PYTHONPATH="$PWD/lib${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg

# Wheels carried in .whl (packages the pages import that the GPU image lacks), installed into a
# private folder, never into the image's environment. Not in a dry run: this machine has them.
dry=0
for a in "$@"; do [ "$a" = "--dry-run" ] && dry=1; done
if [ "$dry" = 0 ] && compgen -G ".whl/*.whl" >/dev/null; then
    site="${TMPDIR:-/tmp}/gpu_check_site"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl
    export PYTHONPATH="$PYTHONPATH:$site"
fi

exec "$PY" benchmarks/gpu_check.py "$@"
