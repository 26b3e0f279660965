#!/usr/bin/env bash
# The GPU results, one lent command at a time: the throughput tables and the training speed
# first, then the `gpu` study sized to one command; after every step $OUT holds what the next
# fresh machine needs. See scripts/gpu_publish.py (`--help`) and the README section "GPU results".
#
#   scripts/gpu_publish.sh --plan                                   # the time plan
#   scripts/gpu_publish.sh [--budget-seconds N] [--skip STEP ...]   # on the GPU machine
#   scripts/gpu_publish.sh --dry-run                                # the same path on a CPU
#   scripts/gpu_publish.sh --publish                                # on the CPU: publish what came back
#
# PYTHON picks the interpreter (default: python3). When .whl/ holds wheels (modules the machine
# lacks, e.g. timm or papermill), they are installed into /tmp/gpu_publish_site without the
# network and put on PYTHONPATH.
set -euo pipefail
export GPU_PUBLISH_T0=${GPU_PUBLISH_T0:-$(date +%s)}   # the command's clock starts here
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "[gpu_publish] error: no Python interpreter '$PYTHON'; set PYTHON" >&2
    exit 2
fi
site=/tmp/gpu_publish_site
if compgen -G ".whl/*.whl" >/dev/null; then
    if [ ! -f "$site/.installed" ]; then
        echo "[gpu_publish] installing $(ls .whl/*.whl | wc -l) wheel(s) from .whl/ into $site"
        "$PYTHON" -m pip install --no-index --no-deps --quiet --target "$site" .whl/*.whl
        touch "$site/.installed"
    fi
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    export PATH="$site/bin:$PATH"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"   # this checkout's ds, before any installed one
exec "$PYTHON" scripts/gpu_publish.py "$@"
