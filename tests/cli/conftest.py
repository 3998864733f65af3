"""Shared set-up of the command-line tests."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from behaviorlm.cli.main import app
from behaviorlm.data.datasets import dataset_path


def ingest_ml_100k(store: Path) -> Path:
    """``behaviorlm ingest`` of the bundled ML-100k into ``store`` (checked to succeed); returns ``store``."""
    result = CliRunner().invoke(
        app, ["ingest", str(dataset_path("ml-100k")), "--format", "recbole", "--store", str(store)]
    )
    assert result.exit_code == 0, result.output
    return store
