"""Checks on a saved model folder before anything in it is trusted.

A model folder may come from elsewhere (a colleague, a download, a half-finished copy), and the service
swaps a reloaded model in while answering requests. So :func:`behaviorlm.models.registry.load_model` reads
it defensively: every file must be a regular file (a symlink to ``/dev/zero`` would never finish
reading), ``model.json`` must have the documented shape and its ``params`` the constructor's names and
types, the weights must parse as safetensors, the training index space must be consistent, every
floating-point tensor must be finite, and a network's tensors must have exactly the names, shapes and
dtypes the model builds (checked on PyTorch's ``meta`` device, so absurd sizes allocate nothing). Every
failure is one :class:`ModelLoadError` that names the file and the reason.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import stat
import typing
import warnings
from pathlib import Path
from typing import Any

import pydantic
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch.overrides import TorchFunctionMode

MAX_MODEL_JSON_BYTES = 2**31
"""``model.json`` holds the user and item ids; 2 GiB is far above any catalogue this project handles."""

TRAINING_TENSORS = ("train.user_ptr", "train.items", "train.timestamps", "train.event_types")


class ModelLoadError(ValueError):
    """A saved model folder that cannot be loaded; the message names the file and the reason (one line).

    A ``ValueError``, so callers that treat bad input as ``ValueError`` keep working.
    """


def one_line(exc: BaseException, *, max_chars: int = 400) -> str:
    """``exc``'s message on one line (PyTorch's state-dict errors span several), shortened."""
    text = " ".join(part.strip() for part in str(exc).splitlines() if part.strip()) or type(exc).__name__
    return text if len(text) <= max_chars else text[: max_chars - 3] + "..."


def regular_file(path: Path, *, what: str) -> Path:
    """``path`` if it is (or links to) a regular file; a :class:`ModelLoadError` saying why not."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ModelLoadError(f"{path} not found: {path.parent} is not a saved behaviorlm model") from None
    except OSError as exc:
        raise ModelLoadError(f"{path}: cannot read the {what}: {one_line(exc)}") from None
    if not stat.S_ISREG(mode):
        raise ModelLoadError(f"{path}: the {what} is not a regular file")
    return path


def read_meta(path: Path) -> dict[str, Any]:
    """``model.json``: an object with the model's registry name, params and training index space."""
    regular_file(path, what="model description")
    if path.stat().st_size > MAX_MODEL_JSON_BYTES:
        raise ModelLoadError(f"{path}: over {MAX_MODEL_JSON_BYTES} bytes, not a model description")
    try:
        meta = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{path}: not valid JSON ({one_line(exc)})") from None
    if not isinstance(meta, dict):
        raise ModelLoadError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    expected = {"model": str, "params": dict, "user_ids": list, "item_ids": list, "event_type_vocab": list}
    for key, kind in expected.items():
        if key not in meta:
            raise ModelLoadError(f"{path}: the key {key!r} is missing")
        if not isinstance(meta[key], kind):
            raise ModelLoadError(
                f"{path}: {key!r} must be a JSON {_json_kind(kind)}, got {type(meta[key]).__name__}"
            )
    for key in ("user_ids", "item_ids"):
        bad = next((v for v in meta[key] if isinstance(v, bool) or not isinstance(v, str | int)), None)
        if bad is not None:
            raise ModelLoadError(f"{path}: {key!r} must hold strings or integers, found {type(bad).__name__}")
    if not meta["item_ids"]:
        raise ModelLoadError(f"{path}: 'item_ids' is empty")
    if len(set(map(str, meta["item_ids"]))) != len(meta["item_ids"]):
        raise ModelLoadError(f"{path}: 'item_ids' holds duplicates")
    if not all(isinstance(v, str) for v in meta["event_type_vocab"]):
        raise ModelLoadError(f"{path}: 'event_type_vocab' must hold strings")
    return meta


def _json_kind(kind: type) -> str:
    return {str: "string", dict: "object", list: "list"}[kind]


def check_params(cls: type, params: dict[str, Any], *, source: Path) -> None:
    """``params`` must name only constructor arguments of ``cls``, give every required one, and have the
    annotated types (as JSON carries them: a list for a tuple, an integer for a float)."""
    signature = inspect.signature(cls.__init__)
    accepted = {
        name: p
        for name, p in signature.parameters.items()
        if name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    }
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ModelLoadError(f"{source}: {cls.__name__} has no parameter(s) {unknown}")
    missing = sorted(n for n, p in accepted.items() if p.default is p.empty and n not in params)
    if missing:
        raise ModelLoadError(f"{source}: {cls.__name__} needs the parameter(s) {missing}")
    hints = typing.get_type_hints(cls.__init__)
    for name, value in params.items():
        if name not in hints:
            continue
        hint = hints[name]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            # An options object (``training``): each field with its own type, then the object's checks.
            fields = typing.get_type_hints(hint)
            unknown = sorted(set(value) - set(fields))
            if unknown:
                raise ModelLoadError(f"{source}: {name!r} of {cls.__name__} has no option(s) {unknown}")
            for key, item in value.items():
                _check_value(fields[key], item, what=f"option {name}.{key} of {cls.__name__}", source=source)
            try:
                hint(**value)
            except (TypeError, ValueError) as exc:
                raise ModelLoadError(f"{source}: {name!r} of {cls.__name__}: {one_line(exc)}") from None
            continue
        _check_value(hint, value, what=f"parameter {name!r} of {cls.__name__}", source=source)


