"""What the fuzz tests share: the seed policy, and the run of a campaign against a server.

The default run replays one fixed seed, so CI is reproducible and the same inputs guard
against regressions on every run. ``CORRAL_LONG=1`` explores: many more inputs from a
fresh random seed, printed so that ``CORRAL_FUZZ_SEED=<seed>`` replays a failure.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import Coroutine
from typing import Any

import pytest

from tests.conftest import Running, wait_for

LONG = os.environ.get("CORRAL_LONG") == "1"
FIXED_SEED = 20261125


def fuzz_seed() -> int:
    """``CORRAL_FUZZ_SEED`` if set; else a fresh random seed in long mode, a fixed one in CI."""
    env = os.environ.get("CORRAL_FUZZ_SEED")
    if env:
        return int(env)
    return random.SystemRandom().randrange(2**32) if LONG else FIXED_SEED


def run_campaign(
    running: Running,
    campaign: Coroutine[Any, Any, dict[str, int]],
    caplog: pytest.LogCaptureFixture,
) -> dict[str, int]:
    """Run ``campaign`` (it returns a tally of outcomes) against ``running``.

    Afterwards every connection the clients closed must be gone from the server (none
    leaked), and nothing may have been logged at ERROR or with a traceback.
    """
    with caplog.at_level(logging.WARNING):
        tally = asyncio.run(campaign)
        print(f"outcomes: {dict(sorted(tally.items()))}")
        wait_for(lambda: not running.connections, message="connections to be released")
    problems = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not problems, [r.getMessage() for r in problems[:5]]
    return tally
