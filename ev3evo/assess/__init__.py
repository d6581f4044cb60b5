"""Assess: metrics, population evaluation and statistics.

Example::

    import jax.numpy as jnp
    from ev3evo.assess import metrics, stats
    acc = metrics.accuracy(lambda p, x: x @ p)
    scores = acc.stats(jnp.eye(2), {"x": jnp.eye(2), "y": jnp.array([0, 1])})
    mean, se = stats.mean_and_se(scores[:, 0])
    assert float(mean) == 1.0 and float(se) == 0.0
"""
