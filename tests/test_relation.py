"""MiniLMv2 relation losses: loop references, masking, head counts, widths, trainer integration."""

import math

import pytest
import torch
from tiny import (
    assert_accumulation_matches_one_batch,
    pad_collate,
    quick_distillation_args,
    tiny_pair,
    token_dataset,
)
from transformers import (
    AlbertConfig,
    AlbertForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
)

from distilnlp import DistillationTrainer
from distilnlp.distill.losses import logit_kl_loss, relation_kl_loss
from distilnlp.distill.model_card import build_model_card


def loop_relation_kl(student, teacher, lengths, heads):
    """Per real query row: KL over real keys, averaged over heads; then the mean over rows (plain loops)."""
    rows = []
    for b, length in enumerate(lengths):
        for i in range(length):
            per_head = []
            for a in range(heads):
                distributions = []
                for x in (student[b], teacher[b]):
                    d = x.shape[-1] // heads
                    part = x[:, a * d : (a + 1) * d].double()
                    scores = torch.tensor([float(part[i] @ part[j]) / math.sqrt(d) for j in range(length)])
                    distributions.append(torch.softmax(scores.double(), 0))
                p_s, p_t = distributions
                per_head.append(sum(float(p_t[j] * math.log(p_t[j] / p_s[j])) for j in range(length)))
            rows.append(sum(per_head) / heads)
    return sum(rows) / len(rows), sum(rows)


@pytest.mark.parametrize("heads", [1, 2, 4])
def test_relation_kl_matches_a_loop_reference_with_padding_and_different_widths(heads):
    g = torch.Generator().manual_seed(heads)
    lengths = [7, 4, 1]
    student, teacher = torch.randn(3, 7, 12, generator=g), torch.randn(3, 7, 20, generator=g) * 2
    mask = torch.tensor([[1] * n + [0] * (7 - n) for n in lengths])
    mean, total = loop_relation_kl(student, teacher, lengths, heads)
    assert relation_kl_loss(student, teacher, mask, heads).item() == pytest.approx(mean, rel=1e-5)
    summed = relation_kl_loss(student, teacher, mask, heads, reduction="sum")
    assert summed.item() == pytest.approx(total, rel=1e-5)
    assert mean > 0


def test_padding_values_do_not_change_the_relation_loss():
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(2, 5, 8, generator=g), torch.randn(2, 5, 16, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    before = relation_kl_loss(student, teacher, mask, 2)
    student[0, 3:] = 1e3 * torch.randn(2, 8, generator=g)
    teacher[0, 3:] = -1e3
    assert relation_kl_loss(student, teacher, mask, 2).item() == pytest.approx(before.item(), rel=1e-6)
    assert relation_kl_loss(student, student.repeat(1, 1, 2), mask, 1).item() != 0
    assert relation_kl_loss(student, student, mask, 2).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="relation_heads=3 must divide the width 8"):
        relation_kl_loss(student, teacher, mask, 3)


# --------------------------------------------------------------------------------------------- trainer


def make_trainer(tmp_path, teacher, student, dataset, **overrides):
    values = dict(alpha=0.5, relation_weight=1.0, per_device_train_batch_size=8)
    return DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=quick_distillation_args(tmp_path, **(values | overrides)),
        train_dataset=dataset,
        data_collator=pad_collate,
    )


def projections_of(model, hidden_states, layer, kinds):
    """Q/K/V of a BERT layer recomputed from its input, hidden_states[layer - 1] (no hooks)."""
    attention = model.bert.encoder.layer[layer - 1].attention.self
    names = {"q": "query", "k": "key", "v": "value"}
    return {k: getattr(attention, names[k])(hidden_states[layer - 1]) for k in kinds}


@pytest.mark.parametrize(
    ("overrides", "pair", "kinds", "heads"),
    [
        (dict(), (2, 4), "qkv", 2),  # last layers; default heads = the student's 2 heads
        (dict(relation_layers="1:3", relation_types="q,v", relation_heads=4), (1, 3), "qv", 4),
    ],
)
def test_trainer_loss_adds_the_weighted_relation_loss(tmp_path, overrides, pair, kinds, heads):
    teacher, student = tiny_pair(seed=4)  # width 16 / 2 heads from width 32 / 4 heads
    dataset = token_dataset(8, seed=2, min_len=3, max_len=20)
    trainer = make_trainer(tmp_path, teacher, student, dataset, relation_weight=0.7, **overrides)
    batch = pad_collate([dataset[i] for i in range(6)])
    student.eval()
    loss = trainer.compute_loss(student, batch)
    mask = batch["attention_mask"]
    with torch.no_grad():
        s_out = student(**batch, output_hidden_states=True)
        t_out = teacher(input_ids=batch["input_ids"], attention_mask=mask, output_hidden_states=True)
        s_vectors = projections_of(student, s_out.hidden_states, pair[0], kinds)
        t_vectors = projections_of(teacher, t_out.hidden_states, pair[1], kinds)
    relation = torch.stack([relation_kl_loss(s_vectors[k], t_vectors[k], mask, heads) for k in kinds]).mean()
    soft = logit_kl_loss(s_out.logits, t_out.logits, 2.0)
    hard = torch.nn.functional.cross_entropy(s_out.logits, batch["labels"])
    assert loss.item() == pytest.approx((0.5 * soft + 0.5 * hard + 0.7 * relation).item(), rel=1e-5)
    assert relation.item() > 0
    summary = trainer.distillation_summary()["losses"]
    assert summary["relation_layers"] == [list(pair)] and summary["relation_heads"] == heads
    card = str(build_model_card(trainer.distillation_summary(), "student"))
    assert "+ relation_weight * relation" in card and f"over {heads} relation heads" in card


