"""Trainer: losses, resume after an interruption, and a real (short) training run that learns."""

import json

import pytest
import torch

from ablations.training.loop import bf16_enabled, group_loss
from ablations.training.train import Stage, TrainConfig, freeze, score_pairs, train
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
