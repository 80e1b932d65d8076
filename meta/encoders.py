"""Embedding networks written as pure functions of an explicit list of weight tensors.

Gradient-based meta-learning differentiates through updated ("fast") weights, which are plain
tensors rather than Keras variables; Keras 3 layers cannot have their weights swapped in a
differentiated path. So every encoder here is ``forward(params, x)`` over a flat list of
tensors, and normalisation is per record (LayerNorm), never batch statistics: a monitor
classifies one alert at a time and must not depend on what else is in the batch.

``forward_tasks(params, x)`` is the same network for a meta-batch of ``T`` tasks at once, each
with its own weights: every parameter has a leading task axis ``[T, ...]`` and the inputs are
``[T, n, ...]``. Gradient-based meta-learners adapt all tasks of a meta-batch with it in one
batched op per layer; ``tf.vectorized_map`` over ``forward`` cannot vectorise a convolution's
weight gradient and silently falls back to a loop over tasks. ``forward`` stays the reference:
task ``t`` of ``forward_tasks`` equals ``forward([p[t] for p in params], x[t])``.

Example
-------
>>> spec = EncoderSpec(kind="mlp", input_shape=(8,), hidden=(16,), embedding_dim=4)
>>> encoder = build_encoder(spec)
>>> params = encoder.init_params(seed=0)
>>> encoder.forward(params, np.zeros((3, 8), np.float32)).shape
TensorShape([3, 4])
>>> two_tasks = [np.stack([p, p]) for p in params]
>>> encoder.forward_tasks(two_tasks, np.zeros((2, 3, 8), np.float32)).shape
TensorShape([2, 3, 4])
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
    def forward_tasks(self, params: Sequence[tf.Tensor], x: tf.Tensor) -> tf.Tensor:
        """The embeddings ``[T, n, output_dim]`` of ``x`` (``[T, n, ...]``) under per-task
        weights: every tensor of ``params`` is ``[T, *param_shape]`` and task ``t`` sees only
        its own slice (see the module docstring for why this exists)."""

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

    def forward_tasks(self, params: Sequence[tf.Tensor], x: tf.Tensor) -> tf.Tensor:
        # [T, n, d] @ [T, d, h] is one batched matmul; biases and norm scales [T, h] are
        # broadcast over each task's records.
        h = tf.cast(x, params[0].dtype)
        i = 0
        for _ in self.spec.hidden:
            h = tf.matmul(h, params[i]) + _over_records(params[i + 1], h)
            i += 2
            if self.spec.norm == "layer":
                gamma, beta = (_over_records(p, h) for p in params[i : i + 2])
                h = _task_layer_norm(h, gamma, beta, axes=[-1])
                i += 2
            h = tf.nn.relu(h)
        return tf.matmul(h, params[i]) + _over_records(params[i + 1], h)


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

    def forward_tasks(self, params: Sequence[tf.Tensor], x: tf.Tensor) -> tf.Tensor:
        # Activations stay [T, n, H, W, C]; weight-free ops (pooling) fold tasks into records.
        tasks = _size(params[0], 0)
        h = tf.reshape(tf.cast(x, params[0].dtype), [tasks, -1, *self.spec.input_shape])
        i = 0
        for _ in range(self.spec.conv_blocks):
            h = _task_conv2d_same(h, params[i]) + _over_records(params[i + 1], h)
            i += 2
            if self.spec.norm == "layer":
                gamma, beta = (_over_records(p, h) for p in params[i : i + 2])
                h = _task_layer_norm(h, gamma, beta, axes=[-3, -2, -1])
                i += 2
            h = tf.nn.relu(h)
            if h.shape[-2] is not None and h.shape[-2] >= 2:
                h = _max_pool_records(h)
        return tf.reshape(h, [tasks, -1, self.output_dim])


class MemberEncoders(Encoder):
    """``members`` independent copies of one encoder, their outputs side by side.

    A learner's few-shot accuracy on unseen classes moves by several points between training
    seeds (docs/bench/fewshot.md); members started from different seeds and read together
    average that variance away behind one serving path. Member ``i``'s weights are named
    ``member_{i}/...`` and start from ``seed + i``; every block's output is the members'
    outputs concatenated, member 0 first.

    >>> encoders = MemberEncoders(EncoderSpec(kind="mlp", input_shape=(4,), hidden=(8,)), 3)
    >>> encoders.forward(encoders.init_params(seed=0), np.zeros((2, 4), np.float32)).shape
    TensorShape([2, 192])
    """

    def __init__(self, spec: EncoderSpec, members: int) -> None:
        if members < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {members}.")
        self.members = members
        self.member = build_encoder(spec)
        super().__init__(spec)

    @property
    def output_dim(self) -> int:
        return self.members * self.member.output_dim

    def _layout(self) -> tuple[list[str], list[tuple[int, ...]]]:
        names = [f"member_{i}/{name}" for i in range(self.members)
                 for name in self.member.param_names]
        return names, list(self.member.param_shapes) * self.members

    def init_params(self, seed: int) -> list[np.ndarray]:
        return [array for i in range(self.members) for array in self.member.init_params(seed + i)]

    def split(self, params: Sequence[Any]) -> list[Sequence[Any]]:
        """``params`` cut into each member's own list."""
        size = len(self.member.param_names)
        return [params[i * size:(i + 1) * size] for i in range(self.members)]

    def forward_layers(self, params: Sequence[tf.Tensor], x: tf.Tensor) -> list[tf.Tensor]:
        per_member = [self.member.forward_layers(p, x) for p in self.split(params)]
        return [tf.concat(blocks, axis=-1) for blocks in zip(*per_member, strict=True)]

    def forward_tasks(self, params: Sequence[tf.Tensor], x: tf.Tensor) -> tf.Tensor:
        return tf.concat([self.member.forward_tasks(p, x) for p in self.split(params)], axis=-1)


