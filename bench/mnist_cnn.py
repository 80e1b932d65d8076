"""The small MNIST CNN both sides of the ART comparison attack and defend, and a view of it.

One model, one file: the CNN is trained once on the 5,000-image train part of
:mod:`bench.mnist_data`, saved in Keras' native ``.keras`` format with its sha256 in
``<file>.sha256`` beside it, and both MetaSentry (through :class:`KerasModelView`) and IBM ART
(``bench/art_side.py``, in its own venv) load that same file. The sha256 is the model's
``version``: a result computed on another file is a result about another model.

Architecture (a ``keras.Sequential``, because ART's ``TensorFlowV2Classifier.get_activations``
refuses any other kind of model)::

    to_channels  Reshape     [28, 28] -> [28, 28, 1]
    conv1        Conv2D(32, 3, relu)
    pool1        MaxPool(2)               -> [13, 13, 32]
    conv2        Conv2D(64, 3, relu)
    pool2        MaxPool(2)               -> [5, 5, 64]
    flatten      Flatten                  -> [1600]
    dense        Dense(128, relu)         -> the embedding
    logits       Dense(10)                -> logits (no softmax)

No BatchNorm or Dropout: the model classifies one record at a time in the agent, and training and
inference then compute the same function. Training is Adam with a fixed seed
(:func:`keras.utils.set_random_seed`); on a CPU two runs give the same weights up to
floating-point reduction order.

:class:`KerasModelView` gives what MetaSentry's detectors need from a model (embedding, several
layers' activations, class probabilities, a differentiable ``logits_fn``), accepting images as
``[n, 28, 28]`` or flattened ``[n, 784]`` float32 in [0, 1] and working in batches of 512.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from bench.mnist_data import CLASSES

logger = logging.getLogger(__name__)

IMAGE_SHAPE = (28, 28)
N_PIXELS = 28 * 28
EMBEDDING_DIM = 128
BATCH_SIZE = 512
SHA_SUFFIX = ".sha256"
INFO_SUFFIX = ".json"
# The layers KerasModelView.layers() reads, in order; conv maps are globally average-pooled.
VIEW_LAYERS: tuple[str, ...] = ("pool1", "pool2", "dense")


@dataclass(frozen=True)
class TrainingConfig:
    """How the CNN is trained; stored beside the saved model."""

    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be a positive integer, got {self.epochs}.")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size}.")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}.")


def build_cnn(seed: int = 0) -> tf.keras.Sequential:
    """The untrained CNN (logits output), weights drawn from ``seed``."""
    keras = tf.keras
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input(shape=IMAGE_SHAPE, name="image"),
            keras.layers.Reshape((*IMAGE_SHAPE, 1), name="to_channels"),
            keras.layers.Conv2D(32, 3, activation="relu", name="conv1"),
            keras.layers.MaxPooling2D(2, name="pool1"),
            keras.layers.Conv2D(64, 3, activation="relu", name="conv2"),
            keras.layers.MaxPooling2D(2, name="pool2"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(EMBEDDING_DIM, activation="relu", name="dense"),
            keras.layers.Dense(len(CLASSES), name="logits"),
        ],
        name="mnist_cnn",
    )


def as_images(x: np.ndarray | tf.Tensor) -> np.ndarray:
    """``[n, 784]`` or ``[n, 28, 28]`` as float32 ``[n, 28, 28]``."""
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim == 2 and arr.shape[1] == N_PIXELS:
        return arr.reshape(-1, *IMAGE_SHAPE)
    if arr.ndim == 3 and arr.shape[1:] == IMAGE_SHAPE:
        return arr
    raise ValueError(f"images must be [n, 784] or [n, 28, 28], got shape {arr.shape}.")


def train_cnn(
    x: np.ndarray,
    y: np.ndarray,
    config: TrainingConfig | None = None,
) -> tf.keras.Sequential:
    """Train a fresh CNN on images ``x`` and digits ``y`` (possibly poisoned labels)."""
    config = config or TrainingConfig()
    images = as_images(x)
    labels = np.asarray(y, dtype=np.int64)
    if labels.shape != (len(images),):
        raise ValueError(f"y must hold one digit per image ({len(images)}), got shape "
                         f"{labels.shape}.")
    model = build_cnn(config.seed)
    model.compile(
        optimizer=tf.keras.optimizers.Adam(config.learning_rate),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = model.fit(images, labels, batch_size=config.batch_size, epochs=config.epochs,
                        shuffle=True, verbose=0)
    logger.info("trained the MNIST CNN on %d images: final training accuracy %.4f",
                len(images), history.history["accuracy"][-1])
    return model


def file_sha256(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_cnn(
    model: tf.keras.Model,
    path: Path | str,
    info: dict[str, object] | None = None,
) -> str:
    """Save ``model`` to ``path`` (``.keras``), write its sha256 (and ``info``) beside it.

    Returns the sha256. ``<path>.sha256`` holds ``"<hex>  <file name>"`` (``sha256sum`` format,
    so ``sha256sum -c`` checks it); ``<path>.json`` holds ``info`` plus the sha256.
    """
    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"save the model as a .keras file, got {path.name!r}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    sha = file_sha256(path)
    Path(str(path) + SHA_SUFFIX).write_text(f"{sha}  {path.name}\n")
    Path(str(path) + INFO_SUFFIX).write_text(
        json.dumps({**(info or {}), "sha256": sha}, indent=2, sort_keys=True) + "\n")
    return sha


def load_cnn(path: Path | str) -> tuple[tf.keras.Model, str]:
    """The model saved at ``path`` and its sha256, checked against ``<path>.sha256`` if present."""
    path = Path(path)
    sha = file_sha256(path)
    recorded_file = Path(str(path) + SHA_SUFFIX)
    if recorded_file.is_file():
        recorded = recorded_file.read_text().split()[0]
        if recorded != sha:
            raise ValueError(f"{path} has sha256 {sha} but {recorded_file.name} records "
                             f"{recorded}; the model changed after it was saved: retrain or "
                             "restore it.")
    return tf.keras.models.load_model(path, compile=False), sha


def accuracy(model: tf.keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    """Share of images whose arg-max logit is the digit in ``y``."""
    logits = model.predict(as_images(x), batch_size=BATCH_SIZE, verbose=0)
    return float(np.mean(np.argmax(logits, axis=1) == np.asarray(y)))


class KerasModelView:
    """What MetaSentry's detectors read from the CNN: embedding, layers, probabilities, logits.

    Parameters
    ----------
    model
        The CNN of :func:`build_cnn` (trained or not); the view needs its layers ``pool1``,
        ``pool2``, ``dense`` and ``logits``.
    version
        The sha256 of the model file (:func:`load_cnn` gives it).

    Every method takes float32 images ``[n, 28, 28]`` or ``[n, 784]`` and works in batches of
    ``batch_size``.

    Examples
    --------
    >>> view = KerasModelView(build_cnn(seed=0), version="untrained")
    >>> x = np.zeros((3, 784), dtype=np.float32)
    >>> [a.shape for a in view.layers(x)], view.class_probabilities(x).shape
    ([(3, 32), (3, 64), (3, 128)], (3, 10))
    """

    def __init__(self, model: tf.keras.Model, version: str, batch_size: int = BATCH_SIZE) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}.")
        names = {layer.name for layer in model.layers}
        missing = [name for name in (*VIEW_LAYERS, "logits") if name not in names]
        if missing:
            raise ValueError(f"the model lacks the layers {missing}; build it with build_cnn().")
        self.model = model
        self.version = version
        self.batch_size = batch_size
        self.classes: tuple[str, ...] = CLASSES
        keras = tf.keras
        outputs = [model.get_layer(name).output for name in (*VIEW_LAYERS, "logits")]
        pooled = [keras.layers.GlobalAveragePooling2D()(out) if len(out.shape) == 4 else out
                  for out in outputs[:-1]]
        self._features = keras.Model(model.inputs, [*pooled, outputs[-1]])
        self._forward = tf.function(lambda batch: self._features(batch, training=False),
                                    reduce_retracing=True)

    @classmethod
    def from_file(cls, path: Path | str, batch_size: int = BATCH_SIZE) -> KerasModelView:
        """The view of the model saved at ``path`` (its sha256 checked and used as version)."""
        model, sha = load_cnn(path)
        return cls(model, version=sha, batch_size=batch_size)

    @property
    def layer_names(self) -> tuple[str, ...]:
        """The layers :meth:`layers` returns, in its order."""
        return VIEW_LAYERS

    def _run(self, x: np.ndarray) -> list[np.ndarray]:
        images = as_images(x)
        chunks: list[list[np.ndarray]] = [[] for _ in range(len(VIEW_LAYERS) + 1)]
        for start in range(0, len(images), self.batch_size):
            outs = self._forward(tf.constant(images[start:start + self.batch_size]))
            for chunk, out in zip(chunks, outs, strict=True):
                chunk.append(out.numpy())
        if not len(images):
            widths = [int(out.shape[-1]) for out in self._features.outputs]
            return [np.zeros((0, width), dtype=np.float32) for width in widths]
        return [np.concatenate(chunk).astype(np.float32, copy=False) for chunk in chunks]

    def layers(self, x: np.ndarray) -> list[np.ndarray]:
        """Activations of ``pool1`` and ``pool2`` (channel means: [n, 32], [n, 64]) and ``dense``
        ([n, 128]); the last entry equals :meth:`embed`."""
        return self._run(x)[:-1]

    def embed(self, x: np.ndarray) -> np.ndarray:
        """Penultimate-layer activations, float32 ``[n, 128]``."""
        return self._run(x)[-2]

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Logits, float32 ``[n, 10]``."""
        return self._run(x)[-1]

    def class_probabilities(self, x: np.ndarray) -> np.ndarray:
        """Softmax of the logits, float32 ``[n, 10]``."""
        logits = self.logits(x)
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32)

    @property
    def logits_fn(self) -> Callable[[tf.Tensor], tf.Tensor]:
        """A TensorFlow function images -> logits (``[n, 28, 28]`` or ``[n, 784]``), for attacks."""
        model = self.model

        def logits_fn(x: tf.Tensor) -> tf.Tensor:
            x = tf.convert_to_tensor(x, dtype=tf.float32)
            return model(tf.reshape(x, (-1, *IMAGE_SHAPE)), training=False)

        return logits_fn


def poison_and_train(
    x: np.ndarray,
    y: np.ndarray,
    poison_index: Sequence[int] | np.ndarray,
    poison_x: np.ndarray,
    poison_y: np.ndarray,
    config: TrainingConfig | None = None,
) -> tf.keras.Sequential:
    """Train the CNN on ``x, y`` with the records at ``poison_index`` replaced by the poison.

    A convenience for the poisoning benchmark: whatever made the poison, the model it yields is
    trained exactly like the clean one.
    """
    images = as_images(x).copy()
    labels = np.asarray(y, dtype=np.int64).copy()
    where = np.asarray(poison_index, dtype=np.int64)
    images[where] = as_images(poison_x)
    labels[where] = np.asarray(poison_y, dtype=np.int64)
    return train_cnn(images, labels, config)
