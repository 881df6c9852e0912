"""``rag mcp``: paper-rag as an MCP server (the official ``mcp`` SDK, v2 ``MCPServer``), over stdio
for clients that spawn it, or streamable HTTP at ``/mcp``.

Tools (read-only), each returning structured content (the same fields as the HTTP API, see
`ui.service`) with a text rendering for the model to read:

- ``search_papers(query, k, year, author, category)`` -> ``{query, results: [rag search --json items], ...}``
  (``k`` defaults to ``RAG_RETRIEVAL__K``, as ``rag search`` and the API's search do)
- ``ask(question, history?, k?)`` -> the answer with its citations (``history``: earlier
  ``{role, content}`` messages, condensed as in ``rag chat``)
- ``get_paper(id)`` -> the paper record; ``export_bibtex(ids)`` -> ``{ids, bibtex}``
- ``similar_papers(id, k, year, author, category)`` -> ``{paper_id, title, results: [search items]}``
- ``compare_papers(query?, papers?, columns?, questions?, k?, year?)`` -> the extraction table of
  ``rag table --json`` (``{columns, rows, overview}``), rendered as Markdown for the model to read

and each paper as a resource, ``paper://{id}`` (a template: Markdown of the record). Library
errors (unknown id, empty question, every answer slot busy) come back as tool errors: the text is
the problem and its fix, the structured content ``{"error": {message, type, param, code}}`` the
API's OpenAI error object (`ui.service.error_object`); a failed resource read is a JSON-RPC error
with the code of `rag.errors.outcome` (-32602 for an unknown paper) and that object as its data.
Over HTTP the server binds to 127.0.0.1 unless told otherwise and requires ``RAG_API__TOKEN`` as a
bearer token whenever it is set (always on a non-loopback address). Left out: prompts,
sampling, OAuth, removing papers.
"""

from __future__ import annotations

import functools
import hmac
import json
from collections.abc import Callable
from typing import Annotated, Any, Literal

from mcp.server import MCPServer
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field

from rag.errors import RagError, outcome
from rag.index.corpus import Paper
from rag.markup import md_code, md_text, md_url
from rag.render.json import answer_summary
from rag.render.markdown import answer_message
from rag.settings import Settings
from ui.service import ChatMessage, PaperService, error_object

DEFAULT_HTTP_PORT = 8001
READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)
# the tools' shared parameters, described once
PaperId = Annotated[str, Field(description="A paper id from search results, e.g. arxiv:2406.06563.")]
Count = Annotated[int | None, Field(description="Number of papers (1 to RAG_RETRIEVAL__MAX_K; default "
                                                "RAG_RETRIEVAL__K).")]
Year = Annotated[str | None, Field(description="Year or range: 2024, 2023..2025, 2023.., ..2020.")]
Author = Annotated[str | None, Field(description="Author name (substring, any case).")]
Category = Annotated[str | None, Field(description="Category, e.g. cs.CL.")]


# ------------------------------------------------------------------ structured results


class _Out(BaseModel):
    model_config = ConfigDict(extra="allow")


class SearchHit(_Out):
    paper_id: str
    title: str
    score: float
    year: int | None = None
    authors: list[str] = []
    links: list[str] = []
    snippet: str = ""


class SearchOutput(_Out):
    query: str
    results: list[SearchHit]
    notices: list[str] = []
    empty_because: str | None = None


class SimilarOutput(_Out):
    paper_id: str
    title: str
    results: list[SearchHit]
    empty_because: str | None = None


class CitationOut(_Out):
    number: int
    paper_id: str
    title: str
    url: str | None = None
    supported: bool
    evidence: list[dict[str, Any]] = []


class AskOutput(_Out):
    answer: str
    citations: list[CitationOut]
    abstained: bool
    backend: str
    model: str


class PaperOut(_Out):
    id: str
    title: str
    abstract: str
    authors: list[str] = []
    year: int | None = None
    url: str | None = None
    links: list[str] = []


class TableOut(_Out):
    columns: list[str]
    rows: list[dict[str, Any]]
    overview: dict[str, Any]


class BibtexOut(_Out):
    ids: list[str]
    bibtex: str


