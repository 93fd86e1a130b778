"""The bonmf-pipe command line: parses options and calls one library function per command.

Options that set a stage's settings take their defaults and help texts from that stage's
settings dataclass (``option(Settings, "field")``), so the CLI, the library, the demo, the
benchmarks and the tests run the same configuration unless told otherwise.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import functools
import inspect
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from bonmf_pipe import __version__
from bonmf_pipe.errors import BonmfError
from bonmf_pipe.evaluation import EvalSettings
from bonmf_pipe.pipeline.ablate import AblateSettings
from bonmf_pipe.pipeline.demo import DemoSettings
from bonmf_pipe.pipeline.encode import EncodeSettings
from bonmf_pipe.pipeline.features_import import ImportSettings
from bonmf_pipe.pipeline.ingest import IngestSettings
from bonmf_pipe.pipeline.sample import SampleSettings
from bonmf_pipe.pipeline.tune import TuneSettings
from bonmf_pipe.render import console, err_console, progress_renderer
from bonmf_pipe.trainer import TrainSettings

app = typer.Typer(
    name="bonmf-pipe",
    help="Multimodal BoNMF recommenders on MovieLens: ingest, encode text and posters once "
    "into a Parquet feature store, train, evaluate, and query it all with SQL.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
)


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a settings dataclass, by field name."""
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    docs = {}
    for node, after in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def option(cls: type, name: str, *flags: str, **kwargs: Any) -> Any:
    """A typer option documented by the docstring of field ``name`` of settings class ``cls``."""
    kwargs.setdefault("help", field_docs(cls)[name].replace("[", "\\["))
    return typer.Option(*flags, **kwargs)


def default(cls: type, name: str) -> Any:
    """The default of a settings field (for fields whose default is built by a factory)."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]


StoreOpt = Annotated[
    Path,
    typer.Option("--store", envvar="BONMF_STORE", help="Store folder (env BONMF_STORE).", show_default=True),
]
DEFAULT_STORE = Path("bonmf-store")
NoWait = Annotated[
    bool, typer.Option("--no-wait", help="Fail at once when another process is writing the store, instead of waiting.")
]
Device = Annotated[str, option(TrainSettings, "device")]
Threads = Annotated[int | None, option(TrainSettings, "threads")]


@contextlib.contextmanager
def library_call() -> Iterator[None]:
    """Print a BonmfError in red and exit 1; anything unexpected exits 3 with a hint."""
    try:
        yield
    except BonmfError as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/yellow]: the store keeps what was committed; re-run to resume.")
        raise typer.Exit(130) from None
    except (typer.Exit, typer.Abort):
        raise
    except Exception:
        err_console.print_exception(max_frames=8)
        err_console.print(
            "[red]internal error[/red]: this is a bug in bonmf-pipe. Please report it with the "
            "traceback above and the command you ran."
        )
        raise typer.Exit(3) from None


def version_callback(value: bool) -> None:
    if value:
        console.print(f"bonmf-pipe {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=version_callback, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    pass


def given(ctx: typer.Context, cls: type) -> frozenset[str]:
    """The fields of settings class ``cls`` whose options were typed on the command line."""
    fields = {f.name for f in dataclasses.fields(cls)}
    sources = {n: ctx.get_parameter_source(n) for n in ctx.params if n in fields}
    return frozenset(n for n, source in sources.items() if source is not None and source.name == "COMMANDLINE")


# --- store: info, sql, verify, vacuum ------------------------------------------------------


@app.command()
def info(store: StoreOpt = DEFAULT_STORE) -> None:
    """Show the store's tables, row counts, shards, bytes and schema version."""
    from bonmf_pipe.featurestore import Store
    from bonmf_pipe.featurestore.info import store_info
    from bonmf_pipe.render import render_info

    with library_call():
        render_info(store_info(Store.open(store)))


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="A read-only SQL query over the store's views.")],
    format: Annotated[str, typer.Option("--format", "-f", help="table, csv, json or parquet.")] = "table",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the result to this file (outside the store).")] = None,
    store: StoreOpt = DEFAULT_STORE,
) -> None:
    """Run DuckDB SQL over the store, read-only. Views: items, users, ratings, rejects, runs, ..."""
    from bonmf_pipe.featurestore import Store
    from bonmf_pipe.featurestore.sql import query as run_query
    from bonmf_pipe.render import render_query_result

    with library_call():
        render_query_result(run_query(Store.open(store), query, output=output), format, output)


