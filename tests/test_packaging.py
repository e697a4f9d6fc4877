"""The install metadata stays true: the lock files satisfy pyproject.toml, and the wheel's package list
matches the tree (it is explicit because `recipes/` ships as `distilnlp.recipes`)."""

from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def pins(name: str) -> dict[str, Version]:
    pinned = {}
    for line in (ROOT / name).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            requirement = Requirement(line)
            (specifier,) = requirement.specifier
            assert specifier.operator == "==", f"{name}: {line} is not an exact pin"
            pinned[canonicalize_name(requirement.name)] = Version(specifier.version)
    return pinned


def requirements(extras: tuple[str, ...]) -> list[Requirement]:
    """The core requirements plus those of `extras`, following `distilnlp[...]` self-references."""
    project = PYPROJECT["project"]
    found = [Requirement(r) for r in project["dependencies"]]
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for text in project["optional-dependencies"][extra]:
            requirement = Requirement(text)
            if canonicalize_name(requirement.name) == "distilnlp":
                todo.extend(requirement.extras)
            else:
                found.append(requirement)
    return found


def test_lock_file_satisfies_pyproject():
    pinned = pins("constraints.txt")
    for requirement in requirements(("demo", "onnx", "dev")):
        name = canonicalize_name(requirement.name)
        assert name in pinned, (
            f"constraints.txt does not pin {requirement.name} (pyproject.toml needs {requirement})"
        )
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"constraints.txt pins {requirement.name}=={pinned[name]}, outside pyproject.toml's {requirement}"
        )
    assert pinned["torch"] == Version("2.13.0")  # the local CPU wheel; any other version pulls CUDA builds


def test_transformers_floor_is_outside_the_known_advisories():
    """GHSA-29pf-2h5f-8g72 / CVE-2026-4372 (fixed in 5.3.0) and CVE-2026-5241 (fixed in 5.5.0): neither the
    requirement nor the pin may allow an affected version, and optimum-onnx (which pins transformers < 4.58) is gone."""
    (transformers,) = [r for r in requirements(("demo", "onnx", "dev")) if r.name == "transformers"]
    assert not transformers.specifier.contains("5.4.99") and transformers.specifier.contains("5.5.0")
    pinned = pins("constraints.txt")
    assert pinned["transformers"] >= Version("5.5.0")
    assert "optimum-onnx" not in pinned and "optimum" not in pinned


def test_wheel_package_list_matches_the_tree():
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts) for init in (ROOT / "distilnlp").rglob("__init__.py")
    }
    assert listed == on_disk | {"distilnlp.recipes"}
    assert PYPROJECT["tool"]["setuptools"]["package-dir"] == {"distilnlp.recipes": "recipes"}


def test_ci_runs_exactly_the_readme_test_command():
    readme_commands = [
        line for line in (ROOT / "README.md").read_text().splitlines()[:6] if "pip install" in line
    ]
    assert len(readme_commands) == 2
    assert readme_commands[1] in (ROOT / ".ci" / "run").read_text()


def test_readme_layout_lists_every_package_once():
    """The README's layout section names each package of the tree on a line of its own, and no other."""
    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index("## Layout") :].split("```")[1]
    listed = [line.split()[0] for line in block.splitlines() if line.startswith("  ")]
    on_disk = {
        str(init.parent.relative_to(ROOT / "distilnlp")) + "/"
        for init in (ROOT / "distilnlp").rglob("__init__.py")
        if init.parent != ROOT / "distilnlp"
    }
    assert sorted(listed) == sorted(on_disk)
