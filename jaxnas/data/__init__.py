"""Data for searches: tabular tables (embedded Connect-4), tfds image sets, PTB text, batching.

Everything is numpy on the host; the per-step transforms (image normalisation, augmentation) are
pure jnp functions of an explicit key. Image modules load tfds lazily.
"""
from jaxnas.data.batching import BatchSampler, gather, gather_batches
from jaxnas.data.images import (
    CIFAR10_CLASSES,
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    ImageData,
    TfdsImageSource,
    channel_stats,
    load_image_npz,
    load_tfds_images,
    normalize,
    open_tfds,
    random_crop_flip,
)
from jaxnas.data.tabular import (
    EMBEDDED,
    DataNotFoundError,
    TabularData,
    load_csv,
    load_embedded,
    load_npz,
    load_tabular,
    make_tabular,
    stratified_split,
)
from jaxnas.data.text import Corpus, batchify, bptt_window, bptt_windows, load_ptb

__all__ = [
    "BatchSampler", "gather", "gather_batches",
    "CIFAR10_CLASSES", "CIFAR10_MEAN", "CIFAR10_STD", "CIFAR100_MEAN", "CIFAR100_STD",
    "ImageData", "TfdsImageSource", "channel_stats", "load_image_npz", "load_tfds_images",
    "normalize", "open_tfds", "random_crop_flip",
    "EMBEDDED", "DataNotFoundError", "TabularData", "load_csv", "load_embedded", "load_npz",
    "load_tabular", "make_tabular", "stratified_split",
    "Corpus", "batchify", "bptt_window", "bptt_windows", "load_ptb",
]
