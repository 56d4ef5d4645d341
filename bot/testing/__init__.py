"""Testing support shipped in the package: the in-memory platform and the test desk, through which
the business rules are tested as support conversations (see :mod:`bot.testing.desk`)."""

from bot.testing.desk import Customer, Driver, MemoryDriver, Move, Said, Saying, TestDesk, desk_settings, until
from bot.testing.memory import Board, DeskCard, MemoryPlatform, PostedReply, recording

__all__ = [
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
