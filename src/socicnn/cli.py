"""The ``socicnn`` command: list, run and reproduce the book's chapters, compare result tables.

::

    socicnn list [--book DIR]
    socicnn run CHAPTER... [--profile P] [--device D] [--seed S] [--out DIR] [--book DIR]
    socicnn reproduce [--profile paper] [--device D] [--out DIR] [--book DIR]
    socicnn compare RUN_DIR [--stored DIR] [--rtol R] [--atol A]

Chapters are executed with papermill (through jupytext) with their ``PROFILE``, ``DEVICE`` and
``SEED`` parameters; the executed notebooks go to ``OUT/notebooks/`` and the result tables the
chapters record (with provenance) to ``OUT/`` (``SOCICNN_OUT`` is set for them). ``reproduce``
runs every chapter of ``_toc.yml`` and skips those already finished in ``OUT`` at the same
profile, so an interrupted run resumes. Bad arguments print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import re
import sys
import tempfile
import time
from pathlib import Path

from .profiles import DEVICES, PROFILES

__all__ = ["main"]

EXIT_USAGE = 2
#: Columns never compared: wall-clock measurements (and speed-ups computed from them) differ from run to run.
TIMING = re.compile(r"(^|[_ ])(time|ms|seconds|s|speedup)([_ ]|$)|^time")


class UsageError(Exception):
    """A bad argument: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump
        raise UsageError(message)


# --------------------------------------------------------------------------- the book
def find_book(book: str | None) -> Path:
    """The directory holding ``_toc.yml``: ``book``, else the cwd, else the source checkout."""
    from .results import checkout_root

    if book is not None:
        candidates = [Path(book)]
    else:
        candidates = [Path.cwd()] + ([checkout_root()] if checkout_root() is not None else [])
    for cand in candidates:
        if (cand / "_toc.yml").is_file():
            return cand.resolve()
    where = " or ".join(str(c) for c in candidates)
    raise UsageError(f"no _toc.yml in {where}: run from a socicnn checkout or pass --book DIR")


def toc_chapters(book: Path) -> list[str]:
    """Chapter paths (``book/NAME``) in ``_toc.yml`` order."""
    return re.findall(r"(?:file|root):\s*([^\s#]+)", (book / "_toc.yml").read_text(encoding="utf-8"))


def _code(chapter_md: Path) -> str:
    text = chapter_md.read_text(encoding="utf-8")
    # A cell's options are ":key: value" lines or a YAML block between "---" lines.
    header = r"(?:(?::[a-z_-]+:[^\n]*\n)+|---\n.*?\n---\n)?"
    return "\n".join(re.findall(r"```\{code-cell\}[^\n]*\n" + header + r"(.*?)```", text, re.S))


def _pick_kind(node: ast.Call) -> int:
    """0 for a ``pick`` of size dicts, 1 for one of descriptions (strings), 2 otherwise."""
    values = [kw.value for kw in node.keywords if kw.arg in PROFILES]
    if values and all(isinstance(v, ast.Dict) or (isinstance(v, ast.Call) and isinstance(v.func, ast.Name)
                                                  and v.func.id == "dict") for v in values):
        return 0
    if values and all(isinstance(v, ast.Constant) and isinstance(v.value, str) for v in values):
        return 1
    return 2


def profile_sizes(chapter_md: Path) -> dict[str, str]:
    """A chapter's ``ctx.pick(smoke=..., book=..., paper=...)`` that says what each profile runs, as
    source text: the first in the source whose values are dicts of sizes, else the first whose
    values are descriptions, else the first."""
    try:
        tree = ast.parse(_code(chapter_md))
    except SyntaxError:
        return {}
    picks = [n for n in ast.walk(tree)
             if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "pick"]
    if not picks:
        return {}
    best = min(picks, key=lambda n: (_pick_kind(n), n.lineno, n.col_offset))
    return {kw.arg: ast.unparse(kw.value) for kw in best.keywords if kw.arg in PROFILES}


def resolve_chapters(book: Path, names: list[str]) -> list[str]:
    known = toc_chapters(book)
    by_stem = {Path(c).name: c for c in known}
    out = []
    for name in names:
        stem = Path(name).with_suffix("").name if name.endswith(".md") else Path(name).name
        if stem not in by_stem:
            raise UsageError(f"unknown chapter {name!r}; choose from {', '.join(by_stem)}")
        out.append(by_stem[stem])
    return out


