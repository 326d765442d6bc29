"""socicnn: second-order-cone input convex neural networks.

Models that are convex in their input by construction, their exact lifting to LP/SOCP value
functions, closed-form dual readout of slopes and curvature, and white-box inference.
"""

from . import (
    blocks,
    decisions,
    energy,
    families,
    inference,
    lifting,
    parametric,
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
from .conv_model import ConvSOCICNN
from .model import SOCICNN, BlockModel, BoundModel, ContextualModel, ReLUICNN
from .norm import NormBlock
from .parametric import ParametricSOCICNN
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
    "ConvSOCICNN",
    "ParametricSOCICNN",
    "ConvexBlock",
    "Backbone",
    "ReLUBackbone",
    "SoftplusBackbone",
    "QuadraticBlock",
    "NormBlock",
    "RecurrentSOCICNN",
    "blocks",
    "decisions",
    "energy",
    "families",
    "inference",
    "lifting",
    "parametric",
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
