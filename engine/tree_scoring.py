"""Label scoring in one pass over the paged pool: the prompt, then every label as a branch under a tree mask.

For labels ``[a1 a2] [b1] [c1 c2 c3]`` the pass feeds ``prompt + a1 + c1 c2`` (each label but its last token):
label tokens sit at the positions they would have right after the prompt, and attend to the prompt and to their
own earlier tokens only. Log-probabilities are read at the last prompt token (every label's first token) and at
each branch token (the next token of that label). The prompt's leading blocks come from the prefix cache when
another prompt already computed them (a shared instruction), and its own full blocks are cached for the next.
No KV is copied per label, and nothing is decoded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from phifleet.engine.kv_pool import OutOfBlocks
from phifleet.engine.model_runner import PrefillChunk, StepBatch
from phifleet.engine.prefix_cache import ROOT, block_names


@dataclass
class _Branches:
    """The label tokens fed as inputs, which label each belongs to, and what each row predicts."""

    inputs: list[int]  # every label's tokens but its last
    owner: list[int]  # label index of each input
    offsets: list[int]  # where each label's inputs start within ``inputs``

    @classmethod
    def of(cls, labels: list[list[int]]) -> _Branches:
        inputs: list[int] = []
        owner: list[int] = []
        offsets: list[int] = []
        for i, label in enumerate(labels):
            offsets.append(len(inputs))
            inputs += label[:-1]
            owner += [i] * (len(label) - 1)
        return cls(inputs, owner, offsets)


class TreeScorer:
    """Scores prompts against labels on a ``GenerationLoop``'s pool, runner and prefix cache (not its scheduler)."""

    def __init__(self, loop) -> None:  # a GenerationLoop (not imported: it imports this module)
        self.loop = loop
        self.pool = loop.pool
        self.cache = loop.prefix_cache
        self.bs = self.pool.block_size
        self.budget = loop.config.max_step_tokens

    def score(self, prompts: list[list[int]], labels: list[list[int]]) -> list[list[float]]:
        """Summed log-probability of each label's tokens after each prompt: [prompts][labels]."""
        branches = _Branches.of(labels)
        results: list[list[float]] = [[] for _ in prompts]
        group: list[tuple[int, list[int], int]] = []  # (prompt index, blocks, computed)
        group_tokens = 0
        try:
            for i, prompt in enumerate(prompts):
                blocks, computed = self._admit(prompt, len(branches.inputs), bool(group))
                if blocks is None:  # no room beside the group: run it, then this prompt alone
                    self._run(group, prompts, labels, branches, results)
                    group, group_tokens = [], 0
                    blocks, computed = self._admit(prompt, len(branches.inputs), False)
                try:
                    computed = self._prefill_alone(prompt, blocks, computed, len(branches.inputs))
                except BaseException:
                    self.pool.release(blocks)
                    raise
                cost = len(prompt) - computed + len(branches.inputs)
                if group and group_tokens + cost > self.budget:
                    try:
                        self._run(group, prompts, labels, branches, results)
                    except BaseException:
                        self.pool.release(blocks)  # not in the group yet: the finally below would miss them
                        raise
                    group, group_tokens = [], 0
                group.append((i, blocks, computed))
                group_tokens += cost
                if i == 0 and self.cache is not None and computed < (len(prompt) - 1) // self.bs * self.bs:
                    # A cold cache: the first prompt runs alone, so the prompts after it find the leading blocks
                    # they share with it (a common instruction) already computed.
                    self._run(group, prompts, labels, branches, results)
                    group, group_tokens = [], 0
            self._run(group, prompts, labels, branches, results)
        finally:
            for _, blocks, _ in group:
                self.pool.release(blocks)
        return results

    def _admit(self, prompt: list[int], branch_len: int, others_waiting: bool) -> tuple[list[int] | None, int]:
        """Blocks for the prompt and its branches (cached leading blocks shared), or None if the pool is full."""
        shared: list[int] = []
        if self.cache is not None:
            shared, _ = self.cache.match(prompt, len(prompt) - 1)
        need = self.pool.blocks_for(len(prompt) + branch_len) - len(shared)
        short = need - self.pool.free_blocks
        if short > 0 and self.cache is not None:
            self.cache.evict(short)
        if need > self.pool.free_blocks and others_waiting:
            self.pool.release(shared)
            return None, 0
        scheduler = self.loop.scheduler
        while need > self.pool.free_blocks and scheduler.running:  # generations in flight make room; they resume
            scheduler.preempt(max(scheduler.running, key=lambda r: r.order))
        if need > self.pool.free_blocks:
            self.pool.release(shared)
            raise OutOfBlocks(
                f"a {len(prompt)}-token prompt and its labels need {need} free KV blocks; {self.pool.free_blocks} are"
            )
        return shared + self.pool.allocate(need), len(shared) * self.bs

    def _prefill_alone(self, prompt: list[int], blocks: list[int], computed: int, branch_len: int) -> int:
        """Prompt chunks that would not fit one step beside the branches, computed ahead (no logits)."""
        while len(prompt) - computed + branch_len > self.budget and len(prompt) - computed > 1:
            n = min(self.budget, len(prompt) - computed - 1)
            dev = self.loop.device
            ctx = self.loop._slots_of(blocks, computed + n).to(dev)
            batch = StepBatch(
                input_ids=torch.tensor(prompt[computed : computed + n], device=dev),
                positions=torch.arange(computed, computed + n, device=dev),
                slots=ctx[computed:],
                num_decode=0,
                block_tables=torch.zeros((0, 1), dtype=torch.int32, device=dev),
                context_lens=torch.zeros(0, dtype=torch.int32, device=dev),
                prefills=[PrefillChunk(0, n, computed, ctx)],
                logits_index=torch.zeros(0, dtype=torch.long, device=dev),
            )
            self.loop.runner.forward(batch)
            computed += n
        return computed

    def _run(self, group, prompts, labels, branches: _Branches, results) -> None:
        if not group:
            return
        dev = self.loop.device
        ids: list[int] = []
        pos: list[int] = []
        slots: list[torch.Tensor] = []
        chunks: list[PrefillChunk] = []
        rows: list[int] = []  # flat token index of each logits row
        nb = len(branches.inputs)
        owner = torch.tensor(branches.owner, dtype=torch.long)
        for i, blocks, computed in group:
            prompt = prompts[i]
            p = len(prompt)
            ctx = self.loop._slots_of(blocks, p + nb)
            offset = len(ids)
            ids += prompt[computed:] + branches.inputs
            pos += list(range(computed, p))
            pos += [p + j - branches.offsets[o] for j, o in enumerate(branches.owner)]
            slots.append(ctx[computed:])
            chunks.append(
                PrefillChunk(offset, p - computed + nb, computed, ctx.to(dev), self._mask(p, computed, owner))
            )
            rows.append(offset + p - 1 - computed)
            rows += range(offset + p - computed, offset + p - computed + nb)
        batch = StepBatch(
            input_ids=torch.tensor(ids, device=dev),
            positions=torch.tensor(pos, device=dev),
            slots=torch.cat(slots).to(dev),
            num_decode=0,
            block_tables=torch.zeros((0, 1), dtype=torch.int32, device=dev),
            context_lens=torch.zeros(0, dtype=torch.int32, device=dev),
            prefills=chunks,
            logits_index=torch.tensor(rows, dtype=torch.long, device=dev),
        )
        logp = torch.log_softmax(self.loop.runner.forward(batch).float(), dim=-1)
        # Row r of a prompt: 0 is its last prompt token, 1 + j its j-th branch input.
        per_prompt = 1 + nb
        pick_rows: list[int] = []
        pick_tokens: list[int] = []
        pick_label: list[int] = []
        for li, label in enumerate(labels):
            pick_rows.append(0)
            pick_tokens.append(label[0])
            pick_label.append(li)
            for j in range(1, len(label)):
                pick_rows.append(1 + branches.offsets[li] + j - 1)
                pick_tokens.append(label[j])
                pick_label.append(li)
        r = torch.tensor(pick_rows, device=dev)
        t = torch.tensor(pick_tokens, device=dev)
        lab = torch.tensor(pick_label, device=dev)
        grid = logp.view(len(group), per_prompt, -1)[:, r, t]  # [prompts, picks]
        sums = torch.zeros(len(group), len(labels), device=dev).index_add_(1, lab, grid)
        for (i, _, _), row in zip(group, sums.tolist(), strict=True):
            results[i] = row
        while group:  # each prompt's blocks released exactly once, even if caching one of them raises
            i, blocks, _ = group.pop()
            try:
                self._cache_prompt(prompts[i], blocks)
            finally:
                self.pool.release(blocks)

    def _mask(self, p: int, computed: int, owner: torch.Tensor) -> torch.Tensor:
        """[queries, keys]: prompt rows causal; a branch row sees the prompt and its own label's earlier tokens."""
        nb = owner.shape[0]
        store = torch.cat([torch.arange(computed, p), p + torch.arange(nb)])
        keys = torch.arange(p + nb)
        key_owner = torch.cat([torch.full((p,), -1), owner])
        row_owner = torch.cat([torch.full((p - computed,), -1), owner])
        causal = keys.unsqueeze(0) <= store.unsqueeze(1)
        same = (key_owner.unsqueeze(0) < 0) | (key_owner.unsqueeze(0) == row_owner.unsqueeze(1))
        return (causal & same).to(self.loop.device)

    def _cache_prompt(self, prompt: list[int], blocks: list[int]) -> None:
        if self.cache is None:
            return
        full = len(prompt) // self.bs
        self.cache.insert(block_names(prompt, self.bs, full, parent=ROOT), blocks[:full])
