"""supportbot core: platform-free.

Platform adapters (``adapters/``) translate Slack and Discord payloads into the event model in
:mod:`bot.events` and plug into the two ports in :mod:`bot.ports`. Everything that decides
anything (who may approve, refund limits, escalation) lives here.
"""
