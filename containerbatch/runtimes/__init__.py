"""Container runtimes: one module per engine, registered through entry points."""

from containerbatch.runtimes.base import Runtime

__all__ = ["Runtime"]
