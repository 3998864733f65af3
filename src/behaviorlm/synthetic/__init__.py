"""Synthetic event logs with a planted, known truth, for demonstrations and checks the product itself runs
(``behaviorlm audience --synthetic``, ``behaviorlm effects`` on the causal log): ``causal`` (confounded
behaviour with a known average effect) and ``campaign`` (a contact campaign with known uplift per user).

Test-only helpers (conformance checks, a fake language model) stay in :mod:`behaviorlm.testing`; library
modules import this package, never that one.
"""
