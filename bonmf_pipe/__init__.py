"""bonmf-pipe: an offline feature-store pipeline and trainer for BoNMF (arXiv 2407.08942)."""

from bonmf_pipe.errors import BonmfError

__version__ = "0.1.0"
__all__ = ["BonmfError", "__version__"]
