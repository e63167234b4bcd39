"""The engine's loop: schedule a step, run it (from a CUDA graph when it is decode-only), sample, advance.

One host copy per step (the sampled token ids) is the only device sync; log-probabilities are fetched only for
the rows that asked for them. Requests join with ``add`` at any time and leave when their ``Sequence`` says it
is finished or cancelled, freeing their KV at the next step.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from phifleet.engine.cuda_graphs import DecodeGraphs
from phifleet.engine.device_sampling import RowParams, SamplingBatch, sample
from phifleet.engine.kv_pool import KVPool, KVShape
from phifleet.engine.logprobs import token_logprob
from phifleet.engine.model_runner import ModelRunner, PrefillChunk, StepBatch, decoder_of
from phifleet.engine.prefix_cache import PrefixCache
from phifleet.engine.scheduler import Running, ScheduledStep, Scheduler
from phifleet.engine.sequence import Sequence
from phifleet.engine.structured_output import mask_logits
from phifleet.engine.tree_scoring import TreeScorer


@dataclass(frozen=True)
class LoopConfig:
    """Sizes of one replica's loop; ``Engine`` fills them from ``EngineConfig`` and the device."""

    kv_tokens: int  # pool capacity in tokens
    max_num_seqs: int  # rows decoding at once
    max_step_tokens: int  # tokens per forward pass (decodes + prefill chunks)
    max_model_len: int
    block_size: int = 16
    cuda_graphs: bool = True
    use_triton: bool | None = None  # None: on CUDA when triton imports
    seed: int = 0  # 0: unseeded requests draw fresh randomness
    prefix_caching: bool = True


