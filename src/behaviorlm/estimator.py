"""scikit-learn's estimator conventions, shared by every behaviorlm model.

Each model's constructor only stores its keyword arguments, unchanged and under their own names; learned
state ends in ``_``. :class:`Estimator` then gives it scikit-learn's ``get_params(deep=True)`` and
``set_params(**params)`` (nested ``component__param`` keys included, e.g. ``training__lr`` of a model's
:class:`~behaviorlm.training.options.TrainingOptions`), so ``sklearn.base.clone``,
parameter searches and pipelines work on behaviorlm models. :func:`json_params` is the JSON view written
to ``model.json`` and to benchmark records (a nested model as its name and parameters).

Written here rather than inheriting ``sklearn.base.BaseEstimator``: that class also brings scikit-learn's
HTML repr, tags and metadata routing, which a recommender's ``fit(train, valid=...)`` does not follow; the
two methods below are all ``clone`` needs (tests/test_estimator.py clones every model).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from typing import Any, Self

from behaviorlm.training.options import constructor_params


class Estimator:
    """``get_params`` / ``set_params`` over the constructor's keyword arguments."""

    @classmethod
    def _param_names(cls) -> list[str]:
        signature = inspect.signature(cls.__init__)
        return sorted(
            name
            for name, p in signature.parameters.items()
            if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        )

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Self:
        """A model from flat parameters, as the command line's ``-p`` and a ``model.json`` give them:
        training option names among them (``epochs``, ``lr``, ...) are applied to the class's default
        ``training`` (:func:`~behaviorlm.training.options.constructor_params`); every other name is a
        constructor argument. ``BehaviorTransformer.from_params({"d_model": 64, "epochs": 20})`` equals
        ``BehaviorTransformer(d_model=64, training=TrainingOptions(epochs=20))``."""
        return cls(**constructor_params(cls, params))

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor arguments by name; with ``deep``, also those of nested estimators as
        ``name__param``."""
        params: dict[str, Any] = {}
        for name in self._param_names():
            value = getattr(self, name)
            params[name] = value
            if deep and (isinstance(value, Estimator) or _is_options(value)):
                params.update({f"{name}__{k}": v for k, v in value.get_params(deep=True).items()})
        return params

    def set_params(self, **params: Any) -> Self:
        """Set constructor arguments (``name__param`` reaches into a nested estimator); returns ``self``.

        An unknown name is a ``ValueError`` listing the valid ones. The new values take effect at the next
        ``fit``.
        """
        valid = self._param_names()
        nested: dict[str, dict[str, Any]] = {}
        for key, value in params.items():
            name, sep, sub = key.partition("__")
            if name not in valid:
                raise ValueError(
                    f"{type(self).__name__}.set_params: unknown parameter {name!r}; parameters: {valid}"
                )
            if sep:
                nested.setdefault(name, {})[sub] = value
            else:
                setattr(self, name, value)
        for name, sub_params in nested.items():
            component = getattr(self, name)
            if isinstance(component, Estimator):
                component.set_params(**sub_params)
            elif _is_options(component):
                # A frozen options object (TrainingOptions), possibly the default every instance shares:
                # this model gets a changed copy.
                setattr(self, name, component.replace(**sub_params))
            else:
                raise ValueError(f"{type(self).__name__}.set_params: {name!r} has no parameters of its own")
        return self


def _is_options(value: object) -> bool:
    """An options object (:class:`~behaviorlm.training.options.TrainingOptions`): a frozen dataclass instance
    with ``get_params`` and ``replace``, nested under a model's parameter like an estimator."""
    return dataclasses.is_dataclass(value) and not isinstance(value, type) and hasattr(value, "replace")


def json_params(estimator: Estimator) -> dict[str, Any]:
    """``get_params(deep=False)`` with each nested estimator written as ``{"name": ..., "params": ...}`` and an
    options object (``training``) as its fields."""
    out: dict[str, Any] = {}
    for name, value in estimator.get_params(deep=False).items():
        if isinstance(value, Estimator):
            value = {"name": getattr(value, "name", type(value).__name__), "params": json_params(value)}
        elif _is_options(value):
            value = dataclasses.asdict(value)  # its fields
        out[name] = value
    return out
