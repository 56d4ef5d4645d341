"""What the team learns: the figures behind ``supportbot report`` and the bot's ``/report`` page
(decision rates, timings, edit distances, cost), read from the decision facts each draft records."""
