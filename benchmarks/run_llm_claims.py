"""Mutation testing of the claim verifier (behaviorlm.llm.claims): does it catch false claims, and does it
accept true ones however they are written?

For ``--users`` users of each dataset (seeded) and every segment of a k-means segmentation of the users
(by the categories of their events), the fact sets are built (:func:`behaviorlm.llm.facts.user_facts`,
:func:`behaviorlm.llm.facts.segment_facts`). Two sources of correct claims:

* ``llm``: the claims the embedded model makes in :func:`explain_intent` / :func:`describe_segment`
  that the verifier accepted (``--llm``; the model's corrected and dropped claims are counted apart);
* ``sampled``: for every fact and every field it has, a true claim written in a random surface form
  (dates as "March 13, 1998" or "1998/03/13", "The Aristocats" for "Aristocats, The", 62% for 0.62,
  counts with thousands separators, a fitting size word, another event's title for before/after).

Each correct claim is then mutated by every kind of error that applies to it, each mutation made false
by construction from the data (another item's title, a genre the item does not have, a count off by
1..10%, a date moved by 1..365 days, before <-> after / most-recent flipped / the runner-up category / a
size word that does not fit, a field the fact does not have, a segment size off by some users, another
user's alias, another rating or probability, another item id, another action). Reported per dataset:
``injected_error_recall`` (mutations not verified; target >= 0.98), ``false_rejection_rate`` (true
sampled claims not verified; target <= 0.02), recall by kind, and for ``--llm`` the model's own claim
accuracy. Records: model ``llm-claims-verifier`` per dataset in benchmarks/results.jsonl.

    .venv/bin/python benchmarks/run_llm_claims.py --users 200 --llm
"""

from __future__ import annotations

import argparse
import random
import time
from collections import Counter, defaultdict
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from behaviorlm.config import LLMConfig
from behaviorlm.data.datasets import open_dataset_store
from behaviorlm.data.features import item_features_from_store
from behaviorlm.data.store import EventStore
from behaviorlm.evaluation.benchmark import append_jsonl, provenance
from behaviorlm.llm.claims import SIZE_RANGES, Claim, fields_of, normalize, verify_claim
from behaviorlm.llm.client import LLMClient, LLMError
from behaviorlm.llm.facts import FactSet, segment_facts, user_alias, user_facts
from behaviorlm.llm.tasks import describe_segment, explain_intent
from behaviorlm.profiling.segments import Segmentation, summarize_segments

RESULTS = Path(__file__).resolve().parent / "results.jsonl"
DATASET_NAMES = {"ml-100k": "ml-100k", "s3rec-beauty": "s3rec-beauty"}
INVENTED_FIELDS = {
    "country": "United States",
    "price": "19.99",
    "age": "34",
    "gender": "female",
    "city": "London",
    "director": "Steven Spielberg",
    "discount": "20%",
    "language": "English",
}
ACTIONS = {
    "view": "viewed",
    "cart": "added to cart",
    "purchase": "purchased",
    "fav": "favourited",
    "rate": "rated",
    "review": "reviewed",
    "search": "searched for",
    "click": "clicked",
}
"""Event type -> a verb for it: a wrong action is the verb of another type."""


# ------------------------------------------------------------------------------------- true surface forms


def _date_forms(day: date) -> list[str]:
    return [
        day.isoformat(),
        f"{day:%B} {day.day}, {day.year}",
        f"{day.day} {day:%B} {day.year}",
        f"{day:%Y/%m/%d}",
        f"{day:%b} {day.day} {day.year}",
        f"{day:%B %Y}",
    ]


