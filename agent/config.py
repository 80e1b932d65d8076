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
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

DEFAULT_CONFIG_PATH = Path("agent.yaml")
SOURCE_TYPES = ("csv_file", "jsonl_file", "stdin")
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

    name: str = Field(min_length=1)
    type: Literal["numeric", "categorical", "boolean", "tensor"]
    transform: Literal["none", "log1p"] = "none"
    scale: Literal["standard", "minmax", "none"] = "standard"
    shape: tuple[int, ...] | None = None
    max_categories: int = Field(default=1000, gt=0)

    @model_validator(mode="after")
    def _shape_only_for_tensors(self) -> FeatureSpec:
        if self.type == "tensor":
            if not self.shape or any(d <= 0 for d in self.shape):
                raise ValueError("a tensor feature needs `shape:` with positive dimensions")
        elif self.shape is not None:
            raise ValueError("`shape:` applies only to tensor features")
        if self.transform == "log1p" and self.type not in ("numeric", "tensor"):
            raise ValueError("`transform: log1p` applies only to numeric and tensor features")
        return self


class SchemaConfig(_Model):
    """How records look: which fields are features, which one is the label."""

    columns: list[str] | None = None
    label: str | None = None
    id: str | None = None
    timestamp: str | None = None
    max_record_bytes: int = Field(default=1_048_576, gt=0)
    features: list[FeatureSpec] = Field(min_length=1)

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


class ReferenceConfig(_Model):
    """Data the detectors are fitted on: what 'normal' looks like for this stream."""

    path: Path
    header: bool = True
    limit: int | None = Field(default=None, gt=0)


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


SourceConfig = Annotated[
    CsvFileSourceConfig | JsonlFileSourceConfig | StdinSourceConfig,
    Field(discriminator="type"),
]


# --- detectors and incidents ---------------------------------------------------------------


class FeatureDriftConfig(_Model):
    enabled: bool = True
    window: int = Field(default=1000, gt=0)
    step: int | None = Field(default=None, gt=0)
    alpha: float = Field(default=0.01, gt=0, lt=1)
    correction: Literal["bh", "bonferroni"] = "bh"
    top_k: int = Field(default=5, gt=0)
    min_window: int = Field(default=100, gt=0)


class DetectorsConfig(_Model):
    feature_drift: FeatureDriftConfig = FeatureDriftConfig()


class IncidentPolicyConfig(_Model):
    """Turns detector verdicts into incidents a person looks at."""

    drift_high_severity_p: float = Field(default=1e-6, gt=0, lt=1)
    excerpt_chars: int = Field(default=500, gt=0, le=2000)


# --- service -------------------------------------------------------------------------------


def _check_listen(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("expected HOST:PORT with a port in 1..65535")
    return value


class StorageConfig(_Model):
    url: str = "sqlite:///var/metasentry.db"
    retry_max_backoff_s: float = Field(default=30.0, gt=0)

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
    """Where the meta-learned classifier runs (``meta-train``, ``fewshot-eval``)."""

    device: Literal["auto", "cpu", "gpu"] = "auto"


class AgentConfig(_Model):
    """The whole of ``agent.yaml``."""

    version: Literal[1] = 1
    schema_: SchemaConfig = Field(alias="schema")
    reference: ReferenceConfig
    sources: list[SourceConfig] = Field(min_length=1)
    detectors: DetectorsConfig = DetectorsConfig()
    incidents: IncidentPolicyConfig = IncidentPolicyConfig()
    storage: StorageConfig = StorageConfig()
    metrics: MetricsConfig = MetricsConfig()
    api: ApiConfig = ApiConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    retention: RetentionConfig = RetentionConfig()
    pipeline: PipelineConfig = PipelineConfig()
    logging: LoggingConfig = LoggingConfig()
    model: ModelConfig = ModelConfig()

    # Filled by load_config: where the file was, and its digest for metasentry_config_info.
    base_dir: Path = Field(default=Path("."), exclude=True)
    sha256: str = Field(default="", exclude=True)

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

    def resolve(self, path: Path) -> Path:
        """A path from the file, made absolute against the file's directory."""
        return path if path.is_absolute() else (self.base_dir / path)

    def storage_url(self) -> str:
        """The database URL with ``${VAR}`` secrets expanded and SQLite paths made absolute."""
        url = _ENV_REF.sub(lambda m: os.environ.get(m.group(1), ""), self.storage.url)
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/") and len(url) > len(prefix):
            url = prefix + str(self.resolve(Path(url[len(prefix):])))
        return url

    def api_token(self) -> str | None:
        return os.environ.get(self.api.token_env) or None

    def redacted_summary(self) -> dict[str, Any]:
        """What check-config prints: the effective settings, with secrets masked."""
        data = self.model_dump(mode="json", by_alias=True)
        data["storage"]["url"] = redact_url(self.storage.url)
        data["api"]["token"] = "set" if self.api_token() else "missing"
        data["schema"]["features"] = f"{len(self.schema.features)} features"
        if data["schema"].get("columns"):
            data["schema"]["columns"] = f"{len(self.schema.columns or [])} columns"
        return data


def redact_url(url: str) -> str:
    """Mask the password of a database URL, whether literal or an env reference."""
    return re.sub(r"(://[^:/@]+:)[^@]*(@)", r"\1***\2", url)


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
        if i > 0 and isinstance(loc[i - 1], int) and part in SOURCE_TYPES:
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
        return f"unknown type (got {ctx.get('tag')!r}, expected one of {', '.join(SOURCE_TYPES)})"
    elif kind == "union_tag_not_found":
        return f"missing `type:` (expected one of {', '.join(SOURCE_TYPES)})"
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
    data = {k: v for k, v in data.items() if k not in ("base_dir", "sha256")} | {
        "base_dir": base_dir,
        "sha256": hashlib.sha256(text.encode()).hexdigest(),
    }
    try:
        config = AgentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            [f"{_yaml_path(tuple(e['loc']))}: {_describe(e)}" for e in exc.errors()]
        ) from None
    return config


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
    for name in _ENV_REF.findall(config.storage.url):
        if name not in os.environ:
            errors.append(
                f"storage.url: environment variable {name} is not set (expected a secret)")
    if need_token and config.api.enabled and not config.api_token():
        errors.append(
            f"api.token_env: environment variable {config.api.token_env} is not set (expected the "
            "API token; write routes refuse every request without it)"
        )
    return errors


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
