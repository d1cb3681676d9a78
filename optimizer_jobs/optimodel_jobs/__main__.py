"""Job entrypoint: ``python -m optimodel_jobs --config <json or path>`` (or $OPTIMODEL_CONFIG)."""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m optimodel_jobs", description=__doc__)
    parser.add_argument("--config", default=os.environ.get("OPTIMODEL_CONFIG"), help="inline JSON or a file path")
    parser.add_argument(
        "--resource", default=os.environ.get("OPTIMODEL_RESOURCE"),
        help="an OptimizedModel resource (or its spec) as JSON or a file path, instead of --config",
    )
    parser.add_argument("--store", default=None, help="artifact store URI (overrides the config)")
    parser.add_argument("--work-dir", default=None)
    parser.add_argument("--json", action="store_true", help="print the result JSON at the end")
    args = parser.parse_args(argv)
    from rich.console import Console

    from optimodel_jobs.cli import execute, report_refusal

    console = Console(width=None if sys.stdout.isatty() else 180)
    config = args.config
    if args.resource:
        config = _config_from_resource(args.resource, args.store, args.work_dir, console)
        if config is None:
            return 2
    if not config:
        report_refusal("ConfigInvalid", "no config: pass --config or --resource (or set OPTIMODEL_CONFIG)", console)
        return 2
    return execute(config, {"store": args.store, "workDir": args.work_dir}, console, args.json)


def _config_from_resource(text_or_path: str, store: str | None, work_dir: str | None, console: object) -> str | None:
    """The resource mapped to a config, as inline JSON for execute(); None after reporting a refusal."""
    import json
    from pathlib import Path

    import yaml

    from optimodel_jobs.cli import report_refusal
    from optimodel_jobs.errors import OptimizeError
    from optimodel_contracts.from_resource import config_from_resource

    try:
        text = text_or_path if text_or_path.strip().startswith("{") else Path(text_or_path).read_text()
        raw = yaml.safe_load(text)  # JSON is YAML
        if not isinstance(raw, dict):
            raise ValueError("the resource must be a mapping")
        config = config_from_resource(raw, store=store, work_dir=work_dir)
    except OptimizeError as error:
        report_refusal(error.reason, error.message, console)
        return None
    except (OSError, ValueError, KeyError, yaml.YAMLError) as error:
        report_refusal("ConfigInvalid", f"cannot read the OptimizedModel resource: {type(error).__name__}: {error}", console)
        return None
    return json.dumps(config.model_dump(mode="json", by_alias=True))


if __name__ == "__main__":
    sys.exit(main())
