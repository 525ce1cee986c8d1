"""Every supported model family through the one interception point, on tiny random models built here from
each family's config class (no download): roles follow the tokenizer's pair template, hooks see every
layer, a removed interaction's attention is exactly zero, and the masked score equals an independent
reference (the family's own eager attention with the bias added). Unsupported families are refused."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
import transformers as tf

from ablations.masking.masked import MaskedCrossEncoder
from ablations.masking.masks import MaskSpec, compile_mask
from probe.attention import AttentionContext, attention_context, hook_name
from probe.capture import capture, pattern_name
from probe.errors import BadInput
from probe.families import family_of, pair_template
from probe.model import CrossEncoder
from probe.roles import Role

PAIRS = [
    ("what is the capital of france", "Paris is the capital and largest city of France."),
    ("how do vaccines work", "Vaccines train the immune system to recognise a pathogen."),
    ("what is the capital of france", "The stock market fell sharply on Monday."),
]
TINY = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64)
DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


@pytest.fixture(scope="module")
def roberta_tokenizer():
    """A byte-level BPE tokenizer with RoBERTa's pair template (``<s> q </s></s> d </s>``), trained here."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    corpus = [t for pair in PAIRS for t in pair] * 3
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(corpus, trainer)
    tok.post_processor = processors.RobertaProcessing(
        ("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>")), add_prefix_space=True
    )
    tok.decoder = decoders.ByteLevel()
    return tf.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
    )


def _model(family: str, vocab: int, tok) -> torch.nn.Module:
    torch.manual_seed(0)
    # a wide initialisation so that attention matters to the score (masks then change it visibly)
    common = dict(vocab_size=vocab, max_position_embeddings=130, num_labels=1, initializer_range=0.2)
    if family == "bert":
        cfg = tf.BertConfig(**common, **TINY, **DROPOUT)
        return tf.BertForSequenceClassification(cfg)
    if family == "electra":
        cfg = tf.ElectraConfig(**common, **TINY, **DROPOUT, embedding_size=32)
        return tf.ElectraForSequenceClassification(cfg)
    if family in ("roberta", "xlm-roberta"):
        ids = dict(
            pad_token_id=tok.pad_token_id, bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id
        )
        config_cls, model_cls = (
            (tf.RobertaConfig, tf.RobertaForSequenceClassification)
            if family == "roberta"
            else (tf.XLMRobertaConfig, tf.XLMRobertaForSequenceClassification)
        )
        return model_cls(config_cls(**common, **TINY, **DROPOUT, **ids, type_vocab_size=1))
    if family == "distilbert":
        cfg = tf.DistilBertConfig(
            **common, dim=32, n_layers=3, n_heads=4, hidden_dim=64, dropout=0.0, attention_dropout=0.0
        )
        return tf.DistilBertForSequenceClassification(cfg)
    if family == "modernbert":
        cfg = tf.ModernBertConfig(
            **common,
            **TINY,
            pad_token_id=tok.pad_token_id,
            cls_token_id=tok.cls_token_id,
            sep_token_id=tok.sep_token_id,
            bos_token_id=tok.cls_token_id,
            eos_token_id=tok.sep_token_id,
            global_attn_every_n_layers=2,  # layers 1 is local (sliding window): the window is in the mask
            local_attention=8,
        )
        return tf.ModernBertForSequenceClassification(cfg)
    raise AssertionError(family)


FAMILIES = ["bert", "electra", "roberta", "xlm-roberta", "distilbert", "modernbert"]


@pytest.fixture(params=FAMILIES)
def family_ce(request, tokenizer, roberta_tokenizer):
    family = request.param
    tok = roberta_tokenizer if family in ("roberta", "xlm-roberta") else tokenizer
    model = _model(family, len(tok), tok).eval()
    with torch.no_grad():  # random tiny models give near-constant scores: a larger last layer spreads them
        last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
        last.weight.mul_(3)
    return family, CrossEncoder(model, tok, max_length=64, name=f"tiny-{family}")


def test_roles_follow_the_tokenizers_own_pair_template(family_ce):
    family, ce = family_ce
    middle = 2 if family in ("roberta", "xlm-roberta") else 1
    assert ce.template.middle == middle
    batch = ce.encode(PAIRS)
    for i, (q, d) in enumerate(PAIRS):
        ids, roles = batch.input_ids[i], batch.roles[i]
        q_ids = ce.tokenizer(q, add_special_tokens=False)["input_ids"]
        d_ids = ce.tokenizer(d, add_special_tokens=False)["input_ids"]
        assert roles[0] == Role.CLS and ids[0] == ce.tokenizer.cls_token_id
        assert ids[roles == Role.QUERY].tolist() == q_ids
        assert ids[roles == Role.DOC].tolist() == d_ids[: int((roles == Role.DOC).sum())]
        assert int((roles == Role.SEP1).sum()) == middle and int((roles == Role.SEP2).sum()) == 1
        assert set(ids[(roles == Role.SEP1) | (roles == Role.SEP2)].tolist()) == {ce.tokenizer.sep_token_id}


