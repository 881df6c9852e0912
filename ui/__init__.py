"""paper-rag's web chat (Gradio): a thin layer over `rag`, started by ``rag serve``.

Modules: `ui.app` (event handlers and the page), `ui.render` (answers -> sanitised HTML),
`ui.state` (per-session state), `ui.shared` (the models shared between sessions), `ui.uploads`
(corpus uploads), `ui.feedback` (the JSON Lines feedback log), `ui.server` (``rag serve``).
Importing ``ui`` is cheap; gradio loads when `ui.app` is imported.
"""

from __future__ import annotations

__all__ = ["app", "render", "state", "shared", "uploads", "feedback", "server"]
