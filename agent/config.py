"""The schema of ``agent.yaml``, and loading it with errors a person can act on.

Every mistake in the file is reported at once, each as ``yaml.path: what is wrong (got X,
expected Y)``, because an operator fixing a config one error per restart is an operator
who stops trusting the agent. Structural errors come from pydantic (unknown keys are
rejected, so a typo never silently falls back to a default); the checks that need the
outside world (files exist, secrets present in the environment) run after, on the same list.

Relative paths in the file (reference data, file sources, a SQLite database) are relative to
the directory of the file itself, so ``metasentry run --config /etc/metasentry/agent.yaml``
behaves the same from any working directory.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, get_args
from urllib.parse import quote, urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from sqlalchemy import make_url
from sqlalchemy.exc import ArgumentError

from detectors import DETECTOR_TYPES
from detectors.base import DetectorConfig
from detectors.feature_drift import FeatureDriftConfig
from meta.live import NAME_MIN_REFERENCE_RECORDS
from storage.outbox import AlertRoute
from storage.records import MAX_SINK_CHARS
from storage.urls import redact_url

DEFAULT_CONFIG_PATH = Path("agent.yaml")
SOURCE_TYPES = ("csv_file", "jsonl_file", "stdin", "redis_stream", "mqtt", "http_ingest")
SINK_TYPES = ("webhook", "jsonl")
_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ConfigError(Exception):
    """The configuration cannot be used; ``errors`` holds one line per problem."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("\n".join(errors))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- the record schema -------------------------------------------------------------------


class FeatureSpec(_Model):
    """One input feature. The encoder turns each into one or more float32 columns."""

    # `map:` in YAML; saved encoder states name it `values_map` (model_dump), and both load.
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str = Field(min_length=1)
    type: Literal["numeric", "categorical", "boolean", "tensor"]
    transform: Literal["none", "log1p"] = "none"
    scale: Literal["standard", "minmax", "none"] = "standard"
    shape: tuple[int, ...] | None = None
    max_categories: int = Field(default=1000, gt=0)
    # Cleaning before the value is read: surrounding whitespace removed (`strip: true`), then
    # values renamed (`map: {high: 1, low: 0}`); a value the map does not name is kept.
    strip: bool = False
    values_map: dict[str, str | int | float | bool] | None = Field(default=None, alias="map")

    @model_validator(mode="after")
    def _shape_only_for_tensors(self) -> FeatureSpec:
        if self.type == "tensor":
            if not self.shape or any(d <= 0 for d in self.shape):
                raise ValueError("a tensor feature needs `shape:` with positive dimensions")
        elif self.shape is not None:
            raise ValueError("`shape:` applies only to tensor features")
        if self.transform == "log1p" and self.type not in ("numeric", "tensor"):
            raise ValueError("`transform: log1p` applies only to numeric and tensor features")
        if self.type == "tensor" and (self.values_map or self.strip):
            raise ValueError("`map:` and `strip:` apply to scalar features, not tensors")
        return self


#: The environment variable holding the key of ``mode: hash`` redaction (docs: README).
REDACT_KEY_ENV = "METASENTRY_REDACT_KEY"


class RedactSpec(_Model):
    """One ``schema.redact`` entry: a field whose value incidents, sinks and logs never show.

    ``mask`` replaces the value with ``[redacted]``; ``hash`` with a keyed hash of it (the key
    from ``$METASENTRY_REDACT_KEY``), so an analyst can still group incidents by the same
    address or user without seeing it.
    """

    field: str = Field(min_length=1)
    mode: Literal["mask", "hash"] = "mask"


class SchemaConfig(_Model):
    """How records look: which fields are features, which one is the label."""

    columns: list[str] | None = None
    label: str | None = None
    id: str | None = None
    timestamp: str | None = None
    max_record_bytes: int = Field(default=1_048_576, gt=0)
    features: list[FeatureSpec] = Field(min_length=1)
    # Fields masked in what is stored and shown (a plain name means `mode: mask`).
    redact: list[RedactSpec] = Field(default_factory=list)

    @field_validator("redact", mode="before")
    @classmethod
    def _plain_names_mask(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"field": item} if isinstance(item, str) else item for item in value]
        return value

    @property
    def redact_rules(self) -> dict[str, Literal["mask", "hash"]]:
        """Field name to masking mode, one entry per ``schema.redact`` item."""
        return {item.field: item.mode for item in self.redact}

    def known_fields(self) -> list[str]:
        """Every field the schema names: columns, features, label, id and timestamp."""
        names = list(self.columns or []) + [f.name for f in self.features] + [
            n for n in (self.label, self.id, self.timestamp) if n]
        return list(dict.fromkeys(names))

    @model_validator(mode="after")
    def _names_consistent(self) -> SchemaConfig:
        names = [f.name for f in self.features]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"feature names must be unique (repeated: {', '.join(dupes)})")
        if self.columns is not None:
            known = set(self.columns)
            wanted = names + [n for n in (self.label, self.id, self.timestamp) if n]
            missing = [n for n in wanted if n not in known]
            if missing:
                raise ValueError(f"not in `columns:`: {', '.join(missing)}")
        return self


class RollingReferenceConfig(_Model):
    """How fast and how far a rolling reference may follow the stream (``detectors.reference``)."""

    follow_rate: float = Field(default=0.05, gt=0, le=1)
    anchor_limit: float = Field(default=0.3, gt=0, le=1)
    strategy: Literal["last_n", "reservoir"] = "last_n"


