"""Our LightGCN against torch_geometric's (``torch_geometric.nn.models.LightGCN``) on ML-100k.

Both are trained by the same loop (``behaviorlm.training.loop.train``: Adam at a constant learning rate,
gradient clipping at 1, validation NDCG@10 every ``eval_every`` epochs, early stopping after ``patience``
validations without improvement, best validated weights kept) on the same batches: the same shuffled
(user, item) training pairs and one uniformly drawn negative item per pair, BPR loss plus L2 on the
layer-0 embeddings of the batch at the same scale. They differ only in the model: ours (sparse
``D^-1/2 A D^-1/2`` products on the user x item matrix, normal(0, 0.1) initialisation) or PyG's (its
``LGConv`` message passing over an ``edge_index`` of the bipartite graph in both directions, its own
Xavier initialisation), used through a minimal :class:`PyGLightGCN` wrapper that lives only in this
script. PyG's ``recommendation_loss`` adds ``lambda_reg * ||e||^2 / batch``; ours adds
``l2 * ||e||^2 / (2 * batch)``, so PyG gets ``lambda_reg = l2 / 2`` over the same rows (user, positive,
negative of every pair).

Protocol: leave-one-out, full ranking over all items, seen items masked, pessimistic ties; test targets
ranked once, from train + validation history (the wrapper propagates PyG's model over the graph of the
history it is given, so the validation item counts, as it does for ours). Each (model, seed) runs in a
fresh process so its peak RSS is its own; one JSON line per run is appended to benchmarks/results.jsonl.

    taskset -c 1 env OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 BEHAVIORLM_TORCH_THREADS=1 \\
        BEHAVIORLM_DATA_DIR=/work/shared/data .venv/bin/python benchmarks/run_lightgcn_pyg.py --seeds 0
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _isolated import run_in_worker
from behaviorlm.data.sequences import Interactions
from behaviorlm.models.base import Recommender, ScoringBatch, active_validation
from behaviorlm.training import loop
from behaviorlm.training.loop import TrainerConfig, TrainingHistory, seed_everything

RESULTS = Path(__file__).resolve().parent / "results.jsonl"
GRAPHS = ("csr-normalised", "csr", "edge_index")
"""How PyG's model gets the graph: a torch CSR adjacency normalised once (``LGConv(normalize=False)``),
one LGConv normalises at every call, or an ``edge_index`` (message passing by scatter)."""


def _pairs(train: Interactions) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct (user, item) training pairs, as ours builds them."""
    coo = train.csr_rows(np.arange(train.n_users)).tocoo()
    return torch.from_numpy(coo.row.astype(np.int64)), torch.from_numpy(coo.col.astype(np.int64))


