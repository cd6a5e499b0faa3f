"""Streaming sharded safetensors writer.

``safetensors.torch.save_file`` needs a whole shard in memory (up to 5 GB by default).
Since the merge knows every output tensor's name, dtype and shape before it computes
any of them, the shard layout and every header are fixed up front and tensors are
appended as they are produced: one tensor in memory at a time, on a background thread
so that disk writes overlap the next tensor's arithmetic. The files are ordinary
safetensors (header padded to 8 bytes, ``{"format": "pt"}`` metadata) with the
transformers index ``model.safetensors.index.json``, so ``from_pretrained`` and vLLM
load them as is.
"""

from __future__ import annotations

import json
import queue
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from artifacts.errors import ShortcotError
from merge.checkpoint import DTYPE_NAMES

_UNITS = {
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
}


def parse_size(text: str | int) -> int:
    """``"5GB"`` -> 5_000_000_000 (transformers' convention: decimal units; KiB/MiB/GiB binary)."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*([0-9.]+)\s*([A-Za-z]*)\s*", str(text))
    if not m or (m.group(2).upper() or "B") not in _UNITS:
        raise ShortcotError(f"shard size {text!r} is not a size; write e.g. 5GB, 500MB or 2GiB")
    size = int(float(m.group(1)) * _UNITS[m.group(2).upper() or "B"])
    if size <= 0:
        raise ShortcotError(f"shard size {text!r} must be positive")
    return size


@dataclass
class Shard:
    filename: str
    names: list[str] = field(default_factory=list)
    header: bytes = b""
    offsets: dict[str, int] = field(
        default_factory=dict
    )  # absolute byte offset of each tensor's data
    nbytes: int = 0


def _element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def plan_shards(
    specs: list[tuple[str, torch.dtype, tuple[int, ...]]], max_shard_size: int
) -> list[Shard]:
    """Group tensors, in order, into shards of at most ``max_shard_size`` bytes (a tensor
    larger than that gets a shard of its own), and build each shard's header."""
    groups: list[list[tuple[str, torch.dtype, tuple[int, ...]]]] = [[]]
    size = 0
    for spec in specs:
        nbytes = _element_size(spec[1]) * int(np.prod(spec[2], dtype=np.int64))
        if groups[-1] and size + nbytes > max_shard_size:
            groups.append([])
            size = 0
        groups[-1].append(spec)
        size += nbytes
    n = len(groups)
    shards = []
    for i, group in enumerate(groups):
        filename = "model.safetensors" if n == 1 else f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        header: dict = {"__metadata__": {"format": "pt"}}
        pos = 0
        rel = {}
        for name, dtype, shape in group:
            nbytes = _element_size(dtype) * int(np.prod(shape, dtype=np.int64))
            header[name] = {
                "dtype": DTYPE_NAMES[dtype],
                "shape": list(shape),
                "data_offsets": [pos, pos + nbytes],
            }
            rel[name] = pos
            pos += nbytes
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        head = len(raw).to_bytes(8, "little") + raw
        shards.append(
            Shard(
                filename,
                [g[0] for g in group],
                head,
                {k: len(head) + v for k, v in rel.items()},
                len(head) + pos,
            )
        )
    return shards


