"""`behaviorlm keys create / list / revoke`: list never shows a key or its full hash, revoke removes
the key (a running service refuses it at once: tests/serving/test_hardening.py), mistakes are one line."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from behaviorlm.cli.main import app

runner = CliRunner()


def _create(keys_file, name: str, *scopes: str) -> str:
    args = ["keys", "create", "--name", name, "--keys-file", str(keys_file)]
    for scope in scopes:
        args += ["--scope", scope]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return result.stdout.strip().splitlines()[-1]


def test_keys_list_shows_names_and_scopes_but_never_a_key_or_a_full_hash(tmp_path) -> None:
    keys_file = tmp_path / "keys.json"
    secrets = [_create(keys_file, "backend", "read", "write"), _create(keys_file, "ops", "admin")]
    result = runner.invoke(app, ["keys", "list", "--keys-file", str(keys_file)])
    assert result.exit_code == 0, result.output
    assert "backend" in result.output and "read, write" in result.output and "ops" in result.output
    hashes = [entry["sha256"] for entry in json.loads(keys_file.read_text())]
    for secret, digest in zip(secrets, hashes, strict=True):
        assert secret not in result.output and digest not in result.output
        assert digest[:8] in result.output


def test_keys_revoke_removes_only_that_key(tmp_path) -> None:
    keys_file = tmp_path / "keys.json"
    _create(keys_file, "old", "read")
    _create(keys_file, "new", "read")
    result = runner.invoke(app, ["keys", "revoke", "--name", "old", "--keys-file", str(keys_file)])
    assert result.exit_code == 0, result.output
    assert "'old'" in result.output and "revoked" in result.output
    assert [entry["name"] for entry in json.loads(keys_file.read_text())] == ["new"]
    again = runner.invoke(app, ["keys", "revoke", "--name", "old", "--keys-file", str(keys_file)])
    assert again.exit_code == 2
    assert "no key named 'old'" in again.output and "Traceback" not in again.output
    # The name is free again.
    _create(keys_file, "old", "read")


def test_keys_commands_on_a_missing_or_broken_keys_file_are_one_line_errors(tmp_path) -> None:
    missing = tmp_path / "nope.json"
    for args in (["keys", "list"], ["keys", "revoke", "--name", "x"]):
        result = runner.invoke(app, [*args, "--keys-file", str(missing)])
        assert result.exit_code == 2 and "does not exist" in result.output, result.output
    broken = tmp_path / "broken.json"
    broken.write_text('{"name": "not a list"}')
    result = runner.invoke(app, ["keys", "list", "--keys-file", str(broken)])
    assert result.exit_code == 2 and "is not a list of" in result.output and "Traceback" not in result.output
