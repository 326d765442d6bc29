"""socicnn: second-order-cone input convex neural networks.

Models that are convex in their input by construction, their exact lifting to LP/SOCP value
functions, closed-form dual readout of slopes and curvature, and white-box inference.
"""

from . import (
    blocks,
    energy,
    families,
    inference,
    lifting,
    profiles,
    readout,
    recurrent,
    results,
    solvers,
    subdifferential,
    targets,
    train,
)
from .backbone import Backbone, ReLUBackbone, SoftplusBackbone
from .blocks import ConvexBlock
from .model import SOCICNN, BlockModel, BoundModel, ContextualModel, ReLUICNN
from .norm import NormBlock
from .quadratic import QuadraticBlock
from .recurrent import RecurrentSOCICNN
from .weights import SOCICNNWeights

__version__ = "0.1.0"

__all__ = [
    "SOCICNN",
    "ReLUICNN",
    "SOCICNNWeights",
    "BlockModel",
    "BoundModel",
    "ContextualModel",
    "ConvexBlock",
    "Backbone",
    "ReLUBackbone",
    "SoftplusBackbone",
    "QuadraticBlock",
    "NormBlock",
    "RecurrentSOCICNN",
    "blocks",
    "energy",
    "families",
    "inference",
    "lifting",
    "readout",
    "recurrent",
    "profiles",
    "results",
    "solvers",
    "subdifferential",
    "targets",
    "train",
    "__version__",
]
