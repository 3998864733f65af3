"""Regenerate docs/benchmarks.md from benchmarks/results.jsonl (latest record per dataset and model).

.venv/bin/python benchmarks/make_tables.py
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from behaviorlm.training.options import flat_params

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.jsonl"
GPU_RESULTS = HERE / "results-gpu.jsonl"
DOC = HERE.parent / "docs" / "benchmarks.md"

# Published full-ranking, leave-one-out numbers on the same preprocessed Beauty file (BERT4Rec's
# beauty.txt): Klenitskiy & Vasilev, "Turning Dross Into Gold Loss: is BERT4Rec really better than
# SASRec?", RecSys 2023, Table 2.
#
# S3-Rec's Beauty and Sports (same files as ../shared/data/s3rec; full ranking, leave-one-out, seen items
# removed): SASRec trained with full cross-entropy on Beauty, one seed, from the MTandHJ/CE-SCE-LLMRec
# logs (Xu et al., arXiv 2402.06216; ../shared/data/SOURCES.md); eSASRec and SASRec with sampled
# softmax (256 negatives) from Tikhonovich et al., "eSASRec", RecSys 2025 (arXiv 2508.06450), the
# preliminary study's "calculated" columns, as logged in blondered/transformer_benchmark's README. No
# full-CE SASRec figure is published for Sports (the CE-SCE-LLMRec logs cover Beauty, ML-1M and Yelp);
# eSASRec is the best published NDCG@10 there of any model we found (ActionPiece 0.0264, TIGER 0.0225).
ANCHORS = {
    "beauty": [
        ("SASRec+ (full softmax CE), published", {"hr@10": 0.0533, "ndcg@10": 0.0327}),
        ("BERT4Rec, published", {"hr@10": 0.0338, "ndcg@10": 0.0187}),
    ],
    "s3rec-beauty": [
        ("SASRec, full cross-entropy (CE-SCE-LLMRec log), published", {"hr@10": 0.0977, "ndcg@10": 0.0591}),
        ("eSASRec (RecSys 2025), published", {"hr@10": 0.0928, "ndcg@10": 0.0523}),
    ],
    "sports": [
        ("eSASRec (RecSys 2025), published", {"hr@10": 0.0560, "ndcg@10": 0.0323}),
        (
            "SASRec, sampled softmax 256 negatives (eSASRec paper), published",
            {"hr@10": 0.0569, "ndcg@10": 0.0314},
        ),
    ],
}
ANCHORS["s3rec-sports"] = ANCHORS["sports"]  # the same S3-Rec sequences, with the item texts

RANKING_COLUMNS = ["hr@10", "ndcg@10", "hr@20", "ndcg@20", "mrr", "coverage@10"]


def load_latest(path: Path) -> dict[tuple[str, str], dict]:
    """The latest record per (dataset, model); a sequence model that read item knowledge (run_sequential's
    ``--item-knowledge``, auto by default) is its own row, ``transformer + text+attributes``, beside the
    ID-only one."""
    latest = latest_runs(path, dataset=None, key=lambda r: (r["dataset"], _model_label(r)))
    return {key: {**r, "model": key[1]} for key, r in latest.items()}


def _item_knowledge(record: dict) -> str | None:
    """What the run read about items beyond their IDs (None: IDs only)."""
    knowledge = (record.get("protocol") or {}).get("item_knowledge")
    return None if knowledge in (None, "none") else knowledge


def _validation_sample(record: dict) -> int | None:
    """How many users kept a validation target when the others' were trained on (None: every user's)."""
    split = (record.get("protocol") or {}).get("split_params") or {}
    return split.get("validation_users") if split.get("n_valid_events_in_train") else None


def _model_label(record: dict) -> str:
    knowledge = _item_knowledge(record)
    label = record["model"]
    if knowledge is not None and not record["model"].startswith("transformer-knowledge-"):
        label = f"{label} + {knowledge}"
    sample = _validation_sample(record)
    return label if sample is None else f"{label}, validation on {sample:,} users"


def latest_runs(path: Path, *, dataset: str | None, key: Callable[[dict], tuple]) -> dict[tuple, dict]:
    """The latest record of each ``key(record)`` among the records of ``dataset`` (all when ``None``):
    a rerun replaces the earlier record."""
    latest: dict[tuple, dict] = {}
    if not path.exists():
        return latest
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            if dataset is None or record["dataset"] == dataset:
                latest[key(record)] = record
    return latest


def fmt(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _is_ranking(record: dict) -> bool:
    # LLM re-ranking rows cover a sample of users, not the whole test set: docs/llm.md has their table.
    return "ndcg@10" in record["metrics"] and not record["model"].startswith(
        (
            "ingest-",
            "transformer-inference",
            "transformer-busy",
            "transformer-quiet",
            "fusion-",
            "llm-",
            "transformer-top20",
            "transformer-knowledge-",
            *DISTILL_PREFIXES,
        )
    )


# Training plumbing that does not change what a model is; left out of the params column.
_PLUMBING = {
    "show_progress",
    "checkpoint_dir",
    "device",
    "eval_every",
    "seed",
    "max_train_seconds",
    "amp",
    "compile",
}


def _shown_params(record: dict) -> dict:
    """A record's params as one flat list: a model's training options (``params.training`` since
    TrainingOptions; flat keys in older records) are shown beside its architecture."""
    return {k: v for k, v in flat_params(record.get("params", {})).items() if k not in _PLUMBING}


def best_gpu_runs(path: Path) -> list[dict]:
    """Per (dataset, model), the GPU run with the best validation NDCG@10 (the validation-selected config)."""
    if not path.exists():
        return []
    best: dict[tuple[str, str], dict] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            key = (r["dataset"], r["model"])
            valid = (r.get("training") or {}).get("best_valid_ndcg@10") or 0
            if key not in best or valid > (best[key].get("training") or {}).get("best_valid_ndcg@10", 0):
                best[key] = {**r, "protocol": {**r["protocol"], "device": "gpu"}}
    return list(best.values())


def ranking_section(records: dict[tuple[str, str], dict], gpu_runs: list[dict] | None = None) -> list[str]:
    lines = ["## Recommendation: leave-one-out, full ranking", ""]
    datasets = sorted({d for (d, m), r in records.items() if _is_ranking(r)})
    for dataset in datasets:
        rows = [r for (d, m), r in records.items() if d == dataset and _is_ranking(r)]
        rows += [r for r in gpu_runs or [] if r["dataset"] == dataset]
        ours = [r for r in rows if "framework" not in r["protocol"]]
        p = (ours or rows)[0]["protocol"]
        lines += [
            f"### {dataset}",
            "",
            f"Protocol: {p['split']} split; {p['ranking']} ranking over {p.get('n_candidates', 0):,} items; seen items "
            f"{'masked' if p['mask_seen'] else 'not masked'} (targets stay rankable); {p.get('tie_handling', '?')} ties; "
            f"history for test = {p.get('history', '?')}; {(ours or rows)[0].get('n_users', 0):,} users.",
            "",
            "| model | params | "
            + " | ".join(c.upper() if c != "mrr" else "MRR" for c in RANKING_COLUMNS)
            + " | epochs (best) | s/epoch | train s | eval s | peak RSS MB | commit |",
            "|---|---|" + "---:|" * (len(RANKING_COLUMNS) + 5) + "---|",
        ]
        for r in sorted(rows, key=lambda r: r["metrics"].get("ndcg@10", 0)):
            params = ", ".join(f"{k}={v}" for k, v in _shown_params(r).items()) or "–"
            cells = " | ".join(fmt(r["metrics"].get(c)) for c in RANKING_COLUMNS)
            training = r.get("training") or {}
            epochs = (
                f"{training['epochs_run']} ({training.get('best_epoch', '–')})"
                + (" time cap" if training.get("stopped_by_time") else "")
                if training.get("epochs_run")
                else "–"
            )
            per_epoch = f"{training['seconds_per_epoch']:.1f}" if training.get("seconds_per_epoch") else "–"
            framework = r["protocol"].get("framework")
            name = r["model"] + (f" ({framework}; seen items not masked)" if framework else "")
            if r["protocol"].get("device") == "gpu":
                name += " (on the GPU, best validation config)"
            lines.append(
                f"| {name} | {params} | {cells} | {epochs} | {per_epoch} | {r['train_seconds']:.1f} | "
                f"{r['eval_seconds']:.1f} | {r['peak_rss_mb']:.0f} | {r['git_commit']} |"
            )
        for name, metrics in ANCHORS.get(dataset, []):
            cells = " | ".join(fmt(metrics.get(c)) for c in RANKING_COLUMNS)
            lines.append(f"| *{name}* | – | {cells} | – | – | – | – | – | – |")
        if any(_validation_sample(r) is not None for r in rows):
            lines += [
                "",
                '*validation on N users*: the split\'s `validation_users="auto"` (the default of `behaviorlm '
                "train`): N sampled users keep their second-last event as the validation target; every other "
                "user's second-last event is trained on. Test targets and test histories are the same as in "
                "the other rows; published figures may not train on those events.",
            ]
        if any((r.get("training") or {}).get("stopped_by_time") for r in rows):
            lines += [
                "",
                "*time cap*: training was stopped by a wall-clock cap before early stopping ended it, so the "
                "row is a lower bound for that configuration"
                + (
                    " (the Beauty Transformer trained to convergence is in the GPU section below)."
                    if dataset == "beauty"
                    else "."
                ),
            ]
        lines += ["", f"Machine: {rows[0]['machine']}; run {rows[0]['date']}.", ""]
    return lines


def gpu_section(path: Path) -> list[str]:
    """Every GPU run (they are few, and include validation sweeps), sorted by validation NDCG@10."""
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not rows:
        return []
    lines = [
        "## On a GPU",
        "",
        "Runs through `benchmarks/gpu_check.sh` on a lent GPU machine (`run_sequential.py --device cuda`), "
        "same protocol as above (leave-one-out, full ranking, seen items masked, pessimistic ties). "
        "Two or three runs shared the GPU at a time, so seconds per epoch are upper bounds. The "
        "**valid** column is what configurations are compared on; test is read for the table only.",
        "",
        "| dataset | model | params | valid NDCG@10 | HR@10 | NDCG@10 | HR@20 | NDCG@20 | epochs (best) | "
        "s/epoch | train s | eval s | peak GPU MB | peak RSS MB | commit |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    rows.sort(key=lambda r: (r["dataset"], -(r["training"].get("best_valid_ndcg@10") or 0)))
    for r in rows:
        t, m = r["training"], r["metrics"]
        params = ", ".join(f"{k}={v}" for k, v in _shown_params(r).items() if k not in ("amp", "compile"))
        lines.append(
            f"| {r['dataset']} | {r['model']} | {params} | {fmt(t.get('best_valid_ndcg@10'))} | "
            f"{fmt(m.get('hr@10'))} | {fmt(m.get('ndcg@10'))} | {fmt(m.get('hr@20'))} | {fmt(m.get('ndcg@20'))} | "
            f"{t['epochs_run']} ({t['best_epoch']}){' time cap' if t.get('stopped_by_time') else ''} | "
            f"{t['seconds_per_epoch']:.1f} | {r['train_seconds']:.0f} | "
            f"{r['eval_seconds']:.2f} | {t.get('peak_gpu_mb', 0):.0f} | {r['peak_rss_mb']:.0f} | {r['git_commit']} |"
        )
    lines += ["", f"Machine: {rows[0]['machine']}.", ""]
    return lines


def busy_section(path: Path) -> list[str]:
    def condition(r: dict) -> tuple:
        params = r.get("params", {})
        return params.get("benchmark"), params.get("condition")

    runs = latest_runs(path, dataset="ml-100k", key=condition)
    latest = {name: r for (benchmark, name), r in runs.items() if benchmark == "run_busy"}
    if not latest:
        return []
    lines = [
        "## On a busy machine",
        "",
        "`benchmarks/run_busy.py`: the ML-100k Behaviour Transformer (the demo's settings) trains 3 epochs, ranks "
        "every test user in full, then the embedded model explains 8 users; each condition in a fresh process. "
        "*busy*: one other CPU-bound process runs throughout; threads chosen by behaviorlm (torch follows the free "
        "cores, `training/threads.py`; the LLM takes 1 thread when another core is busy). *busy-2-threads*: the "
        "same competitor with both libraries fixed at 2 threads. *quiet-1-thread*: the bound a busy 2-core "
        "machine sets (one core left). Slowdown = time / quiet time; target (issue 24): <= 1.5x.",
        "",
        "| condition | s per epoch | slowdown | ranking s | slowdown | explanation p50 s | slowdown | threads (torch changes, LLM) | commit |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    quiet = latest.get("quiet")
    for name in ("quiet", "quiet-1-thread", "busy", "busy-2-threads"):
        r = latest.get(name)
        if r is None:
            continue
        m = r["metrics"]

        def ratio(key: str, m: dict = m) -> str:
            return f"{m[key] / quiet['metrics'][key]:.2f}x" if quiet and key in quiet["metrics"] else "—"

        changes = r["params"].get("thread_changes") or []
        torch_threads = ", ".join(f"{n} at {t:.0f} s" for t, n in changes) or "none"
        lines.append(
            f"| {name} | {m['seconds_per_epoch']:.1f} | {ratio('seconds_per_epoch')} | {m['eval_seconds']:.1f} | "
            f"{ratio('eval_seconds')} | {m.get('explain_latency_s_p50', float('nan')):.1f} | "
            f"{ratio('explain_latency_s_p50')} | {torch_threads}; LLM {r['params'].get('llm_threads')} | "
            f"{r['git_commit']} |"
        )
    lines += ["", f"Machine: {list(latest.values())[-1]['machine']}.", ""]
    return lines


PEER_DATASET_ALIASES = {"s3rec-sports": "sports"}
"""The peer's dataset name -> run_sequential.py's key for the same file (benchmarks/peers/README.md)."""


def peer_runs(path: Path) -> dict[tuple[str, str], dict]:
    """The latest RecBole record per dataset and, as ``(dataset, "transformer")``, the latest Transformer
    record trained under a time cap on one thread from item IDs alone -- the run paired with the peer. A
    later uncapped run, or one with item knowledge (RecBole's SASRec reads IDs only), does not replace it."""
    runs: dict[tuple[str, str], dict] = {}
    if not path.exists():
        return runs
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        capped = flat_params(r.get("params", {})).get("max_train_seconds") is not None
        one_thread = (r.get("protocol") or {}).get("torch_threads") == 1
        ids_only = _item_knowledge(r) is None  # as RecBole's SASRec reads
        if r["model"] == "recbole-sasrec" or (
            r["model"] == "transformer" and capped and one_thread and ids_only
        ):
            runs[(r["dataset"], r["model"])] = r
    return runs


def peer_section(records: dict[tuple[str, str], dict]) -> list[str]:
    """behaviorlm's Transformer beside RecBole's SASRec, run side by side (benchmarks/peers/README.md).
    ``records``: :func:`peer_runs`."""
    datasets = sorted(
        d
        for (d, m) in records
        if m == "recbole-sasrec" and (PEER_DATASET_ALIASES.get(d, d), "transformer") in records
    )
    if not datasets:
        return []
    lines = [
        "## Beside RecBole (the peer, same machine, same wall budget)",
        "",
        "Each pair ran side by side, each process pinned to its own core with one thread and the same "
        "training cap (`benchmarks/peers/README.md` has the commands; both read the same events and the same "
        "leave-one-out targets). behaviorlm runs its default configuration; RecBole 1.2.1 SASRec its usual one "
        "(CE loss, d=64, dropout 0.5). RecBole's full ranking does not mask the user's history items, "
        "behaviorlm's does (targets stay rankable): with the same scores RecBole's rank of a target can only be "
        "the same or worse, so the ratio overstates the model gap by that much. Caps differ in kind: behaviorlm "
        "stops at the first epoch end past its cap, RecBole inside the epoch; compare train seconds. The ratio "
        "is what each reaches in the same budget on one core, not converged quality: RecBole's SASRec trains "
        "one sample per prefix with batches of 2,048, so one ML-100k epoch (window 200) takes about the whole "
        "14 minutes.",
        "",
        "| dataset | behaviorlm NDCG@10 / HR@10 | epochs (best) | train s | RecBole NDCG@10 / HR@10 | epochs | "
        "train s | NDCG@10 ratio | commit |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for dataset in datasets:
        ours = records[(PEER_DATASET_ALIASES.get(dataset, dataset), "transformer")]
        peer = records[(dataset, "recbole-sasrec")]
        t, pt = ours.get("training") or {}, peer.get("training") or {}
        lines.append(
            f"| {dataset} | {fmt(ours['metrics']['ndcg@10'])} / {fmt(ours['metrics']['hr@10'])} | "
            f"{t.get('epochs_run', '–')} ({t.get('best_epoch', '–')}) | {ours['train_seconds']:.0f} | "
            f"{fmt(peer['metrics']['ndcg@10'])} / {fmt(peer['metrics']['hr@10'])} | "
            f"{pt.get('epochs_run', '–')} | {peer['train_seconds']:.0f} | "
            f"{ours['metrics']['ndcg@10'] / max(peer['metrics']['ndcg@10'], 1e-12):.1f}x | {ours['git_commit']} |"
        )
    first = PEER_DATASET_ALIASES.get(datasets[0], datasets[0])
    lines += ["", f"Machine: {records[(first, 'transformer')]['machine']}.", ""]
    return lines


def inference_section(records: dict[tuple[str, str], dict]) -> list[str]:
    rows = [r for (d, m), r in records.items() if m.startswith("transformer-inference")]
    if not rows:
        return []
    p = rows[0]["protocol"]
    lines = [
        "## Real-time inference (Behaviour Transformer)",
        "",
        f"`predict_next(history)` for one user at a time (raw item ids in, top-10 out), {p['requests']} requests "
        f"with random test users' full histories, torch threads = {p['torch_threads']}; NDCG@10 on the test split "
        "(full ranking). int8-bf16-table = the serving copy `model.quantized()`: linear layers dynamically quantized "
        "to int8, item table in bfloat16 (`benchmarks/transformer_inference.py`).",
        "",
        "| dataset | variant | p50 ms | p99 ms | NDCG@10 | HR@10 | NDCG@10 change | p50 speed-up | commit |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["dataset"], r["model"])):
        m = r["metrics"]
        variant = r["model"].removeprefix("transformer-inference-")
        epochs = (r.get("params") or {}).get("epochs")
        if epochs:  # a briefly fitted model: its latency is the converged one's, its NDCG@10 is not
            variant += f" ({epochs} epochs)"
        lines.append(
            f"| {r['dataset']} | {variant} | {m['p50_ms']:.2f} | "
            f"{m['p99_ms']:.2f} | {m['ndcg@10']:.4f} | {m['hr@10']:.4f} | {100 * m['ndcg@10_relative_change']:+.1f}% | "
            f"{m['p50_speedup']:.2f}x | {r['git_commit']} |"
        )
    lines += ["", f"Machine: {rows[0]['machine']}.", ""]
    return lines


def serving_copy_section(path: Path) -> list[str]:
    """What the service's ``quantize = "auto"`` chose per dataset and window: every pass of the latest run."""
    runs: dict[tuple[str, str], list[dict]] = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        record = json.loads(line) if line.strip() else None
        if record and record["model"].startswith("serving-copy-auto"):
            key = (record["dataset"], record["model"])
            if record["params"]["pass"] == 0:
                runs[key] = []
            runs.setdefault(key, []).append(record)
    if not runs:
        return []
    lines = [
        '### `quantize = "auto"`: which copy the service serves',
        "",
        "`benchmarks/transformer_inference.py --serving-copy`: the choice the service makes at start "
        "(`behaviorlm.serving.model_copy`), on 32 test users' histories, each copy called once per history "
        "in turns, three passes; median ms per call (one thread); the int8 copy is served when it is at least "
        "1.1x faster and keeps 80% of the float model's top 10. Models fitted for a few epochs "
        "(latency depends on the shape; the agreement of a converged model may differ).",
        "",
        "| dataset | items | window | d_model | float ms | int8 ms | speed-up | top-10 agreement | served | commit |",
        "|---|---:|---:|---:|---|---|---|---:|---|---|",
    ]
    for (dataset, _), passes in sorted(runs.items(), key=lambda kv: (kv[1][0]["params"]["n_items"], kv[0])):
        p, ms = passes[0]["params"], [r["metrics"] for r in passes]
        served = {m["quantized"] for m in ms}
        lines.append(
            f"| {dataset} | {p['n_items']:,} | {p['max_len']} | {p['d_model']} | "
            + " / ".join(f"{m['float_ms']:.2f}" for m in ms)
            + " | "
            + " / ".join(f"{m['quantized_ms']:.2f}" for m in ms)
            + " | "
            + " / ".join(f"{m['speedup']:.2f}x" for m in ms)
            + f" | {np.mean([m['top10_agreement'] for m in ms]):.0%} | "
            + ("int8" if served == {1.0} else "float" if served == {0.0} else "varies")
            + f" | {passes[0]['git_commit']} |"
        )
    lines += ["", f"Machine: {passes[0]['machine']}.", ""]
    return lines


def service_section(records: dict[tuple[str, str], dict]) -> list[str]:
    recommend = next((r for (d, m), r in records.items() if m == "recommend-api"), None)
    events = next((r for (d, m), r in records.items() if m == "events-api"), None)
    if recommend is None and events is None:
        return []
    lines = [
        "## REST service under load",
        "",
        "`benchmarks/service_load.py`: `behaviorlm serve` (one uvicorn process) on loopback with a Beauty-sized "
        "model (54,542 items, d_model 128, max_len 50, served as its int8/bfloat16 copy) and the Beauty event "
        "store; the load generator (an open-loop asyncio httpx client) runs on the same 2 cores. Targets of the "
        "service issue: recommendations p99 <= 50 ms at 100 requests/s; ingestion >= 5,000 events/s with zero loss.",
        "",
        "| endpoint | load | p50 ms | p99 ms | achieved | server CPU ms/request | errors / lost | commit |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    if recommend is not None:
        m, p = recommend["metrics"], recommend["protocol"]
        lines.append(
            f"| GET /v1/users/{{id}}/recommendations | {p['target_rps']:.0f} req/s for {p['seconds']:.0f} s "
            f"({m['requests']:,} requests) | {m['p50_ms']:.1f} | {m['p99_ms']:.1f} | {m['rps']:.1f} req/s | "
            f"{m.get('server_cpu_ms_per_request', 0):.1f} | {m['errors']} errors | {recommend['git_commit']} |"
        )
    if events is not None:
        m, p = events["metrics"], events["protocol"]
        lines.append(
            f"| POST /v1/events | {p['clients']} clients x {p['batches_per_client']} batches of {p['batch_events']:,} "
            f"| – | – | {m['events_per_s']:,.0f} events/s | – | {m['lost']} lost of {m['acknowledged']:,} acknowledged "
            f"| {events['git_commit']} |"
        )
    lines += ["", f"Machine: {(recommend or events)['machine']}.", ""]
    with_llm = next((r for (d, m), r in records.items() if m == "recommend-api-with-llm"), None)
    if with_llm is not None:
        m, p = with_llm["metrics"], with_llm["protocol"]
        lines += [
            "### Recommendations while the language model explains",
            "",
            f"`benchmarks/service_llm_load.py`: ML-100k service with the embedded language model; "
            f"{p['target_rps']:.0f} recommendation requests/s (open loop) for {p['seconds_per_phase']:.0f} s alone, "
            f"then the same while {p['explainers']} clients keep asking for explanations in words (response cache "
            "off). The language model runs one request at a time in a worker thread; recommendations must not wait "
            "for it.",
            "",
            "| phase | rec p50 ms | rec p95 ms | rec p99 ms | rec max ms | requests (errors) | explanations done, p50 s "
            "| commit |",
            "|---|---:|---:|---:|---:|---|---|---|",
            f"| alone | {m['quiet_rec_p50_ms']:.1f} | {m['quiet_rec_p95_ms']:.1f} | {m['quiet_rec_p99_ms']:.1f} | "
            f"{m['quiet_rec_max_ms']:.1f} | {m['quiet_rec_requests']} ({m['quiet_rec_errors']}) | – | "
            f"{with_llm['git_commit']} |",
            f"| with {p['explainers']} explainers | {m['llm_rec_p50_ms']:.1f} | {m['llm_rec_p95_ms']:.1f} | "
            f"{m['llm_rec_p99_ms']:.1f} | {m['llm_rec_max_ms']:.1f} | {m['llm_rec_requests']} ({m['llm_rec_errors']}) | "
            f"{m['explanations']} ({m['explanations_cancelled']} cancelled at the end), "
            f"{fmt(m['explain_latency_s_p50'], 1)} | {with_llm['git_commit']} |",
            "",
        ]
    return lines


def bots_section(records: dict[tuple[str, str], dict]) -> list[str]:
    rows = [r for (d, m), r in records.items() if d == "bots-taobao"]
    if not rows:
        return []
    from behaviorlm.testing.bots import BOT_STYLES

    p = rows[0]["protocol"]
    lines = [
        "## Anomalies: planted bots in the Taobao slice",
        "",
        f"`benchmarks/run_bots.py`: {p['bots']} bots ({', '.join(p['styles'])}; 50 each) planted among "
        f"{p['real_users']:,} real users of the Taobao UserBehavior slice; detectors use no labels. Per style: "
        "ROC-AUC of its bots against all real users / precision@50 among real users + that style's bots. "
        "Target of the profiling issue: ROC-AUC >= 0.95 per style. Settings chosen on a planting with seed 1, "
        "reported on seed 0.",
        "",
        "| detector | ROC-AUC (all) | precision@50 (all) | "
        + " | ".join(BOT_STYLES)
        + " | seconds | commit |",
        "|---|---:|---:|" + "---:|" * len(BOT_STYLES) + "---:|---|",
    ]
    for r in sorted(rows, key=lambda r: -r["metrics"]["roc_auc"]):
        m = r["metrics"]
        cells = " | ".join(f"{m[f'{s}_roc_auc']:.3f} / {m[f'{s}_precision@50']:.2f}" for s in BOT_STYLES)
        lines.append(
            f"| {r['model']} | {m['roc_auc']:.4f} | {m['precision@50']:.2f} | {cells} | {r['train_seconds']:.1f} | "
            f"{r['git_commit']} |"
        )
    lines += [
        "",
        "Replayed sessions copy a real user's items and gaps, so only the shared sequence gives them away; the "
        "original user shares it too, which is why replays reach a high ROC-AUC but not the top 50.",
        "",
    ]
    surprisal = [r for r in rows if r["model"].startswith("sequence-surprisal")]
    forest = [r for r in rows if r["model"] == "isolation-forest"]
    combined = [r for r in rows if r["model"].startswith("isolation-forest+surprisal")]
    if surprisal and forest and combined:
        s, f, c = surprisal[0]["metrics"], forest[0]["metrics"], combined[0]["metrics"]
        lines += [
            f"{surprisal[0]['model']}: each user's {'largest' if surprisal[0]['model'].endswith('max') else 'mean'} per-event surprisal "
            "-log p(item | earlier events) under a behaviour Transformer fitted without labels on the same planted "
            "data (users with one event rank last); isolation-forest+surprisal: the mean of the two percentile "
            "ranks (one event: the neutral surprisal rank 0.5). The model is fitted on the bots too, so it learns "
            "the click farms' four items and the sessions replays copy: ROC-AUC "
            f"{s['click_farm_roc_auc']:.2f} and {s['replay_roc_auc']:.2f} for those styles. Rank-averaged with the "
            f"forest it lowers the overall ROC-AUC from {f['roc_auc']:.3f} to {c['roc_auc']:.3f}, so the forest "
            "alone stays the default detector.",
            "",
        ]
    lines += [
        f"Machine: {rows[0]['machine']}.",
        "",
    ]
    return lines


FUSION_MODELS = ("fusion-behaviour-only", "fusion-text-only", "fusion-fused")
FUSION_BUCKETS = ("1-2", "3-5", "6-20", ">20")


def text_fusion_section(records: dict[tuple[str, str], dict]) -> list[str]:
    datasets = sorted({d for (d, m) in records if m == "fusion-fused"})
    if not datasets:
        return []
    header = "| users | behaviour-only NDCG@10 | HR@10 | text-only NDCG@10 | HR@10 | fused NDCG@10 | HR@10 |"
    lines = [
        "## Text + behaviour: does text help?",
        "",
        "`benchmarks/run_text_fusion.py`: leave-one-out, full ranking, seen items masked, history for test = "
        "train + validation. behaviour-only = the behaviour Transformer; text-only = cosine of the user's text "
        "interest and the item's text vector (all-MiniLM-L6-v2); fused = w_text · z(text) + (1 − w_text) · "
        "z(behaviour), per-user z-scores, w_text from 0, 0.05, …, 1 by validation NDCG@10 (w_text = 0 is "
        "behaviour-only). Buckets: users by number of training events; no text of a validation or test event "
        "is read. Buckets of fewer than 50 users are marked *thin*: one user changes their NDCG@10 by up to 1 / users (0.02 at 50).",
        "",
    ]
    for dataset in datasets:
        rows = {m: records.get((dataset, m)) for m in FUSION_MODELS}
        if any(r is None for r in rows.values()):
            continue
        fused = rows["fusion-fused"]
        curve = fused["params"]["validation_ndcg@10_by_text_weight"]
        w = fused["params"]["text_weight"]
        p = fused["protocol"]
        size = p.get("data", {})
        distinct = (
            f", {size['distinct_review_texts']:,} distinct review texts"
            if "distinct_review_texts" in size
            else ""
        )
        lines += [
            f"### {dataset}",
            "",
            f"{size.get('events', 0):,} events, {size.get('items', 0):,} items{distinct}. "
            f"Text: {', '.join(p['text_sources'])}. Chosen text weight {w:g} (validation NDCG@10 "
            f"{curve[str(w)]:.4f}; behaviour alone {curve['0.0']:.4f}, text alone {curve['1.0']:.4f}).",
            "",
            "| training events " + header,
            "|---|" + "---:|" * 7,
        ]
        for bucket in (*FUSION_BUCKETS, "all"):
            users = fused["n_users"] if bucket == "all" else int(fused["metrics"].get(f"{bucket}/users", 0))
            key = "" if bucket == "all" else f"{bucket}/"
            cells = []
            for model in FUSION_MODELS:
                m = rows[model]["metrics"]
                cells += [fmt(m.get(f"{key}ndcg@10")), fmt(m.get(f"{key}hr@10"))]
            label = bucket + (" (*thin*)" if 0 < users < 50 else "")
            lines.append(f"| {label} | {users} | " + " | ".join(cells) + " |")
        cut = sorted(
            {r["protocol"]["truncated_to"] for (d, m), r in records.items() if d == dataset and "@last-" in m}
        )
        if cut:
            lines += [
                "",
                f"{dataset} with every user's history cut to its last k events (validation and test; models not "
                "refitted; the text weight chosen again on the cut validation histories):",
                "",
                "| last k events | text weight " + header,
                "|---:|---:|" + "---:|" * 7,
            ]
            for k in cut:
                short = {m: records.get((dataset, f"{m}@last-{k}")) for m in FUSION_MODELS}
                if any(r is None for r in short.values()):
                    continue
                cells = []
                for model in FUSION_MODELS:
                    m = short[model]["metrics"]
                    cells += [fmt(m.get("ndcg@10")), fmt(m.get("hr@10"))]
                weight = short["fusion-fused"]["params"]["text_weight"]
                lines.append(
                    f"| {k} | {weight:g} | {short['fusion-fused']['n_users']} | " + " | ".join(cells) + " |"
                )
        lines += [
            "",
            f"Machine: {fused['machine']}; {p.get('torch_threads', '?')} torch thread(s); commit {fused['git_commit']}.",
            "",
        ]
    return lines


def churn_section(records: dict[tuple[str, str], dict]) -> list[str]:
    rows = [r for (d, m), r in records.items() if "-churn@" in d]
    if not rows:
        return []
    lines = [
        "## Churn on a temporal split (ML-100k)",
        "",
        "`benchmarks/run_churn.py`: users who rated before the cutoff; churned = no rating in the next "
        f"{rows[0]['params']['horizon_days']} days. Each model is trained on the snapshot one horizon earlier and "
        "tested on the cutoff's snapshot. PR-AUC of a constant guess equals the churn rate.",
        "",
        "| test cutoff | model | ROC-AUC | PR-AUC | F1 | accuracy | churn rate | users | commit |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["dataset"], -r["metrics"]["roc_auc"])):
        m = r["metrics"]
        lines.append(
            f"| {r['protocol']['test_cutoff']} | {r['model']} | {m['roc_auc']:.4f} | {m['pr_auc']:.4f} | "
            f"{m['f1']:.4f} | {m['accuracy']:.4f} | {m['positive_rate']:.3f} | {r['n_users']} | {r['git_commit']} |"
        )
    lines += ["", f"Machine: {rows[0]['machine']}.", ""]
    return lines


def influence_section(records: dict[tuple[str, str], dict]) -> list[str]:
    rows = [r for (d, m), r in records.items() if m.startswith("influence-")]
    if not rows:
        return []
    lines = [
        "## Per-user influence: deletion curves",
        "",
        "`benchmarks/run_influence.py`: for seeded test users, the Transformer's top-1 next item; events are "
        "removed one by one in each method's order and the target's log-probability is recomputed. deletion "
        "AUC = area under the mean log-probability change over the removed share (lower = the method found the "
        "events the prediction rests on sooner). Target of the causal issue: influence beats both random and "
        "recency.",
        "",
    ]
    for dataset in sorted({r["dataset"] for r in rows}):
        group = sorted(
            (r for r in rows if r["dataset"] == dataset), key=lambda r: r["metrics"]["deletion_auc"]
        )
        p, steps = group[0]["protocol"], group[0]["params"]["steps"]
        training = group[0].get("training") or {}
        lines += [
            f"### {dataset}: {p['users']} users, {steps} removals; explained model "
            f"{training.get('epochs_run', '?')} epochs, validation NDCG@10 {training.get('best_valid_ndcg@10', 0):.4f}",
            "",
            f"| order | deletion AUC | drop@1 (nats) | drop@{steps} | mean rank after 1 / {steps} removals | seconds | commit |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for r in group:
            m = r["metrics"]
            lines.append(
                f"| {r['model'].removeprefix('influence-')} | {m['deletion_auc']:.3f} | {m['drop_at_1']:.3f} | "
                f"{m[f'drop_at_{steps}']:.3f} | {m['rank_at_1']:.1f} / {m[f'rank_at_{steps}']:.1f} | "
                f"{m['seconds']:.0f} | {r['git_commit']} |"
            )
        lines.append("")
    lines += [f"Machine: {rows[0]['machine']}.", ""]
    return lines


KNOWLEDGE_ANCHORS = {
    # The published figures of the ranking tables (ANCHORS): same files, same protocol.
    "s3rec-beauty": ANCHORS["s3rec-beauty"],
    "s3rec-sports": ANCHORS["sports"],
}


DISTILL_PREFIXES = ("distill-teacher", "distilled-", "undistilled-")


def distill_section(records: dict[tuple[str, str], dict]) -> list[str]:
    """Teacher vs distilled and undistilled students (and the int8 copy): NDCG@10 kept, latency won."""
    rows = [r for (d, m), r in records.items() if m.startswith(DISTILL_PREFIXES)]
    if not rows:
        return []
    p = rows[0]["protocol"]
    lines = [
        "## Distillation: a smaller student of the Behaviour Transformer",
        "",
        "`benchmarks/run_distill.py`: the teacher is the Behaviour Transformer with the benchmark settings; each "
        "student (a one-layer Transformer with d_model 64, GRU4Rec with 64 units) is fitted on the labels alone "
        "(*undistilled*) and with the teacher's softened scores over the whole catalogue at every position "
        f"(*distilled*: `fit(..., teacher=...)`, loss (1 - α) CE + α T² KL, α = {p['distill_alpha']}, "
        f"T = {p['distill_temperature']}; docs/transformer.md#distillation), each with early stopping on "
        "validation NDCG@10 (epochs run and best epoch below); *-int8* is the distilled student's serving copy "
        "(`quantized()`: int8 linear layers, bfloat16 item table). Leave-one-out, full ranking, seen items "
        f"masked. Latency: `predict_next` for one user at a time on {p['latency_requests']} test users' full "
        f"histories after {p['latency_warmup']} warm-up calls, torch threads = {p['torch_threads']}"
        + (f"; all models timed {p['latency_order']}" if p.get("latency_order") else "")
        + ". *Kept* = NDCG@10 / the teacher's, *speed-up* = the teacher's p50 / the model's. Target (issue 22): "
        "kept >= 95% at >= 3x.",
        "",
    ]
    for dataset in sorted({r["dataset"] for r in rows}):
        mine = sorted(
            (r for r in rows if r["dataset"] == dataset),
            key=lambda r: (r["model"] != "distill-teacher", r["model"].removeprefix("un"), r["model"]),
        )
        teacher = next((r for r in mine if r["model"] == "distill-teacher"), mine[0])
        lines += [
            f"### {dataset}",
            "",
            "| model | NDCG@10 | HR@10 | kept | parameters | p50 ms | p99 ms | speed-up | epochs (best) | s/epoch | commit |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---|",
        ]
        for r in mine:
            m, t = r["metrics"], r.get("training", {})
            name = "teacher (transformer)" if r["model"] == "distill-teacher" else r["model"]
            lines.append(
                f"| {name} | {fmt(m['ndcg@10'])} | {fmt(m['hr@10'])} | {m['ndcg_ratio_to_teacher']:.1%} | "
                f"{int(m['n_parameters']):,} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} | {m['p50_speedup']:.2f}x | "
                f"{t.get('epochs_run')} ({t.get('best_epoch')}) | {t.get('seconds_per_epoch', 0):.0f} | "
                f"{r['git_commit']} |"
            )
        lines += [
            "",
            f"Teacher params {json.dumps(_shown_params(teacher))}. Machine: {teacher['machine']} "
            "(one pinned core, one thread).",
            "",
        ]
    return lines


def knowledge_section(records: dict[tuple[str, str], dict]) -> list[str]:
    """ID-only vs item knowledge inside the Transformer, with long-tail and cold-item quality."""
    rows = [r for (d, m), r in records.items() if m.startswith("transformer-knowledge-")]
    if not rows:
        return []
    lines = [
        "## Item knowledge inside the Transformer: long tail and cold items",
        "",
        "`benchmarks/run_knowledge.py`: the default Transformer with the same epoch cap and early stopping, "
        "ID-only vs item vectors that also carry the item's sentence vector (all-MiniLM-L6-v2, the packaged "
        "model, over title, categories and brand) and/or its catalogue attributes "
        "(`ItemSideFeatures`; docs/transformer.md#item-knowledge). Leave-one-out, full ranking, seen items "
        "masked. *Long tail*: users whose test item is in the bottom 80% of items by training popularity; "
        "*cold*: at most 2 training events. *Gain*: relative to the ID-only run of the same invocation (or, for "
        "ablations run later, to the ID-only record with the same parameters: one thread and a seed make it "
        "deterministic). "
        "Each run pinned to its own core with one torch thread, two side by side.",
        "",
    ]
    for dataset in sorted({r["dataset"] for r in rows}):
        mine = sorted(
            (r for r in rows if r["dataset"] == dataset),
            key=lambda r: (r["protocol"].get("item_knowledge") != "id", r["model"]),
        )
        p = mine[0]
        groups = p["metrics"]
        lines += [
            f"### {dataset}: {int(groups['longtail_users']):,} of {p['n_users']:,} test users have a long-tail "
            f"target, {int(groups['cold_users']):,} a cold one",
            "",
            "| model | NDCG@10 | HR@10 | long-tail NDCG@10 | long-tail HR@10 | cold NDCG@10 | long-tail gain "
            "| overall gain | epochs (best) | s/epoch | commit |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---|",
        ]
        for r in mine:
            m, t = r["metrics"], r.get("training", {})

            def gain(name: str, m: dict = m) -> str:
                return f"{m[name]:+.1%}" if name in m else "—"

            lines.append(
                f"| {r['model'].removeprefix('transformer-knowledge-')} | {fmt(m['ndcg@10'])} | {fmt(m['hr@10'])} | "
                f"{fmt(m['longtail_ndcg@10'])} | {fmt(m['longtail_hr@10'])} | {fmt(m['cold_ndcg@10'])} | "
                f"{gain('longtail_ndcg@10_gain')} | {gain('ndcg@10_gain')} | {t.get('epochs_run')} "
                f"({t.get('best_epoch')}) | {t.get('seconds_per_epoch', 0):.0f} | {r['git_commit']} |"
            )
        for name, m in KNOWLEDGE_ANCHORS.get(dataset, []):
            lines.append(
                f"| {name} | {fmt(m['ndcg@10'])} | {fmt(m['hr@10'])} | – | – | – | – | – | – | – | – |"
            )
        refs = sorted({r["protocol"]["gain_reference"] for r in mine if r["protocol"].get("gain_reference")})
        lines += [
            "",
            f"Machine: {p['machine']} (as each pinned run saw it: one core of the 2-core machine); params "
            f"{json.dumps(_shown_params(p))}. Gains relative to: {'; '.join(refs) or 'the id row'}.",
            "",
        ]
    return lines


def llm_section(path: Path) -> list[str]:
    """Explanations (every run, old and new side by side), the claim verifier and question answering."""
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    lines: list[str] = []
    explain = [r for r in records if r["model"].startswith("llm-explain-")]
    if explain:
        lines += [
            "## LLM explanations (embedded model)",
            "",
            "`benchmarks/run_llm_explain.py`: for users drawn at random, `explain_intent` on the user's facts "
            "(docs/llm.md) with the embedded model on the CPU; every run, oldest first. Before commit d339cb7 the "
            "model wrote free text checked literally (numbers, ids and quotes had to occur in the facts): "
            "*first try* is the share of first answers passing that check. From then on it returns claims "
            "checked one by one and the words are rendered from them: *first try* is the share of explanations "
            "whose every claim was true as made, *verified* the share of all claims that were (as JSON until "
            "commit c8b4edf, then as *claim lines* under a grammar). *handed out*: "
            "share of explanations whose words are grounded. Latency per explanation, model calls only.",
            "",
            "| dataset | users | output | first try | handed out | fallback | claims per answer / verified | "
            "latency mean / p50 / p95 (s) | threads | commit |",
            "|---|---:|---|---:|---:|---:|---|---|---:|---|",
        ]
        for r in sorted(explain, key=lambda r: (r["dataset"], r["date"])):
            m = r["metrics"]
            claims = r["params"].get("output") or ("claims" if "claims_per_answer" in m else "free text")
            if r["params"].get("intent_model"):
                claims += f", intent model (reason cited in {m.get('reason_cited_share', 0):.0%})"
            per = (
                f"{m['claims_per_answer']:.2f} / {m['claims_verified_share']:.3f}"
                if "claims_per_answer" in m
                else "—"
            )
            lines.append(
                f"| {r['dataset']} | {r['n_users']} | {claims} | {m['groundedness_first_try']:.3f} | "
                f"{m['groundedness']:.3f} | {m['fallback_rate']:.3f} | {per} | {m['latency_s_mean']:.1f} / "
                f"{m['latency_s_p50']:.1f} / {m['latency_s_p95']:.1f} | {r['params'].get('threads', '')} | "
                f"{r['git_commit']} |"
            )
        lines += ["", f"Machine: {explain[-1]['machine']}.", ""]
    # The latest verifier run per dataset (records are in run order).
    verifier_rows = list({r["dataset"]: r for r in records if r["model"] == "llm-claims-verifier"}.values())
    if verifier_rows:
        kinds = sorted(
            {k for r in verifier_rows for k in r["metrics"] if k.startswith("recall_") and "_on_" not in k}
        )
        lines += [
            "## LLM claim verifier: mutation testing",
            "",
            "`benchmarks/run_llm_claims.py`: true claims about users' and segments' facts (every field of every "
            "fact, written in a random true surface form, plus the embedded model's verified claims), each "
            "mutated by every kind of error that applies; *recall*: share of injected errors the verifier "
            "rejects (target >= 0.98); *false rejections*: share of true claims it rejects (target <= 0.02).",
            "",
            "| dataset | users | mutations | recall | true claims | false rejections | model claims verified / "
            "corrected / dropped | " + " | ".join(k.removeprefix("recall_") for k in kinds) + " | commit |",
            "|---|---:|---:|---:|---:|---:|---|" + "---:|" * len(kinds) + "---|",
        ]
        for r in sorted(verifier_rows, key=lambda r: r["dataset"]):
            m = r["metrics"]
            model = (
                f"{m['llm_claims_verified_share']:.3f} / {m['llm_claims_corrected_share']:.3f} / "
                f"{m['llm_claims_dropped_share']:.3f}"
                if "llm_claims_verified_share" in m
                else "—"
            )
            lines.append(
                f"| {r['dataset']} | {r['n_users']} | {m['n_mutations']:,.0f} | {m['injected_error_recall']:.4f} | "
                f"{m['n_true_claims']:,.0f} | {m['false_rejection_rate']:.4f} | {model} | "
                + " | ".join(f"{m[k]:.3f}" if k in m else "—" for k in kinds)
                + f" | {r['git_commit']} |"
            )
        lines += [""]
    qa = [r for r in records if r["model"].startswith("llm-qa-")]
    if qa:
        lines += [
            "## LLM question answering with tools",
            "",
            "`benchmarks/run_llm_qa.py`: questions generated from the stores with answers computed by their own "
            "SQL (two per user, up to 17 kinds), 25 unanswerable + 25 personal questions, and 30 held-out "
            "unanswerable questions written after the refusal rules were fixed (and, from session 7, 30 more written "
            "before the counted-thing rule: set 2); every run, oldest first. "
            "Targets: accuracy >= 0.90, wrong refusals <= 5%, refusals 100%.",
            "",
            "| datasets | questions | accuracy | wrong refusals | refused (unanswerable + personal) | refused (held out) "
            "| refused (held out, set 2) | model chose among 2+ tools / accuracy there | latency p50 / p95 (s) | threads "
            "| commit |",
            "|---|---:|---:|---:|---:|---:|---:|---|---|---:|---|",
        ]
        for r in sorted(qa, key=lambda r: r["date"]):
            m = r["metrics"]
            chose = (
                f"{m['model_choice_share']:.2f} / {m.get('accuracy_model_choice', float('nan')):.3f}"
                if m.get("model_choice_share")
                else "—"
            )
            held = f"{m['refusal_heldout']:.3f}" if "refusal_heldout" in m else "—"
            held_2 = f"{m['refusal_heldout_2']:.3f}" if "refusal_heldout_2" in m else "—"
            lines.append(
                f"| {r['dataset']} | {r['n_questions']} | {m['accuracy_answerable']:.3f} | "
                f"{m['wrong_refusal_rate']:.3f} | {m['refusal_unanswerable']:.3f} | {held} | {held_2} | {chose} | "
                f"{m['latency_s_p50']:.1f} / {m['latency_s_p95']:.1f} | {r['params'].get('threads', '')} | "
                f"{r['git_commit']} |"
            )
        lines += ["", f"Machine: {qa[-1]['machine']}.", ""]
    return lines


def effects_section(path: Path) -> list[str]:
    """Planted-effect recovery summarised over every synthetic run (all sizes and seeds), plus Taobao."""
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    synthetic = [
        r for r in records if r["dataset"] == "causal-synthetic" and not r["model"].startswith("segment-")
    ]
    taobao = {
        r["model"]: r for r in records if r["dataset"] == "taobao-110k" and r["model"].startswith("effect-")
    }
    if not synthetic:
        return []
    sizes = sorted({r["params"]["n_users"] for r in synthetic})
    # A rerun of the same (estimator, size, seed) replaces the earlier record.
    runs_by_key = {(r["model"], r["params"]["n_users"], r["params"]["seed"]): r for r in synthetic}
    groups: dict[str, dict[int, list[dict]]] = {}
    for (model, n_users, _), r in runs_by_key.items():
        groups.setdefault(model, {}).setdefault(n_users, []).append(r)
    lines = [
        "## Population effects: planted confounding",
        "",
        "`benchmarks/run_effects.py`: users of `behaviorlm.synthetic.causal` with confounded carting "
        f"and a known effect of carting on purchase (ATE 0.17); {len({r['params']['seed'] for r in synthetic})} "
        "seeds per size. Mean absolute relative error of the estimated ATE and how often the 95% interval covers the "
        "truth. Target of the causal issue: within 10% while the naive difference is off by more than 30%.",
        "",
        "| estimator | "
        + " | ".join(f"abs. relative error, {n:,} users | coverage, {n:,}" for n in sizes)
        + " |",
        "|---|" + "---:|---:|" * len(sizes),
    ]

    def largest_error(model: str) -> float:
        runs = groups[model][max(groups[model])]
        return float(np.mean([abs(r["metrics"]["relative_error"]) for r in runs]))

    for model in sorted(groups, key=largest_error):
        cells = []
        for n in sizes:
            runs = groups[model].get(n, [])
            if not runs:
                cells += ["—", "—"]
                continue
            err = np.mean([abs(r["metrics"]["relative_error"]) for r in runs])
            with_ci = [r for r in runs if r["metrics"]["covered"] is not None]
            cov = sum(bool(r["metrics"]["covered"]) for r in with_ci)
            cells += [f"{100 * err:.1f}%", f"{cov}/{len(with_ci)}" if with_ci else "no interval"]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    if taobao:
        n_treated = next(iter(taobao.values()))["metrics"].get("n_treated")
        lines += [
            "",
            f"Taobao slice, cart -> purchase (no ground truth; {n_treated} users carted, and very few of them bought "
            "within the two-hour window, so every interval includes zero):",
            "",
            "| estimator | ATE | 95% CI | subset refutation |",
            "|---|---:|---|---|",
        ]
        for model, r in sorted(taobao.items()):
            m = r["metrics"]
            lines.append(
                f"| {model.removeprefix('effect-')} | {m['ate']:+.4f} | [{m['ci_low']:+.4f}, {m['ci_high']:+.4f}] | "
                f"{'passed' if m.get('data_subset_passed') else 'FAILED'} |"
            )
    lines += [
        "",
        f"Machine: {synthetic[0]['machine']}; details in [causal-effects.md](causal-effects.md).",
        "",
    ]
    return lines


def ingest_section(records: dict[tuple[str, str], dict]) -> list[str]:
    rows = [r for (d, m), r in records.items() if m.startswith("ingest-")]
    if not rows:
        return []
    lines = [
        "## Ingest throughput",
        "",
        "A generated Taobao-like CSV (`benchmarks/ingest_throughput.py`: Zipf item popularity, 0.1% exact "
        "duplicates, 0.1% unknown behaviours) loaded into a fresh DuckDB event store. Both paths parse, "
        "validate, drop duplicates and insert; behaviorlm also quarantines each bad row with its line "
        "number and reason, derives content event ids and writes the item catalogue.",
        "",
        "| dataset | pipeline | rows | seconds | rows/s | stored | quarantined | duplicates | commit |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["dataset"], r["model"])):
        m = r["metrics"]
        lines.append(
            f"| {r['dataset']} | {r['model'].removeprefix('ingest-')} | {r['protocol']['rows']:,} | {m['seconds']:.2f} | "
            f"{m['rows_per_second']:,.0f} | {m['stored']:,} | {m['quarantined']:,} | {m['duplicates']:,} | {r['git_commit']} |"
        )
    by_dataset: dict[str, dict[str, float]] = {}
    for r in rows:
        by_dataset.setdefault(r["dataset"], {})[r["model"]] = r["metrics"]["seconds"]
    for dataset, times in sorted(by_dataset.items()):
        if "ingest-behaviorlm" in times and "ingest-pandas" in times:
            speedup = times["ingest-pandas"] / times["ingest-behaviorlm"]
            rate = next(r for r in rows if r["dataset"] == dataset and r["model"] == "ingest-behaviorlm")
            rows_per_second = rate["metrics"]["rows_per_second"]
            lines += [
                "",
                f"{dataset}: behaviorlm is {speedup:.1f}x faster than the pandas pipeline. Targets of the "
                f"foundation issue: >= 1,000,000 rows/s ({'met' if rows_per_second >= 1e6 else 'NOT met'}: "
                f"{rows_per_second:,.0f}) and >= 5x pandas ({'met' if speedup >= 5 else 'NOT met'}: {speedup:.1f}x). "
                "The pandas baseline here is a strong one: it bulk-inserts through DuckDB's Arrow scan.",
            ]
            if "ingest-duckdb-copy" in times:
                floor = times["ingest-duckdb-copy"]
                lines[-1] += (
                    f" The bare DuckDB copy of the file (typed scan into a table: no checks, ids, dedup or line "
                    f"numbers) takes {floor:.2f} s, {times['ingest-pandas'] / floor:.1f}x faster than pandas: "
                    "no pipeline that parses this file and stores its rows in DuckDB on this machine can be "
                    "faster than that."
                )
            steps = rate["metrics"].get("stage_seconds")
            if steps:
                lines[-1] += (
                    " behaviorlm's time by step: "
                    + ", ".join(
                        f"{step} {steps[step]:.2f} s"
                        for step in sorted(steps, key=["read", "validate", "dedup", "store"].index)
                    )
                    + " (read = parallel CSV parse; validate = typing, checks, MD5 content ids; dedup = "
                    "repeated ids within the file; store = quarantine, events insert, item catalogue, commit)."
                )
    lines += ["", f"Machine: {rows[0]['machine']}.", ""]
    return lines


def audit_section(records: dict[tuple[str, str], dict]) -> list[str]:
    rows = [r for (d, m), r in records.items() if d.endswith("-audit")]
    if not rows:
        return []
    order = {"pop": 0, "itemknn": 1, "ease": 2, "transformer": 3}
    rows.sort(key=lambda r: (r["dataset"], order.get(r["model"], 9), r["model"]))
    p = rows[0]["protocol"]
    attributes = [a for a in ("gender", "age", "occupation", "activity") if a in rows[0]["groups"]]
    lines = [
        "## Bias audit: quality by user group and popularity bias",
        "",
        f"`benchmarks/run_audit.py` ({', '.join(sorted({r['dataset'].removesuffix('-audit') for r in rows}))}; "
        f"{p['split']} (ML-1M: random leave-one-out, no timestamps), full ranking, "
        f"seen items masked; docs/audit.md). NDCG@10 gap = best group minus worst group (groups with >= "
        f"{p['min_group_users']} users) with its {p['confidence']:.0%} bootstrap interval "
        f"({p['bootstrap_resamples']} resamples of users) and the permutation p-value of the spread "
        "(which, unlike the interval, accounts for picking the best and worst group). Attributes used for "
        f"grouping only: {', '.join(rows[0]['attributes_used'])}; activity = history-length tertile.",
        "",
        "| dataset | model | NDCG@10 | "
        + " | ".join(f"{a} gap [CI], p" for a in attributes)
        + " | rec./history popularity | Gini exposure | long-tail share | coverage@10 | commit |",
        "|---|---|---:|" + "---|" * len(attributes) + "---:|---:|---:|---:|---|",
    ]
    for r in rows:
        m = r["metrics"]
        gaps = []
        for a in attributes:
            g = r["groups"][a]
            gap = g["gap"].get("ndcg@10")
            gaps.append(
                "–"
                if gap is None
                else f"{gap['estimate']:.3f} [{gap['low']:.3f}, {gap['high']:.3f}], {g['p_value']['ndcg@10']:.3f} "
                f"({g['best']['ndcg@10']} > {g['worst']['ndcg@10']})"
            )
        lines.append(
            f"| {r['dataset'].removesuffix('-audit')} | {r['model']} | {m['overall_ndcg@10']:.4f} | "
            + " | ".join(gaps)
            + f" | {m['popularity_ratio']:.2f} | "
            f"{m['gini_exposure']:.3f} | {m['longtail_share']:.3f} | {m['coverage@10']:.3f} | {r['git_commit']} |"
        )
    lines += [
        "",
        "Popularity-penalized re-ranking (`PopularityPenalized`: per-user standardized score minus penalty x "
        "standardized log popularity; penalty 0 = the model):",
        "",
        "| dataset | model | penalty | NDCG@10 | HR@10 | long-tail share | Gini exposure | rec./history popularity | "
        "coverage@10 | " + " | ".join(f"{a} gap" for a in attributes) + " |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(attributes),
    ]
    for r in rows:
        for point in r["mitigation"]:
            pm, pop = point["metrics"], point["popularity"]
            gaps = [
                f"{point['gaps'][f'{a}:ndcg@10']['estimate']:.3f}" if f"{a}:ndcg@10" in point["gaps"] else "–"
                for a in attributes
            ]
            lines.append(
                f"| {r['dataset'].removesuffix('-audit')} | {r['model']} | {point['penalty']:g} | {pm['ndcg@10']:.4f} | "
                f"{pm['hr@10']:.4f} | "
                f"{pop['longtail_share']:.3f} | {pop['gini_exposure']:.3f} | {pop['popularity_ratio']:.2f} | "
                f"{pop['coverage']:.3f} | " + " | ".join(gaps) + " |"
            )
    train = ", ".join(f"{r['model']} {r['train_seconds']:.0f} s" for r in rows)
    lines += ["", f"Training time: {train}. Machine: {rows[0]['machine']}.", ""]
    return lines


def campaign_section(path: Path) -> list[str]:
    """Campaign targeting on the synthetic campaign: mean over seeds of the latest run of each seed."""
    latest = latest_runs(path, dataset="campaign-synthetic", key=lambda r: (r["model"], r["params"]["seed"]))
    if not latest:
        return []
    models: dict[str, list[dict]] = {}
    for (model, _), r in latest.items():
        models.setdefault(model, []).append(r)
    first = next(iter(latest.values()))
    p = first["protocol"]
    shares = ", ".join(f"{k.replace('_', ' ')} {v:.0%}" for k, v in p["kind_shares"].items())
    keys = ["auuc", "qini"] + [
        f"{kind}@{b}" for kind in ("incremental", "true_incremental") for b in (10, 20, 30)
    ]
    lines = [
        "## Campaign targeting: uplift vs propensity",
        "",
        f"`benchmarks/run_campaign.py`: `behaviorlm.synthetic.campaign.synthetic_campaign` on the "
        f"{first['params']['events']} users ({first['n_users']:,}; {shares}; 50% randomly contacted). Models "
        f"fitted on {p['n_train']:,} users, every ordering scored on the other {p['n_test']:,}; mean over "
        f"{len({s for _, s in latest})} seeds. AUUC and Qini coefficient per user; incremental conversions per "
        '1,000 held-out users when the top 10/20/30% are contacted, measured from outcomes and ("true") from the '
        "planted effects. `true-uplift` ranks by the planted effects (the ceiling). docs/marketing.md.",
        "",
        "| targeting | AUUC | Qini | incr. @10% | incr. @20% | incr. @30% | true @10% | true @20% | true @30% |",
        "|---|" + "---:|" * 8,
    ]
    for model in sorted(models, key=lambda m: -np.mean([r["metrics"]["auuc"] for r in models[m]])):
        means = [np.mean([r["metrics"][k] for r in models[model]]) for k in keys]
        lines.append(
            f"| {model} | {means[0]:.4f} | {means[1]:.4f} | "
            + " | ".join(f"{v:+.1f}" for v in means[2:])
            + " |"
        )
    lines += ["", f"Machine: {first['machine']}.", ""]
    return lines


def purchase_section(path: Path) -> list[str]:
    """Purchase prediction on the Taobao slice: the latest run of each (model, seed), GNN mean over seeds."""
    latest = latest_runs(path, dataset="taobao-userbehavior", key=lambda r: (r["model"], r["params"]["seed"]))
    if not latest:
        return []
    first = next(iter(latest.values()))
    p = first["protocol"]
    minutes = p["cutoff_minutes_after_first_event"]
    keys = ["roc_auc", "pr_auc", "f1", "accuracy", "precision", "recall"]
    lines = [
        "## Purchase prediction on the Taobao slice (hetero GNN vs feature baselines)",
        "",
        f"`benchmarks/run_purchase_gnn.py` on {p['events']} (docs/graph.md). Candidates: (user, item) pairs with "
        f"a view/cart/fav before the cutoff; label: purchase within {p['window_seconds'] // 60} minutes after it; "
        "graph and features from events before the cutoff only. Cutoffs (minutes after the first event): train "
        f"{minutes['train']}, validation {minutes['valid']}, test {minutes['test']}; "
        f"{p['train']['positives']} / {p['valid']['positives']} / {p['test']['positives']} purchased pairs among "
        f"{p['train']['pairs']:,} / {p['valid']['pairs']:,} / {p['test']['pairs']:,}. Hyperparameters, early "
        "stopping and the F1 threshold (for F1, accuracy, precision, recall) chosen on validation; metrics on "
        "the pooled test pairs. PR-AUC of a random score is the positive rate "
        f"({p['test']['positives'] / p['test']['pairs']:.5f}). The last column is GNN minus the baseline chosen "
        "on validation, with a paired bootstrap 95% interval over the test pairs.",
        "",
        "| model | seed | ROC-AUC | PR-AUC | F1 | accuracy | precision | recall | valid ROC-AUC | "
        "ROC-AUC vs baseline [95%] | commit |",
        "|---|---:|" + "---:|" * 8 + "---|",
    ]
    for (model, seed), r in sorted(latest.items(), key=lambda kv: (kv[0][0] != "hetero-gnn", kv[0])):
        m = r["metrics"]
        diff = (r.get("comparison") or {}).get("roc_auc_difference")
        versus = f"{diff['difference']:+.4f} [{diff['low']:+.4f}, {diff['high']:+.4f}]" if diff else "–"
        lines.append(
            f"| {model} | {seed} | "
            + " | ".join(f"{m[k]:.4f}" for k in keys)
            + f" | {r['valid_metrics']['roc_auc']:.4f} | {versus} | {r['git_commit']} |"
        )
    gnn = [r for (model, _), r in latest.items() if model == "hetero-gnn"]
    if len(gnn) > 1:
        aucs = [r["metrics"]["roc_auc"] for r in gnn]
        lines += [
            "",
            f"hetero-gnn over {len(gnn)} seeds: ROC-AUC {np.mean(aucs):.4f} ± {np.std(aucs):.4f} (sd).",
        ]
    lines += ["", f"Machine: {first['machine']}.", ""]
    return lines


def main() -> None:
    records = load_latest(RESULTS)
    lines = [
        "# Benchmarks",
        "",
        "Generated by `benchmarks/make_tables.py` from `benchmarks/results.jsonl` (latest run per dataset and "
        "model); regenerate with `make bench`. Every number states its protocol; sampled-negative metrics are "
        "never mixed with full-ranking ones.",
        "",
        *ranking_section(records, best_gpu_runs(GPU_RESULTS)),
        *gpu_section(GPU_RESULTS),
        *inference_section(records),
        *serving_copy_section(RESULTS),
        *busy_section(RESULTS),
        *peer_section(peer_runs(RESULTS)),
        *distill_section(records),
        *service_section(records),
        *bots_section(records),
        *text_fusion_section(records),
        *churn_section(records),
        *influence_section(records),
        *effects_section(RESULTS),
        *campaign_section(RESULTS),
        *purchase_section(RESULTS),
        *llm_section(RESULTS),
        *knowledge_section(records),
        *ingest_section(records),
        *audit_section(records),
    ]
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text("\n".join(lines) + "\n")
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
