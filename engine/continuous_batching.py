"""Continuous batching through transformers' ContinuousBatchingManager (paged KV cache).

Requests join and leave the running batch token by token, which is what keeps a GPU busy under
concurrent load. Two managers exist at most: one greedy, one sampling with per-request
temperature/top-p/top-k. The CB sampler draws from one shared random stream, so requests that ask
for a per-request ``seed`` are served by the static path instead (see Engine).
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading
from collections.abc import Iterator

import torch
from transformers import GenerationConfig
from transformers.generation.configuration_utils import ContinuousBatchingConfig

from phifleet.engine.sequence import Sequence

# Placeholder values only make transformers build the per-request processors; every sampled request
# passes its own temperature/top_p/top_k, so these defaults are never applied.
_SAMPLING_PLACEHOLDERS = {"temperature": 0.5, "top_p": 0.5, "top_k": 1}
PAGE_SIZE = 256


class ContinuousBatcher:
    def __init__(
        self,
        model: torch.nn.Module,
        eos_ids: frozenset[int],
        pad_id: int,
        max_batch_size: int,
        max_batch_tokens: int,
        seed: int,
    ) -> None:
        self._model = model
        self._eos = sorted(eos_ids)
        self._pad_id = pad_id
        self._max_batch_size = max_batch_size
        self._max_batch_tokens = max_batch_tokens
        self._seed = seed
        self._managers: dict[bool, object] = {}
        self._lock = threading.Lock()
        self._counter = 0

    def _manager(self, sampled: bool):  # -> ContinuousBatchingManager
        if sampled not in self._managers:
            extra = _SAMPLING_PLACEHOLDERS if sampled else {}
            gen = GenerationConfig(
                do_sample=sampled,
                eos_token_id=self._eos,
                pad_token_id=self._pad_id,
                max_new_tokens=16,
                **extra,
            )
            # Size the paged cache like the static path's bound (rows x tokens), never "90% of free memory":
            # on CPU transformers would read that as system RAM, on GPU it would starve everything else.
            cb = ContinuousBatchingConfig(
                max_requests_per_batch=self._max_batch_size,
                num_blocks=math.ceil(self._max_batch_tokens / PAGE_SIZE) + 1,
                page_size=PAGE_SIZE,
                max_batch_tokens=max(PAGE_SIZE, min(8192, self._max_batch_tokens // 4)),
                per_request_processors=sampled,
                seed=self._seed,
            )
            # A manager is cached on the model; we keep our own two, so build without the cache.
            self._model.destroy_cached_continuous_batching_manager()
            manager = self._model.init_continuous_batching(generation_config=gen, continuous_batching_config=cb)
            self._model._cached_continuous_batching_manager = None
            manager.start()
            # Its generation thread is not a daemon: stop it before interpreter shutdown joins threads, or a
            # process that forgot Engine.close() never exits (the hook concurrent.futures uses for its workers).
            threading._register_atexit(functools.partial(_stop_quietly, manager))
            self._managers[sampled] = manager
        return self._managers[sampled]

    def steps(self, seqs: list[Sequence], stream: bool = False) -> Iterator[list[Sequence]]:
        """Submit all sequences, then yield the ones that advanced each time results arrive.

        Token-by-token results are requested only where needed (a stream, or stop strings to watch);
        otherwise each request reports once, when finished, which keeps Python off the hot path.
        """
        with self._lock:
            by_id: dict[str, Sequence] = {}
            owner: dict[str, object] = {}
            for seq in seqs:
                self._counter += 1
                rid = f"phifleet-{self._counter}"
                sampled = not seq.params.greedy
                manager = self._manager(sampled)
                kwargs = (
                    {
                        "temperature": float(seq.params.temperature),
                        "top_p": float(seq.params.top_p),
                        "top_k": int(seq.params.top_k or self._model.config.vocab_size),
                    }
                    if sampled
                    else {}
                )
                manager.add_request(
                    seq.prompt_ids,
                    request_id=rid,
                    max_new_tokens=seq.max_tokens,
                    streaming=stream or bool(seq.params.stop),
                    eos_token_id=self._eos,
                    **kwargs,
                )
                by_id[rid] = seq
                owner[rid] = manager
            managers = list({id(m): m for m in owner.values()}.values())
            pending = set(by_id)
            try:
                while pending:
                    progressed: dict[str, Sequence] = {}
                    for manager in managers:
                        for output in self._drain(manager):
                            if output.request_id in pending:
                                self._apply(output, by_id[output.request_id], manager, pending)
                                progressed[output.request_id] = by_id[output.request_id]
                    if progressed:
                        yield list(progressed.values())
            finally:
                for rid in pending:
                    owner[rid].cancel_request(rid)

    @staticmethod
    def _drain(manager) -> Iterator[object]:
        """Every output ready now (waiting briefly for the first), failing loudly if the manager died."""
        output = manager.get_result(timeout=0.05)
        while output is not None:
            yield output
            output = manager.get_result(timeout=0)
        if manager.background_thread_status.fatal_error is not None:
            raise RuntimeError(f"continuous batching failed: {manager.background_thread_status.fatal_error}")

    @staticmethod
    def _apply(output, seq: Sequence, manager, pending: set[str]) -> None:
        if output.error:
            raise RuntimeError(f"continuous batching request failed: {output.error}")
        for tok in output.generated_tokens[len(seq.token_ids) :]:
            seq.push(int(tok))
        if output.is_finished() and not seq.finished:
            seq.finish_reason = "length"
        if seq.finished:
            pending.discard(output.request_id)
            if not output.is_finished():
                manager.cancel_request(output.request_id)  # a stop string ended it early

    def close(self) -> None:
        for manager in self._managers.values():
            manager.stop(block=True)
        self._managers.clear()


def _stop_quietly(manager) -> None:
    with contextlib.suppress(Exception):
        if manager.is_running():
            manager.stop(block=True, timeout=5)
