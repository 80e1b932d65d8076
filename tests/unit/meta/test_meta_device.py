"""Device resolution and the distribution-strategy code path, exercised on CPU devices."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from meta_testdata import make_blobs

from meta.device import DeviceUnavailableError, resolve_device
from meta.encoders import EncoderSpec
from meta.episodes import EpisodeSampler
from meta.learners import build_learner

REPO = Path(__file__).resolve().parents[3]
SPEC = EncoderSpec(kind="mlp", input_shape=(12,), hidden=(16,), embedding_dim=8)


def test_cpu_and_auto_resolve_without_a_gpu() -> None:
    placement = resolve_device("cpu")
    assert placement.kind == "cpu" and placement.replicas == 1
    if not tf.config.list_logical_devices("GPU"):
        assert resolve_device("auto").kind == "cpu"


def test_gpu_without_a_gpu_fails_loudly() -> None:
    if tf.config.list_logical_devices("GPU"):
        pytest.skip("a GPU is visible, so device='gpu' legitimately resolves")
    with pytest.raises(DeviceUnavailableError, match="no GPU"):
        resolve_device("gpu")


def test_unknown_device_name_is_refused() -> None:
    with pytest.raises(ValueError, match="auto"):
        resolve_device("tpu")


@pytest.mark.parametrize("algorithm", ["protonet", "fomaml"])
def test_mirrored_strategy_on_one_cpu_matches_the_default_path(algorithm: str) -> None:
    blobs = make_blobs(classes=8, per_class=20, dim=12, spread=1.0, seed=0)
    losses = []
    for strategy in (None, tf.distribute.MirroredStrategy(["/cpu:0"])):
        sampler = EpisodeSampler(blobs.x, blobs.y, ways=3, shots=2, queries=3, seed=1)
        hyper = {"inner_steps": 1} if algorithm == "fomaml" else {}
        learner = build_learner(algorithm, SPEC, seed=0, device="cpu", strategy=strategy, **hyper)
        history = learner.meta_train(sampler, episodes=24, meta_batch=4)
        losses.append(np.asarray(history.train_loss))
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-4)


@pytest.mark.slow
def test_two_replicas_give_the_same_updates_as_one(tmp_path: Path) -> None:
    """Two logical CPU devices stand in for two GPUs: the meta-batch is split across replicas
    and the gradients are averaged, so the losses must match the single-device run."""
    script = textwrap.dedent(
        """
        import json, sys
        import numpy as np
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        sys.path.insert(0, sys.argv[1])
        from meta.encoders import EncoderSpec
        from meta.episodes import EpisodeSampler
        from meta.learners import build_learner
        rng = np.random.default_rng(0)
        y = np.repeat(np.arange(8), 20)
        x = (rng.normal(size=(8, 12))[y] + rng.normal(size=(160, 12))).astype(np.float32)
        spec = EncoderSpec(kind="mlp", input_shape=(12,), hidden=(16,), embedding_dim=8)
        out = {}
        for name, strategy in (("one", None),
                               ("two", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))):
            sampler = EpisodeSampler(x, y, ways=3, shots=2, queries=3, seed=1)
            learner = build_learner("protonet", spec, seed=0, device="cpu", strategy=strategy)
            out[name] = list(learner.meta_train(sampler, episodes=24, meta_batch=4).train_loss)
            out[name + "_replicas"] = learner.strategy.num_replicas_in_sync
        print("RESULT" + json.dumps(out))
        """
    )
    completed = subprocess.run(
        [sys.executable, "-c", script, str(REPO)], capture_output=True, text=True, timeout=300,
        check=False,
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT")]
    assert lines, completed.stderr[-3000:]
    result = json.loads(lines[0][len("RESULT"):])
    assert result["two_replicas"] == 2
    np.testing.assert_allclose(result["one"], result["two"], rtol=1e-4)
