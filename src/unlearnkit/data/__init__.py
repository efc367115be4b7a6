"""Datasets, splits and batching."""

from .datasets import DATASETS, Augment, DatasetBundle, DatasetInfo, ImageDataset, dataset_summary, load_dataset
from .loading import as_image_dataset, iter_batches
from .splits import ForgetSpec, Split, make_split, parse_forget_spec, split_for

__all__ = [
    "DATASETS",
    "Augment",
    "DatasetBundle",
    "DatasetInfo",
    "ForgetSpec",
    "ImageDataset",
    "Split",
    "as_image_dataset",
    "dataset_summary",
    "iter_batches",
    "load_dataset",
    "make_split",
    "parse_forget_spec",
    "split_for",
]
