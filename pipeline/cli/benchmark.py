"""``python -m pipeline.cli.benchmark``: the benchmark page from finished runs of the chain.

Each run is a checkout where `dvc repro` ran with `profiles/benchmark.yaml` applied (one seed
each). The page puts the variants' scores side by side (the mean over runs and the spread, max -
min), the share of the source-only -> oracle gap each closes, and whether each net converged: the
monitor mIoU it gained over the last fifth of its validation curve (converged: < 1 point).
Below that: every run's mIoU, which pairwise orderings the runs support (a README claim needs
one), each translator's scores beside its variant's, and the validation curves' figure.

    python -m pipeline.cli.benchmark --run ../seed0 --run ../seed1 --out reports/benchmark

`--readme PAGE` also rewrites that page's block (README.md or a docs/*.md page; the link to
the full page is relative to its folder). The run folders are checkouts outside the repository;
`--from-page reports/benchmark` rewrites the block from the page's runs.json instead (the
tables the runs gave, kept beside the page), writing nothing else:

    python -m pipeline.cli.benchmark --readme docs/results.md --from-page reports/benchmark
"""

from __future__ import annotations

import argparse
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from pipeline import blocks
from pipeline.io import read_json, write_json, write_text
from pipeline.report.figures import plt, save_figure
from pipeline.report.scores import TRANSLATORS

PROG = "python -m pipeline.cli.benchmark"
RUNS_FILE = "runs.json"  # beside the page: each run's variants and translators tables

SCORES = ("miou", "pixel_accuracy")
CLAIM_RUNS = 3  # seeds a README claim rests on
CURVES_FIGURE = "val_curves.png"


def last_fifth_gain(curve: Path) -> float | None:
    """Monitor mIoU points gained from the first validation at or after 80% of training to the
    last one, or None without a curve."""
    if not curve.is_file():
        return None
    rows = pd.read_csv(curve)
    if rows.empty:
        return None
    late = rows[rows["step"] >= 0.8 * rows["step"].max()]
    return 100 * float(late["monitor_miou"].iloc[-1] - late["monitor_miou"].iloc[0])


