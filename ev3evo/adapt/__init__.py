"""Adapt: selection, the safety gate, allocation of slots between sources.

Example::

    from ev3evo.adapt import acceptance, allocation, certification, gate
    assert gate.Gate(correction="split").validated().correction == "split"
    assert "lexicographic" in acceptance.ACCEPTANCE and "holm" in certification.CERTIFICATION
    assert allocation.Allocation().validated([4, 4]).population_size == 8
"""
