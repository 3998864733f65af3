"""The demo runs end to end on the bundled data and its models rank as they should."""

from __future__ import annotations

import re
from pathlib import Path

from rich.console import Console

from behaviorlm.demo import run_demo


def test_demo_end_to_end(tmp_path: Path) -> None:
    console = Console(file=open(tmp_path / "out.txt", "w"), width=120)  # noqa: SIM115
    results = run_demo(workdir=tmp_path / "demo", console=console, transformer_epochs=4)
    console.file.close()
    output = (tmp_path / "out.txt").read_text()
    ndcg = {name: m["ndcg@10"] for name, m in results.items()}
    # Full-ranking LOO on ML-100k: every baseline beats random by a wide margin and EASE leads.
    assert ndcg["random"] < 0.02
    assert ndcg["pop"] > 2 * ndcg["random"]
    assert ndcg["ease"] > ndcg["itemknn"] > ndcg["pop"]
    assert 0.05 < ndcg["ease"] < 0.2
    # Even after 4 epochs the Transformer is well above popularity.
    assert ndcg["transformer"] > ndcg["pop"]
    assert "unknown event type 'teleport'" in output
    assert "full ranking over 1,682 items" in output
    assert "after a new event" in output
    # Understanding users: anomalies with reasons, segments with genre lifts, a profile with interests.
    assert "most anomalous raters" in output and "kmeans(k=" in output
    assert "interests:" in output and "more unusual than" in output
    # Explanations in words from the embedded model: rendered from claims checked against the facts;
    # questions answered by tools; the personal one refused before any model sees it.
    assert "intent: " in output and " verified, " in output and "fallback" not in output
    assert "Q: What is the user's email address?\nA: I can't answer that" in output
    assert "Q: Which genre does the user rate most?\nA: The categories" in output
    # The knowledge graph adds paths from the user to the top guess as facts.
    assert "K1: graph path for guess N1: the user's rate of item" in output
    # ... listed under the header of the facts they belong to, the movies by title.
    assert output.index("facts about user 1") < output.index("K1: graph path")
    k1 = next(line for line in output.splitlines() if "K1: graph path" in line)
    assert re.search(r'rate of item \d+ "[^"]+" \(', k1), k1
    # Every step ends with its time and the total so far.
    assert all(f"step {n}: " in output for n in range(1, 9)) and "(total " in output
    # Acting on it: uplift vs propensity targeting, and a bias audit with attributes used for grouping only.
    assert "uplift-x-learner" in output and "bias audit of ease" in output and "gender" in output
    # The service the demo points to starts on its files and answers with the demo's key.
    from fastapi.testclient import TestClient

    from behaviorlm.config import ServiceConfig, load_config
    from behaviorlm.serving.app import create_app

    config = load_config(ServiceConfig, tmp_path / "demo" / "service.toml")
    key = (tmp_path / "demo" / "demo-key.txt").read_text().strip()
    assert key in output and "behaviorlm serve --config" in output
    with TestClient(create_app(config)) as client:
        recs = client.get("/v1/users/1/recommendations?k=5", headers={"X-API-Key": key})
        assert recs.status_code == 200 and len(recs.json()["items"]) == 5
        health = client.get("/v1/health").json()
        assert health["explanations_in_words"] is True and health["reports"] == ["audit", "targeting"]
        # Step 7's audit and targeting comparison are the dashboard's reports.
        audit = client.get("/v1/reports/audit", headers={"X-API-Key": key})
        assert audit.status_code == 200 and "gender" in audit.json()["report"]["groups"]
        targeting = client.get("/v1/reports/targeting", headers={"X-API-Key": key})
        assert targeting.status_code == 200 and targeting.json()["report"]["results"]
