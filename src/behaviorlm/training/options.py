"""The training options every neural model takes: one typed object, declared once.

Every neural model (:class:`~behaviorlm.models.transformer.BehaviorTransformer`, GRU4Rec, LightGCN, the
masked-behaviour pretrainer, the task heads, the purchase GNN) takes its architecture as keyword
arguments and how to train it as ``training=TrainingOptions(...)``::

    BehaviorTransformer(d_model=64, training=TrainingOptions(epochs=20, max_train_seconds=600))

A model's default is its class's own ``TrainingOptions`` (most use the defaults below; LightGCN's BPR
batches are larger, the pretrainer and heads run fewer epochs), visible in its signature and in
``get_params()``. The object is frozen: ``model.set_params(training__lr=3e-4)`` (scikit-learn's nested
parameter syntax, what grid searches use) puts a changed copy on the model, so a default shared by every
instance is never changed in place. ``model.json`` stores it as a plain object under ``"training"``; on the
command line the fields are plain ``-p`` keys (``-p epochs=20``, see :func:`constructor_params`).

The training loop's own settings (warmup, cosine floor, gradient clipping: :class:`~behaviorlm.training.loop.
TrainerConfig`) are not user options; :meth:`TrainerConfig.from_options` derives them from this object.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


def _finite_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True, kw_only=True)
class TrainingOptions:
    """How a neural model is trained. Same names, types and meaning in every model.

    ``epochs`` is a cap: with validation data, training stops after ``patience`` validations (one every
    ``eval_every`` epochs) without improvement and keeps the best weights. ``max_train_seconds`` is a wall
    budget that the learning-rate schedule is planned for (see ``TrainerConfig``). ``batch_size`` is the
    global batch (sequences; (user, item) pairs for LightGCN; unused by the full-graph purchase GNN).
    ``seed`` fixes initialisation, shuffling and sampling. ``checkpoint_dir`` saves the state after every
    epoch and resumes from it. ``device`` is a torch device string (``"cuda"`` under ``torchrun`` means the
    process's own GPU); ``amp`` (bfloat16 autocast) and ``compile`` (``torch.compile`` of the loss) apply
    on CUDA only and are ignored on the CPU.
    """

    epochs: int = 200
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 5
    eval_every: int = 1
    max_train_seconds: float | None = None
    seed: int = 0
    checkpoint_dir: str | None = None
    show_progress: bool = False
    device: str = "cpu"
    amp: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "patience", "eval_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TrainingOptions: {name} must be an integer >= 1, got {value!r}")
        if not _finite_number(self.lr) or self.lr <= 0:
            raise ValueError(f"TrainingOptions: lr must be a number > 0, got {self.lr!r}")
        if not _finite_number(self.weight_decay) or self.weight_decay < 0:
            raise ValueError(
                f"TrainingOptions: weight_decay must be a number >= 0, got {self.weight_decay!r}"
            )
        if self.max_train_seconds is not None and (
            not _finite_number(self.max_train_seconds) or self.max_train_seconds <= 0
        ):
            raise ValueError(
                f"TrainingOptions: max_train_seconds must be a number > 0 or None, got {self.max_train_seconds!r}"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"TrainingOptions: seed must be an integer, got {self.seed!r}")
        if not isinstance(self.device, str) or not self.device:
            raise ValueError(f"TrainingOptions: device must be a torch device string, got {self.device!r}")

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The fields by name (scikit-learn's convention, so ``clone`` and nested ``training__x`` keys work)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def replace(self, **changes: Any) -> TrainingOptions:
        """A copy with ``changes``; an unknown name is a ``ValueError`` listing the fields."""
        unknown = sorted(set(changes) - set(FIELDS))
        if unknown:
            raise ValueError(f"TrainingOptions has no option(s) {unknown}; options: {list(FIELDS)}")
        return dataclasses.replace(self, **changes)


DEFAULT_TRAINING = TrainingOptions()
"""The sequence recommenders' default (Transformer, GRU4Rec): up to 200 epochs with early stopping."""

FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(TrainingOptions))
"""The names of the training options, in declaration order."""


def default_training(cls: type) -> TrainingOptions | None:
    """The default ``training`` of a model class's constructor (``None``: the class takes no training options)."""
    parameter = inspect.signature(cls.__init__).parameters.get("training")
    if parameter is None or not isinstance(parameter.default, TrainingOptions):
        return None
    return parameter.default


def fold_training_params(cls: type, params: Mapping[str, Any]) -> dict[str, Any]:
    """Flat parameters (``{"d_model": 64, "epochs": 20}``, as ``-p`` gives them or a ``model.json`` saved
    before :class:`TrainingOptions` holds them) with the option names among them moved into the
    ``"training"`` mapping, for a class that takes ``training``; unchanged for one that does not. Plain
    values only: what :func:`constructor_params` and the saved-model checks read."""
    if default_training(cls) is None:
        return dict(params)
    given = params.get("training")
    if isinstance(given, TrainingOptions):
        given = given.get_params()
    if given is not None and not isinstance(given, Mapping):
        raise ValueError(f"{cls.__name__}: training must be an object of training options, got {given!r}")
    flat = {k: v for k, v in params.items() if k in FIELDS}
    rest = {k: v for k, v in params.items() if k not in FIELDS and k != "training"}
    if given is None and not flat:
        return rest
    return {**rest, "training": {**(given or {}), **flat}}


def constructor_params(cls: type, params: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of ``cls(...)`` for flat or folded ``params``: the training options given
    applied to the class's own default (so ``-p epochs=3`` on LightGCN keeps its larger batches) as one
    :class:`TrainingOptions`; an unknown option is a ``ValueError`` listing the valid ones."""
    folded = fold_training_params(cls, params)
    given = folded.get("training")
    if given is not None:
        folded["training"] = default_training(cls).replace(**given)
    return folded


def flat_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The flat view of saved parameters (``model.json``, a benchmark record): the ``"training"`` object's
    options beside the architecture, as ``-p`` takes them; records written before TrainingOptions are
    flat already."""
    out = {k: v for k, v in params.items() if k != "training"}
    training = params.get("training")
    if isinstance(training, Mapping):
        out.update(training)
    elif training is not None:
        out["training"] = training
    return out
