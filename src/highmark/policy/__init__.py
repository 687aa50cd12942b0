"""The policy room: when to stop, when to reduce the learning rate, what to keep.

Pure Python (stdlib only): no numpy, no torch, no I/O. Everything here works on plain floats and
records, so it is fast and easy to test by hand.

:mod:`.monitor` is the one comparator (with :mod:`.smoothing`); :mod:`.criterion` the protocol
every stopping rule follows; :mod:`.rules`, :mod:`.patience` and :mod:`.prechelt` the rules;
:mod:`.stopping` the stopper that runs them (with :mod:`.plateau`'s learning-rate schedule);
:mod:`.retention` what to keep and :mod:`.schedule` when to save. The public names are
re-exported by :mod:`highmark` and :mod:`highmark.criteria`; this package imports nothing.
"""

from __future__ import annotations
