"""Tools the drafting agent may call, their registry, and the order backends.

``tools/`` imports nothing of the project: it defines the small types it needs itself. A tool
reports facts or records a *proposal*; it never decides policy and never moves money. Approved
actions are executed by the core through :meth:`OrderBackend.execute_refund`.
"""

from tools.base import (
    AttemptLedger,
    Attempts,
    RefundRules,
    Tool,
    ToolContext,
    ToolError,
    ToolRegistry,
    ToolResult,
)
from tools.defaults import default_tools
from tools.importer import OrderImportError, import_orders
from tools.knowledge import KnowledgeBase
from tools.orders import HttpOrderBackend, Order, OrderBackend, RefundReceipt, SqlOrderBackend

__all__ = [
    "AttemptLedger",
    "Attempts",
    "HttpOrderBackend",
    "KnowledgeBase",
    "Order",
    "OrderBackend",
    "OrderImportError",
    "RefundReceipt",
    "RefundRules",
    "SqlOrderBackend",
    "Tool",
    "ToolContext",
    "ToolError",
    "ToolRegistry",
    "ToolResult",
    "default_tools",
    "import_orders",
]
