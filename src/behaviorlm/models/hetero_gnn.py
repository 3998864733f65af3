"""A heterogeneous GraphSAGE for purchase prediction: link prediction on the purchase relation.

The input is a :class:`~behaviorlm.data.purchase.PurchaseSnapshot`: the behaviour graph before a cutoff
(users, items, category/attribute nodes; view, cart, favourite and purchase edges; item attributes) and
the candidate (user, item) pairs. The model

1. gives every node an *inductive* input vector -- log counts of its edges per relation, log seconds
   since its last behaviour, and for attribute nodes a learned embedding of the attribute's name --
   because the users of a later cutoff are mostly new, so per-user id embeddings would not transfer;
2. runs ``n_layers`` of heterogeneous GraphSAGE (Hamilton et al., "Inductive Representation Learning on
   Large Graphs", NeurIPS 2017, eq. 1 with the mean aggregator): per relation ``r`` a SAGEConv
   ``h_v' = W_r h_v + U_r mean_{u in N_r(v)} h_u``, summed over the relations into ``v``'s type
   (torch-geometric ``HeteroConv``, as in Schlichtkrull et al.'s R-GCN, ESWC 2018, eq. 2), then ReLU,
   dropout and a residual connection; every relation has a reverse (``rev_<relation>``) so messages
   flow both ways;
3. scores a pair with an MLP over ``[h_u, h_i, h_u * h_i]`` and, unless ``pair_features=False``, the
   pair's own count/recency features (:func:`~behaviorlm.data.purchase.pair_features`) -- so the GNN
   sees what the feature baseline sees plus the graph around the pair.

Training is binary cross-entropy on each training snapshot's positives and a fresh uniform sample of
its negatives every epoch (``negatives_per_positive``; the positives are rare: about 1 in 4,000 on the
Taobao slice), full-graph message passing, one step per snapshot, through the shared trainer
(:mod:`behaviorlm.training.loop`: AdamW, warmup + cosine, gradient clipping, checkpoints) with early
stopping on the validation snapshots' ROC-AUC and the best epoch's weights kept.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Self

import numpy as np
import sklearn.metrics as skm
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from torch_geometric.nn import HeteroConv, SAGEConv

from behaviorlm.data.graph import BehaviorGraph, EdgeType
from behaviorlm.data.purchase import PurchaseSnapshot
from behaviorlm.estimator import Estimator, json_params
from behaviorlm.training import loop
from behaviorlm.training.loop import TrainerConfig
from behaviorlm.training.options import TrainingOptions

MODEL_JSON = "model.json"  # the one checkpoint format: model.json + weights.safetensors (models.base)
LEGACY_JSON = "gnn.json"  # what folders saved before the shared format hold instead of model.json
WEIGHTS_FILE = "weights.safetensors"


GNN_TRAINING = TrainingOptions(lr=5e-3, weight_decay=1e-4, epochs=60, patience=10)
"""The purchase GNN's default training (chosen on the Taobao validation cutoffs); one full-graph step per
training snapshot, so ``batch_size`` is unused."""


def _reverse(edge_type: EdgeType) -> EdgeType:
    source, relation, target = edge_type
    return target, f"rev_{relation}", source


def node_features(graph: BehaviorGraph, *, cutoff: int) -> dict[str, np.ndarray]:
    """Inductive input features per node type: ``log1p`` of the summed edge count per incident
    relation (both directions), and for users and items ``log1p`` seconds since their last behaviour."""
    relations = sorted(graph.edges)
    out: dict[str, list[np.ndarray]] = {t: [] for t in ("user", "item", "attribute") if t in graph.node_ids}
    for node_type in out:
        n = len(graph.node_ids[node_type])
        last = np.zeros(n, dtype=np.int64)
        for edge_type in relations:
            edge = graph.edges[edge_type]
            weight = edge.get("count", np.ones(len(edge["source"]), dtype=np.int64)).astype(np.float64)
            for end, side in (("source", 0), ("target", 2)):
                if edge_type[side] == node_type:
                    out[node_type].append(np.log1p(np.bincount(edge[end], weights=weight, minlength=n)))
                    if "last_timestamp" in edge:
                        np.maximum.at(last, edge[end], edge["last_timestamp"])
        if node_type in ("user", "item"):
            out[node_type].append(np.where(last > 0, np.log1p(np.maximum(cutoff - last, 0)), 0.0))
    return {
        t: np.column_stack(cols).astype(np.float32)
        if cols
        else np.zeros((len(graph.node_ids[t]), 0), np.float32)
        for t, cols in out.items()
    }


class HeteroSAGE(nn.Module):
    """Input projection per node type, ``n_layers`` of HeteroConv(SAGEConv), and the pair scorer."""

    def __init__(
        self,
        *,
        input_dims: dict[str, int],
        edge_types: list[EdgeType],
        n_attribute_names: int,
        n_pair_features: int,
        hidden: int,
        n_layers: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.dropout = dropout
        self.input = nn.ModuleDict({t: nn.Linear(d, hidden) for t, d in input_dims.items()})
        # Row 0 stands for an attribute never seen in training.
        self.attribute_name = nn.Embedding(n_attribute_names + 1, hidden)
        nn.init.normal_(self.attribute_name.weight, std=0.1)
        # One root transform per node type and layer (``W``), one neighbour transform per relation
        # (``U_r``): SAGEConv's own root weight would repeat W once per relation into the type.
        self.convs = nn.ModuleList(
            HeteroConv(
                {et: SAGEConv((hidden, hidden), hidden, root_weight=False) for et in edge_types}, aggr="sum"
            )
            for _ in range(n_layers)
        )
        self.roots = nn.ModuleList(
            nn.ModuleDict({t: nn.Linear(hidden, hidden) for t in input_dims}) for _ in range(n_layers)
        )
        self.scorer = nn.Sequential(
            nn.Linear(3 * hidden + n_pair_features, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, 1),
        )

    def encode(
        self,
        x: dict[str, torch.Tensor],
        edge_index: dict[EdgeType, torch.Tensor],
        attribute_names: torch.Tensor | None,
    ) -> dict[str, torch.Tensor]:
        h = {t: self.input[t](v) for t, v in x.items()}
        if attribute_names is not None and "attribute" in h:
            h["attribute"] = h["attribute"] + self.attribute_name(attribute_names)
        for conv, roots in zip(self.convs, self.roots, strict=True):
            messages = conv(h, edge_index)
            messages = {t: roots[t](v) + messages[t] if t in messages else roots[t](v) for t, v in h.items()}
            h = {
                t: v + F.dropout(F.relu(messages[t]), self.dropout, self.training) if t in messages else v
                for t, v in h.items()
            }
        return h

    def score(
        self, h: dict[str, torch.Tensor], users: torch.Tensor, items: torch.Tensor, pair: torch.Tensor
    ) -> torch.Tensor:
        hu, hi = h["user"][users], h["item"][items]
        return self.scorer(torch.cat([hu, hi, hu * hi, pair], dim=-1)).squeeze(-1)


class PurchaseGNN(Estimator):
    """Heterogeneous GraphSAGE purchase predictor (see the module docstring).

    ``fit(train_snapshots, valid=valid_snapshots)`` returns ``self``; ``predict_proba(snapshot)`` gives
    the purchase probability of each candidate pair. Learned state ends in ``_``.
    """

    name = "hetero-gnn"

    def __init__(
        self,
        *,
        hidden: int = 32,
        n_layers: int = 2,
        dropout: float = 0.1,
        negatives_per_positive: int = 100,
        min_negatives: int = 2000,
        pair_features: bool = True,
        training: TrainingOptions = GNN_TRAINING,
    ) -> None:
        self.hidden = hidden
        self.n_layers = n_layers
        self.dropout = dropout
        self.negatives_per_positive = negatives_per_positive
        self.min_negatives = min_negatives
        self.pair_features = pair_features
        self.training = training

    def _check_params(self) -> None:
        if self.hidden < 1 or self.n_layers < 1:
            raise ValueError(
                f"PurchaseGNN: hidden and n_layers must be at least 1, got {self.hidden}, {self.n_layers}"
            )
        if not 0 <= self.dropout < 1:
            raise ValueError(f"PurchaseGNN: dropout must be in [0, 1), got {self.dropout}")
        if self.training.device != "cpu":
            raise ValueError(
                f"PurchaseGNN trains on the CPU only; got training.device={self.training.device!r}"
            )

    # ------------------------------------------------------------------ tensors of a snapshot
    def _tensors(self, snapshot: PurchaseSnapshot) -> dict:
        graph = snapshot.graph
        features = node_features(graph, cutoff=snapshot.cutoff)
        x = {
            t: torch.from_numpy((features[t] - self.node_mean_[t]) / self.node_std_[t])
            for t in self.node_mean_
            if t in features
        }
        for t, dim in self.input_dims_.items():
            if t not in x:  # a node type this snapshot lacks: one dummy node nobody links to
                x[t] = torch.zeros(1, dim)
        edge_index: dict[EdgeType, torch.Tensor] = {}
        for relation in self.relations_:
            edge = graph.edges.get(relation)
            pairs = np.vstack([edge["source"], edge["target"]]) if edge is not None else np.zeros((2, 0))
            edge_index[relation] = torch.from_numpy(pairs.astype(np.int64))
            edge_index[_reverse(relation)] = edge_index[relation].flip(0)
        names = None
        if "attribute" in graph.node_ids:
            names = torch.tensor(
                [self.attribute_vocab_.get(a, 0) for a in graph.node_ids["attribute"].tolist()],
                dtype=torch.int64,
            )
        pair = (snapshot.features - self.pair_mean_) / self.pair_std_
        if not self.pair_features:
            pair = pair[:, :0]
        return {
            "x": x,
            "edge_index": edge_index,
            "attribute_names": names,
            "users": torch.from_numpy(snapshot.users),
            "items": torch.from_numpy(snapshot.items),
            "pair": torch.from_numpy(pair.astype(np.float32)),
            "labels": torch.from_numpy(snapshot.labels.astype(np.float32)),
        }

    # ------------------------------------------------------------------ fitting
    def fit(self, train: list[PurchaseSnapshot], *, valid: list[PurchaseSnapshot] | None = None) -> Self:
        """Learn from the training snapshots; stop early on the validation snapshots' ROC-AUC."""
        if not train or sum(s.n_positives for s in train) == 0:
            raise ValueError("PurchaseGNN.fit: the training snapshots have no purchased candidate pair")
        self._check_params()
        seed = self.training.seed
        torch.manual_seed(seed)
        self.feature_names_ = train[0].feature_names
        per_type = [node_features(s.graph, cutoff=s.cutoff) for s in train]
        self.input_dims_ = {t: f.shape[1] for t, f in per_type[0].items()}
        self.node_mean_ = {
            t: np.concatenate([f[t] for f in per_type if t in f]).mean(0) for t in self.input_dims_
        }
        self.node_std_ = {
            t: np.concatenate([f[t] for f in per_type if t in f]).std(0) + 1e-6 for t in self.input_dims_
        }
        pair = np.concatenate([s.features for s in train])
        self.pair_mean_, self.pair_std_ = pair.mean(0), pair.std(0) + 1e-6
        self.relations_ = sorted({et for s in train for et in s.graph.edges})
        names = sorted({a for s in train for a in s.graph.node_ids.get("attribute", np.array([])).tolist()})
        self.attribute_vocab_ = {a: n + 1 for n, a in enumerate(names)}
        self.net_ = self._new_net()
        train_tensors = [self._tensors(s) for s in train]
        valid_data = [(self._tensors(s), s.labels) for s in valid or [] if 0 < s.n_positives < s.n_pairs]

        def batches(epoch: int) -> Iterator[dict[str, torch.Tensor]]:
            # One full-graph step per training snapshot: its positives and a fresh uniform sample of its
            # negatives, drawn from (seed, epoch) so that a resumed run sees the same samples.
            rng = np.random.default_rng([seed, epoch])
            for index, snapshot in enumerate(train):
                positives = np.flatnonzero(snapshot.labels)
                negatives = np.flatnonzero(snapshot.labels == 0)
                n_neg = min(
                    len(negatives), max(self.min_negatives, self.negatives_per_positive * len(positives))
                )
                rows = np.concatenate([positives, rng.choice(negatives, n_neg, replace=False)])
                yield {"snapshot": torch.tensor(index), "rows": torch.from_numpy(rows)}

        def loss_fn(batch: dict[str, torch.Tensor]) -> torch.Tensor:
            t, rows = train_tensors[int(batch["snapshot"])], batch["rows"]
            h = self.net_.encode(t["x"], t["edge_index"], t["attribute_names"])
            logits = self.net_.score(h, t["users"][rows], t["items"][rows], t["pair"][rows])
            return F.binary_cross_entropy_with_logits(logits, t["labels"][rows])

        def validate() -> float:
            scores = np.concatenate([self._predict(t) for t, _ in valid_data])
            return float(skm.roc_auc_score(np.concatenate([y for _, y in valid_data]), scores))

        history = loop.train(
            self.net_,
            batches=batches,
            steps_per_epoch=len(train),
            loss_fn=loss_fn,
            validate=validate if valid_data else None,
            config=TrainerConfig.from_options(self.training),
        )
        self.net_.eval()
        self.history_: list[dict[str, float]] = [
            {"epoch": epoch, "loss": loss, **({"valid_roc_auc": metric} if metric is not None else {})}
            for epoch, (loss, metric) in enumerate(zip(history.losses, history.metrics, strict=True), start=1)
        ]
        self.best_epoch_ = history.best_epoch if history.best_epoch > 0 else history.epochs_run
        return self

    def _new_net(self) -> HeteroSAGE:
        return HeteroSAGE(
            input_dims=self.input_dims_,
            edge_types=[*self.relations_, *(_reverse(r) for r in self.relations_)],
            n_attribute_names=len(self.attribute_vocab_),
            n_pair_features=len(self.feature_names_) if self.pair_features else 0,
            hidden=self.hidden,
            n_layers=self.n_layers,
            dropout=self.dropout,
        )

    # ------------------------------------------------------------------ prediction
    def _predict(self, tensors: dict) -> np.ndarray:
        self.net_.eval()
        with torch.no_grad():
            h = self.net_.encode(tensors["x"], tensors["edge_index"], tensors["attribute_names"])
            return torch.sigmoid(
                self.net_.score(h, tensors["users"], tensors["items"], tensors["pair"])
            ).numpy()

    def predict_proba(self, snapshot: PurchaseSnapshot) -> np.ndarray:
        """Purchase probability of each candidate pair of ``snapshot`` (``float32 [n_pairs]``)."""
        if not hasattr(self, "net_"):
            raise RuntimeError("PurchaseGNN is not fitted yet: call fit(train_snapshots) first")
        if snapshot.feature_names != self.feature_names_:
            raise ValueError(
                f"snapshot features {snapshot.feature_names} differ from the model's {self.feature_names_}"
            )
        return self._predict(self._tensors(snapshot))

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write ``model.json`` (name, params, vocabularies, normalisation) and ``weights.safetensors``, the
        layout every saved model has (:func:`behaviorlm.models.registry.load_model` reads it)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.net_.state_dict().items()}, str(path / WEIGHTS_FILE))
        meta = {
            "model": self.name,
            "params": json_params(self),
            "feature_names": list(self.feature_names_),
            "input_dims": self.input_dims_,
            "node_mean": {t: v.tolist() for t, v in self.node_mean_.items()},
            "node_std": {t: v.tolist() for t, v in self.node_std_.items()},
            "pair_mean": self.pair_mean_.tolist(),
            "pair_std": self.pair_std_.tolist(),
            "relations": [list(et) for et in self.relations_],
            "attribute_vocab": self.attribute_vocab_,
            "best_epoch": self.best_epoch_,
            "history": self.history_,
        }
        (path / MODEL_JSON).write_text(json.dumps(meta))
        return path

    @classmethod
    def load(cls, path: str | Path) -> PurchaseGNN:
        """Read a model written by :meth:`save` (or an older folder with ``gnn.json``)."""
        path = Path(path)
        meta_file = next((path / n for n in (MODEL_JSON, LEGACY_JSON) if (path / n).exists()), None)
        if meta_file is None:
            raise FileNotFoundError(f"{path / MODEL_JSON} not found: {path} is not a saved purchase GNN")
        meta = json.loads(meta_file.read_text())
        if meta.get("model", cls.name) != cls.name:
            raise ValueError(f"{meta_file}: holds a {meta.get('model')!r} model, not {cls.name!r}")
        # Saved before the shared parameters: one "config" object with the training options in it.
        params = meta["params"] if "params" in meta else meta["config"]
        model = cls.from_params(params)
        model.feature_names_ = tuple(meta["feature_names"])
        model.input_dims_ = meta["input_dims"]
        model.node_mean_ = {t: np.asarray(v, dtype=np.float32) for t, v in meta["node_mean"].items()}
        model.node_std_ = {t: np.asarray(v, dtype=np.float32) for t, v in meta["node_std"].items()}
        model.pair_mean_ = np.asarray(meta["pair_mean"], dtype=np.float32)
        model.pair_std_ = np.asarray(meta["pair_std"], dtype=np.float32)
        model.relations_ = [tuple(et) for et in meta["relations"]]
        model.attribute_vocab_ = meta["attribute_vocab"]
        model.best_epoch_ = meta["best_epoch"]
        model.history_ = meta["history"]
        model.net_ = model._new_net()
        model.net_.load_state_dict(load_file(str(path / WEIGHTS_FILE)))
        return model