def _check_value(hint: Any, value: Any, *, what: str, source: Path) -> None:
    """``value`` (as read from JSON) has the annotated type, strictly."""
    strict = pydantic.ConfigDict(strict=True, arbitrary_types_allowed=True)
    try:
        adapter = pydantic.TypeAdapter(hint, config=strict)
        adapter.validate_json(json.dumps(value))
    except pydantic.ValidationError as exc:
        reason = exc.errors()[0]["msg"]
        raise ModelLoadError(f"{source}: {what} is {value!r}: {reason}") from None
    except pydantic.PydanticSchemaGenerationError:  # e.g. tensors: not something JSON carries
        return


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of ``weights.safetensors`` (header and data ranges checked by safetensors itself)."""
    regular_file(path, what="weights file")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"{path}: not a valid safetensors file ({one_line(exc)})") from None


def check_tensors(tensors: dict[str, torch.Tensor], meta: dict[str, Any], *, source: Path) -> None:
    """The training index space is consistent with ``model.json`` and every float tensor is finite."""
    for name in TRAINING_TENSORS:
        if name not in tensors:
            raise ModelLoadError(f"{source}: the tensor {name!r} is missing")
        tensor = tensors[name]
        if tensor.ndim != 1 or tensor.dtype != torch.int64:
            raise ModelLoadError(
                f"{source}: {name!r} must be a 1-D int64 tensor, got {tensor.dtype} {list(tensor.shape)}"
            )
    user_ptr, items = tensors["train.user_ptr"], tensors["train.items"]
    n_events = len(items)
    if len(user_ptr) != len(meta["user_ids"]) + 1 or user_ptr[0] != 0 or user_ptr[-1] != n_events:
        raise ModelLoadError(
            f"{source}: 'train.user_ptr' does not index {len(meta['user_ids'])} users over {n_events} events"
        )
    if n_events and bool((user_ptr[1:] < user_ptr[:-1]).any()):
        raise ModelLoadError(f"{source}: 'train.user_ptr' decreases")
    for name in ("train.timestamps", "train.event_types"):
        if len(tensors[name]) != n_events:
            raise ModelLoadError(f"{source}: {name!r} has {len(tensors[name])} entries, expected {n_events}")
    _check_range(items, len(meta["item_ids"]), name="train.items", source=source)
    _check_range(
        tensors["train.event_types"], len(meta["event_type_vocab"]), name="train.event_types", source=source
    )
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ModelLoadError(f"{source}: the tensor {name!r} holds NaN or infinite values")


def _check_range(values: torch.Tensor, size: int, *, name: str, source: Path) -> None:
    if len(values) and (int(values.min()) < 0 or int(values.max()) >= size):
        raise ModelLoadError(f"{source}: {name!r} holds indices outside [0, {size})")


class _ParametersOnMeta(TorchFunctionMode):
    """Creates the tensors that hold a network's parameters and buffers (``torch.empty``, ``zeros``, ...)
    on the ``meta`` device, which allocates nothing. Unlike ``torch.device("meta")``, small values built
    with ``torch.tensor`` stay real, so a model may still read sizes from them."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _SIZED_CONSTRUCTORS and kwargs.get("device") is None:
            kwargs["device"] = "meta"
        return func(*args, **kwargs)


_SIZED_CONSTRUCTORS = frozenset(
    {
        torch.empty,
        torch.empty_strided,
        torch.zeros,
        torch.ones,
        torch.full,
        torch.rand,
        torch.randn,
        torch.randint,
        torch.arange,
        torch.eye,
        torch.linspace,
    }
)


def dry_run_state(model: Any, state: dict[str, torch.Tensor], *, source: Path) -> None:
    """Restore ``state`` into ``model`` with its network's tensors on the ``meta`` device (no memory is
    allocated for them), so that wrong names, shapes or dtypes — and params that build an absurdly large
    network — are reported before the real restore. A network's tensors must match its parameters'
    dtypes exactly: ``load_state_dict`` would silently cast integers into float weights."""
    with warnings.catch_warnings(), _ParametersOnMeta():
        # Copying a real tensor into a meta parameter is a deliberate no-op here.
        warnings.simplefilter("ignore", UserWarning)
        model._load_state(state)
    net = getattr(model, "net_", None)
    if isinstance(net, torch.nn.Module):
        for name, expected in net.state_dict().items():
            found = state.get(name)
            if found is not None and found.dtype != expected.dtype:
                raise ModelLoadError(
                    f"{source}: the tensor 'state.{name}' is {found.dtype}, the model needs {expected.dtype}"
                )
        del model.net_