# --------------------------------------------------------------------------- commands
def cmd_list(args) -> int:
    book = find_book(args.book)
    for chapter in toc_chapters(book):
        sizes = profile_sizes(book / f"{chapter}.md")
        print(Path(chapter).name)
        for profile in PROFILES:
            if profile in sizes:
                print(f"    {profile:5s} {sizes[profile]}")
    return 0


def _check_run_args(args) -> None:
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UsageError("--device cuda but no CUDA device is available; use auto or cpu")
    try:
        import jupytext  # noqa: F401
        import papermill  # noqa: F401
    except ImportError as exc:
        raise UsageError(f"running chapters needs the book extra ({exc.name} is missing): "
                         "pip install -e '.[book]' in a checkout") from None


def _marker(out: Path, chapter: str) -> Path:
    return out / "done" / f"{Path(chapter).name}.json"


def _finished(out: Path, chapter: str, profile: str) -> bool:
    marker = _marker(out, chapter)
    try:
        return json.loads(marker.read_text())["profile"] == profile
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _execute(book: Path, chapter: str, args, out: Path, step: str) -> bool:
    import jupytext
    import papermill

    md = book / f"{chapter}.md"
    name = Path(chapter).name
    nb_out = out / "notebooks" / f"{name}.ipynb"
    nb_out.parent.mkdir(parents=True, exist_ok=True)
    print(f"{step} {name}: profile={args.profile} device={args.device} seed={args.seed}", flush=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / f"{name}.ipynb"
        nb = jupytext.read(md)
        jupytext.write(nb, src, fmt="ipynb")
        has_parameters = any("parameters" in c.get("metadata", {}).get("tags", []) for c in nb.cells)
        parameters = {"PROFILE": args.profile, "DEVICE": args.device, "SEED": args.seed} if has_parameters else {}
        try:
            papermill.execute_notebook(
                str(src), str(nb_out), parameters=parameters, kernel_name="python3", cwd=str(md.parent),
                progress_bar=True,
            )
        except papermill.PapermillExecutionError as exc:
            print(f"{step} {name} FAILED in cell {exc.exec_count}: {exc.ename}: {exc.evalue} (see {nb_out})")
            return False
    wall = time.perf_counter() - t0
    marker = _marker(out, chapter)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"profile": args.profile, "device": args.device, "seed": args.seed,
                                  "wall_time_s": wall}) + "\n")
    print(f"{step} {name}: done in {wall:.0f} s -> {nb_out}", flush=True)
    return True


