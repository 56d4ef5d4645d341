"""Loopback fakes of the external services supportbot talks to (Kimi, Slack), for integration tests.

* :class:`FakeKimi` – Moonshot Kimi API: the package's Kimi simulator (``bot/evaluation/simulator``).
* :class:`FakeSlack` – Slack Web API and ``response_url`` webhooks (``tests/fakes/slack.py``).
* :class:`SlackSender` and payload builders – signed requests as Slack sends them to the app
  (``tests/fakes/slack_payloads.py``).
"""

from tests.fakes.kimi import CallTools, Fail, FakeKimi, Hang, Malformed, RecordedRequest, Reply
from tests.fakes.slack import FakeSlack, SlackCall, WebhookPost
from tests.fakes.slack_payloads import SlackSender

__all__ = [
    "CallTools",
    "Fail",
    "FakeKimi",
    "FakeSlack",
    "Hang",
    "Malformed",
    "RecordedRequest",
    "Reply",
    "SlackCall",
    "SlackSender",
    "WebhookPost",
]
