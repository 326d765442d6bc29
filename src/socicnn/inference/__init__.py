"""White-box inference: ``argmin_x f(x) + (beta/2)||x - y||^2`` [``x in C``].

``minimize`` minimises a model over a compact set with a certified gap (no proximal term).
``prox`` solves a batch of queries with readout-based first- and second-order methods (the
``"newton"`` method steps onto the optimal face when the optimum sits on ReLU kinks), autograd
and L-BFGS baselines, or the exact lifted SOCP. Constraint sets: :class:`Box`, :class:`Simplex`,
:class:`Budget` (exact projections: :func:`project_box`, :func:`project_simplex`,
:func:`project_budget`) or a CVXPY callable.
"""

from .constraints import Box, Budget, Constraint, CvxpyConstraint, Simplex
from .descent import objective
from .minimize import MinimizeResult, certified_lower_bound, minimize
from .newton import certified_gap_bound, certified_subgradient_norm
from .projections import project_box, project_budget, project_simplex
from .prox import METHODS, ProxResult, prox
from .socp import InfeasibleConstraintError, ProxSOCP, SOCPSolution

__all__ = [
    "METHODS",
    "MinimizeResult",
    "Box",
    "Budget",
    "Constraint",
    "CvxpyConstraint",
    "InfeasibleConstraintError",
    "ProxResult",
    "ProxSOCP",
    "SOCPSolution",
    "Simplex",
    "certified_gap_bound",
    "certified_lower_bound",
    "certified_subgradient_norm",
    "minimize",
    "objective",
    "project_box",
    "project_budget",
    "project_simplex",
    "prox",
]
