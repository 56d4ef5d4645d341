"""The tests' Kimi: the package's Kimi simulator (:mod:`bot.evaluation.simulator`, which
``supportbot eval`` ships too) under the name the tests use."""

from bot.evaluation.simulator import CallTools, Fail, Hang, Malformed, RecordedRequest, Reply, Step, find_order_id
from bot.evaluation.simulator import KimiSimulator as FakeKimi

__all__ = ["CallTools", "Fail", "FakeKimi", "Hang", "Malformed", "RecordedRequest", "Reply", "Step", "find_order_id"]
