"""The gate's power said before a run: the floor and the typical certifiable gain."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from ev3evo.adapt.power import smallest_gain
from ev3evo.assess.stats import paired_normal


@pytest.mark.parametrize("n", [40, 179, 1000])
def test_the_floor_is_where_the_paired_test_turns_significant(n):
    floor, _ = smallest_gain(n, alpha=0.05)
    k = round(floor * n)

    def pvalue(k):
        better = (np.arange(n) < k).astype(np.float32)
        return float(paired_normal(jnp.asarray(better)[None], jnp.zeros(n), 0.05).pvalue[0])

    assert pvalue(k) <= 0.05 < pvalue(k - 1)


def test_the_typical_gain_shrinks_with_the_square_root_of_the_examples():
    _, a = smallest_gain(400, 0.05, disagreement=0.1)
    _, b = smallest_gain(1600, 0.05, disagreement=0.1)
    assert b == pytest.approx(a / 2)
    assert smallest_gain(400, 0.05)[1] is None
