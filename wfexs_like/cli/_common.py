"""What every verb shares: the global options, exit codes, and turning exceptions into one-line errors.

Only ``argparse`` and the standard library are imported here; the library's
exception classes are looked up by name when an error is being reported, so
a ``--help`` never imports them.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3
EXIT_INTERRUPTED = 130

#: The engines ``--engine`` accepts; kept here as names so parsing imports no factory.
ENGINES = ("docker", "none", "podman", "singularity")


class UsageError(Exception):
    """A mistake in how the command was called (exit 2), found after argparse (a bad tag, a bad path)."""


class PartialFailure(Exception):
    """Some items failed under ``--keep-going`` (exit 3); what succeeded was written."""


def help_width() -> int:
    """The width argparse formats help for: ``shutil.get_terminal_size().columns - 2``, computed
    the way ``shutil`` does ($COLUMNS, else the terminal of stdout, else 80)."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 0
        columns = columns or 80
    return columns - 2


class Parser(argparse.ArgumentParser):
    """argparse, but a mistyped option is reported as unknown, not as a required one missing.

    argparse checks required options before it looks at leftovers, so
    ``--stage-dri x`` used to be reported as "--stage-dir is required". When
    a required option is missing and an unknown one was given, the unknown
    one is the mistake the user needs to hear about (with the nearest real
    option). Sub-parsers inherit this class from the main parser.
    """

    _given: list[str]

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:
        self._given = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        if message.startswith("the following arguments are required"):
            unknown = self._unknown_options()
            if unknown:
                message = "unrecognized arguments: " + " ".join(unknown)
        super().error(message)

    def _get_formatter(self) -> argparse.HelpFormatter:
        # argparse makes a formatter for every argument added, and without a width each one runs
        # ``import shutil`` (with bz2, lzma, fnmatch: 4 ms, for a terminal size)
        return self.formatter_class(prog=self.prog, width=help_width())

    def _unknown_options(self) -> list[str]:
        import difflib

        found: list[str] = []
        for arg in getattr(self, "_given", []):
            if arg == "--":
                break
            name = arg.split("=", 1)[0]
            if not name.startswith("-") or name == "-" or _is_number(name):
                continue
            if name in self._option_string_actions:
                continue
            if not name.startswith("--") and name[:2] in self._option_string_actions:
                continue  # -vv, -j4: short options grouped or with their value attached
            near = difflib.get_close_matches(name, list(self._option_string_actions), n=1)
            found.append(f"{name} (did you mean {near[0]}?)" if near else name)
        return found


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (``--jobs``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 or more")
    return value


def non_negative_int(text: str) -> int:
    """An argparse type: a whole number of at least 0 (``--retry-times``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value


def examples(*lines: str) -> str:
    """The epilog every ``--help`` ends with: runnable examples, one per line."""
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def new_parser(
    sub: argparse._SubParsersAction,
    name: str,
    parents: Sequence[argparse.ArgumentParser],
    *,
    help: str,
    description: str,
    example_lines: Sequence[str],
) -> argparse.ArgumentParser:
    """A sub-command parser with the house settings: global options, no abbreviations, examples."""
    return sub.add_parser(
        name,
        help=help,
        description=description,
        epilog=examples(*example_lines),
        parents=list(parents),
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def add_cache_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="shared cache (default: $WFEXS_LIKE_CACHE_DIR or the XDG cache home)",
    )


def add_registry_access(p: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """The options every verb that talks to registries shares, as one group (a verb may add to it)."""
    registry = p.add_argument_group("registry access")
    registry.add_argument(
        "--insecure-registry",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="talk plain HTTP (or unverified TLS) to this registry; loopback registries always may",
    )
    registry.add_argument(
        "--authfile",
        type=Path,
        default=None,
        metavar="FILE",
        help="registry logins from FILE alone (the auth.json 'podman login' writes, or a docker "
        "config.json); without it $REGISTRY_AUTH_FILE, $DOCKER_CONFIG/config.json or "
        "~/.docker/config.json, and podman's auth.json are read",
    )
    registry.add_argument(
        "--cert-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="TLS files for every registry: CA certificates (*.crt, added to the system's) and a "
        "client pair (*.cert, *.key); without it HOST:PORT/ under ~/.config/containers/certs.d, "
        "/etc/containers/certs.d or /etc/docker/certs.d",
    )
    registry.add_argument(
        "--retry-times",
        type=non_negative_int,
        default=None,
        metavar="N",
        help="retry a failing registry request N times (default: 5)",
    )
    return registry


def check_registry_access(args: argparse.Namespace) -> None:
    """The files the registry options name exist (exit 2 before any request otherwise)."""
    if args.authfile is not None and not args.authfile.is_file():
        raise UsageError(f"--authfile {args.authfile}: no such file")
    if args.cert_dir is not None and not args.cert_dir.is_dir():
        raise UsageError(f"--cert-dir {args.cert_dir}: no such directory")


def global_options() -> argparse.ArgumentParser:
    """Options accepted both before and after the verb (``wfexs-like -v materialize`` and ``... -v``).

    ``default=SUPPRESS`` keeps a sub-parser from overwriting a value the main
    parser already set; the real defaults are filled in by ``_defaults``.
    """
    g = Parser(add_help=False, allow_abbrev=False)
    S = argparse.SUPPRESS
    g.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=S,
        help="-v: one line per step per image; -vv: debug; -vvv: third-party debug too",
    )
    g.add_argument(
        "-q", "--quiet", action="store_true", default=S, help="print nothing but errors and results"
    )
    g.add_argument(
        "--progress",
        choices=("auto", "plain", "none"),
        default=S,
        help="progress display: bars on a terminal (auto), plain lines, or none",
    )
    g.add_argument("--debug", action="store_true", default=S, help="show tracebacks of unexpected errors")
    g.add_argument(
        "--config",
        type=Path,
        default=S,
        metavar="FILE",
        help="settings file (default: $WFEXS_LIKE_CONFIG, else <XDG config home>/wfexs-like/config.toml)",
    )
    return g


def _defaults(args: argparse.Namespace) -> None:
    defaults = (
        ("verbose", 0),
        ("quiet", False),
        ("progress", "auto"),
        ("debug", False),
        ("config", None),
        # False for a command that only reads and prints: it runs without a reporter or logging
        ("reports", True),
    )
    for name, value in defaults:
        if not hasattr(args, name):
            setattr(args, name, value)


def build_parser(
    modules: Sequence[str], summaries: Mapping[str, str] | None = None
) -> argparse.ArgumentParser:
    """The parser of ``modules``' commands; with ``summaries`` (command -> its ``--help`` line)
    instead, one that only names them: enough for ``--help``, ``--version`` and a missing or
    mistyped command, and none of the modules is imported."""
    from .. import __version__

    g = global_options()
    parser = Parser(
        prog="wfexs-like",
        description="Pull workflow containers once, pin them by digest, cache, stage and deploy them.",
        parents=[g],
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=examples(
            "wfexs-like materialize --stage-dir containers -o containers.yaml busybox:1.36",
            "wfexs-like deploy containers.yaml",
            "wfexs-like COMMAND --help",
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    if summaries is not None:
        for name, text in summaries.items():
            sub.add_parser(name, help=text)
        return parser
    for name in modules:
        importlib.import_module(f"{__package__}.{name}").register(sub, [g])
    return parser


def setup_logging(args: argparse.Namespace) -> None:
    """-v: our INFO; -vv: our DEBUG; -vvv: everyone's DEBUG (docker, botocore stay quiet before)."""
    import logging

    level = logging.WARNING
    if args.quiet:
        level = logging.ERROR
    elif args.verbose == 1:
        level = logging.INFO
    elif args.verbose >= 2:
        level = logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if args.verbose < 3:
        for noisy in ("urllib3", "docker", "spython", "botocore", "boto3", "s3transfer"):
            logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def _on_second_sigint(signum: int, frame: object) -> None:
    """The second Ctrl-C: the first already asked workers to stop; leave now, without a traceback."""
    sys.stderr.write("\nwfexs-like: interrupted again; leaving now (partial downloads are kept for resume)\n")
    sys.stderr.flush()
    os._exit(EXIT_INTERRUPTED)


def _on_first_sigint(signum: int, frame: object) -> None:
    from ..progress import request_cancel

    request_cancel()
    signal.signal(signal.SIGINT, _on_second_sigint)
    raise KeyboardInterrupt


def _shown(text: str) -> str:
    """A tag as a message may quote it: as typed when printable and short, escaped and cut otherwise."""
    from ..errors import QUOTE_LIMIT, quote

    return text if text.isprintable() and len(text) <= QUOTE_LIMIT else quote(text)


def report_error(e: BaseException) -> int:
    """One clear message (no traceback) for the failures the library anticipates; their exit code."""
    from ..errors import AbstractWfExSException, ContainerNotFoundException, InvalidReferenceError

    if isinstance(e, UsageError | InvalidReferenceError):
        print(f"wfexs-like: {e}", file=sys.stderr)
        return EXIT_USAGE
    if isinstance(e, PartialFailure):
        print(f"wfexs-like: {e}", file=sys.stderr)
        return EXIT_PARTIAL
    if isinstance(e, ContainerNotFoundException) and e.failures:
        print(f"wfexs-like: {len(e.failures)} container(s) failed:", file=sys.stderr)
        for tag, reason in e.failures:
            print(f"  {_shown(tag)}: {reason}", file=sys.stderr)
        return EXIT_FAILURE
    if isinstance(e, AbstractWfExSException | OSError):
        print(f"wfexs-like: {e}", file=sys.stderr)
        return EXIT_FAILURE
    print(
        f"wfexs-like: internal error: {type(e).__name__}: {e} (run again with --debug for details)",
        file=sys.stderr,
    )
    return EXIT_FAILURE


def main_with(
    modules: Sequence[str],
    argv: Sequence[str] | None = None,
    commands: Mapping[str, str] | None = None,
    summaries: Mapping[str, str] | None = None,
) -> int:
    """Run one command line. ``commands`` maps each command to the module registering it: when the
    line starts with one, only that module's parsers are built (the other verbs' parsers cost a
    tenth of a warm re-stage). A bare ``--help``/``--version`` or no command at all is answered
    from ``summaries`` alone; anything else (a typo, global options first) gets every parser."""
    signal.signal(signal.SIGINT, _on_first_sigint)
    argv = sys.argv[1:] if argv is None else list(argv)
    only_names = None
    if commands and argv and argv[0] in commands:
        modules = (commands[argv[0]],)
    elif summaries and (not argv or argv[0] in ("-h", "--help", "--version")):
        only_names = summaries
    try:
        args = build_parser(modules, only_names).parse_args(argv)
        _defaults(args)
        from .settings import apply

        # A command that reports nothing (``reports=False``) logs nothing and shows no progress:
        # logging and the renderer would be a fifth of its start-up, for nothing.
        if args.reports:
            setup_logging(args)
        apply(args)
        if not args.reports:
            return int(args.run(args))
        # Imported after parsing: ``--help`` and usage errors never pay for the renderer.
        from ..progress import reporting
        from .render import reporter_for

        reporter = reporter_for(args)
        try:
            with reporting(reporter):
                return int(args.run(args))
        finally:
            reporter.close()
    except KeyboardInterrupt:
        print(
            "\nwfexs-like: interrupted; partial downloads are kept for resume, nothing half-written "
            "was published",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `wfexs-like ... | head`: the reader left; that is not an error of ours.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except Exception as e:
        if "args" in locals() and getattr(args, "debug", False):
            raise
        return report_error(e)
