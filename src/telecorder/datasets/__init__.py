"""The data model and the native store: features, dataset folders, episode files, stats, checks."""

from .async_writer import AsyncEpisodeWriter, Step
from .dataset import Dataset, DatasetWriter, is_dataset
from .doctor import DoctorReport, check_dataset, repair_dataset
from .episode_file import Episode, EpisodeReader
from .features import DatasetInfo, FeatureSpec, image_feature
from .stats import DatasetStats, FeatureStats
from .sync import SyncReport, analyze_timing

__all__ = [
    "AsyncEpisodeWriter",
    "Dataset",
    "DatasetInfo",
    "DatasetStats",
    "DatasetWriter",
    "DoctorReport",
    "Episode",
    "EpisodeReader",
    "FeatureSpec",
    "FeatureStats",
    "Step",
    "SyncReport",
    "analyze_timing",
    "check_dataset",
    "image_feature",
    "is_dataset",
    "repair_dataset",
]
