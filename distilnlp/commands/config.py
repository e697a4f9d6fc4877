"""Config = a YAML recipe (plain data) + command-line flags, parsed into typed dataclasses in one pass.

As in TRL's `TrlParser.parse_args_and_config`, a recipe's values become the *defaults* of the
`HfArgumentParser` dataclasses and flags given after it override them: there is no round trip through argv
strings. `explicit_values` gives back what the recipe and the flags set, typed, so a configuration can be
written out again as a recipe (`distilnlp search` does that for its best trial).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import enum
import re
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser

from .recipes import resolve_recipe


class RecipeLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` with YAML 1.2 booleans: only true/false are booleans, so `save_strategy: no` and
    `report_to: off` stay the words the user wrote instead of turning into `False`."""


RecipeLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def field_names(dataclass_types) -> list[str]:
    return sorted({f.name for dc in dataclass_types for f in dataclasses.fields(dc) if f.init})


def _unknown(kind: str, name: str, known: list[str]) -> str:
    # A truncated name (`--temp`) means the shortest name it starts; spelling slips go to difflib.
    prefixed = sorted((k for k in known if k.startswith(name) and len(name.lstrip("-")) >= 3), key=len)
    close = prefixed or difflib.get_close_matches(name, known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"unknown {kind} {name!r}.{hint} See `distilnlp <command> --help`."


def load_recipe(path: str | Path, dataclass_types) -> dict[str, Any]:
    """Read a flat YAML mapping of field names to values; unknown names are an error with a suggestion."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Recipe {path} does not exist; list the bundled ones with `distilnlp recipes`."
        )
    try:
        recipe = yaml.load(path.read_text(), Loader=RecipeLoader) or {}  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as error:
        raise ValueError(f"Recipe {path} is not valid YAML: {str(error).splitlines()[0]}") from None
    if not isinstance(recipe, dict):
        raise ValueError(
            f"Recipe {path} must be a mapping of field names to values, got {type(recipe).__name__}."
        )
    known = field_names(dataclass_types)
    for key in recipe:
        if key not in known:
            raise ValueError(f"Recipe {path}: {_unknown('field', str(key), known)}")
    return recipe


def make_parser(dataclass_types, prog: str | None = None) -> HfArgumentParser:
    # No abbreviations: `--learning_rat` must be an error, not a silent prefix match.
    return HfArgumentParser(dataclass_types, prog=prog, allow_abbrev=False)


def set_defaults_with_config(parser: argparse.ArgumentParser, config: dict[str, Any]) -> None:
    """Make the recipe's values the parser's defaults (argparse converts string defaults with the flag's type)."""
    for action in parser._actions:
        if action.dest in config:
            value = config[action.dest]
            if action.type is str and isinstance(value, (int, float)) and not isinstance(value, bool):
                value = str(value)  # `student_layer_selection: 3` means the text "3"
            action.default = value
            action.required = False


# A value such as `-1,2` or `-0.5` that argparse would take for a flag (it knows only plain negative numbers).
NEGATIVE_VALUE = re.compile(r"^-(\d|\.\d|inf|nan)", re.IGNORECASE)


def _join_negative_values(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """`--flag -1,2` -> `--flag=-1,2` for flags that take one value, so the value reaches its own checks."""
    takes_value = {
        option
        for action in parser._actions
        if action.nargs in (None, "?") and action.option_strings
        for option in action.option_strings
    }
    out: list[str] = []
    for token in argv:
        if out and out[-1] in takes_value and NEGATIVE_VALUE.match(token):
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out


def _split_recipe(argv: list[str], dataclass_types) -> tuple[dict[str, Any], list[str]]:
    """(the recipe's values, the flags): a first argument that is not a flag names a recipe file or a
    bundled recipe (`distilnlp recipes`)."""
    if argv and not argv[0].startswith("-"):
        return load_recipe(resolve_recipe(argv[0]), dataclass_types), list(argv[1:])
    return {}, list(argv)


def parse_config(dataclass_types, argv: list[str], prog: str | None = None) -> tuple:
    """`[recipe.yaml] [--flag value ...]` -> one instance of each dataclass (flags win over the recipe).

    An unknown flag exits with status 2 and the closest known flag.
    """
    recipe, argv = _split_recipe(argv, dataclass_types)
    parser = make_parser(dataclass_types, prog)
    set_defaults_with_config(parser, recipe)
    *instances, remaining = parser.parse_args_into_dataclasses(
        args=_join_negative_values(parser, argv), return_remaining_strings=True, look_for_args_file=False
    )
    if remaining:
        flag = next((r for r in remaining if r.startswith("-")), remaining[0])
        flags = [option for action in parser._actions for option in action.option_strings]
        parser.error(_unknown("flag" if flag.startswith("-") else "argument", flag.split("=")[0], flags))
    return tuple(instances)


def explicit_values(dataclass_types, argv: list[str]) -> dict[str, Any]:
    """{field: value} for the fields the recipe or the flags set: the recipe's values with the flags'
    (converted by the flags' types) on top. Plain YAML data, so it can be dumped as a recipe again."""
    recipe, argv = _split_recipe(argv, dataclass_types)
    parser = make_parser(dataclass_types)
    for action in parser._actions:
        action.default, action.required = argparse.SUPPRESS, False
    given, _ = parser.parse_known_args(_join_negative_values(parser, argv))
    return {name: _plain(value) for name, value in (recipe | vars(given)).items()}


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
