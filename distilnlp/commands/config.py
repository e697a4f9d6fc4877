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
import types
import typing
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
    check_recipe_types(recipe, dataclass_types, path)
    return recipe


# ------------------------------------------------------------------------------------------- value types

YAML_KINDS = {
    dict: "a mapping",
    list: "a list",
    bool: "a bool",
    int: "an int",
    float: "a float",
    str: "a str",
}
SCALARS = {bool: "a bool (true or false)", int: "an int", float: "a float (a number)", str: "a str (text)"}


def _accepts(value: Any, annotation: Any) -> bool:
    """Whether a YAML `value` fits a field of type `annotation`. Strings fit every scalar type (argparse
    converts them with the flag's type and names a bad one); YAML ints fit floats, numbers fit strings."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(value, arg) for arg in args)
    if annotation is type(None):
        return value is None
    if origin is typing.Literal:
        return value in args or isinstance(value, str)
    if annotation is list or origin is list:  # argparse converts no item of a list default: no strings
        return isinstance(value, list) and all(
            _accepts(item, args[0]) and not (isinstance(item, str) and args[0] in (bool, int, float))
            for item in value
            if args
        )
    if annotation is dict or origin is dict:
        return isinstance(value, dict)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is bool:
        return isinstance(value, (bool, str))
    if annotation is int:
        return isinstance(value, str) or (number and isinstance(value, int))
    if annotation in (float, str):
        return isinstance(value, str) or number
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return isinstance(value, (str, annotation))
    return True  # another class: left to the parser


def _expected(annotation: Any) -> str:
    """`annotation` in words: 'a float (a number) or null', 'a list of float', ..."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        kept = [a for a in args if a is not type(None)]
        if str in kept:  # `IntervalStrategy | str`: the enum's values are strings too
            kept = [a for a in kept if not (isinstance(a, type) and issubclass(a, enum.Enum))]
        words = " or ".join(dict.fromkeys(_expected(a) for a in kept))
        return words + (" or null" if type(None) in args else "")
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if annotation is list or origin is list:
        return f"a list of {getattr(args[0], '__name__', args[0])}" if args else "a list"
    if annotation is dict or origin is dict:
        return "a mapping"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return "a str (one of " + ", ".join(repr(m.value) for m in annotation) + ")"
    return SCALARS.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _list_item(annotation: Any) -> Any:
    """The item type of a `list[X]` (or `list[X] | None`) annotation, else None."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if typing.get_origin(candidate) is list:
            return (typing.get_args(candidate) or (str,))[0]
    return None


def check_recipe_types(recipe: dict[str, Any], dataclass_types, path: str | Path) -> None:
    """A recipe value of the wrong type (`alpha: [0.5]`, `output_dir: {a: 1}`) is a ValueError naming the
    field, the value and the type the field takes (before argparse or the dataclass meet it)."""
    fields: dict[str, tuple[Any, Any]] = {}
    for dc in dataclass_types:
        try:
            hints = typing.get_type_hints(dc)
        except Exception:  # an annotation that does not resolve: leave its fields to the parser
            continue
        for f in dataclasses.fields(dc):
            annotation = hints.get(f.name, Any)
            comma_separated = "comma-separated" in f.metadata.get("help", "") and (
                _accepts("", annotation) or _list_item(annotation) is not None
            )
            fields.setdefault(f.name, (annotation, f.default, comma_separated))
    for key, value in recipe.items():
        annotation, default, comma_separated = fields.get(key, (Any, None, False))
        if annotation is Any or _accepts(value, annotation) or (value is None and default is None):
            continue
        item = _list_item(annotation)
        if comma_separated and all(
            isinstance(v, str) or _accepts(v, item or str)
            for v in (value if isinstance(value, list) else [value])
        ):
            # A comma-separated field takes a YAML list (`teacher_weights: [1, 3]`), and a list field the
            # text (`student_layers: 1,2,3`) or one item (`student_layers: 2`): its dataclass converts them.
            continue
        kind = next(
            (w for t, w in YAML_KINDS.items() if isinstance(value, t)), "null" if value is None else ""
        )
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        expected = _expected(annotation) + (", or comma-separated text" if comma_separated and item else "")
        raise ValueError(
            f"Recipe {path}: {key} is {shown} ({kind or type(value).__name__}) but must be {expected}."
        )


# A '%' that is neither '%%' nor a '%(name)s' placeholder: argparse %-formats every help string, so a lone one
# garbles `--help` ("10% slower" pastes the whole argument dict over "% s", as in transformers 4.x's
# torch_empty_cache_steps) or crashes it ("98.5% of": "%o format: an integer is required").
LONE_PERCENT = re.compile(r"%(?!%|\(\w+\)[a-z])")


def _escape_help(text: str | None) -> str | None:
    if not text:
        return text
    # Drop the '%%' pairs first, so the '%' of a pair is not taken for a lone one.
    return "%%".join(LONE_PERCENT.sub("%%", part) for part in text.split("%%"))


def make_parser(dataclass_types, prog: str | None = None) -> HfArgumentParser:
    # No abbreviations: `--learning_rat` must be an error, not a silent prefix match.
    parser = HfArgumentParser(dataclass_types, prog=prog, allow_abbrev=False)
    for action in parser._actions:  # help strings written (or inherited) for plain text
        action.help = _escape_help(action.help)
        if _comma_list(action):
            action.type = str  # `1,2 3` stays text here: the dataclass splits and checks its items
    return parser


def _comma_list(action: argparse.Action) -> bool:
    """A `list[...]` field whose help says "comma-separated": it takes `--flag 1 2 3` and `--flag 1,2,3`."""
    return action.nargs == "+" and "comma-separated" in (action.help or "")


def set_defaults_with_config(parser: argparse.ArgumentParser, config: dict[str, Any]) -> None:
    """Make the recipe's values the parser's defaults (argparse converts string defaults with the flag's type)."""
    for action in parser._actions:
        if action.dest in config:
            value = config[action.dest]
            if action.type is str and isinstance(value, (int, float)) and not isinstance(value, bool):
                value = str(value)  # `student_layer_selection: 3` means the text "3"
            if action.type is str and action.nargs is None and isinstance(value, list):
                value = ",".join(
                    map(str, value)
                )  # `teacher_weights: [1, 3]` means "1,3" (a comma-separated field)
            action.default = value
            action.required = False


# A value such as `-1,2` or `-0.5` that argparse would take for a flag (it knows only plain negative numbers).
NEGATIVE_VALUE = re.compile(r"^-(\d|\.\d|inf|nan)", re.IGNORECASE)


def _join_negative_values(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """`--flag -1,2` -> `--flag=-1,2` for flags that take one value, so the value reaches its own checks."""
    takes_value = {
        option
        for action in parser._actions
        if (action.nargs in (None, "?") or _comma_list(action)) and action.option_strings
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


def parse_config(
    dataclass_types, argv: list[str], prog: str | None = None, overrides: dict[str, Any] | None = None
) -> tuple:
    """`[recipe.yaml] [--flag value ...]` -> one instance of each dataclass (flags win over the recipe).

    `overrides`: typed field values laid over the recipe's, as if the recipe held them (None: keep the
    recipe's); how `distilnlp demo` sets its stages' folders and epochs. An unknown flag exits with status 2
    and the closest known flag.
    """
    recipe, argv = _split_recipe(argv, dataclass_types)
    known = field_names(dataclass_types)
    for name, value in (overrides or {}).items():
        if name not in known:
            raise ValueError(_unknown("field", name, known))
        if value is not None:
            recipe[name] = _plain(value)  # a Path is the folder's name, as on the command line
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