@app.command()
def verify(store: StoreOpt = DEFAULT_STORE) -> None:
    """Check every shard against its manifest, and that tables agree with each other."""
    from bonmf_pipe.featurestore import Store
    from bonmf_pipe.featurestore.verify import verify_store
    from bonmf_pipe.render import render_verify

    with library_call():
        report = verify_store(Store.open(store))
        render_verify(report)
        if not report.ok:
            raise typer.Exit(1)


@app.command()
def vacuum(
    keep: Annotated[int, typer.Option(help="Snapshots to keep (the newest ones; at least the current).")] = 1,
    no_wait: NoWait = False,
    store: StoreOpt = DEFAULT_STORE,
) -> None:
    """Delete old snapshots and the table generations no kept snapshot (or open reader) uses."""
    from bonmf_pipe.featurestore import Store
    from bonmf_pipe.featurestore.vacuum import vacuum as run_vacuum
    from bonmf_pipe.render import render_vacuum

    with library_call():
        with progress_renderer() as progress:
            report = run_vacuum(Store.open(store).root, keep=keep, no_wait=no_wait, progress=progress)
        render_vacuum(report)


# --- pipeline: sample, fetch, ingest ------------------------------------------------------


@app.command()
def sample(
    out: Annotated[Path, option(SampleSettings, "out", "--out")] = SampleSettings.out,
    users: Annotated[int, option(SampleSettings, "users")] = SampleSettings.users,
    items: Annotated[int, option(SampleSettings, "items")] = SampleSettings.items,
    ratings: Annotated[int, option(SampleSettings, "ratings")] = SampleSettings.ratings,
    seed: Annotated[int, option(SampleSettings, "seed")] = SampleSettings.seed,
    edition: Annotated[str, option(SampleSettings, "edition")] = SampleSettings.edition,
    posters: Annotated[bool, option(SampleSettings, "posters")] = SampleSettings.posters,
    factors: Annotated[int, option(SampleSettings, "factors")] = SampleSettings.factors,
) -> None:
    """Write a synthetic dataset in a MovieLens edition's exact format, with posters."""
    from bonmf_pipe.pipeline.sample import write_sample
    from bonmf_pipe.render import render_sample_summary

    with library_call():
        settings = SampleSettings(
            out=out, users=users, items=items, ratings=ratings, seed=seed, edition=edition, posters=posters,
            factors=factors,
        )
        with progress_renderer() as progress:
            summary = write_sample(settings, progress)
        render_sample_summary(summary)


@app.command()
def fetch(
    edition: Annotated[str, typer.Argument(help="ml-100k, ml-1m, ml-10m, ml-20m, ml-25m, ml-32m or ml-latest-small.")],
    to: Annotated[Path, typer.Option("--to", help="Folder that receives the unpacked edition.")] = Path("data"),
    base_url: Annotated[
        str, typer.Option(help="Where <edition>.zip and its .md5 live.")
    ] = "https://files.grouplens.org/datasets/movielens/",
    timeout: Annotated[float, typer.Option(help="Seconds a read may stall before the download fails.")] = 30.0,
) -> None:
    """Download a MovieLens edition from GroupLens, check its MD5, unpack it (research use only)."""
    from bonmf_pipe.pipeline.fetch import FetchSettings
    from bonmf_pipe.pipeline.fetch import fetch as fetch_edition
    from bonmf_pipe.render import render_fetched

    with library_call():
        with progress_renderer() as progress:
            folder = fetch_edition(FetchSettings(edition=edition, to=to, base_url=base_url, timeout=timeout), progress)
        render_fetched(folder)


