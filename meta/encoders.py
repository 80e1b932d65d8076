"""Embedding networks written as pure functions of an explicit list of weight tensors.

Gradient-based meta-learning differentiates through updated ("fast") weights, which are plain
tensors rather than Keras variables; Keras 3 layers cannot have their weights swapped in a
differentiated path. So every encoder here is ``forward(params, x)`` over a flat list of
tensors, and normalisation is per record (LayerNorm), never batch statistics: a monitor
classifies one alert at a time and must not depend on what else is in the batch.

Example
-------
>>> spec = EncoderSpec(kind="mlp", input_shape=(8,), hidden=(16,), embedding_dim=4)
>>> encoder = build_encoder(spec)
>>> params = encoder.init_params(seed=0)
>>> encoder.forward(params, np.zeros((3, 8), np.float32)).shape
TensorShape([3, 4])
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import tensorflow as tf

EncoderKind = Literal["mlp", "conv4"]
NormKind = Literal["layer", "none"]
_EPSILON = 1e-5


@dataclass(frozen=True)
class EncoderSpec:
    """Everything needed to rebuild an encoder; serialised verbatim into model.json."""

    kind: EncoderKind
    input_shape: tuple[int, ...]
    hidden: tuple[int, ...] = (256, 128)
    embedding_dim: int = 64
    norm: NormKind = "layer"
    filters: int = 64
    conv_blocks: int = 4

    def __post_init__(self) -> None:
        if self.kind not in ("mlp", "conv4"):
            raise ValueError(f"encoder kind must be 'mlp' or 'conv4', got {self.kind!r}.")
        if self.norm not in ("layer", "none"):
            raise ValueError(f"norm must be 'layer' or 'none', got {self.norm!r}.")
        if self.kind == "mlp" and len(self.input_shape) != 1:
            raise ValueError(f"an mlp encoder needs a flat input shape, got {self.input_shape}.")
        if self.kind == "conv4" and len(self.input_shape) != 3:
            raise ValueError(f"a conv4 encoder needs an (H, W, C) input, got {self.input_shape}.")
        if any(h < 1 for h in self.hidden) or self.embedding_dim < 1 or self.filters < 1:
            raise ValueError("hidden sizes, embedding_dim and filters must be positive.")
        if self.conv_blocks < 1:
            raise ValueError(f"conv_blocks must be at least 1, got {self.conv_blocks}.")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["input_shape"] = list(self.input_shape)
        data["hidden"] = list(self.hidden)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EncoderSpec:
        values = dict(data)
        values["input_shape"] = tuple(int(v) for v in values["input_shape"])
        values["hidden"] = tuple(int(v) for v in values.get("hidden", (256, 128)))
        return cls(**values)


class Encoder(ABC):
    """Base of the functional encoders: parameter names/shapes, seeded init, forward pass."""

    def __init__(self, spec: EncoderSpec) -> None:
        self.spec = spec
        self.param_names, self.param_shapes = self._layout()

    @property
    @abstractmethod
    def output_dim(self) -> int:
        ...

    def init_params(self, seed: int) -> list[np.ndarray]:
        """Glorot/He-style weights from a numpy generator, so the init is bit-reproducible."""
        rng = np.random.default_rng(seed)
        params = []
        for name, shape in zip(self.param_names, self.param_shapes, strict=True):
            if name.endswith("/kernel"):
                fan_in = int(np.prod(shape[:-1]))
                fan_out = int(shape[-1]) * (int(np.prod(shape[:-2])) if len(shape) > 2 else 1)
                limit = np.sqrt(6.0 / (fan_in + fan_out))
                params.append(rng.uniform(-limit, limit, size=shape).astype(np.float32))
            elif name.endswith("/gamma"):
                params.append(np.ones(shape, np.float32))
            else:
                params.append(np.zeros(shape, np.float32))
        return params

    def forward(self, params: Sequence[tf.Tensor], x: tf.Tensor) -> tf.Tensor:
        """The embedding ``[n, output_dim]`` of ``x``."""
        return self.forward_layers(params, x)[-1]

    @abstractmethod
    def forward_layers(self, params: Sequence[tf.Tensor], x: tf.Tensor) -> list[tf.Tensor]:
        """Every block's output as ``[n, width]`` (convolution maps averaged over space), then
        the embedding: detectors of adversarial inputs look at more than the last layer."""

    @abstractmethod
    def _layout(self) -> tuple[list[str], list[tuple[int, ...]]]:
        ...


class MLPEncoder(Encoder):
    """Dense → LayerNorm → ReLU blocks, then a linear projection to the embedding."""

    @property
    def output_dim(self) -> int:
        return self.spec.embedding_dim

    def _layout(self) -> tuple[list[str], list[tuple[int, ...]]]:
        names: list[str] = []
        shapes: list[tuple[int, ...]] = []
        width = self.spec.input_shape[0]
        for i, hidden in enumerate(self.spec.hidden):
            names += [f"dense_{i}/kernel", f"dense_{i}/bias"]
            shapes += [(width, hidden), (hidden,)]
            if self.spec.norm == "layer":
                names += [f"norm_{i}/gamma", f"norm_{i}/beta"]
                shapes += [(hidden,), (hidden,)]
            width = hidden
        names += ["embedding/kernel", "embedding/bias"]
        shapes += [(width, self.spec.embedding_dim), (self.spec.embedding_dim,)]
        return names, shapes

    def forward_layers(self, params: Sequence[tf.Tensor], x: tf.Tensor) -> list[tf.Tensor]:
        h = tf.cast(x, params[0].dtype)
        i = 0
        outputs = []
        for _ in self.spec.hidden:
            h = tf.matmul(h, params[i]) + params[i + 1]
            i += 2
            if self.spec.norm == "layer":
                h = _layer_norm(h, params[i], params[i + 1], axes=[-1])
                i += 2
            h = tf.nn.relu(h)
            outputs.append(h)
        outputs.append(tf.matmul(h, params[i]) + params[i + 1])
        return outputs


class Conv4Encoder(Encoder):
    """The standard few-shot Conv-4: [3×3 conv, per-record norm, ReLU, 2×2 max-pool] × 4.

    A 28×28×1 input gives a 1×1×64 map, flattened to a 64-d embedding.
    """

    @property
    def output_dim(self) -> int:
        h, w, _ = self.spec.input_shape
        for _ in range(self.spec.conv_blocks):
            h, w = h // 2, w // 2
        return max(h, 1) * max(w, 1) * self.spec.filters

    def _layout(self) -> tuple[list[str], list[tuple[int, ...]]]:
        names: list[str] = []
        shapes: list[tuple[int, ...]] = []
        channels = self.spec.input_shape[2]
        f = self.spec.filters
        for i in range(self.spec.conv_blocks):
            names += [f"conv_{i}/kernel", f"conv_{i}/bias"]
            shapes += [(3, 3, channels, f), (f,)]
            if self.spec.norm == "layer":
                names += [f"norm_{i}/gamma", f"norm_{i}/beta"]
                shapes += [(f,), (f,)]
            channels = f
        return names, shapes

    def forward_layers(self, params: Sequence[tf.Tensor], x: tf.Tensor) -> list[tf.Tensor]:
        # Encoded records arrive flat ([n, H*W*C], as the agent's encoder writes tensor
        # features); episodes and tests may pass images.
        h = tf.reshape(tf.cast(x, params[0].dtype), [-1, *self.spec.input_shape])
        i = 0
        outputs = []
        for _ in range(self.spec.conv_blocks):
            h = tf.nn.conv2d(h, params[i], strides=1, padding="SAME") + params[i + 1]
            i += 2
            if self.spec.norm == "layer":
                h = _layer_norm(h, params[i], params[i + 1], axes=[-3, -2, -1])
                i += 2
            h = tf.nn.relu(h)
            if h.shape[-2] is not None and h.shape[-2] >= 2:
                h = tf.nn.max_pool2d(h, ksize=2, strides=2, padding="VALID")
            outputs.append(tf.reduce_mean(h, axis=[1, 2]))
        outputs[-1] = tf.reshape(h, [-1, self.output_dim])
        return outputs


def build_encoder(spec: EncoderSpec) -> Encoder:
    if spec.kind == "mlp":
        return MLPEncoder(spec)
    return Conv4Encoder(spec)


def _layer_norm(h: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, axes: list[int]) -> tf.Tensor:
    """Per-record statistics over feature axes; scale/shift per channel."""
    mean, variance = tf.nn.moments(h, axes=axes, keepdims=True)
    return (h - mean) * tf.math.rsqrt(variance + _EPSILON) * gamma + beta
