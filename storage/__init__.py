"""What MetaSentry remembers: incidents, labels, quarantine, drift reports, positions, models.

SQLite by default, PostgreSQL by URL; the schema is managed by the Alembic migrations shipped
inside this package (``Store.upgrade``).
"""

from __future__ import annotations

from storage.engine import StoreTimeouts
from storage.feedback import LabelNotFound
from storage.records import (
    LABEL_STATUSES,
    MODEL_STATUSES,
    SEVERITIES,
    STATUSES,
    CommitResult,
    DriftReportRow,
    Incident,
    IncidentExample,
    IncidentNotFound,
    IncidentRecord,
    IncidentUpdate,
    Label,
    LabelledRecord,
    ModelVersion,
    ModelVersionNotFound,
    NewDriftReport,
    NewIncident,
    QuarantinedRecord,
    QuarantineEntry,
    StoreRejected,
    StoreUnavailable,
)
from storage.store import Store

__all__ = [
    "LABEL_STATUSES",
    "MODEL_STATUSES",
    "SEVERITIES",
    "STATUSES",
    "CommitResult",
    "DriftReportRow",
    "Incident",
    "IncidentExample",
    "IncidentNotFound",
    "IncidentRecord",
    "IncidentUpdate",
    "Label",
    "LabelNotFound",
    "LabelledRecord",
    "ModelVersion",
    "ModelVersionNotFound",
    "NewDriftReport",
    "NewIncident",
    "QuarantineEntry",
    "QuarantinedRecord",
    "Store",
    "StoreRejected",
    "StoreTimeouts",
    "StoreUnavailable",
]
