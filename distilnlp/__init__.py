"""distilnlp: distill fine-tuned BERT-class teachers into small students and ship them as int8 ONNX."""

__version__ = "0.1.0"
