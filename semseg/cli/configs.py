"""``semseg configs``: the configs bundled with semseg, usable by name (``semseg train --config camvid``)."""

from __future__ import annotations

import argparse


def add_configs(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("configs", help="list the bundled configs (use one by name: --config camvid)")
    p.add_argument("name", nargs="?", default=None, help="print this config's YAML")
    p.set_defaults(handler=_run_configs)


def _run_configs(args: argparse.Namespace) -> int:
    from semseg.config import bundled_configs, config_path

    if args.name is not None:
        print(config_path(args.name).read_text(), end="")
        return 0
    configs = bundled_configs()
    width = max(len(name) for name in configs) if configs else 0
    for name, about in configs.items():
        print(f"{name:<{width}}  {about}")
    print(f"\nuse one by name: semseg train --config {'camvid' if 'camvid' in configs else 'NAME'} data.root=DIR; "
          "semseg configs NAME prints it (copy it to edit it)")
    return 0
