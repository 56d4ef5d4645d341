"""The playground: the bot's embedded default, a local web page with a customer pane and a
review desk, driving the real core (see :mod:`adapters.playground.platform`)."""

from adapters.playground.platform import PlaygroundPlatform, create

__all__ = ["PlaygroundPlatform", "create"]
