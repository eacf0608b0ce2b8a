"""The extraction schema: which entity types and relation types the model extractor may write.

A schema file is JSON:

    {"entity_types": {"person": "a named human being", ...},          (or a list of names)
     "relation_types": {"born_in": {"head": ["person"], "tail": ["location", "date"],
                                    "description": "where or when a person was born"}, ...}}

Every relation names the entity types its head and its tail may have; decoding is limited to these names,
and the reflection pass drops or turns round a triple whose entity types do not fit. The schema that ships
(`extraction_schema.json` beside this module) is general-purpose: people, organisations, places, works,
events, dates and other named things.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_SCHEMA_PATH = Path(__file__).with_name("extraction_schema.json")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


class SchemaError(ValueError):
    """A schema file that cannot be used; the message names the file and the field."""


@dataclass(frozen=True, slots=True)
class RelationType:
    name: str
    head: tuple[str, ...]
    tail: tuple[str, ...]
    description: str = ""


@dataclass(frozen=True, slots=True)
class ExtractionSchema:
    entity_types: dict[str, str]  # name -> description
    relations: dict[str, RelationType]
    source: str = "<built-in>"

    @property
    def digest(self) -> str:
        """Identifies the schema's content: cached extractions are valid only for the schema they were made under."""
        body = json.dumps(
            [self.entity_types, [(r.name, r.head, r.tail, r.description) for r in self.relations.values()]],
            sort_keys=True,
        )
        return hashlib.sha256(body.encode()).hexdigest()[:16]

    def fits(self, relation: str, head_type: str, tail_type: str) -> bool:
        kind = self.relations.get(relation)
        return kind is not None and head_type in kind.head and tail_type in kind.tail


def load_schema(path: Path | str | None = None) -> ExtractionSchema:
    """The schema in `path` (None: the built-in one). Raises SchemaError naming the file and the bad field."""
    path = Path(path) if path is not None else DEFAULT_SCHEMA_PATH
    where = str(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise SchemaError(f"{where}: cannot read the extraction schema ({error.strerror or error})") from error
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SchemaError(f"{where}: not valid JSON ({error})") from error
    return parse_schema(raw, where)


def parse_schema(raw: object, where: str = "<schema>") -> ExtractionSchema:
    if not isinstance(raw, dict):
        raise SchemaError(f"{where}: the schema must be a JSON object with entity_types and relation_types")
    unknown = set(raw) - {"entity_types", "relation_types"}
    if unknown:
        raise SchemaError(f"{where}: unknown field {sorted(unknown)[0]!r} (expected entity_types, relation_types)")
    entity_types = _entity_types(raw.get("entity_types"), where)
    relations_raw = raw.get("relation_types")
    if not isinstance(relations_raw, dict) or not relations_raw:
        raise SchemaError(f"{where}: relation_types must be a non-empty object of relation name -> definition")
    relations: dict[str, RelationType] = {}
    for name, definition in relations_raw.items():
        field = f"relation_types.{name}"
        _check_name(name, where, field)
        if not isinstance(definition, dict):
            raise SchemaError(f"{where}: {field} must be an object with head and tail")
        extra = set(definition) - {"head", "tail", "description"}
        if extra:
            first = sorted(extra)[0]
            raise SchemaError(f"{where}: {field}: unknown field {first!r} (expected head, tail, description)")
        ends = []
        for end in ("head", "tail"):
            types = definition.get(end)
            if isinstance(types, str):
                types = [types]
            if not isinstance(types, list) or not types or not all(isinstance(t, str) for t in types):
                raise SchemaError(f"{where}: {field}.{end} must be an entity type name or a non-empty list of them")
            for t in types:
                if t not in entity_types:
                    raise SchemaError(f"{where}: {field}.{end} names {t!r}, which is not in entity_types")
            ends.append(tuple(dict.fromkeys(types)))
        description = definition.get("description", "")
        if not isinstance(description, str):
            raise SchemaError(f"{where}: {field}.description must be a string")
        relations[name] = RelationType(name, ends[0], ends[1], description)
    return ExtractionSchema(entity_types, relations, where)


def _entity_types(raw: object, where: str) -> dict[str, str]:
    if isinstance(raw, list):
        raw = dict.fromkeys(raw, "") if all(isinstance(t, str) for t in raw) else None
    if not isinstance(raw, dict) or not raw:
        raise SchemaError(f"{where}: entity_types must be a non-empty list of names or object of name -> description")
    for name, description in raw.items():
        _check_name(name, where, f"entity_types.{name}")
        if not isinstance(description, str):
            raise SchemaError(f"{where}: entity_types.{name} must have a string description")
    return dict(raw)


def _check_name(name: str, where: str, field: str) -> None:
    # Names go into the decoding grammar and the graph as relation types: lower-case identifiers only.
    if not _NAME.match(name):
        raise SchemaError(f"{where}: {field}: name must be lower case letters, digits and _ (at most 40), got {name!r}")
