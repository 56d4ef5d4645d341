"""The standard tool set offered to the drafting agent."""

from __future__ import annotations

from tools.base import ToolRegistry
from tools.knowledge import KnowledgeBase, SearchKnowledge
from tools.no_reply import NoReplyNeeded
from tools.order_tools import CheckRefundEligibility, GetOrderStatus, ProposeRefund, VerifyCustomer
from tools.orders import OrderBackend

__all__ = ["default_tools"]


def default_tools(backend: OrderBackend, knowledge: KnowledgeBase | None) -> ToolRegistry:
    """The registry in its stable order: ``get_order_status``, ``check_refund_eligibility``,
    ``propose_refund``, ``verify_customer``, then ``search_knowledge`` when a knowledge base is given,
    then ``no_reply_needed``."""
    registry = ToolRegistry(
        [GetOrderStatus(backend), CheckRefundEligibility(backend), ProposeRefund(backend), VerifyCustomer(backend)]
    )
    if knowledge is not None:
        registry.register(SearchKnowledge(knowledge))
    registry.register(NoReplyNeeded())
    return registry
