"""Data-parallel training under torchrun: shards, two CPU processes against one, a 1M-item catalogue.

Run as a script by torchrun, this file is also the worker of the two-process test:
``python -m torch.distributed.run --standalone --nproc_per_node 2 tests/training/test_distributed.py OUT``.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.utils._python_dispatch import TorchDispatchMode
from typer.testing import CliRunner

from behaviorlm.cli.main import app
from behaviorlm.data.sequences import Interactions
from behaviorlm.data.splits import leave_one_out
from behaviorlm.evaluation.ranking import RankingValidation
from behaviorlm.models.base import ScoringBatch
from behaviorlm.models.registry import load_model
from behaviorlm.models.sequential import SequenceTensors, auto_training_settings, padding_share
from behaviorlm.models.transformer import BehaviorTransformer
from behaviorlm.training import distributed

# ---------------------------------------------------------------------------------------------- shards


@pytest.mark.parametrize(
    ("n_rows", "batch_size", "world_size"), [(10, 4, 2), (11, 4, 2), (103, 16, 4), (7, 3, 3)]
)
def test_shards_are_disjoint_equal_sized_and_cover_every_row(
    n_rows: int, batch_size: int, world_size: int
) -> None:
    shards = [
        distributed.shard_rows(n_rows, batch_size=batch_size, seed=3, epoch=2, rank=r, world_size=world_size)
        for r in range(world_size)
    ]
    n_batches = distributed.batches_per_epoch(n_rows, batch_size=batch_size, world_size=world_size)
    # Same number of batches, of the same sizes, on every rank: otherwise DDP waits forever.
    assert {len(batches) for batches in shards} == {n_batches}
    for step in range(n_batches):
        assert len({len(batches[step]) for batches in shards}) == 1
    rows = torch.cat([torch.cat(batches) for batches in shards]).tolist()
    padding = -n_rows % world_size
    assert sorted(set(rows)) == list(range(n_rows))
    assert len(rows) == n_rows + padding  # disjoint except the < world_size padding rows


def test_one_rank_is_plain_shuffled_minibatching_and_two_ranks_split_its_steps() -> None:
    single = distributed.shard_rows(50, batch_size=8, seed=1, epoch=4, rank=0, world_size=1)
    order = torch.randperm(50, generator=torch.Generator().manual_seed(1 * 100_003 + 4))
    assert [b.tolist() for b in single] == [order[i : i + 8].tolist() for i in range(0, 50, 8)]
    two = [distributed.shard_rows(50, batch_size=8, seed=1, epoch=4, rank=r, world_size=2) for r in (0, 1)]
    # With batch_size a multiple of the world size, step s over both ranks = step s of one process.
    for step, batch in enumerate(single):
        assert sorted(torch.cat([two[0][step], two[1][step]]).tolist()) == sorted(batch.tolist())


def test_shards_change_with_the_epoch_and_repeat_with_it() -> None:
    def rows(epoch: int) -> list[int]:
        return torch.cat(
            distributed.shard_rows(40, batch_size=8, seed=0, epoch=epoch, rank=1, world_size=2)
        ).tolist()

    assert rows(3) == rows(3)
    assert rows(3) != rows(4)


@pytest.mark.parametrize("world_size", [1, 2])
def test_grouping_by_length_keeps_each_ranks_rows_and_sizes_and_cuts_padding(world_size: int) -> None:
    n_rows, batch_size = 1003, 16
    lengths = torch.from_numpy(np.random.default_rng(0).geometric(0.2, size=n_rows).clip(max=50))

    def plain_and_grouped(
        *, epoch: int, rank: int, world: int
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        plain = distributed.shard_rows(
            n_rows, batch_size=batch_size, seed=5, epoch=epoch, rank=rank, world_size=world
        )
        return plain, distributed.group_by_length(plain, lengths, pool=10, seed=5, epoch=epoch)

    def padded_cells(batches: list[torch.Tensor]) -> int:
        return sum(int(lengths[b].max()) * len(b) for b in batches)

    for rank in range(world_size):
        plain, grouped = plain_and_grouped(epoch=1, rank=rank, world=world_size)
        assert sorted(len(b) for b in grouped) == sorted(len(b) for b in plain)
        assert len(grouped[0]) == len(plain[0])
        assert sorted(torch.cat(grouped).tolist()) == sorted(torch.cat(plain).tolist())
        assert padded_cells(grouped) < 0.6 * padded_cells(plain)
    # Every rank draws the same batch order (the same sizes at every step); epochs differ.
    shards = [plain_and_grouped(epoch=1, rank=r, world=2)[1] for r in (0, 1)]
    assert [len(b) for b in shards[0]] == [len(b) for b in shards[1]]
    first, again = (plain_and_grouped(epoch=e, rank=0, world=1)[1] for e in (1, 2))
    assert [b.tolist() for b in again] != [b.tolist() for b in first]


def test_batch_smaller_than_world_size_names_batch_size() -> None:
    with pytest.raises(ValueError, match="batch_size=2 is smaller than the number of processes"):
        distributed.batches_per_epoch(100, batch_size=2, world_size=4)


def test_single_process_helpers_are_identities(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert (distributed.world_size(), distributed.rank(), distributed.is_main_process()) == (1, 0, True)
    assert distributed.all_reduce_mean([1.5, 2.0]) == [1.5, 2.0]
    assert distributed.broadcast_from_main(None) is None
    assert distributed.any_rank(False) is False
    assert distributed.init_process_group(torch.device("cpu")) is False
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE='two'"):
        distributed.world_size()


# ---------------------------------------------------------------------------------------------- 2 processes vs 1

TORCHRUN_2 = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
"""torchrun with two processes on this machine (a free port is chosen by ``--standalone``)."""


def _torchrun_2(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``args`` under :data:`TORCHRUN_2` (5-minute limit) and assert that it succeeded."""
    run = subprocess.run(
        [*TORCHRUN_2, *args],
        env=_env_without_torchrun(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    return run


def _env_without_torchrun() -> dict[str, str]:
    """This process's environment minus any torchrun variables (when pytest itself runs under one)."""
    return {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}


PLANTED = {"n_users": 400, "n_items": 50, "length": 16, "follow": 0.7}
TRANSFORMER = {
    "d_model": 32,
    "n_layers": 1,
    "n_heads": 2,
    "dropout": 0.1,
    "max_len": 16,
    "epochs": 12,
    "lr": 5e-3,
    "batch_size": 64,
    "patience": 100,
    "seed": 0,
}
NDCG_TOLERANCE = 0.03
"""Largest accepted |NDCG@10(2 processes) - NDCG@10(1 process)|: the runs differ only in dropout draws and
in averaging per-process loss means; on this data the model plateaus near 0.75, popularity is below 0.1."""


def planted_walks(*, n_users: int, n_items: int, length: int, follow: float, seed: int = 0) -> Interactions:
    """Each user's next item is ``item + 1`` with probability ``follow``, else uniform: a ceiling on
    NDCG well below 1, so that two runs of a good model agree because both learned, not because both
    are perfect."""
    rng = np.random.default_rng(seed)
    users, items, times = [], [], []
    for u in range(n_users):
        item = int(rng.integers(n_items))
        for t in range(length):
            users.append(f"u{u:04d}")
            items.append(f"i{item:03d}")
            times.append(1_000 + 60 * t)
            item = (item + 1) % n_items if rng.random() < follow else int(rng.integers(n_items))
    return Interactions.from_events(
        user_ids=np.array(users),
        item_ids=np.array(items),
        timestamps=np.array(times),
        event_types=np.array(["view"] * len(users)),
        event_type_vocab=("view",),
        item_universe=np.array([f"i{i:03d}" for i in range(n_items)]),
    )


def train_planted(out: Path) -> None:
    """Fit the transformer on the planted walks (this process's share under torchrun) and write what the
    test compares: ``rank<r>.json`` (validation NDCG@10, losses, rows trained on) and the weights."""
    split = leave_one_out(planted_walks(**PLANTED))
    rows_seen: list[list[int]] = []
    original = SequenceTensors.batch

    def recording_batch(self: SequenceTensors, rows: torch.Tensor, **kwargs) -> dict[str, torch.Tensor]:
        rows_seen.append(rows.tolist())
        return original(self, rows, **kwargs)

    SequenceTensors.batch = recording_batch  # type: ignore[method-assign]
    try:
        model = BehaviorTransformer.from_params(
            {**TRANSFORMER, "checkpoint_dir": str(out / "checkpoint")}
        ).fit(split.train, valid=RankingValidation(split.train, split.valid))
    finally:
        SequenceTensors.batch = original  # type: ignore[method-assign]
    rank, world_size = distributed.rank(), distributed.world_size()
    record = {
        "rank": rank,
        "world_size": world_size,
        "best_valid_ndcg": model.history_.best_metric,
        "metrics": model.history_.metrics,
        "losses": model.history_.losses,
        "rows_seen": rows_seen,
    }
    (out / f"rank{rank}.json").write_text(json.dumps(record))
    save_file(model._state(), str(out / f"rank{rank}.safetensors"))
    distributed.cleanup()


def test_two_cpu_processes_match_one_process(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    started = time.perf_counter()
    _torchrun_2(__file__, str(two))
    two_seconds = time.perf_counter() - started
    # One thread, as torchrun gives each of its processes: tiny models on shared cores run far slower
    # with two threads fighting over them.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_planted(one)
    finally:
        torch.set_num_threads(threads)

    single = json.loads((one / "rank0.json").read_text())
    ranks = [json.loads((two / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2] and single["world_size"] == 1

    # The validation number (and so every early-stopping decision) is the same on both ranks.
    assert ranks[0]["metrics"] == ranks[1]["metrics"]
    assert ranks[0]["losses"] == ranks[1]["losses"]
    ndcg_one, ndcg_two = single["best_valid_ndcg"], ranks[0]["best_valid_ndcg"]
    assert ndcg_one > 0.5 and ndcg_two > 0.5, (ndcg_one, ndcg_two)
    assert abs(ndcg_two - ndcg_one) <= NDCG_TOLERANCE, (ndcg_one, ndcg_two)

    # Gradients were averaged: the two ranks end with identical weights, which differ from the
    # one-process weights (other dropout draws), so the comparison above is between two real runs.
    weights = [load_file(str(two / f"rank{r}.safetensors")) for r in (0, 1)]
    for name, tensor in weights[0].items():
        assert torch.equal(tensor, weights[1][name]), name
    single_weights = load_file(str(one / "rank0.safetensors"))
    assert any(not torch.equal(t, single_weights[k]) for k, t in weights[0].items())

    # Each rank trained on its own half of the users in every epoch, and together on all of them.
    n_users = PLANTED["n_users"]
    steps = distributed.batches_per_epoch(n_users, batch_size=TRANSFORMER["batch_size"], world_size=2)
    assert len(ranks[0]["rows_seen"]) == len(ranks[1]["rows_seen"]) == steps * TRANSFORMER["epochs"]
    assert len(single["rows_seen"]) == steps * TRANSFORMER["epochs"]  # same number of optimiser steps
    for epoch in range(TRANSFORMER["epochs"]):
        window = slice(epoch * steps, (epoch + 1) * steps)
        mine = [{row for batch in r["rows_seen"][window] for row in batch} for r in ranks]
        assert not mine[0] & mine[1]
        assert mine[0] | mine[1] == set(range(n_users))
        assert len(mine[0]) == len(mine[1]) == n_users // 2

    # Rank 0 wrote the checkpoint, with each rank's own random state for resuming.
    meta = json.loads((two / "checkpoint" / "trainer.json").read_text())
    assert meta["epoch"] == TRANSFORMER["epochs"]
    assert (
        len(meta["torch_rng_by_rank"]) == 2 and meta["torch_rng_by_rank"][0] != meta["torch_rng_by_rank"][1]
    )
    print(
        f"2 processes: {two_seconds:.1f} s with start-up; NDCG@10 1 process {ndcg_one:.4f}, 2 processes {ndcg_two:.4f}"
    )


# ---------------------------------------------------------------------------------------------- the CLI


def _planted_store(tmp_path: Path) -> Path:
    walks = planted_walks(n_users=120, n_items=30, length=10, follow=0.9)
    users = walks.event_users()
    lines = ["user_id,item_id,event_type,timestamp"] + [
        f"{walks.user_ids[u]},{walks.item_ids[i]},view,{1_700_000_000 + t}"
        for u, i, t in zip(users, walks.items, walks.timestamps, strict=True)
    ]
    (tmp_path / "events.csv").write_text("\n".join(lines) + "\n")
    store = tmp_path / "events.duckdb"
    mapping = [f"--map={field}={field}" for field in ("user_id", "item_id", "event_type", "timestamp")]
    result = CliRunner().invoke(
        app, ["ingest", str(tmp_path / "events.csv"), "--store", str(store), *mapping]
    )
    assert result.exit_code == 0, result.output
    return store


def test_cli_train_under_torchrun_saves_once_from_rank_0(tmp_path: Path) -> None:
    store = _planted_store(tmp_path)
    out = tmp_path / "model"
    params = [
        "-p",
        "epochs=3",
        "-p",
        "d_model=16",
        "-p",
        "n_layers=1",
        "-p",
        "max_len=10",
        "-p",
        "batch_size=32",
    ]
    train = ["train", "--model", "transformer", "--store", str(store), "--out", str(out), *params]
    run = _torchrun_2("-m", "behaviorlm.cli.main", *train)
    # Both processes read the store at once (read-only); only rank 0 reported and saved.
    assert run.stdout.count("trained transformer on 2 processes") == 1, run.stdout
    summary = json.loads(run.stdout[run.stdout.index("{") : run.stdout.index("}") + 1])
    assert summary["epochs_run"] == 3 and summary["best_valid_ndcg@10"] > 0
    assert json.loads((out / "split.json").read_text())["split"]["protocol"] == "loo"
    recs = load_model(out).recommend(np.arange(3), k=5)
    assert recs.items.shape == (3, 5)


def test_cli_train_under_torchrun_refuses_models_that_do_not_shard(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    result = CliRunner().invoke(
        app, ["train", "--model", "ease", "--out", "unused", "--store", "unused.duckdb"]
    )
    assert result.exit_code == 2
    assert "--model ease does not train data-parallel" in result.output


# ---------------------------------------------------------------------------------------------- 1M items


class LargestTensor(TorchDispatchMode):
    """Records the element count of the largest tensor any torch operation returns while active."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(value, torch.Tensor):
                self.largest = max(self.largest, value.numel())
        return out


CORNER = 100
"""Items the users of the large-catalogue tests visit: every ``n_items // CORNER``-th item."""


def big_catalogue_walks(*, n_items: int, n_users: int, length: int, seed: int = 0) -> Interactions:
    """Users stepping through ``CORNER`` items spread over an ``n_items`` catalogue, always from one to
    the next (item ``k * stride`` is followed by ``(k + 1) * stride``)."""
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, CORNER, size=n_users)
    item_index = (starts[:, None] + np.arange(length)[None, :]) % CORNER * (n_items // CORNER)
    ids = np.char.add("i", np.arange(n_items).astype(str))
    return Interactions.from_events(
        user_ids=np.repeat(np.char.add("u", np.arange(n_users).astype(str)), length),
        item_ids=ids[item_index.ravel()],
        timestamps=np.tile(np.arange(length) * 60, n_users),
        event_types=np.array(["view"] * (n_users * length)),
        event_type_vocab=("view",),
        item_universe=ids,
    )


SAMPLED = {"d_model": 32, "n_layers": 1, "n_heads": 2, "dropout": 0.0, "max_len": 12, "n_time_buckets": 0}


def test_sampled_softmax_trains_and_scores_a_million_item_catalogue() -> None:
    n_items = 1_000_000
    data = big_catalogue_walks(n_items=n_items, n_users=128, length=13)
    assert data.n_items == n_items
    # 4 epochs of 2 steps: each step costs O(n_items x d_model) (dense table gradient, AdamW update).
    model = BehaviorTransformer.from_params(
        {
            **SAMPLED,
            "loss": "sampled",
            "n_negatives": 512,
            "epochs": 4,
            "batch_size": 64,
            "lr": 2e-2,
            "patience": 100,
        }
    )
    probe = LargestTensor()
    with probe:
        model.fit(data)
    losses = model.history_.losses
    assert all(b < a for a, b in itertools.pairwise(losses)), losses
    assert losses[-1] < 0.85 * losses[0], losses
    # The item table (and its gradient and Adam moments) is the largest tensor: n_positions x n_items
    # logits (here 64 x 12 x 1M) were never built.
    table_elements = (n_items + 1) * SAMPLED["d_model"]
    assert probe.largest <= table_elements, (probe.largest, table_elements)

    # Full-catalogue scoring for a few users: every item gets a score; seen items are masked.
    users = np.arange(4)
    scores = model.score(ScoringBatch(users=users, history=data))
    assert scores.shape == (4, n_items) and torch.isfinite(scores).all()
    recs = model.recommend(users, k=10, exclude_seen=True)
    seen = [set(data.items[data.user_ptr[u] : data.user_ptr[u + 1]].tolist()) for u in users]
    assert all(not set(row.tolist()) & s for row, s in zip(recs.items, seen, strict=True))
    # The walk continues from the last item: the learned next item ranks near the top for these users.
    next_items = [(data.items[data.user_ptr[u + 1] - 1] + n_items // CORNER) % n_items for u in users]
    ranks = [int((scores[i] > scores[i, item]).sum()) for i, item in enumerate(next_items)]
    assert np.median(ranks) < 100, ranks


def test_the_largest_tensor_probe_sees_full_softmax_logits() -> None:
    n_items = 20_000
    data = big_catalogue_walks(n_items=n_items, n_users=64, length=13)
    probe = LargestTensor()
    with probe:
        BehaviorTransformer.from_params({**SAMPLED, "loss": "full", "epochs": 1, "batch_size": 64}).fit(data)
    assert probe.largest >= 64 * 12 * n_items


def test_auto_loss_is_full_up_to_the_cpu_limit_and_sampled_above() -> None:
    # One event type, sequences of 13: 12 input positions per user, 64 users -> 768 positions.
    for n_items, expected in ((20_000, "full"), (20_001, "sampled")):
        data = big_catalogue_walks(n_items=n_items, n_users=64, length=13)
        probe = LargestTensor()
        with probe:
            model = BehaviorTransformer.from_params({**SAMPLED, "epochs": 1, "batch_size": 64}).fit(data)
        assert model.loss == "auto" and model.training_summary()["loss"] == expected
        if expected == "full":
            assert probe.largest >= 64 * 12 * n_items
        else:
            assert probe.largest < 64 * 12 * n_items // 4  # 4,097 sampled logits per position at most
    assert auto_training_settings(np.full(10, 5), n_items=54_542, batch_size=4, device_type="cuda")[
        "loss"
    ] == ("full")


def test_auto_grouping_follows_the_padding_of_random_batches() -> None:
    rng = np.random.default_rng(0)
    short = rng.geometric(0.2, size=5000).clip(max=50)  # median ~4 in a window of 50, like Amazon Beauty
    long = np.full(943, 50) - rng.integers(0, 10, size=943)  # nearly full windows, like ML-100k
    assert padding_share(short, batch_size=128) > 0.7
    assert padding_share(long, batch_size=128) < 0.2
    assert padding_share(np.full(7, 3), batch_size=2) == 0.0
    settings = [
        auto_training_settings(x, n_items=100, batch_size=128, device_type="cpu") for x in (short, long)
    ]
    assert [s["group_by_length"] for s in settings] == [True, False]
    assert [s["loss"] for s in settings] == ["full", "full"]


if __name__ == "__main__":
    train_planted(Path(sys.argv[1]))
