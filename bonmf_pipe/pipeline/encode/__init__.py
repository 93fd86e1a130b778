"""The encode stage: item texts and posters -> content-addressed Parquet feature shards, once.

``encode(store, EncodeSettings(...))`` writes ``features/<modality>/<encoder-key>/`` (see
``bonmf_pipe.featurestore.features`` for the layout); ``similar`` finds the nearest items
by a modality's vectors. The SQL views ``text_features``, ``image_features`` and
``features`` are declared with every other view in ``bonmf_pipe.featurestore.views``.
"""

from bonmf_pipe.pipeline.encode.keys import encoder_key
from bonmf_pipe.pipeline.encode.registry import (
    ModelSource,
    RegistryEntry,
    register_image_encoder,
    register_text_encoder,
    resolve_source,
)
from bonmf_pipe.pipeline.encode.run import EncodeSummary, EncoderEvent, ModalitySummary, encode
from bonmf_pipe.pipeline.encode.settings import PRESETS, EncodeSettings, parse_modalities, parse_shard
from bonmf_pipe.pipeline.encode.similar import similar

__all__ = [
    "PRESETS",
    "EncodeSettings",
    "EncodeSummary",
    "EncoderEvent",
    "ModalitySummary",
    "ModelSource",
    "RegistryEntry",
    "encode",
    "encoder_key",
    "parse_modalities",
    "parse_shard",
    "register_image_encoder",
    "register_text_encoder",
    "resolve_source",
    "similar",
]
