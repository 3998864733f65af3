"""Test-session settings shared by every test module."""

from __future__ import annotations

import os

import torch

# `make test` runs two pytest-xdist workers on two cores; each torch process would otherwise start one
# thread per core, and four busy threads on two cores made the model tests several times slower.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
    # The same for the embedded language model (llama.cpp threads spin-wait on a busy core).
    os.environ.setdefault("BEHAVIORLM_LLM_THREADS", "1")