def kv_shape_of(model: torch.nn.Module, kv_tokens: int, block_size: int) -> KVShape:
    model = getattr(model, "module", model)
    decoder = decoder_of(model)
    attn = decoder.layers[0].self_attn
    dtype = next(model.parameters()).dtype
    blocks = -(-kv_tokens // block_size) + 1  # + the null block
    return KVShape(len(decoder.layers), attn.num_key_value_heads, attn.head_dim, block_size, blocks, dtype)


class GenerationLoop:
    """Scheduler + model runner + sampler for one model. Single-threaded: one caller drives ``step``."""

    def __init__(self, model: torch.nn.Module, config: LoopConfig, device: torch.device) -> None:
        self.config = config
        self.device = device
        self.pool = KVPool(kv_shape_of(model, config.kv_tokens, config.block_size), device)
        self.runner = ModelRunner(model, self.pool, use_triton=config.use_triton)
        self.prefix_cache = PrefixCache(self.pool) if config.prefix_caching else None
        self.scheduler = Scheduler(
            self.pool,
            config.max_num_seqs,
            config.max_step_tokens,
            config.max_model_len,
            config.seed,
            self.prefix_cache,
        )
        use_graphs = config.cuda_graphs and device.type == "cuda"
        self.graphs = DecodeGraphs(self.runner, config.max_num_seqs) if use_graphs else None
        self.steps_run = 0

    # --- requests --------------------------------------------------------------------------
    def add(self, seq: Sequence) -> Running:
        """Queue a prepared request; it joins the running batch at the next step the pool allows."""
        return self.scheduler.add(seq)

    def has_work(self) -> bool:
        return self.scheduler.has_work()

    def running(self) -> list[Sequence]:
        """The requests holding KV now (the ones a failed step was computing)."""
        return [r.seq for r in self.scheduler.running]

    # --- one step --------------------------------------------------------------------------
    def step(self) -> list[Sequence]:
        """Run one forward pass; returns the sequences that received a token."""
        sched = self.scheduler.schedule()
        if sched.empty:
            self.scheduler.fail_unadmittable()
            self.scheduler.drop_finished()
            return []
        sampled_reqs = [*sched.decodes, *(w.req for w in sched.prefills if w.completes)]
        logits = self._forward(sched)
        rows = [
            RowParams(
                r.seq.params.temperature,
                r.seq.params.top_p,
                r.seq.params.top_k,
                r.seed,
                r.generated,
                r.seq.params.logit_bias,
            )
            for r in sampled_reqs
        ]
        batch = SamplingBatch(rows, self.device, logits.shape[-1])
        for i, exc in batch.failures.items():
            sampled_reqs[i].seq.fail(exc)
        masked = mask_logits(logits, [(i, r.seq) for i, r in enumerate(sampled_reqs)])
        tokens = sample(masked, batch).tolist() if rows else []
        entries = self._logprobs(logits, sampled_reqs, tokens, batch)
        self.scheduler.advance(sched, {id(r): t for r, t in zip(sampled_reqs, tokens, strict=True)})
        for req, token, entry in zip(sampled_reqs, tokens, entries, strict=True):
            req.seq.push(token, entry)
        self.scheduler.drop_finished()
        self.steps_run += 1
        return [r.seq for r in sampled_reqs]

    def _forward(self, sched: ScheduledStep) -> torch.Tensor:
        dev, bs = self.device, self.pool.block_size
        ids: list[int] = []
        pos: list[int] = []
        slots: list[int] = []
        for req in sched.decodes:
            p = len(req.tokens) - 1
            ids.append(req.tokens[-1])
            pos.append(p)
            slots.append(req.blocks[p // bs] * bs + p % bs)
        width = max((len(r.blocks) for r in sched.decodes), default=0)
        tables = torch.tensor([r.blocks + [0] * (width - len(r.blocks)) for r in sched.decodes], dtype=torch.int32)
        tables = tables.view(len(sched.decodes), width)
        lens = torch.tensor(pos, dtype=torch.int32) + 1
        if not sched.prefills and self.graphs is not None and self.graphs.fits(len(ids)):
            return self.graphs.run(
                torch.tensor(ids, device=dev),
                torch.tensor(pos, device=dev),
                torch.tensor(slots, device=dev),
                tables.to(dev),
                lens.to(dev),
            )
        chunks: list[PrefillChunk] = []
        logits_index = list(range(len(sched.decodes)))
        for work in sched.prefills:
            end = work.start + work.length
            ctx = self._slots_of(work.req.blocks, end)
            offset = len(ids)
            ids += work.req.tokens[work.start : end]
            pos += range(work.start, end)
            slots += ctx[work.start :].tolist()
            chunks.append(PrefillChunk(offset, work.length, work.start, ctx.to(dev)))
            if work.completes:
                logits_index.append(offset + work.length - 1)
        batch = StepBatch(
            input_ids=torch.tensor(ids, device=dev),
            positions=torch.tensor(pos, device=dev),
            slots=torch.tensor(slots, device=dev),
            num_decode=len(sched.decodes),
            block_tables=tables.to(dev),
            context_lens=lens.to(dev),
            prefills=chunks,
            logits_index=torch.tensor(logits_index, dtype=torch.long, device=dev),
        )
        return self.runner.forward(batch)

    def _slots_of(self, blocks: list[int], end: int) -> torch.Tensor:
        """Flat slot ids of positions [0, end) of a sequence holding ``blocks``."""
        bs = self.pool.block_size
        base = torch.tensor(blocks, dtype=torch.long).unsqueeze(1) * bs
        return (base + torch.arange(bs)).flatten()[:end]

    def _logprobs(
        self, logits: torch.Tensor, reqs: list[Running], tokens: list[int], batch: SamplingBatch
    ) -> list[object]:
        wanted = [i for i, r in enumerate(reqs) if r.seq.params.logprobs is not None]
        entries: list[object] = [None] * len(reqs)
        if not wanted:
            return entries
        logp = torch.log_softmax(logits[wanted].float(), dim=-1).cpu()
        for row, i in enumerate(wanted):
            seq = reqs[i].seq
            try:
                entries[i] = token_logprob(seq.tokenizer, logp[row], tokens[i], seq.params.logprobs)
            except Exception as exc:  # this request's own failure; the batch goes on
                seq.fail(exc)
        return entries

    @torch.inference_mode()
    def score(self, prompts: list[list[int]], labels: list[list[int]]) -> list[list[float]]:
        """Summed log-probability of each label after each prompt, in one pass per prompt (tree_scoring)."""
        return TreeScorer(self).score(prompts, labels)

    @torch.inference_mode()
    def score_each(self, prompts: list[list[int]], options: list[list[list[int]]]) -> list[list[float]]:
        """``score`` with each prompt's own options, many prompts to a forward pass."""
        return TreeScorer(self).score_each(prompts, options)

    def abort(self, seqs: list[Sequence]) -> None:
        """Take these requests out (their blocks freed), finished or not: a step failed as a whole."""
        doomed = set(map(id, seqs))
        for req in [*self.scheduler.running, *self.scheduler.waiting]:
            if id(req.seq) in doomed:
                req.seq.cancel()
        self.scheduler.drop_finished()

    # --- the old batch-at-once interface ---------------------------------------------------
    def steps(self, seqs: list[Sequence]) -> Iterator[list[Sequence]]:
        """Add ``seqs`` and step until all of them are finished, yielding the advanced ones after each step."""
        for seq in seqs:
            try:
                self.add(seq)
            except ValueError as exc:
                seq.fail(exc)
        mine = set(map(id, seqs))
        try:
            while any(not s.finished for s in seqs):
                advanced = self.step()
                yield [s for s in advanced if id(s) in mine]
        finally:  # an exception, or a caller that stopped early: nothing of this call stays queued
            self.abort([s for s in seqs if not s.finished])
