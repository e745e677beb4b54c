"""A loader for the object files graphc itself writes, so a process that finds every object in
the disk cache runs without LLVM: loading libllvmlite costs ~50 MiB of resident memory and tens
of milliseconds, while placing these objects in memory is a few hundred lines of ELF.

It handles exactly what graphc's code generator emits on x86-64 Linux (the JIT's large code
model): allocatable PROGBITS/NOBITS sections and absolute 64-bit relocations (R_X86_64_64).
Anything else (another machine, another relocation type, constructors, TLS, common symbols) is
``Unsupported`` and the caller links with LLVM instead, as before. Unwind tables are not
registered: generated code never throws. Code is placed in one mapping that is writable while
relocated and then made read+execute; writable data gets a mapping of its own."""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import mmap
import os
import struct
import sys
import threading
import weakref
from dataclasses import dataclass, field
from typing import Mapping, Sequence


class Unsupported(Exception):
    """The object holds something this loader does not place; link it with LLVM instead."""


# ELF constants (the System V ABI and its x86-64 supplement)
_EM_X86_64 = 62
_ET_REL = 1
_SHT_PROGBITS, _SHT_SYMTAB, _SHT_NOBITS, _SHT_RELA, _SHT_REL = 1, 2, 8, 4, 9
_SHT_INIT_ARRAY, _SHT_FINI_ARRAY, _SHT_PREINIT_ARRAY = 14, 15, 16
_SHF_WRITE, _SHF_ALLOC, _SHF_EXEC, _SHF_TLS = 0x1, 0x2, 0x4, 0x400
_SHN_UNDEF, _SHN_ABS, _SHN_COMMON = 0, 0xFFF1, 0xFFF2
_STB_LOCAL, _STB_WEAK = 0, 2
_STT_FUNC, _STT_SECTION, _STT_TLS = 2, 3, 6
_R_X86_64_NONE, _R_X86_64_64 = 0, 1
_PAGE = mmap.PAGESIZE


@dataclass
class _Section:
    name: str
    type: int
    flags: int
    offset: int
    size: int
    link: int
    info: int
    align: int
    entsize: int
    address: int = 0            # where it was placed (0: not loaded)


@dataclass
class _Object:
    data: bytes
    sections: list[_Section]
    # name, st_info (binding << 4 | type), section index, value, size
    symbols: list[tuple[str, int, int, int, int]] = field(default_factory=list)
    symtab: int = -1