def test_hooks_see_every_layer_and_keep_the_scores(family_ce):
    family, ce = family_ce
    plain = ce.score(PAIRS)
    with capture(ce, ("pattern", "flows")) as cap:
        captured = cap.score(PAIRS)
    assert np.abs(captured - plain).max() < 1e-5
    for layer in range(ce.num_layers):
        patterns = cap.cache[pattern_name(layer)]
        assert len(patterns) == len(PAIRS) and patterns[0].shape[0] == ce.num_heads
        for p in patterns:
            torch.testing.assert_close(p.sum(-1), torch.ones(p.shape[:-1]), atol=1e-5, rtol=0)


def _eager_reference(ce: CrossEncoder, batch, bias_fn, monkeypatch) -> torch.Tensor:
    """The family's own ``eager_attention_forward`` with the bias added to its mask (patched in its module):
    an implementation independent of the toolkit's attention function."""
    module = importlib.import_module(type(ce.model).__module__)
    own = module.eager_attention_forward
    layer_of = {}
    from probe.families import self_attention_modules

    for i, m in enumerate(self_attention_modules(ce.model)):
        layer_of[id(m)] = i

    def biased(mod, query, key, value, attention_mask, *args, **kwargs):
        extra = bias_fn(layer_of[id(mod)]).to(query.dtype)
        if attention_mask is None:
            attention_mask = extra
        elif attention_mask.dtype == torch.bool:
            attention_mask = torch.zeros(attention_mask.shape, dtype=query.dtype).masked_fill(
                ~attention_mask, float("-inf")
            )
            attention_mask = attention_mask + extra
        else:
            attention_mask = attention_mask + extra
        return own(mod, query, key, value, attention_mask, *args, **kwargs)

    monkeypatch.setattr(module, "eager_attention_forward", biased)
    configs = {id(m.config): m.config for m in ce.model.modules() if hasattr(m, "config")}
    configs[id(ce.model.config)] = ce.model.config
    saved = {k: c._attn_implementation for k, c in configs.items()}
    try:
        for c in configs.values():
            c._attn_implementation = "eager"
        with torch.no_grad():
            return ce.forward(batch)
    finally:
        for k, c in configs.items():
            c._attn_implementation = saved[k]


def test_a_removed_interaction_is_exactly_zero_and_equals_the_eager_reference(family_ce, monkeypatch):
    family, ce = family_ce
    spec = MaskSpec.remove("doc2query")
    batch = ce.encode(PAIRS)
    compiled = compile_mask(spec, ce.num_layers, ce.num_heads)
    bias_fn = compiled.bias_fn(batch.roles)

    seen = {}
    ctx = AttentionContext(bias=bias_fn)
    for layer in range(ce.num_layers):
        ctx.add_hook(hook_name("pattern", layer), lambda t, name: seen.__setitem__(name, t.detach().clone()))
    with torch.no_grad(), attention_context(ce.model, ctx):
        ce.forward(batch)
    assert len(seen) == ce.num_layers
    doc = batch.roles == Role.DOC
    query = batch.roles == Role.QUERY
    for pattern in seen.values():  # (batch, heads, q, k)
        rows = pattern.permute(0, 2, 1, 3)[doc]  # (doc tokens, heads, k)
        keys = query[doc.nonzero()[:, 0]]  # the query columns of each doc token's own row
        assert torch.all(rows.permute(1, 0, 2)[:, keys] == 0)

    with torch.no_grad():
        masked = MaskedCrossEncoder(ce, spec).forward(batch)
        full = ce.forward(batch)
    reference = _eager_reference(ce, batch, bias_fn, monkeypatch)
    assert (masked - full).abs().max() > 1e-3  # the mask changes the scores, so equality means something
    assert (masked - reference).abs().max() < 1e-5, family


