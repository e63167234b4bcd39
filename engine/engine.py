"""One Phi-4 replica: the object jobs and serve hold, one per actor or deployment replica."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence

import torch
from transformers import PreTrainedTokenizerBase

from phifleet.engine import deepspeed_prep
from phifleet.engine.chat_template import ENDOFTEXT, IM_END
from phifleet.engine.config import EngineConfig
from phifleet.engine.cuda_graphs import kept_bytes
from phifleet.engine.errors import InvalidRequestError
from phifleet.engine.generation_loop import GenerationLoop, LoopConfig, kv_shape_of
from phifleet.engine.loading import (
    ResolvedModel,
    check_dtype,
    configure_tokenizer,
    context_window,
    load_model,
    resolve_model,
)
from phifleet.engine.scoring import label_logprobs
from phifleet.engine.sequence import Sequence as Seq
from phifleet.engine.static_batching import decode_steps, length_buckets
from phifleet.engine.structured_output import GrammarCompiler
from phifleet.engine.types import GenerationRequest, GenerationResult, LabelScores, Prompt, StreamDelta
from phifleet.engine.validation import RequestValidator


class Engine:
    """Tokenizer + DeepSpeed-prepared model + a batcher. Not thread-safe: one caller at a time."""

    def __init__(self, config: EngineConfig | None = None) -> None:
        config = config or EngineConfig()
        resolved = resolve_model(config)
        self._setup(config, resolved.tokenizer(), load_model(resolved.path, config), resolved)

    @classmethod
    def from_model(
        cls, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, config: EngineConfig | None = None
    ) -> Engine:
        """An engine over a model already in memory: real Phi-4 shapes with random weights in benchmarks."""
        config = config or EngineConfig()
        check_dtype(config.resolved_dtype(), config.resolved_device())
        engine = cls.__new__(cls)
        engine._setup(config, configure_tokenizer(tokenizer), model.eval(), None)
        return engine

    def _setup(
        self,
        config: EngineConfig,
        tokenizer: PreTrainedTokenizerBase,
        model: torch.nn.Module,
        resolved: ResolvedModel | None,
    ) -> None:
        self.config = config
        self.model_dir = resolved.path if resolved else None
        self.tokenizer = tokenizer
        self.model = deepspeed_prep.prepare(model, config)
        self.hf_model = deepspeed_prep.unwrap(self.model)
        self.device = torch.device(config.resolved_device())
        if resolved:
            self.model_name, self.max_model_len = resolved.served_name, resolved.context_window
        else:  # from_model: nothing on disk to name it by
            in_memory_name = getattr(self.hf_model.config, "name_or_path", "") or "model"
            self.model_name = config.served_model_name or in_memory_name
            self.max_model_len = context_window(self.hf_model.config, config)
        self.validator = RequestValidator(tokenizer, self.max_model_len)
        self.pad_id = int(tokenizer.pad_token_id)
        self.eos_ids = frozenset(
            i for i in (self._token_id(IM_END), self._token_id(ENDOFTEXT), tokenizer.eos_token_id) if i is not None
        )
        self.batching = config.resolved_batching()
        self.max_batch_size = config.resolved_max_batch_size()
        self.max_batch_tokens = config.resolved_max_batch_tokens()
        self._loop: GenerationLoop | None = None
        self._grammars: GrammarCompiler | None = None
        self._grammar_lock = threading.Lock()

    def _token_id(self, token: str) -> int | None:
        return self.tokenizer.get_vocab().get(token)

    # --- text ------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    # --- validation ------------------------------------------------------------------------
    def prepare(self, request: GenerationRequest) -> Seq:
        """Validate and tokenize one request; raises InvalidRequestError naming the bad field.

        Thread-safe (the validator tokenizes with its own tokenizer): a server prepares requests on another
        thread, so a long prompt never stalls the engine's decoding loop.
        """
        ids = self.validator.generation(request, check_grammar=False)  # the grammar is compiled below, once
        eos = frozenset() if request.params.ignore_eos else self.eos_ids
        budget = self.validator.completion_budget(request, len(ids))
        seq = Seq(ids, request.params, self.tokenizer, eos, request.request_id, max_tokens=budget)
        if request.params.response_format is not None:
            if self.batching != "continuous":
                raise InvalidRequestError(
                    "response_format needs the continuous engine (engine.batching: continuous or auto)",
                    param="response_format",
                )
            seq.grammar = self.grammars().matcher(request.params.response_format)
        return seq

    def grammars(self) -> GrammarCompiler:
        """The response_format compiler for this tokenizer, built on first use (thread-safe)."""
        with self._grammar_lock:
            if self._grammars is None:
                vocab = int(self.hf_model.config.vocab_size)  # the logits' width, whatever wraps the lm_head
                # the validator's own tokenizer copy, under its lock: the loop thread may be decoding with ours
                with self.validator.lock:
                    self._grammars = GrammarCompiler(self.validator.tokenizer, vocab, self.eos_ids)
            return self._grammars

    def _prepare_each(self, items: Sequence[GenerationRequest | Seq]) -> list[Seq | Exception]:
        """Each request prepared, or the exception it raised: one bad request fails alone."""
        out: list[Seq | Exception] = []
        for item in items:
            try:
                out.append(item if isinstance(item, Seq) else self.prepare(item))
            except Exception as exc:
                out.append(exc)
        return out

    # --- generation ------------------------------------------------------------------------
    def _steps(self, seqs: list[Seq]) -> Iterator[list[Seq]]:
        """Yield the sequences that advanced, step by step, until all are finished."""
        if self.batching == "continuous":
            yield from self.loop().steps(seqs)
            return
        for batch in length_buckets(seqs, self.max_batch_size, self.max_batch_tokens):
            yield from decode_steps(self.model, batch, self.pad_id, self.device)

    def loop(self) -> GenerationLoop:
        """The continuous-batching loop, built on first use (its KV pool is sized then)."""
        if self._loop is None:
            self._loop = GenerationLoop(self.hf_model, self._loop_config(), self.device)
        return self._loop

    def _loop_config(self) -> LoopConfig:
        cfg = self.config
        kv_tokens = cfg.kv_cache_tokens
        if kv_tokens is None:
            kv_tokens = self._kv_tokens_that_fit() if self.device.type == "cuda" else self.max_batch_tokens
        return LoopConfig(
            kv_tokens=kv_tokens,
            max_num_seqs=self.max_batch_size,
            max_step_tokens=cfg.resolved_max_step_tokens(),
            max_model_len=self.max_model_len,
            block_size=cfg.kv_block_size,
            cuda_graphs=cfg.cuda_graphs,
            prefix_caching=cfg.prefix_caching,
            use_triton={"auto": None, "triton": True, "torch": False}[cfg.attention_kernel],
            seed=cfg.seed,
        )

    def _kv_tokens_that_fit(self) -> int:
        """What gpu_memory_utilization leaves after the weights, one step's activations, the captured decode graphs'
        logits and 1 GiB of slack."""
        free, total = torch.cuda.mem_get_info(self.device)
        hf = self.hf_model.config
        itemsize = torch.empty((), dtype=self.config.resolved_dtype()).element_size()
        step = self.config.resolved_max_step_tokens()
        activations = step * (4 * hf.intermediate_size + 6 * hf.hidden_size) * itemsize + 2**30
        if self.config.cuda_graphs:
            max_blocks = -(-self.max_model_len // self.config.kv_block_size)
            activations += kept_bytes(self.max_batch_size, max_blocks, hf.vocab_size, itemsize)
        budget = int(total * self.config.gpu_memory_utilization) - (total - free) - activations
        per_token = kv_shape_of(self.hf_model, 1, 1).bytes_per_block()
        return max(budget // per_token, self.max_model_len)

    def generate_each(self, requests: Sequence[GenerationRequest | Seq]) -> list[GenerationResult | Exception]:
        """Generate for many requests at once: each gets its result, or the exception that failed it alone.

        Requests may come already prepared (``prepare``). An exception that breaks the batch as a whole (the
        forward pass itself) propagates: the caller decides whether to retry the requests apart.
        """
        prepared = self._prepare_each(requests)
        seqs = [p for p in prepared if isinstance(p, Seq)]
        for _ in self._steps(seqs):
            pass
        out: list[GenerationResult | Exception] = []
        for p in prepared:
            if isinstance(p, Exception):
                out.append(p)
            else:
                out.append(p.error if p.error is not None else p.result())
        return out

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Generate for many requests at once; results come back in request order. Raises the first failure."""
        results = self.generate_each(requests)
        for r in results:
            if isinstance(r, Exception):
                raise r
        return results  # type: ignore[return-value]

    def stream(self, request: GenerationRequest) -> Iterator[StreamDelta]:
        """Text deltas as tokens are produced; the last delta carries finish reason and usage.

        Closing the iterator early (a client that went away) stops the generation.
        """
        for _, item in self.stream_batch([request]):
            if isinstance(item, Exception):
                raise item
            yield item

    def stream_batch(
        self, requests: Sequence[GenerationRequest | Seq], cancelled: Callable[[int], bool] = lambda i: False
    ) -> Iterator[tuple[int, StreamDelta | Exception]]:
        """Stream many requests as one batch: (request index, delta) as tokens are produced.

        A request that fails (validation, sampling, detokenizing) yields (index, its exception) once and the
        others still run; once ``cancelled(index)`` is true, that request is dropped at its next step.
        """
        seqs: dict[int, Seq] = {}
        for i, p in enumerate(self._prepare_each(requests)):
            if isinstance(p, Exception):
                yield i, p
            else:
                seqs[i] = p
        index = {id(s): i for i, s in seqs.items()}
        for advanced in self._steps(list(seqs.values())):
            for seq in advanced:
                i = index[id(seq)]
                if seq.cancelled:
                    continue
                if seq.error is not None:
                    seq.cancel()  # reported once; nothing more comes from it
                    yield i, seq.error
                    continue
                if cancelled(i):
                    seq.cancel()
                    continue
                delta = seq.stream_delta()
                if delta is not None:
                    yield i, delta

    # --- label scoring ---------------------------------------------------------------------
    def label_token_ids(self, labels: Sequence[str]) -> list[list[int]]:
        return self.validator.label_ids(labels)

    def score_labels(self, prompts: Sequence[str | Prompt], labels: Sequence[str]) -> list[LabelScores]:
        """Classify each prompt (already rendered, ending in the assistant turn) into one of ``labels``."""
        label_ids = self.validator.label_ids(labels)
        prompt_ids = [
            self.validator.label_prompt_ids(p, label_ids, param=f"prompts[{i}]") for i, p in enumerate(prompts)
        ]
        sums: dict[int, list[float]] = {}
        if self.batching == "continuous":  # one pass per prompt, shared prefixes computed once
            sums = dict(enumerate(self.loop().score(prompt_ids, label_ids)))
        else:
            order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))
            step = self.max_batch_size
            for start in range(0, len(order), step):
                chunk = order[start : start + step]
                scores = label_logprobs(self.model, [prompt_ids[i] for i in chunk], label_ids, self.pad_id, self.device)
                for i, row in zip(chunk, scores.tolist(), strict=True):
                    sums[i] = row
        results = []
        for i in range(len(prompt_ids)):
            lp = dict(zip(labels, sums[i], strict=True))
            norm = {label: lp[label] / len(ids) for label, ids in zip(labels, label_ids, strict=True)}
            results.append(LabelScores(max(lp, key=lp.__getitem__), lp, norm, len(prompt_ids[i])))
        return results

    def score_continuations(self, prompt_ids: list[int], options: Sequence[Sequence[int]]) -> list[float]:
        """Summed log-probability of each token sequence in ``options`` right after ``prompt_ids`` (any prompt:
        an assistant turn already begun, e.g. a JSON object up to one field's value). Continuous engine only."""
        self._require_continuous()
        self._check_continuation(prompt_ids, options, "")
        return self.loop().score([list(prompt_ids)], [list(o) for o in options])[0]

    def score_continuations_each(
        self, items: Sequence[tuple[Sequence[int], Sequence[Sequence[int]]]]
    ) -> list[list[float] | InvalidRequestError]:
        """``score_continuations`` for many (prompt, options) pairs in one call, each prompt with its own options:
        the prompts run many to a forward pass (up to ``max_step_tokens``) instead of one pass each.

        An item that fails validation gets its InvalidRequestError in its place and the others are still scored;
        an exception of the pass itself (the device, a prompt the KV pool cannot hold) propagates: the caller
        decides whether to retry the items apart.
        """
        self._require_continuous()
        out: list[list[float] | InvalidRequestError] = []
        valid: list[int] = []
        for i, (prompt_ids, options) in enumerate(items):
            try:
                self._check_continuation(prompt_ids, options, f"items[{i}].")
            except InvalidRequestError as exc:
                out.append(exc)
                continue
            out.append([])
            valid.append(i)
        if valid:
            prompts = [list(items[i][0]) for i in valid]
            scores = self.loop().score_each(prompts, [[list(o) for o in items[i][1]] for i in valid])
            for i, row in zip(valid, scores, strict=True):
                out[i] = row
        return out

    def _require_continuous(self) -> None:
        if self.batching != "continuous":
            raise InvalidRequestError("scoring continuations needs the continuous engine", param="engine.batching")

    def _check_continuation(self, prompt_ids: Sequence[int], options: Sequence[Sequence[int]], at: str) -> None:
        """One (prompt, options) pair fits a scoring pass; ``at`` prefixes the parameter the error names."""
        if not prompt_ids:
            raise InvalidRequestError("the prompt needs at least one token", param=f"{at}prompt")
        if not options:
            raise InvalidRequestError("at least one option is needed", param=f"{at}options")
        if any(not o for o in options):
            raise InvalidRequestError("every option needs at least one token", param=f"{at}options")
        longest = max(len(o) for o in options)
        if len(prompt_ids) + longest > self.max_model_len:
            raise InvalidRequestError(
                f"the prompt ({len(prompt_ids)} tokens) and its longest option ({longest}) exceed the context window "
                f"of {self.max_model_len} tokens",
                param=f"{at}prompt",
            )

    def close(self) -> None:
        """Free the KV pool (and captured graphs); a later call builds them again."""
        self._loop = None
