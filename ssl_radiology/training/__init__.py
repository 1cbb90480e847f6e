"""Running a pre-training: data module and sampler (``data``), the Lightning trainer with atomic checkpoints
(``trainer``) and the run's callbacks (``callbacks``). ``ssl-rad pretrain`` wires them together."""

from ssl_radiology.training.data import MixedSampler, PretrainData
from ssl_radiology.training.trainer import AtomicCheckpointIO, build_trainer

__all__ = ["AtomicCheckpointIO", "MixedSampler", "PretrainData", "build_trainer"]
