"""`megarouter`: run a MegaRouter service.

  megarouter up            control plane + proxy + simulated providers, seeded
  megarouter controlplane  the gRPC control plane
  megarouter proxy         an OpenAI-compatible data-plane proxy
  megarouter sim           a simulated provider
  megarouter console       the web console
"""

from __future__ import annotations

import argparse
import importlib
import sys

from megarouter import __version__
from megarouter.runtime import die_with_parent, exit_quietly_on_closed_stdout

# Subcommand -> module with add_arguments(parser) and run(args) -> int.
# Imported lazily so `megarouter sim` does not load gRPC, and so on.
COMMANDS = {
    "up": ("megarouter.up", "run the whole system locally (control plane, proxy, simulators)"),
    "controlplane": ("controlplane.server", "run the gRPC control plane"),
    "proxy": ("dataplane.server", "run a data-plane proxy"),
    "sim": ("megarouter.sim.server", "run a simulated provider"),
    "console": ("console.server", "run the web console (sign-in, API keys, usage, fleet)"),
}


def main(argv: list[str] | None = None) -> int:
    die_with_parent()
    # `megarouter --help | head -1`, `megarouter up | head -3`: a closed stdout ends the command quietly,
    # with status 141 like a Unix tool killed by SIGPIPE (megarouter.runtime.CLOSED_STDOUT_EXIT says why).
    return exit_quietly_on_closed_stdout(lambda: _main(sys.argv[1:] if argv is None else argv))


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="megarouter", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"megarouter {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text)
    # Parse the command name first, then let its module add its own flags.
    known, _rest = parser.parse_known_args(argv[:1] if argv and not argv[0].startswith("-") else argv)
    if known.command is None:
        parser.print_help()
        return 2
    module = importlib.import_module(COMMANDS[known.command][0])
    command_parser = argparse.ArgumentParser(prog=f"megarouter {known.command}",
                                             description=COMMANDS[known.command][1])
    module.add_arguments(command_parser)
    args = command_parser.parse_args(argv[1:])
    args.command_argv = argv[1:]  # as given, for a command that starts copies of itself
    return module.run(args)


if __name__ == "__main__":
    sys.exit(main())
