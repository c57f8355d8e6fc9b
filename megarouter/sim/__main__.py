"""``python -m megarouter.sim``: run the provider simulator."""

from __future__ import annotations

import argparse
import sys

from megarouter.sim.server import add_arguments, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m megarouter.sim",
        description="Provider simulator (OpenAI, Azure OpenAI, Anthropic, Gemini or Bedrock wire), scriptable faults.",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
