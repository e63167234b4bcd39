"""Label scoring in one pass over the paged pool: the prompt, then every label as a branch under a tree mask.

For labels ``[a1 a2] [b1] [c1 c2 c3]`` the pass feeds ``prompt + a1 + c1 c2`` (each label but its last token):
label tokens sit at the positions they would have right after the prompt, and attend to the prompt and to their
own earlier tokens only. Log-probabilities are read at the last prompt token (every label's first token) and at
each branch token (the next token of that label). The prompt's leading blocks come from the prefix cache when
another prompt already computed them (a shared instruction), and its own full blocks are cached for the next.
No KV is copied per label, and nothing is decoded.

Prompts run many to a pass (up to ``max_step_tokens``), each against the same labels (``score``) or its own
(``score_each``: extract scores every row's fields, each value tokenized with the text around it, in one call).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from phifleet.engine.kv_pool import OutOfBlocks
from phifleet.engine.model_runner import PrefillChunk, StepBatch
from phifleet.engine.prefix_cache import ROOT, block_names


@dataclass
class _Branches:
    """One prompt's labels as the pass feeds them: every label's tokens but its last, and which label each is."""

    labels: list[list[int]]
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
        return cls(labels, inputs, owner, offsets)

    def picks(self) -> tuple[list[int], list[int], list[int]]:
        """(logits row, token, label) of every label token. Row 0 is the prompt's last token (it predicts each
        label's first token), row 1 + j branch input j (it predicts the next token of its label)."""
        rows: list[int] = []
        tokens: list[int] = []
        owner: list[int] = []
        for li, label in enumerate(self.labels):
            first = 1 + self.offsets[li]
            rows += [0, *range(first, first + len(label) - 1)]
            tokens += label
            owner += [li] * len(label)
        return rows, tokens, owner


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
        return self._score(prompts, [_Branches.of(labels)] * len(prompts))

    def score_each(self, prompts: list[list[int]], labels: list[list[list[int]]]) -> list[list[float]]:
        """Each prompt against its own labels (``labels[i]`` after ``prompts[i]``), still many prompts per pass:
        [prompts][that prompt's labels]."""
        if len(labels) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(labels)} label lists")
        return self._score(prompts, [_Branches.of(each) for each in labels])

    @torch.inference_mode()
    def _score(self, prompts: list[list[int]], branches: list[_Branches]) -> list[list[float]]:
        results: list[list[float]] = [[] for _ in prompts]
        group: list[tuple[int, list[int], int]] = []  # (prompt index, blocks, computed)
        group_tokens = 0
        try:
            for i, prompt in enumerate(prompts):
                nb = len(branches[i].inputs)
                blocks, computed = self._admit(prompt, nb, bool(group))
                if blocks is None:  # no room beside the group: run it, then this prompt alone
                    self._run(group, prompts, branches, results)
                    group, group_tokens = [], 0
                    blocks, computed = self._admit(prompt, nb, False)
                try:
                    computed = self._prefill_alone(prompt, blocks, computed, nb)
                except BaseException:
                    self.pool.release(blocks)
                    raise
                cost = len(prompt) - computed + nb
                if group and group_tokens + cost > self.budget:
                    try:
                        self._run(group, prompts, branches, results)
                    except BaseException:
                        self.pool.release(blocks)  # not in the group yet: the finally below would miss them
                        raise
                    group, group_tokens = [], 0
                group.append((i, blocks, computed))
                group_tokens += cost
                if i == 0 and self.cache is not None and computed < (len(prompt) - 1) // self.bs * self.bs:
                    # A cold cache: the first prompt runs alone, so the prompts after it find the leading blocks
                    # they share with it (a common instruction) already computed.
                    self._run(group, prompts, branches, results)
                    group, group_tokens = [], 0
            self._run(group, prompts, branches, results)
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
        # Alone, it takes what it needs: cached blocks first, then generations' (preempted: they resume later,
        # and the prompt blocks they leave cached are evicted before the next one is preempted). Beside a group it
        # waits for the group to run unless the cache alone makes room.
        self._evict(need, exact=others_waiting)
        if need > self.pool.free_blocks and others_waiting:
            self.pool.release(shared)
            return None, 0
        scheduler = self.loop.scheduler
        while need > self.pool.free_blocks and scheduler.running:
            scheduler.preempt(max(scheduler.running, key=lambda r: r.order))
            self._evict(need, exact=False)
        if need > self.pool.free_blocks:
            self.pool.release(shared)
            raise OutOfBlocks(
                f"a {len(prompt)}-token prompt and its labels need {need} free KV blocks; {self.pool.free_blocks} are"
            )
        return shared + self.pool.allocate(need), len(shared) * self.bs

    def _evict(self, need: int, exact: bool) -> None:
        short = need - self.pool.free_blocks
        if short > 0 and self.cache is not None:
            self.cache.evict(short, exact=exact)

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

    def _run(self, group, prompts, branches: list[_Branches], results) -> None:
        if not group:
            return
        dev = self.loop.device
        ids: list[int] = []
        pos: list[int] = []
        slots: list[torch.Tensor] = []
        chunks: list[PrefillChunk] = []
        rows: list[int] = []  # flat token index of each logits row
        picks: tuple[list[int], list[int], list[int]] = ([], [], [])  # (logits row, token, label) over the group
        spans: list[tuple[int, int]] = []  # each prompt's labels within the group's flat list of labels
        for i, blocks, computed in group:
            prompt, br = prompts[i], branches[i]
            p, nb = len(prompt), len(br.inputs)
            ctx = self.loop._slots_of(blocks, p + nb)
            offset = len(ids)
            ids += prompt[computed:] + br.inputs
            pos += list(range(computed, p))
            pos += [p + j - br.offsets[o] for j, o in enumerate(br.owner)]
            slots.append(ctx[computed:])
            chunks.append(PrefillChunk(offset, p - computed + nb, computed, ctx.to(dev), self._mask(p, computed, br)))
            row, token, label = br.picks()
            first = spans[-1][1] if spans else 0
            picks[0].extend(len(rows) + r for r in row)
            picks[1].extend(token)
            picks[2].extend(first + li for li in label)
            spans.append((first, first + len(br.labels)))
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
        r, t, lab = (torch.tensor(x, dtype=torch.long, device=dev) for x in picks)
        sums = torch.zeros(spans[-1][1], device=dev).index_add_(0, lab, logp[r, t]).tolist()
        for (i, _, _), (a, b) in zip(group, spans, strict=True):
            results[i] = sums[a:b]
        while group:  # each prompt's blocks released exactly once, even if caching one of them raises
            i, blocks, _ = group.pop()
            try:
                self._cache_prompt(prompts[i], blocks)
            finally:
                self.pool.release(blocks)

    def _mask(self, p: int, computed: int, branches: _Branches) -> torch.Tensor:
        """[queries, keys]: prompt rows causal; a branch row sees the prompt and its own label's earlier tokens."""
        owner = torch.tensor(branches.owner, dtype=torch.long)
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
