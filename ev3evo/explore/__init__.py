"""Explore: sources of candidate parameters (gradient rollouts, biased gradients, mutations)."""
