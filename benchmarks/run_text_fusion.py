"""Does text help next-item prediction? Behaviour-only, text-only and fused ranking, per history-length bucket.

Leave-one-out split, full ranking over the catalogue, seen items masked (the project's protocol). Three
scorers of each user's test item:

* behaviour-only: the behaviour Transformer (early stopping on validation NDCG@10);
* text-only: behaviorlm.profiling.fusion.TextInterestRecommender -- the cosine between the user's text
  interest and each item's text vector (all-MiniLM-L6-v2 embeddings, cached in the dataset's store);
* fused: w_text · z(text) + (1 - w_text) · z(behaviour), w_text from 0, 0.05, ..., 1 by validation
  NDCG@10 (the test targets are read once, after the choice).

Texts: amazon-fashion has review texts and no item descriptions -- an item's text vector is the mean of
the reviews written about it in training events, a user's interest adds the reviews they wrote in training
events; ml-100k has no user texts but item descriptions (title, year, genres). No text of a validation or
test event is read. Results are reported over all test users and per bucket of training-history length
(1-2, 3-5, 6-20, >20 events), with the number of users in each bucket. Every ML-100k user has 18 or
more training events, so short histories are also simulated there: every user's history (for validation
and test alike) is cut to its last k = 1, 2, 5, 20 events, the models are not refitted and the text weight
is chosen again on the cut validation histories (models "...@last-k"). Appends records with models
"fusion-behaviour-only", "fusion-text-only" and "fusion-fused" to benchmarks/results.jsonl; the table is
in docs/benchmarks.md (benchmarks/make_tables.py).

    BEHAVIORLM_DATA_DIR=../shared/data .venv/bin/python benchmarks/run_text_fusion.py
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from behaviorlm.data.datasets import open_dataset_store
from behaviorlm.data.sequences import Interactions
from behaviorlm.data.splits import leave_one_out
from behaviorlm.data.store import StoreError
from behaviorlm.data.text import TextEmbedder, event_texts, item_texts, text_vectors
from behaviorlm.estimator import json_params
from behaviorlm.evaluation.benchmark import append_jsonl, provenance
from behaviorlm.evaluation.ranking import RankingValidation, evaluate_ranking
from behaviorlm.models.transformer import BehaviorTransformer
from behaviorlm.profiling.fusion import (
    FusedRecommender,
    TextInterestRecommender,
    evaluate_by_history_length,
    prefix_event_index,
)

RESULTS = Path(__file__).resolve().parent / "results.jsonl"

DATASETS: dict[str, dict[str, Any]] = {
    # 31 items and at most 16 events per user: a short window. Other settings are the defaults.
    "amazon-fashion": {"reviews": True, "descriptions": False, "transformer": {"max_len": 20}},
    # The validation-chosen ML-100k settings of benchmarks/run_sequential.py.
    "ml-100k": {
        "reviews": False,
        "descriptions": True,
        "transformer": {"max_len": 200, "batch_size": 32, "dropout": 0.2, "d_model": 128},
        # Every ML-100k user has 18 or more training events, so short histories are simulated by cutting.
        "truncate": (1, 2, 5, 20),
    },
}


def run(name: str, *, threads: int, truncate: bool, out: Path) -> None:
    spec = DATASETS[name]
    embedder = TextEmbedder(threads=threads)
    try:
        store, cache = open_dataset_store(name), True
    except StoreError:
        # Another process has the cached store open: read it read-only and embed without caching.
        store, cache = open_dataset_store(name, read_only=True), False
    with store:
        data = store.interactions()
        split = leave_one_out(data)
        started = time.perf_counter()
        reviews = descriptions = None
        catalogue = {"events": data.n_events, "items": data.n_items}
        if spec["reviews"]:
            # Only training events' texts: the prefix of each user's events that leave-one-out keeps.
            train_events = prefix_event_index(data, split.train)
            all_texts = event_texts(store, data)
            catalogue = {
                "events": data.n_events,
                "items": data.n_items,
                "distinct_review_texts": len({t for t in all_texts if t.strip()}),
            }
            reviews = text_vectors(
                [all_texts[i] for i in train_events], store=store if cache else None, embedder=embedder
            )
        if spec["descriptions"]:
            descriptions = text_vectors(
                item_texts(store, [str(i) for i in data.item_ids]),
                store=store if cache else None,
                embedder=embedder,
            )
        embed_seconds = time.perf_counter() - started
    lengths = split.train.lengths()

    started = time.perf_counter()
    behaviour = BehaviorTransformer.from_params(spec["transformer"]).fit(
        split.train, valid=RankingValidation(split.train, split.valid)
    )
    behaviour_seconds = time.perf_counter() - started
    started = time.perf_counter()
    text = TextInterestRecommender().fit(
        split.train, review_vectors=reviews, item_description_vectors=descriptions
    )
    text_seconds = time.perf_counter() - started + embed_seconds
    started = time.perf_counter()
    fused = FusedRecommender(behaviour=behaviour, text=text).fit(
        split.train, valid=RankingValidation(split.train, split.valid)
    )
    fusion_seconds = time.perf_counter() - started

    sources = ["reviews written in training events"] * spec["reviews"] + ["item descriptions"] * spec[
        "descriptions"
    ]
    base_protocol = {
        "evaluated_on": "test",
        "split_params": split.protocol,
        "text_sources": sources,
        "text_model": embedder.name,
        "weight_selection": "text weight from 0, 0.05, ..., 1 by validation NDCG@10",
        "torch_threads": threads,
        "data": catalogue,
    }
    behaviour_params = {"model": "transformer", **json_params(behaviour)}
    text_params = {"model": "text-interest", **json_params(text)}

    def write(
        model_name: str, model: Any, seconds: float, params: dict, results: dict, protocol: dict
    ) -> None:
        overall = results["all"]
        metrics = dict(overall.metrics)
        for label, result in results.items():
            if label != "all":
                metrics[f"{label}/users"] = 0 if result is None else result.n_users
                if result is not None:
                    metrics[f"{label}/ndcg@10"] = result.metrics["ndcg@10"]
                    metrics[f"{label}/hr@10"] = result.metrics["hr@10"]
        append_jsonl(
            out,
            {
                "dataset": name,
                "model": model_name,
                "params": params,
                "protocol": {**overall.protocol, **base_protocol, **protocol},
                "metrics": metrics,
                "n_users": overall.n_users,
                "train_seconds": seconds,
                "eval_seconds": sum(r.eval_seconds for r in results.values() if r is not None),
                "training": behaviour.training_summary() if model is behaviour else {},
                **provenance(),
            },
        )
        cells = "  ".join(
            f"{label} "
            + ("–" if r is None else f"{r.metrics['ndcg@10']:.4f}/{r.metrics['hr@10']:.4f} ({r.n_users})")
            for label, r in results.items()
        )
        print(f"{name:15s} {model_name:28s} NDCG@10/HR@10 (users): {cells}  {seconds:.0f}s", flush=True)

    rows = (
        ("fusion-behaviour-only", behaviour, behaviour_seconds, behaviour_params),
        ("fusion-text-only", text, text_seconds, text_params),
        ("fusion-fused", fused, behaviour_seconds + text_seconds + fusion_seconds, _fusion_params(fused)),
    )
    for model_name, model, seconds, params in rows:
        results = evaluate_by_history_length(
            model, history=split.test_history, targets=split.test, lengths=lengths, ks=(10,)
        )
        protocol = {"history": "train+valid", "buckets": "users by number of training events"}
        write(model_name, model, seconds, params, results, protocol)
    print(f"{name}: text weight {fused.selection_.text_weight} chosen on validation", flush=True)

    # Short histories on demand: every user's history cut to its last k events, for validation (the weight
    # is chosen again for each k) and test alike. The models are not refitted.
    for k in spec.get("truncate", ()) if truncate else ():
        short_train, short_history = last_events(split.train, k), last_events(split.test_history, k)
        started = time.perf_counter()
        fused_k = FusedRecommender(behaviour=behaviour, text=text).fit(
            short_train, valid=RankingValidation(short_train, split.valid)
        )
        seconds = time.perf_counter() - started
        protocol = {"history": f"last {k} events of train+valid", "truncated_to": k}
        for model_name, model, params in (
            ("fusion-behaviour-only", behaviour, behaviour_params),
            ("fusion-text-only", text, text_params),
            ("fusion-fused", fused_k, _fusion_params(fused_k)),
        ):
            result = evaluate_ranking(model, history=short_history, targets=split.test, ks=(10,))
            write(f"{model_name}@last-{k}", model, seconds, params, {"all": result}, protocol)
        print(f"{name}: last {k} events: text weight {fused_k.selection_.text_weight}", flush=True)


def _fusion_params(fused: FusedRecommender) -> dict[str, Any]:
    return {
        "text_weight": fused.selection_.text_weight,
        "validation_ndcg@10_by_text_weight": {str(w): v for w, v in fused.selection_.validation.items()},
    }


def last_events(interactions: Interactions, k: int) -> Interactions:
    """Each user's last ``k`` events (all of them when there are fewer)."""
    position_from_end = np.repeat(interactions.user_ptr[1:], interactions.lengths()) - np.arange(
        interactions.n_events
    )
    return interactions.filter_events(position_from_end <= k)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument(
        "--no-truncate",
        action="store_true",
        help="skip the cut-history rows (histories cut to the last k events)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    torch.set_num_threads(args.threads)
    for name in args.datasets:
        run(name, threads=args.threads, truncate=not args.no_truncate, out=args.out)


if __name__ == "__main__":
    main()
