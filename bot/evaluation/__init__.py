"""``supportbot eval``: a test set that measures draft quality and policy safety (pass^k).

cases.py (the case format), platform.py (an in-memory platform), simulator/ (the Kimi simulator
on loopback and its scripted models), runner.py (trials through the real core), scoring.py
(outcomes and violations), report.py (tables, JSON, comparisons), cli.py (the command).
"""
