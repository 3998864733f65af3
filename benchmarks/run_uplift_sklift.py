"""Time our uplift/Qini curves and areas (behaviorlm.evaluation.uplift) against scikit-uplift's on one
randomised campaign of 1,000,000 users without tied scores; best of 3 runs each. Pin it to one core:

    taskset -c 1 env OMP_NUM_THREADS=1 .venv/bin/python benchmarks/run_uplift_sklift.py
"""

from __future__ import annotations

import time
import warnings

import numpy as np
from sklearn.metrics import auc

from behaviorlm.evaluation.uplift import uplift_curves

warnings.filterwarnings("ignore", message=".*stable_cumsum.*", category=FutureWarning)
import sklift.metrics as sm  # noqa: E402

N = 1_000_000


def main() -> None:
    rng = np.random.default_rng(1)
    t = rng.integers(0, 2, N)
    score = rng.random(N)
    y = (rng.random(N) < 0.1 + 0.05 * t).astype(int)

    def ours() -> tuple[float, float]:
        curves = uplift_curves(score, treatment=t, outcome=y)
        return curves.auuc, curves.qini_coefficient

    def sklift_curves_and_areas() -> tuple[float, float]:
        x_u, u = sm.uplift_curve(y, score, t)
        x_q, q = sm.qini_curve(y, score, t)
        return auc(x_u, u), auc(x_q, q)

    def sklift_scores() -> tuple[float, float]:
        return sm.uplift_auc_score(y, score, t), sm.qini_auc_score(y, score, t)

    for run in (ours, sklift_curves_and_areas, sklift_scores):
        times = []
        for _ in range(3):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        print(f"{run.__name__}: {min(times):.3f} s (best of 3, {N:,} users)")


if __name__ == "__main__":
    main()
