"""The state room: a nested state <-> flat ``{key.path: tensor}`` map plus a JSON skeleton.

:mod:`.tree` flattens and rebuilds states, :mod:`.skeleton` reads a skeleton back (validated) and
selects parts of it, :mod:`.leafcodecs` holds the leaf codecs and the dtype table, and :mod:`.torch`
the torch codec and capture (RNG states, fence hooks). Only :mod:`.torch` imports torch, and it is
loaded by name, on first use; this package imports nothing.
"""

from __future__ import annotations
