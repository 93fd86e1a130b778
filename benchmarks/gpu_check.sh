#!/usr/bin/env bash
# One-call GPU check for a lent GPU machine (no network): prints one JSON document.
#   benchmarks/gpu_check.sh --prepare  # here, once: copies 640 real posters (~9 MB) from
#                                      # ../shared/data/ml-1m-posters into benchmarks/_posters/ (git-ignored)
#   benchmarks/gpu_check.sh            # on the GPU machine (< 8 minutes); carry benchmarks/_posters
#                                      # when ../shared/data is not there (else it falls back to synthetic posters)
#   benchmarks/gpu_check.sh --dry-run  # tiny sizes on the CPU, proves the code path
# Optional: wheels in .whl/ (git-ignored; carry it) are installed into a temporary folder first.
# polars/duckdb are NOT needed: the check imports only modules that never call them.
set -euo pipefail
export PYTHONUNBUFFERED=1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
if compgen -G ".whl/*.whl" > /dev/null; then
  site="$(mktemp -d)"
  "$PY" -m pip install --quiet --no-index --no-deps --target "$site" .whl/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c "import torch, transformers, timm, pyarrow, PIL; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" >&2
exec timeout "${GPU_CHECK_TIMEOUT:-470}" "$PY" -m benchmarks.gpu_check "$@"