class HistoryMessage(BaseModel):
    role: Literal["user", "assistant"]
    content: str


def _result(data: dict[str, Any], text: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=data)


def reported(tool: Callable[..., CallToolResult]) -> Callable[..., CallToolResult]:
    """The tool with library errors returned as tool errors: the problem and its fix for the client's
    model to read, and the API's error object (``{"error": ...}``) for its program."""
    @functools.wraps(tool)
    def call(*args: Any, **kwargs: Any) -> CallToolResult:
        try:
            return tool(*args, **kwargs)
        except RagError as err:
            return CallToolResult(content=[TextContent(type="text", text=err.user_message())],
                                  structured_content={"error": error_object(err)}, is_error=True)
    return call


def render_search(data: dict[str, Any]) -> str:
    if not data["results"]:
        why = f": {data['empty_because']}" if data["empty_because"] else "."
        return f"No papers found for {data['query']!r}{why}"
    lines = []
    for rank, hit in enumerate(data["results"], 1):
        year = f" ({hit['year']})" if hit.get("year") else ""
        lines.append(f"{rank}. {hit['title']}{year} [id: {hit['paper_id']}] score {hit['score']:.3f}\n"
                     f"   {hit['snippet'][:300]}")
    return "\n".join(lines)


def render_paper(paper: Paper) -> str:
    """The paper as Markdown, every corpus string escaped (`rag.markup`): no HTML, image or link of its own."""
    year = f" ({paper.year})" if paper.year else ""
    links = [url for url in (md_url(link) for link in paper.links[:3]) if url]
    meta = [md_text(", ".join(paper.authors)), *links, f"id: {md_code(paper.id)}"]
    return "\n".join([f"# {md_text(paper.title)}{year}", *[m for m in meta if m], "", md_text(paper.abstract)])


# ------------------------------------------------------------------ the server


