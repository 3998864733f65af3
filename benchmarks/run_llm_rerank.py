"""LLM re-ranking of the behaviour Transformer's top 20 (LlamaRec-style), against the Transformer alone.

Protocol: leave-one-out split; the Transformer (the dataset's settings of run_influence.py / run_sequential.py,
training capped at ``--max-train-seconds``) ranks all items for ``--users`` seeded random test users from
their test history (train + validation), seen items masked, the target always rankable. The LLM re-orders
the top ``--k`` (20) by the label verbalizer of behaviorlm.llm.rerank, shown the titles of the user's last
10 history items; items below the top ``k`` keep their rank. Reported on the same users: NDCG@10 and HR@10
of the Transformer, of the re-ranking, and of the calibrated re-ranking (content-free prior subtracted),
plus HR@k (the ceiling: a target outside the top ``k`` cannot be helped), latency and label coverage.

Needs item titles: ML-100k has them; the Beauty file of the BERT4Rec benchmark (../shared/data) has item
ids only, so re-ranking there would show the model nothing but letters -- the script says so and stops.

    .venv/bin/python benchmarks/run_llm_rerank.py --dataset ml-100k --users 100
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch

from behaviorlm.config import LLMConfig
from behaviorlm.data.datasets import load_interactions, open_dataset_store
from behaviorlm.data.splits import leave_one_out
from behaviorlm.evaluation.benchmark import append_jsonl, provenance
from behaviorlm.evaluation.ranking import RankingValidation
from behaviorlm.llm.client import LLMClient
from behaviorlm.llm.rerank import MAX_HISTORY, label_prior, llm_rerank, order_by_labels
from behaviorlm.models.base import ScoringBatch, mask_seen_
from behaviorlm.models.transformer import BehaviorTransformer
from run_influence import TRANSFORMER_SETTINGS

RESULTS = Path(__file__).resolve().parent / "results.jsonl"


def _ndcg_hr(rank: int, k: int = 10) -> tuple[float, float]:
    return (1.0 / math.log2(rank + 2), 1.0) if rank < k else (0.0, 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="ml-100k", choices=list(TRANSFORMER_SETTINGS))
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--max-train-seconds", type=float, default=150.0)
    parser.add_argument("--llm-threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    with open_dataset_store(args.dataset, read_only=True) as store:
        titles = dict(store.rows("SELECT item_id, title FROM items WHERE title IS NOT NULL AND title <> ''"))
    if not titles:
        raise SystemExit(f"{args.dataset} has no item titles: LLM re-ranking would see only letters; not run")
    split = leave_one_out(load_interactions(args.dataset))
    torch.set_num_threads(2)
    model = BehaviorTransformer.from_params(
        {**TRANSFORMER_SETTINGS[args.dataset], "max_train_seconds": args.max_train_seconds, "seed": args.seed}
    )
    started = time.perf_counter()
    model.fit(split.train, valid=RankingValidation(split.train, split.valid))
    train_seconds = time.perf_counter() - started
    print(f"transformer trained in {train_seconds:.0f} s: {model.training_summary()}", flush=True)

    history = split.test_history
    candidates = np.flatnonzero(split.test.lengths() > 0)
    rng = np.random.default_rng(args.seed)
    users = np.sort(rng.choice(candidates, size=min(args.users, len(candidates)), replace=False))
    batch = ScoringBatch(users=users, history=history)
    with torch.no_grad():
        scores = model.score(batch).float().cpu()
    targets = np.array([split.test.items[split.test.user_ptr[u]] for u in users])
    target_scores = scores[torch.arange(len(users)), torch.as_tensor(targets)].clone()
    mask_seen_(scores, batch.history_csr)
    scores[torch.arange(len(users)), torch.as_tensor(targets)] = target_scores  # targets stay rankable
    base_rank = (scores > target_scores[:, None]).sum(dim=1).numpy()
    top = torch.topk(scores, args.k, dim=1).indices.numpy()

    item_title = [titles.get(str(i), str(i)) for i in history.item_ids]
    torch.set_num_threads(1)  # llama.cpp takes the cores now
    client = LLMClient(LLMConfig(threads=args.llm_threads, cache_dir=""))
    prior = label_prior(client, args.k)
    rows = {"base": [], "llm": [], "llm-calibrated": []}
    latencies, coverage = [], []
    for row, user in enumerate(users):
        seen = history.items[history.user_ptr[user] : history.user_ptr[user + 1]][-MAX_HISTORY:]
        shown = [item_title[i] for i in seen]
        cands = [item_title[i] for i in top[row]]
        rows["base"].append(_ndcg_hr(int(base_rank[row])))
        raw = llm_rerank(client, shown, cands)
        calibrated = order_by_labels(raw.label_logprobs, len(cands), prior=prior)
        latencies.append(raw.latency_s)
        coverage.append(raw.scored / args.k)
        for name, order in (("llm", raw.order), ("llm-calibrated", calibrated)):
            if base_rank[row] < args.k:
                position = int(np.flatnonzero(top[row] == targets[row])[0])
                rank = order.index(position)
            else:
                rank = int(base_rank[row])
            rows[name].append(_ndcg_hr(rank))
        if row % 10 == 9:
            means = {n: np.mean([v[0] for v in r]) for n, r in rows.items()}
            print(
                f"{row + 1} users: NDCG@10 " + " ".join(f"{n} {v:.4f}" for n, v in means.items()), flush=True
            )

    hit_k = float(np.mean(base_rank < args.k))
    for name, found in rows.items():
        ndcg, hr = (float(np.mean([v[i] for v in found])) for i in (0, 1))
        metrics = {"ndcg@10": ndcg, "hr@10": hr, f"hr@{args.k}_ceiling": hit_k}
        if name != "base":
            metrics |= {
                "latency_s_mean": float(np.mean(latencies)),
                "label_coverage": float(np.mean(coverage)),
            }
        model_name = "transformer-top20" if name == "base" else f"{name}-rerank-{client.config.model}"
        append_jsonl(
            args.out,
            {
                "dataset": args.dataset,
                "model": model_name,
                "params": {
                    "k": args.k,
                    "users": len(users),
                    "seed": args.seed,
                    "llm_threads": args.llm_threads,
                },
                "protocol": {
                    "split": "leave_one_out",
                    "ranking": "full ranking, seen items masked, target rankable; the LLM re-orders the top k",
                    "retriever": {"name": model.name, **TRANSFORMER_SETTINGS[args.dataset]},
                    "prompt": f"titles of the last {MAX_HISTORY} history items + {args.k} labelled candidates",
                    "scores": "first-token log-probability of each label"
                    + ("; minus the content-free prior" if name == "llm-calibrated" else ""),
                },
                "metrics": metrics,
                "n_users": len(users),
                "train_seconds": train_seconds,
                "eval_seconds": float(np.sum(latencies)),
                "training": model.training_summary(),
                **provenance(),
            },
        )
        print(
            f"{model_name:45s} NDCG@10 {ndcg:.4f} HR@10 {hr:.4f} (HR@{args.k} ceiling {hit_k:.3f})",
            flush=True,
        )
    print(
        f"LLM latency {np.mean(latencies):.2f} s per user; labels scored {np.mean(coverage):.0%}; usage {client.usage}"
    )


if __name__ == "__main__":
    main()
