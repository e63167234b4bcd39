"""Prefix reuse: full KV blocks of prompts, found again by their content and shared by reference.

A block is named by a chain hash (SHA-256 of its parent's name and its own token ids), so equal names mean equal
token prefixes, and a request whose prompt starts with cached blocks takes a reference to them instead of
computing them: a system prompt or a label instruction is computed once per replica, not once per request. The
cache holds one reference of its own per block; blocks that only the cache holds are evicted least recently used
first when the pool needs room, leaves before their parents: a block is reachable only through its whole chain,
so a parent evicted under a cached child would leave the child unreachable yet holding its space.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict

from phifleet.engine.kv_pool import KVPool

ROOT = b"phifleet-prefix-v1"


def block_names(
    tokens: list[int], block_size: int, full_blocks: int, start: int = 0, parent: bytes = ROOT
) -> list[bytes]:
    """Chain hashes of blocks [start, full_blocks) of ``tokens``, continuing from ``parent``."""
    names = []
    for i in range(start, full_blocks):
        chunk = array("q", tokens[i * block_size : (i + 1) * block_size]).tobytes()
        parent = hashlib.sha256(parent + chunk).digest()
        names.append(parent)
    return names


class PrefixCache:
    """Name -> block of computed prompt blocks, in least-recently-used order. Single-threaded, like the pool."""

    def __init__(self, pool: KVPool) -> None:
        self.pool = pool
        self._blocks: OrderedDict[bytes, int] = OrderedDict()
        self._names: dict[int, bytes] = {}
        self._parent: dict[bytes, bytes] = {}  # name -> its parent's name (ROOT for a first block)
        self._children: dict[bytes, int] = {}  # name (cached or not) -> how many cached blocks continue it
        self.hits = 0  # blocks reused
        self.queries = 0  # blocks looked up

    def __len__(self) -> int:
        return len(self._blocks)

    def match(self, tokens: list[int], max_tokens: int) -> tuple[list[int], list[bytes]]:
        """The longest run of cached leading blocks within ``max_tokens`` (references taken), and their names."""
        bs = self.pool.block_size
        blocks: list[int] = []
        names: list[bytes] = []
        parent = ROOT
        for i in range(max_tokens // bs):
            self.queries += 1
            (name,) = block_names(tokens, bs, i + 1, start=i, parent=parent)
            block = self._blocks.get(name)
            if block is None:
                break
            self._blocks.move_to_end(name)
            self.pool.share(block)
            blocks.append(block)
            names.append(name)
            parent = name
        self.hits += len(blocks)
        return blocks, names

    def insert(self, names: list[bytes], blocks: list[int], parent: bytes = ROOT) -> None:
        """Register computed full blocks under their names (a name already cached keeps its block); ``parent`` is
        the name of the block before ``names[0]``."""
        for name, block in zip(names, blocks, strict=False):
            if parent != ROOT and parent not in self._blocks:
                return  # its parent is not cached (another block holds that name, or it went): unreachable
            if name not in self._blocks and block not in self._names:
                self.pool.share(block)
                self._blocks[name] = block
                self._names[block] = name
                self._parent[name] = parent
                self._children[parent] = self._children.get(parent, 0) + 1
            parent = name

    def evict(self, wanted: int, exact: bool = False) -> int:
        """Free up to ``wanted`` blocks that nothing but the cache holds, least recently used leaves first (a
        parent goes once its last cached child has); with ``exact``, all ``wanted`` or none (a request that must
        wait anyway leaves the cache as it is). Returns how many. Stops looking once it has found them: the
        scheduler asks on every block a decode crosses, and the cache can hold most of the pool."""
        victims: list[bytes] = []
        chosen: set[bytes] = set()
        going: dict[bytes, int] = {}  # children of a name already chosen
        for name in self._blocks:  # least recently used first; nothing changes while looking
            while (
                len(victims) < wanted
                and name in self._blocks
                and name not in chosen
                and self._children.get(name, 0) == going.get(name, 0)
                and self.pool.refs(self._blocks[name]) == 1
            ):
                victims.append(name)
                chosen.add(name)
                name = self._parent[name]  # the chain shortens from its end: its parent may be a leaf now
                going[name] = going.get(name, 0) + 1
            if len(victims) >= wanted:
                break
        if exact and len(victims) < wanted:
            return 0
        for name in victims:
            self._remove(name)
        return len(victims)

    def evictable(self) -> int:
        """Blocks ``evict`` could free now: held by the cache alone, and so is every cached block after them."""
        pinned: set[bytes] = set()
        for name, block in self._blocks.items():
            if self.pool.refs(block) == 1:
                continue
            while name in self._blocks and name not in pinned:  # a held block pins its whole chain
                pinned.add(name)
                name = self._parent[name]
        return len(self._blocks) - len(pinned)

    def clear(self) -> None:
        self.evict(len(self._blocks))

    def _removable(self, name: bytes) -> bool:
        return name not in self._children and self.pool.refs(self._blocks[name]) == 1

    def _remove(self, name: bytes) -> None:
        block = self._blocks.pop(name)
        del self._names[block]
        parent = self._parent.pop(name)
        self._children[parent] -= 1
        if not self._children[parent]:
            del self._children[parent]
        self.pool.release([block])
