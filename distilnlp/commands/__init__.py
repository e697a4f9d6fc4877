"""The `distilnlp` command line: one module per command, on top of the library (trainer, student, data,
teacher cache, onnx, benchmark)."""