def true_forms(kind: str, truth: Any, field: str, facts: FactSet, fact_id: str) -> list[str]:
    """Correct ways of writing ``truth`` for a field of ``kind`` (the verifier must accept each)."""
    if kind == "text":
        t = str(truth)
        forms = [t, t.lower(), t.upper()]
        if m := __import__("re").match(r"^(.*), (The|A|An)$", t):
            forms.append(f"{m.group(2)} {m.group(1)}")
        if field == "action":
            forms = {
                "rate": ["rated", "rate"],
                "view": ["viewed", "view"],
                "click": ["clicked"],
                "cart": ["added to cart", "cart"],
                "purchase": ["purchased", "bought"],
                "review": ["reviewed"],
                "fav": ["favourited"],
            }.get(t, [t])
        if field == "title" and len(t) >= 24:
            words = t.split()
            for n in range(len(words) - 1, 0, -1):
                prefix = " ".join(words[:n]).rstrip(",;:-")
                if 2 * len(normalize(prefix)) >= len(normalize(t)) and len(normalize(prefix)) >= 12:
                    forms.append(prefix)
                    break
        return forms
    if kind == "member":
        return [str(m) for m in truth] + [str(truth[0]).lower()]
    if kind == "count":
        n = int(truth)
        return [str(n), f"{n:,}", f"{n} in all"]
    if kind == "number":
        x = float(truth)
        forms = [f"{x:g}", f"{round(x, 1):.1f}"]
        if field == "probability":
            forms.append(f"{100 * x:.0f}%")
        return forms
    if kind == "percent":
        x = float(truth)
        return [f"{x:.0f}%", f"{x:.0f} percent", f"{x / 100:.2f}"]
    if kind == "date":
        return _date_forms(date.fromisoformat(str(truth)[:10]))
    if kind == "size":
        words = {
            "small": ["small", "a small group", "niche"],
            "medium": ["medium", "moderate"],
            "large": ["large", "the majority", "big"],
        }
        return [w for size in truth for w in words[size]]
    if kind == "most":
        return ["yes", "true"] if truth else ["no", "false"]
    if kind == "order":
        out = list(truth)
        by_id = facts.by_id()
        titles = Counter(f.values.get("title") for f in facts.facts if f.kind == "event")
        out += [
            by_id[i].values["title"]
            for i in truth
            if by_id[i].values.get("title") and titles[by_id[i].values["title"]] == 1
        ]
        return out
    if kind == "identity":
        return [str(truth)]
    raise AssertionError(kind)


# ------------------------------------------------------------------------------------------ mutations


