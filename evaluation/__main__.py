"""`python -m evaluation ...`: `llama-paper eval` as a module, for `accelerate launch -m evaluation` and torchrun."""

import sys

from .cli import build_parser, run

if __name__ == "__main__":
    sys.exit(run(build_parser().parse_args()))
