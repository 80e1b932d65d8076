"""MetaSentry's daemon: configuration, pipeline, incidents, scheduler, metrics, API and CLI.

It orchestrates the other packages and owns no algorithm of its own.
"""

from agent.version import __version__

__all__ = ["__version__"]
