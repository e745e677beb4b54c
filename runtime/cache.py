"""The on-disk object cache: a second process (or a second compile) links object code instead of
running LLVM. It is optional: when it cannot be located, read or written, graphc compiles
without it, so nothing found on disk may hang, crash or mislead a compile.

An entry is ``HEADER + sha256(HEADER + object) + object`` with ``HEADER = "GRAPHC-OBJ-<format>
<key>\\n"``. The checksum covers the key and the format, so an entry serves only the key it was
written for: a swapped, copied or restored file is a miss, never another function's code (which
would be linked and called). Anything at an entry's path that is not a regular file of sane
size (a FIFO, a device, a symlink, a directory) is a miss, found without blocking. Misses are
recompiled and overwritten through a temp file and a rename. Past ``GRAPHC_CACHE_MAX_MB`` the
least recently used entries go (a hit refreshes an entry's mtime); the scan that finds them runs
only after puts, amortised, never on a hit."""
from __future__ import annotations

import hashlib
import os
import re
import secrets
import stat
import threading
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from graphc.ir import slots
from graphc.ir.errors import GraphWarning, warn

FORMAT = 2                         # entry layout; a different one is a miss (and overwritten)
MAX_ENTRY_BYTES = 256 << 20        # larger is not an object graphc wrote: a miss, not a read
DEFAULT_LIMIT_MB = 512
EVICT_EVERY_S = 600                # the longest between size scans while puts keep coming
TOUCH_AFTER_S = 60                 # LRU granularity: a hit re-stamps an entry older than this
STALE_TMP_S = 3600                 # a temp file this old belongs to a writer that died
STAMP = ".last-scan"               # its mtime: when any process last scanned this cache

_KEY = re.compile(r"[0-9a-f]{64}\Z")
_ENTRY = re.compile(r"[0-9a-f]{64}\.o\Z")
_SHARD = re.compile(r"[0-9a-f]{2}\Z")
_TMP = re.compile(r"(\.[0-9a-f]{16}\.\d+\.[0-9a-f]{8}|tmp\w{8})\.tmp\Z")   # ours; mkstemp's (old)
_READ = (os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
         | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0))
_CREATE = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
           | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0))
_unscanned: dict[Path, int] = {}   # bytes this process put in each cache since it last scanned
_unscanned_lock = threading.Lock()


_VERSION_CACHE: list[str] = []


def graphc_version() -> str:
    """A hash of the sources that shape generated code (this backend, the op table's
    lowerings, the slot allocator), so editing one never reuses stale objects. (No package
    version: the sources identify the code, and importlib.metadata's lookup costs a cache hit
    ~40 ms.)"""
    if not _VERSION_CACHE:
        ir_dir = Path(slots.__file__).parent
        runtime_dir = Path(__file__).parent
        h = hashlib.sha256()
        files = [p for folder in (runtime_dir, ir_dir / "ops")
                 for p in sorted(folder.glob("*.py"))] + [ir_dir / "slots.py"]
        for p in files:
            h.update(p.read_bytes())
        _VERSION_CACHE.append(f"src+{h.hexdigest()[:16]}")
    return _VERSION_CACHE[0]


def cache_key(*parts: str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode())
        h.update(b"\0")
    return h.hexdigest()


