"""Our uplift and Qini curves and their areas (``behaviorlm.evaluation.uplift``) against scikit-uplift's
(``sklift.metrics``), under the mapping between the two conventions:

* sklift's curves are in users and conversions at the end of each group of tied scores (``x`` = users
  contacted); ours are per user of the population at every ``k``: ``ours(k) * n == sklift(k)``, at every
  ``k`` without ties and at the end of each tie group with them (the counts there do not depend on the
  order inside the group);
* areas: ``auuc == auc(sklift uplift curve) / n**2`` and ``qini == (auc(sklift Qini curve) - n * Q(n) / 2)
  / n**2``; sklift's ``qini_auc_score`` and ``uplift_auc_score`` subtract the same random line and divide
  by the area of sklift's perfect curve above it, a constant of the data set, so they rank scorers as ours.

Skipped without scikit-uplift (0.5.1 calls ``sklearn.utils.extmath.stable_cumsum``, deprecated in
scikit-learn 1.8 and removed in 1.10; importing ``sklift.metrics`` fails there).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import rankdata
from sklearn.metrics import auc

from behaviorlm.evaluation.uplift import uplift_curves

# ImportError, not only ModuleNotFoundError: sklift 0.5.1 fails to import under scikit-learn >= 1.10.
sm = pytest.importorskip("sklift.metrics", exc_type=ImportError)

pytestmark = pytest.mark.filterwarnings("ignore:.*stable_cumsum.*:FutureWarning")

N = 4_000


def _campaign(seed: int, n: int = N) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A randomised campaign with planted uplift: 15 points more conversion for treated users with x > 0,
    5 points less for treated users with x < -1.5. Returns ``x, treatment, outcome, true_uplift``."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    t = rng.integers(0, 2, n)
    tau = 0.15 * (x > 0) - 0.05 * (x < -1.5)
    y = (rng.random(n) < 0.1 + tau * t).astype(int)
    return x, t, y, tau


def _no_tie_scores(seed: int) -> dict[str, np.ndarray]:
    x, _, _, _ = _campaign(seed)
    rng = np.random.default_rng(seed + 100)
    return {"random": rng.random(N), "planted": x + 0.5 * rng.normal(size=N), "reversed": -x}


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("scorer", ["random", "planted", "reversed"])
def test_curves_and_areas_equal_sklift_without_ties(seed: int, scorer: str) -> None:
    _, t, y, _ = _campaign(seed)
    score = _no_tie_scores(seed)[scorer]
    assert len(np.unique(score)) == N
    ours = uplift_curves(score, treatment=t, outcome=y, seed=seed)
    x_u, sk_u = sm.uplift_curve(y, score, t)
    x_q, sk_q = sm.qini_curve(y, score, t)
    np.testing.assert_array_equal(x_u, np.arange(N + 1))
    np.testing.assert_array_equal(x_q, np.arange(N + 1))
    np.testing.assert_allclose(ours.uplift * N, sk_u, rtol=0, atol=1e-9)
    np.testing.assert_allclose(ours.qini * N, sk_q, rtol=0, atol=1e-9)

    assert ours.auuc == pytest.approx(auc(x_u, sk_u) / N**2, rel=0, abs=1e-9)
    random_line = N * sk_q[-1] / 2
    assert ours.qini_coefficient == pytest.approx((auc(x_q, sk_q) - random_line) / N**2, rel=0, abs=1e-9)

    # sklift's normalised scores: (area - random line) / (perfect area - random line).
    x_p, perfect_q = sm.perfect_qini_curve(y, t)
    qini_scale = (auc(x_p, perfect_q) - x_p[-1] * perfect_q[-1] / 2) / N**2
    assert sm.qini_auc_score(y, score, t) == pytest.approx(
        ours.qini_coefficient / qini_scale, rel=0, abs=1e-9
    )
    x_p, perfect_u = sm.perfect_uplift_curve(y, t)
    uplift_line = x_p[-1] * perfect_u[-1] / 2 / N**2
    uplift_scale = auc(x_p, perfect_u) / N**2 - uplift_line
    assert sm.uplift_auc_score(y, score, t) == pytest.approx(
        (ours.auuc - uplift_line) / uplift_scale, rel=0, abs=1e-9
    )


@pytest.mark.parametrize("decimals", [0, 1])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_with_ties_the_curves_agree_at_the_end_of_each_tie_group(decimals: int, seed: int) -> None:
    x, t, y, _ = _campaign(0)
    score = np.round(x, decimals)
    ours = uplift_curves(score, treatment=t, outcome=y, seed=seed)
    x_u, sk_u = sm.uplift_curve(y, score, t)
    x_q, sk_q = sm.qini_curve(y, score, t)
    assert len(x_u) < N // 10  # few thresholds: the groups are large
    np.testing.assert_allclose(ours.uplift[x_u] * N, sk_u, rtol=0, atol=1e-9)
    np.testing.assert_allclose(ours.qini[x_q] * N, sk_q, rtol=0, atol=1e-9)


@pytest.mark.parametrize("decimals", [0, 1])
def test_with_ties_the_areas_equal_sklift_for_every_seed(decimals: int) -> None:
    """Inside a tie group our curves follow one seeded order (budgets read them there); the areas draw a
    chord across each group, as sklift does, so they equal sklift's whatever the seed."""
    x, t, y, _ = _campaign(0)
    score = np.round(x, decimals)  # 7 and 61 groups
    x_u, sk_u = sm.uplift_curve(y, score, t)
    x_q, sk_q = sm.qini_curve(y, score, t)
    sk_auuc = auc(x_u, sk_u) / N**2
    sk_qini = (auc(x_q, sk_q) - N * sk_q[-1] / 2) / N**2
    for seed in range(5):
        ours = uplift_curves(score, treatment=t, outcome=y, seed=seed)
        assert ours.auuc == pytest.approx(sk_auuc, rel=0, abs=1e-12)
        assert ours.qini_coefficient == pytest.approx(sk_qini, rel=0, abs=1e-12)
    # The curves themselves do follow the seed inside a group (what a budget reads).
    a, b = (uplift_curves(score, treatment=t, outcome=y, seed=s) for s in (0, 1))
    assert not np.array_equal(a.uplift, b.uplift)
    np.testing.assert_array_equal(a.uplift[a.group_end], b.uplift[b.group_end])


def test_qini_ranks_scorers_as_sklift_does() -> None:
    x, t, y, tau = _campaign(5)
    rng = np.random.default_rng(7)
    scorers = {
        "truth + tiny noise": tau + 1e-6 * rng.normal(size=N),
        "x": x,
        "x, noisy": x + 1.0 * rng.normal(size=N),
        "x, very noisy": x + 3.0 * rng.normal(size=N),
        "random": rng.random(N),
        "-x": -x,
        "x rounded (ties)": np.round(x, 1),
    }
    ours = np.array([uplift_curves(s, treatment=t, outcome=y).qini_coefficient for s in scorers.values()])
    theirs = np.array([sm.qini_auc_score(y, s, t) for s in scorers.values()])
    np.testing.assert_array_equal(rankdata(-ours), rankdata(-theirs))
    assert len(set(rankdata(-ours))) == len(scorers)  # no tied summaries: the ranking is a real order
    # The planted signal is found: x beats noise beats random beats -x, in both.
    order = list(np.array(list(scorers))[np.argsort(-ours)])
    assert order.index("x") < order.index("x, very noisy") < order.index("random") < order.index("-x")