@app.command()
def ingest(
    path: Annotated[Path, option(IngestSettings, "path", "--path")],
    dataset: Annotated[str, option(IngestSettings, "dataset")] = IngestSettings.dataset,
    posters: Annotated[Path | None, option(IngestSettings, "posters", "--posters")] = IngestSettings.posters,
    text_template: Annotated[str, option(IngestSettings, "text_template")] = IngestSettings.text_template,
    max_tags: Annotated[int, option(IngestSettings, "max_tags")] = IngestSettings.max_tags,
    memory_limit: Annotated[
        str, option(IngestSettings, "duckdb_memory_limit", "--memory-limit")
    ] = IngestSettings.duckdb_memory_limit,
    allow_empty: Annotated[bool, option(IngestSettings, "allow_empty", "--allow-empty")] = IngestSettings.allow_empty,
    no_wait: NoWait = False,
    store: StoreOpt = DEFAULT_STORE,
) -> None:
    """Read a MovieLens edition (and posters) into the store: items, users, ratings, tags, rejects."""
    from bonmf_pipe.featurestore import Store
    from bonmf_pipe.pipeline.ingest import ingest as run_ingest
    from bonmf_pipe.render import render_ingest_summary

    with library_call():
        settings = IngestSettings(
            path=path, dataset=dataset, posters=posters, text_template=text_template, max_tags=max_tags,
            duckdb_memory_limit=memory_limit, allow_empty=allow_empty,
        )
        with progress_renderer() as progress:
            summary = run_ingest(Store.open(store, create=True, no_wait=no_wait), settings, progress)
        render_ingest_summary(summary)


# --- pipeline: encode, similar ------------------------------------------------------------


@app.command()
def encode(
    modality: Annotated[str, option(EncodeSettings, "modalities", "--modality")] = ",".join(EncodeSettings.modalities),
    text_model: Annotated[str | None, option(EncodeSettings, "text_model")] = EncodeSettings.text_model,
    image_model: Annotated[str | None, option(EncodeSettings, "image_model")] = EncodeSettings.image_model,
    preset: Annotated[str, option(EncodeSettings, "preset")] = EncodeSettings.preset,
    batch_size: Annotated[int | None, option(EncodeSettings, "batch_size")] = EncodeSettings.batch_size,
    device: Annotated[str, option(EncodeSettings, "device")] = EncodeSettings.device,
    dtype: Annotated[str, option(EncodeSettings, "dtype")] = EncodeSettings.dtype,
    store_dtype: Annotated[str, option(EncodeSettings, "store_dtype")] = EncodeSettings.store_dtype,
    shard: Annotated[str, option(EncodeSettings, "shard")] = "{}/{}".format(*EncodeSettings.shard),
    rows_per_shard: Annotated[int, option(EncodeSettings, "rows_per_shard")] = EncodeSettings.rows_per_shard,
    num_workers: Annotated[int | None, option(EncodeSettings, "num_workers")] = EncodeSettings.num_workers,
    text_pooling: Annotated[str | None, option(EncodeSettings, "text_pooling")] = EncodeSettings.text_pooling,
    normalize: Annotated[
        bool | None, option(EncodeSettings, "normalize", "--normalize/--no-normalize")
    ] = EncodeSettings.normalize,
    max_length: Annotated[int, option(EncodeSettings, "max_length")] = EncodeSettings.max_length,
    image_backend: Annotated[str, option(EncodeSettings, "image_backend")] = EncodeSettings.image_backend,
    cpu_threads: Annotated[int | None, option(EncodeSettings, "cpu_threads")] = EncodeSettings.cpu_threads,
    retry_rejected: Annotated[bool, option(EncodeSettings, "retry_rejected")] = EncodeSettings.retry_rejected,
    name: Annotated[str | None, option(EncodeSettings, "name")] = EncodeSettings.name,
    text_template: Annotated[str | None, option(EncodeSettings, "text_template")] = EncodeSettings.text_template,
    no_wait: NoWait = False,
    store: StoreOpt = DEFAULT_STORE,
) -> None:
    """Encode item texts and posters once into feature shards; only what is missing is encoded."""
    from bonmf_pipe.featurestore import Store
    from bonmf_pipe.pipeline.encode import encode as run_encode
    from bonmf_pipe.pipeline.encode import parse_modalities, parse_shard
    from bonmf_pipe.render import render_encode_summary

    with library_call():
        settings = EncodeSettings(
            modalities=parse_modalities(modality), text_model=text_model, image_model=image_model, preset=preset,
            batch_size=batch_size, device=device, dtype=dtype, store_dtype=store_dtype, shard=parse_shard(shard),
            rows_per_shard=rows_per_shard, num_workers=num_workers, text_pooling=text_pooling, normalize=normalize,
            max_length=max_length, image_backend=image_backend, cpu_threads=cpu_threads, retry_rejected=retry_rejected,
            name=name, text_template=text_template,
        )
        with progress_renderer() as progress:
            summary = run_encode(Store.open(store, no_wait=no_wait), settings, progress)
        render_encode_summary(summary)