def test_relation_gradients_reach_only_the_student_and_its_projections(tmp_path):
    teacher, student = tiny_pair(seed=1)
    dataset = token_dataset(8, seed=1)
    trainer = make_trainer(tmp_path, teacher, student, dataset, alpha=0.0, relation_types="q,k")
    batch = pad_collate([dataset[i] for i in range(8)])
    del batch["labels"]  # no hard loss: the relation term alone
    student.train()
    trainer.compute_loss(student, batch).backward()
    assert all(p.grad is None for p in teacher.parameters())
    attention = student.bert.encoder.layer[1].attention.self
    assert attention.query.weight.grad.abs().sum() > 0 and attention.key.weight.grad.abs().sum() > 0
    # V-V is not distilled and nothing downstream of the last layer's keys/queries is in the loss.
    assert attention.value.weight.grad is None or attention.value.weight.grad.abs().sum() == 0
    assert student.classifier.weight.grad is None or student.classifier.weight.grad.abs().sum() == 0


def test_gradient_accumulation_matches_one_large_batch_with_relations(tmp_path):
    losses = assert_accumulation_matches_one_batch(
        make_trainer, tmp_path, loss_key="loss_relation", relation_weight=5.0, relation_heads=4
    )
    assert losses[0] > 0


def test_distilbert_relations_come_from_its_q_k_v_lin_layers(tmp_path):
    def distilbert(dim, heads, layers):
        config = DistilBertConfig(
            vocab_size=120,
            dim=dim,
            n_heads=heads,
            n_layers=layers,
            hidden_dim=2 * dim,
            num_labels=3,
            max_position_embeddings=64,
            dropout=0.0,
            attention_dropout=0.0,
        )
        return DistilBertForSequenceClassification(config)

    torch.manual_seed(0)
    teacher, student = distilbert(32, 4, 3), distilbert(16, 2, 2)
    dataset = token_dataset(8, seed=5)
    trainer = make_trainer(tmp_path, teacher, student, dataset, alpha=0.0, relation_types="k")
    batch = pad_collate([dataset[i] for i in range(8)])
    del batch["labels"]
    student.eval()
    loss = trainer.compute_loss(student, batch)
    mask = batch["attention_mask"]
    with torch.no_grad():
        s_hidden = student(**batch, output_hidden_states=True).hidden_states
        t_hidden = teacher(**batch, output_hidden_states=True).hidden_states
        s_keys = student.distilbert.transformer.layer[1].attention.k_lin(s_hidden[1])
        t_keys = teacher.distilbert.transformer.layer[2].attention.k_lin(t_hidden[2])
    assert loss.item() == pytest.approx(relation_kl_loss(s_keys, t_keys, mask, 2).item(), rel=1e-5)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(relation_heads=3), r"relation_heads=3 must divide the query/key/value widths .*\[16, 32\].*16"),
        (dict(relation_layers="3:4"), r"relation_layers pair 3:4 is out of range"),
    ],
)
def test_incompatible_relation_settings_fail_at_construction(tmp_path, overrides, message):
    teacher, student = tiny_pair()
    with pytest.raises(ValueError, match=message):
        make_trainer(tmp_path, teacher, student, token_dataset(4), **overrides)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(relation_types="q,x"), r"relation_types='q,x': give distinct relations from q, k, v"),
        (dict(relation_types="q,q"), r"relation_types='q,q'"),
        (dict(relation_layers="0:1"), r"relation_layers='0:1': layer 0 \(embeddings\) has no queries"),
        (dict(relation_layers="2-4"), r"relation_layers='2-4': cannot read"),
        (dict(relation_heads=0), "relation_heads must be >= 1"),
        (dict(relation_weight=-1.0), "relation_weight must be >= 0"),
        (
            dict(relation_weight_schedule="linear"),
            "relation_weight_schedule='linear' needs relation_weight_end",
        ),
    ],
)
def test_bad_relation_arguments_are_rejected(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        quick_distillation_args(tmp_path, **overrides)


def test_an_architecture_without_query_key_value_layers_gets_a_clear_error(tmp_path):
    teacher, _ = tiny_pair()
    config = AlbertConfig(
        vocab_size=120,
        embedding_size=16,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=3,
        max_position_embeddings=64,
    )
    student = AlbertForSequenceClassification(config)
    with pytest.raises(
        ValueError, match="needs the student's attention query/key/value linear layers.*Albert"
    ):
        make_trainer(tmp_path, teacher, student, token_dataset(4))


@pytest.mark.parametrize("name", ["bert", "roberta", "electra", "xlm-roberta", "deberta-v2", "distilbert"])
def test_query_key_value_layers_are_found_in_every_supported_architecture(name):
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from distilnlp.distill.relations import find_qkv_modules

    sizes = dict(hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32)
    if name == "distilbert":
        sizes = dict(dim=16, n_layers=3, n_heads=2, hidden_dim=32)
    config = AutoConfig.for_model(name, vocab_size=50, max_position_embeddings=32, **sizes)
    model = AutoModelForSequenceClassification.from_config(config)
    found = find_qkv_modules(model)
    assert sorted(found) == [1, 2, 3]
    assert all(sorted(kinds) == ["k", "q", "v"] and kinds["q"].out_features == 16 for kinds in found.values())
