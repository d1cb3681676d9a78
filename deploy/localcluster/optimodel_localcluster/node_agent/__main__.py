"""`python -m optimodel_localcluster.node_agent run|cleanup ...`"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pydantic import ValidationError

from .config import load_config


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m optimodel_localcluster.node_agent",
                                     description="The local cluster's node agent (a stand-in kubelet).")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="register the nodes and run the pods bound to them")
    run.add_argument("--kubeconfig", type=Path, required=True)
    run.add_argument("--state-dir", type=Path, required=True)
    run.add_argument("--config", type=Path, help="JSON overriding the default topology (NodeAgentConfig)")
    run.add_argument("--verbose", action="store_true")
    clean = commands.add_parser("cleanup", help="remove every process, netns, veth, bridge and mount point left")
    clean.add_argument("--state-dir", type=Path, required=True)
    clean.add_argument("--config", type=Path)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
        format="%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        config = load_config(args.config)
    except (ValueError, ValidationError) as error:
        print(f"invalid node agent config: {error}", file=sys.stderr)
        return 2
    if args.command == "cleanup":
        from .cleanup import cleanup

        for line in cleanup(args.state_dir, config):
            print(f"removed {line}")
        return 0
    if not args.kubeconfig.exists():
        print(f"kubeconfig {args.kubeconfig} does not exist", file=sys.stderr)
        return 2
    from .agent import Agent

    return Agent(args.kubeconfig, args.state_dir, config).run()


if __name__ == "__main__":
    sys.exit(main())