@app.command()
def similar(
    item: Annotated[str, typer.Argument(help='A movie: "Title (Year)" as in the movie file, a title, or an item id.')],
    modality: Annotated[str, typer.Option("--modality", help="text or image.")] = "text",
    k: Annotated[int, typer.Option("-k", help="How many neighbours.")] = 10,
    key: Annotated[str | None, typer.Option(help="Encoder key (or a unique prefix); default: the newest.")] = None,
    store: StoreOpt = DEFAULT_STORE,
) -> None:
    """The movies nearest to one movie by its text or poster vector (cosine similarity)."""
    from bonmf_pipe.featurestore import Store
    from bonmf_pipe.pipeline.encode import similar as find_similar
    from bonmf_pipe.render import render_similar

    with library_call():
        render_similar(find_similar(Store.open(store), item, modality, k, key), item, modality)


# --- trainer and evaluation: train, evaluate, ablate, recommend ---------------------------

Features = Annotated[str, option(TrainSettings, "features")]


@app.command()
def train(
    ctx: typer.Context,
    model: Annotated[str, option(TrainSettings, "model")] = TrainSettings.model,
    features: Features = ",".join(TrainSettings.features),
    text_encoder: Annotated[str | None, option(TrainSettings, "text_encoder")] = TrainSettings.text_encoder,
    image_encoder: Annotated[str | None, option(TrainSettings, "image_encoder")] = TrainSettings.image_encoder,
    epochs: Annotated[int | None, option(TrainSettings, "epochs")] = TrainSettings.epochs,
    batch_size: Annotated[int | None, option(TrainSettings, "batch_size")] = TrainSettings.batch_size,
    lr: Annotated[float | None, option(TrainSettings, "lr")] = TrainSettings.lr,
    lr_schedule: Annotated[str, option(TrainSettings, "lr_schedule")] = TrainSettings.lr_schedule,
    seed: Annotated[int, option(TrainSettings, "seed")] = TrainSettings.seed,
    split: Annotated[str, option(TrainSettings, "split")] = TrainSettings.split,
    device: Device = TrainSettings.device,
    threads: Threads = TrainSettings.threads,
    name: Annotated[str | None, option(TrainSettings, "name")] = TrainSettings.name,
    paper: Annotated[bool, option(TrainSettings, "paper", "--paper")] = TrainSettings.paper,
    memory_budget_mb: Annotated[int, option(TrainSettings, "memory_budget_mb")] = TrainSettings.memory_budget_mb,
    params: Annotated[
        str | None,
        typer.Option(
            help="Hyper-parameters from a tuning study: best (the study `tune` made for this model, features, "
            "split and seed), best:STUDY, or a JSON file. Options typed on the command line win."
        ),
    ] = None,
    resume: Annotated[
        str | None, typer.Option(help="Continue this run (id or prefix) from its last completed epoch.")
    ] = None,
    store: StoreOpt = DEFAULT_STORE,
) -> None:
    """Train a recommender on a reproducible split, then evaluate it; writes runs/<id>/."""
    from bonmf_pipe.featurestore import Store
    from bonmf_pipe.pipeline.train import train_and_evaluate
    from bonmf_pipe.render import render_train_result
    from bonmf_pipe.pipeline.ablate import parse_features

    with library_call():
        settings = TrainSettings(
            model=model, features=parse_features(features), text_encoder=text_encoder, image_encoder=image_encoder,
            epochs=epochs, batch_size=batch_size, lr=lr, lr_schedule=lr_schedule, seed=seed, split=split,
            device=device, threads=threads, name=name, paper=paper, memory_budget_mb=memory_budget_mb,
        )
        with progress_renderer() as progress:
            result = train_and_evaluate(
                Store.open(store), settings, progress=progress, resume=resume, given=given(ctx, TrainSettings),
                params=params,
            )
        if result.evaluation is not None:  # under torchrun, rank 0 alone reports
            render_train_result(result)


