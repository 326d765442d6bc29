"""pyproject.toml, environment.yml, the setup script and the README agree on what is installed."""

import os
import re
import tomllib

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXTRAS = ("book", "test", "lpcf")  # what scripts/setup_env.sh installs; the optional mosek extra is not in the env
TORCH_PIN = re.compile(r"torch==([0-9][0-9A-Za-z.+]*)")


def read(name: str) -> str:
    with open(os.path.join(ROOT, name), encoding="utf-8") as fh:
        return fh.read()


def pyproject_requirements() -> list[Requirement]:
    project = tomllib.loads(read("pyproject.toml"))["project"]
    lines = list(project["dependencies"])
    for extra in EXTRAS:
        lines += project["optional-dependencies"][extra]
    return [Requirement(line) for line in lines]


def environment_requirements() -> list[Requirement]:
    env = yaml.safe_load(read("environment.yml"))
    pip = [dep["pip"] for dep in env["dependencies"] if isinstance(dep, dict) and "pip" in dep]
    assert len(pip) == 1, "environment.yml needs exactly one pip: section"
    return [Requirement(line) for line in pip[0] if not line.startswith("-e")]


def names(requirements: list[Requirement]) -> set[str]:
    return {canonicalize_name(r.name) for r in requirements}


def test_environment_and_pyproject_name_the_same_packages():
    pyproject, environment = names(pyproject_requirements()), names(environment_requirements())
    assert pyproject == environment, (
        f"only in pyproject.toml: {sorted(pyproject - environment)}; "
        f"only in environment.yml: {sorted(environment - pyproject)}"
    )


def test_environment_installs_the_project_and_its_python():
    env = yaml.safe_load(read("environment.yml"))
    pip = next(dep["pip"] for dep in env["dependencies"] if isinstance(dep, dict))
    assert "-e ." in pip
    assert "python=3.11" in env["dependencies"]


def test_no_duplicate_requirements():
    for requirements in (pyproject_requirements(), environment_requirements()):
        listed = [canonicalize_name(r.name) for r in requirements]
        assert len(listed) == len(set(listed)), listed


def test_version_specifiers_are_compatible():
    """Every environment.yml pin satisfies pyproject's range (e.g. torch==2.13.0 vs torch>=2.1)."""
    ranges = {canonicalize_name(r.name): r.specifier for r in pyproject_requirements()}
    for r in environment_requirements():
        allowed = ranges[canonicalize_name(r.name)]
        for pin in [s.version for s in r.specifier if s.operator == "=="]:
            assert allowed.contains(pin, prereleases=True), f"environment.yml {r} is outside pyproject's {allowed}"


def test_torch_pin_is_the_same_everywhere():
    env_torch = [r for r in environment_requirements() if canonicalize_name(r.name) == "torch"]
    assert len(env_torch) == 1
    (spec,) = env_torch[0].specifier
    assert spec.operator == "==", "environment.yml must pin torch exactly"
    pin = Version(spec.version)
    setup_pins = set(TORCH_PIN.findall(read("scripts/setup_env.sh")))
    readme_pins = set(TORCH_PIN.findall(read("README.md")))
    assert setup_pins and readme_pins, "setup_env.sh and README.md must name the pinned torch"
    assert {Version(v) for v in setup_pins | readme_pins} == {pin}
    assert pin == Version("2.13.0")


@pytest.mark.parametrize("extra", EXTRAS)
def test_setup_script_installs_the_extras(extra):
    assert re.search(r"\[[a-z,]*\b" + extra + r"\b[a-z,]*\]", read("scripts/setup_env.sh"))


def test_jupyter_book_stays_below_2():
    book = {canonicalize_name(r.name): r.specifier for r in pyproject_requirements()}["jupyter-book"]
    assert book.contains("1.0.4") and not book.contains("2.0.0")


def test_nothing_points_readers_at_the_developers_design_notes():
    # The README, the book, the library and its tests stand alone: readers do not have the
    # developers' design notes, so no file may send them there (the book checker only reports).
    notes = re.compile(r"\b(?:" + "|".join(("MATH", "EXPERIMENTS", "API", "STYLE")) + r")\.md\b|shared" + "/design")
    from pathlib import Path

    root = Path(ROOT)
    files = [root / name for name in ("README.md", "_config.yml", "_toc.yml", "pyproject.toml", "environment.yml")]
    for pattern in ("src/**/*.py", "tests/*.py", "book/*.md", "benchmarks/*", "scripts/*"):
        files += sorted(root.glob(pattern))
    hits = [
        f"{path.relative_to(root)}:{i}"
        for path in files
        if path.is_file() and path.name != "check_book.py"
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if notes.search(line)
    ]
    assert not hits, f"pointers to the design notes: {hits}"
