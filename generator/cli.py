"""Command line: `python -m generator run|render|site|bench|releases|plan|merge`.

Errors print without traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from generator.errors import AtlasError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m generator", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the suite and write artifacts")
    run.add_argument("--suite", default="suite.toml")
    run.add_argument("--out", default="build/artifacts")
    run.add_argument("--models", nargs="+", help="only these models (names in the suite)")
    run.add_argument("--device", choices=["auto", "cpu", "cuda"])
    run.add_argument("--strict", action="store_true", help="exit non-zero if anything was skipped")
    run.add_argument("--no-progress", action="store_true")
    _execution_args(run)
    site = sub.add_parser("site", help="run (cached), render docs/ and build site/")
    site.add_argument("--suite", default="suite.toml")
    site.add_argument("--out", default="build/artifacts")
    site.add_argument("--docs", default="docs")
    site.add_argument("--site", default="site")
    site.add_argument("--device", choices=["auto", "cpu", "cuda"])
    site.add_argument("--no-run", action="store_true",
                      help="render and build from the artifacts as they are, loading no model "
                           "(CI's site job, after merge)")
    _execution_args(site)
    bench = sub.add_parser("bench", help="measure capture overhead, memory, PCA and UMAP")
    bench.add_argument("--quick", action="store_true", help="fewer repetitions, no RSS or suite runs")
    bench.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                       help="cuda: capture ratios on the GPU (random-weight model shapes)")
    rel = sub.add_parser("releases", help="compare hub models' current revisions with the lock file")
    rel.add_argument("--suite", default="suite.toml")
    rel.add_argument("--lock", type=Path, help="default: models.lock.json beside the suite")
    rel.add_argument("--update", action="store_true", help="rewrite the lock with current revisions")
    rel.add_argument("--endpoint", help="hub API endpoint (default: HF_ENDPOINT or huggingface.co)")
    rel.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    rel.add_argument("--pr-body", type=Path, metavar="FILE",
                     help="write a Markdown summary (changes, [[watch]] candidates) for a pull request")
    render = sub.add_parser("render", help="render artifacts into docs/ (no torch needed)")
    render.add_argument("--artifacts", default="build/artifacts")
    render.add_argument("--docs", default="docs")
    _ci_commands(sub)
    args = parser.parse_args(argv)
    from generator.memory import reuse_freed_memory

    reuse_freed_memory()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "site":
            return _site(args)
        if args.command == "bench":
            from generator import bench as bn

            bn.main(args.quick, args.device)
            return 0
        if args.command == "releases":
            from generator import releases
            from generator.suite import load_suite

            suite = load_suite(args.suite)
            return releases.main(suite, releases.lock_path_for(suite, args.lock), args.update,
                                 args.endpoint, args.timeout, args.pr_body)
        if args.command in ("plan", "merge"):
            return _ci(args)
        if args.command == "render":
            from generator.site import render as rnd

            rnd.render(Path(args.artifacts), Path(args.docs))
            print(f"rendered {args.artifacts} into {args.docs}/")
            return 0
    except AtlasError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: completed entries are kept, the next run resumes", file=sys.stderr)
        return 130
    except MemoryError as exc:
        from generator.memory import out_of_memory

        print(f"error: {out_of_memory(args.command, 'this command', exc)}", file=sys.stderr)
        return 2
    return 0


def _execution_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                   help="weights dtype for every model (default: each model's `dtype`, float32)")
    p.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="ray: shards run on Ray actors (results identical to local)")
    p.add_argument("--address", help="Ray cluster address; `auto`: the one `ray start` started "
                   "(default: RAY_ADDRESS, as `ray job submit` sets it, else start a local one)")
    p.add_argument("--shards", type=int, default=2, metavar="N",
                   help="Ray workers (one model copy each) running shards at once")
    p.add_argument("--cpus-per-worker", type=int, metavar="N",
                   help="CPUs each Ray worker reserves (default: a local cluster's cores split "
                        "among the workers; 1 on an existing cluster)")
    p.add_argument("--gpus-per-worker", type=float, default=0.0, metavar="N",
                   help="GPUs each Ray worker reserves; above 0 the workers run on CUDA")
    p.add_argument("--lock", type=Path, help="the lock hub models are pinned to "
                   "(default: models.lock.json beside the suite)")


def _ci_commands(sub: argparse._SubParsersAction) -> None:
    plan = sub.add_parser("plan", help="print the CI matrix: models whose build is not published")
    plan.add_argument("--suite", default="suite.toml")
    plan.add_argument("--published", type=Path, metavar="DIR",
                      help="the published artifact tree (missing: nothing is published yet)")
    plan.add_argument("--actionlint-config", type=Path, default=Path(".github/actionlint.yaml"),
                      help="where custom runner labels are declared")
    plan.add_argument("--lock", type=Path, help="default: models.lock.json beside the suite")
    plan.add_argument("--all", action="store_true", help="plan every model (a full rebuild)")
    plan.add_argument("--github-output", action="store_true",
                      help="also append matrix= and count= to $GITHUB_OUTPUT")
    merge = sub.add_parser("merge", help="join per-model artifact trees into one")
    merge.add_argument("trees", nargs="+", type=Path, help="oldest first: published, then new runs")
    merge.add_argument("--out", type=Path, default=Path("build/artifacts"))
    merge.add_argument("--suite", help="order and list models as this suite does")
    merge.add_argument("--keep-revisions", type=int, default=50, metavar="N",
                       help="history entries kept per model")


def _ci(args: argparse.Namespace) -> int:
    if args.command == "merge":
        from generator import merge

        if args.keep_revisions < 1:
            raise AtlasError("--keep-revisions", f"must be at least 1, got {args.keep_revisions}",
                             "pass --keep-revisions 50")
        return merge.main(args.trees, args.out, args.suite, args.keep_revisions)
    from generator import plan
    from generator.suite import load_suite

    return plan.main(load_suite(args.suite), args.published, args.actionlint_config, args.lock,
                     args.all, args.github_output)


def _run(args: argparse.Namespace) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from generator import pipeline
    from generator.suite import load_suite

    if args.shards < 1:
        raise AtlasError("--shards", f"must be at least 1, got {args.shards}", "pass --shards 2")
    if (args.cpus_per_worker is not None and args.cpus_per_worker < 1) or args.gpus_per_worker < 0:
        raise AtlasError("--cpus-per-worker/--gpus-per-worker", "must be at least 1 CPU and 0 GPU",
                         "e.g. --cpus-per-worker 4 --gpus-per-worker 1")
    suite = load_suite(args.suite)
    execution = pipeline.Execution(args.executor, args.shards, args.address, args.dtype,
                                   args.cpus_per_worker, args.gpus_per_worker)
    summary = pipeline.run(suite, Path(args.out), args.models, args.device,
                         progress=not args.no_progress, execution=execution, lock=args.lock)
    print("\n".join(summary.lines()))
    return summary.exit_code(args.strict)


def _site(args: argparse.Namespace) -> int:
    import time

    from generator.site import render as rnd

    t0 = time.perf_counter()
    args.models, args.strict, args.no_progress = None, False, False
    # 3 when no model could be built: the site still shows why, but CI stops
    code = 0 if args.no_run else _run(args)
    rnd.render(Path(args.out), Path(args.docs))
    rnd.build_site(Path(args.docs), Path(args.site))
    print(f"site built in {args.site}/ ({time.perf_counter() - t0:.1f}s); preview: make serve")
    return code
