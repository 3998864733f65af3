"""`behaviorlm explain`: next items of a stored user and, with --why, the events that caused the top one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from behaviorlm.cli.main import app
from behaviorlm.models.baselines import Popularity
from behaviorlm.models.transformer import BehaviorTransformer
from behaviorlm.testing.synthetic import cart_cause_sequences

runner = CliRunner()
SMALL = {"d_model": 32, "n_layers": 1, "n_heads": 2, "dropout": 0.1, "max_len": 16, "epochs": 40, "lr": 5e-3}

# A new user: views and one cart of item 17; in the planted world a cart of item i leads to a
# purchase of item (i + 10) % 20, so the top prediction is 7 and the cart is what caused it.
EVENTS = """user_id,item_id,event_type,timestamp
probe,3,view,1700000000
probe,17,cart,1700000060
probe,8,view,1700000120
probe,5,view,1700000180
probe,12,view,1700000240
other,4,view,1700000000
"""


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("explain")
    planted = cart_cause_sequences(n_users=600, n_items=20, length=8, seed=0).interactions
    BehaviorTransformer.from_params(SMALL).fit(planted).save(root / "model")
    Popularity().fit(planted).save(root / "pop")
    src = root / "events.csv"
    src.write_text(EVENTS)
    store = root / "store.duckdb"
    mapping = [f"-m{field}={field}" for field in ("user_id", "item_id", "event_type", "timestamp")]
    result = runner.invoke(app, ["ingest", str(src), *mapping, "--store", str(store)])
    assert result.exit_code == 0, result.output
    return store, root


def _rows(output: str) -> list[list[str]]:
    """The cells of every rich table row in the output."""
    return [
        [cell.strip() for cell in line.strip().strip("│").split("│")]
        for line in output.splitlines()
        if line.strip().startswith("│")
    ]


def test_explain_predicts_and_names_the_causing_event(saved: tuple[Path, Path]) -> None:
    store, root = saved
    args = [
        "explain",
        "probe",
        "--store",
        str(store),
        "--model",
        str(root / "model"),
        "--top",
        "3",
        "--no-words",
    ]
    result = runner.invoke(app, [*args, "--why"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    rows = _rows(result.output)
    predictions = [r for r in rows if len(r) == 3]
    assert [r[0] for r in predictions] == ["1", "2", "3"]
    assert predictions[0][1] == "7"
    why = [r for r in rows if len(r) == 5]
    assert len(why) == 3
    assert why[0][2:4] == ["cart", "17"] and why[0][0] == "4"  # the cart, 4 events ago
    effects = [float(r[4]) for r in why]
    assert effects == sorted(effects, reverse=True) and effects[0] > 0.5

    plain = runner.invoke(app, args, env={"COLUMNS": "160"})
    assert plain.exit_code == 0, plain.output
    assert [r for r in _rows(plain.output) if len(r) == 5] == []
    assert [r for r in _rows(plain.output) if len(r) == 3] == predictions


def test_explain_user_errors(saved: tuple[Path, Path]) -> None:
    store, root = saved
    result = runner.invoke(app, ["explain", "nobody", "--store", str(store), "--model", str(root / "model")])
    assert result.exit_code == 2 and "user 'nobody' has no events" in result.output
    result = runner.invoke(app, ["explain", "probe", "--store", str(store), "--no-words"])
    assert result.exit_code == 2 and "nothing to explain" in result.output
    result = runner.invoke(app, ["explain", "probe", "--store", str(store), "--model", str(root / "pop")])
    assert result.exit_code == 2 and re.search(r"needs a sequence model", result.output)
    result = runner.invoke(app, ["explain", "other", "--store", str(store), "--model", str(root / "nowhere")])
    assert result.exit_code == 2 and "not a saved behaviorlm model" in result.output


def test_explain_in_words_with_any_openai_compatible_server(saved: tuple[Path, Path], tmp_path: Path) -> None:
    """--llm-url: the facts (including the cart that causes the top prediction) reach the server; the
    model's claims are verified, a wrong one corrected from its fact, and the words rendered from them."""
    import json

    from behaviorlm.testing.fake_llm import FakeLLMServer, Step

    store, root = saved
    answer = {
        "intent": "ready to buy",
        "confidence": 0.6,
        "claims": [
            {"fact": "E4", "field": "action", "value": "added to cart"},
            {"fact": "E1", "field": "item", "value": "12"},
            {"fact": "P1", "field": "events", "value": "9"},
        ],
    }
    env = {"COLUMNS": "160", "BEHAVIORLM_CACHE_DIR": str(tmp_path / "cache")}
    with FakeLLMServer([Step(text=json.dumps(answer))]) as server:
        args = [
            "explain",
            "probe",
            "--store",
            str(store),
            "--model",
            str(root / "model"),
            "--llm-url",
            server.url,
        ]
        result = runner.invoke(app, [*args, "--json", str(tmp_path / "x.json")], env=env)
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.replace("│", " ").split())  # the panel wraps at the console's width
    assert "intent: ready to buy (confidence 0.60)" in flat
    assert "claims: 2 verified, 1 corrected, 0 dropped" in flat
    # The corrected count is stated from the fact (5 events), never the model's 9.
    assert "5 events in all" in flat and "9 events" not in flat
    prompt = server.requests[0]["messages"][1]["content"]
    assert "added to cart item 17" in prompt and "reason #1 for guess N1" in prompt
    saved_json = json.loads((tmp_path / "x.json").read_text())
    assert saved_json["explanation"]["source"] == "llm" and saved_json["facts"]["facts"]


