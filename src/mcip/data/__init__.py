"""Data: image discovery and robust decoding."""

from mcip.data.images import IMAGE_EXTENSIONS, find_images, open_image

__all__ = ["IMAGE_EXTENSIONS", "find_images", "open_image"]
