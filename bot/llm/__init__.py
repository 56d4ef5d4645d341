"""The parts of the Kimi client that hold account-wide state: the limiter, the per-model circuit
breakers, the price table and the model catalog. :mod:`bot.kimi` composes them."""
