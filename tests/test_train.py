"""Trainer: losses, resume after an interruption, and a real (short) training run that learns."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ablations.training.loop import bf16_enabled, group_loss
from ablations.training.train import Stage, TrainConfig, freeze, keep_layers, score_pairs, train
from probe.errors import BadInput
from probe.model import CrossEncoder


def test_losses_on_a_hand_made_group():
    scores = torch.tensor([[2.0, 0.0, -1.0]])
    teacher = torch.tensor([[0.5, 0.3, 0.1]])
    labels = torch.tensor([[2.0, 0.0, 0.0]])
    # margin-MSE: student margins (2, 3) vs scaled teacher margins (10*0.2, 10*0.4) = (2, 4)
    assert group_loss("margin-mse", scores, labels, teacher, 10.0).item() == pytest.approx((0 + 1) / 2)
    lce = group_loss("lce", scores, labels, teacher, 1.0).item()
    assert lce == pytest.approx(-torch.log_softmax(scores, -1)[0, 0].item())
    assert group_loss("kl", teacher * 10, labels, teacher, 10.0).item() == pytest.approx(0.0, abs=1e-6)
    assert group_loss("mse", labels, labels, teacher, 1.0).item() == 0.0
    with pytest.raises(BadInput, match="unknown loss 'hinge'"):
        group_loss("hinge", scores, labels, teacher, 1.0)


def test_config_refuses_training_on_the_test_collection(tmp_path):
    with pytest.raises(BadInput, match="'dl19' is both trained on and tested on"):
        TrainConfig(out=str(tmp_path), train_collections=["dl19", "dl21"], validation="dl21", test=["dl19"])


def test_micro_batched_scores_keep_the_pair_order_and_gradients(tiny_ce, pairs):
    """Length-sorted micro-batches change padding only: same scores, same order, same gradients."""
    tiny_ce.model.eval()  # no dropout, so both passes are the same function
    whole = tiny_ce.forward(tiny_ce.encode(pairs))
    whole.sum().backward()
    grads = [p.grad.clone() for p in tiny_ce.model.parameters()]
    tiny_ce.model.zero_grad()
    split = score_pairs(tiny_ce, pairs, micro_batches=3, bf16=False)
    assert torch.allclose(split, whole, atol=1e-5)
    split.sum().backward()
    assert all(torch.allclose(p.grad, g, atol=1e-5) for p, g in zip(tiny_ce.model.parameters(), grads))


def test_bf16_setting_is_checked(tmp_path):
    assert bf16_enabled("off", torch.device("cpu")) is False
    assert bf16_enabled("on", torch.device("cpu")) is True
    with pytest.raises(BadInput, match="bf16 'yes' must be 'auto', 'on' or 'off'"):
        TrainConfig(out=str(tmp_path), bf16="yes")


def test_frozen_layers_keep_their_weights_and_the_rest_learns(tiny_ce, pairs):
    """freeze(model, 1): embeddings and layer 0 get no gradient and stay put under a step; layer 1 and the
    head move; asking to freeze every layer (nothing left to learn but the head) is refused."""
    model = tiny_ce.model
    freeze(model, 1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=0.1)
    tiny_ce.forward(tiny_ce.encode(pairs)).sum().backward()
    optimizer.step()
    after = model.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert not any(k.startswith(("bert.embeddings.", "bert.encoder.layer.0.")) for k in moved)
    assert any(k.startswith("bert.encoder.layer.1.") for k in moved) and "classifier.weight" in moved
    assert all(p.grad is None for p in model.bert.encoder.layer[0].parameters())
    with pytest.raises(BadInput, match="frozen_layers 2 must be below the model's 2 layers"):
        freeze(model, 2)
    with pytest.raises(BadInput, match="frozen_layers -1 must be >= 0"):
        TrainConfig(out="x", frozen_layers=-1)


def test_init_layers_make_a_shallower_student_from_a_deeper_model(tiny_ce_factory, pairs, tmp_path):
    """keep_layers(model, [0, 2]) keeps layers 0 and 2 of a 3-layer BERT (their weights, the head): the
    student computes exactly what those two layers in a row compute, and saves/loads as a 2-layer model."""
    deep = tiny_ce_factory(layers=3)
    want = {k: v.clone() for k, v in deep.model.state_dict().items()}
    keep_layers(deep.model, [0, 2])
    got = deep.model.state_dict()
    assert deep.model.config.num_hidden_layers == 2 and len(deep.model.bert.encoder.layer) == 2
    for k, v in got.items():
        src = k.replace("encoder.layer.1.", "encoder.layer.2.")
        assert torch.equal(v, want[src]), k
    deep.save(tmp_path / "student")
    again = CrossEncoder.from_pretrained(tmp_path / "student")
    assert again.num_layers == 2
    torch.testing.assert_close(again.score(pairs), deep.score(pairs))
    with pytest.raises(BadInput, match=r"layer 3 does not exist; the model has layers 0-1"):
        keep_layers(again.model, [0, 3])
    for bad in ([], [2, 1], [1, 1], [-1, 0]):
        with pytest.raises(BadInput, match="must be distinct layer indices >= 0 in increasing order"):
            TrainConfig(out="x", init_layers=bad)


def _tiny_config(tiny_ce, tmp_path, out):
    tiny_ce.save(tmp_path / "init")
    return TrainConfig(
        out=str(out),
        init_model=str(tmp_path / "init"),
        train_collections=["dl20", "dl21"],
        validation="dl20",
        validation_depth=5,
        test=[],
        max_length=64,
        eval_every=3,
        checkpoint_every=2,
        patience=100,
        stages=[Stage("labels", "lce", "judged", steps=7, lr=1e-3, groups_per_step=2, group_size=3)],
    )


@pytest.mark.slow
def test_interrupted_training_resumes_to_the_same_model(tiny_ce, tmp_path):
    """Stopping after 4 steps and resuming ends with the same weights as an uninterrupted run."""
    straight = _tiny_config(tiny_ce, tmp_path, tmp_path / "straight")
    train(straight, progress=False)
    resumed = _tiny_config(tiny_ce, tmp_path, tmp_path / "resumed")
    assert train(resumed, progress=False, stop_after=4)["interrupted"]
    assert (tmp_path / "resumed" / ".checkpoint" / "state.pt").exists()
    summary = train(resumed, progress=False)
    a = CrossEncoder.from_pretrained(tmp_path / "straight").model.state_dict()
    b = CrossEncoder.from_pretrained(tmp_path / "resumed").model.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert len(summary["losses"]) == 7
    assert not (tmp_path / "resumed" / ".checkpoint").exists()
    # a finished run is not redone
    assert train(resumed, progress=False)["best_validation_ndcg10"] == summary["best_validation_ndcg10"]


@pytest.mark.slow
def test_a_short_real_distillation_run_learns(tmp_path):
    """All-MiniLM-L6-v2 + fresh head, 40 margin-MSE steps on real queries: the loss on the training groups
    falls and the validation nDCG@10 rises above the untrained model's."""
    from ablations.data import training as td
    from ablations.data.collections import load_collection
    from ablations.data.teacher import BiEncoder
    from ablations.paths import resolve_model

    stage = Stage(
        "distill",
        "margin-mse",
        "distill",
        steps=40,
        lr=1e-4,
        dev_queries=40,
        groups_per_query=1,
        group_size=4,
        groups_per_step=4,
        depth=20,
    )
    cfg = TrainConfig(
        out=str(tmp_path / "model"),
        train_collections=["dl20", "dl21"],
        validation="dl20",
        validation_depth=20,
        test=[],
        eval_every=20,
        checkpoint_every=20,
        max_length=96,
        stages=[stage],
        teacher="minilm-l6",  # the bi-encoder: fast enough for CI (the cross-encoder teacher is tested below)
    )
    summary = train(cfg, progress=False)
    untrained = summary["history"][0]["val_ndcg10"]
    assert summary["best_validation_ndcg10"] > untrained + 0.01

    held = {f"dl20:{q}" for q in td.split_queries(load_collection("dl20").queries, 0.25, 0)[1]}
    groups = td.distillation_groups(
        ["dl20", "dl21"],
        exclude_queries=held,
        dev_queries=40,
        groups_per_query=1,
        group_size=4,
        depth=20,
        seed=0,
        teacher=BiEncoder(max_length=96),
    )[:32]  # cached: same groups

    def loss_of(model):
        with torch.no_grad():
            scores = model.forward(model.encode([(g.query, d) for g in groups for d in g.docs])).view(
                len(groups), 4
            )
            return group_loss(
                "margin-mse", scores, None, torch.tensor([g.teacher for g in groups]), 10.0
            ).item()

    torch.manual_seed(0)
    before = loss_of(CrossEncoder.from_pretrained(resolve_model("minilm-l6"), new_head=True, max_length=96))
    after = loss_of(CrossEncoder.from_pretrained(tmp_path / "model", max_length=96))
    assert after < before


