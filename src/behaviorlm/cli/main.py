"""The ``behaviorlm`` command line: thin commands that parse, show progress and call the library.

Every command reports user errors (bad file, bad row, bad flag, unknown model) as one red line naming
what is wrong and exits with status 2; it never prints a traceback for a user mistake.
"""

# ruff: noqa: I001 (the command modules are imported in the order --help lists them)
from __future__ import annotations

# Each module registers its commands on the one Typer app when imported; `behaviorlm --help` lists them in
# this order (the order of the work: data, models, understanding, explanations, effects, graph, service).
import behaviorlm.cli.data
import behaviorlm.cli.training
import behaviorlm.cli.understand
import behaviorlm.cli.explain
import behaviorlm.cli.causal
import behaviorlm.cli.graph
import behaviorlm.cli.serve  # noqa: F401
from behaviorlm.cli.common import app

__all__ = ["app", "main"]


def main() -> None:  # pragma: no cover - console-script entry point
    app()


if __name__ == "__main__":  # python -m behaviorlm.cli.main (e.g. under torchrun)
    main()
