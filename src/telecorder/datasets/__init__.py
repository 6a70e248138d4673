"""The data model and the native store: features, dataset folders, episode files, stats, checks."""

from .async_writer import AsyncEpisodeWriter, Step
from .dataset import Dataset, DatasetWriter, is_dataset, mark_bad
from .doctor import DoctorReport, check_dataset, repair_dataset
from .edit import EditError, EditReport
from .episode_file import Episode, EpisodeReader
from .features import DatasetInfo, FeatureSpec, image_feature
from .lock import DatasetLock, DatasetLockedError
from .splits import episode_split
from .stats import DatasetStats, FeatureStats
from .sync import SyncReport, analyze_timing
from .vla_prompt import VLAPromptAdapter


def __getattr__(name: str) -> object:
    # The PyTorch loaders moved up to telecorder.loaders (they read every format and use actions/,
    # both above this package). The old names still resolve, with a warning, without an import
    # statement running up the layers: nothing here loads them unless a caller asks for one.
    if name in ("TorchDataset", "MixtureDataset"):
        import importlib
        import warnings

        warnings.warn(f"telecorder.datasets.{name} moved to telecorder.loaders.{name}; import it from there",
                      DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module("telecorder.loaders"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AsyncEpisodeWriter",
    "Dataset",
    "DatasetInfo",
    "DatasetLock",
    "DatasetLockedError",
    "DatasetStats",
    "DatasetWriter",
    "DoctorReport",
    "EditError",
    "EditReport",
    "Episode",
    "EpisodeReader",
    "FeatureSpec",
    "FeatureStats",
    "Step",
    "SyncReport",
    "VLAPromptAdapter",
    "analyze_timing",
    "check_dataset",
    "episode_split",
    "image_feature",
    "is_dataset",
    "mark_bad",
    "repair_dataset",
]
