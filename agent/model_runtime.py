"""The live model inside the agent: first version, loading versions, pinning, hot swaps.

Versions live in the registry (``model_versions``). A version is defined by its inputs — the
base learner (meta-trained weights, stored once in the database as a verified artifact), the
labelled reference and its canary split, the analyst labels it enrols, and the settings that
shape its answers (recorded with it) — and its sha256 is computed from them, so any agent
process on the same database can rebuild exactly that model and check it is the one that was
registered before serving it. Building takes a fraction of a second (enrolment is a forward
pass and a few distance rows), so nothing large is stored per version and a hot swap costs one
rebuild.

The pipeline pins one model per batch (:meth:`ModelRuntime.pinned`), so a swap never splits a
batch between two versions; a swap installed by this process's adaptation applies from the
next batch, and every other process picks a newly activated version up within
``model.poll_interval_s`` (:meth:`ModelRuntime.refresh`, a scheduled job). After a restart the
active version, with every class it enrolled, comes back the same way.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from agent.canary import CanaryReport, evaluate
from agent.config import AgentConfig
from agent.metrics import Metrics
from agent.schema import Encoder
from agent.support import ReferenceSplit, label_support, labels_digest, split_reference
from agent.training import ProgressLog, TrainingPlan, image_shape_of, train_learner
from detectors.base import FeatureBatch
from meta.live import AlertModel, SupportSet, support_digest, version_digest
from storage import AGENT_ACTOR, ModelVersion, Store

log = logging.getLogger(__name__)

KNN_BASE = "knn"  # base "artifact" of the knn model: there are no weights to store
SERVING_SETTINGS = ("min_class_calibration", "min_reference_records_to_name")
"""``model.*`` settings that change what a version answers: recorded with it, part of its
sha256, and a new (checked) version when the configured values change."""
ENCODER_TOLERANCE = 1e-6


class ModelLoadError(RuntimeError):
    """A registered version cannot be served here; the message says why and what to do."""


class ModelRuntime:
    """Holds the model version serving now and swaps it; the detectors' model handle."""

    def __init__(self, config: AgentConfig, encoder: Encoder, reference: FeatureBatch,
                 store: Store, metrics: Metrics, *, reference_sha256: str) -> None:
        self.config = config
        self.encoder = encoder
        self.store = store
        self.metrics = metrics
        self.reference_sha256 = reference_sha256
        cfg = config.model
        self.split: ReferenceSplit = split_reference(reference, canary_fraction=cfg.canary_fraction,
                                                     seed=cfg.seed)
        self._support_digest = support_digest(self.split.support)  # fixed: hash it once
        self._learners: dict[str, Any] = {}
        self._reference_models: dict[tuple[Any, ...], AlertModel] = {}
        self._model: AlertModel | None = None
        self._version: ModelVersion | None = None
        self._canary: CanaryReport | None = None
        self._canary_cache: tuple[SupportSet, Any, str, np.ndarray] | None = None
        self._swap = threading.Lock()
        self._pinned = threading.local()

    # --- the model handle --------------------------------------------------------------------

    def current(self) -> AlertModel | None:
        """The model pinned for this thread's batch, else the one serving now."""
        pinned = getattr(self._pinned, "model", None)
        return pinned if pinned is not None else self._model

    @contextmanager
    def pinned(self) -> Iterator[AlertModel | None]:
        """Keep one model for the duration of a batch, whatever is swapped meanwhile."""
        self._pinned.model = self._model
        try:
            yield self._pinned.model
        finally:
            self._pinned.model = None

    @property
    def novel_false_alarm_rate(self) -> float:
        """The rate ``novel`` findings are judged at unless a detector sets its own."""
        return self.config.model.novel_false_alarm_rate

    @property
    def held_out_rows(self) -> np.ndarray:
        """Reference rows no model version is trained on or enrols (the canary split).

        A record the model was trained on sits closer to its class than a new one does, so
        detectors calibrate their false-alarm rate on these rows only.
        """
        return np.array(sorted(int(o.split(":", 1)[1]) for o in self.split.canary.origin),
                        dtype=np.int64)

    @property
    def version(self) -> ModelVersion | None:
        return self._version

    @property
    def canary(self) -> CanaryReport | None:
        return self._canary

    # --- start-up ------------------------------------------------------------------------------

    def start(self) -> ModelVersion:
        """Serve the registry's active version, creating version 1 on a fresh database."""
        active = self.store.active_model_version()
        if active is None:
            with self.store.adaptation_lock(timeout_s=3600.0):
                active = self.store.active_model_version()  # another replica may have won
                if active is None:
                    return self._create_first_version()
        self.install(self.load_version(active), active)
        return active

    def refresh(self) -> bool:
        """Swap to the registry's active version if another process activated a new one."""
        active = self.store.active_model_version()
        if active is None or (self._version is not None
                              and active.version == self._version.version):
            return False
        self.install(self.load_version(active), active)
        log.info("model version %s is now serving (activated elsewhere)", active.version)
        return True

    def install(self, model: AlertModel, version: ModelVersion,
                canary: CanaryReport | None = None) -> None:
        """Make ``model`` the one the next batch is judged by."""
        model.version = version.version
        with self._swap:
            self._model = model
            self._version = version
            self._canary = canary or _canary_from(version)
        self.metrics.set_model(version.version, version.algorithm, version.sha256)
        if self._canary is not None:
            self.metrics.model_canary_accuracy.set(self._canary.known_accuracy)
            self.metrics.model_benign_false_alarm_rate.set(self._canary.benign_false_alarm_rate)

    # --- operator actions ----------------------------------------------------------------------

    def activate(self, version_name: str, *, actor: str = AGENT_ACTOR,
                 origin: str | None = None, rollback: bool = False) -> ModelVersion:
        """Serve ``version_name`` (checked first: it must rebuild to its recorded sha256).

        ``actor`` and ``origin`` (``storage.audit``) are what the audit log records.
        """
        version = self.store.get_model_version(version_name)
        model = self.load_version(version)
        if version.status == "rejected":
            log.warning("activating model version %s, which its canary check rejected: %s",
                        version.version, "; ".join(version.reasons or []))
        active = self.store.activate_model_version(version.version, actor=actor, origin=origin,
                                                   rollback=rollback)
        self.install(model, active)
        return active

    def rollback(self, *, actor: str = AGENT_ACTOR, origin: str | None = None) -> ModelVersion:
        """Serve the parent of the version serving now (the one it replaced)."""
        active = self.store.active_model_version()
        if active is None or not active.parent:
            raise ModelLoadError("the active version has no parent to roll back to; use "
                                 "`metasentry models activate V` to choose one.")
        return self.activate(active.parent, actor=actor, origin=origin, rollback=True)

    # --- versions ------------------------------------------------------------------------------

    def load_version(self, version: ModelVersion) -> AlertModel:
        """Rebuild ``version`` from its inputs and check it is the one registered."""
        base_sha = _base_of(version)
        learner = self.base_learner(base_sha, version.algorithm)
        records = self.store.labelled_records(version.label_ids)
        missing = sorted(set(version.label_ids) - {r.label_id for r in records})
        if missing:
            raise ModelLoadError(
                f"model version {version.version} enrols labels {missing[:5]} that are no "
                "longer in the database; activate another version (`metasentry models "
                "activate V`).")
        settings = self.settings_of(version)
        digest = self.digest(version.algorithm, base_sha, records, version.settings)
        if digest != version.sha256:
            raise ModelLoadError(
                f"model version {version.version} does not match its recorded sha256 "
                f"({version.sha256[:12]}…, rebuilt {digest[:12]}…): its labels, its recorded "
                "settings, the reference file or the benign class changed since it was "
                "registered; refusing to serve it.")
        if version.settings is None:
            log.warning("model version %s was registered before versions recorded their "
                        "settings: it is served with the configured %s", version.version,
                        describe_settings(self.configured_settings()))
        return self.rebuild(version.algorithm, base_sha, learner, records, settings)

    def rebuild(self, algorithm: str, base_sha: str, learner: Any, records: list[Any],
                settings: dict[str, Any]) -> AlertModel:
        """The model of a version with these inputs, the way the adapting process built it:
        the reference model, then the labels enrolled into it, so every replica serves the
        same model."""
        base = self._reference_model(algorithm, base_sha, learner, settings)
        return self.build_with(base, records) if records else base

    def build_with(self, parent: AlertModel, records: list[Any]) -> AlertModel:
        """``parent`` with more labelled records enrolled (fast for memory-style learners), its
        settings kept."""
        return parent.with_records(label_support(records, self.encoder))

    def _reference_model(self, algorithm: str, base_sha: str, learner: Any,
                         settings: dict[str, Any]) -> AlertModel:
        """The model adapted to the labelled reference alone (built once per base weights and
        settings)."""
        key = (algorithm, base_sha, tuple(sorted(settings.items())))
        if key not in self._reference_models:
            self._reference_models[key] = self._build(algorithm, learner, self.split.support,
                                                      settings)
        return self._reference_models[key]

    def configured_settings(self) -> dict[str, Any]:
        """The ``model.*`` settings a version registered now is built with."""
        return {name: getattr(self.config.model, name) for name in SERVING_SETTINGS}

    def settings_of(self, version: ModelVersion) -> dict[str, Any]:
        """What ``version`` is built with: its recorded settings, or the configured ones for a
        version registered before settings were recorded (it was always built with those)."""
        if version.settings is None:
            return self.configured_settings()
        missing = [name for name in SERVING_SETTINGS if name not in version.settings]
        if missing:
            raise ModelLoadError(
                f"model version {version.version} records no value for "
                f"{', '.join('model.' + name for name in missing)}; activate another version.")
        return {name: version.settings[name] for name in SERVING_SETTINGS}

    def digest(self, algorithm: str, base_sha256: str, records: list[Any],
               settings: dict[str, Any] | None) -> str:
        """The sha256 a version with these inputs is registered under.

        The settings that change what the rebuilt model answers are inputs too: the canary
        check passed one model, and a version must not come back as another. ``None``: the
        digest of versions registered before settings were recorded.
        """
        cfg = self.config.model
        inputs: dict[str, Any] = {
            "algorithm": algorithm,
            "base_sha256": base_sha256,
            "benign_class": cfg.benign_class,
            "reference_sha256": self.reference_sha256,
            "reference_support": self._support_digest,
            "canary_fraction": cfg.canary_fraction,
            "seed": cfg.seed,
            "labels": labels_digest(records),
        }
        if settings is not None:
            inputs["settings"] = {name: settings[name] for name in SERVING_SETTINGS}
        return version_digest(inputs)

    def evaluate(self, model: AlertModel, *, earlier: set[int] | frozenset[int] = frozenset(),
                 new: set[int] | frozenset[int] = frozenset()) -> CanaryReport:
        return evaluate(model, self.split.canary, alpha=self.config.model.novel_false_alarm_rate,
                        earlier_label_ids=earlier, new_label_ids=new,
                        embeddings=self._canary_embeddings(model))

    def _canary_embeddings(self, model: AlertModel) -> np.ndarray:
        """The canary records in ``model``'s representation. It depends on the learner only,
        not on the support set, so every candidate built on one learner reuses it."""
        canary = self.split.canary
        cached = self._canary_cache
        if (cached is None or cached[0] is not canary or cached[1] is not model.learner
                or cached[2] != model.algorithm):
            cached = (canary, model.learner, model.algorithm, model.embed(canary.x))
            self._canary_cache = cached
        return cached[3]

    def _build(self, algorithm: str, learner: Any, support: Any,
               settings: dict[str, Any]) -> AlertModel:
        cfg = self.config.model
        return AlertModel.build(algorithm, learner, support, benign_class=cfg.benign_class,
                                seed=cfg.seed, **settings)

    def _create_first_version(self) -> ModelVersion:
        cfg = self.config.model
        started = time.perf_counter()
        learner, base_sha, trigger = self._first_learner()
        settings = self.configured_settings()
        model = self._reference_model(cfg.learner, base_sha, learner, settings)
        canary = self.evaluate(model)
        version = self.store.add_model_version(
            version=self.store.next_model_version(), algorithm=cfg.learner,
            path=str(self._cache_dir(base_sha)) if learner is not None else "",
            sha256=self.digest(cfg.learner, base_sha, [], settings),
            metrics={"canary": canary.to_dict(), "build_seconds": time.perf_counter() - started},
            activate=True, base_sha256=base_sha, parent=None, classes=list(model.classes),
            label_ids=[], trigger=trigger, benign_class=cfg.benign_class, settings=settings)
        log.info("model version %s (%s, %d classes) registered and active: canary accuracy "
                 "%.1f%%, benign false-alarm rate %.2f%%", version.version, cfg.learner,
                 len(model.classes), 100 * canary.known_accuracy,
                 100 * canary.benign_false_alarm_rate)
        self.install(model, version, canary)
        return version

    def _first_learner(self) -> tuple[Any, str, str]:
        """The base learner of version 1: none (knn), the configured directory, or trained."""
        cfg = self.config.model
        if cfg.learner == "knn":
            return None, KNN_BASE, "bootstrap: knn on the labelled reference"
        if cfg.path is not None:
            path = self.config.resolve(cfg.path)
            loaded = self._load_directory(path, cfg.sha256)
            self._check_encoder(loaded.model, str(path))
            self._store_artifact(loaded.sha256, path)
            self._learners[loaded.sha256] = loaded.learner
            return loaded.learner, loaded.sha256, f"model.path {path}"
        return self._bootstrap_learner()

    def _bootstrap_learner(self) -> tuple[Any, str, str]:
        from meta.saving import save_learner, signing_key_from_env

        cfg = self.config.model
        support = self.split.support
        try:
            image_shape = image_shape_of(self.config.schema, cfg.encoder)
        except ValueError as error:
            raise ModelLoadError(f"bootstrap: {error}") from error
        plan = TrainingPlan(algorithm=cfg.learner, episodes=cfg.training_episodes,
                            benign_class=cfg.benign_class, seed=cfg.seed, device=cfg.device,
                            image_shape=image_shape, members=cfg.members)
        log.info("bootstrap: meta-training a %s model on %d labelled reference records (%d "
                 "classes; %d held out as the canary set)", cfg.learner, len(support),
                 len(support.classes), len(self.split.canary))
        from meta.device import DeviceUnavailableError

        try:
            trained = train_learner(support.x, support.y, plan, progress=ProgressLog(
                lambda line: log.info("bootstrap: %s", line)))
        except (ValueError, DeviceUnavailableError) as error:  # e.g. too few classes, no GPU
            raise ModelLoadError(
                f"bootstrap: cannot meta-train a {cfg.learner} model on the labelled reference "
                f"({error}); use `model.learner: knn`, or give `model.path`.") from error
        staging = Path(self.config.resolve(cfg.cache_dir)) / f"staging-{os.getpid()}"
        description = {
            "feature_schema": self.config.schema.model_dump(mode="json"),
            "encoder_state": self.encoder.state_dict(),
            "label_field": self.config.schema.label,
            "training_data": {"path": str(self.config.resolve(self.config.reference.path)),
                              "sha256": self.reference_sha256, "records": len(support)},
            **trained.description,
        }
        key = signing_key_from_env(cfg.signing_key_env) if cfg.signing_key_env else None
        sha = save_learner(trained.learner, staging, description=description, signing_key=key)
        final = self._cache_dir(sha)
        if final.exists():
            _remove_tree(staging)
        else:
            final.parent.mkdir(parents=True, exist_ok=True)
            staging.rename(final)
        self._store_artifact(sha, final)
        self._learners[sha] = trained.learner
        return trained.learner, sha, "bootstrap: meta-trained on the labelled reference"

    # --- base learners -------------------------------------------------------------------------

    def base_learner(self, base_sha256: str, algorithm: str) -> Any:
        """The verified learner of a base artifact (cached per process)."""
        if algorithm == "knn":
            return None
        if base_sha256 in self._learners:
            return self._learners[base_sha256]
        directory = self._cache_dir(base_sha256)
        if not (directory / "manifest.json").is_file():
            files = self.store.load_model_artifact(base_sha256)
            if files is None:
                raise ModelLoadError(
                    f"the model weights {base_sha256[:12]}… are neither in {directory} nor in "
                    "the database; restore them or activate another version.")
            _write_files(directory, files)
        loaded = self._load_directory(directory, base_sha256)
        self._check_encoder(loaded.model, str(directory))
        self._learners[base_sha256] = loaded.learner
        return loaded.learner

    def _load_directory(self, directory: Path, expected: str | None) -> Any:
        from meta.saving import ModelIntegrityError, load_model, signing_key_from_env

        cfg = self.config.model
        key = signing_key_from_env(cfg.signing_key_env) if cfg.signing_key_env else None
        from meta.device import DeviceUnavailableError

        try:
            return load_model(directory, expected_sha256=expected, signing_key=key,
                              require_signature=key is not None, device=cfg.device)
        except (ModelIntegrityError, DeviceUnavailableError) as error:
            raise ModelLoadError(str(error)) from error

    def _check_encoder(self, model_json: dict[str, Any], where: str) -> None:
        """Refuse weights trained on other features than the live encoder produces."""
        state = (model_json.get("description") or {}).get("encoder_state")
        if state is None:
            raise ModelLoadError(
                f"{where}: the model records no encoder state, so it cannot be checked against "
                "this config's features; retrain it with `metasentry meta-train`.")
        problem = encoder_difference(state, self.encoder.state_dict())
        if problem:
            raise ModelLoadError(
                f"{where}: the model was trained with a different encoder ({problem}); retrain "
                "it with `metasentry meta-train --config` on this config's reference, or let "
                "the agent bootstrap one.")

    def _store_artifact(self, sha: str, directory: Path) -> None:
        files = {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}
        self.store.save_model_artifact(sha, files)

    def _cache_dir(self, sha: str) -> Path:
        return Path(self.config.resolve(self.config.model.cache_dir)) / sha


