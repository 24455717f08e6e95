"""The ``reversible`` command line: one subcommand per module.

Each subcommand module provides ``add_arguments(parser)`` and ``main(args)``.
"""

import argparse
import importlib
import sys

SUBCOMMANDS = {
    "demo": ("reversible.demo", "train an MLP on the bundled digits and compute exact hypergradients"),
    "compare": ("reversible.compare", "grade approximate hypergradients against the exact one"),
}


def build_parser():
    parser = argparse.ArgumentParser(prog="reversible", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name == module:
                continue
            raise
        p = sub.add_parser(name, help=help_text, description=help_text)
        mod.add_arguments(p)
        p.set_defaults(_main=mod.main)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_main", None):
        parser.print_help()
        return 2
    return args._main(args) or 0


if __name__ == "__main__":
    sys.exit(main())
