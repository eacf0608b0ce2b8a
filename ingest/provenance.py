"""Provenance keys: the names under which documents and triple files support entities and relations.

A fact's `sources` list holds the key of everything that supports it, and deleting a document withdraws
its key (`GraphStore.delete_source`). A document's key is its id; a triples source's key is
`triples:<name>`. Document ids may not begin with `triples:` (the loaders refuse such record ids), so a
document can never withdraw a triple file's facts, whatever either is called.

Stores written before this separation hold triples under the bare source name; ingesting the same file
again adds the prefixed key to the same facts (and creates nothing), after which they are kept apart too.
"""

from __future__ import annotations

TRIPLES_PREFIX = "triples:"


def triples_source_key(name: str) -> str:
    """The provenance key stored on the facts of the triples source called `name`."""
    return TRIPLES_PREFIX + name


def reserved_document_id(doc_id: str) -> bool:
    """Whether `doc_id` lies in the triples namespace, and so cannot name a document."""
    return doc_id.startswith(TRIPLES_PREFIX)
