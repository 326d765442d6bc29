"""Choosing the conic solver behind the lifting: MOSEK when licensed, Clarabel otherwise."""

from __future__ import annotations

import functools
import warnings

import cvxpy as cp

__all__ = ["CLARABEL_RETRY_SETTINGS", "SolverUnavailableError", "available_solvers", "mosek_status", "resolve_solver",
           "solve_with_retries"]


class SolverUnavailableError(RuntimeError):
    """The requested conic solver is not installed or not licensed here."""


@functools.lru_cache(maxsize=1)
def mosek_status() -> tuple[bool, str]:
    """``(usable, reason)``: whether MOSEK is installed, visible to CVXPY and licensed."""
    try:
        import mosek
    except ImportError:
        return False, ("MOSEK is not installed: pip install mosek "
                       "(or the mosek extra, pip install -e '.[mosek]' in a checkout)")
    if "MOSEK" not in cp.installed_solvers():
        return False, "MOSEK is installed but CVXPY does not see it; reinstall mosek and cvxpy"
    try:
        with mosek.Env() as env:
            env.checkoutlicense(mosek.feature.pts)
    except Exception as exc:  # mosek raises its own Error type for licence problems
        return False, (
            f"MOSEK has no valid licence ({exc}). Put mosek.lic in ~/mosek/ or point "
            "MOSEKLM_LICENSE_FILE at it (academic licences are free at mosek.com)"
        )
    return True, "MOSEK is installed and licensed"


def available_solvers() -> list[str]:
    """Conic solvers usable for the lifting here, preferred first."""
    names = [s for s in ("MOSEK", "CLARABEL", "SCS", "ECOS") if s in cp.installed_solvers()]
    if "MOSEK" in names and not mosek_status()[0]:
        names.remove("MOSEK")
    return names


def resolve_solver(solver: str) -> str:
    """Map ``"auto"`` / a solver name (any case) to a usable CVXPY solver name.

    Raises:
        ValueError: unknown solver name.
        SolverUnavailableError: a known solver that is not installed or not licensed.
    """
    if not isinstance(solver, str):
        raise TypeError(f"solver must be a string, got {type(solver).__name__}")
    name = solver.upper()
    if name == "AUTO":
        return "MOSEK" if mosek_status()[0] else "CLARABEL"
    known = {"MOSEK", "CLARABEL", "SCS", "ECOS"}
    if name not in known:
        raise ValueError(f"unknown solver {solver!r}; choose 'auto' or one of {sorted(known)}")
    if name == "MOSEK":
        ok, why = mosek_status()
        if not ok:
            raise SolverUnavailableError(why)
    elif name not in cp.installed_solvers():
        raise SolverUnavailableError(f"solver {name} is not installed (pip install {name.lower()})")
    return name


# Clarabel settings tried in turn when a solve ends without an ``optimal`` status (interior-point
# methods can stall near a cone's apex or an exponential cone's boundary, and whether they do
# depends on the machine's rounding): a stronger static regularisation, then no equilibration.
CLARABEL_RETRY_SETTINGS = ({"static_regularization_constant": 1e-7}, {"equilibrate_enable": False})


def solve_with_retries(problem: cp.Problem, solver: str, **solver_options) -> str:
    """``problem.solve(solver=solver, **solver_options)``; with Clarabel, a solve whose status is
    not ``optimal`` is repeated with each of ``CLARABEL_RETRY_SETTINGS`` added until one is.
    Returns the final status (the caller decides what it accepts: CVXPY's warning that a solution
    may be inaccurate is not raised, since the status says so)."""
    retries = CLARABEL_RETRY_SETTINGS if solver == cp.CLARABEL else ()
    for extra in ({}, *retries):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Solution may be inaccurate", UserWarning)
            problem.solve(solver=solver, **{**solver_options, **extra})
        if problem.status == cp.OPTIMAL:
            break
    return problem.status

