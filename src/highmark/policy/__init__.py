"""The policy room: when to stop, when to reduce the learning rate, what to keep.

Pure Python (stdlib only): no numpy, no torch, no I/O. Everything here works on plain floats and
records, so it is fast and easy to test by hand.
"""

from __future__ import annotations

from highmark.policy.monitor import ExponentialMovingAverage, Monitor, MovingAverage, Smoothing

__all__ = ["ExponentialMovingAverage", "Monitor", "MovingAverage", "Smoothing"]
