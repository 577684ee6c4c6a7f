"""``python -m workers`` is the ``mountworks`` command."""

from workers.cli import entry

entry()
