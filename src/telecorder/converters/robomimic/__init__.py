"""robomimic HDF5 files: the file layout (``schema``), ``reader``, ``writer``, and the ``merge`` of
a sharded conversion's parts."""

from .merge import merge_parts
from .reader import RobomimicReader
from .writer import RobomimicWriter

__all__ = ["RobomimicReader", "RobomimicWriter", "merge_parts"]