@app.command()
def evaluate(
    run: Annotated[str, typer.Argument(help="Run id, a unique prefix of one, or 'latest'.")] = "latest",
    k: Annotated[list[int], option(EvalSettings, "ks", "--k", "-k")] = list(EvalSettings.ks),
    threshold: Annotated[float, option(EvalSettings, "threshold")] = EvalSettings.threshold,
    cold_max_train_ratings: Annotated[
        int, option(EvalSettings, "cold_max_train_ratings")
    ] = EvalSettings.cold_max_train_ratings,
    full_catalogue: Annotated[bool, option(EvalSettings, "full_catalogue")] = EvalSettings.full_catalogue,
    max_users: Annotated[
        int, option(EvalSettings, "max_users", help="Full-catalogue protocol: a seeded sample of this many users; 0 = all.")
    ] = EvalSettings.max_users,
    memory_budget_mb: Annotated[
        int, option(EvalSettings, "memory_limit_mb", "--memory-budget-mb")
    ] = EvalSettings.memory_limit_mb,
    store: StoreOpt = DEFAULT_STORE,
) -> None:
    """Rating errors and top-K ranking metrics of a run (all, cold and unseen items)."""
    from bonmf_pipe.evaluation import evaluate_run
    from bonmf_pipe.featurestore import Store
    from bonmf_pipe.render import render_evaluation

    with library_call():
        settings = EvalSettings(
            ks=tuple(k), threshold=threshold, cold_max_train_ratings=cold_max_train_ratings,
            full_catalogue=full_catalogue, max_users=max_users or None, memory_limit_mb=memory_budget_mb,
        )
        with progress_renderer() as progress:
            report = evaluate_run(Store.open(store), run, settings, progress)
        render_evaluation(report)


@app.command()
def ablate(
    features: Annotated[
        list[str],
        typer.Option("--features", help="BoNMF variants: auto, none, all, text, image, text+image, NAME, ... (repeat); "
                     "auto: none, each feature set of the store alone, text+image, all together."),
    ] = list(default(AblateSettings, "features")),
    baselines: Annotated[
        list[str], typer.Option("--baseline", help="Baselines without side information: svd, nmf (repeat).")
    ] = list(default(AblateSettings, "baselines")),
    no_baselines: Annotated[bool, typer.Option("--no-baselines", help="Train no baseline.")] = False,
    epochs: Annotated[int | None, option(TrainSettings, "epochs")] = TrainSettings.epochs,
    seed: Annotated[int, option(TrainSettings, "seed")] = TrainSettings.seed,
    split: Annotated[str, option(TrainSettings, "split")] = TrainSettings.split,
    batch_size: Annotated[int | None, option(TrainSettings, "batch_size")] = TrainSettings.batch_size,
    lr: Annotated[float | None, option(TrainSettings, "lr")] = TrainSettings.lr,
    device: Device = TrainSettings.device,
    text_encoder: Annotated[str | None, option(TrainSettings, "text_encoder")] = TrainSettings.text_encoder,
    image_encoder: Annotated[str | None, option(TrainSettings, "image_encoder")] = TrainSettings.image_encoder,
    paper: Annotated[bool, option(TrainSettings, "paper")] = TrainSettings.paper,
    threads: Threads = TrainSettings.threads,
    seeds: Annotated[int, option(AblateSettings, "seeds")] = default(AblateSettings, "seeds"),
    tune_trials: Annotated[int, option(AblateSettings, "tune_trials", "--tune")] = default(AblateSettings, "tune_trials"),
    name: Annotated[str | None, option(AblateSettings, "name")] = default(AblateSettings, "name"),
    store: StoreOpt = DEFAULT_STORE,
) -> None:
    """Train svd, nmf and BoNMF with each set of side information on the same splits; compare them."""
    from bonmf_pipe.featurestore import Store
    from bonmf_pipe.pipeline.ablate import ablate as run_ablation
    from bonmf_pipe.render import render_ablation

    with library_call():
        base = TrainSettings(
            epochs=epochs, seed=seed, split=split, batch_size=batch_size, lr=lr, device=device,
            text_encoder=text_encoder, image_encoder=image_encoder, paper=paper, threads=threads,
        )
        settings = AblateSettings(
            train=base, features=tuple(features), baselines=() if no_baselines else tuple(baselines), name=name,
            seeds=seeds, tune_trials=tune_trials,
        )
        with progress_renderer() as progress:
            result = run_ablation(Store.open(store), settings, progress)
        render_ablation(result)


