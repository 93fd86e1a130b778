"""The bonmf-pipe command line: parses options and calls one library function per command."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from bonmf_pipe import __version__
from bonmf_pipe.render import console, err_console, progress_renderer
from bonmf_pipe.errors import BonmfError

app = typer.Typer(
    name="bonmf-pipe",
    help="Multimodal BoNMF recommenders on MovieLens: ingest, encode text and posters once "
    "into a Parquet feature store, train, evaluate, and query it all with SQL.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
)

StoreOpt = Annotated[
    Path,
    typer.Option("--store", envvar="BONMF_STORE", help="Store folder (env BONMF_STORE).", show_default=True),
]
DEFAULT_STORE = Path("bonmf-store")


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


# --- store: info, sql, verify ---------------------------------------------------------


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
    format: Annotated[
        str, typer.Option("--format", "-f", help="table, csv, json or parquet.")
    ] = "table",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the result to this file.")] = None,
    store: StoreOpt = DEFAULT_STORE,
) -> None:
    """Run DuckDB SQL over the store, read-only. Views: items, users, ratings, rejects, ..."""
    from bonmf_pipe.featurestore import Store
    from bonmf_pipe.featurestore.sql import query as run_query
    from bonmf_pipe.render import render_query_result

    with library_call():
        result = run_query(Store.open(store), query, output=output)
        render_query_result(result, format, output)


@app.command()
def verify(store: StoreOpt = DEFAULT_STORE) -> None:
    """Check every shard against its manifest (rows, checksums, schema, encoder key)."""
    from bonmf_pipe.featurestore import Store
    from bonmf_pipe.featurestore.verify import verify_store
    from bonmf_pipe.render import render_verify

    with library_call():
        report = verify_store(Store.open(store))
        render_verify(report)
        if not report.ok:
            raise typer.Exit(1)


# --- pipeline: sample, fetch, ingest --------------------------------------------------


@app.command()
def sample(
    out: Annotated[Path, typer.Option("--out", help="Folder to write (empty, new, or an earlier sample).")],
    users: Annotated[int, typer.Option(help="Number of users.")] = 600,
    items: Annotated[int, typer.Option(help="Number of movies.")] = 1500,
    ratings: Annotated[int, typer.Option(help="Exact number of ratings (users <= R <= users x items).")] = 60_000,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives byte-identical files.")] = 42,
    edition: Annotated[str, typer.Option(help="File format: ml-latest-small, ml-1m or ml-100k.")] = "ml-latest-small",
    posters: Annotated[bool, typer.Option(help="Also draw posters/<movieId>.jpg.")] = True,
    factors: Annotated[int, typer.Option(help="Latent factors behind ratings, words and posters.")] = 8,
) -> None:
    """Write a synthetic dataset in a MovieLens edition's exact format, with posters."""
    from bonmf_pipe.pipeline.sample import SampleSettings, write_sample
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
    path: Annotated[Path, typer.Option("--path", help="The unzipped MovieLens folder (u.data, ratings.dat or ratings.csv ...).")],
    dataset: Annotated[
        str, typer.Option(help="auto, ml-100k, ml-1m, ml-10m, ml-latest-small, ml-latest, ml-20m, ml-25m, ml-32m or ml-csv.")
    ] = "auto",
    posters: Annotated[
        Path | None, typer.Option("--posters", help="Folder of posters named <movieId>.jpg|png|webp.")
    ] = None,
    text_template: Annotated[
        str, typer.Option(help="Item text for the encoder: {title}, {year}, {genres}, {tags}; empty parts are dropped.")
    ] = "{title} ({year}). Genres: {genres}. Tags: {tags}.",
    max_tags: Annotated[int, typer.Option(help="At most this many tags per item (most applied first).")] = 20,
    memory_limit: Annotated[
        str, typer.Option(help="DuckDB memory limit while deduplicating ratings (spills to the store beyond it).")
    ] = "1GB",
    store: StoreOpt = DEFAULT_STORE,
) -> None:
    """Read a MovieLens edition (and posters) into the store: items, users, ratings, tags, rejects."""
    from bonmf_pipe.featurestore import Store
    from bonmf_pipe.pipeline.ingest import IngestSettings
    from bonmf_pipe.pipeline.ingest import ingest as run_ingest
    from bonmf_pipe.render import render_ingest_summary

    with library_call():
        settings = IngestSettings(
            path=path, dataset=dataset, posters=posters, text_template=text_template, max_tags=max_tags,
            duckdb_memory_limit=memory_limit,
        )
        with progress_renderer() as progress:
            summary = run_ingest(Store.open(store, create=True), settings, progress)
        render_ingest_summary(summary)


