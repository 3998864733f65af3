"""Will this user buy in the next 24 hours? Boosting on behaviour features vs the behaviour Transformer.

Protocol (the same daily cutoffs as run_purchase_gnn.py, issue 22): a snapshot at each cutoff takes every
user with an event before it; the label is a purchase in the 24 hours after it; everything a model reads
comes from events before the cutoff. The first cutoffs train, the next two validate (early stopping,
logistic regularisation), the last two test. Models:

* gradient boosting and logistic regression on the user's behaviour features at the cutoff (recency,
  frequency, tenure, active days, events in the last 7 / 30 days, recent share, mean gap, breadth,
  purchase and cart shares: ``behaviorlm.data.user_features.USER_FEATURES``, computed at the cutoff), and
  the library's ``PurchasePropensity`` (``purchase-propensity``; until 2026-12-04 recorded as
  ``logistic-regression-recent-hours``): a logistic regression with each behaviour's count in the last
  3 / 12 / 24 / 48 hours added;
* the behaviour Transformer with a ``SequenceClassifier`` head over the user's last 50 events before the
  cutoff, from scratch and from masked-behaviour pretraining (``MaskedBehaviorPretrainer`` on every user's
  events before the first test cutoff, no labels), ``--seeds`` seeds each; the classifier also reads the
  time from the user's last event to the cutoff (``SequenceLabels.as_of``; ``--ablation`` adds the same
  model without it, ``transformer-classifier-no-time``);
* a hybrid: gradient boosting on the features plus the Transformer's probability (the Transformer trained
  on the training snapshots, the hybrid's boosting on the validation snapshots, so neither sees its own
  training labels through the other);
* the classifier with the recent-hours counts as side features (``SequenceLabels.features``, projected
  into its last hidden state: ``transformer-classifier-recent-hours``);
* a stacked hybrid (``hybrid-logistic-transformer``): the recent-hours logistic regression with the
  Transformer's logit as one more feature, fitted on the training snapshots with out-of-fold Transformer
  probabilities (3 folds by user), C chosen on validation.

Test ROC-AUC and PR-AUC, and the 95% paired-bootstrap interval of each learned model's ROC-AUC minus
gradient boosting's. Records go to benchmarks/results.jsonl with dataset "taobao-9days-user".

    BEHAVIORLM_DATA_DIR=../shared/data OMP_NUM_THREADS=1 taskset -c 0 .venv/bin/python benchmarks/run_purchase_users.py
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from behaviorlm.data.datasets import open_dataset_store
from behaviorlm.data.purchase import purchase_cutoffs, store_time_range
from behaviorlm.data.sequences import Interactions
from behaviorlm.evaluation import metrics
from behaviorlm.evaluation.benchmark import append_jsonl, provenance
from behaviorlm.evaluation.purchase import paired_bootstrap_auc
from behaviorlm.models.heads import SequenceClassifier, SequenceLabels
from behaviorlm.models.pretraining import MaskedBehaviorPretrainer
from behaviorlm.models.propensity import PurchasePropensity, propensity_snapshot
from behaviorlm.profiling.churn import churn_snapshot

RESULTS = Path(__file__).resolve().parent / "results.jsonl"
DAY = 86_400
TRANSFORMER = {"d_model": 64, "n_layers": 2, "n_heads": 2, "dropout": 0.2, "max_len": 50, "epochs": 30}


def snapshot(data: Interactions, cutoff: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(users, features at the cutoff, label: a purchase within 24 h after it)."""
    features = churn_snapshot(data, cutoff=cutoff, horizon_seconds=DAY)  # users with an event before it
    purchase = data.event_type_vocab.index("purchase")
    users_of = np.repeat(np.arange(data.n_users), data.lengths())
    window = (data.timestamps >= cutoff) & (data.timestamps < cutoff + DAY) & (data.event_types == purchase)
    bought = np.zeros(data.n_users, dtype=bool)
    bought[users_of[window]] = True
    return features.users, features.features, bought[features.users].astype(np.int64)


def stacked_sequences(data: Interactions, parts: list[tuple[int, np.ndarray, np.ndarray]]) -> SequenceLabels:
    """One labelled sequence per (cutoff, user): the user's events before that cutoff."""
    users_of = np.repeat(np.arange(data.n_users), data.lengths())
    rows, labels, keys = [], [], []
    for cutoff, users, y in parts:
        keep = np.isin(users_of, users) & (data.timestamps < cutoff)
        for user, label in zip(users, y, strict=True):
            rows.append(np.flatnonzero(keep & (users_of == user)))
            labels.append(label)
            keys.append(f"{data.user_ids[user]}@{cutoff}")
    index = np.concatenate(rows)
    stacked = Interactions.from_events(
        user_ids=np.repeat(np.array(keys), [len(r) for r in rows]),
        item_ids=data.item_ids[data.items[index]],
        timestamps=data.timestamps[index],
        event_types=np.asarray(data.event_type_vocab)[data.event_types[index]],
        event_type_vocab=data.event_type_vocab,
        item_universe=data.item_ids,
    )
    order = {key: i for i, key in enumerate(stacked.user_ids)}
    return SequenceLabels(
        history=stacked,
        users=np.array([order[k] for k in keys]),
        labels=np.array(labels, dtype=np.int64),
        as_of=np.array([int(k.rpartition("@")[2]) for k in keys], dtype=np.int64),  # the cutoff
    )