def _run_chapters(book: Path, chapters: list[str], args, *, resume: bool) -> int:
    _check_run_args(args)
    out = Path(args.out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ["SOCICNN_OUT"] = str(out)  # the kernels inherit it: chapters record tables here
    failed = []
    for k, chapter in enumerate(chapters, 1):
        step = f"[{k}/{len(chapters)}]"
        if resume and _finished(out, chapter, args.profile):
            print(f"{step} {Path(chapter).name}: finished earlier at profile={args.profile}, skipped")
            continue
        if not _execute(book, chapter, args, out, step):
            failed.append(Path(chapter).name)
    print(f"results and notebooks in {out}")
    if failed:
        print(f"{len(failed)} chapter(s) failed: {', '.join(failed)}")
        return 1
    return 0


def cmd_run(args) -> int:
    book = find_book(args.book)
    return _run_chapters(book, resolve_chapters(book, args.chapters), args, resume=False)


def cmd_reproduce(args) -> int:
    book = find_book(args.book)
    return _run_chapters(book, toc_chapters(book), args, resume=True)


def compare_tables(run, stored, rtol: float, atol: float) -> list[str]:
    """Differences between two tables: shape, columns, non-numeric cells exactly, numeric cells
    (timing columns excepted) by ``|run - stored| <= atol + rtol |stored|`` (NaN matches NaN)."""
    import numpy as np
    import pandas as pd

    a, b = run.table, stored.table
    if list(a.columns) != list(b.columns):
        return [f"columns differ: {sorted(set(a.columns) ^ set(b.columns))}"]
    if len(a) != len(b):
        return [f"{len(a)} rows in the run, {len(b)} stored"]
    problems = []
    for col in a.columns:
        if TIMING.search(col):
            continue
        x, y = a[col], b[col]
        if pd.api.types.is_numeric_dtype(x) and pd.api.types.is_numeric_dtype(y) and not pd.api.types.is_bool_dtype(x):
            x, y = x.to_numpy(float), y.to_numpy(float)
            both_nan = np.isnan(x) & np.isnan(y)
            diff = np.where(both_nan, 0.0, np.abs(x - y))
            bad = ~(diff <= atol + rtol * np.abs(y))
            if bad.any():
                i = int(np.argmax(np.where(bad, diff, -1.0)))
                problems.append(f"{col}: {int(bad.sum())} of {len(x)} values drift beyond rtol={rtol:g}, atol={atol:g} "
                                f"(row {i}: run {x[i]:.6g} vs stored {y[i]:.6g})")
        elif not (x.astype(str).to_numpy() == y.astype(str).to_numpy()).all():
            problems.append(f"{col}: {int((x.astype(str) != y.astype(str)).sum())} values differ")
    return problems


def cmd_compare(args) -> int:
    from .results import load_table, stored_dir

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"run directory {run_dir} does not exist")
    if not (math.isfinite(args.rtol) and math.isfinite(args.atol)) or args.rtol < 0 or args.atol < 0:
        raise UsageError("--rtol and --atol must be finite and nonnegative")
    stored_root = Path(args.stored) if args.stored else stored_dir()
    compared, drifted = 0, 0
    for path in sorted(run_dir.glob("*.csv")):
        try:
            run = load_table(path)
            stored = load_table(stored_root / path.name)
        except ValueError as exc:
            print(f"{path.name}: ERROR {exc}")
            drifted += 1
            continue
        if stored is None:
            print(f"{path.name}: no stored table to compare with")
            continue
        if run.meta["profile"] != stored.meta["profile"]:
            print(f"{path.name}: not comparable (run at profile={run.meta['profile']}, "
                  f"stored at profile={stored.meta['profile']})")
            continue
        compared += 1
        problems = compare_tables(run, stored, args.rtol, args.atol)
        if problems:
            drifted += 1
            print(f"{path.name}: DRIFT")
            for p in problems:
                print(f"    {p}")
        else:
            print(f"{path.name}: matches the stored table ({len(run.table)} rows)")
    if drifted:
        print(f"{drifted} table(s) drift from or cannot be compared with {stored_root}")
        return 1
    if compared == 0:
        print(f"nothing compared: no table in {run_dir} has a stored counterpart at the same profile in {stored_root}")
        return 1
    print(f"{compared} table(s) match {stored_root}")
    return 0


# --------------------------------------------------------------------------- entry point
def _parser() -> _Parser:
    p = _Parser(prog="socicnn", description="Run the socicnn book's chapters and compare their result tables.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    book_help = "directory holding _toc.yml (default: the working directory, else the source checkout)"

    ls = sub.add_parser("list", help="chapters of _toc.yml with their sizes per profile")
    ls.add_argument("--book", help=book_help)
    ls.set_defaults(func=cmd_list)

    def run_options(sp, profile: str):
        sp.add_argument("--profile", default=profile, choices=PROFILES)
        sp.add_argument("--device", default="auto", choices=DEVICES)
        sp.add_argument("--seed", type=int, default=0)
        sp.add_argument("--out", default="results-local", help="output directory (default: ./results-local)")
        sp.add_argument("--book", help=book_help)

    run = sub.add_parser("run", help="execute chapters (papermill) into --out")
    run.add_argument("chapters", nargs="+", metavar="CHAPTER")
    run_options(run, "book")
    run.set_defaults(func=cmd_run)

    rep = sub.add_parser("reproduce", help="execute every chapter, skipping those already finished in --out")
    run_options(rep, "paper")
    rep.set_defaults(func=cmd_reproduce)

    cmp = sub.add_parser("compare", help="compare a run's tables with the stored ones")
    cmp.add_argument("run_dir", metavar="RUN_DIR")
    cmp.add_argument("--stored", help="stored tables (default: socicnn.results.stored_dir())")
    cmp.add_argument("--rtol", type=float, default=1e-6, help="relative tolerance (default 1e-6)")
    cmp.add_argument("--atol", type=float, default=1e-9, help="absolute tolerance (default 1e-9)")
    cmp.set_defaults(func=cmd_compare)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``socicnn`` console script; returns the exit status."""
    try:
        args = _parser().parse_args(argv)
        return args.func(args)
    except UsageError as exc:
        print(f"socicnn: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
