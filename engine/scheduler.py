"""Iteration-level scheduling: which tokens the next forward pass computes.

Every step takes all running decodes plus prefill chunks up to a token budget (chunked prefill), so a request
that arrives mid-generation starts at the next step and a long prompt never stalls the decodes. A request is
admitted only when the pool can hold its whole current context; when a running decode needs a block and none is
free, the most recently admitted request is preempted (its blocks freed, its context recomputed later) rather
than anything crashing. A finished or cancelled request frees its blocks at once.
"""

from __future__ import annotations

import itertools
import random
from collections import deque
from dataclasses import dataclass, field

from phifleet.engine.kv_pool import KVPool, OutOfBlocks
from phifleet.engine.prefix_cache import ROOT, PrefixCache, block_names
from phifleet.engine.sequence import Sequence


class RequestTooLongError(ValueError):
    """A request whose context could never fit the KV pool, however empty."""


@dataclass(eq=False)
class Running:
    """The scheduler's record of one request: its tokens, its KV blocks and how many of them are computed."""

    seq: Sequence
    order: int
    seed: int
    tokens: list[int] = field(default_factory=list)
    blocks: list[int] = field(default_factory=list)
    computed: int = 0  # leading tokens whose K/V are in the pool
    preemptions: int = 0
    names: list[bytes] = field(default_factory=list)  # prefix-cache names of its computed full prompt blocks
    prompt_names: list[bytes] | None = None  # names of all its full prompt blocks, once asked for

    @property
    def generated(self) -> int:
        return len(self.tokens) - len(self.seq.prompt_ids)

    @property
    def prefilling(self) -> bool:
        """More than the last token is uncomputed. (With only the last one left, a decode step feeds it.)"""
        return self.computed < len(self.tokens) - 1


@dataclass
class PrefillWork:
    req: Running
    start: int
    length: int

    @property
    def completes(self) -> bool:
        """This chunk reaches the last known token: its last position's logits choose the next token."""
        return self.start + self.length == len(self.req.tokens)


@dataclass
class ScheduledStep:
    decodes: list[Running]
    prefills: list[PrefillWork]

    @property
    def empty(self) -> bool:
        return not self.decodes and not self.prefills

    @property
    def tokens(self) -> int:
        return len(self.decodes) + sum(p.length for p in self.prefills)


