"""RecBole 1.2.1 SASRec on ML-100k under a wall-time cap, recorded as one benchmarks/results.jsonl line.

The peer a user would otherwise pick, run on the same data and leave-one-out split as
``benchmarks/run_sequential.py`` so the speed ratio is measured, not quoted. Run it with the RecBole
venv (see ``setup_recbole.sh``), not the project's::

    benchmarks/peers/.venv-recbole/bin/python benchmarks/peers/recbole_sasrec.py --max-seconds 1500

Configuration: RecBole's own defaults for SASRec (``properties/model/SASRec.yaml``,
``properties/overall.yaml`` and, because the dataset is named ``ml-100k``, its
``properties/dataset/ml-100k.yaml``) plus what the issue fixes: ``loss_type=CE`` (so no negative
sampling), ``MAX_ITEM_LIST_LENGTH=200``, leave-one-out by time (``LS: valid_and_test``, ``order: TO``),
full ranking, Hit/NDCG/MRR at 10 and 20, CPU, 2 threads.

The cap is enforced between epochs (an epoch is not started when the one before it says it would not
fit) and, if a single epoch is longer than the cap, after the batch that crosses it; the partial epoch
is then validated like a full one. Either way the best-validation checkpoint is evaluated on test and
the run records ``training.stopped_by_time``.

Incompatibilities with the versions installed by ``setup_recbole.sh`` are patched here, not in
site-packages:

* ``np.float`` (removed in numpy 1.24, used by RecBole's NDCG/MRR) is aliased to ``float``;
* ``torch.load`` defaults to ``weights_only=True`` since torch 2.6, and RecBole's checkpoints pickle its
  ``Config``: the best checkpoint (written by this process) is loaded here with ``weights_only=False``;
* ``torch.utils.tensorboard`` needs the ``tensorboard`` package, which RecBole's trainer only uses for
  logging: it is replaced by a no-op ``SummaryWriter``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import types
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
INTER_FILE = REPO / "src" / "behaviorlm" / "datasets" / "ml-100k" / "ml-100k.inter"
RESULTS = REPO / "benchmarks" / "results.jsonl"


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=1500.0,
        help="wall-time cap on training (train + validation epochs), in seconds (default 1500)",
    )
    parser.add_argument("--epochs", type=int, default=300, help="RecBole's default: 300")
    parser.add_argument("--train-batch-size", type=int, default=2048, help="RecBole's default: 2048")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--seed", type=int, default=2020, help="RecBole's default: 2020")
    parser.add_argument(
        "--out",
        type=Path,
        default=RESULTS,
        help=f"JSON-lines file the result is appended to (default {RESULTS.relative_to(REPO)})",
    )
    parser.add_argument(
        "--keep-workdir",
        action="store_true",
        help="keep RecBole's scratch directory (dataset copy, logs, checkpoint) and print its path",
    )
    return parser.parse_args()


def _install_compat_patches() -> None:
    """Let RecBole 1.2.1 run on numpy 1.26 and torch 2.13 without editing site-packages."""
    import numpy as np

    if not hasattr(np, "float"):
        np.float = float  # type: ignore[attr-defined]

    class _NoOpSummaryWriter:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

        def __getattr__(self, name: str) -> Any:
            return lambda *args, **kwargs: None

    stub = types.ModuleType("torch.utils.tensorboard")
    stub.SummaryWriter = _NoOpSummaryWriter  # type: ignore[attr-defined]
    sys.modules["torch.utils.tensorboard"] = stub


def _machine_description() -> str:
    """Same wording as behaviorlm.evaluation.benchmark.machine_description (not importable here)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    cores = len(os.sched_getaffinity(0))
    return f"{cpu}, {cores} cores, {mem_gb:.0f} GiB, {platform.system()} {platform.release()}"


def _git_commit() -> str:
    """Short hash of the checked-out commit (``-dirty`` if tracked files changed), or ``unknown``."""
    try:

        def git(*args: str) -> str:
            return subprocess.run(
                ["git", *args], cwd=REPO, capture_output=True, text=True, check=True, timeout=10
            ).stdout.strip()

        dirty = git("status", "--porcelain", "--untracked-files=no")
        return git("rev-parse", "--short", "HEAD") + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class _StopByTime(Exception):
    """Raised from RecBole's end-of-epoch callback to leave ``Trainer.fit`` once the cap is reached."""