@app.command()
def tune(
    model: Annotated[str, option(TuneSettings, "model")] = TuneSettings.model,
    features: Features = ",".join(TuneSettings.features),
    trials: Annotated[int, option(TuneSettings, "trials")] = TuneSettings.trials,
    timeout: Annotated[float | None, option(TuneSettings, "timeout")] = TuneSettings.timeout,
    seed: Annotated[int, option(TuneSettings, "seed")] = TuneSettings.seed,
    split: Annotated[str, option(TuneSettings, "split")] = TuneSettings.split,
    study: Annotated[str | None, option(TuneSettings, "study")] = TuneSettings.study,
    epochs: Annotated[int | None, option(TrainSettings, "epochs")] = TrainSettings.epochs,
    device: Device = TrainSettings.device,
    threads: Threads = TrainSettings.threads,
    text_encoder: Annotated[str | None, option(TrainSettings, "text_encoder")] = TrainSettings.text_encoder,
    image_encoder: Annotated[str | None, option(TrainSettings, "image_encoder")] = TrainSettings.image_encoder,
    store: StoreOpt = DEFAULT_STORE,
) -> None:
    """Search hyper-parameters on the validation slice of the train part (Optuna); resumable."""
    from bonmf_pipe.featurestore import Store
    from bonmf_pipe.pipeline.ablate import parse_features
    from bonmf_pipe.pipeline.tune import tune as run_tune
    from bonmf_pipe.render import render_tune_result

    with library_call():
        base = TrainSettings(
            epochs=epochs, device=device, threads=threads, text_encoder=text_encoder, image_encoder=image_encoder
        )
        settings = TuneSettings(
            model=model, features=parse_features(features), trials=trials, timeout=timeout, seed=seed, split=split,
            study=study, train=base,
        )
        with progress_renderer() as progress:
            result = run_tune(Store.open(store), settings, progress)
        if result is not None:  # under torchrun, rank 0 alone reports
            render_tune_result(result)


@app.command()
def recommend(
    run: Annotated[str, typer.Option("--run", help="Run id, a unique prefix of one, or 'latest'.")] = "latest",
    user: Annotated[int, typer.Option("--user", "-u", help="The user id to recommend for.")] = ...,
    k: Annotated[int, typer.Option("-k", "--k", help="How many items.")] = 10,
    ratings: Annotated[
        Path | None,
        typer.Option(help="A CSV of item_id,rating: fold in a user the run has not seen (or re-fold a known one) "
                     "from these ratings, with the run's item side frozen."),
    ] = None,
    rate: Annotated[
        list[str] | None, typer.Option(help="ITEM=STARS (repeatable): ratings to fold the user in from, like --ratings.")
    ] = None,
    store: StoreOpt = DEFAULT_STORE,
) -> None:
    """Top-K items for a user, leaving out what they rated in the run's training data (or, with
    --ratings / --rate, for a user folded in from a few ratings)."""
    from bonmf_pipe.evaluation import recommend as top_items
    from bonmf_pipe.evaluation.foldin import parse_rate, read_ratings_file, recommend_new_user
    from bonmf_pipe.featurestore import Store
    from bonmf_pipe.render import render_recommendations

    with library_call():
        if ratings is not None or rate:
            given_ratings = {**(read_ratings_file(ratings) if ratings is not None else {}), **parse_rate(rate or [])}
            table = recommend_new_user(Store.open(store), run, user, given_ratings, k)
        else:
            table = top_items(Store.open(store), run, user, k)
        render_recommendations(table, run, user)


