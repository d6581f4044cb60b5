"""Adapt: selection, the safety gate, allocation of slots between sources."""
