"""The store: the schema (:mod:`bot.store.schema`), engines (:mod:`bot.store.engine`) and the
repositories the core's workflows call. A state change is a repository function, never an inline
``update()`` in workflow code."""

from bot.store.engine import (
    MIGRATIONS_DIR,
    Database,
    create_engine,
    database_reachable,
    reader_engine,
    sessionmaker,
    upgrade_database,
)
from bot.store.schema import (
    ALL_METADATA,
    AttachmentRow,
    AuditEvent,
    Base,
    Conversation,
    Decision,
    Draft,
    KnowledgeFile,
    Message,
    OutboxItem,
    ProcessedEvent,
    ProposedAction,
    ToolCall,
    UsageRecord,
    audit,
    new_id,
    utcnow,
)

__all__ = [
    "ALL_METADATA",
    "MIGRATIONS_DIR",
    "AttachmentRow",
    "AuditEvent",
    "Base",
    "Conversation",
    "Database",
    "Decision",
    "Draft",
    "KnowledgeFile",
    "Message",
    "OutboxItem",
    "ProcessedEvent",
    "ProposedAction",
    "ToolCall",
    "UsageRecord",
    "audit",
    "create_engine",
    "database_reachable",
    "new_id",
    "reader_engine",
    "sessionmaker",
    "upgrade_database",
    "utcnow",
]