class ShardedWriter:
    """Write tensors, in the planned order, into ``folder`` on a background thread.

    Usage: ``w = ShardedWriter(folder, shards)``; ``w.write(name, tensor)`` for every
    tensor in plan order; ``w.close()`` (re-raises any write error) then
    ``w.write_index()``. ``patch`` rewrites chosen entries of a written tensor in place.

    ``buffer(numel, dtype)`` lends memory to compute a tensor into: once that tensor is
    written, its memory goes back to the writer for the next one. Why: a fresh buffer per
    tensor costs a page fault per 4 KiB page (the allocator hands big freed blocks back to
    the system), which was a third of the merge's CPU time.
    """

    def __init__(
        self, folder: Path, shards: list[Shard], queue_depth: int = 2, buffer_bytes: int = 0
    ):
        self.folder = Path(folder)
        self.buffer_bytes = buffer_bytes  # size of a lent buffer; larger tensors get their own
        self._free: queue.SimpleQueue = queue.SimpleQueue()  # lent buffers back from writing
        self._lent: dict[int, torch.Tensor] = {}  # data address -> lent buffer
        self.shards = shards
        self.location = {name: (s, s.offsets[name]) for s in shards for name in s.names}
        self._order = [name for s in shards for name in s.names]
        self._next = 0
        self._queue: queue.Queue = queue.Queue(maxsize=queue_depth)
        self._error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        files: dict[str, object] = {}
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    break
                name, tensor = item
                shard, _ = self.location[name]
                f = files.get(shard.filename)
                if f is None:
                    for other in files.values():  # shards are written one after another
                        other.close()
                    files.clear()
                    f = files[shard.filename] = open(self.folder / shard.filename, "wb")
                    f.write(shard.header)
                if tensor.numel():
                    f.write(memoryview(tensor.reshape(-1).view(torch.uint8).numpy()))
                lent = self._lent.get(tensor.untyped_storage().data_ptr())
                del tensor
                if lent is not None:
                    self._free.put(lent)
        except BaseException as err:  # surfaced by close()
            self._error = err
            while self._queue.get() is not None:  # drain so the producer never blocks
                pass
        finally:
            for f in files.values():
                f.close()

    def buffer(self, numel: int, dtype: torch.dtype) -> torch.Tensor:
        """An uninitialised flat tensor to fill and then `write`; its memory is reused once
        written. At most ``queue_depth + 2`` are in use at once (queued, being written,
        being filled), so no more are ever allocated."""
        nbytes = numel * _element_size(dtype)
        if nbytes > self.buffer_bytes:
            return torch.empty(numel, dtype=dtype)
        try:
            buf = self._free.get_nowait()
        except queue.Empty:
            buf = torch.empty(self.buffer_bytes, dtype=torch.uint8)
            self._lent[buf.data_ptr()] = buf
        return buf[:nbytes].view(dtype)

    def write(self, name: str, tensor: torch.Tensor) -> None:
        if self._error is not None:
            raise self._error
        expected = self._order[self._next]
        if name != expected:
            raise RuntimeError(
                f"writer got {name}, expected {expected} (tensors must come in plan order)"
            )
        self._next += 1
        self._queue.put((name, tensor.detach().to("cpu").contiguous()))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise ShortcotError(
                f"writing the merged model failed ({self._error}); check free disk space and permissions"
            ) from self._error
        if self._next != len(self._order):
            raise RuntimeError(f"only {self._next} of {len(self._order)} tensors were written")

    def abort(self) -> None:
        """Stop the writer thread after an error elsewhere (files are left incomplete)."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join()

    def patch(self, name: str, positions: torch.Tensor, values: torch.Tensor) -> None:
        """Overwrite entries ``positions`` (flat indices) of written tensor ``name``."""
        if positions.numel() == 0:
            return
        shard, offset = self.location[name]
        itemsize = values.element_size()
        np_dtype = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[itemsize]
        raw = values.contiguous().view(
            {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[itemsize]
        )
        with open(self.folder / shard.filename, "r+b") as f:
            hi = int(positions.max()) + 1
            mm = np.memmap(f, dtype=np_dtype, mode="r+", offset=offset, shape=(hi,))
            mm[positions.numpy()] = raw.numpy().view(np_dtype)
            # no flush (msync): the shared mapping's pages are the file's page cache, which
            # every later read sees, and the rest of the output is not synced either
            del mm

    def write_index(self) -> None:
        """``model.safetensors.index.json`` (only when there is more than one shard)."""
        if len(self.shards) == 1:
            return
        total = sum(s.nbytes - len(s.header) for s in self.shards)
        index = {
            "metadata": {"total_size": total},
            "weight_map": {name: s.filename for s in self.shards for name in s.names},
        }
        (self.folder / "model.safetensors.index.json").write_text(
            json.dumps(index, indent=2) + "\n"
        )
