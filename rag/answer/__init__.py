"""The answer step: a question -> a cited, checked answer, alone or in a conversation.

- the road in: `request` (``AskRequest``, one for every interface), `answerer` (``Answerer.stream``:
  search, abstain, prompt, stream, check);
- prompting: `prompts`, `answer_prompt`, `evidence`, `language`, `answer_text`; answers made of quoted
  sentences, without the model: `answer_quotes`, `listing`, `comparison`;
- grounding: `claims`, `question_kinds`, `support`, `streaming`;
- the result: `answer_result` (``Answer``, ``Citation``, ``Event``).

Left out: the search (`rag.search`), the models that write (`rag.backends`), conversations
(`rag.chat`, above this folder and the renderers), how an answer is shown (`rag.render`, `rag.terminal`,
``ui.render``).
"""
