"""The bundled YAML recipes (`distilnlp recipes` lists them); this folder ships as `distilnlp.recipes`."""
