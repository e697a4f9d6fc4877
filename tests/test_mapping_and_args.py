import pytest

from distilnlp import DistillationTrainingArguments, LayerMapping


def test_uniform_mapping_is_tinybert_style():
    assert LayerMapping.parse("uniform").resolve(3, 6) == ((0, 0), (1, 2), (2, 4), (3, 6))
    assert LayerMapping.parse("uniform").resolve(4, 6) == ((0, 0), (1, 1), (2, 3), (3, 4), (4, 6))
    assert LayerMapping.parse("uniform").resolve(2, 2) == ((0, 0), (1, 1), (2, 2))


def test_last_and_explicit_mappings():
    assert LayerMapping.parse("last").resolve(2, 12) == ((2, 12),)
    mapping = LayerMapping.parse(" 0:0, 1:3 ,2:6")
    assert mapping.resolve(2, 6) == ((0, 0), (1, 3), (2, 6))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("1-2", "cannot read '1-2'"),
        ("1:2,x:3", "cannot read 'x:3'"),
        ("1:-2", "cannot read '1:-2'"),
        ("1:2,1:3", "each student layer may appear only once"),
        ("", "cannot read ''"),
    ],
)
def test_bad_mapping_specs_are_named(spec, message):
    with pytest.raises(ValueError, match=message):
        LayerMapping.parse(spec)


def test_mapping_out_of_range_names_the_pair_and_the_ranges():
    with pytest.raises(
        ValueError, match=r"pair 3:4 is out of range: the student has layers 0..2 and the teacher 0..6"
    ):
        LayerMapping.parse("1:2,3:4").resolve(2, 6)
    with pytest.raises(ValueError, match="student no deeper than the teacher"):
        LayerMapping.parse("uniform").resolve(4, 2)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("temperature", 0.0, "temperature must be > 0"),
        ("alpha", 1.5, r"alpha must be in \[0, 1\]"),
        ("alpha", -0.1, r"alpha must be in \[0, 1\]"),
        ("hidden_weight", -1.0, "hidden_weight must be >= 0"),
        ("attention_weight", -0.5, "attention_weight must be >= 0"),
        ("hidden_loss", "l1", r"hidden_loss must be one of \['cosine', 'mse'\], got 'l1'"),
        ("attention_loss", "js", r"attention_loss must be one of \['kl', 'mse'\], got 'js'"),
        ("layer_mapping", "1->2", "layer_mapping='1->2': cannot read"),
    ],
)
def test_invalid_arguments_name_the_field_and_allowed_values(tmp_path, field, value, message):
    with pytest.raises(ValueError, match=message):
        DistillationTrainingArguments(output_dir=str(tmp_path), **{field: value})


def test_defaults_and_help_text(tmp_path):
    import dataclasses

    args = DistillationTrainingArguments(output_dir=str(tmp_path))
    assert (args.temperature, args.alpha, args.hidden_weight, args.attention_weight) == (2.0, 0.5, 0.0, 0.0)
    own = {
        "temperature",
        "alpha",
        "hidden_weight",
        "attention_weight",
        "hidden_loss",
        "attention_loss",
        "layer_mapping",
    }
    for f in dataclasses.fields(DistillationTrainingArguments):
        if f.name in own:
            assert f.metadata.get("help"), f.name
