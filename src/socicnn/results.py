"""Tidy result tables saved with provenance, and where they live.

:func:`save_table` writes a table as CSV and a sidecar ``<name>.meta.json`` holding the
provenance: the package version, the commit of the checkout the code was run from (only when it
was run from a git checkout of this project, with whether its tree had uncommitted changes),
package and solver versions, device and hardware, profile, date, wall time and any
configuration the caller adds (:func:`run_cases` saves a long run after each of its cases and
resumes it). :func:`load_table` reads both back and refuses tables whose
provenance is missing, incomplete or disagrees with the CSV, or returns ``None`` when the table
is absent, so a chapter can say so instead of inventing numbers.

Two directories:

- **stored results** (:func:`stored_dir`): the paper-scale tables shipped with the package
  (``socicnn/data/results/``, package data), or the directory named by the environment
  variable ``SOCICNN_RESULTS_DIR``. Chapters read them with :func:`load_stored`.
- **new results** (:func:`output_dir`): where runs write, the directory named by
  ``SOCICNN_OUT`` (set by ``socicnn run``), else ``./results-local`` under the current working
  directory. Chapters write with :func:`record`, which writes at the ``paper`` profile or when
  ``SOCICNN_OUT`` is set, and does nothing otherwise (so tests and book builds write nothing).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from importlib import metadata
from pathlib import Path

import pandas as pd
import torch

__all__ = [
    "COMMIT_ENV",
    "OUT_ENV",
    "RESULTS_DIR",
    "STORED_ENV",
    "StoredTable",
    "checkout_root",
    "checkout_state",
    "load_stored",
    "load_table",
    "mean_sd",
    "output_dir",
    "provenance",
    "record",
    "save_table",
    "stored_dir",
]

STORED_ENV = "SOCICNN_RESULTS_DIR"
OUT_ENV = "SOCICNN_OUT"
COMMIT_ENV = "SOCICNN_COMMIT"
PACKAGE_DIR = Path(__file__).resolve().parent
PACKAGES = ("socicnn", "torch", "numpy", "pandas", "scipy", "cvxpy", "clarabel")
#: At most this many changed paths are listed in a provenance record's ``git_changes``.
MAX_CHANGES = 40
#: Keys every provenance record must hold for a table to be shown.
REQUIRED = ("package_version", "versions", "device", "hardware", "profile", "date", "rows", "config")


def stored_dir() -> Path:
    """The stored paper-scale results: ``$SOCICNN_RESULTS_DIR`` if set, else the package's own."""
    env = os.environ.get(STORED_ENV)
    return Path(env).expanduser() if env else PACKAGE_DIR / "data" / "results"


#: :func:`stored_dir` as it was when the module was imported (prefer calling :func:`stored_dir`).
RESULTS_DIR = stored_dir()


def output_dir() -> Path:
    """Where new result tables go: ``$SOCICNN_OUT`` if set, else ``./results-local``."""
    env = os.environ.get(OUT_ENV)
    return Path(env).expanduser() if env else Path.cwd() / "results-local"


@cache
def checkout_root() -> Path | None:
    """The git checkout this package is imported from, or ``None`` for an installed copy.

    The package counts as run from a checkout only when its source directory is ``src/socicnn``
    of a git work tree whose ``pyproject.toml`` is this project's (an editable install or
    ``PYTHONPATH=src``); a wheel installed into a virtualenv that happens to sit inside some
    checkout is not.
    """
    root = PACKAGE_DIR.parents[1]
    if PACKAGE_DIR != root / "src" / "socicnn" or not (root / "pyproject.toml").is_file():
        return None
    if 'name = "socicnn"' not in (root / "pyproject.toml").read_text(encoding="utf-8"):
        return None
    top = _git(root, "rev-parse", "--show-toplevel")
    return root if top is not None and Path(top).resolve() == root else None


