"""What a graph store raises when the user can act on it; shared by the interface and every backend."""

from __future__ import annotations


class GraphStoreError(RuntimeError):
    """A store operation failed in a way the user can act on."""


class StoreLockedError(GraphStoreError):
    """Another process holds the embedded store for writing."""


class DiskFullError(GraphStoreError):
    """The device holding the store has no space left; nothing more can be written until some is freed."""
