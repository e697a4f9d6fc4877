import os

# Nothing in the test suite may reach a model or dataset hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")


import pytest  # noqa: E402

# Test modules that export or run ONNX graphs: every test in them is marked `onnx` (deselect with -m "not onnx").
ONNX_MODULES = (
    "test_export.py",
    "test_benchmark.py",
    "test_deploy_cli.py",
    "test_demo.py",
    "test_fallback.py",
    "test_quantization_aware.py",
    "test_vocabulary.py",
    "test_sweep.py",
    "test_int8_peak.py",
    "test_export_architectures.py",
)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name in ONNX_MODULES:
            item.add_marker(pytest.mark.onnx)


@pytest.fixture(autouse=True)
def _fresh_accelerate_state(monkeypatch):
    """`TrainingArguments(bf16=True)` exports ACCELERATE_MIXED_PRECISION and accelerate keeps a global state;
    without a reset, every later test's Trainer would silently run in bf16."""
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