@cache
def _checkout() -> tuple[str | None, tuple[str, ...] | None]:
    """``(commit, changed paths)`` of :func:`checkout_root`, taken once per process; the paths
    are ``None`` when unknown (no git, or a copy that names its commit in ``$SOCICNN_COMMIT``)."""
    root = checkout_root()
    if root is None:
        commit = os.environ.get(COMMIT_ENV)
        return (commit.strip(), None) if commit and commit.strip() else (None, None)
    status = _git(root, "status", "--porcelain", "--untracked-files=normal", strip=False)
    changes = None if status is None else tuple(line[3:] for line in status.splitlines() if line.strip())
    return _git(root, "rev-parse", "HEAD"), changes


def checkout_state() -> tuple[str | None, bool | None]:
    """``(commit, has uncommitted changes)`` of :func:`checkout_root`, or ``(None, None)``.

    A copy of a checkout without its git directory (a source tree sent to another machine) can
    name the commit it was copied from in ``$SOCICNN_COMMIT``; its changes are then unknown (``None``).

    Taken once per process, at the first call (:func:`socicnn.profiles.setup` makes it at the
    start of a chapter), so a long run records the commit it started from, not the one the
    checkout has moved to when the run saves its table.
    """
    commit, changes = _checkout()
    return commit, None if changes is None else bool(changes)


def _git(cwd: Path, *args: str, strip: bool = True) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() if strip else out.stdout


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance(profile: str, device: torch.device | str, **config) -> dict:
    """Package version, checkout commit (``None`` when installed) with the paths that differed
    from it when the run started (``git_changes``, at most :data:`MAX_CHANGES` of them, then a
    count), versions, device, profile, date and ``config`` (JSON-serialisable values)."""
    dev = torch.device(device)
    hardware = torch.cuda.get_device_name(dev) if dev.type == "cuda" else _cpu_model()
    from . import __version__  # the running code's version, installed or run from a source tree

    root = checkout_root()
    commit, changes = _checkout()
    return {
        "package_version": __version__,
        "source": "checkout" if root is not None else "copy" if commit else "installed",
        "git_commit": commit,
        "git_dirty": None if changes is None else bool(changes),
        "git_changes": _listed(changes),
        "versions": {"python": platform.python_version(),
                     **{p: __version__ if p == "socicnn" else _version(p) for p in PACKAGES}},
        "device": str(dev),
        "hardware": hardware,
        "cpu_count": os.cpu_count(),
        "profile": profile,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": config,
    }


def _listed(changes: tuple[str, ...] | None) -> list[str] | None:
    if changes is None or len(changes) <= MAX_CHANGES:
        return None if changes is None else list(changes)
    return [*changes[:MAX_CHANGES], f"... and {len(changes) - MAX_CHANGES} more"]


def mean_sd(means: Sequence[float], sds: Sequence[float]) -> list[str]:
    """Table cells ``"mean ± sd"`` (three significant digits, the sd to one), or ``"mean (1 seed)"``
    where the sd is undefined (NaN: the sample standard deviation of a single seed)."""
    return [f"{m:.3g} (1 seed)" if pd.isna(s) else f"{m:.3g} ± {s:.1g}" for m, s in zip(means, sds, strict=True)]


def _meta_path(path: Path) -> Path:
    return path.with_suffix(".meta.json")