class ReferenceConfig(_Model):
    """Data the detectors are fitted on: what 'normal' looks like for this stream.

    ``mode`` says whether window detectors keep it (``fixed``), follow the stream with windows
    that raised no alarm (``rolling``), or move only when an analyst labels a drift incident
    ``benign_drift`` (``approved``; rolling references accept such approvals too). Moving
    references are kept as versions in the store (``metasentry reference``). An approved
    window says "normal looks like this now": by default it replaces the reference
    (``approval: replace``; later approvals then add to it), or it is added (``merge``).
    """

    path: Path
    header: bool = True
    limit: int | None = Field(default=None, gt=0)
    mode: Literal["fixed", "rolling", "approved"] = "fixed"
    rolling: RollingReferenceConfig = Field(default_factory=RollingReferenceConfig)
    # An approved window becomes the reference (replace) or is added to it (merge); either
    # way the newest max_records records are kept (default: the configured reference's size).
    approval: Literal["replace", "merge"] = "replace"
    max_records: int | None = Field(default=None, gt=1)
    poll_s: float = Field(default=5.0, gt=0)


# --- sources -----------------------------------------------------------------------------


class _FileSource(_Model):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")
    path: Path
    mode: Literal["follow", "replay"] = "follow"


class CsvFileSourceConfig(_FileSource):
    type: Literal["csv_file"]
    header: bool = True
    delimiter: str = Field(default=",", min_length=1, max_length=1)


class JsonlFileSourceConfig(_FileSource):
    type: Literal["jsonl_file"]


