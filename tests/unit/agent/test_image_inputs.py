"""Image (tensor) inputs: which encoder the model gets, where images sit in encoded rows, and
the shipped MNIST configuration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from agent.config import SchemaConfig, parse_config
from agent.schema import Encoder
from agent.training import image_shape_of

REPO = Path(__file__).resolve().parents[3]


def _schema(*features: dict[str, object]) -> SchemaConfig:
    return SchemaConfig.model_validate({"label": "label", "features": list(features)})


IMAGE = {"name": "image", "type": "tensor", "shape": [4, 3], "scale": "minmax"}


def test_an_image_only_schema_gets_a_conv4_encoder() -> None:
    assert image_shape_of(_schema(IMAGE), "auto") == (4, 3, 1)
    assert image_shape_of(_schema({**IMAGE, "shape": [4, 3, 2]}), "auto") == (4, 3, 2)
    assert image_shape_of(_schema(IMAGE), "mlp") is None
    mixed = _schema(IMAGE, {"name": "bytes", "type": "numeric"})
    assert image_shape_of(mixed, "auto") is None
    with pytest.raises(ValueError, match="only feature is a tensor"):
        image_shape_of(mixed, "conv4")


def test_tensor_layouts_locate_images_in_raw_units() -> None:
    schema = _schema({"name": "bytes", "type": "numeric"}, {"name": "proto", "type": "categorical"},
                     IMAGE)
    rng = np.random.default_rng(0)
    records = [{"bytes": float(i), "proto": ["tcp", "udp"][i % 2],
                "image": rng.uniform(0, 255, (4, 3)).round().tolist(), "label": "x"}
               for i in range(50)]
    encoder = Encoder.from_config(schema).fit(records)
    encoded = encoder.encode(records)
    [layout] = encoder.tensor_layouts(encoded.x)
    assert (layout.name, layout.shape, layout.start, layout.stop) == ("image", (4, 3), 4, 16)
    raw = layout.raw(encoded.x)
    assert np.allclose(raw, np.array([r["image"] for r in records]), atol=1e-3)
    assert layout.low == pytest.approx(raw.min()) and layout.high == pytest.approx(raw.max())
    again = layout.encode(encoded.x, raw)
    assert np.allclose(again, encoded.x, atol=1e-5)


def test_the_mnist_example_configuration_is_valid(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    text = (REPO / "examples" / "mnist" / "agent.yaml").read_text()
    base = tmp_path / "examples" / "mnist"
    base.mkdir(parents=True)
    data = tmp_path / "var" / "mnist"
    data.mkdir(parents=True)
    for name in ("reference.jsonl", "stream.jsonl"):
        (data / name).write_text("")
    config = parse_config(text, base_dir=base)
    [detector] = config.enabled_detectors()
    assert detector.type == "adversarial" and config.model.learner == "protonet"
    assert image_shape_of(config.schema, config.model.encoder) == (28, 28, 1)


def test_an_adversarial_detector_without_the_model_is_refused(tmp_path: Path) -> None:
    from agent.config import ConfigError

    data = yaml.safe_load((REPO / "agent.yaml").read_text())
    data["model"]["enabled"] = False
    data["detectors"] = [{"type": "adversarial", "name": "adversarial"}]
    data["reference"]["path"] = str(REPO / "examples" / "nsl-kdd" / "reference.csv.gz")
    data["sources"][0]["path"] = str(REPO / "examples" / "nsl-kdd" / "stream.csv.gz")
    with pytest.raises(ConfigError, match="adversarial need the live model"):
        parse_config(yaml.safe_dump(data), base_dir=tmp_path)
