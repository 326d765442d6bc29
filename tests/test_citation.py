"""CITATION.cff, the README, the book's intro and pyproject.toml cite and license the same thing."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def bibtex_fields(text: str) -> dict[str, str]:
    entry = re.search(r"@software\{socicnn,(.*?)\n\}", text, re.S)
    assert entry, "no @software{socicnn, ...} entry"
    return {k: v.strip("{}") for k, v in re.findall(r"(\w+)\s*=\s*(\{.*?\}|\S+?),?\n", entry.group(1) + "\n")}


def test_citation_cff_is_cff_1_2_and_matches_pyproject():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert cff["cff-version"] == "1.2.0"
    for key in ("message", "title", "authors", "version", "license", "repository-code"):
        assert cff.get(key), f"CITATION.cff lacks {key}"
    assert str(cff["version"]) == project["version"]
    assert cff["license"] == project["license"]
    assert cff["authors"] == [{"name": a["name"]} for a in project["authors"]]
    for ref in cff["references"]:
        assert ref["title"] and ref["year"] and ref["authors"] and ref["repository-code"].startswith("https://github.com/")


def test_readme_and_intro_cite_what_citation_cff_says():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    for name in ("README.md", "book/intro.md"):
        text = (ROOT / name).read_text()
        fields = bibtex_fields(text)
        assert fields["title"] == cff["title"], name
        assert fields["version"] == str(cff["version"]), name
        assert fields["license"] == cff["license"], name
        assert fields["url"] == cff["repository-code"], name
        assert "MIT" in text and "Anonymous" not in text, name
        for ref in cff["references"]:  # the two papers, by title, in the README and the bibliography
            bib = (ROOT / "book" / "references.bib").read_text().replace("{", "").replace("}", "")
            source = text if name == "README.md" else bib
            assert ref["title"].split(":")[0] in source, (name, ref["title"])
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
