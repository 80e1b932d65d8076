"""``python -m agent`` is the ``metasentry`` command."""

from agent.cli import main

main()
