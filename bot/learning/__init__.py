"""Learning from edits (issue 21, point 6): ``supportbot suggest`` turns what the desk corrected
(edits, rejections with reasons, customers' thumbs down) into proposed policy changes and
knowledge entries, shown as a diff and applied only on ``--write``."""
