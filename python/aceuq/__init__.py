"""aceuq: uncertainty quantification for ACE interatomic potentials.

The numerics live in the compiled module ``aceuq._core``; this package wraps it for ASE
structures, datasets and the command line.
"""
from ._core import InputError
from .potential import EvaluationResult, Potential
from .calculator import ACECalculator

__all__ = ["Potential", "EvaluationResult", "ACECalculator", "InputError"]
__version__ = "0.1.0"
