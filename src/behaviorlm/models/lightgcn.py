"""LightGCN: user and item embeddings smoothed over the user–item interaction graph.

He et al., "LightGCN: Simplifying and Powering Graph Convolution Network for Recommendation", SIGIR 2020.
Layer ``k + 1`` of an item is the normalised sum of layer ``k`` of its users, and vice versa (eq. 3):

    e_u^(k+1) = sum_{i in N(u)} e_i^(k) / sqrt(|N(u)| |N(i)|),   e_i^(k+1) = sum_{u in N(i)} e_u^(k) / sqrt(|N(i)| |N(u)|)

with no weight matrices and no non-linearity; the final embedding is the mean of layers 0..K (eq. 4) and
the score of (u, i) is their dot product. Only layer 0 is learned, with the BPR loss (Rendle et al., UAI
2009) on one uniformly drawn negative per observed pair, plus L2 on the layer-0 embeddings of the batch.

Scoring reads the history it is given: a user's layers 1..K are recomputed from the items in
``batch.history`` (with the trained item layers), so events after training — the validation item when
the test targets are ranked — count, as they do for every other model in the benchmark table.

Kept rather than ``torch_geometric.nn.models.LightGCN`` because it measured better at the same budget
(``benchmarks/run_lightgcn_pyg.py``, docs/graph.md): ML-100k leave-one-out, full ranking, same loop,
batches, BPR + L2 scale, 300 epochs, one seed, one pinned core — test NDCG@10 0.0663 against PyG's
0.0609 (HR@10 0.1251 against 0.1273). PyG was faster per epoch only with a CSR adjacency normalised once
(2.18 s against 2.94 s); through its default ``edge_index`` input it took 19.4 s per epoch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from behaviorlm.data.sequences import Interactions
from behaviorlm.models.base import Recommender, ScoringBatch, active_validation, register
from behaviorlm.training import loop
from behaviorlm.training.loop import TrainerConfig, TrainingHistory, seed_everything
from behaviorlm.training.options import TrainingOptions


def _normalised_adjacency(csr: sp.csr_matrix, item_degree: np.ndarray) -> torch.Tensor:
    """``D_u^-1/2 R D_i^-1/2`` as a sparse torch tensor, with the rows' own degrees and the given item degrees."""
    csr = csr.tocsr().astype(np.float32)
    user_degree = np.diff(csr.indptr)
    rows = np.repeat(np.arange(csr.shape[0]), user_degree)
    values = 1.0 / np.sqrt(np.maximum(user_degree[rows], 1) * np.maximum(item_degree[csr.indices], 1))
    return torch.sparse_coo_tensor(
        np.vstack([rows, csr.indices]), values.astype(np.float32), size=csr.shape, check_invariants=False
    ).coalesce()


