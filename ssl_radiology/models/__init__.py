"""1-channel timm backbones and their weights: create, load from any checkpoint spec, export, fingerprint."""

from ssl_radiology.models.backbones import create_backbone, patch_size_of, validate_image_size
from ssl_radiology.models.checkpoints import checkpoint_hash, export_backbone, load_backbone, weights_hash

__all__ = [
    "checkpoint_hash",
    "create_backbone",
    "export_backbone",
    "load_backbone",
    "patch_size_of",
    "validate_image_size",
    "weights_hash",
]
