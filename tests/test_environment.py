"""Importing paper-rag changes no environment variable; the explicit calls set what they promise.

Each check runs in a fresh interpreter with a minimal environment, so what an earlier test (or
this test process) imported or set cannot hide an import-time change.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from .conftest import ROOT

IMPORT_ALL = """
import importlib, json, os, pkgutil
before = dict(os.environ)
names = []
for package in ("rag", "ui", "eval"):
    names += [m.name for m in pkgutil.walk_packages(importlib.import_module(package).__path__, package + ".")]
for name in names:
    importlib.import_module(name)
changed = sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k))
print(json.dumps({"modules": names, "changed": changed}))
"""

EMBEDDER = """
import json, os
from rag.index.embeddings import Embedder
Embedder()
print(json.dumps({k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}))
"""


def python(code: str, **env: str) -> dict:  # type: ignore[type-arg]
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", ""), **env})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def test_importing_every_module_leaves_the_environment_unchanged() -> None:
    got = python(IMPORT_ALL)
    assert {"rag.index.embeddings", "rag.index.store", "ui.app", "rag.cli"} <= set(got["modules"])
    assert got["changed"] == []


def test_an_embedder_loads_offline_unless_the_user_said_otherwise() -> None:
    assert python(EMBEDDER) == {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    assert python(EMBEDDER, HF_HUB_OFFLINE="0") == {"HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "1"}
