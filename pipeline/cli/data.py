"""`vpr data synth|check|index|stats`: datasets."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.cli.arguments import add_quiet


def _data_synth(args: argparse.Namespace) -> int:
    from pipeline.data.synthetic import generate

    if args.benchmark:
        from pipeline.data.benchmarks import benchmark_keys
        from pipeline.data.synthetic.benchmarks import generate_benchmarks

        summary = generate_benchmarks(Path(args.out), benchmark_keys(args.benchmark), seed=args.seed, scale=args.scale,
                                      image_size=args.image_size, progress=not args.quiet)
        print(json.dumps(summary, indent=2))
        return 0
    summary = generate(Path(args.out), seed=args.seed, scale=args.scale, image_size=args.image_size,
                       gsv_cities_layout=args.gsv_cities_layout, progress=not args.quiet)
    print(json.dumps(summary, indent=2))
    return 0


def _data_check(args: argparse.Namespace) -> int:
    from pipeline.data.checks import check_dataset

    report = check_dataset(args.root, min_images_per_place=args.min_images_per_place,
                           radius=args.radius, decode_images=not args.no_decode, progress=not args.quiet)
    for problem in report.problems:
        print(problem)
    for key, counts in report.scanned.items():
        print(f"ok      {key}: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    print(f"{len(report.errors)} error(s), {len(report.warnings)} warning(s) in {args.root}")
    return 0 if report.ok else 1


def _data_index(args: argparse.Namespace) -> int:
    from pipeline.data.index import write_index

    out = Path(args.out) if args.out else Path(args.root) / ".vpr-index"
    summary = write_index(args.root, out, radius=args.radius)
    print(json.dumps(summary, indent=2))
    print(f"index written to {out}")
    return 0


def _data_stats(args: argparse.Namespace) -> int:
    from pipeline.data.stats import dataset_stats, format_table

    stats = dataset_stats(args.roots, radius=args.radius)
    print(json.dumps([s.to_dict() for s in stats], indent=2) if args.json else format_table(stats))
    return 0


def _register_stats(data_sub: argparse._SubParsersAction) -> None:
    stats = data_sub.add_parser("stats", help="count images, places, cities, queries per split (paper 004 Table I)",
                                description="Per split under each ROOT: images, places and cities (training "
                                "sets); queries, database images and queries without a positive within "
                                "--radius metres (evaluation splits).")
    stats.add_argument("roots", nargs="+", help="dataset roots (a split, a dataset or a folder of datasets)")
    stats.add_argument("--radius", type=float, default=25.0, help="positive radius in metres (default 25)")
    stats.add_argument("--json", action="store_true", help="print JSON (one object per split) instead of a table")
    stats.set_defaults(func=_data_stats)


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the `vpr` parser."""
    data = sub.add_parser("data", help="generate, check and index datasets",
                          description="Generate the embedded datasets, check and index dataset folders.")
    data_sub = data.add_subparsers(dest="data_command", required=True)

    synth = data_sub.add_parser("synth", help="generate the embedded datasets (real layouts)",
                                description="Write procedurally generated GSV-XS, SF-XS and Tokyo-XS "
                                "datasets in the real releases' layouts. Deterministic in --seed.")
    synth.add_argument("--out", required=True, help="output folder (created; must be empty or a previous generation)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synth.add_argument("--scale", default="demo", help="size preset: demo, small, medium, large, real (480x640) (default demo)")
    synth.add_argument("--image-size", default=None,
                       help="N (square side) or HxW in pixels, e.g. 480x640 for the real datasets' size "
                       "(default: the scale's square size)")
    synth.add_argument("--benchmark", default=None, metavar="NAME[,NAME]|all",
                       help="write instead the embedded version of these benchmarks (pitts30k, msls_val, nordland, "
                       "sped, amstertime, st_lucia, eynsham, tokyo247, svox, or all) in their real formats, "
                       "one folder each under --out")
    synth.add_argument("--gsv-cities-layout", action="store_true",
                       help="also write the training set in the original GSV-Cities layout (Dataframes/ + Images/)")
    add_quiet(synth)
    synth.set_defaults(func=_data_synth)

    check = data_sub.add_parser("check", help="report every problem in a dataset root (read-only)",
                                description="Scan a dataset root and report all problems at once: missing "
                                "split folders, unreadable/truncated/zero-byte images, names without "
                                "coordinates, small places, queries without positives. Exit 1 on errors.")
    check.add_argument("root", help="dataset root (a split, a dataset or a folder of datasets)")
    check.add_argument("--min-images-per-place", type=int, default=4, help="minimum images of a training place (default 4)")
    check.add_argument("--radius", type=float, default=25.0, help="positive radius in metres (default 25)")
    check.add_argument("--no-decode", action="store_true", help="skip decoding images (names and layout only)")
    add_quiet(check)
    check.set_defaults(func=_data_check)

    index = data_sub.add_parser("index", help="write manifests and ground-truth positives",
                                description="Write a manifest per split (path, place, city, UTM) and, for "
                                "evaluation splits, each query's positives within --radius metres.")
    index.add_argument("root", help="dataset root")
    index.add_argument("--out", default=None, help="output folder (default ROOT/.vpr-index)")
    index.add_argument("--radius", type=float, default=25.0, help="positive radius in metres (default 25)")
    index.set_defaults(func=_data_index)
    _register_stats(data_sub)
