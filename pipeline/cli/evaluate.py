"""`vpr evaluate`: one checkpoint (or one recorded run) on an evaluation split or on standard benchmarks."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from pipeline import project_files
from pipeline.cli.arguments import add_quiet, deprecated, positive_int
from pipeline.errors import UserError


def _check_resize(resize: list | None, native_ok: bool) -> list | str | None:
    """--resize as [H, W], or 'native' where allowed; anything else is a usage error."""
    if resize is None:
        return None
    if native_ok and resize == ["native"]:
        return "native"
    if len(resize) != 2 or "native" in resize:
        allowed = "H W or native" if native_ok else "H W (native needs --benchmark)"
        raise UserError(f"--resize {' '.join(map(str, resize))}: expected {allowed}")
    return resize


def _evaluate(args: argparse.Namespace) -> int:
    args.resize = _check_resize(args.resize, native_ok=bool(args.benchmark))
    if args.benchmark:
        return _evaluate_benchmarks(args)
    from pipeline.evaluation.from_checkpoint import evaluate_checkpoint

    if args.run:  # the run's MLflow model (runs:/RUN_ID/model) from the store, as a checkpoint file
        from pipeline.tracking.records import checkpoint_from_run

        args.checkpoint = checkpoint_from_run(args.run, Path(tempfile.mkdtemp(prefix="vpr-run-")) / "model.pt")
    result = evaluate_checkpoint(args.checkpoint, args.dataset, out_dir=args.out, device=args.device,
                                 resize=args.resize, interpolation=args.interpolation,
                                 batch_size=args.batch_size, num_workers=args.loader_workers,
                                 progress=not args.quiet)
    print(json.dumps(result, indent=2))
    return 0


def _benchmark_roots(keys: list[str], root: str | None, prepared: str) -> dict[str, str]:
    """{key: folder}: `<root>/<key>` with --benchmark-root, else the prepare stage's benchmarks."""
    from pipeline.profile import load_benchmark_roots

    if root:
        roots = {k: str(Path(root) / k) for k in keys if (Path(root) / k).is_dir()}
        where = f"--benchmark-root {root} (expected a folder <root>/<name> per benchmark)"
    else:
        roots = {k: v for k, v in load_benchmark_roots(prepared).items() if k in keys}
        where = (f"{prepared}/datasets.json (the profile's benchmarks: section, written by `vpr prepare`); "
                 "or pass --benchmark-root")
    missing = [k for k in keys if k not in roots]
    if missing:
        raise UserError(f"no folder for benchmark(s) {', '.join(missing)} in {where}")
    return roots


def _protocol(args: argparse.Namespace):
    """The profile's benchmark protocol (when there is a params file), with the flags applied."""
    from pipeline.data.benchmarks.protocol import ProtocolConfig
    from pipeline.profile import benchmark_protocol, load_profile

    protocol = benchmark_protocol(load_profile(args.params)[1]) if Path(args.params).is_file() else ProtocolConfig()
    changes = {}
    if args.recall_at:
        changes["recall_at"] = [int(n) for n in args.recall_at.split(",")]
    if args.radius is not None:
        changes["positive_radius_m"] = args.radius
    if args.resize is not None:
        changes["resize"] = args.resize
    if args.interpolation:
        changes["interpolation"] = args.interpolation
    changes["batch_size"] = args.batch_size
    try:
        return ProtocolConfig.model_validate({**protocol.model_dump(), **changes})
    except ValueError as err:
        raise UserError(f"benchmark protocol: {err}") from None


