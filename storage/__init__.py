"""What MetaSentry remembers: incidents, labels, quarantine, drift reports, positions, models,
reference versions and the alerts queued for the sinks.

SQLite by default, PostgreSQL by URL; the schema is managed by the Alembic migrations shipped
inside this package (``Store.upgrade``).
"""

from __future__ import annotations

from storage.engine import StoreTimeouts
from storage.feedback import LabelNotFound
from storage.outbox import AlertBacklog, AlertRoute, OutboxAlert
from storage.records import (
    LABEL_STATUSES,
    MODEL_STATUSES,
    OUTBOX_STATUSES,
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
    NewReferenceVersion,
    QuarantinedRecord,
    QuarantineEntry,
    ReferenceVersion,
    ReferenceVersionNotFound,
    StoreRejected,
    StoreUnavailable,
)
from storage.references import BENIGN_DRIFT
from storage.store import Store

__all__ = [
    "BENIGN_DRIFT",
    "LABEL_STATUSES",
    "MODEL_STATUSES",
    "OUTBOX_STATUSES",
    "SEVERITIES",
    "STATUSES",
    "AlertBacklog",
    "AlertRoute",
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
    "NewReferenceVersion",
    "OutboxAlert",
    "QuarantineEntry",
    "QuarantinedRecord",
    "ReferenceVersion",
    "ReferenceVersionNotFound",
    "Store",
    "StoreRejected",
    "StoreTimeouts",
    "StoreUnavailable",
]
