"""bonmf-pipe: an offline feature-store pipeline and trainer for BoNMF (arXiv 2407.08942)."""

import os

# Arrow's C++ code (dataset scans, Parquet reads and writes) allocates from the pool this names,
# read once, when Arrow first allocates: the C library's malloc unless the user chose one
# (``runtime.use_system_allocator`` says why). Set before anything of this package imports pyarrow.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")

from bonmf_pipe.errors import BonmfError  # noqa: E402

__version__ = "0.1.0"
__all__ = ["BonmfError", "__version__"]
