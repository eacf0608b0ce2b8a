"""What the agent's nodes work with: the store, the indexes and the models, opened once and shared."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from agents.patterns import RelationLexicon, RelationSchema
from config import Settings
from graph.backends import open_store
from graph.lookup import NameKeyIndex
from graph.store import GraphStore
from graph.vectors import VectorIndex

if TYPE_CHECKING:
    from lm.embeddings import Embedder
    from lm.model import LanguageModel
    from lm.remote import RemoteLanguageModel

# Models load once per process even when a server's first questions arrive together (the loaders are
# cached; this makes the second caller wait for the first instead of loading a copy beside it).
_LOADING = threading.Lock()


@dataclass
class Resources:
    settings: Settings
    store: GraphStore
    owns_store: bool = True
    _closed: bool = field(default=False, repr=False)

    @classmethod
    def open(cls, settings: Settings, store: GraphStore | None = None) -> Resources:
        """Open the store read-only (a writer may work beside us) unless one is handed in."""
        if store is not None:
            return cls(settings, store, owns_store=False)
        return cls(settings, open_store(settings, read_only=True))

    @cached_property
    def schema(self) -> RelationSchema:
        path = self.settings.relation_schema_path
        return RelationSchema.load(path) if path.exists() else RelationSchema()

    @cached_property
    def lexicon(self) -> RelationLexicon:
        """Relations described by their names (and the schema's cues), linked to question words by meaning."""
        return RelationLexicon(self.schema, lambda texts: self.embedder.embed(texts, batch_size=128))

    @cached_property
    def name_index(self) -> NameKeyIndex:
        """Entity names and aliases by normalised key, for linking question spans (rebuilt after ingestion)."""
        return NameKeyIndex(self.store.iter_entity_names())

    @cached_property
    def embedder(self) -> Embedder:
        from lm.embeddings import get_embedder

        with _LOADING:
            return get_embedder(self.settings.embedding_model, self.settings.device, self.settings.cpu_threads)

    @cached_property
    def model(self) -> LanguageModel | RemoteLanguageModel:
        """The in-process model, or the OpenAI-compatible server `TRELLIS_LLM_BASE_URL` names (the embedder
        stays local either way)."""
        s = self.settings
        if s.llm_base_url:
            from lm.remote import RemoteLanguageModel

            key = s.llm_api_key.get_secret_value() if s.llm_api_key else None
            with _LOADING:
                return RemoteLanguageModel(s.llm_base_url, key, s.llm_api_model)
        from lm.model import get_language_model

        with _LOADING:
            return get_language_model(s.llm_model, s.model_cache_dir, s.device, s.cpu_threads)

    @cached_property
    def nlp(self) -> Any:
        """The spaCy pipeline for evidence sentences and answer spans (loaded at the first document question);
        with its lemmatizer, which `agents.roles` matches predicates by (about 0.6 ms a sentence here)."""
        import importlib

        with _LOADING:
            return importlib.import_module(self.settings.spacy_model).load()

    @cached_property
    def chunk_index(self) -> VectorIndex | None:
        path = self.settings.vectors_path
        return VectorIndex(path, self.embedder.dim, self.embedder.name) if path.exists() else None

    @cached_property
    def entity_index(self) -> VectorIndex | None:
        path = self.settings.entity_vectors_path
        return VectorIndex(path, self.embedder.dim, self.embedder.name) if path.exists() else None

    def load_models(self) -> None:
        """Load the language model and the embedder now rather than at the first question."""
        _ = self.model, self.embedder

    def warm_up(self) -> None:
        """Everything a server has loaded by its second question: the models, spaCy, the name and vector indexes,
        the relation descriptions, and one first pass through each model (whose one-time setup the first
        question would otherwise pay)."""
        self.load_models()
        _ = self.nlp, self.name_index, self.chunk_index, self.entity_index
        self.lexicon.prepare(self.lexicon.known_relations(self.store))
        self.embedder.embed(["warm up"])
        self.model.greedy(self.model.encode("Hello"), 2)
        self.nlp("A first sentence. A second one.")

    @property
    def models_loaded(self) -> bool:
        return "model" in self.__dict__  # cached_property keeps a loaded value in the instance dict

    def refresh_indexes(self) -> None:
        """Forget the loaded indexes so the next question reads what an ingestion has just saved."""
        for name in ("chunk_index", "entity_index", "name_index"):
            self.__dict__.pop(name, None)
        if "lexicon" in self.__dict__:
            self.lexicon.forget()

    def close(self) -> None:
        if self.owns_store and not self._closed:
            self.store.close()
        self._closed = True

    def __enter__(self) -> Resources:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
