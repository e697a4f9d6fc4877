"""create_student / create_random_student on tiny random models of every supported architecture."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
import transformers as tf

from distilnlp.distill.student import (
    SUPPORTED_ARCHITECTURES,
    create_random_student,
    create_student,
    select_teacher_layers,
)

TINY = dict(vocab_size=100, hidden_size=32, num_attention_heads=4, num_hidden_layers=4, intermediate_size=37)
LABELS = dict(num_labels=3, id2label={0: "neg", 1: "neu", 2: "pos"}, label2id={"neg": 0, "neu": 1, "pos": 2})


def _config(model_type: str) -> tf.PretrainedConfig:
    if model_type == "distilbert":
        return tf.DistilBertConfig(vocab_size=100, dim=32, n_heads=4, n_layers=4, hidden_dim=37, **LABELS)
    if model_type == "electra":  # narrower embeddings exercise ELECTRA's embeddings_project
        return tf.ElectraConfig(embedding_size=16, **TINY, **LABELS)
    if model_type == "deberta-v2":  # relative attention adds encoder-level rel_embeddings + LayerNorm
        return tf.DebertaV2Config(
            relative_attention=True,
            pos_att_type=["p2c", "c2p"],
            position_buckets=8,
            max_relative_positions=16,
            norm_rel_ebd="layer_norm",
            **TINY,
            **LABELS,
        )
    config_class = {
        "bert": tf.BertConfig,
        "roberta": tf.RobertaConfig,
        "xlm-roberta": tf.XLMRobertaConfig,
        "mpnet": tf.MPNetConfig,  # a relative-position bias shared by all layers (encoder level)
    }
    return config_class[model_type](**TINY, **LABELS)


# (model class, attribute path of the layer list)
MODELS = {
    "bert": (tf.BertForSequenceClassification, tf.BertForTokenClassification, "bert.encoder.layer"),
    "roberta": (
        tf.RobertaForSequenceClassification,
        tf.RobertaForTokenClassification,
        "roberta.encoder.layer",
    ),
    "distilbert": (
        tf.DistilBertForSequenceClassification,
        tf.DistilBertForTokenClassification,
        "distilbert.transformer.layer",
    ),
    "electra": (
        tf.ElectraForSequenceClassification,
        tf.ElectraForTokenClassification,
        "electra.encoder.layer",
    ),
    "xlm-roberta": (
        tf.XLMRobertaForSequenceClassification,
        tf.XLMRobertaForTokenClassification,
        "roberta.encoder.layer",
    ),
    "deberta-v2": (
        tf.DebertaV2ForSequenceClassification,
        tf.DebertaV2ForTokenClassification,
        "deberta.encoder.layer",
    ),
    "mpnet": (
        tf.MPNetForSequenceClassification,
        tf.MPNetForTokenClassification,
        "mpnet.encoder.layer",
    ),
}
CASES = [(mt, head) for mt in MODELS for head in ("seq", "tok")]


def _teacher(model_type: str, head: str) -> tf.PreTrainedModel:
    torch.manual_seed(0)
    seq_cls, tok_cls, _ = MODELS[model_type]
    model = (seq_cls if head == "seq" else tok_cls)(_config(model_type))
    return model.eval()


def _layers(model: tf.PreTrainedModel, path: str) -> torch.nn.ModuleList:
    module = model
    for part in path.split("."):
        module = getattr(module, part)
    return module


def _assert_same_params(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name


def _num_layers(model: tf.PreTrainedModel) -> int:
    return (
        model.config.n_layers if model.config.model_type == "distilbert" else model.config.num_hidden_layers
    )


def test_every_architecture_is_covered():
    assert set(SUPPORTED_ARCHITECTURES) == set(MODELS)


@pytest.mark.parametrize(("model_type", "head"), CASES)
@pytest.mark.parametrize(("layers", "expected"), [("uniform", [1, 3]), ([3, 0], [3, 0])])
def test_create_student_copies_selected_layers(model_type, head, layers, expected):
    teacher = _teacher(model_type, head)
    student = create_student(teacher, 2, layers)

    assert type(student) is type(teacher)
    assert _num_layers(student) == 2
    assert _num_layers(teacher) == 4  # the teacher's config is untouched
    assert student.config.distilnlp_teacher_layers == expected
    assert student.config.id2label == teacher.config.id2label
    assert student.config.label2id == teacher.config.label2id
    assert student.config.vocab_size == teacher.config.vocab_size

    path = MODELS[model_type][2]
    student_layers, teacher_layers = _layers(student, path), _layers(teacher, path)
    assert len(student_layers) == 2
    for k, t in enumerate(expected):
        _assert_same_params(student_layers[k], teacher_layers[t])
    # Not a reference to the teacher's tensors: training the student must leave the teacher alone.
    first = next(student_layers[0].parameters())
    assert first.data_ptr() != next(teacher_layers[expected[0]].parameters()).data_ptr()

    base = student.base_model_prefix
    _assert_same_params(getattr(student, base).embeddings, getattr(teacher, base).embeddings)
    _assert_same_params(student.classifier, teacher.classifier)
    # Everything outside the layer list (pooler, DeBERTa's rel_embeddings ...) is the teacher's.
    layer_prefix = path + "."
    t_state = teacher.state_dict()
    for name, tensor in student.state_dict().items():
        if not name.startswith(layer_prefix):
            assert torch.equal(tensor, t_state[name]), name

    input_ids = torch.randint(5, 100, (2, 7))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 5:] = 0
    with torch.no_grad():
        logits = student(input_ids=input_ids, attention_mask=attention_mask).logits
    assert logits.shape == ((2, 3) if head == "seq" else (2, 7, 3))
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize(
    ("total", "n", "strategy", "expected"),
    [
        (6, 3, "uniform", [1, 3, 5]),
        (12, 4, "uniform", [2, 5, 8, 11]),
        (12, 5, "uniform", [1, 3, 6, 8, 11]),
        (4, 4, "uniform", [0, 1, 2, 3]),
        (6, 1, "uniform", [5]),
        (6, 2, "first", [0, 1]),
        (6, 2, "last", [4, 5]),
        (6, None, [5, 0, 2], [5, 0, 2]),
        (6, 2, (0, 4), [0, 4]),
    ],
)
def test_select_teacher_layers(total, n, strategy, expected):
    assert select_teacher_layers(total, n, strategy) == expected


def test_full_depth_student_matches_teacher_outputs():
    teacher = _teacher("bert", "seq")
    student = create_student(teacher, 4).eval()
    input_ids = torch.randint(5, 100, (2, 9))
    with torch.no_grad():
        assert torch.equal(student(input_ids=input_ids).logits, teacher(input_ids=input_ids).logits)


def test_student_config_survives_save_and_load(tmp_path):
    teacher = _teacher("distilbert", "seq")
    teacher.config.problem_type = "single_label_classification"
    create_student(teacher, 3, "last").save_pretrained(tmp_path)
    loaded = tf.AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert type(loaded) is tf.DistilBertForSequenceClassification
    assert loaded.config.n_layers == 3
    assert loaded.config.distilnlp_teacher_layers == [1, 2, 3]
    assert loaded.config.problem_type == "single_label_classification"
    assert loaded.config.id2label == {0: "neg", 1: "neu", 2: "pos"}


def test_attn_implementation_override_leaves_teacher_alone():
    teacher = _teacher("bert", "seq")
    before = teacher.config._attn_implementation
    student = create_student(teacher, 2, attn_implementation="eager")
    assert student.config._attn_implementation == "eager"
    assert teacher.config._attn_implementation == before
    out = student(input_ids=torch.randint(5, 100, (1, 6)), output_attentions=True)
    assert len(out.attentions) == 2


@pytest.mark.parametrize(
    ("num_layers", "layers", "match"),
    [
        (0, "uniform", r"num_layers must be an integer between 1 and the teacher's 4 layers, got 0"),
        (5, "uniform", r"between 1 and the teacher's 4 layers, got 5"),
        (2, "middle", r"Unknown layer selection strategy 'middle'.*uniform, first, last"),
        (None, "uniform", r"num_layers is required"),
        (None, [0, 4], r"index 4 is out of range.*4 layers \(valid: 0\.\.3\)"),
        (None, [-1, 2], r"index -1 is out of range"),
        (None, [1, 2, 1], r"Duplicate teacher layer indices \[1\]"),
        (None, [], r"must not be an empty list"),
        (None, [0, 1.0], r"must be integers, got 1\.0"),
        (3, [0, 1], r"num_layers=3 does not match the 2 explicit layer indices"),
        ([0, 1], "uniform", r"pass explicit indices as layers="),
    ],
)
def test_create_student_errors(num_layers, layers, match):
    teacher = _teacher("bert", "seq")
    with pytest.raises(ValueError, match=match):
        create_student(teacher, num_layers, layers)


def test_unsupported_architecture_is_named():
    config = tf.AlbertConfig(embedding_size=16, **TINY, num_labels=2)
    teacher = tf.AlbertForSequenceClassification(config)
    with pytest.raises(ValueError, match=r"Unsupported architecture 'albert'.*bert, roberta, xlm-roberta"):
        create_student(teacher, 2)
    with pytest.raises(ValueError, match=r"Unsupported architecture 'albert'"):
        create_random_student(teacher, hidden_size=16)


@pytest.mark.parametrize(("model_type", "head"), CASES)
def test_create_random_student_is_narrower(model_type, head):
    teacher = _teacher(model_type, head)
    student = create_random_student(
        teacher, num_layers=2, hidden_size=16, num_attention_heads=2, intermediate_size=24
    )
    assert type(student) is type(teacher)
    cfg = student.config
    if model_type == "distilbert":
        assert (cfg.n_layers, cfg.dim, cfg.n_heads, cfg.hidden_dim) == (2, 16, 2, 24)
    else:
        sizes = (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size)
        assert sizes == (2, 16, 2, 24)
    assert cfg.id2label == teacher.config.id2label
    assert cfg.vocab_size == teacher.config.vocab_size
    assert not hasattr(cfg, "distilnlp_teacher_layers")
    assert student.num_parameters() < teacher.num_parameters()
    assert len(_layers(student, MODELS[model_type][2])) == 2
    with torch.no_grad():
        logits = student(input_ids=torch.randint(5, 100, (2, 7))).logits
    assert logits.shape[-1] == 3


def test_create_random_student_keeps_unset_fields_and_follows_width():
    deberta = _teacher("deberta-v2", "seq")
    student = create_random_student(deberta, hidden_size=16, num_attention_heads=2)
    assert student.config.num_hidden_layers == 4
    assert student.config.intermediate_size == 37
    assert student.config.pooler_hidden_size == 16  # square pooler must follow the hidden size

    electra = _teacher("electra", "seq")  # embedding_size 16 != hidden 32: kept, projected
    student = create_random_student(electra, hidden_size=8, num_attention_heads=2)
    assert student.config.embedding_size == 16
    assert student.electra.embeddings_project.weight.shape == (8, 16)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(hidden_size=30), r"hidden_size \(30\) must be divisible by num_attention_heads \(4\)"),
        (dict(hidden_size=16, num_attention_heads=3), r"hidden_size \(16\) must be divisible.*\(3\)"),
        (dict(num_layers=0), r"num_layers must be a positive integer, got 0"),
        (dict(intermediate_size=-4), r"intermediate_size must be a positive integer"),
    ],
)
def test_create_random_student_errors(kwargs, match):
    teacher = _teacher("distilbert", "seq")
    with pytest.raises(ValueError, match=match):
        create_random_student(teacher, **kwargs)
