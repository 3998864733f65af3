"""Loading saved models: the registry of model classes and the one loader every command and the service use.

:func:`load_model` reads any folder written by a model's ``save`` (``model.json`` + ``weights.safetensors``):
recommenders (:func:`model_registry`, checked by ``behaviorlm.models._validate`` before anything is trusted),
task heads, the pretrainer and the purchase GNN (:func:`encoder_model_registry`). :func:`load_recommender`
and :func:`load_intent_model` are the same loader with the type the caller needs.

This module imports the model modules (to fill the registry); they do not import it, so the model modules
and :mod:`behaviorlm.models.base` form no import cycle.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from behaviorlm.data.sequences import Interactions
from behaviorlm.models._validate import (
    ModelLoadError,
    check_params,
    check_tensors,
    dry_run_state,
    one_line,
    read_meta,
    read_weights,
)
from behaviorlm.models.base import MODEL_JSON, WEIGHTS_FILE, Recommender, registered_models
from behaviorlm.training.options import fold_training_params


def model_registry() -> dict[str, type[Recommender]]:
    """Registered model classes by name (importing the built-in model modules first)."""
    # Importing a model module registers its models.
    import behaviorlm.models.baselines
    import behaviorlm.models.gru4rec
    import behaviorlm.models.lightgcn
    import behaviorlm.models.transformer  # noqa: F401

    return registered_models()


def encoder_model_registry() -> dict[str, type]:
    """The saved models that are not recommenders (task heads and the pretrainer on the behaviour encoder,
    the purchase GNN and its logistic baseline), by the name their ``model.json`` records; each reads
    itself with ``cls.load(path)``. :func:`load_model` reads these too."""
    from behaviorlm.models.heads import EventTagger, NextEventTypeModel, SequenceClassifier
    from behaviorlm.models.hetero_gnn import PurchaseGNN
    from behaviorlm.models.pretraining import MaskedBehaviorPretrainer
    from behaviorlm.models.propensity import PurchasePropensity
    from behaviorlm.models.purchase_baseline import PurchaseFeatureBaseline

    return {
        **{
            c.name: c
            for c in (
                NextEventTypeModel,
                SequenceClassifier,
                EventTagger,
                MaskedBehaviorPretrainer,
                PurchaseGNN,
                PurchasePropensity,
            )
        },
        PurchaseFeatureBaseline.saved_name: PurchaseFeatureBaseline,
    }


def load_model(path: str | Path, *, expect: tuple[type, ...] | None = None, otherwise: str = "") -> Any:
    """Load any saved behaviorlm model — the one loader every command and the service use: a recommender
    written by :meth:`Recommender.save`, a task head / pretrainer written by ``EncoderModel.save`` or the
    purchase GNN (:func:`encoder_model_registry`); ``model.json`` says which.

    ``expect``: the classes the caller can use, e.g. a recommender for ``serve --model`` or an intent model
    for ``--intent-model``; another saved model is a :class:`ModelLoadError` saying what the folder holds,
    followed by ``otherwise`` (what would do instead).

    The folder is checked before anything in it is used (``behaviorlm.models._validate``): any problem —
    a missing or tampered file, params of the wrong type, weights of the wrong shape or dtype, NaN
    weights — is one :class:`ModelLoadError` naming the file and the reason.
    """
    path = Path(path)
    try:
        model = _load_checked(path)
    except ModelLoadError:
        raise
    except (OSError, ValueError, TypeError, KeyError, IndexError, RuntimeError, ArithmeticError) as exc:
        # What the checks did not foresee still becomes the one error type, with the reason.
        raise ModelLoadError(f"{path}: cannot load the model: {one_line(exc)}") from exc
    if expect is not None and not isinstance(model, expect):
        names = ", ".join(c.__name__ for c in expect)
        raise ModelLoadError(f"{path} holds a {model.name} model{otherwise or f', which is not a {names}'}")
    return model


def load_recommender(path: str | Path) -> Recommender:
    """:func:`load_model` for the places that rank items (evaluate, serve, explain): a saved task head or
    pretrainer there is a :class:`ModelLoadError` that says what the folder holds."""
    return load_model(
        path,
        expect=(Recommender,),
        otherwise=f", which does not rank items; recommenders: {sorted(model_registry())}",
    )


def _load_checked(path: Path) -> Any:
    if not path.is_dir():
        raise ModelLoadError(f"{path} is not a folder: not a saved behaviorlm model")
    meta_file = path / MODEL_JSON
    try:
        name = json.loads(meta_file.read_bytes()).get("model") if meta_file.is_file() else None
    except (ValueError, AttributeError):
        name = None  # read_meta below names the problem
    encoder_models = encoder_model_registry()
    if name in encoder_models:
        return encoder_models[name].load(path)
    meta = read_meta(meta_file)
    registry = model_registry()
    if meta["model"] not in registry:
        known = sorted([*registry, *encoder_models])
        raise ModelLoadError(f"{meta_file}: unknown model {meta['model']!r}; known: {known}")
    cls = registry[meta["model"]]
    # A model.json saved before TrainingOptions holds the training options as flat keys: read both.
    params = fold_training_params(cls, meta["params"])
    check_params(cls, params, source=meta_file)
    weights_file = path / WEIGHTS_FILE
    tensors = read_weights(weights_file)
    check_tensors(tensors, meta, source=weights_file)
    model = cls.from_params(params)
    model.train_ = Interactions(
        user_ids=np.asarray(meta["user_ids"]),
        item_ids=np.asarray(meta["item_ids"]),
        user_ptr=tensors["train.user_ptr"].numpy(),
        items=tensors["train.items"].numpy(),
        timestamps=tensors["train.timestamps"].numpy(),
        event_types=tensors["train.event_types"].numpy().astype(np.int16),
        event_type_vocab=tuple(meta["event_type_vocab"]),
    )
    state = {k[len("state.") :]: v for k, v in tensors.items() if k.startswith("state.")}
    try:
        dry_run_state(model, state, source=weights_file)
    except ModelLoadError:
        raise
    except (TypeError, ValueError, KeyError, IndexError, RuntimeError, ArithmeticError) as exc:
        raise ModelLoadError(
            f"{weights_file}: the tensors do not fit a {meta['model']} with the params of {meta_file}: "
            f"{one_line(exc)}"
        ) from None
    model._load_state(state)
    return model


def load_intent_model(path: str | Path) -> Any:
    """:func:`load_model` for ``--intent-model``: a saved ``NextEventTypeModel``, ``SequenceClassifier`` or
    ``PurchasePropensity``; another saved model is a ``ModelLoadError`` saying what it holds."""
    from behaviorlm.models.heads import NextEventTypeModel, SequenceClassifier
    from behaviorlm.models.propensity import PurchasePropensity

    classes = (NextEventTypeModel, SequenceClassifier, PurchasePropensity)
    return load_model(
        path, expect=classes, otherwise=f"; an intent model is one of {[c.name for c in classes]}"
    )
