"""telecorder's own store, as a conversion source (``reader``) and target (``writer``), and the
``merge`` of a sharded conversion's parts."""

from .merge import merge_parts
from .reader import NativeReader
from .writer import NativeWriter

__all__ = ["NativeReader", "NativeWriter", "merge_parts"]