def cache_dir() -> Path | None:
    """``$GRAPHC_CACHE_DIR``, else ``$XDG_CACHE_HOME/graphc``, else ``~/.cache/graphc``; None
    when there is no home (no HOME and a uid without a passwd entry: containers, cron)."""
    env = os.environ.get("GRAPHC_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):             # the XDG spec: a relative path is ignored
        return Path(xdg) / "graphc"
    home = os.path.expanduser("~")             # unchanged when it cannot be found
    return Path(home) / ".cache" / "graphc" if os.path.isabs(home) else None


NO_DIR = ("no object cache: cannot locate a home directory (HOME is unset or relative, and the "
          "passwd database has no entry for this user); set GRAPHC_CACHE_DIR to cache "
          "compiled code")


def cache_limit() -> int:
    """``$GRAPHC_CACHE_MAX_MB`` in bytes (0: no limit); a value that is not a number >= 0 warns
    and leaves the default."""
    text = os.environ.get("GRAPHC_CACHE_MAX_MB", "").strip()
    if text:
        try:
            mb = float(text)
            if mb >= 0 and mb != float("inf"):
                return int(mb * 2**20)
        except ValueError:
            pass
        warn(GraphWarning(f"GRAPHC_CACHE_MAX_MB={text!r} is not a number of MiB >= 0; using "
                          f"{DEFAULT_LIMIT_MB}"))
    return DEFAULT_LIMIT_MB << 20


def open_cache(quiet: bool = False) -> ObjectCache | None:
    """The cache that compiles use, or None (after one GraphWarning, unless ``quiet``: the
    runtime's own libraries, which a model's compile already warned for) when there is none."""
    root = cache_dir()
    if root is None:
        if not quiet:
            warn(GraphWarning(NO_DIR))
        return None
    return ObjectCache(root, cache_limit())


_UNWRITABLE: set[Path] = set()      # cache roots this process has warned about


def _cannot_write(root: Path, e: Exception) -> None:
    """Say once per process and directory that nothing can be stored there: every compile
    then goes through LLVM, and a user should know why."""
    with _unscanned_lock:
        if root in _UNWRITABLE:
            return
        _UNWRITABLE.add(root)
    why = getattr(e, "strerror", None) or e
    warn(GraphWarning(f"the compiled-code cache {root} cannot be written ({why}): every compile "
                      f"goes through LLVM; set GRAPHC_CACHE_DIR to a writable directory"))


def header(key: str) -> bytes:
    return f"GRAPHC-OBJ-{FORMAT} {key}\n".encode()


@dataclass(frozen=True)
class CacheInfo:
    directory: Path
    entries: int
    bytes: int
    limit: int                     # bytes; 0: no limit


@dataclass(frozen=True)
class ObjectCache:
    """One cache directory: ``<root>/<key[:2]>/<key>.o``. No method raises on a cache that is
    missing, unreadable, unwritable or full of strange files; ``get`` and ``put`` never block."""
    root: Path
    limit: int                     # bytes; 0: no limit

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.o"

    def get(self, key: str) -> bytes | None:
        """The object code stored for ``key``, or None for anything else found there."""
        if not _KEY.match(key):
            return None
        blob = _read_regular(self.path(key), MAX_ENTRY_BYTES)
        head = header(key)
        start = len(head) + 32
        if blob is None or len(blob) <= start or not blob.startswith(head):
            return None
        obj = memoryview(blob)[start:]
        if hashlib.sha256(head + obj).digest() != blob[len(head):start]:
            return None
        _touch(self.path(key))
        return bytes(obj)

    def put(self, key: str, obj: bytes) -> None:
        """Store by temp file + rename, so readers see a whole entry or none; the file's mode
        follows the umask (a team's shared cache stays readable). Failures are skipped."""
        if not _KEY.match(key):
            return
        head = header(key)
        blob = head + hashlib.sha256(head + obj).digest() + obj
        if len(blob) > MAX_ENTRY_BYTES:
            return
        shard = self.root / key[:2]
        tmp: Path | None = None
        try:
            shard.mkdir(parents=True, exist_ok=True)
            name = shard / f".{key[:16]}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
            fd = os.open(name, _CREATE, 0o666)         # the kernel applies the umask
            tmp = name
        except (OSError, ValueError) as e:              # nothing can be stored here
            _cannot_write(self.root, e)
            return
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(blob)
            os.replace(tmp, self.path(key))
            tmp = None
        except (OSError, ValueError):                   # this entry alone (a full disk...)
            return
        finally:
            if tmp is not None:
                with suppress(OSError):
                    tmp.unlink()
        self._after_put(len(blob))

    def _after_put(self, size: int) -> None:
        """Scan for eviction when this process has put an eighth of the limit since its last
        scan, or no process has scanned for EVICT_EVERY_S: one stat per put otherwise."""
        if not self.limit:
            return
        with _unscanned_lock:
            pending = _unscanned[self.root] = _unscanned.get(self.root, 0) + size
        try:
            due = time.time() - (self.root / STAMP).stat().st_mtime > EVICT_EVERY_S
        except OSError:
            due = True
        if due or pending > self.limit // 8:
            self.evict()

    def evict(self) -> int:
        """Remove least recently used entries until the cache is under 90% of the limit, and
        temp files of writers that died; returns how many entries went."""
        with _unscanned_lock:
            _unscanned[self.root] = 0
        with suppress(OSError):
            (self.root / STAMP).touch()
        found = sorted(self._entries(stale_tmp=True), key=lambda e: e[1])
        total = sum(size for _, _, size in found)
        removed = 0
        for path, _, size in found:
            if not self.limit or total <= self.limit * 0.9:
                break
            with suppress(OSError):
                path.unlink()
                removed += 1
            total -= size
        return removed

    def info(self) -> CacheInfo:
        found = list(self._entries())
        return CacheInfo(self.root, len(found), sum(size for _, _, size in found), self.limit)

    def clear(self) -> int:
        """Remove every entry and temp file (nothing else), then the shards left empty."""
        removed = 0
        for path, _, _ in self._entries():
            with suppress(OSError):
                path.unlink()
                removed += 1
        for shard in self._shards():
            for tmp in _scan(shard):
                if _TMP.match(tmp.name):
                    with suppress(OSError):
                        os.unlink(tmp.path)
            with suppress(OSError):
                shard.rmdir()
        with suppress(OSError):
            (self.root / STAMP).unlink()
        return removed

    def _shards(self) -> list[Path]:
        return [Path(e.path) for e in _scan(self.root)
                if _SHARD.match(e.name) and e.is_dir(follow_symlinks=False)]

    def _entries(self, stale_tmp: bool = False) -> Iterator[tuple[Path, float, int]]:
        """(path, mtime, size) of each entry file; with ``stale_tmp``, removes old temp files."""
        now = time.time()
        for shard in self._shards():
            for e in _scan(shard):
                try:
                    st = e.stat(follow_symlinks=False)
                except OSError:
                    continue
                if not stat.S_ISREG(st.st_mode):
                    continue
                if _ENTRY.match(e.name):
                    yield Path(e.path), st.st_mtime, st.st_size
                elif stale_tmp and _TMP.match(e.name) and now - st.st_mtime > STALE_TMP_S:
                    with suppress(OSError):
                        os.unlink(e.path)


def _scan(directory: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(directory) as it:
            return list(it)
    except OSError:
        return []


def _read_regular(path: Path, cap: int) -> bytes | None:
    """The bytes of ``path`` if it is a regular file (not through a symlink) of at most ``cap``
    bytes; None otherwise. A FIFO or device is refused after a non-blocking open, before any
    read; the read stops at ``cap`` even if the file grows."""
    try:
        fd = os.open(path, _READ)
    except (OSError, ValueError):
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > cap:
            return None
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, min(cap + 1 - total, 1 << 24))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > cap:
                return None
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def _touch(path: Path) -> None:
    """Mark an entry used (LRU eviction goes by mtime), at most once per TOUCH_AFTER_S: a
    read-only or foreign entry simply stays as it is."""
    with suppress(OSError):
        if time.time() - path.stat().st_mtime > TOUCH_AFTER_S:
            os.utime(path)


def cache_get(key: str) -> bytes | None:
    """The cached object for ``key`` in the default cache, or None."""
    root = cache_dir()
    return ObjectCache(root, cache_limit()).get(key) if root is not None else None


def cache_put(key: str, obj: bytes) -> None:
    """Store ``obj`` for ``key`` in the default cache, if there is one."""
    root = cache_dir()
    if root is not None:
        ObjectCache(root, cache_limit()).put(key, obj)
