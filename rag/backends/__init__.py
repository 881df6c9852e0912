"""The answer backends, one module each, and the registry that finds them (built-in or plug-in).

- `base`: the `Backend` interface, `Message`, the backends' errors, the settings every backend
  reads (`LLMCommon`) and the shared stream and verdict helpers;
- `ollama`, `openai_compat`, `llamacpp` (+ `llama_loader`), `extractive`: one backend each, with
  its own settings block (joined by `rag.settings.LLMSettings`), prompt budget and ``describe()``;
- `registry`: the backends by name, those of installed plug-ins (the ``paper_rag.backends``
  entry-point group) included, `make_backend` and `select_backend` (``auto``).

Importing this package imports none of ``ollama``, ``openai``, ``httpx`` or ``llama_cpp``; each
backend imports its client on use. Left out: prompts and citations (`rag.answer.answerer`).
"""
