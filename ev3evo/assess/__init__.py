"""Assess: metrics, population evaluation and statistics."""