class PyGLightGCN(Recommender):
    """torch_geometric's LightGCN behind the Recommender interface (benchmark only, not registered).

    Nodes ``0..n_users-1`` are users, ``n_users + i`` is item ``i``. The constructor arguments and the
    batches mirror :class:`behaviorlm.models.lightgcn.LightGCN`'s.
    """

    name = "lightgcn-pyg"

    def __init__(
        self,
        *,
        d_model: int = 64,
        n_layers: int = 3,
        l2: float = 1e-4,
        lr: float = 1e-3,
        batch_size: int = 2048,
        epochs: int = 300,
        patience: int = 10,
        eval_every: int = 5,
        max_train_seconds: float | None = None,
        seed: int = 0,
        graph: str = "csr-normalised",
    ) -> None:
        if graph not in GRAPHS:
            raise ValueError(f"graph must be one of {GRAPHS}, got {graph!r}")
        self.graph = graph
        self.d_model = d_model
        self.n_layers = n_layers
        self.l2 = l2
        self.lr = lr
        self.batch_size = batch_size
        self.epochs = epochs
        self.patience = patience
        self.eval_every = eval_every
        self.max_train_seconds = max_train_seconds
        self.seed = seed

    def _adjacency(self, interactions: Interactions) -> torch.Tensor:
        """The bipartite graph of ``interactions`` in both directions, in the form ``graph`` names."""
        from torch_geometric.nn.conv.gcn_conv import gcn_norm
        from torch_geometric.utils import to_torch_csr_tensor

        users, items = _pairs(interactions)
        items = items + self.train_.n_users
        edge_index = torch.stack([torch.cat([users, items]), torch.cat([items, users])])
        if self.graph == "edge_index":
            return edge_index
        n_nodes = self.train_.n_users + self.train_.n_items
        adjacency = to_torch_csr_tensor(edge_index, size=(n_nodes, n_nodes))
        if self.graph == "csr":
            return adjacency
        normalised = gcn_norm(adjacency, add_self_loops=False)  # D^-1/2 A D^-1/2, once
        return normalised[0] if isinstance(normalised, tuple) else normalised

    def _fit(self, train: Interactions) -> None:
        from torch_geometric.nn.models import LightGCN as PyGModel

        seed_everything(self.seed)
        n_users = train.n_users
        self.net_ = PyGModel(
            num_nodes=n_users + train.n_items,
            embedding_dim=self.d_model,
            num_layers=self.n_layers,
            normalize=self.graph != "csr-normalised",  # LGConv normalises the others at every call
        )
        self._cache: tuple[Interactions, torch.Tensor] | None = None
        edge_index = self._adjacency(train)
        pair_users, pair_items = _pairs(train)
        n_pairs = len(pair_users)

        def batches(epoch: int) -> Iterator[dict[str, torch.Tensor]]:
            # The same draws as ours: same generator seed, permutation and negatives.
            generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            order = torch.randperm(n_pairs, generator=generator)
            negatives = torch.randint(train.n_items, (n_pairs,), generator=generator)
            for start in range(0, n_pairs, self.batch_size):
                rows = order[start : start + self.batch_size]
                yield {
                    "users": pair_users[rows],
                    "pos": pair_items[rows],
                    "neg": negatives[start : start + len(rows)],
                }

        def loss_fn(batch: dict[str, torch.Tensor]) -> torch.Tensor:
            users, pos, neg = batch["users"], batch["pos"] + n_users, batch["neg"] + n_users
            label_index = torch.stack([torch.cat([users, users]), torch.cat([pos, neg])])
            pos_rank, neg_rank = self.net_(edge_index, label_index).chunk(2)
            return self.net_.recommendation_loss(
                pos_rank, neg_rank, node_id=torch.cat([users, pos, neg]), lambda_reg=self.l2 / 2
            )

        validate = None
        valid = active_validation(self._valid)
        if valid is not None:

            def validate() -> float:
                self._cache = None  # the weights changed since the last scoring
                return float(valid(self))

        self.history_: TrainingHistory = loop.train(
            self.net_,
            batches=batches,
            steps_per_epoch=math.ceil(n_pairs / self.batch_size),
            loss_fn=loss_fn,
            validate=validate,
            config=TrainerConfig(
                epochs=self.epochs,
                lr=self.lr,
                patience=self.patience,
                eval_every=self.eval_every,
                max_seconds=self.max_train_seconds,
                seed=self.seed,
                show_progress=False,
                warmup_fraction=0.0,
                min_lr_ratio=1.0,
            ),
        )
        self._cache = None

    def score(self, batch: ScoringBatch) -> torch.Tensor:
        train = self._fitted()
        history = batch.history
        if history.n_items != train.n_items or history.n_users > train.n_users:
            raise ValueError("PyGLightGCN.score: history is not in the model's user/item index space")
        if self._cache is None or self._cache[0] is not history:
            with torch.no_grad():
                self._cache = (history, self.net_.get_embedding(self._adjacency(history)))
        emb = self._cache[1]
        return emb[torch.from_numpy(batch.users)] @ emb[train.n_users :].T

    def training_summary(self) -> dict:
        return self.history_.summary(metric="ndcg@10")


def _run(model_key: str, params: dict[str, Any], threads: int) -> dict[str, Any]:
    torch.set_num_threads(threads)
    from behaviorlm.data.datasets import load_interactions
    from behaviorlm.data.splits import leave_one_out
    from behaviorlm.evaluation.benchmark import fit_and_evaluate
    from behaviorlm.models.lightgcn import LightGCN

    split = leave_one_out(load_interactions("ml-100k"))
    model = LightGCN.from_params(params) if model_key == "ours" else PyGLightGCN(**params)
    record = fit_and_evaluate(model, split, dataset="ml-100k").to_dict()
    record["protocol"]["torch_threads"] = threads
    if model_key == "pyg":
        import torch_geometric

        record["params"]["torch_geometric"] = torch_geometric.__version__
    return record


def run_isolated(model_key: str, params: dict[str, Any], threads: int) -> dict[str, Any]:
    return run_in_worker(_run, (model_key, params, threads), what=f"LightGCN ({model_key})")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", choices=["ours", "pyg"], default=["ours", "pyg"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--epochs", type=int, default=None, help="epoch budget (default: LightGCN's)")
    parser.add_argument("--pyg-graph", choices=GRAPHS, default=GRAPHS[0], help="graph form for PyG's model")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS, help="append records here")
    parser.add_argument("--no-append", action="store_true", help="print only (for a smoke test)")
    args = parser.parse_args()
    from behaviorlm.evaluation.benchmark import append_jsonl

    for seed in args.seeds:
        for key in args.models:
            params: dict[str, Any] = {"seed": seed}
            if args.epochs is not None:
                params["epochs"] = args.epochs
            if key == "pyg":
                params["graph"] = args.pyg_graph
            record = run_isolated(key, params, args.threads)
            if not args.no_append:
                append_jsonl(args.out, record)
            m, t = record["metrics"], record["training"]
            print(
                f"{record['model']:13s} seed {seed} NDCG@10 {m['ndcg@10']:.4f} HR@10 {m['hr@10']:.4f} "
                f"epochs {t['epochs_run']} (best {t['best_epoch']}, early {t['stopped_early']}) "
                f"{t['seconds_per_epoch']:.2f} s/epoch train {record['train_seconds']:.1f} s "
                f"rss {record['peak_rss_mb']:.0f} MB",
                flush=True,
            )
    if not args.no_append:
        print(json.dumps({"appended_to": str(args.out)}))


if __name__ == "__main__":
    main()
