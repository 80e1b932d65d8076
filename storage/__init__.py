"""What MetaSentry remembers: incidents, labels, quarantine, drift reports, positions, models,
reference versions, the alerts queued for the sinks, and the audit log of who changed what
the agent believes.

SQLite by default, PostgreSQL by URL; the schema is managed by the Alembic migrations shipped
inside this package (``Store.upgrade``).
"""

from __future__ import annotations

from storage.audit import AGENT_ACTOR
from storage.engine import StoreTimeouts
from storage.feedback import LabelNotFound
from storage.outbox import AlertBacklog, AlertRoute, OutboxAlert
from storage.records import (
    AUDIT_ACTIONS,
    LABEL_STATUSES,
    MODEL_STATUSES,
    OUTBOX_STATUSES,
    SEVERITIES,
    STATUSES,
    AuditEntry,
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
    "AGENT_ACTOR",
    "AUDIT_ACTIONS",
    "BENIGN_DRIFT",
    "LABEL_STATUSES",
    "MODEL_STATUSES",
    "OUTBOX_STATUSES",
    "SEVERITIES",
    "STATUSES",
    "AlertBacklog",
    "AlertRoute",
    "AuditEntry",
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
