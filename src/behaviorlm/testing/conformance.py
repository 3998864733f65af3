"""Conformance checks every recommender must pass (house rule 4), shipped so plug-in models can run them.

Each ``check_*`` function takes a zero-argument factory returning a fresh, unfitted model and the data
to use, fits what it needs, and raises :class:`AssertionError` naming the check and by how much it
failed. :func:`check_recommender` runs them all. In a pytest suite either call
:func:`check_recommender` once per model or parametrize over the individual checks::

    from behaviorlm.testing import check_recommender
    def test_my_model_conforms():
        check_recommender(lambda: MyModel(seed=0), must_beat="pop")

The checks:

* :func:`check_unfitted_raises` — ``score``/``recommend`` before ``fit`` raise a ``RuntimeError``.
* :func:`check_params` — constructor arguments are JSON-serializable, rebuild an equal model, and
  ``fit`` returns ``self`` without changing them.
* :func:`check_score_contract` — ``float32 [len(users), n_items]``, finite, rows independent of the
  batch they are scored in, and computed from the history the batch gives.
* :func:`check_deterministic` — two fits give identical scores.
* :func:`check_save_load_round_trip` — a saved and reloaded model scores and recommends identically.
* :func:`check_recommend_contract` — ``k`` distinct unseen items per user, sorted by score.
* :func:`check_beats_reference` — HR@10 on held-out last events of
  :func:`~behaviorlm.testing.synthetic.planted_pattern_interactions` beats a reference model.

Models that do not rank items (task heads, the pretrainer, the purchase GNN) pass :func:`check_model`: the
same parameter, unfitted, determinism and save/load checks over whatever they predict.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from behaviorlm.data.sequences import Interactions
from behaviorlm.estimator import json_params
from behaviorlm.models.base import Recommender, ScoringBatch
from behaviorlm.models.registry import load_model, model_registry
from behaviorlm.testing.synthetic import HeldOutLastEvent, hold_out_last_event, planted_pattern_interactions

ModelFactory = Callable[[], Recommender]


def _require(condition: bool, message: str) -> None:
    # Explicit raise rather than ``assert`` so the checks also run under ``python -O``.
    if not condition:
        raise AssertionError(message)


def _describe(model: Recommender) -> str:
    params = ", ".join(f"{k}={v!r}" for k, v in model.get_params().items())
    return f"{type(model).__name__}({params})"


def _score_all(model: Recommender, history: Interactions) -> torch.Tensor:
    return model.score(ScoringBatch(users=np.arange(history.n_users), history=history)).cpu()


def _first_difference(a: torch.Tensor, b: torch.Tensor) -> str:
    differs = ~((a == b) | (torch.isnan(a) & torch.isnan(b)))
    if not bool(differs.any()):
        return "no score differs"
    row, col = (int(i) for i in torch.nonzero(differs)[0])
    finite = torch.isfinite(a) & torch.isfinite(b)
    max_abs = float((a - b)[finite].abs().max()) if bool(finite.any()) else float("nan")
    return (
        f"{int(differs.sum())} of {a.numel()} scores differ, first at user {row}, item {col} "
        f"({float(a[row, col])!r} vs {float(b[row, col])!r}); max abs difference {max_abs:.3g}"
    )


def hit_rate_at_k(model: Recommender, held_out: HeldOutLastEvent, *, k: int = 10) -> float:
    """Share of held-out users whose target is in ``model.recommend(users, k=k)`` (seen items excluded).

    ``model`` must be fitted on ``held_out.train``. Full ranking over all items, one target per user.
    """
    recommendations = model.recommend(held_out.users, k=k)
    hits = (recommendations.items == held_out.targets[:, None]).any(axis=1)
    return float(hits.mean())


# ---------------------------------------------------------------------------------------- checks
def check_unfitted_raises(make_model: ModelFactory, *, data: Interactions) -> None:
    """``score`` and ``recommend`` on an unfitted model raise ``RuntimeError`` (not an obscure error)."""
    for action in ("score", "recommend"):
        model = make_model()
        try:
            if action == "score":
                model.score(ScoringBatch(users=np.arange(2), history=data))
            else:
                model.recommend(np.arange(2), k=3)
        except RuntimeError:
            continue
        except Exception as error:
            raise AssertionError(
                f"unfitted check failed: {action}() on unfitted {_describe(model)} raised "
                f"{type(error).__name__}: {error}; expected RuntimeError saying to call fit first"
            ) from error
        raise AssertionError(
            f"unfitted check failed: {action}() on unfitted {_describe(model)} did not raise"
        )


def check_params(make_model: ModelFactory, *, data: Interactions) -> None:
    """Constructor arguments are JSON-serializable, rebuild an equal model; ``fit`` returns ``self``."""
    model = make_model()
    params = json_params(model)  # as model.json stores them (training options as a plain object)
    try:
        round_tripped = json.loads(json.dumps(params))
    except TypeError as error:
        raise AssertionError(
            f"params check failed: {type(model).__name__} params {params!r}: {error}"
        ) from error
    _require(
        round_tripped == params,
        f"params check failed: {params!r} changes through JSON into {round_tripped!r}",
    )
    rebuilt = json_params(type(model).from_params(params))
    _require(
        rebuilt == params,
        f"params check failed: {type(model).__name__}(**{params!r}) has params {rebuilt!r}; "
        f"the constructor must store exactly its arguments",
    )
    fitted = model.fit(data)
    _require(fitted is model, f"params check failed: {_describe(model)}.fit() must return self")
    _require(
        json_params(model) == params,
        f"params check failed: fit changed the parameters from {params!r} to {json_params(model)!r}; "
        f"learned state must end in '_'",
    )


def check_score_contract(
    make_model: ModelFactory, *, data: Interactions, allow_neg_inf: bool = False
) -> None:
    """Scores are ``float32 [len(users), n_items]``, finite, batch-independent, and read ``batch.history``.

    With ``allow_neg_inf`` a model may score ``-inf`` (for a model that documents items it can never
    recommend); NaN and ``+inf`` are never allowed.
    """
    held_out = hold_out_last_event(data)
    model = make_model().fit(held_out.train)
    name = _describe(model)
    scores = _score_all(model, held_out.train)
    expected_shape = (held_out.train.n_users, held_out.train.n_items)
    _require(
        isinstance(scores, torch.Tensor),
        f"score check failed: {name}.score returned {type(scores).__name__}, expected torch.Tensor",
    )
    _require(
        tuple(scores.shape) == expected_shape,
        f"score check failed: {name}.score shape {tuple(scores.shape)}, expected {expected_shape}",
    )
    _require(
        scores.dtype == torch.float32,
        f"score check failed: {name}.score dtype {scores.dtype}, expected torch.float32",
    )
    bad = torch.isnan(scores) | (scores == torch.inf)
    if not allow_neg_inf:
        bad |= scores == -torch.inf
    _require(
        not bool(bad.any()),
        f"score check failed: {name}.score has {int(bad.sum())} non-finite values of {scores.numel()}"
        + ("" if allow_neg_inf else " (-inf is allowed only with allow_neg_inf=True)"),
    )

    subset = np.array([7, 3, 3, 0, held_out.train.n_users - 1])
    subset_scores = model.score(ScoringBatch(users=subset, history=held_out.train)).cpu()
    close = torch.isclose(subset_scores, scores[subset], rtol=1e-5, atol=1e-6) | (
        subset_scores == scores[subset]
    )
    if not bool(close.all()):
        raise AssertionError(
            f"score check failed: {name} scores users {subset.tolist()} differently alone than in the full "
            f"batch; {_first_difference(subset_scores, scores[subset])}"
        )

    # Scoring with the full data (train + held-out events) as history must work in the same index space.
    with_targets = _score_all(model, data)
    _require(
        tuple(with_targets.shape) == (data.n_users, data.n_items),
        f"score check failed: {name}.score with a longer history has shape {tuple(with_targets.shape)}, "
        f"expected {(data.n_users, data.n_items)}",
    )


def check_deterministic(make_model: ModelFactory, *, data: Interactions) -> None:
    """Two models from the factory, fitted on the same data, give identical scores."""
    first = make_model().fit(data)
    second = make_model().fit(data)
    scores_first, scores_second = _score_all(first, data), _score_all(second, data)
    if not torch.equal(scores_first, scores_second):
        raise AssertionError(
            f"determinism check failed: two fits of {_describe(first)} gave different scores; "
            f"{_first_difference(scores_first, scores_second)}"
        )


def check_save_load_round_trip(make_model: ModelFactory, *, data: Interactions) -> None:
    """``save`` then :func:`~behaviorlm.models.registry.load_model` gives a model that scores identically."""
    model = make_model().fit(data)
    name = _describe(model)
    users = np.arange(data.n_users)
    with tempfile.TemporaryDirectory() as directory:
        model.save(directory)
        loaded = load_model(directory)
    _require(
        type(loaded) is type(model),
        f"save/load check failed: saved {name}, loaded a {type(loaded).__name__}",
    )
    _require(
        loaded.get_params() == model.get_params(),
        f"save/load check failed: params {model.get_params()!r} came back as {loaded.get_params()!r}",
    )
    before, after = _score_all(model, data), _score_all(loaded, data)
    if not torch.equal(before, after):
        raise AssertionError(
            f"save/load check failed: {name} scores differently after loading; {_first_difference(before, after)}"
        )
    recs_before, recs_after = model.recommend(users, k=10), loaded.recommend(users, k=10)
    same_items = recs_before.items == recs_after.items
    _require(
        bool(same_items.all()),
        f"save/load check failed: {name} recommends differently after loading for "
        f"{int((~same_items.all(axis=1)).sum())} of {len(users)} users",
    )


def check_recommend_contract(make_model: ModelFactory, *, data: Interactions, k: int = 10) -> None:
    """``recommend`` returns ``k`` distinct unseen items per user, best first, with their scores."""
    held_out = hold_out_last_event(data)
    model = make_model().fit(held_out.train)
    name = _describe(model)
    users = np.arange(data.n_users)
    for history in (held_out.train, data):
        label = "training history" if history is held_out.train else "a longer history"
        recs = model.recommend(users, k=k, history=history)
        _require(
            recs.items.shape == (len(users), k) and recs.scores.shape == (len(users), k),
            f"recommend check failed ({label}): {name} returned items {recs.items.shape} and scores "
            f"{recs.scores.shape}, expected {(len(users), k)}",
        )
        for user in users:
            items = recs.items[user]
            seen = set(history.history(user).tolist())
            _require(
                len(set(items.tolist())) == k,
                f"recommend check failed ({label}): user {user} got repeated items {items.tolist()}",
            )
            shown_seen = sorted(seen.intersection(items.tolist()))
            _require(
                not shown_seen,
                f"recommend check failed ({label}): user {user} was recommended already-seen items {shown_seen}",
            )
            row_scores = recs.scores[user]
            _require(
                bool((row_scores[1:] <= row_scores[:-1]).all()),
                f"recommend check failed ({label}): user {user} scores are not sorted best first: "
                f"{row_scores.tolist()}",
            )
        raw = model.score(ScoringBatch(users=users, history=history)).cpu()
        gathered = torch.gather(raw, 1, torch.from_numpy(recs.items)).numpy()
        if not np.array_equal(gathered, recs.scores):
            raise AssertionError(
                f"recommend check failed ({label}): returned scores differ from score() for the same items "
                f"in {int((gathered != recs.scores).sum())} of {gathered.size} places"
            )
        unseen_scores = raw.clone()
        unseen_scores[
            torch.from_numpy(np.repeat(users, history.lengths())), torch.from_numpy(history.items)
        ] = -torch.inf
        kth_best = torch.topk(unseen_scores, k, dim=1).values[:, -1].numpy()
        below = np.flatnonzero(~(recs.scores[:, -1] >= kth_best))
        if len(below):
            raise AssertionError(
                f"recommend check failed ({label}): for {len(below)} users (first: {int(below[0])}) the k-th "
                f"recommendation scores {recs.scores[below[0], -1]!r}, below the k-th best unseen item's "
                f"{kth_best[below[0]]!r}"
            )


def check_beats_reference(
    make_model: ModelFactory, *, data: Interactions, reference: str = "pop", k: int = 10
) -> tuple[float, float]:
    """HR@``k`` on each user's held-out last event beats the registered ``reference`` model's.

    Leave-last-out on ``data`` (users with at least two events), full ranking over all items, seen
    items excluded. The reference is built with its default arguments from the model registry. Returns
    ``(model_hit_rate, reference_hit_rate)``.
    """
    registry = model_registry()
    if reference not in registry:
        raise ValueError(f"unknown reference model {reference!r}; registered: {sorted(registry)}")
    held_out = hold_out_last_event(data)
    model = make_model().fit(held_out.train)
    reference_model = registry[reference]().fit(held_out.train)
    model_hr = hit_rate_at_k(model, held_out, k=k)
    reference_hr = hit_rate_at_k(reference_model, held_out, k=k)
    _require(
        model_hr > reference_hr,
        f"beats-reference check failed: {_describe(model)} HR@{k}={model_hr:.3f} does not beat "
        f"{_describe(reference_model)} HR@{k}={reference_hr:.3f} (difference {model_hr - reference_hr:+.3f}) "
        f"on {len(held_out.users)} held-out last events",
    )
    return model_hr, reference_hr


def check_recommender(
    make_model: ModelFactory,
    *,
    must_beat: str | None = "pop",
    data: Interactions | None = None,
    allow_neg_inf: bool = False,
) -> dict[str, float]:
    """Run every conformance check on the models ``make_model`` builds; raise on the first failure.

    ``must_beat`` names the registered model whose HR@10 must be beaten (``"pop"`` for personalised
    models, ``"random"`` for popularity, ``None`` to skip, e.g. for the random model itself). ``data``
    defaults to :func:`planted_pattern_interactions` with its default arguments. Returns the hit rates
    measured (``{"hr@10": ..., "reference_hr@10": ...}``, empty when ``must_beat`` is ``None``).
    """
    data = planted_pattern_interactions() if data is None else data
    check_unfitted_raises(make_model, data=data)
    check_params(make_model, data=data)
    check_score_contract(make_model, data=data, allow_neg_inf=allow_neg_inf)
    check_deterministic(make_model, data=data)
    check_save_load_round_trip(make_model, data=data)
    check_recommend_contract(make_model, data=data)
    if must_beat is None:
        return {}
    model_hr, reference_hr = check_beats_reference(make_model, data=data, reference=must_beat)
    return {"hr@10": model_hr, "reference_hr@10": reference_hr}


def check_model(
    make_model: Callable[[], Any],
    *,
    fit: Callable[[Any], Any],
    predict: Callable[[Any], np.ndarray],
) -> None:
    """The checks every saved model passes, whatever it predicts (``predict(model)`` gives its output on
    fixed data; ``fit(model)`` fits it and returns what ``fit`` returned):

    * parameters: ``sklearn.base.clone`` rebuilds an equal unfitted model; ``fit`` returns the model itself
      and leaves its parameters unchanged;
    * unfitted: ``predict`` before ``fit`` raises (``RuntimeError`` or ``ValueError``), never a wrong answer;
    * deterministic: two fits of fresh models give identical predictions;
    * save/load: :func:`~behaviorlm.models.registry.load_model` reads what ``save`` wrote back to the same
      class and parameters, predicting identically.
    """
    from sklearn.base import clone

    model = make_model()
    name = type(model).__name__
    params = json.dumps(json_params(model), sort_keys=True, default=str)
    twin = clone(model)
    _require(
        json.dumps(json_params(twin), sort_keys=True, default=str) == params,
        f"params check failed: clone({name}) has other parameters",
    )
    try:
        predict(make_model())
    except (RuntimeError, ValueError):
        pass
    else:
        raise AssertionError(f"unfitted check failed: {name} predicted before fit")
    _require(fit(model) is model, f"params check failed: {name}.fit did not return the model itself")
    _require(
        json.dumps(json_params(model), sort_keys=True, default=str) == params,
        f"params check failed: fit changed {name}'s parameters",
    )
    first = np.asarray(predict(model))
    again = make_model()
    fit(again)
    _require(
        np.array_equal(np.asarray(predict(again)), first),
        f"determinism check failed: two fits of {name} predict differently",
    )
    with tempfile.TemporaryDirectory() as tmp:
        model.save(tmp)
        loaded = load_model(tmp)
    _require(
        type(loaded) is type(model), f"save/load check failed: {name} came back as {type(loaded).__name__}"
    )
    _require(
        json.dumps(json_params(loaded), sort_keys=True, default=str) == params,
        f"save/load check failed: {name}'s parameters changed",
    )
    _require(
        np.array_equal(np.asarray(predict(loaded)), first),
        f"save/load check failed: the reloaded {name} predicts differently",
    )
