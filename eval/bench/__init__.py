"""Performance benchmarks: ``rag bench``. Every figure is measured next to a baseline.

One module per measurement, each function returning a dict of raw figures (every timing, not
only the summary), the summary ``ours``/``baseline``/``ratio`` and the ``rows`` it adds to the table:

1. `eval.bench.ingest`: first ingest vs a bare ``SentenceTransformer.encode`` (<= 1.2x), and
   re-ingest of the unchanged corpus as a fraction of it (<= 5%);
2. `eval.bench.retrieval`: warm hybrid search vs encode + one Chroma query (median <= 1.5x);
3. `eval.bench.cold_start`: ``rag search``, ``rag ask``, ``rag serve`` as subprocesses next to
   ``import torch``;
4. `eval.bench.llm`: the bundled LLM through our backend vs raw llama-cpp-python;
5. `eval.bench.scale`: synthetic corpora ingested by a child process per size (papers/s, peak
   RSS, disk, latency) and a projection to 2.5M abstracts;
6. `eval.bench.throughput`: embedding chunks/s per backend and batch size;
7. `eval.bench.tokenization`: single-threaded vs parallel tokenization;
8. `eval.bench.api`: ``rag api`` vs the same answers in-process, and concurrent clients;
9. `eval.bench.memory`: a cold ``rag ask`` by stage (seconds and memory) and ``rag serve``'s
   memory after ten answers;
10. `eval.bench.table`: a 10 x 5 extraction table with the bundled model, cold and cached.

`eval.bench.run` runs them and writes the report (`eval.bench.report`). Machines differ:
nothing here is a test threshold. Left out: answer quality (``rag eval``), GPU measurements on
machines without one, and multi-node Chroma deployments.
"""

from eval.bench.run import STEPS, json_summary, parse_server_sizes, parse_sizes, parse_steps, run_bench
from eval.bench.scale import project
from eval.bench.throughput import bench_throughput

__all__ = ["STEPS", "bench_throughput", "json_summary", "parse_server_sizes", "parse_sizes", "parse_steps", "project",
           "run_bench"]
