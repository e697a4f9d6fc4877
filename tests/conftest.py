import os

# Nothing in the test suite may reach a model or dataset hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")


import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_accelerate_state(monkeypatch):
    """`TrainingArguments(bf16=True)` exports ACCELERATE_MIXED_PRECISION and accelerate keeps a global state;
    without a reset, every later test's Trainer would silently run in bf16."""
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
