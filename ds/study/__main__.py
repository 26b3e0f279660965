"""python -m ds.study run --profile quick | pages | commands --profile quick"""
from __future__ import annotations

import argparse
import sys

from .profiles import ProfileError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ds.study", description="Run the DepthShrinker study.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the chapters with papermill, then build the book")
    run.add_argument("--profile", default="quick", help="a profile of profiles.yaml (default: quick)")
    run.add_argument("--profiles-file", help="another profiles file")
    run.add_argument("--run-root", default=None, help="where runs/<profile> goes (default: runs/)")
    run.add_argument("--chapters", nargs="+", help="only these chapters (e.g. 04_merge 05_throughput)")
    run.add_argument("--restart", action="store_true", help="rerun chosen chapters even when marked done")
    run.add_argument("--no-book", action="store_true", help="do not publish and build the book")
    sub.add_parser("pages", help="regenerate book/reproduce.md and the intro diagram")
    build = sub.add_parser("book", help="publish a finished run into book/ and build it")
    build.add_argument("--profile", default="quick")
    build.add_argument("--run-root", default=None)
    args = parser.parse_args(argv)

    from . import runner
    from .book import build_book, publish, write_static_pages
    try:
        if args.command == "run":
            kwargs = {"run_root": args.run_root} if args.run_root else {}
            runner.run_study(args.profile, profiles_file=args.profiles_file, chapters=args.chapters,
                             restart=args.restart, book=not args.no_book, **kwargs)
        elif args.command == "pages":
            write_static_pages()
        elif args.command == "book":
            from pathlib import Path
            run_dir = Path(args.run_root or runner.REPO_ROOT / "runs") / args.profile
            publish(run_dir, runner.BOOK)
            print(build_book(runner.BOOK))
    except runner.PiecePaused as err:
        print(f"[study] paused: {err}\n[study] the time slice of this piece is over; run the same command "
              f"again to continue", file=sys.stderr)
        return runner.EXIT_PAUSED
    except (runner.ChapterFailed, ProfileError) as err:
        print(f"[study] error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