def test_ask_and_an_unreachable_server(saved: tuple[Path, Path], tmp_path: Path) -> None:
    import json

    from behaviorlm.testing.fake_llm import FakeLLMServer, Step

    store, _ = saved
    env = {"COLUMNS": "160", "BEHAVIORLM_CACHE_DIR": str(tmp_path / "cache")}
    reply = {"calls": [{"tool": "last_event", "event_type": "cart"}]}
    with FakeLLMServer([Step(text=json.dumps(reply))]) as server:
        result = runner.invoke(
            app,
            [
                "ask",
                "probe",
                "What did they add to the cart last?",
                "--store",
                str(store),
                "--llm-url",
                server.url,
            ],
            env=env,
        )
    assert result.exit_code == 0, result.output
    assert "added to cart item 17" in result.output and "last_event(event_type='cart')" in result.output
    # The question names no tool's subject: refused without asking any model.
    result = runner.invoke(
        app, ["ask", "probe", "Anything?", "--store", str(store), "--llm-url", "http://127.0.0.1:9/v1"]
    )
    assert result.exit_code == 0 and "I don't know" in result.output
    result = runner.invoke(
        app,
        [
            "ask",
            "probe",
            "How many events does the user have?",
            "--store",
            str(store),
            "--llm-url",
            "http://127.0.0.1:9/v1",
        ],
        env=env,
    )
    assert result.exit_code == 2 and "cannot reach" in result.output


def test_explain_reads_a_saved_intent_model(saved: tuple[Path, Path], tmp_path: Path) -> None:
    """--intent-model: a saved sequence classifier (not a recommender) gives the intent facts, and its
    probability is the confidence stated."""
    import json

    from behaviorlm.models.heads import SequenceClassifier, purchase_within_next
    from behaviorlm.testing.fake_llm import FakeLLMServer, Step

    store, root = saved
    planted = cart_cause_sequences(n_users=300, n_items=20, length=8, seed=1).interactions
    labels = purchase_within_next(planted, n_events=2)
    small = {k: SMALL[k] for k in ("d_model", "n_layers", "n_heads", "dropout", "max_len")}
    SequenceClassifier.from_params({**small, "epochs": 2}).fit(labels).save(root / "intent")
    env = {"COLUMNS": "160", "BEHAVIORLM_CACHE_DIR": str(tmp_path / "cache")}
    answer = {"intent": "1", "claims": [{"fact": "E1", "field": "item", "value": "12"}]}
    with FakeLLMServer([Step(text=json.dumps(answer))]) as server:
        args = ["explain", "probe", "--store", str(store), "--intent-model", str(root / "intent")]
        result = runner.invoke(app, [*args, "--llm-url", server.url], env=env)
    assert result.exit_code == 0, result.output
    system, prompt = (m["content"] for m in server.requests[0]["messages"])
    # The classifier's most likely class is stated by code: the language model is told it, and its
    # probabilities are not offered as claims (the claims are to say why).
    assert "The intent model's most likely intent is" in system and "intent model" not in prompt
    flat = " ".join(result.output.replace("│", " ").split())
    assert "intent: 1" in flat and "intent-model probability" in flat
    # A recommender is not an intent model: one clear line, no traceback.
    wrong_args = [*args[:-2], "--intent-model", str(root / "pop"), "--llm-url", "http://127.0.0.1:9"]
    wrong = runner.invoke(app, wrong_args, env=env)
    assert wrong.exit_code == 2 and "an intent model is one of" in wrong.output
