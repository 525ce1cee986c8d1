"""Model names: ``reference`` is the real MS MARCO cross-encoder when the shared folder has it, the trained
MiniLM-L6 models keep their own names, and a missing model says where it was looked for."""

from __future__ import annotations

import json

import pytest

from ablations.paths import REFERENCE_MODEL, resolve_model
from ablations.scorers import model_depth
from probe.errors import BadInput


def _model(folder, layers=2):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"num_hidden_layers": layers}))
    return folder


@pytest.fixture
def shared(tmp_path, monkeypatch):
    monkeypatch.setenv("MICE_SHARED", str(tmp_path / "shared"))
    monkeypatch.setenv("MICE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MICE_MODEL", raising=False)
    (tmp_path / "shared" / "models").mkdir(parents=True)
    return tmp_path


def test_reference_is_the_shared_ms_marco_model_when_present(shared):
    real = _model(shared / "shared" / "models" / REFERENCE_MODEL, 12)
    _model(shared / "cache" / "models" / "minilm-l6-ce-dl19", 6)
    assert resolve_model("reference") == str(real) == resolve_model(None)
    assert resolve_model("minilm-l6-ce-dl19") == str(shared / "cache" / "models" / "minilm-l6-ce-dl19")
    assert resolve_model("reference-dl19") == resolve_model("minilm-l6-ce-dl19")  # the old name
    assert model_depth("reference") == 12 and model_depth("minilm-l6-ce-dl19") == 6


def test_without_the_shared_model_reference_falls_back_to_the_trained_one(shared):
    trained = _model(shared / "cache" / "models" / "minilm-l6-ce-dl19", 6)
    assert resolve_model("reference") == str(trained)


def test_mice_model_env_picks_the_default(shared, monkeypatch):
    other = _model(shared / "elsewhere", 4)
    monkeypatch.setenv("MICE_MODEL", str(other))
    assert resolve_model(None) == str(other) and model_depth(None) == 4


def test_a_missing_model_names_where_it_looked(shared):
    with pytest.raises(BadInput) as exc:
        resolve_model("reference")
    msg = str(exc.value)
    assert (
        REFERENCE_MODEL in msg and "MICE_SHARED" in msg and "python -m ablations.train --preset dl19" in msg
    )
    with pytest.raises(BadInput, match=r"minilm-l6-ce-dl20.*--preset dl20"):
        resolve_model("minilm-l6-ce-dl20")
    assert model_depth("reference") is None and model_depth("org/hub-id") is None
