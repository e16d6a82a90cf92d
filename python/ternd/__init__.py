"""ternd: train ternary (BitNet b1.58) models in PyTorch and export them to
the .tern files the ternd runtime serves.

    from ternd import BitLinear, export, read_tern
"""

__version__ = "0.1.0"

from .nn import AudioFeatures, BitConv1d, BitConv2d, BitLinear, Concat, ReLU2, Residual, RMSNorm  # noqa: E402
from .tern_format import TernFile, TernFormatError, parse_tern, read_tern  # noqa: E402
from .export import ExportError, export  # noqa: E402

__all__ = [
    "AudioFeatures", "BitLinear", "BitConv1d", "BitConv2d", "Concat", "RMSNorm", "ReLU2", "Residual", "export", "ExportError", "read_tern",
    "parse_tern", "TernFile", "TernFormatError",
]
