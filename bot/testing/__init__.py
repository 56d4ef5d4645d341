"""Testing support shipped in the package: the in-memory platform and the test desk, through which
the business rules are tested as support conversations (see :mod:`bot.testing.desk`): the desk, the
people who use it (:mod:`bot.testing.people`) and the platform they reach it through
(:mod:`bot.testing.drivers`)."""

from bot.testing.desk import TestDesk, desk_settings, until
from bot.testing.drivers import Driver, MemoryDriver, Move, Saying
from bot.testing.memory import Board, DeskCard, MemoryPlatform, PostedReply, recording
from bot.testing.people import Agent, Customer, Said

__all__ = [
    "Agent",
    "Board",
    "Customer",
    "DeskCard",
    "Driver",
    "MemoryDriver",
    "MemoryPlatform",
    "Move",
    "PostedReply",
    "Said",
    "Saying",
    "TestDesk",
    "desk_settings",
    "recording",
    "until",
]