def out_of_fold(train: SequenceLabels, valid: SequenceLabels, params: dict, *, folds: int = 3) -> np.ndarray:
    """Each training row's purchase probability from a classifier that did not train on that user (folds
    by user, so a user's other cutoffs do not leak), for stacking without the model grading itself."""
    users = np.array([key.rpartition("@")[0] for key in train.history.user_ids[train.users]])
    fold_of = {u: i % folds for i, u in enumerate(np.random.default_rng(0).permutation(np.unique(users)))}
    fold = np.array([fold_of[u] for u in users])
    out = np.zeros(len(train.users))
    for k in range(folds):
        part = train.subset(np.flatnonzero(fold != k))
        held = train.subset(np.flatnonzero(fold == k))
        model = SequenceClassifier.from_params(params).fit(part, valid=valid)
        out[fold == k] = model.predict_proba(held.history, users=held.users, as_of=held.as_of)[:, 1]
    return out


def logistic_scores(x: dict[str, np.ndarray], y: dict[str, np.ndarray], *, max_iter: int) -> np.ndarray:
    """Test scores of a logistic regression fitted on ``x["train"]`` with C chosen on ``x["valid"]``'s
    ROC-AUC (0.01, 0.1, 1, 10; the first best wins)."""
    from sklearn.linear_model import LogisticRegression

    best_c, best_auc = 1.0, -1.0
    for c in (0.01, 0.1, 1.0, 10.0):
        lr = LogisticRegression(C=c, max_iter=max_iter).fit(x["train"], y["train"])
        auc = metrics.roc_auc(y["valid"], y_score=lr.predict_proba(x["valid"])[:, 1])
        if auc > best_auc:
            best_c, best_auc = c, auc
    lr = LogisticRegression(C=best_c, max_iter=max_iter).fit(x["train"], y["train"])
    return lr.predict_proba(x["test"])[:, 1]


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="taobao-9days")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--ablation",
        action="store_true",
        help="also train the classifier without the time from the last event to the cutoff (-no-time)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    from sklearn.ensemble import HistGradientBoostingClassifier

    with open_dataset_store(args.dataset, read_only=True) as store:
        first, last = store_time_range(store, start_quantile=0.001)
        data = store.interactions()
    cutoffs = purchase_cutoffs(first, last, window_seconds=DAY, step_seconds=DAY, warmup_seconds=DAY)
    snaps = {g: [(c, *snapshot(data, c)) for c in cs] for g, cs in cutoffs.items()}
    xy = {
        g: (np.concatenate([s[2] for s in ss]), np.concatenate([s[3] for s in ss])) for g, ss in snaps.items()
    }
    protocol = {
        "split": "daily cutoffs; label: a purchase in the next 24 h; features and sequences before the cutoff",
        **{
            g: {"cutoffs": cs, "users": len(xy[g][1]), "positives": int(xy[g][1].sum())}
            for g, cs in cutoffs.items()
        },
    }
    print({g: protocol[g] for g in cutoffs})
    y_test = xy["test"][1]
    scores: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}

    started = time.perf_counter()
    gbm = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, random_state=0)
    gbm.fit(*xy["train"])
    scores["gradient-boosting"] = gbm.predict_proba(xy["test"][0])[:, 1]
    seconds["gradient-boosting"] = time.perf_counter() - started
    labels = {g: xy[g][1] for g in xy}
    logged = {g: np.log1p(np.maximum(xy[g][0], 0)) for g in xy}
    scores["logistic-regression"] = logistic_scores(logged, labels, max_iter=2000)
    # The library's user-level purchase model: the same features plus each behaviour's count in the last
    # 3 / 12 / 24 / 48 hours, C chosen on validation (PurchasePropensity; `behaviorlm train --model
    # purchase_propensity --label purchase-within:24h` fits it the same way).
    started = time.perf_counter()
    propensity = {g: [propensity_snapshot(data, cutoff=c, hours=24) for c in cs] for g, cs in cutoffs.items()}
    model = PurchasePropensity().fit(propensity["train"], valid=propensity["valid"])
    scores["purchase-propensity"] = np.concatenate([model.predict_snapshot(s) for s in propensity["test"]])
    seconds["purchase-propensity"] = time.perf_counter() - started
    wide = {
        g: np.log1p(np.maximum(np.concatenate([s.features for s in ss]), 0)) for g, ss in propensity.items()
    }

    sequences = {g: stacked_sequences(data, [(c, u, y) for c, u, _, y in ss]) for g, ss in snaps.items()}
    before_test = data.filter_events(data.timestamps < cutoffs["test"][0])
    records = []
    for seed in range(args.seeds):
        for pretrained, knows_time in ((False, True), (True, True), (False, False)):
            if not knows_time and not args.ablation:
                continue
            name = (
                "transformer-classifier"
                + ("-pretrained" if pretrained else "")
                + ("" if knows_time else "-no-time")
            )
            started = time.perf_counter()
            state = None
            if pretrained:
                pre = MaskedBehaviorPretrainer.from_params({**TRANSFORMER, "epochs": 20, "seed": seed}).fit(
                    before_test
                )
                state = pre.encoder_state()
            model = SequenceClassifier.from_params(
                {**TRANSFORMER, "seed": seed, "time_to_prediction": knows_time}
            ).fit(sequences["train"], valid=sequences["valid"], init_encoder=state)
            test = sequences["test"]
            score = model.predict_proba(test.history, users=test.users, as_of=test.as_of)[:, 1]
            key = f"{name}#{seed}"
            scores[key], seconds[key] = score, time.perf_counter() - started
            if not pretrained and knows_time:
                # The classifier handed the same recent-hours counts as side features (inside the model).
                with_counts = {
                    g: SequenceLabels(
                        history=q.history, users=q.users, labels=q.labels, as_of=q.as_of, features=wide[g]
                    )
                    for g, q in sequences.items()
                }
                side_model = SequenceClassifier.from_params({**TRANSFORMER, "seed": seed}).fit(
                    with_counts["train"], valid=with_counts["valid"]
                )
                t = with_counts["test"]
                scores[f"transformer-classifier-recent-hours#{seed}"] = side_model.predict_proba(
                    t.history, users=t.users, as_of=t.as_of, features=t.features
                )[:, 1]
                seconds[f"transformer-classifier-recent-hours#{seed}"] = time.perf_counter() - started
                # Stacked hybrid: the recent-hours logistic regression with the Transformer's logit added,
                # fitted on the training days with out-of-fold Transformer probabilities (C on validation).
                valid = sequences["valid"]
                oof = out_of_fold(sequences["train"], valid, {**TRANSFORMER, "seed": seed})
                extra = {
                    "train": _logit(oof),
                    "valid": _logit(
                        model.predict_proba(valid.history, users=valid.users, as_of=valid.as_of)[:, 1]
                    ),
                    "test": _logit(score),
                }
                stack = {g: np.column_stack([wide[g], extra[g]]) for g in extra}
                scores[f"hybrid-logistic-transformer#{seed}"] = logistic_scores(stack, labels, max_iter=3000)
                seconds[f"hybrid-logistic-transformer#{seed}"] = time.perf_counter() - started
                # Hybrid: boosting on the validation snapshots with the Transformer's probability added.
                valid = sequences["valid"]
                extra_valid = model.predict_proba(valid.history, users=valid.users, as_of=valid.as_of)[:, 1]
                hybrid = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, random_state=seed)
                hybrid.fit(np.column_stack([xy["valid"][0], extra_valid]), xy["valid"][1])
                scores[f"hybrid-gbm-transformer#{seed}"] = hybrid.predict_proba(
                    np.column_stack([xy["test"][0], score])
                )[:, 1]
                seconds[f"hybrid-gbm-transformer#{seed}"] = seconds[key]
            print(
                f"{key}: ROC-AUC {metrics.roc_auc(y_test, y_score=score):.4f} ({seconds[key]:.0f} s)",
                flush=True,
            )

    base = scores["gradient-boosting"]
    for key, score in scores.items():
        name, _, seed = key.partition("#")
        record_metrics = {
            "roc_auc": metrics.roc_auc(y_test, y_score=score),
            "pr_auc": metrics.average_precision(y_test, y_score=score),
        }
        if name != "gradient-boosting":
            diff = paired_bootstrap_auc(
                y_test, scores_a=score, scores_b=base, n_boot=1000, seed=int(seed or 0)
            )
            record_metrics.update(roc_auc_gain_ci_low=diff["low"], roc_auc_gain_ci_high=diff["high"])
            record_metrics["roc_auc_gain"] = diff["difference"]
        records.append(
            {
                "dataset": "taobao-9days-user",
                "model": name,
                "params": {
                    **(TRANSFORMER if "transformer" in name else {}),
                    **({"time_to_prediction": "no-time" not in name} if "transformer" in name else {}),
                    "seed": int(seed or 0),
                },
                "protocol": protocol,
                "metrics": record_metrics,
                "n_users": len(y_test),
                "train_seconds": seconds.get(key, 0.0),
                "eval_seconds": 0.0,
                **provenance(),
            }
        )
        gain = (
            f"; vs boosting {record_metrics['roc_auc_gain']:+.4f} "
            f"[{record_metrics['roc_auc_gain_ci_low']:+.4f}, {record_metrics['roc_auc_gain_ci_high']:+.4f}]"
            if "roc_auc_gain" in record_metrics
            else ""
        )
        print(f"{key}: ROC-AUC {record_metrics['roc_auc']:.4f}, PR-AUC {record_metrics['pr_auc']:.4f}{gain}")
    for record in records:
        append_jsonl(args.out, record)


if __name__ == "__main__":
    main()