def test_mice_plans_need_a_bert_classifier_and_say_so(family_ce):
    from ablations.mice.config import preset
    from ablations.mice.plan import PlanExecutor, compile_plan

    family, ce = family_ce
    cfg = preset("mice-step2", ce.num_layers, ce.num_heads, "tiny", max_length=64, max_query_length=16)
    if family == "bert":  # every plan shape equals the plan's masked forward (tests/test_mice_plan.py)
        plan = compile_plan(cfg)
        ex = PlanExecutor(ce, cfg, plan)
        batch = ex.encode(PAIRS)
        with torch.no_grad():
            ref = ex.forward(batch, "masked")
            assert len(plan.valid) > 1
            for shape in plan.valid:
                assert (ex.forward(batch, shape) - ref).abs().max() < 1e-4, shape
    else:
        with pytest.raises(BadInput, match=f"family {family!r}.*MICE plans"):
            PlanExecutor(ce, cfg)


def test_deberta_and_unknown_families_are_refused_in_one_line(tokenizer):
    deberta = tf.DebertaV2ForSequenceClassification(
        tf.DebertaV2Config(vocab_size=len(tokenizer), **TINY, num_labels=1)
    )
    ce = CrossEncoder(deberta.eval(), tokenizer, max_length=64, name="tiny-deberta")
    with pytest.raises(BadInput, match="model family 'deberta-v2' is not supported: DeBERTa's disentangled"):
        family_of(ce.model)
    with pytest.raises(BadInput, match="deberta-v2"):
        with capture(ce, ("flows",)) as cap:
            cap.score(PAIRS)
    gpt = tf.GPT2ForSequenceClassification(tf.GPT2Config(n_embd=32, n_layer=1, n_head=4, num_labels=1))
    with pytest.raises(BadInput, match=r"model family 'gpt2' .* supported families: bert, electra, roberta"):
        family_of(gpt)


def test_a_tokenizer_without_a_pair_template_is_refused(tokenizer):
    class NoSpecials:
        def __init__(self, tok):
            self.tok = tok

        def __call__(self, *texts, **kw):
            kw["add_special_tokens"] = False
            return self.tok(*texts, **kw)

        def convert_ids_to_tokens(self, ids):
            return self.tok.convert_ids_to_tokens(ids)

    with pytest.raises(BadInput, match="wraps a pair as 'alpha omega'; token roles need"):
        pair_template(NoSpecials(tokenizer))


def test_rollout_and_integrated_gradients_work_for_every_family(family_ce):
    """Rollout rows are distributions over the roles; IG attributions sum to score - baseline score."""
    from probe.attributions import integrated_gradients
    from probe.capture import rollout_name

    family, ce = family_ce
    with capture(ce, ("rollout",)) as cap:
        cap.score(PAIRS)
    last = cap.cache[rollout_name(ce.num_layers - 1)]
    torch.testing.assert_close(torch.as_tensor(last).sum(-1), torch.ones(len(PAIRS)), atol=1e-4, rtol=0)
    tokens, info = integrated_gradients(ce, PAIRS[:2], n_steps=64)
    gap = (info["score"] - info["baseline_score"]).abs().max()
    assert gap > 1e-3 and info["delta"].abs().max() < 0.05 * gap + 1e-3, info
    assert set(tokens["role"]) >= {"cls", "query", "doc"}


@pytest.mark.slow
def test_a_roberta_cross_encoder_runs_through_evaluate_run_and_probe(roberta_tokenizer, tmp_path, capsys):
    """The RoBERTa pair template (three </s>) used to stop evaluate, run and probe.run ("row 0 has 3
    separator tokens"); a saved tiny RoBERTa cross-encoder now goes through all three CLIs on DL 2019."""
    import pandas as pd

    from ablations import evaluate, run
    from probe import run as probe_run

    model = _model("roberta", len(roberta_tokenizer), roberta_tokenizer).eval()
    CrossEncoder(model, roberta_tokenizer, max_length=64, name="tiny-roberta").save(tmp_path / "roberta")
    common = ["--model", str(tmp_path / "roberta"), "--queries", "2", "--depth", "3"]

    def ok(main, argv):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        return exc.value.code == 0

    assert ok(evaluate.main, [*common, "--out", str(tmp_path / "ev"), "--no-progress"])
    assert set(pd.read_parquet(tmp_path / "ev" / "metrics.parquet")["run"]) == {"bm25", "cross-encoder"}
    assert ok(run.main, [*common, "--remove", "doc2query", "--out", str(tmp_path / "ab"), "--no-progress"])
    summary = pd.read_parquet(tmp_path / "ab" / "summary.parquet")
    assert len(summary) and summary["mean"].notna().all()
    assert ok(
        probe_run.main, [*common, "--out", str(tmp_path / "pr"), "--attribution-pairs", "1", "--no-progress"]
    )
    flows = pd.read_parquet(tmp_path / "pr" / "flows.parquet")
    assert flows["layer"].nunique() == 3