def save_table(
    table: pd.DataFrame,
    path: str | Path,
    *,
    profile: str,
    device: torch.device | str,
    wall_time: float | None = None,
    **config,
) -> Path:
    """Write ``table`` to ``path`` (``.csv``) and its provenance to ``<path stem>.meta.json``.

    ``wall_time`` (seconds) is the time the run that produced the table took.
    """
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"table must be a pandas DataFrame, got {type(table).__name__}")
    path = Path(path)
    if path.suffix != ".csv":
        raise ValueError(f"results are saved as .csv, got {path.name!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)
    meta = provenance(profile, device, **config)
    meta["wall_time_s"] = None if wall_time is None else float(wall_time)
    meta["rows"] = len(table)
    _meta_path(path).write_text(json.dumps(meta, indent=2, default=str) + "\n")
    return path


def record(table: pd.DataFrame, name: str, ctx, *, wall_time: float | None = None, **config) -> Path | None:
    """Save a chapter's result table as ``<output_dir()>/<name>.csv`` when the run is one whose
    results are kept (``ctx.profile == "paper"`` or ``$SOCICNN_OUT`` set); else do nothing.

    ``ctx`` is the chapter's :class:`~socicnn.profiles.RunContext`. Returns the path written.
    """
    if ctx.profile != "paper" and not os.environ.get(OUT_ENV):
        return None
    return save_table(
        table, output_dir() / f"{name}.csv", profile=ctx.profile, device=ctx.device, wall_time=wall_time,
        seed=ctx.seed, **config,
    )


@dataclass
class StoredTable:
    """A table read back from disk with its provenance."""

    table: pd.DataFrame
    meta: dict
    path: Path

    def describe(self) -> str:
        m = self.meta
        wall = "" if m.get("wall_time_s") is None else f", {_duration(m['wall_time_s'])}"
        runs = m.get("config", {}).get("runs") or []
        if len(runs) > 1:  # a table finished by several processes (e.g. resumed in later sessions)
            commits = ", ".join(dict.fromkeys((r.get("git_commit") or "unknown")[:10] for r in runs))
            dirty = sum(bool(r.get("git_dirty")) for r in runs)
            origin = f"{len(runs)} runs at commits {commits}" + (
                f", {dirty} of them from a checkout with uncommitted changes" if dirty else "")
            wall += f" summed over its {len(runs)} runs"
        else:
            origin = _origin(m)
        if not self.complete:
            wall += "; {} of {} cases (the run has not reached its last case)".format(*self.cases())
        return (
            f"{self.path.name}: {len(self.table)} rows, profile={m['profile']}, device={m['device']} "
            f"({m['hardware']}), socicnn {m['package_version'] or '(version not recorded)'} ({origin}), "
            f"{m['date']}{wall}"
        )

    def cases(self) -> tuple[int, int] | None:
        """``(finished, total)`` cases of a table written case by case (:func:`run_cases`), or
        ``None`` for a table written in one piece."""
        config = self.meta.get("config", {})
        if "cases_done" not in config:
            return None
        done = len(config["cases_done"])
        return done, int(config.get("cases_total", done))

    @property
    def complete(self) -> bool:
        """Whether every case of the run's profile is in the table."""
        cases = self.cases()
        return cases is None or cases[0] >= cases[1]


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60 else f"{seconds / 60:.1f} min"


def _origin(record: dict) -> str:
    """Where one run's code came from, for :meth:`StoredTable.describe`."""
    if not record.get("git_commit"):
        return "installed package"
    text = f"commit {record['git_commit'][:10]}"
    if record.get("git_dirty"):
        changes = record.get("git_changes")
        text += " with uncommitted changes" + (" (listed in its provenance)" if changes else "")
    return text


def load_table(path: str | Path) -> StoredTable | None:
    """The stored table at ``path`` with its provenance, or ``None`` if the CSV is absent.

    Raises:
        ValueError: the CSV has no ``.meta.json``, the metadata is not valid JSON, lacks a key of
            :data:`REQUIRED`, or records a row count other than the CSV's: results need
            provenance that matches them.
    """
    path = Path(path)
    if not path.is_file():
        return None
    meta_path = _meta_path(path)
    if not meta_path.is_file():
        raise ValueError(f"{path} has no provenance file {meta_path.name}; refusing to show it")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(
            f"provenance file {meta_path} is not valid JSON ({exc}); refusing to show {path.name}"
        ) from None
    if not isinstance(meta, dict):
        raise ValueError(f"provenance file {meta_path} must hold a JSON object, got {type(meta).__name__}")
    missing = [key for key in REQUIRED if key not in meta]
    if missing:
        raise ValueError(f"provenance file {meta_path} lacks {missing}; refusing to show {path.name}")
    table = pd.read_csv(path)
    if meta["rows"] != len(table):
        raise ValueError(
            f"{path} has {len(table)} rows but its provenance {meta_path.name} records {meta['rows']}; "
            "the table and its provenance do not belong together"
        )
    return StoredTable(table, meta, path)


def load_stored(name: str) -> StoredTable | None:
    """The stored paper-scale table ``name`` (``<stored_dir()>/<name>.csv``), or ``None``."""
    return load_table(stored_dir() / f"{name}.csv")


def _run_entry(meta: dict, cases: int, wall_time: float) -> dict:
    """One process's share of a case-by-case table (for ``runs`` in :func:`run_cases`)."""
    keys = ("git_commit", "git_dirty", "git_changes", "device", "hardware", "package_version", "versions")
    return {**{k: meta.get(k) for k in keys}, "cases": cases, "wall_time_s": wall_time}


def merge_case_tables(
    parts: Sequence[str | Path], out: str | Path, merge_checks: Callable[[dict, dict], None] | None = None
) -> Path:
    """Join the tables of processes that ran disjoint cases of one case-by-case run (:func:`run_cases`,
    e.g. two processes on two cores) into ``out``: the tables and ``cases_done`` in the order of
    ``parts``, every part's ``runs``, the parts' wall times summed (time spent, not elapsed) and
    their ``checks`` combined by ``merge_checks(into, other)`` (``None``: a run without checks).

    Raises:
        ValueError: a part is missing or was not written case by case, the parts differ in profile
            or configuration, or two parts hold the same case.
    """
    stored = []
    for part in parts:
        table = load_table(part)
        if table is None or table.cases() is None:
            raise ValueError(f"{part} is not a table written case by case")
        stored.append(table)
    own = ("cases_done", "cases_total", "checks", "runs")
    first = stored[0]
    config = {k: v for k, v in first.meta["config"].items() if k not in own}
    done, runs, wall = [], [], 0.0
    checks = dict(first.meta["config"].get("checks", {}))
    for i, table in enumerate(stored):
        cfg = table.meta["config"]
        if table.meta["profile"] != first.meta["profile"] or {k: v for k, v in cfg.items() if k not in own} != config:
            raise ValueError(f"{table.path} and {first.path} come from different profiles or configurations")
        cases = [tuple(c) for c in cfg["cases_done"]]
        if set(cases) & set(done):
            raise ValueError(f"{table.path} repeats cases of an earlier part: {sorted(set(cases) & set(done))}")
        done += cases
        runs += cfg.get("runs") or [_run_entry(table.meta, len(cases), table.meta["wall_time_s"] or 0.0)]
        wall += table.meta["wall_time_s"] or 0.0
        if i and merge_checks is not None:
            merge_checks(checks, cfg.get("checks", {}))
    return save_table(
        pd.concat([t.table for t in stored], ignore_index=True), out, profile=first.meta["profile"],
        device=first.meta["device"], wall_time=wall, **config, checks=checks,
        cases_done=[list(c) for c in done], cases_total=first.meta["config"]["cases_total"], runs=runs,
    )


def run_cases(
    out: str | Path,
    todo: Sequence[tuple],
    run_one: Callable[[tuple], tuple[pd.DataFrame, str]],
    *,
    profile: str,
    device: str,
    resume: bool,
    checks: dict | None = None,
    cases_total: int | None = None,
    limit: int | None = None,
    **config,
) -> None:
    """Run the cases ``todo`` one by one with ``run_one(case) -> (table, message)``, saving the
    concatenated tables of the cases finished so far at ``out`` with provenance after each
    (``config`` plus ``checks``, ``cases_done``, ``cases_total`` and ``runs``), so that a stopped
    run keeps what finished. With ``resume`` the cases an earlier run of the same ``profile``
    saved at ``out`` are kept and skipped, its wall time is carried on and its ``checks`` are
    loaded into ``checks`` (the dict ``run_one`` updates). ``runs`` lists every process that added
    cases (its commit, whether the checkout had changes, device, hardware, package versions, the
    number of cases and its wall time), since a table finished across sessions may mix commits.
    ``cases_total`` is the size of the whole run when ``todo`` is a part of it (default ``len(todo)``);
    ``limit`` stops after that many new cases (a process given a share of a run that several run)."""
    todo = [tuple(c) for c in todo]
    total = len(todo) if cases_total is None else cases_total
    checks = {} if checks is None else checks
    tables, done, wall0, runs = [], [], 0.0, []
    prior = load_table(out) if resume else None
    if prior is not None:
        if prior.meta["profile"] != profile:
            raise SystemExit(f"{out} holds profile {prior.meta['profile']!r}, not {profile!r}; cannot resume")
        tables.append(prior.table)
        done = [tuple(c) for c in prior.meta["config"]["cases_done"]]
        checks.update(prior.meta["config"].get("checks", {}))
        wall0 = prior.meta["wall_time_s"] or 0.0
        runs = prior.meta["config"].get("runs") or [_run_entry(prior.meta, len(done), wall0)]
        print(f"resuming: {len(done)} of {total} cases already in {out}", flush=True)
    remaining = [c for c in todo if c not in done][:limit]
    if remaining:
        checkout_state()  # the commit this run starts from (cached), recorded with every save
    t0 = time.perf_counter()
    for i, case in enumerate(remaining, 1):
        table, message = run_one(case)
        tables.append(table)
        done.append(case)
        this = _run_entry(provenance(profile, device), i, time.perf_counter() - t0)
        save_table(pd.concat(tables, ignore_index=True), out, profile=profile, device=device,
                   wall_time=wall0 + time.perf_counter() - t0, **config, checks=checks,
                   cases_done=[list(c) for c in done], cases_total=total, runs=[*runs, this])  # fmt: skip
        print(f"{message}; saved {out}: {len(done)} of {total} cases "
              f"({(time.perf_counter() - t0) / 60:.1f} min)", flush=True)  # fmt: skip


def add_share_arguments(ap) -> None:
    """``--skip``, ``--limit`` and ``--merge`` on a runner's argument parser: several processes
    sharing one case-by-case run (see :func:`run_or_merge`)."""
    ap.add_argument("--skip", type=int, default=0, metavar="N",
                    help="leave out the first N cases (a second process working on later ones)")
    ap.add_argument("--limit", type=int, default=None, metavar="K",
                    help="stop after K new cases (so that processes sharing a run do not overlap)")
    ap.add_argument("--merge", nargs="+", metavar="PART",
                    help="instead of running: join the tables of processes that ran disjoint cases into --out")


def run_or_merge(
    ap,
    args,
    out: str | Path,
    todo: Sequence[tuple],
    run_one: Callable[[tuple], tuple[pd.DataFrame, str]],
    merge_checks: Callable[[dict, dict], None] | None = None,
    **kwargs,
) -> None:
    """A runner's command line after :func:`add_share_arguments`: with ``--merge``, join the parts
    into ``out`` (:func:`merge_case_tables`); else :func:`run_cases` on ``todo`` from case
    ``--skip`` on, at most ``--limit`` new cases (``kwargs`` go to :func:`run_cases`). Bad values
    exit through ``ap.error``, a failed merge with one line."""
    if args.skip < 0:
        ap.error(f"--skip must be >= 0, got {args.skip}")
    if args.limit is not None and args.limit < 1:
        ap.error(f"--limit must be >= 1, got {args.limit}")
    if args.merge:
        try:
            print(f"merged into {merge_case_tables(args.merge, out, merge_checks)}")
        except ValueError as err:
            raise SystemExit(f"cannot merge: {err}") from None
        return
    kwargs.setdefault("cases_total", len(todo))
    run_cases(out, todo[args.skip :], run_one, limit=args.limit, **kwargs)
