"""Execute the book's chapters in parallel into the build's execution cache.

``scripts/build_book.sh`` runs this before ``jupyter-book build``. It clears the build's
jupyter-cache (``_build/.jupyter_cache``), reads every notebook chapter of ``_toc.yml`` the way
the build reads it (myst-nb's MyST reader), executes it with its own kernel in the chapter's
folder, ``--jobs`` chapters at a time (each kernel with one intra-op thread when more than one
runs), and stores the executed notebooks in the cache. The build (``execute_notebooks: cache``
in ``_config.yml``) then renders those outputs; a chapter it does not find there it executes
itself. A chapter with a failing cell is reported with its traceback and the exit status is 1.

    python scripts/execute_chapters.py [--jobs N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "_build" / ".jupyter_cache"
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def notebook_chapters() -> list[Path]:
    """The chapters of ``_toc.yml``, in its order, that the build treats as notebooks."""
    from myst_nb.core.read import is_myst_markdown_notebook

    from socicnn.cli import toc_chapters

    paths = [ROOT / f"{name}.md" for name in toc_chapters(ROOT)]
    return [p for p in paths if is_myst_markdown_notebook(p.read_text(encoding="utf8"))]


def execute(path: str, timeout: int):
    """Execute one chapter; return ``(notebook, seconds, traceback or None)``."""
    from jupyter_cache.executors.utils import single_nb_execution
    from myst_nb.core.read import myst_nb_reader_plugin

    notebook = myst_nb_reader_plugin(path)
    result = single_nb_execution(notebook, cwd=str(Path(path).parent), timeout=timeout, allow_errors=False)
    return result.nb, result.time, result.exc_string if result.err is not None else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="chapters executed at the same time (default: the number of CPU cores)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")

    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    timeout = int(config.get("execute", {}).get("timeout", 1800))
    shutil.rmtree(CACHE, ignore_errors=True)
    cache = get_cache(str(CACHE))
    chapters = notebook_chapters()
    if args.jobs > 1:  # the kernels inherit the environment: one thread each, no oversubscription
        for var in THREAD_VARIABLES:
            os.environ[var] = "1"
    print(f"[book] executing {len(chapters)} chapters, {args.jobs} at a time", flush=True)
    start, failed = time.perf_counter(), []
    with ProcessPoolExecutor(args.jobs) as pool:
        futures = {pool.submit(execute, str(p), timeout): p for p in chapters}  # in _toc.yml order
        for future in as_completed(futures):
            path = futures[future]
            name = path.relative_to(ROOT)
            try:
                notebook, seconds, error = future.result()
            except Exception as exc:  # the kernel died or could not start: no cell traceback
                notebook, seconds, error = None, 0.0, f"{type(exc).__name__}: {exc}"
            if error is not None:
                failed.append(name)
                print(f"[book] {name} FAILED after {seconds:.1f} s:\n{error}", file=sys.stderr, flush=True)
                continue
            cache.cache_notebook_bundle(
                CacheBundleIn(notebook, str(path), data={"execution_seconds": seconds}),
                check_validity=False, overwrite=True,
            )
            print(f"[book] {name} executed in {seconds:.1f} s", flush=True)
    print(f"[book] {len(chapters) - len(failed)} of {len(chapters)} chapters executed in "
          f"{time.perf_counter() - start:.0f} s", flush=True)
    if failed:
        print(f"[book] failing chapters: {', '.join(map(str, failed))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