# --- pipeline: encode, similar ----------------------------------------------------------


@app.command()
def encode(
    modality: Annotated[str, typer.Option("--modality", help="text, image or text,image.")] = "text,image",
    text_model: Annotated[
        str | None, typer.Option(help="Registry name, Hugging Face id or local folder (default: the preset's).")
    ] = None,
    image_model: Annotated[
        str | None, typer.Option(help="Registry name, timm name or local timm folder (default: the preset's).")
    ] = None,
    preset: Annotated[
        str, typer.Option(help="offline (MiniLM-L6 + EfficientNet-Lite0, no network) or paper (roberta-base + ViT-B/16).")
    ] = "offline",
    batch_size: Annotated[int | None, typer.Option(help="Items per forward pass (default: by device and modality).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    dtype: Annotated[str, typer.Option(help="Compute dtype: auto (bf16 on cuda, fp32 on cpu), fp32, fp16 or bf16.")] = "auto",
    store_dtype: Annotated[str, typer.Option(help="Stored vectors: float16 or float32.")] = "float16",
    shard: Annotated[str, typer.Option(help="i/N: encode only partition i of N (by a stable hash of item_id).")] = "0/1",
    rows_per_shard: Annotated[int, typer.Option(help="Vectors per Parquet shard (each committed when written).")] = 4096,
    num_workers: Annotated[int | None, typer.Option(help="Poster loader worker processes (default: by CPU count).")] = None,
    text_pooling: Annotated[str | None, typer.Option(help="mean or cls (default: the model's).")] = None,
    normalize: Annotated[
        bool | None, typer.Option("--normalize/--no-normalize", help="L2-normalise vectors (default: the model's).")
    ] = None,
    max_length: Annotated[int, typer.Option(help="Texts are truncated to this many tokens.")] = 128,
    image_backend: Annotated[
        str, typer.Option(help="pil (decode in loader workers), tensor (torchvision on the device) or auto.")
    ] = "auto",
    cpu_threads: Annotated[int | None, typer.Option(help="torch threads while encoding on CPU (default: torch's).")] = None,
    retry_rejected: Annotated[bool, typer.Option(help="Retry posters an earlier encode rejected.")] = False,
    store: StoreOpt = DEFAULT_STORE,
) -> None:
    """Encode item texts and posters once into feature shards; only what is missing is encoded."""
    from bonmf_pipe.featurestore import Store
    from bonmf_pipe.pipeline.encode import EncodeSettings, parse_modalities, parse_shard
    from bonmf_pipe.pipeline.encode import encode as run_encode
    from bonmf_pipe.render import render_encode_summary

    with library_call():
        settings = EncodeSettings(
            modalities=parse_modalities(modality), text_model=text_model, image_model=image_model, preset=preset,
            batch_size=batch_size, device=device, dtype=dtype, store_dtype=store_dtype, shard=parse_shard(shard),
            rows_per_shard=rows_per_shard, num_workers=num_workers, text_pooling=text_pooling, normalize=normalize,
            max_length=max_length, image_backend=image_backend, cpu_threads=cpu_threads, retry_rejected=retry_rejected,
        )
        with progress_renderer() as progress:
            summary = run_encode(Store.open(store), settings, progress)
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



# --- trainer and evaluation: train, evaluate, ablate, recommend, demo -----------------


@app.command()
def train(
    model: Annotated[str, typer.Option(help="bonmf (IDs + text + posters), nmf (IDs only) or svd (biased MF).")] = "bonmf",
    features: Annotated[
        str, typer.Option(help="Side information for bonmf: text,image | text | image | none.")
    ] = "text,image",
    text_encoder: Annotated[
        str | None, typer.Option(help="Text encoder key (or unique prefix); default the newest in the store.")
    ] = None,
    image_encoder: Annotated[
        str | None, typer.Option(help="Image encoder key (or unique prefix); default the newest in the store.")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Most epochs (early stopping may end sooner).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Ratings per optimiser step.")] = None,
    lr: Annotated[float | None, typer.Option(help="Adam learning rate.")] = None,
    seed: Annotated[int, typer.Option(help="Seeds the split, weights, shuffling and dropout.")] = 42,
    split: Annotated[
        str, typer.Option(help="random:F | per-user:F | temporal:F | file[:u1..u5|ua|ub] (ml-100k).")
    ] = "random:0.7",
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    name: Annotated[str | None, typer.Option(help="A label for the run (part of its id).")] = None,
    paper: Annotated[
        bool, typer.Option("--paper", help="The paper-faithful network: no projection, biases, dropout, L2, early stop.")
    ] = False,
    memory_budget_mb: Annotated[
        int | None, typer.Option(help="Host memory for training ratings; beyond it they stream from disk.")
    ] = None,
    resume: Annotated[
        str | None, typer.Option(help="Continue this run (id or prefix) from its last completed epoch.")
    ] = None,
    store: StoreOpt = DEFAULT_STORE,
) -> None:
    """Train a recommender on a reproducible split; writes runs/<id>/ and prints its metrics."""
    from bonmf_pipe.featurestore import Store
    from bonmf_pipe.render import render_train_result
    from bonmf_pipe.trainer import TrainSettings
    from bonmf_pipe.trainer import train as run_train

    with library_call():
        chosen = () if features.strip() in ("", "none") else tuple(f.strip() for f in features.split(",") if f.strip())
        overrides = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "memory_budget_mb": memory_budget_mb}
        settings = TrainSettings(
            model=model, features=chosen, text_encoder=text_encoder, image_encoder=image_encoder, seed=seed,
            split=split, device=device, name=name, paper=paper, **{k: v for k, v in overrides.items() if v is not None},
        )
        with progress_renderer() as progress:
            result = run_train(Store.open(store), settings, progress, resume=resume)
        render_train_result(result)


# evaluation: evaluate, ablate, recommend


@app.command()
def evaluate(
    run: Annotated[str, typer.Argument(help="Run id, a unique prefix of one, or 'latest'.")] = "latest",
    k: Annotated[list[int] | None, typer.Option("--k", "-k", help="Cut-offs K (repeat the option).")] = None,
    threshold: Annotated[float, typer.Option(help="A test item is relevant when rated >= this.")] = 4.0,
    cold_max_train_ratings: Annotated[
        int, typer.Option(help="Cold items have fewer than this many training ratings.")
    ] = 5,
    full_catalogue: Annotated[
        bool, typer.Option(help="Also rank every item the user has not rated in training.")
    ] = True,
    max_users: Annotated[
        int, typer.Option(help="Full-catalogue protocol: a random sample of this many users; 0 = all.")
    ] = 2000,
    store: StoreOpt = DEFAULT_STORE,
) -> None:
    """Rating errors and top-K ranking metrics of a run (all, cold and unseen items)."""
    from bonmf_pipe.evaluation import EvalSettings, evaluate_run
    from bonmf_pipe.featurestore import Store
    from bonmf_pipe.render import render_evaluation

    with library_call():
        settings = EvalSettings(
            ks=tuple(k) if k else EvalSettings.ks, threshold=threshold,
            cold_max_train_ratings=cold_max_train_ratings, full_catalogue=full_catalogue, max_users=max_users or None,
        )
        with progress_renderer() as progress:
            report = evaluate_run(Store.open(store), run, settings, progress)
        render_evaluation(report)


@app.command()
def ablate(
    features: Annotated[
        list[str] | None,
        typer.Option("--features", help="BoNMF variants: none, text, image, text+image (repeat; default all four)."),
    ] = None,
    baselines: Annotated[
        list[str] | None, typer.Option("--baseline", help="Baselines without side information: svd, nmf (repeat).")
    ] = None,
    no_baselines: Annotated[bool, typer.Option("--no-baselines", help="Train no baseline.")] = False,
    epochs: Annotated[int, typer.Option(help="Most epochs per run (early stopping may end sooner).")] = 20,
    seed: Annotated[int, typer.Option(help="Seed of the split and of every run.")] = 42,
    split: Annotated[str, typer.Option(help="random:F | per-user:F | temporal:F | file[:NAME].")] = "random:0.7",
    batch_size: Annotated[int, typer.Option(help="Ratings per optimiser step.")] = 512,
    lr: Annotated[float, typer.Option(help="Learning rate.")] = 2e-3,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    text_encoder: Annotated[str | None, typer.Option(help="Text encoder key (or prefix); default the newest.")] = None,
    image_encoder: Annotated[
        str | None, typer.Option(help="Image encoder key (or prefix); default the newest.")
    ] = None,
    paper: Annotated[bool, typer.Option(help="Paper-faithful BoNMF network (no projection, biases, L2...).")] = False,
    name: Annotated[str | None, typer.Option(help="A label for the ablation and its runs.")] = None,
    store: StoreOpt = DEFAULT_STORE,
) -> None:
    """Train svd, nmf and BoNMF with each set of side information on ONE split; compare them."""
    from bonmf_pipe.pipeline.ablate import AblateSettings, ablate as run_ablation
    from bonmf_pipe.featurestore import Store
    from bonmf_pipe.render import render_ablation
    from bonmf_pipe.trainer import TrainSettings

    with library_call():
        base = TrainSettings(
            epochs=epochs, seed=seed, split=split, batch_size=batch_size, lr=lr, device=device,
            text_encoder=text_encoder, image_encoder=image_encoder, paper=paper,
        )
        settings = AblateSettings(
            train=base,
            features=tuple(features) if features else AblateSettings.features,
            baselines=() if no_baselines else tuple(baselines) if baselines else AblateSettings.baselines,
            name=name,
        )
        with progress_renderer() as progress:
            result = run_ablation(Store.open(store), settings, progress)
        render_ablation(result)


@app.command()
def recommend(
    run: Annotated[str, typer.Option("--run", help="Run id, a unique prefix of one, or 'latest'.")] = "latest",
    user: Annotated[int, typer.Option("--user", "-u", help="The user id to recommend for.")] = ...,
    k: Annotated[int, typer.Option("-k", "--k", help="How many items.")] = 10,
    store: StoreOpt = DEFAULT_STORE,
) -> None:
    """Top-K items for a user, leaving out what they rated in the run's training data."""
    from bonmf_pipe.evaluation import recommend as top_items
    from bonmf_pipe.featurestore import Store
    from bonmf_pipe.render import render_recommendations

    with library_call():
        render_recommendations(top_items(Store.open(store), run, user, k), run, user)


# --- the main job ------------------------------------------------------------------------


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for the synthetic sample and the store.")] = Path(
        "bonmf-demo"
    ),
    path: Annotated[
        Path | None, typer.Option("--path", help="Run on this MovieLens folder instead of the synthetic sample.")
    ] = None,
    posters: Annotated[Path | None, typer.Option("--posters", help="Poster folder for --path.")] = None,
    store: Annotated[
        Path | None, typer.Option("--store", envvar="BONMF_STORE", help="Store folder (default OUT/store).")
    ] = None,
    epochs: Annotated[int, typer.Option(help="Most epochs per model (early stopping usually ends sooner).")] = 20,
    seed: Annotated[int, typer.Option(help="Seed of the sample, the split and the runs.")] = 42,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    full: Annotated[bool, typer.Option("--full", help="Full ablation: BoNMF with none/text/image/text+image.")] = False,
) -> None:
    """The whole pipeline in one command: sample (or --path) -> ingest -> encode -> train svd, nmf and BoNMF -> evaluate."""
    from bonmf_pipe.pipeline.demo import DemoSettings, run_demo
    from bonmf_pipe.render import render_demo_result

    features = ("none", "text", "image", "text+image") if full else ("text+image",)
    settings = DemoSettings(
        out=out, path=path, posters=posters, store=store, epochs=epochs, seed=seed, device=device, features=features
    )
    with library_call(), progress_renderer() as progress:
        render_demo_result(run_demo(settings, progress))


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