# A factory: the base class is only importable after _install_compat_patches has run.
def _time_capped_trainer_class() -> type:
    from recbole.trainer import Trainer

    class TimeCappedTrainer(Trainer):
        """RecBole's Trainer, unchanged except that each epoch is timed and cut at ``deadline``."""

        def __init__(self, config, model, *, deadline: float) -> None:
            super().__init__(config, model)
            self.deadline = deadline
            self.epoch_train_seconds: list[float] = []
            self.epoch_batches: list[int] = []
            self.batches_per_epoch = 0
            self.stopped_mid_epoch = False

        def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
            self.batches_per_epoch = len(train_data)
            done = 0

            def batches_until_deadline():
                nonlocal done
                for batch in train_data:
                    # At least one batch per epoch, so a tiny cap still yields a trained model.
                    if done > 0 and time.perf_counter() >= self.deadline:
                        self.stopped_mid_epoch = True
                        return
                    done += 1
                    yield batch

            started = time.perf_counter()
            loss = super()._train_epoch(
                batches_until_deadline(), epoch_idx, loss_func=loss_func, show_progress=False
            )
            self.epoch_train_seconds.append(time.perf_counter() - started)
            self.epoch_batches.append(done)
            return loss

    return TimeCappedTrainer


def main() -> None:
    args = _parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    out_path = args.out.resolve()
    _install_compat_patches()

    import numpy as np
    import pandas as pd
    import recbole
    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import SASRec
    from recbole.utils import init_logger, init_seed

    workdir = Path(tempfile.mkdtemp(prefix="recbole-sasrec-"))
    # RecBole writes log/, saved/ and log_tensorboard/ relative to the working directory.
    os.chdir(workdir)
    (workdir / "ml-100k").mkdir()
    shutil.copyfile(INTER_FILE, workdir / "ml-100k" / "ml-100k.inter")

    config_dict: dict[str, Any] = {
        "data_path": str(workdir),
        "checkpoint_dir": str(workdir / "saved"),
        "use_gpu": False,
        "seed": args.seed,
        "reproducibility": True,
        "show_progress": False,
        "worker": 0,
        "epochs": args.epochs,
        "train_batch_size": args.train_batch_size,
        "loss_type": "CE",
        "train_neg_sample_args": None,
        "MAX_ITEM_LIST_LENGTH": 200,
        "eval_args": {
            "split": {"LS": "valid_and_test"},
            "group_by": "user",
            "order": "TO",
            "mode": "full",
        },
        "metrics": ["Hit", "NDCG", "MRR"],
        "topk": [10, 20],
        "valid_metric": "MRR@10",
        # RecBole rounds metrics to 4 places by default; keep more for the table.
        "metric_decimal_place": 6,
    }
    config = Config(model="SASRec", dataset="ml-100k", config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    torch.set_num_threads(args.threads)
    init_logger(config)
    logger = logging.getLogger()

    wall_started = time.perf_counter()
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    prepare_seconds = time.perf_counter() - wall_started
    logger.info(str(dataset))

    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = SASRec(config, train_data._dataset).to(config["device"])
    logger.info(str(model))

    train_started = time.perf_counter()
    trainer = _time_capped_trainer_class()(config, model, deadline=train_started + args.max_seconds)
    epoch_ends: list[float] = []

    def stop_when_next_epoch_would_not_fit(epoch_idx: int, valid_score: float) -> None:
        now = time.perf_counter()
        epoch_ends.append(now)
        last_epoch = now - (epoch_ends[-2] if len(epoch_ends) > 1 else train_started)
        if trainer.stopped_mid_epoch or now + last_epoch > train_started + args.max_seconds:
            raise _StopByTime

    stopped_by_time = False
    try:
        best_valid_score, best_valid_result = trainer.fit(
            train_data,
            valid_data,
            saved=True,
            show_progress=False,
            callback_fn=stop_when_next_epoch_would_not_fit,
        )
    except _StopByTime:
        stopped_by_time = True
        best_valid_score, best_valid_result = trainer.best_valid_score, trainer.best_valid_result
    train_seconds = time.perf_counter() - train_started

    # torch >= 2.6 loads weights only by default; this checkpoint was written by this process.
    checkpoint = torch.load(trainer.saved_model_file, map_location=trainer.device, weights_only=False)
    trainer.model.load_state_dict(checkpoint["state_dict"])
    trainer.model.load_other_parameter(checkpoint.get("other_parameter"))
    best_epoch = int(checkpoint["epoch"])

    eval_started = time.perf_counter()
    test_result = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
    eval_seconds = time.perf_counter() - eval_started

    def ours(result: dict[str, float]) -> dict[str, float]:
        renamed = {key.replace("hit@", "hr@"): float(value) for key, value in result.items()}
        return dict(sorted(renamed.items()))

    full_epochs = [
        seconds
        for seconds, batches in zip(trainer.epoch_train_seconds, trainer.epoch_batches, strict=True)
        if batches == trainer.batches_per_epoch
    ]
    batches_run = sum(trainer.epoch_batches)
    seconds_per_batch = sum(trainer.epoch_train_seconds) / batches_run
    if full_epochs:
        seconds_per_epoch, seconds_per_epoch_source = sum(full_epochs) / len(full_epochs), "measured"
    else:
        seconds_per_epoch = seconds_per_batch * trainer.batches_per_epoch
        seconds_per_epoch_source = "extrapolated from seconds_per_batch"
    n_train_sequences = len(train_data._dataset)
    n_test_users = len(test_data._dataset)

    record = {
        "dataset": "ml-100k",
        "model": "recbole-sasrec",
        "params": {
            key: config[key]
            for key in (
                "n_layers",
                "n_heads",
                "hidden_size",
                "inner_size",
                "hidden_dropout_prob",
                "attn_dropout_prob",
                "hidden_act",
                "layer_norm_eps",
                "initializer_range",
                "loss_type",
                "MAX_ITEM_LIST_LENGTH",
                "learner",
                "learning_rate",
                "weight_decay",
                "train_batch_size",
                "eval_batch_size",
                "epochs",
                "stopping_step",
                "valid_metric",
                "seed",
            )
        }
        | {"threads": args.threads, "max_seconds": args.max_seconds},
        "protocol": {
            "framework": f"RecBole {recbole.__version__}",
            "split": "leave-one-out",
            "split_params": {
                "eval_args": config["eval_args"],
                # RecBole min-max normalises the timestamp and stores it as float32, so events about
                # a second apart tie and keep file order (4 test / 5 valid targets of 943 differ
                # from behaviorlm's leave_one_out, which orders by the integer timestamp).
                "order": "timestamp as float32 after min-max normalisation, ties in file order",
                "n_users_evaluated": n_test_users,
                "n_valid_targets": len(valid_data._dataset),
                "n_test_targets": n_test_users,
                "n_train_sequences": n_train_sequences,
                "filtering": "none (RecBole's ml-100k.yaml: no k-core, no rating threshold)",
            },
            "ranking": "full",
            "n_candidates": int(dataset.item_num - 1),
            # FullSortEvalDataLoader passes no history for sequential models: only the padding item is
            # excluded, items already in the user's history stay rankable.
            "mask_seen": False,
            "tie_handling": "torch.topk order (not pessimistic)",
            "evaluated_on": "test",
            "history": "train+valid (the test sequence ends with the validation item)",
            "training_examples": "one per (user, prefix): the last position of each prefix is scored",
            "ks": [10, 20],
        },
        "metrics": ours(test_result),
        "n_users": n_test_users,
        "train_seconds": train_seconds,
        "eval_seconds": eval_seconds,
        "training": {
            "epochs_run": len(trainer.epoch_train_seconds),
            "full_epochs_run": len(full_epochs),
            "batches_per_epoch": trainer.batches_per_epoch,
            "batches_run": batches_run,
            "seconds_per_batch": seconds_per_batch,
            "seconds_per_epoch": seconds_per_epoch,
            "seconds_per_epoch_source": seconds_per_epoch_source,
            "epoch_train_seconds": trainer.epoch_train_seconds,
            "prepare_seconds": prepare_seconds,
            "best_epoch": best_epoch,
            "best_valid_score": float(best_valid_score),
            "valid_metrics": ours(best_valid_result or {}),
            "stopped_by_time": stopped_by_time,
            "stopped_mid_epoch": trainer.stopped_mid_epoch,
        },
        "versions": {
            "recbole": recbole.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "pandas": pd.__version__,
            "python": platform.python_version(),
        },
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "machine": _machine_description(),
        "git_commit": _git_commit(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }

    line = json.dumps(record, sort_keys=True)
    print(line)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with out_path.open("a") as fh:
        fh.write(line + "\n")
    if args.keep_workdir:
        print(f"RecBole scratch directory kept: {workdir}", file=sys.stderr)
    else:
        os.chdir(REPO)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