def _parse(data: bytes) -> _Object:
    if len(data) < 64 or data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise Unsupported("not a little-endian ELF64 object")
    e_type, e_machine = struct.unpack_from("<HH", data, 16)
    if e_type != _ET_REL or e_machine != _EM_X86_64:
        raise Unsupported("not an x86-64 relocatable object")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    raw = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    names_at = raw[shstrndx][4]

    def name(at: int) -> str:
        end = data.index(b"\0", names_at + at)
        return data[names_at + at:end].decode()
    sections = [_Section(name(r[0]), r[1], r[2], r[4], r[5], r[6], r[7], max(r[8], 1), r[9])
                for r in raw]
    obj = _Object(data, sections)
    for index, s in enumerate(sections):
        if s.type in (_SHT_INIT_ARRAY, _SHT_FINI_ARRAY, _SHT_PREINIT_ARRAY) or \
                (s.flags & _SHF_TLS):
            raise Unsupported(f"section {s.name}")
        if s.type == _SHT_SYMTAB:
            if obj.symtab >= 0:
                raise Unsupported("several symbol tables")
            obj.symtab = index
            strtab = sections[s.link].offset
            for j in range(s.size // s.entsize):
                st_name, st_info, _, st_shndx, st_value, st_size = struct.unpack_from(
                    "<IBBHQQ", data, s.offset + j * s.entsize)
                end = data.index(b"\0", strtab + st_name)
                obj.symbols.append((data[strtab + st_name:end].decode(), st_info, st_shndx,
                                    st_value, st_size))
    return obj


def _loaded(s: _Section) -> bool:
    """Sections placed in memory: allocatable code and data (unwind tables are left out)."""
    return bool(s.flags & _SHF_ALLOC) and s.type in (_SHT_PROGBITS, _SHT_NOBITS) \
        and s.name != ".eh_frame"


class _Libc:
    """mmap/mprotect/munmap and dlsym through ctypes (the process's own C library)."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        self.mmap = libc.mmap
        self.mmap.restype = ctypes.c_void_p
        self.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                              ctypes.c_int, ctypes.c_long]
        self.mprotect = libc.mprotect
        self.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        self.munmap = libc.munmap
        self.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        self.process = ctypes.CDLL(None)      # the process's global symbols, as dlsym sees them

    def symbol(self, name: str) -> int | None:
        try:
            return ctypes.cast(getattr(self.process, name), ctypes.c_void_p).value
        except AttributeError:
            return None


_LIBC: list[_Libc] = []
_LOCK = threading.Lock()


def _libc() -> _Libc:
    with _LOCK:
        if not _LIBC:
            _LIBC.append(_Libc())
        return _LIBC[0]


def _map(size: int) -> int:
    lc = _libc()
    addr = lc.mmap(None, size, mmap.PROT_READ | mmap.PROT_WRITE,
                   mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
    if addr in (None, ctypes.c_void_p(-1).value):
        raise MemoryError("mmap failed for generated code")
    return addr


def _unmap(regions: Sequence[tuple[int, int]]) -> None:
    if sys.is_finalizing():    # a daemon worker may still run this code while Python exits
        return
    lc = _libc()
    for addr, size in regions:
        lc.munmap(addr, size)


class Loaded:
    """Placed object code and its exported addresses; unmapped when garbage-collected (as
    LLVM's resource tracker unloads what it linked)."""

    def __init__(self, addresses: dict[str, int], regions: list[tuple[int, int]]):
        self.addresses = addresses
        self.tracker = None
        # not at interpreter exit: a worker thread may still be spinning in the pool's code
        # then, and the process's memory goes back to the system anyway
        weakref.finalize(self, _unmap, regions).atexit = False


def supported() -> bool:
    """Whether this process can use the loader at all (x86-64 Linux, a CPython with ctypes)."""
    import platform
    return sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")


def load(blobs: Sequence[bytes], symbols: Sequence[str],
         imports: Mapping[str, int] | None = None) -> Loaded:
    """Place ``blobs`` (relocatable objects that may call each other) in memory, resolve what
    they call from ``imports``, one another and the process's symbols, and return the
    addresses of ``symbols``. Raises Unsupported (nothing placed) for anything unexpected."""
    objs = [_parse(b) for b in blobs]
    code_size = data_size = 0
    placed: list[tuple[_Object, _Section, bool]] = []
    for o in objs:
        for s in o.sections:
            if not _loaded(s):
                continue
            writable = bool(s.flags & _SHF_WRITE)
            if writable:
                data_size = _round(data_size, s.align)
                s.address, data_size = data_size, data_size + s.size
            else:
                code_size = _round(code_size, s.align)
                s.address, code_size = code_size, code_size + s.size
            placed.append((o, s, writable))
    code_len, data_len = _round(max(code_size, 1), _PAGE), _round(max(data_size, 1), _PAGE)
    code = _map(code_len)
    regions = [(code, code_len)]
    try:
        data = _map(data_len)
        regions.append((data, data_len))
        for o, s, writable in placed:
            s.address += data if writable else code
            if s.type == _SHT_PROGBITS and s.size:
                ctypes.memmove(s.address, o.data[s.offset:s.offset + s.size], s.size)
            # NOBITS stays as mmap made it: zeros
        defined: dict[str, int] = {}
        for o in objs:
            for name, info, shndx, value, _ in o.symbols:
                if name and info >> 4 != _STB_LOCAL and shndx != _SHN_UNDEF:
                    defined[name] = _symbol_address(o, shndx, value, info)
        lc = _libc()
        resolve = dict(imports or {})
        for o in objs:
            _relocate(o, defined, resolve, lc)
        if _libc().mprotect(code, code_len, mmap.PROT_READ | mmap.PROT_EXEC) != 0:
            raise Unsupported("mprotect refused to make the code executable")
        missing = [s for s in symbols if s not in defined]
        if missing:
            raise Unsupported(f"symbols not defined: {', '.join(missing[:5])}")
        if os.environ.get("GRAPHC_PERF_MAP"):
            _perf_map(objs)
        return Loaded({s: defined[s] for s in symbols}, regions)
    except BaseException:
        _unmap(regions)
        raise


def _perf_map(objs: Sequence[_Object]) -> None:
    """Name every function placed in /tmp/perf-<pid>.map, where Linux perf looks for JIT code,
    so a profile of generated code reads ``sgd_step.k15.fused``, not an address."""
    lines = [f"{_symbol_address(o, shndx, value, info):x} {size:x} {name}\n"
             for o in objs for name, info, shndx, value, size in o.symbols
             if info & 0xF == _STT_FUNC and size and shndx != _SHN_UNDEF]
    with contextlib.suppress(OSError), open(f"/tmp/perf-{os.getpid()}.map", "a") as f:
        f.writelines(lines)


def _round(x: int, align: int) -> int:
    return (x + align - 1) // align * align


def _symbol_address(o: _Object, shndx: int, value: int, info: int) -> int:
    if info & 0xF == _STT_TLS or shndx == _SHN_COMMON:
        raise Unsupported("a TLS or common symbol")
    if shndx == _SHN_ABS:
        return value
    s = o.sections[shndx]
    if not _loaded(s):
        raise Unsupported(f"a symbol in the section {s.name}, which is not loaded")
    return s.address + value


def _relocate(o: _Object, defined: Mapping[str, int], imports: Mapping[str, int],
              lc: _Libc) -> None:
    for rs in o.sections:
        if rs.type == _SHT_REL:
            raise Unsupported("REL relocations")
        if rs.type != _SHT_RELA:
            continue
        target = o.sections[rs.info]
        if not _loaded(target):
            continue                   # relocations of unwind tables and notes
        symtab = rs.link
        for j in range(rs.size // rs.entsize):
            offset, info, addend = struct.unpack_from("<QQq", o.data, rs.offset + j * rs.entsize)
            kind, index = info & 0xFFFFFFFF, info >> 32
            if kind == _R_X86_64_NONE:
                continue
            if kind != _R_X86_64_64:
                raise Unsupported(f"relocation type {kind}")
            if symtab != o.symtab:
                raise Unsupported("relocations against another symbol table")
            name, sinfo, shndx, value, _ = o.symbols[index]
            if sinfo & 0xF == _STT_SECTION or (shndx != _SHN_UNDEF and sinfo >> 4 == _STB_LOCAL):
                where = _symbol_address(o, shndx, value, sinfo)
            elif shndx != _SHN_UNDEF:
                where = defined[name]
            else:
                found = imports.get(name)
                if found is None:
                    found = defined.get(name)
                if found is None:
                    found = lc.symbol(name)
                if not found and sinfo >> 4 != _STB_WEAK:
                    raise Unsupported(f"the symbol {name!r} is not in this process")
                where = found or 0
            ctypes.c_uint64.from_address(target.address + offset).value = \
                (where + addend) & 0xFFFFFFFFFFFFFFFF