class LightGCNNet(nn.Module):
    def __init__(self, *, n_users: int, n_items: int, d_model: int) -> None:
        super().__init__()
        self.user = nn.Embedding(n_users, d_model)
        self.item = nn.Embedding(n_items, d_model)
        nn.init.normal_(self.user.weight, std=0.1)
        nn.init.normal_(self.item.weight, std=0.1)

    def layers(self, adjacency: torch.Tensor, n_layers: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Layers 0..K of users and items over ``adjacency`` (users x items, normalised)."""
        users, items = [self.user.weight], [self.item.weight]
        transposed = adjacency.t()
        for _ in range(n_layers):
            users.append(torch.sparse.mm(adjacency, items[-1]))
            items.append(torch.sparse.mm(transposed, users[-2]))
        return users, items


LIGHTGCN_TRAINING = TrainingOptions(batch_size=2048, epochs=300, patience=10, eval_every=5)
"""LightGCN's default training: BPR batches of 2,048 (user, item) pairs, a constant learning rate (the
paper's), validation every 5 epochs, up to 300 epochs."""


@register
class LightGCN(Recommender):
    """LightGCN recommender (see the module docstring). Early stopping on validation NDCG@10 as the
    sequence models do; how it trains is ``training`` (:class:`~behaviorlm.training.options.TrainingOptions`,
    default :data:`LIGHTGCN_TRAINING`; CPU only)."""

    name = "lightgcn"

    def __init__(
        self,
        *,
        d_model: int = 64,
        n_layers: int = 3,
        l2: float = 1e-4,
        training: TrainingOptions = LIGHTGCN_TRAINING,
    ) -> None:
        self.d_model = d_model
        self.n_layers = n_layers
        self.l2 = l2
        self.training = training

    # ------------------------------------------------------------------ fitting
    def _fit(self, train: Interactions) -> None:
        if self.training.device != "cpu":
            raise ValueError(
                f"LightGCN trains on the CPU only (its sparse propagation); got training.device="
                f"{self.training.device!r}"
            )
        seed_everything(self.training.seed)
        csr = train.csr_rows(np.arange(train.n_users))
        csr.data[:] = 1.0
        self.item_degree_ = np.diff(csr.tocsc().indptr).astype(np.int64)
        adjacency = _normalised_adjacency(csr, self.item_degree_)
        self.net_ = LightGCNNet(n_users=train.n_users, n_items=train.n_items, d_model=self.d_model)
        coo = csr.tocoo()
        pair_users = torch.from_numpy(coo.row.astype(np.int64))
        pair_items = torch.from_numpy(coo.col.astype(np.int64))
        n_pairs = len(pair_users)
        n_batches = math.ceil(n_pairs / self.training.batch_size)

        def batches(epoch: int) -> Iterator[dict[str, torch.Tensor]]:
            generator = torch.Generator().manual_seed(self.training.seed * 100_003 + epoch)
            order = torch.randperm(n_pairs, generator=generator)
            negatives = torch.randint(train.n_items, (n_pairs,), generator=generator)
            for start in range(0, n_pairs, self.training.batch_size):
                rows = order[start : start + self.training.batch_size]
                yield {
                    "users": pair_users[rows],
                    "pos": pair_items[rows],
                    "neg": negatives[start : start + len(rows)],
                }

        def loss_fn(batch: dict[str, torch.Tensor]) -> torch.Tensor:
            users, items = self.net_.layers(adjacency, self.n_layers)
            u_final = torch.stack(users).mean(0)[batch["users"]]
            i_final = torch.stack(items).mean(0)
            pos = (u_final * i_final[batch["pos"]]).sum(-1)
            neg = (u_final * i_final[batch["neg"]]).sum(-1)
            reg = (
                self.net_.user.weight[batch["users"]].pow(2).sum()
                + self.net_.item.weight[batch["pos"]].pow(2).sum()
                + self.net_.item.weight[batch["neg"]].pow(2).sum()
            ) / (2 * len(pos))
            return -torch.nn.functional.logsigmoid(pos - neg).mean() + self.l2 * reg

        validate = None
        valid = active_validation(self._valid)
        # The name training_summary() gives the validation score ("ndcg@10" for RankingValidation's default).
        self.validation_metric_ = str(getattr(valid, "metric", "validation"))
        if valid is not None:

            def validate() -> float:
                self._cache_item_layers(adjacency)
                return float(valid(self))

        self.history_: TrainingHistory = loop.train(
            self.net_,
            batches=batches,
            steps_per_epoch=n_batches,
            loss_fn=loss_fn,
            validate=validate,
            # A constant learning rate, as in the paper.
            config=TrainerConfig.from_options(self.training, warmup_fraction=0.0, min_lr_ratio=1.0),
        )
        self._cache_item_layers(adjacency)

    def _cache_item_layers(self, adjacency: torch.Tensor) -> None:
        with torch.no_grad():
            _, items = self.net_.layers(adjacency, self.n_layers)
        self.item_layers_ = torch.stack(items)  # [K + 1, n_items, d]

    # ------------------------------------------------------------------ scoring
    def score(self, batch: ScoringBatch) -> torch.Tensor:
        train = self._fitted()
        if batch.history.n_items != train.n_items:
            raise ValueError(
                f"LightGCN.score: history has {batch.history.n_items} items, model has {train.n_items}"
            )
        csr = batch.history_csr.copy()
        csr.data[:] = 1.0
        adjacency = _normalised_adjacency(csr, self.item_degree_)
        with torch.no_grad():
            known = batch.users < train.n_users
            layer0 = torch.zeros(len(batch.users), self.d_model)
            layer0[torch.from_numpy(known)] = self.net_.user.weight[torch.from_numpy(batch.users[known])]
            layers = [layer0] + [
                torch.sparse.mm(adjacency, self.item_layers_[k]) for k in range(self.n_layers)
            ]
            users = torch.stack(layers).mean(0)
            return users @ self.item_layers_.mean(0).T

    def training_summary(self) -> dict:
        """Epochs, best epoch, time per epoch and total, from the last fit."""
        return self.history_.summary(metric=getattr(self, "validation_metric_", "ndcg@10"))

    # ------------------------------------------------------------------ persistence
    def _state(self) -> dict[str, torch.Tensor]:
        return {
            "user": self.net_.user.weight.detach(),
            "item": self.net_.item.weight.detach(),
            "item_layers": self.item_layers_,
            "item_degree": torch.from_numpy(self.item_degree_),
        }

    def _load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        train = self._fitted()
        self.net_ = LightGCNNet(n_users=train.n_users, n_items=train.n_items, d_model=self.d_model)
        self.net_.user.weight.data.copy_(tensors["user"])
        self.net_.item.weight.data.copy_(tensors["item"])
        self.item_layers_ = tensors["item_layers"]
        self.item_degree_ = tensors["item_degree"].numpy()