class Scheduler:
    """Owns the waiting queue, the running set and the pool's block accounting. Single-threaded."""

    def __init__(
        self,
        pool: KVPool,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        max_model_len: int,
        seed: int = 0,
        prefix_cache: PrefixCache | None = None,
    ) -> None:
        self.pool = pool
        self.prefix_cache = prefix_cache
        self._seeds = random.Random(seed) if seed else random.SystemRandom()
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.max_model_len = max_model_len
        self.waiting: deque[Running] = deque()
        self.running: list[Running] = []
        self._order = itertools.count()
        self.preemptions = 0

    # --- requests in and out ---------------------------------------------------------------
    def add(self, seq: Sequence) -> Running:
        total = len(seq.prompt_ids) + seq.max_tokens
        if total > self.max_model_len:  # the validator refuses these first; positions past it were never trained
            raise RequestTooLongError(
                f"prompt ({len(seq.prompt_ids)} tokens) plus max_tokens ({seq.max_tokens}) exceeds the context "
                f"window of {self.max_model_len} tokens"
            )
        if self.pool.blocks_for(total) > self.pool.capacity:
            raise RequestTooLongError(
                f"prompt ({len(seq.prompt_ids)} tokens) plus max_tokens ({seq.max_tokens}) needs "
                f"{self.pool.blocks_for(total)} KV blocks; the pool holds {self.pool.capacity}"
            )
        seed = seq.params.seed if seq.params.seed is not None else self._seeds.getrandbits(63)
        req = Running(seq, next(self._order), seed, tokens=list(seq.prompt_ids))
        self.waiting.append(req)
        return req

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def finish(self, req: Running) -> None:
        """Free a request's blocks; it leaves the running set (finished, cancelled or failed)."""
        self.pool.release(req.blocks)
        req.blocks = []
        if req in self.running:
            self.running.remove(req)

    def drop_finished(self) -> None:
        for req in [r for r in self.running if r.seq.finished]:
            self.finish(req)
        if any(r.seq.finished for r in self.waiting):
            self.waiting = deque(r for r in self.waiting if not r.seq.finished)

    # --- the step --------------------------------------------------------------------------
    def schedule(self) -> ScheduledStep:
        self.drop_finished()
        decodes = self._decodes()
        budget = self.max_num_batched_tokens - len(decodes)
        prefills: list[PrefillWork] = []
        for req in self.running:
            if budget <= 0:
                break
            if req.prefilling:
                n = min(budget, len(req.tokens) - req.computed)
                prefills.append(PrefillWork(req, req.computed, n))
                budget -= n
        pending = self._pending_prompt_blocks() if self.waiting and self.prefix_cache is not None else {}
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            req = self.waiting[0]
            shared, names = [], []
            if self.prefix_cache is not None:  # at least the last token is computed: its logits are needed
                shared, names = self.prefix_cache.match(req.tokens, len(req.tokens) - 1)
                if self._next_block_pending(req, names, pending):
                    self.pool.release(shared)
                    break  # its next block is being computed by another request: reuse it a step or two later
            need = self.pool.blocks_for(len(req.tokens)) - len(shared)
            if not self._make_room(need):
                self.pool.release(shared)
                break  # first come, first served: later requests wait behind it
            self.waiting.popleft()
            req.blocks = shared + self.pool.allocate(need)
            req.names = names
            req.computed = len(shared) * self.pool.block_size
            self.running.append(req)
            n = min(budget, len(req.tokens) - req.computed)
            prefills.append(PrefillWork(req, req.computed, n))
            budget -= n
            if self.prefix_cache is not None:
                for name in self._prompt_names(req)[len(names) :]:
                    pending.setdefault(name, req)
        return ScheduledStep(decodes, prefills)

    def _prompt_names(self, req: Running) -> list[bytes]:
        """Chain names of the request's full prompt blocks that ``match`` could ever return (computed once)."""
        if req.prompt_names is None:
            full = (len(req.seq.prompt_ids) - 1) // self.pool.block_size
            req.prompt_names = block_names(req.seq.prompt_ids, self.pool.block_size, full)
        return req.prompt_names

    def _pending_prompt_blocks(self) -> dict[bytes, Running]:
        """Prompt blocks running requests will compute but have not yet: a request that starts with them waits."""
        pending: dict[bytes, Running] = {}
        for req in self.running:
            if req.prefilling:
                for name in self._prompt_names(req)[len(req.names) :]:
                    pending.setdefault(name, req)
        return pending

    def _next_block_pending(self, req: Running, names: list[bytes], pending: dict[bytes, Running]) -> bool:
        """Requests arriving together with a common prefix (a system prompt) would each compute it: the first
        computes it, the others wait until it is cached and then share it by reference."""
        if not pending:
            return False
        own = self._prompt_names(req)
        return len(own) > len(names) and own[len(names)] in pending

    def fail_unadmittable(self) -> None:
        """Nothing runs and the first waiting request still does not fit (blocks held elsewhere): fail it rather
        than wait forever for room that is not coming."""
        if self.running or not self.waiting:
            return
        req = self.waiting[0]
        if self.pool.blocks_for(len(req.tokens)) > self.pool.free_blocks:
            req.seq.fail(
                OutOfBlocks(
                    f"{len(req.tokens)} tokens need {self.pool.blocks_for(len(req.tokens))} KV blocks; "
                    f"{self.pool.free_blocks} are free and nothing else is running"
                )
            )
            self.drop_finished()

    def _make_room(self, blocks: int) -> bool:
        """Whether ``blocks`` are free, evicting cached prefix blocks nobody uses if that is what it takes (and only
        then: a request that must wait anyway leaves the cache as it is)."""
        short = blocks - self.pool.free_blocks
        if short > 0 and self.prefix_cache is not None:
            self.prefix_cache.evict(short, exact=True)
        return blocks <= self.pool.free_blocks

    def _decodes(self) -> list[Running]:
        """Running requests past their prefill, each with room for one more token (preempting if needed)."""
        decodes: list[Running] = []
        for req in list(self.running):
            if req.blocks == [] or req.prefilling:  # preempted earlier in this loop, or still prefilling
                continue
            while len(req.blocks) * self.pool.block_size < len(req.tokens):
                if self._make_room(1):
                    req.blocks += self.pool.allocate(1)
                    continue
                victim = max(self.running, key=lambda r: r.order)
                self.preempt(victim)
                if victim is req:
                    break
            if req in self.running:
                decodes.append(req)
        return [d for d in decodes if d in self.running]

    def preempt(self, req: Running) -> None:
        """Free a request's KV and requeue it first: it recomputes its context (prompt + tokens so far) later."""
        self.pool.release(req.blocks)
        req.blocks, req.computed, req.names = [], 0, []
        req.preemptions += 1
        self.preemptions += 1
        self.running.remove(req)
        self.waiting.appendleft(req)

    def advance(self, step: ScheduledStep, sampled: dict[int, int]) -> None:
        """Record what the step computed; ``sampled`` maps id(request) to its new token, if it got one."""
        for req in step.decodes:
            req.computed = len(req.tokens)
        for work in step.prefills:
            work.req.computed = work.start + work.length
            if self.prefix_cache is not None:
                self._cache_prompt_blocks(work.req)
        for req in [*step.decodes, *(w.req for w in step.prefills)]:
            token = sampled.get(id(req))
            if token is not None:
                req.tokens.append(token)

    def _cache_prompt_blocks(self, req: Running) -> None:
        """Name and register the prompt blocks this request has fully computed since it last did."""
        assert self.prefix_cache is not None
        full = min(req.computed, len(req.seq.prompt_ids)) // self.pool.block_size
        if full <= len(req.names):
            return
        parent = req.names[-1] if req.names else ROOT
        known = self._prompt_names(req)
        if full <= len(known):  # named already when it was admitted
            new = known[len(req.names) : full]
        else:
            new = block_names(req.tokens, self.pool.block_size, full, start=len(req.names), parent=parent)
        self.prefix_cache.insert(new, req.blocks[len(req.names) : full], parent)
        req.names += new