def encoder_difference(saved: dict[str, Any], live: dict[str, Any]) -> str | None:
    """What differs between two encoder states (None: the same, up to rounding)."""
    saved_features = [f["name"] for f in saved.get("schema", {}).get("features", [])]
    live_features = [f["name"] for f in live.get("schema", {}).get("features", [])]
    if saved_features != live_features:
        return f"features {saved_features[:4]}… instead of {live_features[:4]}…"
    for name, vocab in live.get("vocab", {}).items():
        if saved.get("vocab", {}).get(name) != vocab:
            return f"the categories of {name!r} differ"
    for part in ("center", "scale"):
        for name, value in live.get(part, {}).items():
            other = saved.get(part, {}).get(name)
            if other is None or not np.allclose(other, value, rtol=ENCODER_TOLERANCE,
                                                atol=ENCODER_TOLERANCE):
                return f"the scaling of {name!r} differs"
    return None


def _base_of(version: ModelVersion) -> str:
    if version.base_sha256 is None:
        raise ModelLoadError(
            f"model version {version.version} was registered before versions recorded their "
            "weights; activate a newer version or let the agent create one.")
    return version.base_sha256


def describe_settings(settings: dict[str, Any]) -> str:
    """``model.min_class_calibration=100, ...``: settings as an operator writes them."""
    return ", ".join(f"model.{name}={settings[name]}" for name in SERVING_SETTINGS)


def _canary_from(version: ModelVersion) -> CanaryReport | None:
    figures = (version.metrics or {}).get("canary")
    if not figures:
        return None
    return CanaryReport(**figures)


def _write_files(directory: Path, files: dict[str, bytes]) -> None:
    staging = directory.with_name(directory.name + f".tmp-{os.getpid()}")
    staging.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        if "/" in name or name.startswith("."):
            raise ModelLoadError(f"model artifact file name {name!r} is not a plain file name.")
        (staging / name).write_bytes(content)
    if directory.exists():
        _remove_tree(staging)
        return
    staging.rename(directory)


def _remove_tree(path: Path) -> None:
    for child in path.iterdir():
        child.unlink()
    path.rmdir()
