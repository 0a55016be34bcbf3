"""Data: records from manifests, image folders and shards; robust datasets; samplers; feature caches."""

from mcip.data.cache import FeatureCache, RaggedFeatures, cache_key
from mcip.data.captions import attach_captions, read_caption_sidecar, write_caption_sidecar
from mcip.data.dataset import ImageDataset, collate_images
from mcip.data.images import IMAGE_EXTENSIONS, find_images, open_image
from mcip.data.limits import ImageLimits, ImageRefused, default_image_limits
from mcip.data.loader import ResumableLoader, ResumableShardLoader
from mcip.data.manifest import load_records, read_image_folder, read_manifest
from mcip.data.pairs import CollatePairs, SampledCaptionDataset
from mcip.data.records import ImageRecord, class_index
from mcip.data.sampler import ClassBalancedBatchSampler, EpochBatchSampler
from mcip.data.split import split_by_class, split_within_classes
from mcip.data.webdataset import ShardDataset, list_shards, read_shard_records, write_shards

__all__ = [
    "IMAGE_EXTENSIONS",
    "ClassBalancedBatchSampler",
    "CollatePairs",
    "EpochBatchSampler",
    "FeatureCache",
    "ImageDataset",
    "ImageLimits",
    "ImageRecord",
    "ImageRefused",
    "RaggedFeatures",
    "ResumableLoader",
    "ResumableShardLoader",
    "SampledCaptionDataset",
    "ShardDataset",
    "attach_captions",
    "cache_key",
    "class_index",
    "collate_images",
    "default_image_limits",
    "find_images",
    "list_shards",
    "load_records",
    "open_image",
    "read_caption_sidecar",
    "read_image_folder",
    "read_manifest",
    "read_shard_records",
    "split_by_class",
    "split_within_classes",
    "write_caption_sidecar",
    "write_shards",
]
