"""Sequence surprisal: a planted out-of-pattern sequence is more surprising than in-pattern ones under a tiny
trained model, and the rank-average detector combines it with the isolation forest."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from behaviorlm.data.sequences import Interactions
from behaviorlm.models.transformer import BehaviorTransformer
from behaviorlm.profiling.anomalies import ForestSurprisalDetector, percentile_ranks, sequence_surprisal

N_ITEMS = 20
TINY = {"d_model": 32, "n_layers": 1, "n_heads": 2, "dropout": 0.0, "max_len": 12, "epochs": 40, "lr": 1e-2}


def walkers_and_a_random_user() -> Interactions:
    """60 users walk the catalogue one item at a time (item + 1); user "zz-random" visits random items; user
    "zz-single" has one event."""
    rng = np.random.default_rng(0)
    users, items, times = [], [], []
    for u in range(60):
        start = int(rng.integers(N_ITEMS))
        for t in range(12):
            users.append(f"u{u:02d}")
            items.append((start + t) % N_ITEMS)
            times.append(1_000 + 60 * t)
    for t, item in enumerate(rng.permutation(N_ITEMS)[:12]):
        users.append("zz-random")
        items.append(int(item))
        times.append(1_000 + 60 * t)
    users.append("zz-single")
    items.append(3)
    times.append(1_000)
    return Interactions.from_events(
        user_ids=np.array(users),
        item_ids=np.array(items),
        timestamps=np.array(times),
        item_universe=np.arange(N_ITEMS),
    )


@pytest.fixture(scope="module")
def fitted() -> tuple[BehaviorTransformer, Interactions]:
    torch.set_num_threads(1)
    data = walkers_and_a_random_user()
    return BehaviorTransformer.from_params(TINY).fit(data), data


def test_out_of_pattern_sequence_is_the_most_surprising(fitted) -> None:
    model, data = fitted
    surprisal = sequence_surprisal(model, data, batch_size=7)  # several batches
    random_user, single = data.n_users - 2, data.n_users - 1
    walkers = np.arange(data.n_users - 2)
    assert surprisal.events[walkers].tolist() == [11] * 60 and surprisal.events[random_user] == 11
    # The walk is learnt: each next item costs well under a nat; a random item costs about log(20) ~ 3.
    assert surprisal.mean[walkers].max() < 0.5
    assert surprisal.mean[random_user] > 2.0 > surprisal.mean[walkers].max()
    assert surprisal.max[random_user] >= surprisal.mean[random_user]
    assert (
        surprisal.events[single] == 0 and np.isnan(surprisal.mean[single]) and np.isnan(surprisal.max[single])
    )
    # By hand for one walker: the model's log-softmax over the catalogue at each of its 11 positions.
    from behaviorlm.models.sequential import SequenceTensors

    window = SequenceTensors(
        data, np.array([0]), length=model.max_len, n_buckets=model.n_time_buckets, with_targets=True
    )
    with torch.no_grad():
        hidden = model.net_(window.items, window.types, window.buckets)[0]
        log_p = torch.log_softmax(hidden @ model.net_.item_table().T, dim=1)
    real = window.targets[0] >= 0
    nll = -log_p[real].gather(1, window.targets[0][real][:, None])[:, 0].numpy()
    assert len(nll) == 11
    assert surprisal.mean[0] == pytest.approx(nll.mean(), rel=1e-5)
    assert surprisal.max[0] == pytest.approx(nll.max(), rel=1e-5)


def test_percentile_ranks_by_hand() -> None:
    reference = np.array([1.0, 2.0, 2.0, 4.0, np.nan])
    ranks = percentile_ranks(reference, np.array([0.0, 2.0, 3.0, 5.0, np.nan]))
    # 4 finite references: below 0 -> 0; at 2 -> (1 below + 3 at or below) / 8; 3 -> 3/4; above all -> 1.
    np.testing.assert_allclose(ranks, [0.0, 0.5, 0.75, 1.0, 0.5])


def test_combined_detector_rank_averages_forest_and_surprisal(fitted) -> None:
    model, data = fitted
    detector = ForestSurprisalDetector(model=model, seed=0).fit(data)
    forest_ranks = percentile_ranks(detector.forest_.scores_, detector.forest_.scores_)
    surprisal_ranks = percentile_ranks(detector.surprisal_.mean, detector.surprisal_.mean)
    np.testing.assert_allclose(detector.scores_, (forest_ranks + surprisal_ranks) / 2)
    random_user = data.n_users - 2
    assert surprisal_ranks[random_user] == pytest.approx(1 - 0.5 / 61)  # the top of 61 finite values
    assert surprisal_ranks[data.n_users - 1] == 0.5  # one event: neutral
    np.testing.assert_allclose(detector.score(data), detector.scores_)
    with pytest.raises(ValueError, match="statistic"):
        ForestSurprisalDetector(model=model, statistic="median").fit(data)
