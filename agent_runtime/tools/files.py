"""A file reader confined to a workspace directory: paths are resolved (symlinks and `..` included) and must stay
inside it; reads are bounded."""

from __future__ import annotations

from pathlib import Path

MAX_READ_BYTES = 256 << 10


class Workspace:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve(strict=True)

    def _inside(self, path: str) -> Path:
        candidate = (self.root / path).resolve()
        if candidate != self.root and not candidate.is_relative_to(self.root):
            raise PermissionError(f"{path!r} is outside the workspace")
        return candidate

    def read_file(self, path: str, offset: int = 0, limit: int = MAX_READ_BYTES) -> str:
        """Read a text file of the workspace (a path relative to it), from byte `offset`, at most `limit` bytes."""
        target = self._inside(path)
        if not target.is_file():
            raise FileNotFoundError(f"no file {path!r} in the workspace")
        if offset < 0 or not 0 < limit <= MAX_READ_BYTES:
            raise ValueError(f"offset >= 0 and 0 < limit <= {MAX_READ_BYTES}")
        with open(target, "rb") as handle:
            handle.seek(offset)
            data = handle.read(limit)
        return data.decode("utf-8", errors="replace")

    def list_files(self, path: str = ".") -> list[str]:
        """The entries of a workspace directory (directories end with "/")."""
        target = self._inside(path)
        if not target.is_dir():
            raise FileNotFoundError(f"no directory {path!r} in the workspace")
        return sorted(p.name + ("/" if p.is_dir() else "") for p in target.iterdir()
                      if p.resolve().is_relative_to(self.root))
