"""Which language a customer writes in, for the policy's fixed texts (``[desk.handoff_texts]``,
``[desk.acknowledgement_texts]``) when their conversation has no ``language`` fact yet.

py3langid's naive-Bayes model (bundled with the package, loaded once) names a language with a
calibrated probability. A guess is taken only from a message with at least
:data:`MIN_LETTERS` letters (ids, digits, emoji and punctuation not counted) and a probability of
at least :data:`MIN_CONFIDENCE`: "ok", "thanks!" or an order number say nothing, so the policy's
default text is used rather than Finnish."""

from __future__ import annotations

import functools
from typing import Protocol

#: Fewer letters than this: too short to tell ("ok 👍", "Danke", "#W2611340").
MIN_LETTERS = 12
#: A lower probability is a guess: the default text is safer than the wrong language.
MIN_CONFIDENCE = 0.8


class _Identifier(Protocol):
    def classify(self, text: str) -> tuple[str, float]: ...


@functools.cache
def _identifier() -> _Identifier:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    identifier: _Identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    return identifier


def load() -> None:
    """Load the model now (half a second; the bot does it in a thread at start, off the ack)."""
    _identifier()


def _letters_only(text: str) -> str:
    """The text's words made of letters only (a word with a digit, like an order id, is dropped)."""
    words = (w for w in text.split() if not any(ch.isdigit() for ch in w))
    return " ".join("".join(ch for ch in w if ch.isalpha() or ch in "'-") for w in words).strip()


def detect(text: str) -> str | None:
    """The language code (ISO 639-1, e.g. ``de``) ``text`` is written in, or None when the text
    is too short or the model is not confident enough."""
    words = _letters_only(text)
    if sum(ch.isalpha() for ch in words) < MIN_LETTERS:
        return None
    language, confidence = _identifier().classify(words)
    return language if confidence >= MIN_CONFIDENCE else None
