"""The bundled recipes: the top-level `recipes/` folder, shipped in the wheel as `distilnlp.recipes`."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

RECIPE_SUFFIXES = (".yaml", ".yml")


def recipes_folder() -> Path:
    """Where the bundled recipes are: the installed `distilnlp.recipes`, or `recipes/` of a source checkout
    imported from its own folder (then the editable install's mapping of `distilnlp.recipes` is bypassed)."""
    checkout = Path(__file__).resolve().parents[2] / "recipes"
    if checkout.is_dir():
        return checkout
    return Path(str(files("distilnlp.recipes")))


def bundled_recipes() -> dict[str, Path]:
    """{name: path} of every bundled recipe, e.g. "distill_bbc_news" -> .../recipes/distill_bbc_news.yaml."""
    folder = recipes_folder()
    return {
        Path(entry.name).stem: Path(str(entry))
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(RECIPE_SUFFIXES)
    }


def resolve_recipe(name_or_path: str | Path) -> Path:
    """A recipe file: an existing path as given, else a bundled recipe by name (with or without .yaml)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    bundled = bundled_recipes()
    name = path.stem if path.suffix in RECIPE_SUFFIXES and path.parent == Path(".") else str(name_or_path)
    if name in bundled:
        return bundled[name]
    raise FileNotFoundError(
        f"Recipe {str(name_or_path)!r} is neither a file nor a bundled recipe; bundled: {', '.join(bundled)}."
    )


def describe(path: Path) -> str:
    """The recipe's first comment line (its one-line description)."""
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""