def _evaluate_benchmarks(args: argparse.Namespace) -> int:
    from pipeline.data.benchmarks import benchmark_keys

    keys = benchmark_keys(args.benchmark)
    roots = _benchmark_roots(keys, args.benchmark_root, args.prepared)
    protocol = _protocol(args)
    if args.run:  # recorded in the run: metrics test_<key>_recall_at_<n>, protocol tags, predictions
        from pipeline.execution.benchmarks import evaluate_run_on_benchmarks
        from pipeline.tracking.store import Tracker

        results = evaluate_run_on_benchmarks(Tracker(), args.run, roots, protocol, device=args.device,
                                             num_workers=args.loader_workers, progress=not args.quiet)
    else:
        from pipeline.evaluation.from_checkpoint import evaluate_on_benchmark, model_from_checkpoint

        model, cfg, _ = model_from_checkpoint(args.checkpoint)
        results = {}
        for key, root in roots.items():
            out = Path(args.out) / key if args.out else None
            summary = evaluate_on_benchmark(model, cfg, root, protocol, out, args.device, args.loader_workers,
                                            progress=not args.quiet)
            results[key] = {int(n): r for n, r in summary["recalls"].items()}
    print(json.dumps({"protocol": protocol.model_dump(), "recalls": results}, indent=2))
    return 0


def _size(text: str):
    """--resize: `H W` is given as two values; `native` alone means the benchmark's own size."""
    return text if text == "native" else int(text)


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the `vpr` parser."""
    evaluate = sub.add_parser("evaluate", help="evaluate a checkpoint or a recorded run on a split or benchmarks",
                              description="Extract descriptors, exact kNN, Recall@N; saves per-query predictions. "
                              "With --run and --benchmark the results are recorded in that MLflow run "
                              "(metrics test_<benchmark>_recall_at_<n>); nothing is retrained.")
    source = evaluate.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="checkpoint file written by `vpr train`")
    source.add_argument("--run", metavar="RUN_ID", help="MLflow run id: its logged model runs:/RUN_ID/model "
                        "(store: $MLFLOW_TRACKING_URI or the project's mlflow.db)")
    target = evaluate.add_mutually_exclusive_group(required=True)
    target.add_argument("--dataset", help="evaluation split folder (with database/ and queries/), in any format")
    target.add_argument("--benchmark", metavar="NAME[,NAME]|all",
                        help="standard benchmarks (pitts30k, msls_val, nordland, sped, amstertime, st_lucia, "
                        "eynsham, tokyo247, svox, or all), under the benchmark protocol")
    evaluate.add_argument("--benchmark-root", default=None, metavar="DIR",
                          help="folder holding one folder per benchmark (default: those the prepare stage wrote "
                          "to PREPARED/datasets.json)")
    evaluate.add_argument("--out", default=None, help="folder for the result: its summary and per-query predictions")
    evaluate.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    evaluate.add_argument("--resize", type=_size, nargs="+", default=None, metavar="H W|native",
                          help="image size (default: the run config's evaluation.resize; with --benchmark also "
                          "'native': the benchmark's own image size)")
    evaluate.add_argument("--interpolation", default=None,
                          help="bilinear, bicubic, nearest or lanczos (default: the run config's)")
    evaluate.add_argument("--recall-at", default=None, metavar="N[,N]",
                          help="with --benchmark: the Recall@N values (default: the profile's protocol, else 1,5,10,20)")
    evaluate.add_argument("--radius", type=float, default=None,
                          help="with --benchmark: positive radius in metres (default 25; ignored where the "
                          "ground truth is given)")
    evaluate.add_argument("--batch-size", type=positive_int, default=64, help="images per batch (default 64)")
    evaluate.add_argument("--loader-workers", type=int, default=0, metavar="N",
                          help="data-loading processes, as data.num_workers in a run config (default 0: in process)")
    evaluate.add_argument("--params", default=project_files.PARAMS_FILE,
                          help=f"params file whose profile gives the benchmark protocol (default {project_files.PARAMS_FILE})")
    evaluate.add_argument("--prepared", default=project_files.PREPARED_DIR,
                          help=f"output of the prepare stage: benchmark folders (default {project_files.PREPARED_DIR})")
    add_quiet(evaluate)
    deprecated(evaluate, "--num-workers", "--loader-workers", "loader_workers", type=int)
    evaluate.set_defaults(func=_evaluate)