def mutations(
    claim: Claim, facts: FactSet, *, world: dict[str, Any], rng: random.Random
) -> list[tuple[str, Claim]]:
    """(kind, false claim) pairs made from the true ``claim``; each is false by construction."""
    fact = facts.by_id()[claim.fact]
    spec = fields_of(fact, facts)[claim.field]
    v = fact.values
    out: list[tuple[str, Claim]] = []

    def add(kind: str, field: str, value: str) -> None:
        out.append((kind, Claim(fact=claim.fact, field=field, value=value)))

    field, kind = claim.field, spec.kind
    if field == "title":
        wrong = world["titles"]
        for _ in range(20):
            other = rng.choice(wrong)
            a, b = normalize(other), normalize(str(spec.truth))
            if a and a != b and not b.startswith(a) and not a.startswith(b):
                add("wrong_title", field, other)
                break
    elif field == "category" and kind == "member":
        absent = [c for c in world["categories"] if normalize(c) not in {normalize(t) for t in spec.truth}]
        if absent:
            add("wrong_genre", field, rng.choice(absent))
    elif field == "most_common_category":
        counts = v["counts"]
        top = max(counts.values())
        runners = [c for c, n in counts.items() if n < top]
        if runners:
            add("swapped_comparison", field, max(runners, key=lambda c: counts[c]))
    elif kind == "count":
        n = int(spec.truth)
        delta = rng.choice([d for d in (-2, -1, 1, 2, 5, max(1, n // 10)) if n + d >= 0])
        label = "wrong_segment_size" if fact.kind == "segment" and field == "users" else "wrong_count"
        add(label, field, str(n + delta))
    elif kind == "percent":
        x = float(spec.truth)
        delta = rng.choice([-10, -5, -3, 3, 5, 10])
        if 0 <= x + delta <= 100:
            label = (
                "wrong_segment_size" if field == "share_pct" and fact.kind == "segment" else "wrong_number"
            )
            add(label, field, f"{x + delta:.0f}%")
    elif kind == "date":
        day = date.fromisoformat(str(spec.truth)[:10]) + timedelta(
            days=rng.choice([-365, -30, -3, -1, 1, 2, 7, 30])
        )
        add("wrong_date", field, day.isoformat())
    elif kind == "number":
        x = float(spec.truth)
        if field == "rating":
            add("wrong_number", field, str(rng.choice([r for r in (1, 2, 3, 4, 5) if abs(r - x) >= 1])))
        else:
            add("wrong_number", field, f"{x + rng.choice([-1, 1]) * max(0.15 * abs(x), 0.1):.2f}")
    elif kind == "size":
        misfit = [s for s, (lo, hi) in SIZE_RANGES.items() if s not in spec.truth]
        if misfit:
            add("swapped_comparison", field, rng.choice(misfit))
    elif kind == "most":
        add("swapped_comparison", field, "no" if spec.truth else "yes")
    elif kind == "order":
        other = "after" if field == "before" else "before"
        add("swapped_comparison", other, claim.value)
    elif field == "user":
        add("wrong_user", field, rng.choice([a for a in world["aliases"] if a != spec.truth]))
    elif field == "item":
        add("wrong_item", field, rng.choice([i for i in world["items"] if i != str(spec.truth)]))
    elif field == "action":
        add(
            "wrong_action",
            field,
            rng.choice(
                [a for a in ACTIONS if normalize(a) not in (normalize(spec.truth), normalize(spec.shown))]
            ),
        )
    if fact.kind in ("event", "next_item", "activity", "segment"):
        name = rng.choice([k for k in INVENTED_FIELDS if k not in fields_of(fact, facts)])
        add("invented_attribute", name, INVENTED_FIELDS[name])
    return out


# --------------------------------------------------------------------------------------------- a dataset


def segment_fact_sets(store: EventStore, *, k: int, seed: int) -> list[FactSet]:
    """k-means (k fixed) over each user's share of events per item attribute; the segments' fact sets."""
    from sklearn.cluster import KMeans

    interactions = store.interactions()
    features = item_features_from_store(store, interactions.item_ids)
    n_attr = len(features.attribute_vocab)
    item_of_token = np.repeat(np.arange(features.n_items), np.diff(features.attribute_ptr))
    item_attr = np.zeros((features.n_items, n_attr), dtype=np.float32)
    np.add.at(item_attr, (item_of_token, features.attribute_ids), 1.0)
    user_of_event = np.repeat(np.arange(interactions.n_users), interactions.lengths())
    x = np.zeros((interactions.n_users, n_attr), dtype=np.float32)
    np.add.at(x, user_of_event, item_attr[interactions.items])
    x /= np.maximum(x.sum(axis=1, keepdims=True), 1.0)
    labels = KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(x)
    centroids = np.stack([x[labels == s].mean(axis=0) for s in range(k)])
    segmentation = Segmentation(labels=labels, centroids=centroids, method="kmeans", silhouette=float("nan"))
    return [segment_facts(s) for s in summarize_segments(segmentation, interactions, item_features=features)]


def run_dataset(
    name: str, *, users: int, seed: int, client: LLMClient | None, segments: int, llm_users: int
) -> dict[str, Any]:
    rng = random.Random(seed)
    with open_dataset_store(DATASET_NAMES[name], read_only=True) as store:
        all_users = sorted(u for (u,) in store.rows("SELECT DISTINCT user_id FROM events"))
        chosen = [
            all_users[i]
            for i in np.random.default_rng(seed).choice(
                len(all_users), size=min(users, len(all_users)), replace=False
            )
        ]
        world = {
            "titles": [
                t for (t,) in store.rows("SELECT title FROM items WHERE title IS NOT NULL ORDER BY item_id")
            ],
            "categories": sorted(
                {
                    c
                    for (cat,) in store.rows("SELECT DISTINCT category FROM items WHERE category IS NOT NULL")
                    for c in cat.split(" > ")
                }
                | {
                    g
                    for (a,) in store.rows(
                        "SELECT DISTINCT attributes FROM items WHERE attributes IS NOT NULL"
                    )
                    for g in _genres(a)
                }
            ),
            "items": [i for (i,) in store.rows("SELECT item_id FROM items ORDER BY item_id LIMIT 5000")],
            "aliases": [user_alias(u) for u in all_users[:500]],
        }
        fact_sets: list[tuple[str, FactSet]] = []
        start = time.perf_counter()
        for user in chosen:
            fact_sets.append(("user", user_facts(store, user, with_anomaly=False)))
        print(f"{name}: {len(chosen)} users' facts in {time.perf_counter() - start:.1f} s", flush=True)
        fact_sets += [("segment", fs) for fs in segment_fact_sets(store, k=segments, seed=seed)]

    correct: list[tuple[str, Claim, FactSet]] = []  # (source, claim, facts)
    llm_status: Counter[str] = Counter()
    latencies = []
    asked = 0
    for kind, facts in fact_sets:
        for fact in facts.facts:
            for field, spec in fields_of(fact, facts).items():
                forms = true_forms(spec.kind, spec.truth, field, facts, fact.id)
                if forms:  # e.g. "before" of the newest event: no true claim exists
                    correct.append(
                        ("sampled", Claim(fact=fact.id, field=field, value=rng.choice(forms)), facts)
                    )
        if client is None or (kind == "user" and asked >= llm_users):
            continue
        asked += kind == "user"
        try:
            result = explain_intent(client, facts) if kind == "user" else describe_segment(client, facts)
        except LLMError as exc:
            print(f"  model failed: {exc}", flush=True)
            llm_status["failed"] += 1
            continue
        latencies.append(result.latency_s)
        print(
            f"  {kind} {asked:4d} {result.latency_s:5.1f}s {[v['status'] for v in result.claims]}", flush=True
        )
        for verdict in result.claims:
            llm_status[verdict["status"]] += 1
            if verdict["status"] == "verified":
                correct.append(("llm", Claim(**{k: verdict[k] for k in ("fact", "field", "value")}), facts))

    rejected_true = [c for src, c, fs in correct if src == "sampled" and not verify_claim(c, fs).ok]
    sampled = [c for src, c, _ in correct if src == "sampled"]
    caught: dict[str, list[bool]] = defaultdict(list)
    caught_by_source: dict[str, list[bool]] = defaultdict(list)
    missed: list[str] = []
    for source, claim, facts in correct:
        for kind, mutated in mutations(claim, facts, world=world, rng=rng):
            ok = verify_claim(mutated, facts).ok
            caught[kind].append(not ok)
            caught_by_source[source].append(not ok)
            if ok and len(missed) < 10:
                missed.append(
                    f"{kind}: {mutated.fact} {mutated.field}={mutated.value!r} (was {claim.value!r})"
                )
    all_caught = [x for v in caught.values() for x in v]
    metrics: dict[str, float] = {
        "injected_error_recall": float(np.mean(all_caught)),
        "false_rejection_rate": len(rejected_true) / max(len(sampled), 1),
        "n_mutations": float(len(all_caught)),
        "n_true_claims": float(len(sampled)),
        "n_llm_verified_claims": float(sum(1 for s, _, _ in correct if s == "llm")),
        "n_mutation_kinds": float(len(caught)),
    }
    metrics.update({f"recall_{k}": float(np.mean(v)) for k, v in sorted(caught.items())})
    metrics.update({f"recall_on_{s}_claims": float(np.mean(v)) for s, v in caught_by_source.items()})
    if client is not None:
        total = sum(llm_status[s] for s in ("verified", "corrected", "dropped"))
        metrics["llm_claims_verified_share"] = llm_status["verified"] / max(total, 1)
        metrics["llm_claims_corrected_share"] = llm_status["corrected"] / max(total, 1)
        metrics["llm_claims_dropped_share"] = llm_status["dropped"] / max(total, 1)
        metrics["llm_failures"] = float(llm_status["failed"])
        if latencies:
            metrics["latency_s_p50"] = float(np.percentile(latencies, 50))
            metrics["latency_s_p95"] = float(np.percentile(latencies, 95))
    print(f"{name}: missed mutations (first 10): {missed}")
    print(
        f"{name}: true claims rejected (first 10): {[f'{c.fact} {c.field}={c.value!r}' for c in rejected_true[:10]]}"
    )
    return metrics


def _genres(attributes: str) -> list[str]:
    import json

    try:
        data = json.loads(attributes)
    except ValueError:
        return []
    return (
        [str(g) for value in data.values() if isinstance(value, list) for g in value if isinstance(g, str)]
        if isinstance(data, dict)
        else []
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", nargs="+", default=["ml-100k", "s3rec-beauty"])
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--segments", type=int, default=6)
    parser.add_argument("--llm", action="store_true", help="also mutate the embedded model's verified claims")
    parser.add_argument("--llm-users", type=int, default=200, help="users whose explanation the model writes")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    client = LLMClient(LLMConfig(threads=args.threads, cache_dir="")) if args.llm else None
    for name in args.datasets:
        metrics = run_dataset(
            name,
            users=args.users,
            seed=args.seed,
            client=client,
            segments=args.segments,
            llm_users=args.llm_users,
        )
        print(name, {k: round(v, 4) for k, v in metrics.items()}, flush=True)
        if args.no_record:
            continue
        append_jsonl(
            RESULTS,
            {
                "dataset": name,
                "metrics": metrics,
                "model": "llm-claims-verifier",
                "n_users": args.users,
                "params": {
                    "seed": args.seed,
                    "segments": args.segments,
                    "llm": client.name if client else None,
                },
                **provenance(),
            },
        )


if __name__ == "__main__":
    main()
