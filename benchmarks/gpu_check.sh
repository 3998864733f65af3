#!/usr/bin/env bash
# The GPU check of the Behaviour Transformer issue, as one script for a lent GPU machine (the workplace's
# `device` tool): the CUDA tests, and at the same time on the same GPU the Beauty benchmark with the default
# config, two validation-sweep neighbours of it, GRU4Rec on Beauty, and the Transformer on Sports.
#
# Run from the repository root. The machine has torch but not duckdb/pydantic and cannot reach a registry,
# so their wheels travel in .whl/ and the benchmark files in .devdata/ (both git-ignored):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 \
#       -d .whl duckdb pydantic pydantic_core annotated-types typing-inspection   (versions as in .venv)
#   mkdir -p .devdata && cp -r ../shared/data/beauty-bert4rec ../shared/data/s3rec .devdata/
# Results: $OUT/gpu.jsonl (one benchmark record per run) and one log per run.
set -u
OUT=${OUT:-/tmp/gpu-check}
CAP=${CAP:-360}  # training seconds per run (validation included); the test evaluation comes after
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="$PWD/src:/tmp/site" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
export BEHAVIORLM_DATA_DIR="$PWD/.devdata" BEHAVIORLM_CACHE_DIR=/tmp/behaviorlm-cache
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())"
# Build the cached stores once, before several processes read them.
python3 -c "
from behaviorlm.data.datasets import load_interactions
for name in ('beauty', 'sports'):
    d = load_interactions(name); print(name, d.n_users, 'users', d.n_items, 'items', d.n_events, 'events')
" || exit 1
run() {
  local name=$1; shift
  python3 benchmarks/run_sequential.py --device cuda --threads 3 --max-train-seconds "$CAP" \
    --out "$OUT/gpu.jsonl" "$@" >"$OUT/$name.log" 2>&1 &
}
# The CUDA tests first (a broken GPU path stops here, in seconds); torch.compile's test runs later.
python3 -m pytest tests/models/test_cuda.py -x -q -p no:cacheprovider -k "not compiled" >"$OUT/cuda-tests.log" 2>&1 \
  || { tail -n 30 "$OUT/cuda-tests.log"; exit 1; }
tail -n 1 "$OUT/cuda-tests.log"
# The default config to convergence (sessions 2 and 3 swept d_model 64/128/256 and dropout 0.3/0.5;
# d_model 128, dropout 0.3 won on validation and became the default).
run beauty-default --datasets beauty --models transformer
# Validation sweep around the default (the Beauty target is not met by it: test NDCG@10 0.0344 vs
# 0.036). Configurations are compared on validation NDCG@10 only; test is read for the table.
run beauty-l3 --datasets beauty --models transformer --params '{"n_layers": 3}'
run beauty-h4 --datasets beauty --models transformer --params '{"n_heads": 4}'
run beauty-lr2e3 --datasets beauty --models transformer --params '{"lr": 0.002}'
run beauty-b256 --datasets beauty --models transformer --params '{"batch_size": 256, "lr": 0.002}'
python3 -m pytest tests/models/test_cuda.py -q -p no:cacheprovider -k compiled >>"$OUT/cuda-tests.log" 2>&1
tail -n 1 "$OUT/cuda-tests.log"
wait
for f in "$OUT"/*.log; do echo "== $f"; tail -n 2 "$f"; done
