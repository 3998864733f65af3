"""IngestConfig: defaults that work, unknown keys and bad values are errors that name the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from behaviorlm.config import ConfigError, IngestConfig, load_config


def test_defaults() -> None:
    config = load_config(IngestConfig, {})
    assert config.format == "csv"
    assert config.timestamp_unit == "s"
    assert config.missing_policy("user_id") == "quarantine"
    assert config.missing_policy("timestamp") == "quarantine"
    assert config.missing_policy("text") == "null"
    assert config.missing_policy("value") == "null"
    assert config.vocabulary().mapping()["pv"] == "view"
    assert config.vocabulary().mapping()["buy"] == "purchase"


def test_load_from_dict_json_and_toml(tmp_path: Path) -> None:
    data = {"format": "tsv", "columns": {"user_id": "uid"}, "missing": {"text": "fill:none"}}
    (tmp_path / "c.json").write_text(json.dumps(data))
    (tmp_path / "c.toml").write_text(
        'format = "tsv"\n[columns]\nuser_id = "uid"\n[missing]\ntext = "fill:none"\n'
    )
    for source in (data, tmp_path / "c.json", str(tmp_path / "c.toml")):
        config = load_config(IngestConfig, source)
        assert (config.format, config.columns, config.missing_policy("text")) == (
            "tsv",
            {"user_id": "uid"},
            "fill:none",
        )


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"colums": {}}, "colums: unknown key"),
        ({"format": "csv", "timestamp_units": "ms"}, "timestamp_units: unknown key"),
        (
            {"missing": {"user_id": "null"}},
            "'user_id' is required: its missing-value policy cannot be 'null'",
        ),
        ({"missing": {"event_type": "null"}}, "'event_type' is required"),
        ({"missing": {"colour": "null"}}, "missing-value policy for unknown field 'colour'"),
        ({"missing": {"text": "drop"}}, "missing-value policy 'drop' for 'text' must be"),
        ({"columns": {"usr": "a"}}, "unknown event field(s) ['usr'] in columns"),
        ({"format": "xml"}, "format:"),
        ({"timestamp_unit": "h"}, "timestamp_unit:"),
        ({"max_text_bytes": 0}, "max_text_bytes:"),
        ({"event_type": "teleport"}, "event_type 'teleport' is not in the event-type vocabulary"),
        ({"event_type_aliases": {"pv": "nope"}}, "alias 'pv' points to 'nope'"),
    ],
)
def test_bad_config_is_an_error_naming_the_key(data: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_config(IngestConfig, data)
    assert fragment in str(excinfo.value)
    assert str(excinfo.value).startswith("invalid IngestConfig: ")


def test_every_bad_key_is_named_at_once() -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_config(IngestConfig, {"colums": {}, "delimter": ",", "header": True})
    message = str(excinfo.value)
    assert "colums: unknown key" in message
    assert "delimter: unknown key" in message


def test_required_fields_accept_fill_and_quarantine() -> None:
    config = load_config(IngestConfig, {"missing": {"item_id": "fill:unknown", "user_id": "quarantine"}})
    assert config.missing_policy("item_id") == "fill:unknown"
    assert config.missing_policy("user_id") == "quarantine"


def test_config_file_problems_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(IngestConfig, tmp_path / "absent.json")
    (tmp_path / "bad.json").write_text('{"format": "csv",}')
    with pytest.raises(ConfigError, match=r"bad\.json is not valid JSON"):
        load_config(IngestConfig, tmp_path / "bad.json")
    (tmp_path / "bad.toml").write_text("format = \n")
    with pytest.raises(ConfigError, match=r"bad\.toml is not valid TOML"):
        load_config(IngestConfig, tmp_path / "bad.toml")
    (tmp_path / "typo.toml").write_text('fromat = "csv"\n')
    with pytest.raises(ConfigError, match="fromat: unknown key"):
        load_config(IngestConfig, tmp_path / "typo.toml")


def test_assignment_is_validated() -> None:
    config = IngestConfig()
    with pytest.raises(ValueError, match="timestamp_unit"):
        config.timestamp_unit = "days"


def test_llm_threads_drop_to_one_on_a_busy_machine(monkeypatch) -> None:
    from behaviorlm.config import default_llm_threads

    monkeypatch.delenv("BEHAVIORLM_LLM_THREADS", raising=False)
    assert default_llm_threads(cores=2, load=0.2) == 2  # quiet
    assert default_llm_threads(cores=2, load=1.7) == 1  # another process holds a core
    assert default_llm_threads(cores=1, load=0.0) == 1
    assert default_llm_threads(cores=16, load=6.0) == 2  # plenty of free cores
    monkeypatch.setenv("BEHAVIORLM_LLM_THREADS", "3")
    assert default_llm_threads(cores=2, load=9.0) == 3  # the environment decides


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="needs /proc/stat (Linux)")
def test_busy_cores_count_other_processes() -> None:
    import subprocess
    import sys
    import time

    from behaviorlm.config import other_processes_busy_cores

    spinner = subprocess.Popen(
        [sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 3: pass"]
    )
    try:
        time.sleep(0.3)
        assert other_processes_busy_cores(0.5) >= 0.6  # the child holds a core
    finally:
        spinner.wait()
