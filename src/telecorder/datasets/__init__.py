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
    # The PyTorch loaders live in telecorder.loaders (above this package) and import torch;
    # these names stay for existing users and load only when asked for.
    if name in ("TorchDataset", "MixtureDataset"):
        from .. import loaders

        return getattr(loaders, name)
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
    "MixtureDataset",
    "Step",
    "SyncReport",
    "TorchDataset",
    "VLAPromptAdapter",
    "analyze_timing",
    "check_dataset",
    "episode_split",
    "image_feature",
    "is_dataset",
    "mark_bad",
    "repair_dataset",
]
