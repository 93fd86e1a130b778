"""The synthetic generator: MovieLens-format datasets (with posters) driven by latent factors.

``writer`` streams a sample to disk; ``latent`` holds the factor model behind ratings, words
and posters; ``formats`` the editions' exact file formats; ``text`` and ``posters`` the
generated titles, tags and images.
"""

from bonmf_pipe.pipeline.sample.writer import (
    MANIFEST,
    SAMPLE_EDITIONS,
    SampleSettings,
    SampleSummary,
    catalogue,
    latent_model,
    write_sample,
)

__all__ = ["MANIFEST", "SAMPLE_EDITIONS", "SampleSettings", "SampleSummary", "catalogue", "latent_model", "write_sample"]
