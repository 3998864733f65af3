"""Does masked-behaviour pretraining pay off with few labels? Next event type and purchase intent on the
9-day Taobao slice, with 1%, 10% and 100% of the training users labelled (issue 22, item 2).

Users are split 80/10/10 (seeded) into train / validation / test. The pretrainer
(``MaskedBehaviorPretrainer``) reads every *training* user's events, without labels. Then, for each label
share, the same share of training users (at least 8) trains each head from scratch and from the pretrained
encoder, with the same seed, architecture and early stopping on the validation users:

* next event type (``NextEventTypeModel``): the type of each test user's last event, from the events before
  it (``last_event_type_labels``); accuracy and macro-F1 (view dominates, so macro-F1 is the one to read);
* purchase intent (``SequenceClassifier``, ``purchase_within_next(n_events=5)``): a purchase among the
  user's last five events, from the events before them; ROC-AUC.

Appends one record per task, share, start and seed to benchmarks/results.jsonl (dataset "taobao-9days").

    BEHAVIORLM_DATA_DIR=../shared/data OMP_NUM_THREADS=1 taskset -c 0 .venv/bin/python \\
        benchmarks/run_pretrain_labels.py --seeds 0
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from behaviorlm.data.datasets import open_dataset_store
from behaviorlm.evaluation.benchmark import append_jsonl, provenance
from behaviorlm.models.heads import (
    NextEventTypeModel,
    SequenceClassifier,
    last_event_type_labels,
    purchase_within_next,
    split_users,
)
from behaviorlm.models.pretraining import MaskedBehaviorPretrainer

RESULTS = Path(__file__).resolve().parent / "results.jsonl"
ENCODER = {"d_model": 64, "n_layers": 2, "n_heads": 2, "dropout": 0.2, "max_len": 50}
SHARES = (0.01, 0.1, 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="taobao-9days")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--pretrain-epochs", type=int, default=20)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with open_dataset_store(args.dataset, read_only=True) as store:
        data = store.interactions()
    users = np.flatnonzero(data.lengths() >= 7)  # room for a history before five future events
    train_rows, valid_rows, test_rows = split_users(users, valid_fraction=0.1, test_fraction=0.1, seed=0)
    train_users, valid_users, test_users = users[train_rows], users[valid_rows], users[test_rows]
    owner = data.event_users()
    intent = purchase_within_next(data, n_events=5)
    row_of = {int(u): i for i, u in enumerate(intent.users)}
    print(f"{len(train_users)} / {len(valid_users)} / {len(test_users)} users", flush=True)

    for seed in args.seeds:
        started = time.perf_counter()
        pretrainer = MaskedBehaviorPretrainer.from_params(
            {**ENCODER, "epochs": args.pretrain_epochs, "seed": seed}
        )
        pretrainer.fit(data.filter_events(np.isin(owner, train_users)))
        state, pretrain_seconds = pretrainer.encoder_state(), time.perf_counter() - started
        print(f"seed {seed}: pretrained in {pretrain_seconds:.0f} s", flush=True)
        rng = np.random.default_rng(seed)
        for share in SHARES:
            labelled = rng.permutation(train_users)[: max(8, round(share * len(train_users)))]
            for start, init in (("scratch", None), ("pretrained", state)):
                t = time.perf_counter()
                next_type = NextEventTypeModel.from_params({**ENCODER, "epochs": 50, "seed": seed}).fit(
                    data.filter_events(np.isin(owner, labelled)),
                    valid=last_event_type_labels(data, valid_users),
                    init_encoder=init,
                )
                report = next_type.evaluate(last_event_type_labels(data, test_users))
                record(
                    args,
                    "next-event-type",
                    share,
                    start,
                    seed,
                    len(labelled),
                    report,
                    time.perf_counter() - t,
                )
                t = time.perf_counter()
                rows = lambda group: np.array([row_of[int(u)] for u in group])  # noqa: E731
                classifier = SequenceClassifier.from_params({**ENCODER, "epochs": 50, "seed": seed}).fit(
                    intent.subset(rows(labelled)), valid=intent.subset(rows(valid_users)), init_encoder=init
                )
                report = classifier.evaluate(intent.subset(rows(test_users)))
                record(
                    args,
                    "purchase-within-5",
                    share,
                    start,
                    seed,
                    len(labelled),
                    report,
                    time.perf_counter() - t,
                )


def record(
    args, task: str, share: float, start: str, seed: int, n_labelled: int, report: dict, seconds: float
) -> None:
    keep = ("accuracy", "macro_f1", "roc_auc", "average_precision")
    metrics = {k: float(report[k]) for k in keep if k in report}
    print(f"{task} {share:.0%} {start} seed {seed}: {metrics} ({seconds:.0f} s)", flush=True)
    append_jsonl(
        args.out,
        {
            "dataset": args.dataset,
            "model": f"{task}-{start}",
            "params": {**ENCODER, "seed": seed, "label_share": share, "labelled_users": n_labelled},
            "protocol": {"split": "users 80/10/10 (seed 0); test users' last event / last five events"},
            "metrics": metrics,
            "n_users": int(report["n"]),
            "train_seconds": seconds,
            "eval_seconds": 0.0,
            **provenance(),
        },
    )


if __name__ == "__main__":
    main()
