"""The ``reversible`` command line: ``demo``, ``compare`` and ``download``.

A thin layer: each subcommand module provides ``add_arguments(parser)`` and
``main(args)``; this module holds the argument types, so that every bad value
is an argparse usage error (exit status 2, naming the option and what it
accepts), never a traceback.
"""

import argparse
import importlib
import math
import sys

SUBCOMMANDS = {
    "demo": ("reversible.demo",
             "train an MLP on the bundled digits and compute exact hypergradients"),
    "compare": ("reversible.compare_command",
                "grade approximate hypergradients against the exact one over several horizons"),
    "download": (None, "download MNIST or Omniglot into a data directory"),
}


# ------------------------------------------------------------------ argument types
def positive_int(text):
    """An integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer (>= 1); got {text!r}")
    return value


def nonnegative_int(text):
    """An integer >= 0 (seeds)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0; got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0; got {text!r}")
    return value


def positive_float(text):
    """A finite float > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number; got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0; got {text!r}")
    return value


def int_list(text):
    """Comma-separated positive integers, e.g. ``64,32,10``."""
    parts = [p.strip() for p in text.split(",")]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be comma-separated positive integers such as 64,32,10; got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(
            f"must be comma-separated positive integers such as 64,32,10; got {text!r}")
    return values


def method_spec(text):
    """A hypergradient method spec ``name`` or ``name:key=value:...`` whose name is registered."""
    from . import methods
    from .grading import parse_spec
    try:
        name, _ = parse_spec(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    valid = methods.names()
    if name not in valid:
        raise argparse.ArgumentTypeError(
            f"unknown method {name!r}; valid methods: {', '.join(valid)} "
            "(options as name:key=value, e.g. truncated:K=10)")
    return text


def duration_note(text):
    """The sentence every subcommand's help ends with."""
    return f"Expected duration with the defaults: {text}."


def check_output_directory(parser, out):
    """Create ``out`` now (not after the work) or stop with a usage error naming ``--out``."""
    import os
    if os.path.exists(out) and not os.path.isdir(out):
        parser.error(f"argument --out: {out!r} exists and is not a directory")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as err:
        parser.error(f"argument --out: cannot create directory {out!r} ({err.strerror or err})")
    if not os.access(out, os.W_OK | os.X_OK):
        parser.error(f"argument --out: directory {out!r} is not writable")


def warm_up_kernels():
    """Compile the exact kernel before anything is timed (one notice line when it compiles);
    returns the seconds it took, which the commands report apart from their timings."""
    from .kernels import warm_up
    return float(warm_up("auto"))


# ------------------------------------------------------------------ download
#: bound by the network, not the CPU
DOWNLOAD_DURATION = ("the time to fetch about 11 MB (MNIST) or 3 MB (Omniglot background-small); "
                     "files already verified are not fetched again")

def add_download_arguments(parser):
    """``reversible download``'s arguments."""
    parser.add_argument("name", choices=("mnist", "omniglot"), help="data set to fetch")
    parser.add_argument("--dir", default=None,
                        help="where to put the files (default: $REVERSIBLE_DATA_DIR/NAME, else "
                             "~/.reversible/data/NAME, where the experiments look)")
    parser.add_argument("--mirror", default=None, metavar="URL",
                        help="fetch from this base URL instead of the built-in mirrors "
                             "(http(s):// or file://); files are still checked by SHA-256")


def main_download(args):
    from .data import download
    kwargs = {} if args.dir is None else {"directory": args.dir}
    if args.mirror is not None:
        kwargs["base_url"] = args.mirror
    try:
        path = download(args.name, **kwargs)
    except (OSError, ValueError) as err:       # offline, altered file, unwritable directory
        print(f"reversible download {args.name}: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    print(f"{args.name}: ready in {path}")
    return 0


# ------------------------------------------------------------------ entry point
def build_parser():
    from . import __version__
    parser = argparse.ArgumentParser(
        prog="reversible",
        description="Exact hypergradients through training by reversible SGD with momentum. "
                    "Run 'reversible COMMAND --help' for a command's options and how long it takes.")
    parser.add_argument("--version", action="version", version=f"reversible {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        if module is None:
            add, run, duration = add_download_arguments, main_download, DOWNLOAD_DURATION
        else:
            mod = importlib.import_module(module)
            add, run, duration = mod.add_arguments, mod.main, mod.DURATION
        description = help_text + (". " + duration_note(duration) if duration else "")
        p = sub.add_parser(name, help=help_text, description=description)
        add(p)
        p.set_defaults(command_main=run, command_parser=p)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command_main", None):
        parser.print_help()
        return 2
    return args.command_main(args) or 0


if __name__ == "__main__":
    sys.exit(main())
