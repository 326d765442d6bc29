"""socicnn: second-order-cone input convex neural networks.

Models that are convex in their input by construction, their exact lifting to LP/SOCP value
functions, closed-form dual readout of slopes and curvature, and white-box inference.
"""

from . import families, inference, lifting, profiles, readout, results, solvers, subdifferential, targets, train
from .backbone import Backbone
from .model import SOCICNN, ReLUICNN
from .norm import NormBlock
from .quadratic import QuadraticBlock
from .weights import SOCICNNWeights

__version__ = "0.1.0"

__all__ = [
    "SOCICNN",
    "ReLUICNN",
    "SOCICNNWeights",
    "Backbone",
    "QuadraticBlock",
    "NormBlock",
    "families",
    "inference",
    "lifting",
    "readout",
    "profiles",
    "results",
    "solvers",
    "subdifferential",
    "targets",
    "train",
    "__version__",
]
