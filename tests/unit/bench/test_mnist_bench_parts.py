"""The shared pieces of the MNIST adversarial / poisoning benchmarks against IBM ART.

The split and stream writer are checked on synthetic data and, where the shared MNIST files are
present, on the real t10k split (skipping, saying which file is missing, where they are absent);
the model view on a tiny untrained CNN; the ART runner only statically, since ART lives in its own
venv (``bench/art_env.sh``) and is never installed in the project's.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:  # bench/ is a tool beside the installed packages, not one of them
    sys.path.insert(0, str(REPO))

from bench.mnist_data import (  # noqa: E402
    IMAGES_FILE,
    LABELS_FILE,
    SPLIT_SIZES,
    MnistPart,
    load_mnist_split,
    mnist_dir,
    read_stream,
    stratified_split,
    write_stream,
)


def _part(n: int, seed: int = 0) -> MnistPart:
    rng = np.random.default_rng(seed)
    x = rng.random((n, 28, 28), dtype=np.float32)
    return MnistPart(x, rng.integers(0, 10, n), np.arange(100, 100 + n))


def _require_mnist() -> None:
    for name in (IMAGES_FILE, LABELS_FILE):
        path = mnist_dir() / name
        if not path.is_file():
            pytest.skip(f"dataset file {path} is missing (set METASENTRY_DATA to the data root)")


# --------------------------------------------------------------------------- split


def test_stratified_split_is_exact_disjoint_proportional_and_seeded() -> None:
    y = np.repeat(np.arange(4), [400, 300, 200, 100])
    parts = stratified_split(y, [500, 200, 300], seed=3)
    assert [len(p) for p in parts] == [500, 200, 300]
    joined = np.concatenate(parts)
    assert len(np.unique(joined)) == len(y)
    for part, size in zip(parts, [500, 200, 300], strict=True):
        counts = np.bincount(y[part], minlength=4)
        np.testing.assert_allclose(counts, np.array([0.4, 0.3, 0.2, 0.1]) * size, atol=1)
    again = stratified_split(y, [500, 200, 300], seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    other = stratified_split(y, [500, 200, 300], seed=4)
    assert not np.array_equal(parts[0], other[0])


def test_stratified_split_rejects_parts_larger_than_the_data() -> None:
    with pytest.raises(ValueError, match="sum to at most"):
        stratified_split(np.zeros(10), [6, 5])


@pytest.mark.data
def test_the_t10k_split_is_the_documented_one() -> None:
    _require_mnist()
    split = load_mnist_split()
    parts = split.parts()
    assert {name: len(part) for name, part in parts.items()} == SPLIT_SIZES
    indices = np.concatenate([part.index for part in parts.values()])
    assert np.array_equal(np.sort(indices), np.arange(10_000))
    everything = np.concatenate([part.y for part in parts.values()])
    overall = np.bincount(everything, minlength=10) / len(everything)
    for part in parts.values():
        assert part.x.dtype == np.float32 and part.x.shape == (len(part), 28, 28)
        assert part.x.min() >= 0.0 and part.x.max() <= 1.0
        np.testing.assert_allclose(np.bincount(part.y, minlength=10), overall * len(part), atol=1)
    again = load_mnist_split()
    for name, part in parts.items():
        assert np.array_equal(part.index, again.parts()[name].index)


# --------------------------------------------------------------------------- stream


def test_stream_round_trips_and_mixes_adversarial_records_at_their_positions(
        tmp_path: Path) -> None:
    part = _part(6)
    adversarial = np.clip(part.x[:2] + 0.1, 0, 1)
    path = tmp_path / "stream.jsonl"
    truths = write_stream(path, part, adversarial=adversarial, adversarial_labels=part.y[:2],
                          positions=[0, 5], id_prefix="test")
    lines = path.read_text().splitlines()
    assert len(lines) == 8
    records = [json.loads(line) for line in lines]
    assert {tuple(sorted(record)) for record in records} == {("id", "image", "label", "truth")}
    assert truths == [r["truth"] for r in records]
    assert [i for i, t in enumerate(truths) if t == "adversarial"] == [0, 5]
    x, ids, labels, read_truths = read_stream(path)
    assert read_truths == truths
    assert ids[0] == "test-adv-00000" and ids[1] == "test-00100"
    clean = np.array([t == "clean" for t in truths])
    np.testing.assert_allclose(x[clean], part.x, atol=5e-5)
    np.testing.assert_allclose(x[~clean], adversarial, atol=5e-5)
    assert labels == [str(d) for d in np.asarray(labels, dtype=int)]
    assert [int(v) for v in np.asarray(labels)[clean]] == part.y.tolist()


def test_uint8_stream_holds_integer_pixels(tmp_path: Path) -> None:
    part = _part(3)
    path = tmp_path / "stream.jsonl"
    write_stream(path, part, pixels="uint8")
    record = json.loads(path.read_text().splitlines()[0])
    assert all(isinstance(v, int) and 0 <= v <= 255 for row in record["image"] for v in row)
    x, *_ = read_stream(path)
    np.testing.assert_allclose(x, part.x, atol=0.5 / 255 + 1e-6)


@pytest.mark.parametrize("positions", [[0, 0], [0, 9], [-1, 2]])
def test_stream_rejects_bad_positions(tmp_path: Path, positions: list[int]) -> None:
    part = _part(6)
    with pytest.raises(ValueError, match="distinct line numbers"):
        write_stream(tmp_path / "s.jsonl", part, adversarial=part.x[:2],
                     adversarial_labels=part.y[:2], positions=positions)


# --------------------------------------------------------------------------- model view


@pytest.fixture(scope="module")
def view() -> object:
    from bench.mnist_cnn import KerasModelView, build_cnn

    return KerasModelView(build_cnn(seed=0), version="untrained", batch_size=2)


def test_model_view_shapes_and_agreement(view: object) -> None:
    import tensorflow as tf

    from bench.mnist_cnn import KerasModelView

    assert isinstance(view, KerasModelView)
    x = np.random.default_rng(0).random((5, 28, 28), dtype=np.float32)
    layers = view.layers(x)
    assert [a.shape for a in layers] == [(5, 32), (5, 64), (5, 128)]
    assert all(a.dtype == np.float32 for a in layers)
    np.testing.assert_allclose(layers[-1], view.embed(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(view.embed(x.reshape(5, 784)), view.embed(x), rtol=1e-5, atol=1e-6)
    probabilities = view.class_probabilities(x)
    assert probabilities.shape == (5, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    logits = view.logits_fn(tf.constant(x.reshape(5, 784))).numpy()
    np.testing.assert_allclose(logits, view.logits(x), rtol=1e-4, atol=1e-5)
    assert view.classes == tuple(str(d) for d in range(10))
    assert view.version == "untrained"
    with pytest.raises(ValueError, match=r"\[n, 784\] or \[n, 28, 28\]"):
        view.embed(np.zeros((2, 10), dtype=np.float32))


def test_saved_model_is_versioned_by_its_sha256(tmp_path: Path) -> None:
    from bench.mnist_cnn import KerasModelView, TrainingConfig, file_sha256, save_cnn, train_cnn

    part = _part(32)
    model = train_cnn(part.x, part.y, TrainingConfig(epochs=1, batch_size=16))
    path = tmp_path / "model.keras"
    sha = save_cnn(model, path, {"epochs": 1})
    assert (tmp_path / "model.keras.sha256").read_text().split() == [sha, "model.keras"]
    assert json.loads((tmp_path / "model.keras.json").read_text())["sha256"] == sha
    loaded = KerasModelView.from_file(path)
    assert loaded.version == sha == file_sha256(path)
    np.testing.assert_allclose(loaded.logits(part.x), model.predict(part.x, verbose=0),
                               rtol=1e-4, atol=1e-5)
    (tmp_path / "model.keras.sha256").write_text(f"{'0' * 64}  model.keras\n")
    with pytest.raises(ValueError, match="changed after it was saved"):
        KerasModelView.from_file(path)


# --------------------------------------------------------------------------- ART side, statically


def test_art_side_imports_only_what_the_art_venv_has() -> None:
    tree = ast.parse((REPO / "bench" / "art_side.py").read_text())
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module.split(".")[0])
    third_party = modules - set(sys.stdlib_module_names) - {"__future__"}
    assert third_party <= {"numpy", "tensorflow", "sklearn", "art"}, third_party


def test_art_requirements_are_exact_pins_and_the_env_script_parses() -> None:
    lines = [line.strip() for line in
             (REPO / "bench" / "requirements-art.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines and all("==" in line for line in lines), lines
    assert any(line.startswith("adversarial-robustness-toolbox==") for line in lines)
    subprocess.run(["bash", "-n", str(REPO / "bench" / "art_env.sh")], check=True)


def test_docstring_examples_run() -> None:
    import doctest

    import bench.mnist_cnn
    import bench.mnist_data

    for module in (bench.mnist_data, bench.mnist_cnn):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__
