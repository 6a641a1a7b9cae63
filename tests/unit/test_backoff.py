"""Back-off: django-async's 60 s × n^1.6 with jitter, configurable."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from aio_async.backoff import exponential, retry_delay
from aio_async.conf import Backoff, QueueSettings


@pytest.mark.parametrize("attempt", [1, 2, 3, 7])
def test_default_is_the_original_formula_within_jitter(attempt: int) -> None:
    expected = 60 * attempt**1.6
    delays = [retry_delay(attempt, QueueSettings()) for _ in range(200)]
    assert all(expected * 0.9 <= delay <= expected * 1.1 for delay in delays)
    assert len(set(delays)) > 1  # jitter spreads retries out


def test_without_jitter_it_is_exact_and_capped() -> None:
    backoff = Backoff(base=10, exponent=2, jitter=0, max=250)
    assert exponential(1, backoff) == 10
    assert exponential(3, backoff) == 90
    assert exponential(10, backoff) == 250


def test_callable_and_dotted_policies() -> None:
    assert retry_delay(4, QueueSettings(backoff=lambda attempt: attempt * 1.5)) == 6.0
    assert retry_delay(4, QueueSettings(backoff="math.sqrt")) == 2.0
    with pytest.raises(ImproperlyConfigured, match=r"no\.such"):
        retry_delay(1, QueueSettings(backoff="no.such.policy"))
