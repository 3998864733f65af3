"""Service commands: ``serve`` and the ``keys`` group."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from behaviorlm.cli.common import (
    app,
    console,
    err_console,
    user_errors,
)
from behaviorlm.config import load_config

keys_app = typer.Typer(help="API keys of the REST service.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
@user_errors
def keys_create(
    name: Annotated[str, typer.Option(help="Name of the key (shown in logs).")],
    keys_file: Annotated[
        Path, typer.Option("--keys-file", help="Keys file (JSON, created if absent).")
    ] = Path("keys.json"),
    scope: Annotated[
        list[str] | None, typer.Option("--scope", help="read, write or admin; repeat for several.")
    ] = None,
) -> None:
    """Create an API key; the key is printed once and only its SHA-256 is stored."""
    from behaviorlm.serving.security import create_key

    secret = create_key(keys_file, name=name, scopes=scope or ["read"])
    err_console.print(
        f"key {name!r} ({', '.join(sorted(set(scope or ['read'])))}) added to {keys_file}; it is shown only now:"
    )
    print(secret)


@keys_app.command("revoke")
@user_errors
def keys_revoke(
    name: Annotated[str, typer.Option(help="Name of the key to revoke.")],
    keys_file: Annotated[Path, typer.Option("--keys-file", help="Keys file (JSON).")] = Path("keys.json"),
) -> None:
    """Revoke an API key: it is removed from the keys file, and a running service refuses it from its
    next request on (the service re-reads the file when it changes; no restart)."""
    from behaviorlm.serving.security import revoke_key

    revoked = revoke_key(keys_file, name=name)
    err_console.print(f"key {revoked.name!r} ({', '.join(revoked.scopes)}) revoked in {keys_file}")


@keys_app.command("list")
@user_errors
def keys_list(
    keys_file: Annotated[Path, typer.Option("--keys-file", help="Keys file (JSON).")] = Path("keys.json"),
) -> None:
    """List the API keys: name, scopes and the first 8 hex digits of the key's SHA-256 (enough to tell
    keys apart; neither a key nor its full hash is ever printed)."""
    from behaviorlm.serving.security import list_keys

    keys = list_keys(keys_file)
    table = Table("name", "scopes", "sha256", title=f"{len(keys)} keys in {keys_file}", title_justify="left")
    for key in keys:
        table.add_row(key.name, ", ".join(key.scopes), key.sha256[:8] + "…")
    console.print(table)


@app.command()
@user_errors
def serve(
    config: Annotated[
        Path,
        typer.Option("--config", "-c", help="Service config (.toml/.json): store, model, keys_file, limits."),
    ],
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
) -> None:
    """Start the REST service (OpenAPI docs at /docs). A model folder that does not load stops it with
    one line saying why."""
    import logging

    import uvicorn

    from behaviorlm.config import ServiceConfig
    from behaviorlm.serving.app import create_app

    service_config = load_config(ServiceConfig, config)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # uvicorn's access log prints raw paths, which hold user ids; the app logs pseudonymized lines itself.
    uvicorn.run(create_app(service_config), host=host, port=port, access_log=False, log_level="info")
