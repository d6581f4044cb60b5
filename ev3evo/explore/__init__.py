"""Explore: sources of candidate parameters (gradient rollouts, biased gradients, mutations).

Example::

    import jax, jax.numpy as jnp, ev3evo
    source = ev3evo.mix(ev3evo.gaussian(4, sigma=0.1), ev3evo.cauchy(2, scale=0.1))
    params = {"w": jnp.zeros(3)}
    state = source.init(jax.random.key(0), params)
    population, state = source.ask(jax.random.key(1), state, params, None, jnp.ones(6, bool))
    assert population["w"].shape == (6, 3)
"""
