"""Tidy result tables saved with provenance.

:func:`save_table` writes a table as CSV and a sidecar ``<name>.meta.json`` holding the
provenance: git commit (and whether the tree had uncommitted changes), package versions,
device, profile, date and any configuration the caller adds. :func:`load_table` reads both
back, or returns ``None`` when the table is absent, so a chapter can say so instead of
inventing numbers. Paper-scale runs write to :data:`RESULTS_DIR` (``data/results/``).
"""

from __future__ import annotations

import json
import platform
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import pandas as pd
import torch

__all__ = ["RESULTS_DIR", "StoredTable", "load_table", "provenance", "save_table"]

REPO_ROOT = Path(__file__).resolve().parents[2]
RESULTS_DIR = REPO_ROOT / "data" / "results"
PACKAGES = ("socicnn", "torch", "numpy", "pandas", "scipy", "cvxpy")


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def provenance(profile: str, device: torch.device | str, **config) -> dict:
    """Commit, versions, device, profile, date and ``config`` (JSON-serialisable values)."""
    dev = torch.device(device)
    hardware = torch.cuda.get_device_name(dev) if dev.type == "cuda" else (platform.processor() or platform.machine())
    status = _git("status", "--porcelain")
    return {
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "versions": {"python": platform.python_version(), **{p: _version(p) for p in PACKAGES}},
        "device": str(dev),
        "hardware": hardware,
        "profile": profile,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": config,
    }


def _meta_path(path: Path) -> Path:
    return path.with_suffix(".meta.json")


def save_table(table: pd.DataFrame, path: str | Path, *, profile: str, device: torch.device | str, **config) -> Path:
    """Write ``table`` to ``path`` (``.csv``) and its provenance to ``<path stem>.meta.json``."""
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"table must be a pandas DataFrame, got {type(table).__name__}")
    path = Path(path)
    if path.suffix != ".csv":
        raise ValueError(f"results are saved as .csv, got {path.name!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)
    meta = provenance(profile, device, **config)
    meta["rows"] = len(table)
    _meta_path(path).write_text(json.dumps(meta, indent=2, default=str) + "\n")
    return path


@dataclass
class StoredTable:
    """A table read back from disk with its provenance."""

    table: pd.DataFrame
    meta: dict
    path: Path

    def describe(self) -> str:
        m = self.meta
        commit = (m.get("git_commit") or "unknown")[:10]
        return (
            f"{self.path.name}: {len(self.table)} rows, profile={m.get('profile')}, device={m.get('device')} "
            f"({m.get('hardware')}), commit {commit}, {m.get('date')}"
        )


def load_table(path: str | Path) -> StoredTable | None:
    """The stored table at ``path`` with its provenance, or ``None`` if the CSV is absent.

    A CSV without its ``.meta.json`` is refused (``ValueError``): results need provenance.
    """
    path = Path(path)
    if not path.is_file():
        return None
    meta_path = _meta_path(path)
    if not meta_path.is_file():
        raise ValueError(f"{path} has no provenance file {meta_path.name}; refusing to show it")
    return StoredTable(pd.read_csv(path), json.loads(meta_path.read_text()), path)