def build_encoder(spec: EncoderSpec, members: int = 1) -> Encoder:
    """The encoder ``spec`` describes; ``members > 1`` gives that many side by side."""
    if members > 1:
        return MemberEncoders(spec, members)
    if spec.kind == "mlp":
        return MLPEncoder(spec)
    return Conv4Encoder(spec)


def _layer_norm(h: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, axes: list[int]) -> tf.Tensor:
    """Per-record statistics over feature axes; scale/shift per channel."""
    mean, variance = tf.nn.moments(h, axes=axes, keepdims=True)
    return (h - mean) * tf.math.rsqrt(variance + _EPSILON) * gamma + beta


def _size(t: tf.Tensor, axis: int) -> int | tf.Tensor:
    """A dimension, static when known (keeps shapes static for tracing), else dynamic."""
    static = t.shape[axis]
    return int(static) if static is not None else tf.shape(t)[axis]


def _over_records(per_task: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
    """A per-task channel vector ``[T, C]`` shaped to broadcast against ``like``
    (``[T, n, ..., C]``): one value per task and channel, shared by that task's records."""
    ones = [1] * (like.shape.rank - 2)
    return tf.reshape(per_task, [_size(per_task, 0), *ones, per_task.shape[-1]])


def _task_conv2d_same(h: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
    """Stride-1 SAME convolution of ``h`` ``[T, n, H, W, C]``, task ``t`` with its own kernel
    ``kernel[t]`` (``[T, kh, kw, C, F]``): a batched matmul of image patches.

    Not a grouped ``tf.nn.conv2d`` (tasks folded into channels): its gradients exist on CPU
    only when TensorFlow runs with oneDNN ("Gradients for grouped convolutions are not
    supported on CPU" under ``TF_ENABLE_ONEDNN_OPTS=0``). Pad, slice, concat and BatchMatMul
    are differentiable twice on every device. The price is a ``kh·kw``-fold copy of the input.
    """
    tasks = _size(kernel, 0)
    _, _, height, width, channels = h.shape
    kh, kw, filters = kernel.shape[1], kernel.shape[2], kernel.shape[-1]
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"task-batched convolution needs odd kernel sizes, got {kh}×{kw}.")
    patches = _image_patches(tf.reshape(h, [-1, height, width, channels]), kh, kw)
    columns = tf.reshape(patches, [tasks, -1, kh * kw * channels])
    out = tf.matmul(columns, tf.reshape(kernel, [tasks, kh * kw * channels, filters]))
    return tf.reshape(out, [tasks, -1, height, width, filters])


def _patch_offsets(kh: int, kw: int) -> list[tuple[int, int]]:
    """Kernel taps in the kernel's own (row, column) order, so that a patch laid out tap by
    tap, channels innermost, lines up with the kernel reshaped to ``[kh·kw·C, F]``."""
    return [(i, j) for i in range(kh) for j in range(kw)]


def _image_patches(x: tf.Tensor, kh: int, kw: int) -> tf.Tensor:
    """SAME, stride-1 ``kh×kw`` patches of ``x`` ``[N, H, W, C]`` as ``[N, H, W, kh·kw·C]``
    (odd ``kh``, ``kw``); the same values as ``tf.image.extract_patches``.

    Built from shifted slices of the zero-padded input, with an explicit gradient: the map
    is linear, :func:`_image_patches_adjoint` is its transpose, and each is the other's
    gradient, so first and second derivatives (MAML) cost about what the forward does.
    Medians on the 2-core CPU (TF 2.21, 400 records of 14×14×64, forward / gradient):
    ``tf.image.extract_patches`` 75 / 55 ms (its gradient is an unsorted segment sum between
    two transposes); slices and concat 44 / 364 ms with TensorFlow's own gradient, 44 / 47 ms
    with the adjoint.
    """

    @tf.custom_gradient
    def patches(x: tf.Tensor) -> tuple[tf.Tensor, Any]:
        _, height, width, _ = x.shape
        padded = tf.pad(x, [[0, 0], [kh // 2, kh // 2], [kw // 2, kw // 2], [0, 0]])
        taps = [padded[:, i : i + height, j : j + width, :] for i, j in _patch_offsets(kh, kw)]
        return tf.concat(taps, axis=-1), lambda grad: _image_patches_adjoint(grad, kh, kw)

    return patches(x)


def _image_patches_adjoint(patches: tf.Tensor, kh: int, kw: int) -> tf.Tensor:
    """The transpose of :func:`_image_patches`: every tap's values added back, shifted, onto
    the pixel they were read from (``[N, H, W, kh·kw·C]`` to ``[N, H, W, C]``)."""

    @tf.custom_gradient
    def adjoint(patches: tf.Tensor) -> tuple[tf.Tensor, Any]:
        _, height, width, _ = patches.shape
        taps = tf.split(patches, kh * kw, axis=-1)
        shifted = [
            tf.pad(tap, [[0, 0], [i, kh - 1 - i], [j, kw - 1 - j], [0, 0]])
            for (i, j), tap in zip(_patch_offsets(kh, kw), taps, strict=True)
        ]
        padded = tf.add_n(shifted)
        top, left = kh // 2, kw // 2
        image = padded[:, top : top + height, left : left + width, :]
        return image, lambda grad: _image_patches(grad, kh, kw)

    return adjoint(patches)


def _task_layer_norm(h: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, axes: list[int]) -> tf.Tensor:
    """:func:`_layer_norm` folded into one scale and one shift per record and channel.

    The same function, with two full-size passes instead of four (the statistics are small
    tensors); it made a Conv-4 FOMAML step about 10 % faster on CPU. The per-record
    ``forward`` keeps :func:`_layer_norm` so that its outputs (and ``adapt()``) are unchanged
    to the bit.
    """
    mean, variance = tf.nn.moments(h, axes=axes, keepdims=True)
    scale = tf.math.rsqrt(variance + _EPSILON) * gamma
    return h * scale + (beta - mean * scale)


def _max_pool_records(h: tf.Tensor) -> tf.Tensor:
    """2×2 max-pool of every record of ``h`` ``[T, n, H, W, C]``; it has no weights, so the
    task axis is folded into the records."""
    tasks = _size(h, 0)
    _, _, height, width, channels = h.shape
    pooled = tf.nn.max_pool2d(
        tf.reshape(h, [-1, height, width, channels]), ksize=2, strides=2, padding="VALID"
    )
    return tf.reshape(pooled, [tasks, -1, height // 2, width // 2, channels])
