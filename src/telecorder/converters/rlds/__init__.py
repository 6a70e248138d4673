"""RLDS / Open X-Embodiment (TFDS folders).

The public API, and the ``rlds`` format's entry point for the converter registry
(:data:`telecorder.converters.FORMATS`): :class:`RLDSReader`, :class:`RLDSWriter` and
:func:`merge_parts` (a sharded conversion's merge). The ``oxe`` output format's entry point
is :mod:`.oxe_merge`. Modules, lowest first: :mod:`.schema` (field names, constants,
features), :mod:`.paths`, :mod:`.meta_checks`; :mod:`.reader`; :mod:`.writer`, :mod:`.oxe`
(+ :mod:`.oxe_stats`); :mod:`.merge`, :mod:`.oxe_merge`. TensorFlow is imported only when a
dataset is opened or written.
"""

from .merge import merge_parts
from .oxe import OXEWriter
from .reader import RLDSReader
from .writer import RLDSWriter

__all__ = ["OXEWriter", "RLDSReader", "RLDSWriter", "merge_parts"]
