"""Sampling: the `probabilistic_sampler` (head, `probabilistic.py`) and `tail_sampling` (`tail.py`, `policies.py`),
and the OTEP 235 arithmetic both share (`common.py`)."""
