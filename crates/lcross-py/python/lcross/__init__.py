"""lcross: cross-model steering of language models (L-Cross Modulation), from Python.

Extract a steering vector from one model, fit a linear map between the hidden spaces of
two models on a shared corpus, and steer the other model with ``beta * (sv @ T)``. The
work is done by the same Rust crates as the ``lcross`` CLI; files (vectors, maps) are the
CLI's. See docs/PYTHON.md for the reference and examples/quickstart.py for a tour.
"""

from ._lcross import (
    DEFAULT_MODEL,
    BadValueError,
    DataError,
    EvaluationError,
    LcrossError,
    LinearMap,
    MissingDataError,
    Model,
    ModelError,
    NonFiniteError,
    NotCalibratedError,
    ShapeError,
    Steer,
    SteeringBlock,
    SteeringVector,
    WrongModelError,
    __version__,
    align,
    calibrate,
    eval_ab,
    evaluate,
    extract,
    fit_map,
    similarity,
    transfer,
)

__all__ = [
    "DEFAULT_MODEL",
    "BadValueError",
    "DataError",
    "EvaluationError",
    "LcrossError",
    "LinearMap",
    "MissingDataError",
    "Model",
    "ModelError",
    "NonFiniteError",
    "NotCalibratedError",
    "ShapeError",
    "Steer",
    "SteeringBlock",
    "SteeringVector",
    "WrongModelError",
    "__version__",
    "align",
    "calibrate",
    "eval_ab",
    "evaluate",
    "extract",
    "fit_map",
    "similarity",
    "transfer",
]
