"""RecBole 1.2.1 SASRec under a wall-time cap, recorded as one benchmarks/results.jsonl line.

The peer a user would otherwise pick, run on the same data and leave-one-out split as
``benchmarks/run_sequential.py`` so the speed ratio is measured, not quoted. Run it with the RecBole
venv (see ``setup_recbole.sh``), not the project's::

    benchmarks/peers/.venv-recbole/bin/python benchmarks/peers/recbole_sasrec.py --max-seconds 1500
    benchmarks/peers/.venv-recbole/bin/python benchmarks/peers/recbole_sasrec.py --dataset s3rec-beauty

Datasets (``--dataset``):

* ``ml-100k`` (default): the bundled ``src/behaviorlm/datasets/ml-100k/ml-100k.inter``, which is RecBole's
  own file, copied as is (RecBole's ``properties/dataset/ml-100k.yaml`` applies);
* ``s3rec-beauty``, ``s3rec-sports``: exported by ``behaviorlm_export.py``, run in a subprocess with the
  project's venv (``--behaviorlm-python``, default ``.venv/bin/python``; the RecBole venv cannot import
  behaviorlm), from ``load_interactions(name)``, i.e. exactly the events behaviorlm's benchmarks read,
  each user's events in behaviorlm's order with strictly increasing timestamps, so RecBole's
  leave-one-out picks behaviorlm's targets.

For every dataset the exporter also writes behaviorlm's own ``leave_one_out`` targets (for ML-100k it is
only used for that), and the run prints and records both sides' users, items, events and valid/test
targets and how many targets differ (``protocol.split_params.behaviorlm_check``). If the project's venv
cannot run (it is being edited, say), ML-100k runs without the check; the S3-Rec sets cannot run.

Configuration: RecBole's own defaults for SASRec (``properties/model/SASRec.yaml``,
``properties/overall.yaml`` and, for ``ml-100k`` only, ``properties/dataset/ml-100k.yaml``) plus what the
issue fixes: ``loss_type=CE`` (so no negative sampling), ``MAX_ITEM_LIST_LENGTH`` 200 on ML-100k and 50
(behaviorlm's default window) on the S3-Rec sets, leave-one-out by time (``LS: valid_and_test``,
``order: TO``), full ranking, Hit/NDCG/MRR at 10 and 20, CPU, ``--threads`` threads (default 2).

The cap is enforced between epochs (an epoch is not started when the one before it, validation
included, says it would not fit) and inside an epoch: no batch is started once the cap minus the last
validation pass's duration has passed (at least one batch runs), and the partial epoch is then
validated like a full one. Training therefore ends by the cap, give or take one batch, except that the
first epoch's validation has no earlier one to reserve time by. Either way the best-validation
checkpoint is evaluated on test and the run records ``training.stopped_by_time``.

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
EXPORTER = Path(__file__).resolve().with_name("behaviorlm_export.py")
BEHAVIORLM_PYTHON = REPO / ".venv" / "bin" / "python"
# RecBole's window per dataset: 200 on ML-100k (long histories, as before), behaviorlm's default 50 else.
MAX_ITEM_LIST_LENGTH = {"ml-100k": 200, "s3rec-beauty": 50, "s3rec-sports": 50}


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dataset",
        choices=sorted(MAX_ITEM_LIST_LENGTH),
        default="ml-100k",
        help="ml-100k (bundled RecBole file, default) or an S3-Rec set exported from behaviorlm",
    )
    parser.add_argument(
        "--behaviorlm-python",
        type=Path,
        default=BEHAVIORLM_PYTHON,
        help="python of the project's venv, which runs behaviorlm_export.py "
        f"(default {BEHAVIORLM_PYTHON.relative_to(REPO)})",
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


def _export_from_behaviorlm(python: Path, dataset: str, workdir: Path, *, inter: bool) -> dict[str, Any]:
    """Run ``behaviorlm_export.py`` with the project's venv; return its ``behaviorlm_split.json``.

    With ``inter`` it also writes ``workdir/<dataset>/<dataset>.inter``. Raises ``RuntimeError`` with the
    exporter's stderr if it fails.
    """
    command = [str(python), str(EXPORTER), dataset, str(workdir)] + (["--inter"] if inter else [])
    try:
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.SubprocessError) as exc:
        raise RuntimeError(f"{' '.join(command)}: {exc}") from exc
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr.strip()}")
    summary_file = workdir / "behaviorlm_split.json"
    summary = json.loads(summary_file.read_text())
    summary_file.unlink()
    return summary


def _recbole_targets(dataset, part) -> dict[str, str]:
    """``{user token: target item token}`` of one evaluation dataloader (one row per user)."""
    feat = part._dataset.inter_feat
    users = dataset.id2token(dataset.uid_field, feat[dataset.uid_field].numpy())
    items = dataset.id2token(dataset.iid_field, feat[dataset.iid_field].numpy())
    if len(set(users.tolist())) != len(users):
        raise RuntimeError("RecBole evaluation data has more than one target for a user")
    return dict(zip(users.tolist(), items.tolist(), strict=True))


def _behaviorlm_check(
    behaviorlm: dict[str, Any], recbole_counts: dict[str, int], valid: dict[str, str], test: dict[str, str]
) -> dict[str, Any]:
    """Both sides' counts and how many valid / test targets differ (missing on either side counts)."""
    targets: dict[str, list[str]] = behaviorlm["targets"]

    def differing(recbole: dict[str, str], column: int) -> int:
        ours = {user: pair[column] for user, pair in targets.items() if pair[column] is not None}
        return sum(recbole.get(user) != item for user, item in ours.items()) + len(
            recbole.keys() - ours.keys()
        )

    protocol = behaviorlm["protocol"]
    return {
        "behaviorlm": {
            "n_users": behaviorlm["n_users"],
            "n_items": behaviorlm["n_items"],
            "n_events": behaviorlm["n_events"],
            "n_valid_targets": protocol["n_valid_targets"],
            "n_test_targets": protocol["n_test_targets"],
            "n_users_train_only": protocol["n_users_train_only"],
        },
        "recbole": recbole_counts,
        "valid_targets_differing": differing(valid, 0),
        "test_targets_differing": differing(test, 1),
    }


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
            self.valid_seconds: list[float] = []
            self.epoch_batches: list[int] = []
            self.batches_per_epoch = 0
            self.stopped_mid_epoch = False

        def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
            self.batches_per_epoch = len(train_data)
            done = 0

            # The partial epoch is validated before fit returns: keep the last validation's time in hand.
            deadline = self.deadline - (self.valid_seconds[-1] if self.valid_seconds else 0.0)

            def batches_until_deadline():
                nonlocal done
                for batch in train_data:
                    # At least one batch per epoch, so a tiny cap still yields a trained model.
                    if done > 0 and time.perf_counter() >= deadline:
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

        def _valid_epoch(self, valid_data, show_progress=False):
            started = time.perf_counter()
            try:
                return super()._valid_epoch(valid_data, show_progress=False)
            finally:
                self.valid_seconds.append(time.perf_counter() - started)

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

    name = args.dataset
    workdir = Path(tempfile.mkdtemp(prefix="recbole-sasrec-"))
    # behaviorlm's events and leave-one-out targets, from the project's venv (see behaviorlm_export.py).
    # For the S3-Rec sets this also writes the .inter file RecBole reads; ML-100k keeps RecBole's own file
    # and only uses the targets for the check, so it still runs when the project's venv cannot.
    behaviorlm: dict[str, Any] | None = None
    try:
        behaviorlm = _export_from_behaviorlm(args.behaviorlm_python, name, workdir, inter=name != "ml-100k")
    except RuntimeError as exc:
        if name != "ml-100k":
            shutil.rmtree(workdir, ignore_errors=True)
            raise SystemExit(f"cannot export {name} from behaviorlm: {exc}") from None
        print(f"warning: no behaviorlm split to check against: {exc}", file=sys.stderr)
    if name == "ml-100k":
        (workdir / name).mkdir()
        shutil.copyfile(INTER_FILE, workdir / name / f"{name}.inter")
    # RecBole writes log/, saved/ and log_tensorboard/ relative to the working directory.
    os.chdir(workdir)

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
        "MAX_ITEM_LIST_LENGTH": MAX_ITEM_LIST_LENGTH[name],
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
    if name != "ml-100k":
        # No properties/dataset/<name>.yaml exists, so overall.yaml's defaults apply: nothing is filtered
        # (user/item_inter_num_interval "[0,inf)", rm_dup_inter None) or normalised (normalize_all None);
        # only its load_col (user_id, item_id) must also take the timestamp that order TO sorts by.
        config_dict["load_col"] = {"inter": ["user_id", "item_id", "timestamp"]}
    # RecBole's Config also reads ``--key=value`` from sys.argv, over config_dict; hide this script's flags
    # from it (``--epochs=5`` would otherwise reach it twice, and ``--dataset=...`` bypass the choices).
    argv, sys.argv = sys.argv, sys.argv[:1]
    try:
        config = Config(model="SASRec", dataset=name, config_dict=config_dict)
    finally:
        sys.argv = argv
    init_seed(config["seed"], config["reproducibility"])
    torch.set_num_threads(args.threads)
    init_logger(config)
    logger = logging.getLogger()

    wall_started = time.perf_counter()
    dataset = create_dataset(config)
    # Before data_preparation, which replaces the events by one row per (user, prefix).
    recbole_counts = {
        "n_users": int(dataset.user_num - 1),  # index 0 is padding
        "n_items": int(dataset.item_num - 1),
        "n_events": len(dataset.inter_feat),
    }
    train_data, valid_data, test_data = data_preparation(config, dataset)
    prepare_seconds = time.perf_counter() - wall_started
    logger.info(str(dataset))

    recbole_valid = _recbole_targets(dataset, valid_data)
    recbole_test = _recbole_targets(dataset, test_data)
    recbole_counts |= {"n_valid_targets": len(recbole_valid), "n_test_targets": len(recbole_test)}
    behaviorlm_check = None
    if behaviorlm is not None:
        behaviorlm_check = _behaviorlm_check(behaviorlm, recbole_counts, recbole_valid, recbole_test)
    sides = {"recbole": recbole_counts}
    if behaviorlm_check is not None:
        sides = {"behaviorlm": behaviorlm_check["behaviorlm"], **sides}
    for side, counts in sides.items():
        print(f"{name} {side:10s} " + " ".join(f"{k} {v}" for k, v in counts.items()), file=sys.stderr)
    if behaviorlm_check is not None:
        print(
            f"{name} targets differing from behaviorlm: valid {behaviorlm_check['valid_targets_differing']}, "
            f"test {behaviorlm_check['test_targets_differing']}",
            file=sys.stderr,
            flush=True,
        )

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

    if name == "ml-100k":
        data = {
            "source": "src/behaviorlm/datasets/ml-100k/ml-100k.inter (RecBole's own file, byte for byte)",
            # RecBole min-max normalises the timestamp and stores it as float32, so events about a
            # second apart tie and keep file order (a few targets differ from behaviorlm's
            # leave_one_out, which orders by the integer timestamp: see behaviorlm_check).
            "order": "timestamp as float32 after min-max normalisation, ties in file order",
            "filtering": "none (RecBole's ml-100k.yaml: no k-core, no rating threshold)",
        }
    else:
        assert behaviorlm is not None  # the S3-Rec sets exit above without it
        data = {
            "source": f"behaviorlm load_interactions({name!r}) exported by benchmarks/peers/behaviorlm_export.py",
            "order": "behaviorlm's, kept by the .inter timestamps: " + behaviorlm["inter_timestamps"],
            "filtering": "none in RecBole (overall.yaml defaults); the S3-Rec files are already 5-core",
        }

    record = {
        "dataset": name,
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
        | {"threads": args.threads, "max_seconds": args.max_seconds, "device": "cpu"},
        "protocol": {
            "framework": f"RecBole {recbole.__version__}",
            "split": "leave-one-out",
            "split_params": {
                "eval_args": config["eval_args"],
                **data,
                "n_users_evaluated": n_test_users,
                "n_valid_targets": len(valid_data._dataset),
                "n_test_targets": n_test_users,
                "n_train_sequences": n_train_sequences,
                # Both sides' users / items / events / targets and how many targets differ; None when
                # the project's venv could not run (ML-100k only).
                "behaviorlm_check": behaviorlm_check,
            },
            "ranking": "full",
            "n_candidates": int(dataset.item_num - 1),
            # FullSortEvalDataLoader passes no history for sequential models (it builds uid2history_item
            # for general models only), so _full_sort_batch_eval masks only the padding item 0: items
            # already in the user's history (train, and for test also the validation item) stay rankable.
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
            "valid_seconds": trainer.valid_seconds,
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
