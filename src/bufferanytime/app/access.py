"""Which models the page may load, and what its messages may show.

Served on this machine only (a loopback address), the page is its operator's: the model box takes any embedded
name, local directory or Hugging Face id. Served beyond it (``--host 0.0.0.0``), visitors choose among the embedded
models and the directories the operator listed (``--models DIR ...``), shown by folder name; anything else is
refused without touching the file system, so that a visitor can neither probe the server's files nor load another
directory as a model, and server paths in the page's messages are replaced by names.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

from bufferanytime.errors import InputError

LOCAL_NAMES = frozenset({"localhost", "ip6-localhost"})
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~-])/(?:[^\s/'\"()\[\],:;]+/)*([^\s/'\"()\[\],:;]*)")


def is_local(host: str) -> bool:
    """Whether ``host`` serves this machine only: a loopback address or ``localhost``."""
    name = host.strip().strip("[]").lower()
    if name in LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_model_dirs(directories: list[str | Path]) -> list[Path]:
    """The operator's model directories, each an existing directory; InputError naming the first that is not."""
    checked = []
    for directory in directories:
        path = Path(directory).expanduser()
        if not path.is_dir():
            raise InputError(f"{directory}: no such model directory (--models takes directories)")
        checked.append(path.resolve())
    return checked


def _labels(directories: list[Path], taken: set[str]) -> dict[str, Path]:
    """A distinct name for each directory: its folder name, numbered when two folders share one."""
    labels: dict[str, Path] = {}
    for path in directories:
        label, n = path.name or str(path), 2
        while label in taken or label in labels:
            label, n = f"{path.name} ({n})", n + 1
        labels[label] = path
    return labels


class ModelAccess:
    """The models the page offers and accepts, and the scrubbing of server paths from its messages.

    ``open_paths=True`` (served on this machine only): any name, directory or Hub id, and the listed directories
    offered by path. ``open_paths=False``: only the embedded names and the listed directories, by folder name.
    """

    def __init__(self, directories: list[Path] = (), open_paths: bool = True):
        from bufferanytime.models import MODELS, list_models

        self.open_paths = open_paths
        self.embedded = list_models()
        self._embedded_dirs = {str(folder): f"{name} ({kind})" for name in self.embedded
                               for kind, folder in MODELS.get(name).items()}
        if open_paths:
            self.directories = {str(path): path for path in directories}
        else:
            self.directories = _labels(list(directories), set(self.embedded))

    def choices(self) -> list[str]:
        """What the model box lists: the embedded names, then the operator's directories."""
        return [*self.embedded, *self.directories]

    def resolve(self, text: str | None) -> str | None:
        """What ``load_model`` gets for the box's ``text`` (None: the default model); InputError when refused."""
        text = (text or "").strip()
        if not text:
            return None
        if text in self.directories:
            return str(self.directories[text])
        if text in self.embedded or self.open_paths:
            return text
        raise InputError(f"this page loads only the models it offers: {', '.join(self.choices())}")

    def scrub(self, message: str) -> str:
        """``message`` fit for the page. Beyond this machine, the operator's directories and the embedded weights
        are named by their labels and any other absolute path by its last part alone."""
        if self.open_paths:
            return message
        for label, path in self.directories.items():
            message = message.replace(str(path), label)
        for folder, label in sorted(self._embedded_dirs.items(), key=lambda item: -len(item[0])):
            message = message.replace(folder, label)
        return _ABSOLUTE_PATH.sub(lambda match: match.group(1) or "/", message)

    def notice(self) -> str:
        """One sentence for the page on what the model box accepts."""
        if self.open_paths:
            return "Model: an embedded name, a local directory or a Hugging Face id"
        return "Model: this server offers its embedded models and the ones its operator lists; no other path"
