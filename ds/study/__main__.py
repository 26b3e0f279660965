"""python -m ds.study run --profile quick | book --profile quick | publish --profile cpu | pages
| snapshot --profile cpu (an unfinished run, packed into state/ to commit and resume elsewhere)"""
from __future__ import annotations

import argparse
import logging
import sys

from ds.errors import DeviceError

from . import book, runner, snapshot
from .lock import RunLocked
from .profiles import ProfileError, load_profile

EXIT_INTERRUPTED = 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ds.study", description="Run the DepthShrinker study.")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(command):
        command.add_argument("--profile", default="quick", help="a profile of profiles.yaml (default: quick)")
        command.add_argument("--profiles-file", help="another profiles file")
        command.add_argument("--run-root", default=str(runner.RUNS), help="where runs/<profile> goes (default: runs/)")
        return command

    run = common(sub.add_parser("run", help="run the chapters with papermill, then build the run's book"))
    run.add_argument("--chapters", nargs="+", help="only these chapters (e.g. 04_merge 05_throughput)")
    run.add_argument("--restart", action="store_true", help="rerun chosen chapters even when current")
    run.add_argument("--no-book", action="store_true", help="do not build the run's book")
    common(sub.add_parser("book", help="build the book of a finished run inside its run directory"))
    common(sub.add_parser("publish", help="publish a complete run into book/ and build it"))
    common(sub.add_parser("snapshot", help="pack runs/<profile> into state/<profile>.tar.gz, to commit; "
                                           "`run` restores it on a machine without the run"))
    sub.add_parser("pages", help="regenerate book/reproduce.md, recipe.md, recovery.md and the intro diagram")
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    where = {"profiles_file": getattr(args, "profiles_file", None), "run_root": getattr(args, "run_root", None)}
    try:
        if args.command == "run":
            runner.run_study(args.profile, chapters=args.chapters, restart=args.restart, book=not args.no_book,
                             **where)
        elif args.command == "book":
            print(runner.rebuild_book(args.profile, **where))
        elif args.command == "publish":
            html = runner.publish(args.profile, **where)
            print(html or f"[study] profile {args.profile} has no book: its tables and networks are published")
        elif args.command == "snapshot":
            load_profile(args.profile, args.profiles_file)   # a misspelt profile is named as such
            layout = runner.run_layout(args.profile, args.run_root)
            path = snapshot.save(layout, args.profile)   # a running study goes on meanwhile
            written = snapshot.read_manifest(path)   # read back: the file to commit is checked whole
            print(f"[study] snapshot of {layout.root}: {path} ({snapshot.describe(written)}); "
                  f"commit it, and python -m ds.study run --profile {args.profile} resumes from it on a fresh clone")
        else:
            book.write_static_pages()
    except runner.PiecePaused as err:
        print(f"[study] paused: {err}\n[study] the time slice of this piece is over; run the same command "
              f"again to continue", file=sys.stderr)
        return runner.EXIT_PAUSED
    except KeyboardInterrupt:
        # Ctrl-C also reaches the chapter's kernel; when it dies first, nbclient's pending task fails
        # with DeadKernelError, and asyncio would print that traceback when the task is collected.
        logging.getLogger("asyncio").disabled = True
        print("\n[study] interrupted; finished chapters and checkpoints are kept: run the same command again "
              "to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (runner.ChapterFailed, runner.StaleRun, book.NotPublishable, ProfileError, RunLocked,
            DeviceError, snapshot.SnapshotError) as err:
        print(f"[study] error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        path = err.filename or "the run directory"
        print(f"[study] error: cannot write {path}: {err.strerror or err}; make it writable or choose another "
              f"--run-root", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
