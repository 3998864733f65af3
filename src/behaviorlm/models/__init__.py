"""Recommendation and behaviour models sharing one small interface (see :mod:`behaviorlm.models.base`)."""
