"""An answer shown in each output format, every format reading one `rag.render.view.AnswerView`.

- `rag.render.view`: what is shown, decided once (the answer cut into flagged pieces, which
  sentences are marked and how many, the incomplete answer's reason, the nearest papers an
  abstention lists, whether a citation's evidence supports it);
- `rag.render.terminal`: rich ``Text`` for ``rag ask`` and ``rag chat``;
- `rag.render.markdown`: the answer with its marks, the source list (and reading it back), the
  API's message text and the conversation export;
- `rag.render.json`: the answer object of the API and MCP.

The HTML of the web chat is ``ui.render`` (it needs the chat's sanitiser), reading the same view;
``rag ask --json`` prints the whole record, `rag.answer.answer_result.Answer.as_dict`. Left out: making
and checking answers (`rag.answer.answerer`), the live stream on a terminal (`rag.terminal`).
"""
