"""The bot planter: styles, counts, ids, time range, replay fidelity, untouched real users."""

from __future__ import annotations

import numpy as np
import pytest
from tests.profiling.test_anomalies import shoppers

from behaviorlm.testing.bots import BOT_STYLES, plant_bots


def test_planted_bots_have_their_style_and_leave_real_users_untouched() -> None:
    real = shoppers(n_users=300, seed=1)
    planted = plant_bots(real, per_style=5, seed=3)
    data = planted.interactions
    assert data.n_users == real.n_users + 5 * len(BOT_STYLES)
    assert {s: int((planted.style == s).sum()) for s in BOT_STYLES} == dict.fromkeys(BOT_STYLES, 5)
    assert all(str(u).startswith(f"bot-{s}-") for u, s in zip(data.user_ids, planted.style, strict=True) if s)
    assert data.timestamps.min() >= real.timestamps.min()
    lengths = data.lengths()
    vocab = data.event_type_vocab
    for u in np.flatnonzero(planted.style == ""):
        r = int(np.flatnonzero(real.user_ids == data.user_ids[u])[0])
        lo, hi = real.user_ptr[r], real.user_ptr[r + 1]
        a, b = data.user_ptr[u], data.user_ptr[u + 1]
        np.testing.assert_array_equal(data.items[a:b], real.items[lo:hi])
        np.testing.assert_array_equal(data.timestamps[a:b], real.timestamps[lo:hi])
    for u in np.flatnonzero(planted.style == "cart_stuffer"):
        a, b = data.user_ptr[u], data.user_ptr[u + 1]
        assert {vocab[t] for t in data.event_types[a:b]} == {"cart"}
    for u in np.flatnonzero(planted.style == "replay"):
        a, b = data.user_ptr[u], data.user_ptr[u + 1]
        assert lengths[u] >= 3
        gaps = np.diff(data.timestamps[a:b])
        # Some real user has exactly these items with exactly these gaps.
        found = False
        for r in range(real.n_users):
            lo, hi = real.user_ptr[r], real.user_ptr[r + 1]
            if hi - lo == b - a and np.array_equal(real.items[lo:hi], data.items[a:b]):
                found |= np.array_equal(np.diff(real.timestamps[lo:hi]), gaps)
        assert found


def test_bad_requests_are_clear() -> None:
    real = shoppers(n_users=50)
    with pytest.raises(ValueError, match="unknown bot styles"):
        plant_bots(real, styles=("spammer",))
    renamed = plant_bots(real, per_style=1).interactions
    with pytest.raises(ValueError, match="already has users named bot-"):
        plant_bots(renamed)