def build_server(settings: Settings, service: PaperService | None = None) -> MCPServer:
    service = service or PaperService(settings)
    server = MCPServer("paper-rag", log_level="WARNING", title="paper-rag: cited answers over research-paper abstracts",
                       instructions="Search the indexed research-paper abstracts, read papers, and ask questions "
                       "answered only from them: every claim cites its papers as [n] (see `citations`); "
                       "the answer 'The provided papers do not answer this question.' means they do not.")

    @server.tool(annotations=READ_ONLY)
    @reported
    def search_papers(
        query: Annotated[str, Field(description="Keywords, a title, or a question.")],
        k: Count = None,
        year: Year = None,
        author: Author = None,
        category: Category = None,
    ) -> Annotated[CallToolResult, SearchOutput]:
        """Ranked papers for a query (hybrid dense + BM25 search), with scores and the best snippet."""
        data = service.search(query, k, year, author, category)
        return _result(data, render_search(data))

    @server.tool(annotations=READ_ONLY)
    @reported
    def ask(
        question: Annotated[str, Field(description="A question about the indexed papers.")],
        history: Annotated[list[HistoryMessage] | None, Field(
            description="Earlier turns of the conversation, oldest first (their answers as this tool returned them).")]
        = None,
        k: Annotated[int | None, Field(description="Papers retrieved for the answer (1 to RAG_RETRIEVAL__MAX_K).")]
        = None,
    ) -> Annotated[CallToolResult, AskOutput]:
        """Answer from the papers only, citing them as [n]; `citations` maps each number to its paper with the
        abstract sentences that support the answer (`supported` false: not backed by that abstract)."""
        messages = [ChatMessage(m.role, m.content) for m in history or []] + [ChatMessage("user", question)]
        answer = service.ask(service.request(messages, question_param="question", k=k))
        return _result(answer_summary(answer, service.settings.answer.support_threshold),
                       answer_message(answer, markdown=True))

    @server.tool(annotations=READ_ONLY)
    @reported
    def get_paper(id: PaperId) -> Annotated[CallToolResult, PaperOut]:
        """One paper's record: title, abstract, authors, year, links."""
        paper = service.paper(id)
        return _result(service.paper_dict(paper), render_paper(paper))

    @server.tool(annotations=READ_ONLY)
    @reported
    def similar_papers(
        id: PaperId,
        k: Annotated[int | None, Field(description="Number of papers (1 to RAG_RETRIEVAL__MAX_K; default 5).")]
        = None,
        year: Year = None,
        author: Author = None,
        category: Category = None,
    ) -> Annotated[CallToolResult, SimilarOutput]:
        """Papers nearest to one paper by its stored abstract vectors (the paper itself excluded), best first."""
        data = service.similar(id, k, year, author, category)
        text = render_search({"query": f"papers similar to {data['title']}", **data})
        return _result(data, f"Papers similar to {data['title']} [id: {data['paper_id']}]:\n{text}")

    @server.tool(annotations=READ_ONLY)
    @reported
    def export_bibtex(ids: Annotated[list[str], Field(min_length=1, description="Paper ids.")]
                      ) -> Annotated[CallToolResult, BibtexOut]:
        """BibTeX entries for the given papers (every id must exist)."""
        text = service.bibtex(ids)
        return _result({"ids": ids, "bibtex": text}, text)

    @server.tool(annotations=READ_ONLY)
    @reported
    def compare_papers(
        query: Annotated[str | None, Field(description="A search whose papers become the rows.")] = None,
        papers: Annotated[list[str] | None, Field(description="Paper ids to include (first).")] = None,
        columns: Annotated[list[str] | None, Field(
            description="Built-in columns: task, method, data, result, model_size, code.")] = None,
        questions: Annotated[list[str] | None, Field(description="Columns of your own, as questions.")] = None,
        k: Annotated[int | None, Field(ge=1, le=50, description="Papers (rows); 10 by default.")] = None,
        year: Year = None,
    ) -> Annotated[CallToolResult, TableOut]:
        """Compare papers in a table: one cell per (paper, column), each extracted from that paper's abstract alone
        and checked against it (`supported` false: no abstract sentence states it, so the value is left empty;
        `not_stated`: the abstract is silent), with its `evidence` sentence, under a short cited overview."""
        from rag.table.export import to_markdown

        table = service.table(query, papers or [], columns, questions or [], k, year)
        return _result(table.as_dict(), to_markdown(table))

    @server.resource("paper://{+paper_id}", name="paper", mime_type="text/markdown",
                     description="A paper's record as Markdown (title, authors, links, abstract).")
    def paper_resource(paper_id: str) -> str:
        try:
            return render_paper(service.paper(paper_id))
        except RagError as err:  # a protocol error (-32602 for an unknown paper), the API's error object its data
            raise MCPError(outcome(err).mcp_code, err.user_message(), error_object(err)) from None

    @server.custom_route("/health", methods=["GET"])
    async def health(_: Any) -> Any:
        from starlette.responses import JSONResponse

        return JSONResponse({"status": "ok"})

    return server


class BearerToken:
    """ASGI middleware: every HTTP request but ``/health`` carries ``Authorization: Bearer TOKEN``."""

    def __init__(self, app: Any, token: str) -> None:
        self.app, self.expected = app, f"Bearer {token}".encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] != "/health":
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                body = json.dumps({"error": {"message": "missing or incorrect bearer token (RAG_API__TOKEN)",
                                             "type": "invalid_request_error", "param": None,
                                             "code": "invalid_api_key"}}).encode()
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def serve(settings: Settings, transport: str = "stdio", host: str | None = None, port: int | None = None,
          echo: Callable[[str], None] = print) -> None:
    """Blocks until the client disconnects (stdio) or the server is stopped (http, Ctrl-C)."""
    server = build_server(settings)
    if transport == "stdio":
        server.run("stdio")
        return
    import uvicorn

    from ui.api import check_exposure

    host = host or settings.api.host
    port = port or DEFAULT_HTTP_PORT
    check_exposure(host, settings.api.token)
    app: Any = server.streamable_http_app(host=host)
    if settings.api.token:
        app = BearerToken(app, settings.api.token)
    echo(f"MCP server (streamable HTTP): http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/mcp"
         f"{' (token required)' if settings.api.token else ''}  — Ctrl-C to stop")
    uvicorn.run(app, host=host, port=port, log_level="warning")


__all__ = ["build_server", "serve"]