# --- feature sets: import your own vectors, coverage ------------------------------------------

features_app = typer.Typer(
    help="Feature sets: import your own item vectors; how many items each feature set covers.",
    no_args_is_help=True,
)
app.add_typer(features_app, name="features")


@features_app.command("import")
def features_import(
    path: Annotated[Path, typer.Argument(help=field_docs(ImportSettings)["path"])],
    name: Annotated[str, option(ImportSettings, "name")] = ...,
    key_column: Annotated[str, option(ImportSettings, "key_column")] = ImportSettings.key_column,
    vector_column: Annotated[str | None, option(ImportSettings, "vector_column")] = ImportSettings.vector_column,
    ids: Annotated[Path | None, option(ImportSettings, "ids")] = ImportSettings.ids,
    provenance: Annotated[str, option(ImportSettings, "provenance")] = ImportSettings.provenance,
    dtype: Annotated[str, option(ImportSettings, "dtype")] = ImportSettings.dtype,
    store: StoreOpt = DEFAULT_STORE,
) -> None:
    """Import item vectors (Parquet, .npy + ids, CSV) as the feature set NAME; bad rows go to rejects."""
    from bonmf_pipe.featurestore import Store
    from bonmf_pipe.pipeline.features_import import import_features

    with library_call():
        settings = ImportSettings(path=path, name=name, key_column=key_column, vector_column=vector_column, ids=ids,
                                  provenance=provenance, dtype=dtype)
        with progress_renderer() as progress:
            r = import_features(Store.open(store), settings, progress=progress)
        if r.unchanged:
            console.print(f"{escape(r.name)}: {escape(str(path))} was imported before as {r.key}; nothing to do.")
        else:
            why = ", ".join(f"{n} {reason}" for reason, n in sorted(r.reasons.items()))
            console.print(f"{escape(r.name)}: {r.rows:,} vectors of {r.dim} dims stored as {r.key} in {r.seconds:.1f} s"
                          + (f"; {r.rejected:,} rows to rejects ({escape(why)})" if r.rejected else ""))
            console.print(f"next: bonmf-pipe train --features text,image,{escape(r.name)}")


@features_app.command("coverage")
def features_coverage(store: StoreOpt = DEFAULT_STORE) -> None:
    """Per feature set (the newest of each name): items with and without a current vector."""
    from bonmf_pipe.featurestore import Store
    from bonmf_pipe.featurestore.info import feature_coverage
    from bonmf_pipe.render import render_coverage

    with library_call():
        render_coverage(feature_coverage(Store.open(store)))


# --- the main job ---------------------------------------------------------------------------


@app.command()
def demo(
    out: Annotated[Path, option(DemoSettings, "out", "--out")] = DemoSettings.out,
    path: Annotated[Path | None, option(DemoSettings, "path", "--path")] = DemoSettings.path,
    posters: Annotated[Path | None, option(DemoSettings, "posters", "--posters")] = DemoSettings.posters,
    store: Annotated[Path | None, option(DemoSettings, "store", "--store", envvar="BONMF_STORE")] = DemoSettings.store,
    seed: Annotated[int, option(DemoSettings, "seed")] = DemoSettings.seed,
    seeds: Annotated[int, option(DemoSettings, "seeds")] = DemoSettings.seeds,
    device: Annotated[str, option(DemoSettings, "device")] = DemoSettings.device,
    full: Annotated[bool, typer.Option("--full", help="Full ablation: BoNMF with none/text/image/text+image.")] = False,
) -> None:
    """The whole pipeline in one command: sample (or --path) -> ingest -> encode -> train svd, nmf and BoNMF -> evaluate."""
    from bonmf_pipe.pipeline.demo import run_demo
    from bonmf_pipe.render import render_demo_result

    features = default(AblateSettings, "features") if full else DemoSettings.features
    settings = DemoSettings(
        out=out, path=path, posters=posters, store=store, seed=seed, seeds=seeds, device=device, features=features
    )
    with library_call(), progress_renderer() as progress:
        render_demo_result(run_demo(settings, progress))


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
