"""Config = a YAML recipe (plain data) + command-line flags that override it, parsed into dataclasses."""

from __future__ import annotations

import dataclasses
import difflib
import json
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser

RECIPE_SUFFIXES = (".yaml", ".yml")


def field_names(dataclass_types) -> list[str]:
    return sorted({f.name for dc in dataclass_types for f in dataclasses.fields(dc) if f.init})


def load_recipe(path: str | Path, dataclass_types) -> dict[str, Any]:
    """Read a flat YAML mapping of field names to values; unknown names are an error with a suggestion."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Recipe {path} does not exist.")
    recipe = yaml.safe_load(path.read_text()) or {}
    if not isinstance(recipe, dict):
        raise ValueError(
            f"Recipe {path} must be a mapping of field names to values, got {type(recipe).__name__}."
        )
    known = field_names(dataclass_types)
    for key in recipe:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"Recipe {path}: unknown field {key!r}.{hint} See `distilnlp <command> --help`.")
    return recipe


def recipe_to_argv(recipe: dict[str, Any]) -> list[str]:
    """Turn recipe values into `--name value` flags, so later (real) flags override them."""
    argv: list[str] = []
    for key, value in recipe.items():
        if value is None:
            continue
        argv.append(f"--{key}")
        if isinstance(value, bool):
            argv.append(str(value).lower())
        elif isinstance(value, list):
            argv.extend(str(v) for v in value)
        elif isinstance(value, dict):
            argv.append(json.dumps(value))
        else:
            argv.append(str(value))
    return argv


def parse_config(dataclass_types, argv: list[str], prog: str | None = None) -> tuple:
    """`[recipe.yaml] [--flag value ...]` -> one instance of each dataclass (flags win over the recipe)."""
    parser = HfArgumentParser(dataclass_types, prog=prog)
    recipe_argv: list[str] = []
    if argv and argv[0].endswith(RECIPE_SUFFIXES):
        recipe_argv = recipe_to_argv(load_recipe(argv[0], dataclass_types))
        argv = argv[1:]
    return parser.parse_args_into_dataclasses(args=recipe_argv + list(argv), look_for_args_file=False)
