"""Where meta-learning runs: device resolution and the matching distribution strategy.

``device: auto`` must work on a laptop, a CPU-only server and a multi-GPU box without code
changes, and ``device: gpu`` on a machine without one must fail loudly instead of silently
training on the CPU for hours.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import tensorflow as tf

logger = logging.getLogger(__name__)

DeviceName = Literal["auto", "cpu", "gpu"]


class DeviceUnavailableError(RuntimeError):
    """The configured device does not exist on this machine."""


@dataclass(frozen=True)
class Placement:
    """The resolved devices: what was asked, what is used, and how many replicas."""

    requested: str
    kind: Literal["cpu", "gpu"]
    devices: tuple[str, ...]

    @property
    def replicas(self) -> int:
        return len(self.devices)


def resolve_device(device: str = "auto") -> Placement:
    """Map ``auto|cpu|gpu`` onto concrete logical devices."""
    if device not in ("auto", "cpu", "gpu"):
        raise ValueError(f"device must be one of ['auto', 'cpu', 'gpu'], got {device!r}.")
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    if device == "gpu" and not gpus:
        raise DeviceUnavailableError(
            "device 'gpu' was requested but TensorFlow sees no GPU; install "
            "`metasentry[gpu]` with a CUDA driver or set model.device to 'auto' or 'cpu'."
        )
    if device in ("auto", "gpu") and gpus:
        return Placement(device, "gpu", tuple(gpus))
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    return Placement(device, "cpu", (cpus[0],))


def strategy_for(placement: Placement) -> tf.distribute.Strategy:
    """MirroredStrategy over several GPUs; a one-device strategy otherwise."""
    if placement.replicas > 1:
        logger.info("meta-training mirrored over %d devices", placement.replicas)
        return tf.distribute.MirroredStrategy(list(placement.devices))
    return tf.distribute.OneDeviceStrategy(placement.devices[0])
