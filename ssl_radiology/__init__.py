"""ssl-radiology: self-supervised pre-training on CT slices and chest X-rays, and transfer evaluation."""

__version__ = "0.1.0"