def run_table(run: Path, variants: Sequence[str]) -> pd.DataFrame:
    """One run's variants: scores (%) and the last-fifth gain of their validation curves."""
    rows = {}
    for variant in variants:
        scores = read_json(run / "reports" / "metrics" / f"{variant}.json")
        rows[variant] = {
            **{key: 100 * scores[key] for key in SCORES},
            "last_fifth_gain": last_fifth_gain(run / "models" / "seg" / variant / "val_curve.csv"),
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def translator_table(run: Path) -> pd.DataFrame:
    """One run's translators (reports/translators/NAME/): the FCN-score mIoU of the translated
    sim frames (content kept), their colour-histogram distance to the real frames, and the
    training throughput."""
    folder = run / "reports" / TRANSLATORS
    rows = {}
    for path in sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []:
        # CycleGAN's training metrics stay where its stage has always written them.
        train = (
            run / "reports" / "cyclegan.json" if path.name == "cyclegan" else path / "train.json"
        )
        rows[path.name] = {
            "fcn_miou": 100 * read_json(path / "scores.json")["translated"]["miou"],
            "colour_distance": read_json(path / "translate.json")["hist_distance_after"],
            "train_img_per_s": read_json(train)["img_per_s"] if train.is_file() else None,
        }
    return pd.DataFrame.from_dict(rows, orient="index", dtype=float)


def gap_closed(table: pd.DataFrame, key: str) -> pd.Series:
    """(variant - source_only) / (oracle - source_only), in %; NaN where the runs trained no
    source_only or no oracle (a page of method variants only)."""
    if not {"source_only", "oracle"} <= set(table.index):
        return pd.Series(float("nan"), index=table.index)
    source, oracle = table.loc["source_only", key], table.loc["oracle", key]
    return 100 * (table[key] - source) / (oracle - source)


def percent_cell(value: float) -> str:
    return "n/a" if pd.isna(value) else f"{value:.0f}%"


def mean_and_spread(
    tables: dict[str, pd.DataFrame], order: Sequence[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per row name over the runs: the mean and the spread (max - min)."""
    stacked = pd.concat(tables, names=["run", "name"]).groupby(level="name")
    return stacked.mean().reindex(order), (stacked.max() - stacked.min()).reindex(order)


def miou_by_run(runs: dict[str, pd.DataFrame], order: Sequence[str]) -> pd.DataFrame:
    """Variants (rows, in `order`) by runs (columns): mIoU in %."""
    return pd.DataFrame({name: table["miou"] for name, table in runs.items()}).reindex(order)


def rankings(runs: dict[str, pd.DataFrame], order: Sequence[str]) -> pd.DataFrame:
    """Every pair of variants, higher mean mIoU first: the difference of the means, the larger
    of the two spreads, and whether the higher one is above in every run. A ranking holds when
    it is above in every run and the difference exceeds that spread."""
    miou = miou_by_run(runs, order)
    spread = miou.max(axis=1) - miou.min(axis=1)
    ranked = list(miou.mean(axis=1).sort_values(ascending=False).index)
    rows = []
    for i, high in enumerate(ranked):
        for low in ranked[i + 1 :]:
            difference = miou.loc[high].mean() - miou.loc[low].mean()
            wider = max(spread[high], spread[low])
            every = bool((miou.loc[high] > miou.loc[low]).all())
            rows.append((high, low, difference, wider, every, every and difference > wider))
    return pd.DataFrame(
        rows, columns=["higher", "lower", "difference", "spread", "every_run", "holds"]
    )


def rankings_lines(ranked: pd.DataFrame) -> list[str]:
    return [
        "| higher | lower | mIoU difference | larger spread | above in every run | holds |",
        "|---|---|---:|---:|---|---|",
        *(
            f"| {r.higher} | {r.lower} | {r.difference:.1f} | {r.spread:.1f} "
            f"| {'yes' if r.every_run else 'no'} | {'**yes**' if r.holds else 'no'} |"
            for r in ranked.itertuples()
        ),
    ]


def variants_lines(runs: dict[str, pd.DataFrame], order: Sequence[str]) -> list[str]:
    """The main table: each variant's mean and spread, the gap it closes, its convergence."""
    mean, spread = mean_and_spread(runs, order)
    closed = {key: gap_closed(mean, key) for key in SCORES}
    lines = [
        "| variant | mIoU | spread | pixel acc. | spread | mIoU gap closed | pixel gap closed "
        "| last-fifth mIoU gain (val curve) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for variant in order:
        gain = mean.loc[variant, "last_fifth_gain"]
        lines.append(
            f"| {variant} | {mean.loc[variant, 'miou']:.1f} | {spread.loc[variant, 'miou']:.1f} "
            f"| {mean.loc[variant, 'pixel_accuracy']:.1f} "
            f"| {spread.loc[variant, 'pixel_accuracy']:.1f} "
            f"| {percent_cell(closed['miou'][variant])} "
            f"| {percent_cell(closed['pixel_accuracy'][variant])} "
            f"| {'n/a' if pd.isna(gain) else f'{gain:+.1f}'} |"
        )
    return lines


def translators_lines(tables: dict[str, pd.DataFrame], runs: dict[str, pd.DataFrame]) -> list[str]:
    """Each translator's scores beside the downstream scores of the variant of the same name
    (the one trained on its translation), mean (spread) over the runs."""
    names = sorted(set().union(*(table.index for table in tables.values())))
    names.sort(key=lambda name: name != "cyclegan")
    if not names:
        return []
    mean, spread = mean_and_spread(tables, names)
    downstream_mean, downstream_spread = mean_and_spread(runs, names)

    def cell(frame_mean, frame_spread, name, key, digits) -> str:
        value = frame_mean.loc[name, key] if key in frame_mean else float("nan")
        if pd.isna(value):
            return "-"
        return f"{value:.{digits}f} ({frame_spread.loc[name, key]:.{digits}f})"

    lines = [
        "Mean (spread) over the runs. FCN-score: the oracle net's mIoU on the translated sim "
        "frames against their labels (content kept); colour distance: histogram distance of "
        "the translated frames to the real ones (lower: closer); downstream: the variant of "
        "the same name, trained on that translation.",
        "",
        "| translator | FCN-score mIoU | colour distance | training img/s | downstream mIoU "
        "| downstream pixel acc. |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        cells = [
            cell(mean, spread, name, "fcn_miou", 1),
            cell(mean, spread, name, "colour_distance", 3),
            cell(mean, spread, name, "train_img_per_s", 2),
            cell(downstream_mean, downstream_spread, name, "miou", 1),
            cell(downstream_mean, downstream_spread, name, "pixel_accuracy", 1),
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def curves_figure(runs: Sequence[Path], variants: Sequence[str]) -> plt.Figure | None:
    """Each variant's monitor mIoU on real val against the step: the mean over the runs, and
    the band between the lowest and highest run."""
    curves = {}
    for variant in variants:
        paths = [run / "models" / "seg" / variant / "val_curve.csv" for run in runs]
        frames = [
            pd.read_csv(path).set_index("step")["monitor_miou"] for path in paths if path.is_file()
        ]
        if frames:
            curves[variant] = 100 * pd.concat(frames, axis=1)
    if not curves:
        return None
    figure, axes = plt.subplots(figsize=(9, 5))
    for variant, runs_at_step in curves.items():
        (line,) = axes.plot(runs_at_step.index, runs_at_step.mean(axis=1), label=variant)
        axes.fill_between(
            runs_at_step.index,
            runs_at_step.min(axis=1),
            runs_at_step.max(axis=1),
            color=line.get_color(),
            alpha=0.15,
        )
    axes.set_xlabel("training step")
    axes.set_ylabel("mIoU on real val (%, working resolution)")
    axes.set_title(f"Validation curves: mean and range over {len(runs)} runs")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, ncols=2)
    return figure


TITLE = "Benchmark: profiles/benchmark.yaml on the demo data"


def benchmark_page(
    runs: dict[str, pd.DataFrame],
    order: Sequence[str],
    translators: dict[str, pd.DataFrame] | None = None,
    figure: bool = False,
    title: str = TITLE,
) -> str:
    miou = miou_by_run(runs, order)
    lines = [
        f"# {title}",
        "",
        f"Runs: {', '.join(runs)} ({len(runs)}; a claim needs {CLAIM_RUNS}). Scores in % on "
        "real val at label resolution; spread = max - min over the runs (0 with one run).",
        "",
        *variants_lines(runs, order),
        "",
        "## Every run (mIoU)",
        "",
        "| variant | " + " | ".join(runs) + " |",
        "|---|" + "---:|" * len(runs),
        *(
            f"| {variant} | " + " | ".join(f"{value:.1f}" for value in miou.loc[variant]) + " |"
            for variant in order
        ),
        "",
        "## Which rankings the runs support",
        "",
        *rankings_lines(rankings(runs, order)),
    ]
    translated = translators_lines(translators or {}, runs)
    if translated:
        lines += ["", "## Translators", "", *translated]
    if figure:
        lines += ["", "## Validation curves", "", f"![validation curves]({CURVES_FIGURE})"]
    return "\n".join(lines) + "\n"


def readme_section(
    runs: dict[str, pd.DataFrame],
    order: Sequence[str],
    translators: dict[str, pd.DataFrame],
    page: Path,
) -> str:
    """The body of README's benchmark block: the main table, the rankings that hold, the
    translators, and a link to the full page (`page`, relative to the folder of the page the
    block sits in)."""
    ranked = rankings(runs, order)
    # The oracle is the ceiling: one clause says whether it stands above every variant.
    oracle = ranked[ranked["higher"] == "oracle"]
    ceiling = (
        ["the oracle > every other variant"]
        if len(oracle) == len(order) - 1 and oracle["holds"].all()
        else []
    )
    held = ranked[ranked["holds"] & ((ranked["higher"] != "oracle") | (not ceiling))]
    translated = translators_lines(translators, runs)
    clauses = ceiling + [f"{r.higher} > {r.lower} (+{r.difference:.1f})" for r in held.itertuples()]
    # A README claim needs CLAIM_RUNS seeds; fewer runs are reported, not claimed.
    test = (
        "Rankings that hold (above in every run, by more than the larger spread of the two)"
        if len(runs) >= CLAIM_RUNS
        else f"Orderings above in every run and beyond the larger spread, from {len(runs)} "
        f"run(s), fewer than the {CLAIM_RUNS} a claim needs (measured, not claimed)"
    )
    lines = [
        f"Runs: {', '.join(runs)}. Scores in % on real val at label resolution; spread = max - "
        f"min over the runs. Full page: [{page}]({page}).",
        "",
        *variants_lines(runs, order),
        "",
        f"{test}: " + ("; ".join(clauses) or "none") + ". No other pair passes both tests.",
        *(["", *translated] if translated else []),
    ]
    return "\n".join(lines)


def block_command(readme: Path, marker: str) -> str:
    """The command a README block's written-by line names (the run folders are not named)."""
    option = "" if marker == "benchmark" else f" --readme-marker {marker}"
    return f"{PROG} --readme {blocks.page_path(readme)}{option}"


def kept_tables(page: Path) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    """The runs' variants and translators tables as an earlier invocation kept them in the
    page's runs.json (run and variant order as they were)."""
    kept = read_json(page / RUNS_FILE)
    runs = {
        name: pd.DataFrame.from_dict(run["variants"], orient="index") for name, run in kept.items()
    }
    translators = {
        name: pd.DataFrame.from_dict(run[TRANSLATORS], orient="index", dtype=float)
        for name, run in kept.items()
    }
    return runs, translators


def write_page(
    run_paths: Sequence[Path], variants: Sequence[str], out: Path, title: str
) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    """The page, its figure, runs.json and each run's evidence under `out`, from the run
    folders; returns the runs' variants and translators tables."""
    runs = {run.name: run_table(run, variants) for run in run_paths}
    translators = {run.name: translator_table(run) for run in run_paths}
    figure = curves_figure(run_paths, variants)
    if figure is not None:
        save_figure(figure, out / CURVES_FIGURE)
    page = benchmark_page(runs, variants, translators, figure is not None, title)
    write_text(out / "comparison.md", page)
    write_json(
        out / RUNS_FILE,
        {
            name: {
                "variants": table.to_dict("index"),
                TRANSLATORS: translators[name].to_dict("index"),
            }
            for name, table in runs.items()
        },
    )
    for run in run_paths:
        # The evidence of each run: its scores and validation curves, as the stages wrote them.
        for variant in variants:
            kept = out / run.name / variant
            kept.mkdir(parents=True, exist_ok=True)
            shutil.copy(run / "reports" / "metrics" / f"{variant}.json", kept / "metrics.json")
            curve = run / "models" / "seg" / variant / "val_curve.csv"
            if curve.is_file():
                shutil.copy(curve, kept / "val_curve.csv")
    return runs, translators


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__)
    given = parser.add_mutually_exclusive_group(required=True)
    given.add_argument("--run", type=Path, action="append", help="a finished run")
    given.add_argument(
        "--from-page", type=Path, metavar="FOLDER",
        help="rewrite only the --readme block, from this page folder's runs.json",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("reports/benchmark"))
    parser.add_argument(
        "--variants", nargs="+", help="the variants the runs evaluated (default: every variant of "
        "the first run's reports/comparison.csv); source_only and oracle anchor the gap"
    )  # fmt: skip
    parser.add_argument(
        "--readme", type=Path, help="also rewrite this page's benchmark block (its markers)"
    )
    parser.add_argument(
        "--readme-marker", default="benchmark",
        help="the README block to rewrite: between <!-- NAME:start --> and <!-- NAME:end -->",
    )  # fmt: skip
    parser.add_argument("--title", default=TITLE, help="the page's heading")
    args = parser.parse_args(argv)
    if args.from_page is not None:
        if args.readme is None:
            parser.error("--from-page rewrites a --readme block: name the page")
        runs, translators = kept_tables(args.from_page)
        variants, out = args.variants or list(next(iter(runs.values())).index), args.from_page
    else:
        variants = args.variants or list(
            pd.read_csv(args.run[0] / "reports" / "comparison.csv", index_col=0).index
        )
        runs, translators = write_page(args.run, variants, args.out, args.title)
        out = args.out
    if args.readme is not None:
        page_link = Path(os.path.relpath(out / "comparison.md", args.readme.parent))
        section = readme_section(runs, variants, translators, page_link)
        command = block_command(args.readme, args.readme_marker)
        try:
            blocks.replace_block(args.readme, args.readme_marker, section, command)
        except blocks.BlockError as err:
            raise SystemExit(str(err)) from err
    if args.from_page is None:
        print((args.out / "comparison.md").read_text())


if __name__ == "__main__":
    main()
