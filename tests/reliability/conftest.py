"""The reliability suite runs reduced counts in CI and its full counts behind ``--reliability-full``.

Each test asks ``tries(reduced, full)`` how many times to try; the counts a
full run used are what docs/reliability.md reports.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest


@pytest.fixture(scope="session")
def full_run(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--reliability-full"))


@pytest.fixture(scope="session")
def tries(full_run: bool) -> Callable[[int, int], int]:
    """``tries(reduced, full)``: the count for this run."""

    def pick(reduced: int, full: int) -> int:
        return full if full_run else reduced

    return pick
