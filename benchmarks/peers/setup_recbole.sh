#!/usr/bin/env bash
# Create benchmarks/peers/.venv-recbole with RecBole 1.2.1 on CPU torch, for recbole_sasrec.py.
#
# RecBole is installed with --no-deps: its metadata requires ray<=2.6.3, tensorboard, thop, plotly and
# colorama/colorlog pins, none of which the low-level API used by recbole_sasrec.py imports
# (ray only in recbole.quick_start, thop only for FLOP counting, plotly only for hyper-tuning plots;
# torch.utils.tensorboard is replaced by a no-op stub in the runner). Only what the data, model,
# trainer and evaluator modules import is installed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv-recbole"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install --quiet)

# torch first: 2.13.0 resolves to the local CPU wheel; any other request may pull a CUDA build.
"${pip[@]}" torch==2.13.0
torch_version="$("$venv/bin/python" -c 'import torch; print(torch.__version__)')"
case "$torch_version" in
    2.13.0+cpu) ;;
    *) echo "expected torch 2.13.0+cpu in $venv, got $torch_version" >&2; exit 1 ;;
esac

"${pip[@]}" --no-deps recbole==1.2.1
# RecBole 1.2.1 predates numpy 2 (np.float etc.) and pandas 2.3; the runner aliases np.float itself.
"${pip[@]}" "numpy<2" "pandas<2.3" "setuptools<81" scipy scikit-learn pyyaml tqdm \
    colorlog==4.7.2 colorama==0.4.4 texttable tabulate psutil

"$venv/bin/python" - <<'PY'
import importlib.metadata as md
for name in ("torch", "recbole", "numpy", "pandas", "scipy", "scikit-learn"):
    print(f"{name}=={md.version(name)}")
PY
echo "ready: $venv/bin/python benchmarks/peers/recbole_sasrec.py --help"