class StdinSourceConfig(_Model):
    type: Literal["stdin"]
    name: str = Field(default="stdin", min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")
    format: Literal["jsonl", "csv"] = "jsonl"
    header: bool = True


class RedisStreamSourceConfig(_Model):
    """A Redis stream read through a consumer group: several agents share it (docs/SOURCES.md).

    Records are one field of each entry (``field:``) holding a JSON object or a CSV line
    (``format:``; CSV cells are named by ``schema.columns``), or, without ``field:``, the
    entry's own fields. ``${VAR}`` in ``url`` is read from the environment (percent-encoded in
    the userinfo and query), so a password stays out of this file.
    """

    type: Literal["redis_stream"]
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")
    url: str = Field(min_length=1)
    stream: str = Field(min_length=1, max_length=1000)
    group: str = Field(default="metasentry", min_length=1, max_length=200)
    # Default <hostname>-<pid>; a name that survives restarts (a pod name, ${POD_NAME}: ${VAR}
    # is read from the environment) takes its own pending entries back at once instead of
    # after claim_idle_s.
    consumer: str | None = Field(default=None, min_length=1, max_length=200, pattern=r"^\S+$")
    field: str | None = Field(default=None, min_length=1)
    format: Literal["json", "csv"] | None = None
    batch_size: int = Field(default=500, gt=0, le=100_000)
    block_ms: int = Field(default=2000, gt=0, le=60_000)
    claim_idle_s: float = Field(default=60.0, gt=0)
    max_deliveries: int = Field(default=10, ge=1, le=1_000_000)
    dead_letter_stream: str | None = Field(default=None, min_length=1, max_length=1000)
    start_id: Literal["$", "0"] = "$"

    @field_validator("url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        scheme, sep, rest = value.partition("://")
        if scheme.lower() not in ("redis", "rediss", "unix") or not sep or not rest:
            raise ValueError("expected a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("start_id", mode="before")
    @classmethod
    def _start_id_text(cls, value: Any) -> Any:
        return "0" if value == 0 else value  # YAML reads an unquoted 0 as a number

    @model_validator(mode="after")
    def _consistent(self) -> RedisStreamSourceConfig:
        if self.format is not None and self.field is None:
            raise ValueError("`format:` says how `field:` is written; name the field, or "
                             "leave `format:` out to read the entry's own fields")
        if self.dead_letter_stream == self.stream:
            raise ValueError("`dead_letter_stream:` must differ from `stream:`")
        return self

    @property
    def record_format(self) -> Literal["json", "csv"]:
        return self.format or "json"


class HttpIngestSourceConfig(_Model):
    """Records POSTed to the API's ``/v1/ingest`` (docs/SOURCES.md, "HTTP ingest").

    The queue between the API and the pipeline is bounded by ``max_queue_records`` and
    ``max_queue_bytes`` (record text): a request that does not fit is answered 429. A request
    is answered 200 only once its records are committed, or 503 after ``wait_timeout_s``.
    ``max_body_bytes`` (default ``api.max_body_bytes``, never above it: the API reads no larger
    body) caps one request.
    """

    type: Literal["http_ingest"]
    name: str = Field(default="http", min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")
    max_body_bytes: int | None = Field(default=None, gt=0)
    max_queue_records: int = Field(default=100_000, gt=0, le=10_000_000)
    max_queue_bytes: int = Field(default=67_108_864, gt=0, le=17_179_869_184)
    wait_timeout_s: float = Field(default=30.0, gt=0, le=600)
    remember_keys: int = Field(default=10_000, ge=0, le=1_000_000)


class MqttSourceConfig(_Model):
    """MQTT topics read at QoS 1 through a persistent session (docs/SOURCES.md, "MQTT").

    Each message is one record: a JSON object (``format: json``; ``jsonl`` is accepted for
    the same) or one CSV line whose cells ``schema.columns`` names. ``${VAR}`` in ``url`` is
    read from the environment (percent-encoded in the userinfo), so a password stays out of
    this file.
    """

    type: Literal["mqtt"]
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")
    url: str = Field(min_length=1)
    topics: list[str] = Field(min_length=1)
    # The broker keeps the session (and queues messages) under this id: fixed across restarts,
    # never shared by two agents.
    client_id: str = Field(min_length=1, max_length=200, pattern=r"^\S+$")
    qos: Literal[1] = 1
    id_field: str | None = Field(default=None, min_length=1)
    format: Literal["json", "csv"] = "json"
    session_expiry_s: int = Field(default=7 * 86_400, ge=0, le=0xFFFFFFFF)
    max_buffered: int = Field(default=1000, ge=1, le=65_535)
    keepalive_s: int = Field(default=30, ge=5, le=65_535)

    @field_validator("url")
    @classmethod
    def _mqtt_url(cls, value: str) -> str:
        scheme, sep, rest = value.partition("://")
        if scheme.lower() not in ("mqtt", "mqtts") or not sep or not rest:
            raise ValueError("expected an mqtt:// or mqtts:// URL")
        return value

    @field_validator("topics")
    @classmethod
    def _topic_filters(cls, value: list[str]) -> list[str]:
        from adapters.mqtt import topic_filter_error

        problems = [f"{topic!r} {problem}" for topic in value
                    if (problem := topic_filter_error(topic))]
        if problems:
            raise ValueError("expected MQTT topic filters; " + "; ".join(problems))
        return value

    @field_validator("format", mode="before")
    @classmethod
    def _jsonl_is_json(cls, value: Any) -> Any:
        return "json" if value == "jsonl" else value


SourceConfig = Annotated[
    CsvFileSourceConfig | JsonlFileSourceConfig | StdinSourceConfig | RedisStreamSourceConfig
    | HttpIngestSourceConfig | MqttSourceConfig,
    Field(discriminator="type"),
]


# --- detectors and incidents ---------------------------------------------------------------


# Each detector class owns the model of its ``detectors:`` entry; the list is a union of them,
# discriminated on ``type:`` like ``sources:``. A new detector type joins the config by being
# registered in detectors.DETECTOR_TYPES.
DETECTOR_CONFIGS: tuple[type[DetectorConfig], ...] = tuple(
    detector_class.Config for detector_class in DETECTOR_TYPES.values()
)
if TYPE_CHECKING:
    DetectorEntry = DetectorConfig
else:
    DetectorEntry = Annotated[Union[DETECTOR_CONFIGS], Field(discriminator="type")]  # noqa: UP007
DEFAULT_DETECTORS: tuple[DetectorConfig, ...] = (FeatureDriftConfig(name="feature_drift"),)


def legacy_detectors(value: Any) -> tuple[Any, list[str]]:
    """Turn the old ``detectors: {feature_drift: {...}}`` mapping into the list form.

    Old files keep loading; the note returned says exactly how to rewrite them.
    """
    if not isinstance(value, dict):
        return value, []
    entries = []
    for key, settings in value.items():
        entry = {"type": key, "name": key} | (dict(settings) if isinstance(settings, dict) else {})
        entries.append(entry)
    rewritten = "; ".join(f"- {{type: {e['type']}, name: {e['name']}, ...}}" for e in entries)
    note = ("detectors: the mapping form is deprecated; write a list of typed entries instead "
            f"({rewritten})")
    return entries, [note]


class IncidentPolicyConfig(_Model):
    """Turns detector verdicts into incidents a person looks at.

    Per-record findings are grouped: consecutive findings of one detector, kind and predicted
    class on one source become one incident with a count until the group spans
    ``group_span_records`` records of the stream (or ``group_span_s`` seconds of the records'
    own timestamps, when the schema names a timestamp field). Spans are measured on the
    stream, never on the wall clock, so a replay after a crash groups identically.
    """

    drift_high_severity_p: float = Field(default=1e-6, gt=0, lt=1)
    excerpt_chars: int = Field(default=500, gt=0, le=2000)
    group_span_records: int = Field(default=10_000, gt=0)
    group_span_s: float | None = Field(default=None, gt=0)
    examples_per_incident: int = Field(default=5, ge=1, le=100)


# --- alert sinks ---------------------------------------------------------------------------

#: every incident kind the agent creates (drift tests, the reference keeper, the live model,
#: the adversarial and poisoning detectors, adaptation); a sink's ``kinds:`` names these.
#: tests/unit/agent/test_sink_config.py checks the list against the code that creates them.
IncidentKind = Literal["drift", "reference_drift", "attack", "novel", "adversarial",
                       "poisoning", "model_rejected"]
INCIDENT_KINDS: tuple[str, ...] = get_args(IncidentKind)
Severity = Literal["info", "low", "medium", "high", "critical"]  # storage.SEVERITIES, in order


class _SinkConfig(_Model):
    """What every ``sinks:`` entry has: a name and which incidents it is sent."""

    name: str = Field(min_length=1, max_length=MAX_SINK_CHARS, pattern=r"^[A-Za-z0-9_.:-]+$")
    min_severity: Severity = "info"
    # Leave out for every kind; a list names the kinds this sink is sent.
    kinds: list[IncidentKind] | None = None

    @field_validator("kinds")
    @classmethod
    def _some_kinds(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("name at least one kind, or leave `kinds:` out to send every kind")
        return value

    def route(self) -> AlertRoute:
        """The filter the store applies when it queues an incident for this sink."""
        return AlertRoute(name=self.name, min_severity=self.min_severity,
                          kinds=None if self.kinds is None else frozenset(self.kinds))


class WebhookSinkConfig(_SinkConfig):
    """POST each alert as JSON, signed with HMAC-SHA256 (docs/SINKS.md).

    The key comes from the environment variable named by ``secret_env``, never from this
    file; ``${VAR}`` in ``url`` is read from the environment too (percent-encoded in the
    userinfo and query), so a token in the URL stays out of the file as well.
    """

    type: Literal["webhook"]
    url: str = Field(min_length=1)
    secret_env: str = Field(pattern=_ENV_NAME)
    timeout_s: float = Field(default=10.0, gt=0, le=300)
    max_backoff_s: float = Field(default=300.0, gt=0, le=86_400)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        scheme, sep, rest = value.partition("://")
        authority = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
        host = authority.rpartition("@")[2]
        if scheme.lower() not in ("http", "https") or not sep or not host:
            raise ValueError("expected an http:// or https:// URL with a host")
        return value


class JsonlSinkConfig(_SinkConfig):
    """Append each alert as one JSON line (SIEM collectors: Filebeat, Fluent Bit, Vector)."""

    type: Literal["jsonl"]
    path: Path


SinkConfig = Annotated[WebhookSinkConfig | JsonlSinkConfig, Field(discriminator="type")]


# --- service -------------------------------------------------------------------------------


def _check_listen(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("expected HOST:PORT with a port in 1..65535")
    return value


class StoreTimeoutsConfig(_Model):
    """How long PostgreSQL calls may wait (storage.StoreTimeouts; SQLite ignores them)."""

    connect_s: float = Field(default=10.0, gt=0)
    statement_s: float = Field(default=30.0, gt=0)
    idle_in_transaction_s: float = Field(default=60.0, gt=0)
    operation_s: float = Field(default=60.0, gt=0)
    ping_s: float = Field(default=5.0, gt=0)
    pool_s: float = Field(default=10.0, gt=0)
    maintenance_s: float = Field(default=900.0, gt=0)
    keepalives_idle_s: float = Field(default=30.0, gt=0)
    keepalives_interval_s: float = Field(default=10.0, gt=0)
    keepalives_count: int = Field(default=3, ge=1)
    tcp_user_timeout_s: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _operation_outlasts_statement(self) -> StoreTimeoutsConfig:
        if self.operation_s <= self.statement_s:
            raise ValueError("operation_s must exceed statement_s, so a slow server is "
                             "cancelled cleanly before the connection is cut")
        return self


class StorageConfig(_Model):
    url: str = "sqlite:///var/metasentry.db"
    retry_max_backoff_s: float = Field(default=30.0, gt=0)
    timeouts: StoreTimeoutsConfig = StoreTimeoutsConfig()

    @field_validator("url")
    @classmethod
    def _known_dialect(cls, value: str) -> str:
        if not value.startswith(("sqlite:", "postgresql:", "postgresql+psycopg:")):
            raise ValueError("expected a sqlite:/// or postgresql+psycopg:// URL")
        return value


class MetricsConfig(_Model):
    enabled: bool = True
    listen: str = "127.0.0.1:9108"

    @field_validator("listen")
    @classmethod
    def _valid_listen(cls, value: str) -> str:
        return _check_listen(value)


class ApiConfig(_Model):
    enabled: bool = True
    listen: str = "127.0.0.1:8080"
    token_env: str = Field(default="METASENTRY_API_TOKEN", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    read_requires_token: bool = False
    # Bodies are buffered up to this size before a route sees them; larger ones get 413.
    max_body_bytes: int = Field(default=1_048_576, gt=0, le=1_073_741_824)

    @field_validator("listen")
    @classmethod
    def _valid_listen(cls, value: str) -> str:
        return _check_listen(value)


class SchedulerConfig(_Model):
    drift_test_interval_s: float = Field(default=60.0, gt=0)
    retention_interval_s: float = Field(default=3600.0, gt=0)
    checkpoint_interval_s: float = Field(default=300.0, gt=0)


class RetentionConfig(_Model):
    days: float = Field(default=30.0, gt=0)


class PipelineConfig(_Model):
    batch_size: int = Field(default=2000, gt=0, le=100_000)
    fetch_timeout_s: float = Field(default=0.5, gt=0)
    shutdown_timeout_s: float = Field(default=20.0, gt=0)


class LoggingConfig(_Model):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    json_format: bool = Field(default=False, alias="json")


class ModelConfig(_Model):
    """The live alert classifier: which learner, where its weights come from, how it judges.

    ``learner: knn`` is the nearest-labelled-record baseline on the encoded features (nothing
    to train); the others are meta-trained, by ``metasentry meta-train`` (``path:``) or at the
    first start on the reference's labelled records (``bootstrap: true``).
    """

    enabled: bool = False
    learner: Literal["memory", "knn", "protonet", "maml", "fomaml", "metasgd"] = "memory"
    path: Path | None = None
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    signing_key_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    bootstrap: bool = True
    training_episodes: int = Field(default=2000, gt=0)
    # Conv-4 for a schema whose only feature is an image tensor (auto), else an MLP.
    encoder: Literal["auto", "mlp", "conv4"] = "auto"
    benign_class: str = Field(default="normal", min_length=1, max_length=100)
    device: Literal["auto", "cpu", "gpu"] = "auto"
    novel_false_alarm_rate: float = Field(default=0.01, gt=0, lt=1)
    canary_fraction: float = Field(default=0.2, gt=0, lt=0.5)
    min_class_calibration: int = Field(default=100, ge=5)
    # A reference class with fewer records raises alarms as `novel` (nearest that class)
    # instead of naming them, until an analyst labels one of its kind (meta/live.py).
    min_reference_records_to_name: int = Field(default=NAME_MIN_REFERENCE_RECORDS, ge=1)
    poll_interval_s: float = Field(default=5.0, gt=0)
    cache_dir: Path = Path("var/models")
    seed: int = 0
    # Memory learner only: members meta-trained from seeds seed, seed+1, ... and read as one
    # memory. Opt-in: better base-rate recall and more attack alarms, but more benign alarms
    # before labels (docs/bench/fewshot.md).
    members: int = Field(default=1, ge=1, le=16)

    @model_validator(mode="after")
    def _members_need_memory(self) -> ModelConfig:
        if self.members > 1 and self.learner != "memory":
            raise ValueError(f"members: only the memory learner is an ensemble, not "
                             f"{self.learner} (remove `members` or use `learner: memory`)")
        return self


class ScreeningConfig(_Model):
    """Checks every analyst label gets before it may teach the model (poisoned feedback)."""

    enabled: bool = True
    neighbours: int = Field(default=10, ge=3, le=100)
    min_actor_agreement: float = Field(default=0.5, ge=0, le=1)
    min_actor_labels: int = Field(default=5, ge=1)


class AdaptationConfig(_Model):
    """When labels trigger a new model version, and what it must pass to go live."""

    min_labels: int = Field(default=5, ge=1)
    check_interval_s: float = Field(default=2.0, gt=0)
    max_known_drop: float = Field(default=0.02, ge=0, le=1)
    max_benign_increase: float = Field(default=0.01, ge=0, le=1)
    screening: ScreeningConfig = ScreeningConfig()


class AgentConfig(_Model):
    """The whole of ``agent.yaml``."""

    version: Literal[1] = 1
    schema_: SchemaConfig = Field(alias="schema")
    reference: ReferenceConfig
    sources: list[SourceConfig] = Field(min_length=1)
    detectors: list[DetectorEntry] = Field(default_factory=lambda: list(DEFAULT_DETECTORS))
    incidents: IncidentPolicyConfig = IncidentPolicyConfig()
    storage: StorageConfig = StorageConfig()
    metrics: MetricsConfig = MetricsConfig()
    api: ApiConfig = ApiConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    retention: RetentionConfig = RetentionConfig()
    pipeline: PipelineConfig = PipelineConfig()
    logging: LoggingConfig = LoggingConfig()
    model: ModelConfig = ModelConfig()
    adaptation: AdaptationConfig = AdaptationConfig()
    sinks: list[SinkConfig] = Field(default_factory=list)

    # Filled by load_config: where the file was, and its digest for metasentry_config_info.
    base_dir: Path = Field(default=Path("."), exclude=True)
    sha256: str = Field(default="", exclude=True)
    # Deprecations noticed while loading, logged at start and printed by check-config.
    notes: list[str] = Field(default_factory=list, exclude=True)

    @property
    def schema(self) -> SchemaConfig:  # type: ignore[override]
        return self.schema_

    @model_validator(mode="after")
    def _unique_source_names(self) -> AgentConfig:
        names = [s.name for s in self.sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"source names must be unique (repeated: {', '.join(dupes)})")
        return self

    @field_validator("sinks")
    @classmethod
    def _unique_sink_names(cls, sinks: list[SinkConfig]) -> list[SinkConfig]:
        names = [s.name for s in sinks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"sink names must be unique (repeated: {', '.join(dupes)})")
        return sinks

    @model_validator(mode="after")
    def _detectors_consistent(self) -> AgentConfig:
        names = [d.resolved_name() for d in self.detectors]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"detector names must be unique (repeated: {', '.join(dupes)})")
        needs_model = [d.resolved_name() for d in self.enabled_detectors()
                       if getattr(DETECTOR_TYPES[d.type], "requires_model", False)]
        if needs_model and not self.model.enabled:
            raise ValueError(f"detector(s) {', '.join(needs_model)} need the live model: set "
                             "`model.enabled: true`")
        if self.model.enabled and self.model.learner != "knn" and self.model.path is None and (
                not self.model.bootstrap or not self.schema_.label):
            raise ValueError("model: give `model.path` (a directory from `metasentry "
                             "meta-train`) or set `model.bootstrap: true` with a `schema.label` "
                             "field to meta-train at first start")
        if self.model.enabled and not self.schema_.label:
            raise ValueError("model: the live model enrols the reference's labelled records; "
                             "name the label field in `schema.label`")
        if not self.schema_.timestamp:
            for position, entry in enumerate(self.detectors):
                if isinstance(getattr(entry, "window", None), str) or getattr(
                        entry, "seasonality", "none") != "none":
                    raise ValueError(f"detectors[{position}] ({entry.resolved_name()}): time "
                                     "windows and seasonality read each record's time; name "
                                     "its field in `schema.timestamp`")
        return self

    @model_validator(mode="after")
    def _reference_can_move(self) -> AgentConfig:
        if self.reference.mode != "fixed" and not any(
                getattr(DETECTOR_TYPES[d.type], "family", "") == "window"
                and hasattr(DETECTOR_TYPES[d.type], "set_reference")
                for d in self.enabled_detectors()):
            raise ValueError(f"reference.mode: {self.reference.mode} moves the reference of "
                             "window detectors, and no enabled detector is one; use `fixed` or "
                             "add a window detector (e.g. feature_drift)")
        return self

    def enabled_detectors(self) -> list[DetectorConfig]:
        """The ``detectors:`` entries that are switched on, in file order."""
        return [d for d in self.detectors if d.enabled]

    def resolve(self, path: Path) -> Path:
        """A path from the file, made absolute against the file's directory."""
        return path if path.is_absolute() else (self.base_dir / path)

    def storage_url(self) -> str:
        """The database URL with ``${VAR}`` secrets expanded and SQLite paths made absolute.

        A secret lands in the URL percent-encoded when it sits in the userinfo or the query,
        so a password such as ``p@ss:w/rd#1?x`` stays one password instead of turning into a
        host, a port and a path (SQLAlchemy decodes it again when it connects).
        """
        url = expand_url_template(self.storage.url)
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/") and len(url) > len(prefix):
            url = prefix + str(self.resolve(Path(url[len(prefix):])))
        return url

    def api_token(self) -> str | None:
        return os.environ.get(self.api.token_env) or None

    def alert_routes(self) -> tuple[AlertRoute, ...]:
        """Which incidents each configured sink is sent, for the store's outbox."""
        return tuple(sink.route() for sink in self.sinks)

    def source_url(self, source: RedisStreamSourceConfig | MqttSourceConfig) -> str:
        """A Redis or MQTT source's URL with ``${VAR}`` expanded (secret: never log it,
        redact it)."""
        return expand_url_template(source.url)

    def source_consumer(self, source: RedisStreamSourceConfig) -> str | None:
        """A Redis source's consumer name with ``${VAR}`` expanded (``${POD_NAME}``)."""
        return None if source.consumer is None else _expand(source.consumer, encode=False)

    def sink_url(self, sink: WebhookSinkConfig) -> str:
        """A webhook's URL with ``${VAR}`` expanded (secret: never log it, redact it)."""
        return expand_url_template(sink.url)

    def redacted_summary(self) -> dict[str, Any]:
        """What check-config prints: the effective settings, with secrets masked."""
        data = self.model_dump(mode="json", by_alias=True)
        data["storage"]["url"] = redact_url(self.storage.url)
        data["api"]["token"] = "set" if self.api_token() else "missing"
        for entry, source in zip(data["sources"], self.sources, strict=True):
            if isinstance(source, (RedisStreamSourceConfig, MqttSourceConfig)):
                entry["url"] = redact_url(source.url)
        for entry, sink in zip(data["sinks"], self.sinks, strict=True):
            if isinstance(sink, WebhookSinkConfig):
                entry["url"] = redact_url(sink.url)
                entry["secret"] = "set" if os.environ.get(sink.secret_env) else "missing"
        data["schema"]["features"] = f"{len(self.schema.features)} features"
        if data["schema"].get("columns"):
            data["schema"]["columns"] = f"{len(self.schema.columns or [])} columns"
        return data


def expand_url_template(template: str) -> str:
    """``template`` with each ``${VAR}`` replaced by the environment's value (empty if unset).

    The template is split into its parts first (its own ``@``, ``/`` and ``?`` are the real
    delimiters; a value's never are): values in the userinfo and the query are
    percent-encoded, values in the host and path (a SQLite directory) go in as they are.
    """
    scheme, sep, rest = template.partition("://")
    if not sep:
        return _expand(template, encode=False)
    authority_end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0),
                        default=len(rest))
    at = rest.rfind("@", 0, authority_end)
    userinfo, hostpath = (rest[:at], rest[at + 1:]) if at >= 0 else (None, rest)
    path, question, query = hostpath.partition("?")
    expanded = f"{scheme}://"
    if userinfo is not None:
        expanded += _expand(userinfo, encode=True) + "@"
    expanded += _expand(path, encode=False)
    if question:
        expanded += "?" + _expand(query, encode=True)
    return expanded


def _expand(text: str, *, encode: bool) -> str:
    def value(match: re.Match[str]) -> str:
        found = os.environ.get(match.group(1), "")
        return quote(found, safe="") if encode else found

    return _ENV_REF.sub(value, text)


def storage_url_error(config: AgentConfig) -> str | None:
    """Why the expanded ``storage.url`` cannot be parsed, in one line without the secret."""
    try:
        make_url(config.storage_url())
    except (ArgumentError, ValueError):
        return (f"storage.url: not a valid database URL once the environment is substituted "
                f"(got {redact_url(config.storage.url)!r}; check the host, port and database "
                "parts, and any ${VAR} used there)")
    return None


# --- loading -------------------------------------------------------------------------------

_EXPECTATIONS: dict[str, str] = {
    "missing": "a value",
    "int_parsing": "an integer",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_parsing": "a number",
    "float_type": "a number",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "path_type": "a file path",
}


def _yaml_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        # pydantic puts the union tag in the location of a tagged union member;
        # the YAML has no such key.
        if i > 0 and isinstance(loc[i - 1], int) and part in (*SOURCE_TYPES, *DETECTOR_TYPES,
                                                             *SINK_TYPES):
            continue
        if part == "schema_":
            part = "schema"
        out += ("." if out else "") + str(part)
    return out or "(top level)"


def _describe(error: Any) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    got = error.get("input")
    if kind == "extra_forbidden":
        return "unknown key (remove it or check its spelling)"
    if kind == "missing":
        return "required key is missing"
    expected = _EXPECTATIONS.get(kind)
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        sign = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<",
                "less_than_equal": "<="}[kind]
        bound = next(iter(ctx.values()))
        expected = f"a number {sign} {bound}"
    elif kind == "literal_error":
        expected = f"one of {ctx.get('expected')}"
    elif kind == "union_tag_invalid":
        return f"unknown type (got {ctx.get('tag')!r}, expected one of {_type_choices(error)})"
    elif kind == "union_tag_not_found":
        return f"missing `type:` (expected one of {_type_choices(error)})"
    elif kind in ("too_short", "too_long"):
        expected = error["msg"].replace("Input should", "something that should").replace(
            "Value should", "something that should")
    elif kind == "value_error":
        return f"{error['msg'].removeprefix('Value error, ')} (got {_short(got)})"
    elif kind == "string_pattern_mismatch":
        expected = f"text matching {ctx.get('pattern')}"
    if expected is None:
        return f"{error['msg']} (got {_short(got)})"
    return f"invalid value (got {_short(got)}, expected {expected})"


def _type_choices(error: Any) -> str:
    """The ``type:`` values the failing list accepts (sources, detectors or sinks)."""
    section = error["loc"][0] if error.get("loc") else ""
    if section == "sinks":
        return ", ".join(SINK_TYPES)
    return ", ".join(sorted(DETECTOR_TYPES) if section == "detectors" else SOURCE_TYPES)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_config(text: str, *, source: str = "<string>", base_dir: Path = Path(".")) -> AgentConfig:
    """Parse and validate YAML text; raise ConfigError listing every problem."""
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise ConfigError([f"{source}: invalid YAML at {where}: {exc.problem}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{source}: invalid YAML: {exc}"]) from None
    if not isinstance(data, dict):
        raise ConfigError([f"{source}: expected a mapping at the top level "
                           f"(got {type(data).__name__})"])
    notes: list[str] = []
    if "detectors" in data:
        data["detectors"], notes = legacy_detectors(data["detectors"])
    data = {k: v for k, v in data.items() if k not in ("base_dir", "sha256", "notes")} | {
        "notes": notes,
        "base_dir": base_dir,
        "sha256": hashlib.sha256(text.encode()).hexdigest(),
    }
    try:
        config = AgentConfig.model_validate(data)
    except ValidationError as exc:
        lines = [f"{_yaml_path(tuple(e['loc']))}: {_describe(e)}" for e in exc.errors()]
        if notes:  # the file used the mapping form: name its keys, not list positions
            for index, entry in enumerate(data["detectors"]):
                lines = [line.replace(f"detectors[{index}]", f"detectors.{entry['name']}")
                         for line in lines]
        raise ConfigError(lines) from None
    errors = source_schema_errors(config) + redact_errors(config)
    if errors:
        raise ConfigError(errors)
    return config


def redact_errors(config: AgentConfig) -> list[str]:
    """``schema.redact`` names fields the schema knows, each once."""
    errors = []
    known = config.schema.known_fields()
    seen: set[str] = set()
    for i, item in enumerate(config.schema.redact):
        name = item.field
        where = f"schema.redact[{i}]"
        if name not in known:
            errors.append(f"{where}: not a field of the schema (got {name!r}, expected one of "
                          f"{', '.join(known)}; name a field that is no feature in "
                          "`schema.columns`)")
        elif name in seen:
            errors.append(f"{where}: {name!r} is redacted twice (expected each field once)")
        seen.add(name)
    return errors


def source_schema_errors(config: AgentConfig) -> list[str]:
    """What a source needs from ``schema:``: CSV lines in a stream need named columns."""
    errors = []
    for i, source in enumerate(config.sources):
        if (isinstance(source, RedisStreamSourceConfig) and source.format == "csv"
                and not config.schema.columns):
            errors.append(f"sources[{i}].format: csv lines have no header in a stream (got "
                          "'csv', expected `schema.columns` to name the cells, or format json)")
        if (isinstance(source, MqttSourceConfig) and source.format == "csv"
                and not config.schema.columns):
            errors.append(f"sources[{i}].format: csv messages have no header (got 'csv', "
                          "expected `schema.columns` to name the cells, or format json)")
    return errors + ingest_source_errors(config)


def ingest_source_errors(config: AgentConfig) -> list[str]:
    """An ``http_ingest`` source needs the API, fits its body cap, and comes at most once."""
    errors = []
    ingest = [(i, s) for i, s in enumerate(config.sources)
              if isinstance(s, HttpIngestSourceConfig)]
    for i, source in ingest[1:]:
        errors.append(f"sources[{i}].type: only one http_ingest source is allowed (got a second, "
                      f"{source.name!r}; expected one, which serves POST /v1/ingest)")
    for i, source in ingest[:1]:
        if not config.api.enabled:
            errors.append(f"sources[{i}].type: http_ingest receives records through the API, "
                          "which is disabled (expected api.enabled: true)")
        if source.max_body_bytes is not None and source.max_body_bytes > config.api.max_body_bytes:
            errors.append(f"sources[{i}].max_body_bytes: larger than api.max_body_bytes (got "
                          f"{source.max_body_bytes}, expected at most {config.api.max_body_bytes}, "
                          "the largest body the API reads)")
        body = source.max_body_bytes or config.api.max_body_bytes
        if source.max_queue_bytes < body:
            errors.append(f"sources[{i}].max_queue_bytes: smaller than one request body (got "
                          f"{source.max_queue_bytes}, expected at least {body}, so that any "
                          "accepted body fits an empty queue)")
    return errors


def environment_errors(config: AgentConfig, *, need_token: bool = True) -> list[str]:
    """What the outside world must provide: files that exist, secrets in the environment."""
    errors: list[str] = []
    ref = config.resolve(config.reference.path)
    if not ref.is_file():
        errors.append(f"reference.path: file not found (got '{ref}', expected a readable file)")
    for i, src in enumerate(config.sources):
        if isinstance(src, (CsvFileSourceConfig, JsonlFileSourceConfig)) and src.mode == "replay":
            path = config.resolve(src.path)
            if not path.is_file():
                errors.append(
                    f"sources[{i}].path: file not found (got '{path}', expected a readable file "
                    "in replay mode)"
                )
    if config.model.enabled and config.model.path is not None:
        model_dir = config.resolve(config.model.path)
        if not (model_dir / "manifest.json").is_file():
            errors.append(f"model.path: no model directory (got '{model_dir}', expected a "
                          "directory written by `metasentry meta-train`)")
    if config.model.enabled and config.model.signing_key_env and (
            config.model.signing_key_env not in os.environ):
        errors.append(f"model.signing_key_env: environment variable "
                      f"{config.model.signing_key_env} is not set (expected the model "
                      "signing key)")
    missing = [name for name in _ENV_REF.findall(config.storage.url) if name not in os.environ]
    for name in missing:
        errors.append(f"storage.url: environment variable {name} is not set (expected a secret)")
    url_error = None if missing else storage_url_error(config)
    if url_error:
        errors.append(url_error)
    errors.extend(sink_errors(config))
    errors.extend(redis_source_errors(config))
    errors.extend(mqtt_source_errors(config))
    hashed = [i for i, item in enumerate(config.schema.redact) if item.mode == "hash"]
    if hashed and not os.environ.get(REDACT_KEY_ENV):
        errors.append(f"schema.redact[{hashed[0]}].mode: environment variable {REDACT_KEY_ENV} "
                      "is not set or empty (expected the secret key of `mode: hash`)")
    if need_token and config.api.enabled and not config.api_token():
        errors.append(
            f"api.token_env: environment variable {config.api.token_env} is not set (expected the "
            "API token; write routes refuse every request without it)"
        )
    return errors


def sink_errors(config: AgentConfig) -> list[str]:
    """What the sinks need from the outside world: their secrets, and a directory to write in."""
    errors: list[str] = []
    for i, sink in enumerate(config.sinks):
        where = f"sinks[{i}]"
        if isinstance(sink, WebhookSinkConfig):
            if not os.environ.get(sink.secret_env):
                errors.append(f"{where}.secret_env: environment variable {sink.secret_env} is "
                              "not set or empty (expected the webhook's signing key)")
            missing = [name for name in _ENV_REF.findall(sink.url) if name not in os.environ]
            for name in missing:
                errors.append(f"{where}.url: environment variable {name} is not set "
                              "(expected a secret)")
            if not missing and _url_error(config.sink_url(sink)):
                errors.append(f"{where}.url: not a valid http(s) URL once the environment is "
                              f"substituted (got {redact_url(sink.url)!r})")
        else:
            path = config.resolve(sink.path)
            if not path.parent.is_dir():
                errors.append(f"{where}.path: directory not found (got '{path.parent}', "
                              "expected an existing directory for the alert file)")
            elif path.is_dir():
                errors.append(f"{where}.path: is a directory (got '{path}', expected a file)")
            elif not os.access(path if path.exists() else path.parent, os.W_OK):
                errors.append(f"{where}.path: not writable (got '{path}', expected a file the "
                              "agent may append to)")
    return errors


def _client_errors(where: str, source_type: str, client: tuple[str, str], extra: str,
                   url: str) -> tuple[list[str], bool]:
    """A broker source's client package and its URL's secrets; and whether every secret is set.

    Shared by the Redis and MQTT checks: both name the extra to install and every
    ``${VAR}`` of the URL the environment lacks. ``client`` is (module, package).
    """
    errors: list[str] = []
    module, package = client
    if importlib.util.find_spec(module) is None:
        errors.append(f"{where}.type: {source_type} needs the {package} package, which is not "
                      f"installed (expected `pip install 'metasentry[{extra}]'`)")
    missing = [name for name in _ENV_REF.findall(url) if name not in os.environ]
    for name in missing:
        errors.append(f"{where}.url: environment variable {name} is not set "
                      "(expected a secret)")
    return errors, not missing


def redis_source_errors(config: AgentConfig) -> list[str]:
    """What Redis sources need: the client package, their URL's secrets, a URL that parses."""
    errors: list[str] = []
    for i, source in enumerate(config.sources):
        if not isinstance(source, RedisStreamSourceConfig):
            continue
        where = f"sources[{i}]"
        client, secrets_set = _client_errors(where, "redis_stream", ("redis", "redis"), "redis",
                                             source.url)
        errors.extend(client)
        consumer_vars = _ENV_REF.findall(source.consumer or "")
        for name in consumer_vars:
            if name not in os.environ:
                errors.append(f"{where}.consumer: environment variable {name} is not set "
                              "(expected this replica's name)")
        consumer = config.source_consumer(source)
        if consumer_vars and all(name in os.environ for name in consumer_vars) and (
                not consumer or any(c.isspace() for c in consumer)):
            errors.append(f"{where}.consumer: empty or holds spaces once the environment is "
                          f"substituted (got {consumer!r}, expected a name without spaces)")
        if secrets_set and _redis_url_error(config.source_url(source)):
            errors.append(f"{where}.url: not a valid Redis URL once the environment is "
                          f"substituted (got {redact_url(source.url)!r}; expected "
                          "redis://[user:password@]host[:port][/db])")
    return errors


def mqtt_source_errors(config: AgentConfig) -> list[str]:
    """What MQTT sources need: the paho-mqtt package, their URL's secrets, a URL that parses."""
    from adapters.mqtt import BrokerAddress

    errors: list[str] = []
    for i, source in enumerate(config.sources):
        if not isinstance(source, MqttSourceConfig):
            continue
        where = f"sources[{i}]"
        client, secrets_set = _client_errors(where, "mqtt", ("paho", "paho-mqtt"), "mqtt",
                                             source.url)
        errors.extend(client)
        if secrets_set:
            try:
                BrokerAddress.parse(config.source_url(source))
            except ValueError:
                errors.append(f"{where}.url: not a valid MQTT URL once the environment is "
                              f"substituted (got {redact_url(source.url)!r}; expected "
                              "mqtt://[user:password@]host[:port] or mqtts://)")
    return errors


def _redis_url_error(url: str) -> bool:
    """True when ``url`` lacks a host (or socket path), or has a bad port or database."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError:
        return True
    if parts.scheme == "unix":
        return not parts.path
    database = parts.path.strip("/")
    return not parts.hostname or (bool(database) and not database.isdigit())


def _url_error(url: str) -> bool:
    """True when ``url`` is not an http(s) URL with a host and a valid port."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError:
        return True
    return parts.scheme not in ("http", "https") or not parts.hostname


def load_config(path: Path | str, *, check_environment: bool = True,
                need_token: bool = True) -> AgentConfig:
    """Read, validate and check ``agent.yaml``; raise ConfigError with every problem."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError([f"{path}: config file not found"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read config file ({exc.strerror})"]) from None
    config = parse_config(text, source=str(path), base_dir=path.resolve().parent)
    if check_environment:
        errors = environment_errors(config, need_token=need_token)
        if errors:
            raise ConfigError(errors)
    return config
