"""The options every measuring child of the suite shares (each writes its result as JSON to --out)."""

from __future__ import annotations

import argparse
from pathlib import Path


def measurement_parser(doc: str | None, *, prompt_tokens: int,
                       gen_tokens: int | None = None) -> argparse.ArgumentParser:
    """A parser with --out, --prompt-tokens, --gen-tokens (when the measurement decodes), --rounds and
    --threads; the defaults are the issue's sizes unless given."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="write the result as JSON here")
    parser.add_argument("--prompt-tokens", type=int, default=prompt_tokens)
    if gen_tokens is not None:
        parser.add_argument("--gen-tokens", type=int, default=gen_tokens)
    parser.add_argument("--rounds", type=int, default=3, help="runs per configuration (medians are reported)")
    parser.add_argument("--threads", type=int, default=2)
    return parser
