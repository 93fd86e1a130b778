"""The main job: the whole pipeline on an embedded default, or on a real MovieLens folder.

synthetic sample (or ``path``) -> ingest -> encode with the offline models -> an ablation:
svd, nmf and BoNMF trained and evaluated on the same splits for a few seeds -> one results
table with means, standard deviations and paired intervals. Every stage is idempotent:
re-running re-uses the sample, re-ingests the same tables, encodes nothing new and adds a
fresh comparison.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from bonmf_pipe.errors import ConfigError
from bonmf_pipe.featurestore import Store
from bonmf_pipe.pipeline.ablate import AblateSettings, ablate
from bonmf_pipe.pipeline.encode import EncodeSettings, encode
from bonmf_pipe.pipeline import ingest as ingest_stage  # its ``ingest`` (and polars) load when called
from bonmf_pipe.pipeline.ingest import IngestSettings
from bonmf_pipe.pipeline.sample import SampleSettings, write_sample
from bonmf_pipe.progress import ProgressCallback, Reporter
from bonmf_pipe.runtime import world
from bonmf_pipe.trainer import TrainSettings


@dataclass(frozen=True)
class DemoSettings:
    """Settings of ``bonmf-pipe demo`` (each stage's own settings are recorded by that stage)."""

    out: Path = Path("bonmf-demo")
    """Folder for the synthetic sample (``out/sample``) and the store (``out/store``)."""
    path: Path | None = None
    """A real MovieLens folder to run on instead of the synthetic sample."""
    posters: Path | None = None
    """Poster folder for ``path`` (the synthetic sample brings its own)."""
    store: Path | None = None
    """Store folder; None = ``out/store``."""
    users: int = SampleSettings.users
    """Synthetic sample: users."""
    items: int = SampleSettings.items
    """Synthetic sample: movies (each with a poster)."""
    ratings: int = SampleSettings.ratings
    """Synthetic sample: ratings."""
    seed: int = SampleSettings.seed
    """Seeds the sample; the ablation's seeds are this one and the next ``seeds - 1``."""
    seeds: int = 3
    """Seeds (each with its own split) of the ablation: means, standard deviations and paired
    intervals over them say which differences are larger than the noise."""
    device: str = TrainSettings.device
    """auto (cuda when present), cpu or cuda: for encoding and training."""
    features: tuple[str, ...] = ("text+image",)
    """BoNMF variants compared with the svd and nmf baselines; add none/text/image for a full ablation."""


@dataclass
class DemoResult:
    store: Path
    source: Path
    ingest: object
    encode: object
    ablation: object
    seconds: float
    stage_seconds: dict[str, float] = field(default_factory=dict)


def run_demo(settings: DemoSettings, progress: ProgressCallback | None = None) -> DemoResult:
    """sample (or ``path``) -> ingest -> encode -> ablation over ``seeds`` seeds; the stages' times."""
    if world().size > 1:
        raise ConfigError(
            "demo runs in one process: start it without torchrun (train and encode are the commands "
            "that use several processes)."
        )
    report = Reporter(progress)
    t0 = time.perf_counter()
    stage_seconds: dict[str, float] = {}

    def timed(name, fn):
        report.note(f"[{name}]")
        start = time.perf_counter()
        out = fn()
        stage_seconds[name] = round(time.perf_counter() - start, 2)
        return out

    source, posters = settings.path, settings.posters
    if source is None:
        source = settings.out / "sample"
        posters = source / "posters"
        timed("sample", lambda: _sample(settings, source, progress))
    store = Store.open(settings.store or settings.out / "store", create=True)
    ingested = timed("ingest", lambda: ingest_stage.ingest(store, IngestSettings(path=source, posters=posters), progress))
    modalities = ("text", "image") if ingested.posters_matched else ("text",)
    encoded = timed(
        "encode",
        lambda: encode(store, EncodeSettings(modalities=modalities, device=settings.device), progress),
    )
    features = tuple(f for f in settings.features if modalities == ("text", "image") or "image" not in f)
    base = TrainSettings(seed=settings.seed, device=settings.device)
    ablation_settings = AblateSettings(train=base, features=features or ("text",), seeds=settings.seeds, name="demo")
    ablation = timed("train+evaluate", lambda: ablate(store, ablation_settings, progress))
    return DemoResult(
        store=store.root,
        source=source,
        ingest=ingested,
        encode=encoded,
        ablation=ablation,
        seconds=round(time.perf_counter() - t0, 2),
        stage_seconds=stage_seconds,
    )


def _sample(settings: DemoSettings, out: Path, progress: ProgressCallback | None):
    sample = SampleSettings(out=out, users=settings.users, items=settings.items, ratings=settings.ratings, seed=settings.seed)
    return write_sample(sample, progress)