@pytest.mark.parametrize(
    "fields,needle",
    [
        ({"frozen_layers": "three"}, "frozen_layers = 'three' is not an integer"),
        ({"seed": 1.5}, "seed = 1.5 is not an integer"),
        ({"eval_every": True}, "eval_every = True is not an integer"),
        ({"test": "dl19"}, "test = 'dl19' is not a list of a string"),
        ({"lr": 1e-4}, "unknown key 'lr'"),
        ({"max_lenght": 64}, "unknown key 'max_lenght' (did you mean 'max_length'?)"),
        (
            {"stages": [{"name": "d", "loss": "lce", "data": "judged", "steps": 2, "lr": "fast"}]},
            "lr = 'fast'",
        ),
        (
            {"stages": [{"name": "d", "loss": "lce", "data": "judged", "steps": 2, "lr": 1, "lrr": 2}]},
            "stages[0]",
        ),
    ],
)
def test_a_bad_train_config_is_one_line(fields, needle, tmp_path, capsys):
    from ablations import train as train_cli

    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(fields))
    with pytest.raises(SystemExit) as exc:
        train_cli.main(["--config", str(path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and err.startswith("error: ") and "\n" not in err, err
    assert needle in err and str(path) in err, err
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- the teacher
def test_the_teacher_kind_is_read_from_the_model_folder(tiny_ce, tokenizer, tmp_path):
    """A cross-encoder folder and a sentence-transformers folder are teachers; an encoder without a head,
    a two-label classifier and a missing folder are refused in one line naming the model."""
    from transformers import BertConfig, BertModel

    from ablations.data.teacher import CrossEncoderTeacher, load_teacher, teacher_kind

    tiny_ce.save(tmp_path / "ce")
    assert teacher_kind(str(tmp_path / "ce")) == "cross-encoder"
    assert teacher_kind("minilm-l6") == "bi-encoder"
    teacher = load_teacher(str(tmp_path / "ce"), max_length=32)
    assert isinstance(teacher, CrossEncoderTeacher) and teacher.max_length == 32
    assert teacher.name.startswith("cross-encoder:")

    encoder = tmp_path / "encoder"
    BertModel(
        BertConfig(
            vocab_size=tokenizer.vocab_size,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
        )
    ).save_pretrained(encoder)
    with pytest.raises(BadInput, match=r"is not a scorer \(BertModel\)"):
        teacher_kind(str(encoder))
    config = json.loads((tmp_path / "ce" / "config.json").read_text())
    (tmp_path / "two").mkdir()
    (tmp_path / "two" / "config.json").write_text(
        json.dumps({**config, "id2label": {"0": "a", "1": "b"}, "label2id": {"a": 0, "b": 1}})
    )
    with pytest.raises(BadInput, match="has 2 output labels"):
        teacher_kind(str(tmp_path / "two"))
    with pytest.raises(BadInput, match="no model folder at"):
        teacher_kind(str(tmp_path / "missing"))
    # a sentence-transformers cross-encoder folder may hold a modules.json: its classifier head decides
    (tmp_path / "ce" / "modules.json").write_text("[]")
    assert teacher_kind(str(tmp_path / "ce")) == "cross-encoder"


@pytest.mark.slow
def test_the_bi_encoder_teacher_is_a_scorer_of_the_evaluation_cli(tmp_path, capsys):
    """``ablations.evaluate --model minilm-l6`` scores with the bi-encoder (what the trainer's free
    teacher ranks like: the cosine of the two embeddings); the attention tools refuse it in one line."""
    from ablations import evaluate as evaluate_cli
    from ablations.data.collections import load_collection
    from ablations.data.teacher import BiEncoder
    from ablations.scorers import load_cross_encoder, load_scorer, run_label

    scorer = load_scorer("minilm-l6")
    assert isinstance(scorer, BiEncoder) and run_label(scorer) == "bi-encoder"
    with pytest.raises(BadInput, match="bi-encoder: query and document never attend"):
        load_cross_encoder("minilm-l6")
    from ablations.data.readers import read_trec_run

    out = tmp_path / "eval"
    with pytest.raises(SystemExit) as exit_:
        evaluate_cli.main(
            ["--model", "minilm-l6", "--queries", "2", "--depth", "5", "--no-progress", "--out", str(out)]
        )
    assert exit_.value.code == 0, capsys.readouterr().err
    run = read_trec_run(out / "dl19.bi-encoder.trec")
    rs = load_collection("dl19").subset(2, 5)
    direct = rs.candidates[["query_id", "doc_id"]].assign(direct=BiEncoder().score(rs.pairs()))
    both = direct.merge(run, on=["query_id", "doc_id"])
    assert len(both) == 10 and np.allclose(both["score"], both["direct"], atol=1e-5)


@pytest.mark.parametrize("teacher", ["missing", "encoder"])
def test_a_teacher_that_is_not_a_scorer_stops_the_cli_before_any_work(teacher, tokenizer, tmp_path, capsys):
    from transformers import BertConfig, BertModel

    from ablations import train as train_cli

    BertModel(
        BertConfig(
            vocab_size=tokenizer.vocab_size,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
        )
    ).save_pretrained(tmp_path / "encoder")
    capsys.readouterr()  # the save's progress bar
    with pytest.raises(SystemExit) as exc:
        train_cli.main(
            ["--preset", "smoke", "--teacher", str(tmp_path / teacher), "--out", str(tmp_path / "out")]
        )
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and err.startswith("error: teacher ") and "\n" not in err, err
    assert str(tmp_path / teacher) in err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_distilling_a_cross_encoder_teacher_caches_its_scores_and_shares_them(tiny_ce, tmp_path):
    """A (tiny) cross-encoder teacher: its scores are computed at the student's length, cached with the
    scoring time, equal the teacher's own scores, and read back by a second student; a cache file given
    for another teacher is refused in one line with nothing written."""
    import pandas as pd

    from ablations.data.collections import load_collection
    from ablations.data.training import pooled_passages

    tiny_ce.save(tmp_path / "teacher")

    def config(out, teacher="teacher"):
        cfg = _tiny_config(tiny_ce, tmp_path, tmp_path / out)
        cfg.teacher, cfg.teacher_cache = str(tmp_path / teacher), str(tmp_path / "scores.parquet")
        cfg.stages = [
            Stage(
                "d",
                "margin-mse",
                "distill",
                steps=3,
                lr=1e-3,
                groups_per_step=2,
                group_size=3,
                dev_queries=4,
                groups_per_query=1,
                depth=10,
            )
        ]
        return cfg

    first = train(config("first"), progress=False)["teacher"]
    assert first["kind"] == "cross-encoder" and first["teacher_max_length"] == 64
    assert first["scored_rows"] == first["rows"] > 0 and first["score_seconds"] > 0
    table = pd.read_parquet(tmp_path / "scores.parquet")
    docs = {**pooled_passages("dl20"), **pooled_passages("dl21")}
    queries = {f"{c}:{q}": t for c in ("dl20", "dl21") for q, t in load_collection(c).queries.items()}
    rows = table[~table["query_id"].str.startswith("dev:")].head(6)
    again = CrossEncoder.from_pretrained(tmp_path / "teacher", max_length=64).score(
        [(queries[q], docs[d]) for q, d in zip(rows["query_id"], rows["doc_id"])]
    )
    assert np.allclose(rows["teacher"], again, atol=1e-5)

    second = train(config("second"), progress=False)["teacher"]
    assert second["scored_rows"] == 0 and second["rows"] == first["rows"]

    tiny_ce.model.classifier.bias.data += 1.0  # another teacher (other weights, other fingerprint)
    tiny_ce.save(tmp_path / "other")
    made_for = r"scores.parquet' was made for teacher \"cross-encoder:\w+\", this run needs teacher"
    with pytest.raises(BadInput, match=made_for):
        train(config("third", teacher="other"), progress=False)
    assert not (tmp_path / "third").exists()


@pytest.mark.parametrize("preset", ["dl19", "dl20", "bi-dl19", "bi-dl20"])
def test_presets_never_train_or_select_on_their_test_collection(preset, tmp_path, monkeypatch):
    """Each preset tests on one TREC DL year and neither trains nor validates on it; the ``bi-`` presets
    (the first recipe) distil the bi-encoder into all-MiniLM-L6-v2, the others the 12-layer reference into
    its even layers; every trained model lands under $MICE_CACHE/models under a name resolve_model knows."""
    from ablations.paths import TRAINED_MODELS
    from ablations.training.train import STUDENT_LAYERS, TRAINING_PRESETS

    monkeypatch.setenv("MICE_CACHE", str(tmp_path))
    cfg = TRAINING_PRESETS[preset]()
    (test,) = cfg.test
    assert test == preset[-4:] and test not in cfg.train_collections and cfg.validation != test
    assert Path(cfg.out).parent == tmp_path / "models" and Path(cfg.out).name in TRAINED_MODELS
    if preset.startswith("bi-"):
        assert (cfg.teacher, cfg.init_model, cfg.init_layers) == ("minilm-l6", "minilm-l6", None)
        assert [s.loss for s in cfg.stages] == ["margin-mse", "lce"]
    else:
        assert (cfg.teacher, cfg.init_model, cfg.init_layers) == ("reference", "reference", STUDENT_LAYERS)
