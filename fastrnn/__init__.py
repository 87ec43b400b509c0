"""fastrnn: fast CPU kernels for recurrent neural networks."""
from . import _core
