"""Where records come from: files (replay or follow), stdin, Redis Streams consumer groups,
MQTT sessions, HTTP ingest, and an in-memory test double.

Every source implements `adapters.base.Source` and delivers `Batch`es of `RawRecord`s at least
once; see `adapters.base` for the contract.
"""

from __future__ import annotations

from adapters.base import (
    ERROR_CODES,
    Batch,
    CountedStream,
    RawRecord,
    RecordFormat,
    ServerSource,
    SharedSource,
    Source,
    SourceError,
    StreamStats,
)
from adapters.columnar import ColumnarRecords
from adapters.files import CsvFileSource, FileMode, JsonlFileSource
from adapters.http_ingest import HttpIngestSource
from adapters.memory import MemorySource
from adapters.mqtt import MqttSource
from adapters.redis_stream import RedisStreamSource
from adapters.stdin import StdinSource

__all__ = [
    "ERROR_CODES",
    "Batch",
    "ColumnarRecords",
    "CountedStream",
    "CsvFileSource",
    "FileMode",
    "HttpIngestSource",
    "JsonlFileSource",
    "MemorySource",
    "MqttSource",
    "RawRecord",
    "RecordFormat",
    "RedisStreamSource",
    "ServerSource",
    "SharedSource",
    "Source",
    "SourceError",
    "StdinSource",
    "StreamStats",
]
