"""Writes knowledge: triples and documents into the graph store and the vector index."""
