"""Stores and walks the knowledge graph: the store interface, its backends, paths and their verbalisation."""
