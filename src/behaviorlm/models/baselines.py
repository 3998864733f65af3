"""Non-neural baselines every learned model has to beat: random, popularity, ItemKNN and EASE.

All four follow the interface of :mod:`behaviorlm.models.base`: the constructor stores keyword
arguments only, ``fit`` learns the state (attributes ending in ``_``), ``score`` returns dense
``float32 [len(batch.users), n_items]`` scores computed from ``batch.history`` (not from the training
data, so an evaluator can pass train + validation as history).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from behaviorlm.data.sequences import Interactions
from behaviorlm.models.base import Recommender, ScoringBatch, register

EASE_DENSE_BUDGET_BYTES = 8 * 2**30
"""Working memory EASE may use for its dense item-item matrices before ``max_items`` is required."""

EASE_FIT_BYTES_PER_ENTRY = 8 + 4
"""Peak EASE fit memory per entry of the ``[m, m]`` model: the float64 Gram matrix (factorised,
inverted and turned into ``B`` in place) and the float32 ``B`` it is finally cast to."""


def _check_batch(model: Recommender, batch: ScoringBatch) -> None:
    train = model._fitted()
    if batch.history.n_items != train.n_items:
        raise ValueError(
            f"{type(model).__name__}.score: the history has {batch.history.n_items} items but the model "
            f"was fitted on {train.n_items}; history must share the training index space"
        )
    if len(batch.users) and (batch.users.min() < 0 or batch.users.max() >= batch.history.n_users):
        raise ValueError(
            f"{type(model).__name__}.score: user indices must be in [0, {batch.history.n_users}), "
            f"got range [{batch.users.min()}, {batch.users.max()}]"
        )


@register
class RandomRecommender(Recommender):
    """Uniform random scores in ``[0, 1)``: the floor every model must clear.

    Scores are a deterministic function of ``(seed, user index)``: scoring a user twice, alone or in
    any batch, gives the same row. They ignore the history entirely.
    """

    name = "random"

    def __init__(self, *, seed: int = 0) -> None:
        self.seed = seed

    def _fit(self, train: Interactions) -> None:
        """Nothing to learn; the training data only fixes the index space."""

    def score(self, batch: ScoringBatch) -> torch.Tensor:
        _check_batch(self, batch)
        n_items = self.n_items
        scores = np.empty((len(batch.users), n_items), dtype=np.float32)
        for row, user in enumerate(batch.users.tolist()):
            # One stream per (seed, user) keeps a user's scores independent of the batch it is in.
            scores[row] = np.random.default_rng((self.seed, user)).random(n_items, dtype=np.float32)
        return torch.from_numpy(scores)


@register
class Popularity(Recommender):
    """Most-popular: every user gets the training interaction count of each item as its score.

    Counts include repeated events (an item bought twice by one user counts twice). It is the
    non-personalised reference of Cremonesi et al., "Performance of recommender algorithms on top-N
    recommendation tasks", RecSys 2010 (the "MostPop" baseline).
    """

    name = "pop"

    def _fit(self, train: Interactions) -> None:
        self.item_counts_ = torch.from_numpy(train.item_counts().astype(np.float32))

    def score(self, batch: ScoringBatch) -> torch.Tensor:
        _check_batch(self, batch)
        return self.item_counts_.expand(len(batch.users), -1).clone()

    def _state(self) -> dict[str, torch.Tensor]:
        return {"item_counts": self.item_counts_}

    def _load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        self.item_counts_ = tensors["item_counts"]


@register
class ItemKNN(Recommender):
    """Item-based k-nearest-neighbour collaborative filtering on binary interactions.

    Sarwar et al., "Item-based collaborative filtering recommendation algorithms", WWW 2001, and the
    top-N form of Deshpande & Karypis, "Item-based top-N recommendation algorithms", TOIS 2004:

    * similarity of items ``i != j`` from the binary user x item matrix ``X`` with co-occurrence
      ``c_ij = (XᵀX)_ij`` and item supports ``n_i = c_ii``:

      - ``"cosine"``:  ``s_ij = c_ij / (sqrt(n_i * n_j) + shrink)``  (Sarwar et al., eq. 1 on binary data)
      - ``"jaccard"``: ``s_ij = c_ij / (n_i + n_j - c_ij + shrink)``

      ``shrink`` damps similarities supported by few co-occurrences (Koren, KDD 2008, eq. 2 uses the
      same device); ``s_ii = 0``.
    * model ``S``: row ``i`` keeps only the ``k`` largest ``s_ij`` (Deshpande & Karypis, section 4.1);
      ties go to the lower item index.
    * score of user ``u`` for item ``j``: ``sum_{i in history(u)} S_ij``, i.e. ``x_u @ S`` with the
      binary history row ``x_u`` (section 4.2, without their row normalisation).

    The similarity matrix is built sparse, a block of items at a time, and pruned per block, so memory
    stays proportional to the co-occurrence pairs of one block plus ``n_items * k``.
    """

    name = "itemknn"
    _SIMILARITIES = ("cosine", "jaccard")

    def __init__(self, *, k: int = 100, shrink: float = 0.0, similarity: str = "cosine") -> None:
        self.k = k
        self.shrink = shrink
        self.similarity = similarity

    def _fit(self, train: Interactions) -> None:
        if not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"ItemKNN: k must be a positive integer, got {self.k!r}")
        if self.shrink < 0:
            raise ValueError(f"ItemKNN: shrink must be >= 0, got {self.shrink!r}")
        if self.similarity not in self._SIMILARITIES:
            raise ValueError(
                f"ItemKNN: similarity must be one of {self._SIMILARITIES}, got {self.similarity!r}"
            )
        self.similarity_ = item_knn_similarity(
            train.to_csr(binary=True), k=self.k, shrink=self.shrink, similarity=self.similarity
        )

    def score(self, batch: ScoringBatch) -> torch.Tensor:
        _check_batch(self, batch)
        scores = (batch.history_csr @ self.similarity_).toarray()
        return torch.from_numpy(scores.astype(np.float32, copy=False))

    def _state(self) -> dict[str, torch.Tensor]:
        sim = self.similarity_
        return {
            "similarity.indptr": torch.from_numpy(sim.indptr.astype(np.int64)),
            "similarity.indices": torch.from_numpy(sim.indices.astype(np.int64)),
            "similarity.data": torch.from_numpy(sim.data),
        }

    def _load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        n_items = self.n_items
        self.similarity_ = sp.csr_matrix(
            (
                tensors["similarity.data"].numpy(),
                tensors["similarity.indices"].numpy(),
                tensors["similarity.indptr"].numpy(),
            ),
            shape=(n_items, n_items),
        )


def item_knn_similarity(
    user_item: sp.csr_matrix,
    *,
    k: int,
    shrink: float = 0.0,
    similarity: str = "cosine",
    block_items: int = 4096,
) -> sp.csr_matrix:
    """Top-``k``-per-row item-item similarity ``float32 [n_items, n_items]`` (see :class:`ItemKNN`).

    ``user_item`` is a binary user x item matrix. Rows are computed ``block_items`` at a time as
    ``X[:, block]ᵀ X`` and pruned to their ``k`` largest entries before the next block, so the full
    co-occurrence matrix never exists. The result has sorted column indices and no explicit zeros.
    """
    n_items = user_item.shape[1]
    x = sp.csr_matrix(user_item, dtype=np.float32)
    x_t = x.T.tocsr()
    support = np.asarray(x.sum(axis=0), dtype=np.float64).ravel()
    out_rows, out_cols, out_vals = [], [], []
    for start in range(0, n_items, block_items):
        stop = min(start + block_items, n_items)
        co = (x_t[start:stop] @ x).tocsr()
        co.sum_duplicates()
        rows = np.repeat(np.arange(start, stop, dtype=np.int64), np.diff(co.indptr))
        cols = co.indices.astype(np.int64)
        counts = co.data.astype(np.float64)
        off_diagonal = cols != rows
        rows, cols, counts = rows[off_diagonal], cols[off_diagonal], counts[off_diagonal]
        if similarity == "cosine":
            sims = counts / (np.sqrt(support[rows] * support[cols]) + shrink)
        elif similarity == "jaccard":
            sims = counts / (support[rows] + support[cols] - counts + shrink)
        else:
            raise ValueError(f"unknown similarity {similarity!r}; use 'cosine' or 'jaccard'")
        sims = sims.astype(np.float32)
        positive = sims > 0
        rows, cols, sims = rows[positive], cols[positive], sims[positive]
        # Within each row: largest similarity first, ties to the lower item index; keep the first k.
        order = np.lexsort((cols, -sims, rows))
        rows, cols, sims = rows[order], cols[order], sims[order]
        row_start = np.searchsorted(rows, rows, side="left")
        keep = (np.arange(len(rows)) - row_start) < k
        out_rows.append(rows[keep])
        out_cols.append(cols[keep])
        out_vals.append(sims[keep])
    result = sp.csr_matrix(
        (np.concatenate(out_vals), (np.concatenate(out_rows), np.concatenate(out_cols))),
        shape=(n_items, n_items),
        dtype=np.float32,
    )
    result.sort_indices()
    return result


@register
class EASE(Recommender):
    """Embarrassingly Shallow Autoencoder (Steck, "Embarrassingly shallow autoencoders for sparse data",
    WWW 2019).

    Closed form (eq. 8 of the paper): with the binary user x item matrix ``X``,
    ``P = (XᵀX + λI)⁻¹`` and ``B = I - P · diagMat(1 ⊘ diag(P))``, i.e. ``B_ij = -P_ij / P_jj`` for
    ``i != j`` and ``B_jj = 0``. A user's scores are ``x_u @ B``. ``λ`` is ``l2``. ``P`` comes from a
    float64 Cholesky factorisation (see :func:`ease_weights`); ``B`` is kept as float32.

    ``B`` is dense ``[m, m]``, which is the limit of this model: a fit needs about ``12 * m²`` bytes
    (20,000 items: 4.5 GiB). With ``max_items=None`` every item is modelled and a catalogue whose fit would
    need more than 8 GiB is refused with an error naming ``max_items``. With ``max_items=m`` only the
    ``m`` most popular training items (ties to the lower index) form the item-item model; every other
    item scores strictly below the user's lowest modelled score, ordered by training popularity
    (``min_modelled - 1 - r`` for the ``r``-th most popular unmodelled item). The ranking stays total
    and puts unmodelled items last, but their score values carry no meaning beyond that order.
    """

    name = "ease"

    def __init__(self, *, l2: float = 500.0, max_items: int | None = None) -> None:
        self.l2 = l2
        self.max_items = max_items

    def _fit(self, train: Interactions) -> None:
        if not self.l2 > 0:
            raise ValueError(f"EASE: l2 must be > 0 (it makes XᵀX + l2·I invertible), got {self.l2!r}")
        if self.max_items is not None and (not isinstance(self.max_items, int) or self.max_items < 1):
            raise ValueError(f"EASE: max_items must be None or a positive integer, got {self.max_items!r}")
        n_items = train.n_items
        n_modelled = n_items if self.max_items is None else min(self.max_items, n_items)
        working_bytes = EASE_FIT_BYTES_PER_ENTRY * n_modelled**2
        if self.max_items is None and working_bytes > EASE_DENSE_BUDGET_BYTES:
            raise ValueError(
                f"EASE: modelling all {n_items} items needs dense {n_items}x{n_items} matrices "
                f"(~{working_bytes / 2**30:.1f} GiB, budget {EASE_DENSE_BUDGET_BYTES / 2**30:.0f} GiB); "
                f"set max_items (e.g. EASE(max_items=20000)) to model only the most popular items"
            )
        by_popularity = np.argsort(-train.item_counts(), kind="stable")
        modelled = np.sort(by_popularity[:n_modelled])
        self.modelled_items_ = torch.from_numpy(modelled.astype(np.int64))
        self.fallback_items_ = torch.from_numpy(by_popularity[n_modelled:].astype(np.int64))
        x = train.to_csr(binary=True)[:, modelled]
        self.weights_ = ease_weights(x, l2=self.l2)

    def score(self, batch: ScoringBatch) -> torch.Tensor:
        _check_batch(self, batch)
        modelled = self.modelled_items_.numpy()
        history = batch.history_csr[:, modelled]
        modelled_scores = np.asarray(history @ self.weights_.numpy(), dtype=np.float32)
        scores = torch.empty((len(batch.users), self.n_items), dtype=torch.float32)
        scores[:, self.modelled_items_] = torch.from_numpy(modelled_scores)
        n_fallback = len(self.fallback_items_)
        if n_fallback:
            lowest = torch.from_numpy(modelled_scores.min(axis=1))
            steps = torch.arange(n_fallback, dtype=torch.float32)
            scores[:, self.fallback_items_] = (lowest - 1.0)[:, None] - steps[None, :]
        return scores

    def _state(self) -> dict[str, torch.Tensor]:
        return {
            "weights": self.weights_,
            "modelled_items": self.modelled_items_,
            "fallback_items": self.fallback_items_,
        }

    def _load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        self.weights_ = tensors["weights"].contiguous()
        self.modelled_items_ = tensors["modelled_items"]
        self.fallback_items_ = tensors["fallback_items"]


def ease_weights(user_item: sp.spmatrix, *, l2: float) -> torch.Tensor:
    """EASE item-item weights ``B`` (Steck 2019, eq. 8), ``float32 [n_items, n_items]`` with zero diagonal.

    ``user_item`` is the binary user x item matrix ``X``. ``P = (XᵀX + l2·I)⁻¹`` is computed in float64
    by a Cholesky factorisation and ``cholesky_inverse``, both in place in the Gram matrix's buffer, then
    ``B = -P / diag(P)`` column-wise (``B_ij = -P_ij / P_jj``) and ``diag(B) = 0``, also in place, so the
    peak is one float64 and one float32 ``[n, n]`` matrix.
    """
    x = sp.csr_matrix(user_item, dtype=np.float64)
    gram = torch.from_numpy((x.T @ x).toarray())
    gram.diagonal().add_(l2)
    precision = torch.linalg.cholesky(gram, out=gram)
    torch.cholesky_inverse(precision, out=precision)
    precision.div_(-precision.diagonal().clone()[None, :])
    precision.fill_diagonal_(0.0)
    # LAPACK leaves the buffer column-major; scoring wants row-major B (a strided B would be copied
    # on every scoring batch).
    return precision.to(torch.float32, memory_format=torch.contiguous_format)
