"""Job entrypoint: ``python -m optimodel_jobs --config <json or path>`` (or $OPTIMODEL_CONFIG)."""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m optimodel_jobs", description=__doc__)
    parser.add_argument("--config", default=os.environ.get("OPTIMODEL_CONFIG"), help="inline JSON or a file path")
    parser.add_argument("--store", default=None, help="artifact store URI (overrides the config)")
    parser.add_argument("--work-dir", default=None)
    parser.add_argument("--json", action="store_true", help="print the result JSON at the end")
    args = parser.parse_args(argv)
    from rich.console import Console

    from optimodel_jobs.cli import execute, report_refusal

    console = Console(width=None if sys.stdout.isatty() else 180)
    if not args.config:
        report_refusal("ConfigInvalid", "no config: pass --config or set OPTIMODEL_CONFIG", console)
        return 2
    return execute(args.config, {"store": args.store, "workDir": args.work_dir}, console, args.json)


if __name__ == "__main__":
    sys.exit(main())
