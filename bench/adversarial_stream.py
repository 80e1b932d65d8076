"""An MNIST stream with adversarial images crafted against the agent's own live model.

The attacker here is white-box: it has the model version the agent serves and crafts each
image with a gradient attack on it (the strongest setting a monitor faces). The images go to
the stream among clean test images at random places; their ``truth`` field (ignored by the
agent) says which is which, for scoring.

Used by ``examples/mnist/make_stream.py`` (the walkthrough) and the integration test of the
adversarial detector; both bootstrap the agent on the reference first, so the attacked model
is exactly the one the replay serves (same weights, from the same model cache).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.mnist_data import CLASSES, MnistPart, write_stream


@dataclass(frozen=True)
class CraftedStream:
    """What was written: one truth per line, and each attack's success on the live model."""

    truths: list[str]
    success: dict[str, float]
    attacks: dict[str, int]


def write_reference(path: Path, parts: list[MnistPart]) -> Path:
    """Labelled images the agent fits its encoder, model and detectors on."""
    merged = MnistPart(x=np.concatenate([p.x for p in parts]),
                       y=np.concatenate([p.y for p in parts]),
                       index=np.concatenate([p.index for p in parts]))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_stream(path, merged, id_prefix="ref")
    return path


def craft_against(agent: Any, images: np.ndarray, digits: np.ndarray, *, attack: str,
                  eps: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Adversarial versions of ``images`` (pixels in [0, 1]) against the model serving now.

    Returns the images and which ones fool the model. The attack runs in the model's input
    space (the encoder's scaled pixels); the budget and the [0, 1] box are converted to it.
    """
    from meta import attacks

    model = agent.runtime.current()
    [layout] = agent.encoder.tensor_layouts(agent.pipeline.reference.encoded)
    classes = list(model.probability_classes)
    y = np.array([classes.index(CLASSES[int(d)]) for d in digits])
    encoded = ((images.reshape(len(images), -1) - layout.center) / layout.scale).astype(
        np.float32)
    low, high = (0.0 - layout.center) / layout.scale, (1.0 - layout.center) / layout.scale
    logits = model.logits_function()
    if attack == "fgsm":
        result = attacks.fgsm(logits, encoded, y, eps=eps / layout.scale, clip_min=low,
                              clip_max=high)
    elif attack == "pgd":
        result = attacks.pgd(logits, encoded, y, eps=eps / layout.scale, norm="linf",
                             steps=40, clip_min=low, clip_max=high, seed=seed)
    else:
        raise ValueError(f"attack must be 'fgsm' or 'pgd', got {attack!r}.")
    pixels = np.clip(result.x * layout.scale + layout.center, 0.0, 1.0)
    return pixels.reshape(images.shape).astype(np.float32), np.asarray(result.success)


def write_adversarial_stream(agent: Any, path: Path, clean: MnistPart, victims: MnistPart, *,
                             attacks: dict[str, float], seed: int = 0) -> CraftedStream:
    """``clean`` images with adversarial versions of ``victims`` mixed in.

    ``attacks`` maps an attack name to its L-infinity budget in pixel units; the victims are
    divided between the attacks in order. Only images that fool the model are written (an
    adversarial image that does not fool the model is just a noisy digit).
    """
    rng = np.random.default_rng(seed)
    chunks = np.array_split(np.arange(len(victims)), len(attacks))
    crafted, digits, success, counts = [], [], {}, {}
    for (name, eps), rows in zip(attacks.items(), chunks, strict=True):
        images, fooled = craft_against(agent, victims.x[rows], victims.y[rows], attack=name,
                                       eps=eps, seed=seed)
        success[name] = float(fooled.mean()) if fooled.size else 0.0
        counts[name] = int(fooled.sum())
        crafted.append(images[fooled])
        digits.append(victims.y[rows][fooled])
    adversarial = np.concatenate(crafted)
    total = len(clean) + len(adversarial)
    positions = np.sort(rng.choice(total, len(adversarial), replace=False))
    truths = write_stream(path, clean, adversarial=adversarial,
                          adversarial_labels=np.concatenate(digits), positions=positions)
    return CraftedStream(truths=truths, success=success, attacks=counts)
