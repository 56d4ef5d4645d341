"""One Kimi simulator for the tests, the benches and ``supportbot eval``: Moonshot's API on
loopback (:mod:`.server`), its wire rules (:mod:`.wire`), the pluggable answers — scripted steps,
faults and the models' brains (:mod:`.behaviours`, :mod:`.scripted`) — and the loopback-server
lifecycle every fake shares (:mod:`.loopback`)."""

from bot.evaluation.simulator.behaviours import CallTools, Fail, Hang, Malformed, Reply, Step, find_order_id
from bot.evaluation.simulator.loopback import LoopbackServer
from bot.evaluation.simulator.scripted import MODELS, STOP
from bot.evaluation.simulator.server import KimiSimulator, RecordedRequest, ScriptedKimi
from bot.evaluation.simulator.wire import KIMI_MODELS, ModelSpec, estimate_tokens, prompt_bytes

__all__ = [
    "KIMI_MODELS", "MODELS", "STOP", "CallTools", "Fail", "Hang", "KimiSimulator", "LoopbackServer", "Malformed",
    "ModelSpec", "RecordedRequest", "Reply", "ScriptedKimi", "Step", "estimate_tokens", "find_order_id", "prompt_bytes",
]  # fmt: skip
