"""Probe DeepSpeed FastGen (``deepspeed.inference.v2``) at Phi-4's exact layer shapes on one GPU.

FastGen is DeepSpeed's ragged-batching engine (blocked KV cache, continuous batching kernels), a different code
path from the ``deepspeed.init_inference`` wrapper that phifleet's engine uses. DeepSpeed 0.19.8 ships a ``phi3``
implementation for it, but FastGen only builds from a checkpoint directory (``build_hf_engine``) and JIT-compiles
its ragged CUDA ops on first use, so this probe answers, stage by stage, whether it builds at all on the lent
machine's torch/CUDA, how long that takes, and how fast it decodes:

- ``import``: torch, transformers, deepspeed and FastGen, plus what the JIT build needs (nvcc, ninja, the
  prebuilt ``dskernels`` flash-attention library from the deepspeed-kernels wheel);
- ``write_checkpoint``: a Phi3ForCausalLM with Phi-4's config and random bf16 weights, saved as safetensors;
- ``build_engine``: the three op libraries FastGen JIT-compiles (built side by side in child processes started
  right after the imports, so they overlap the checkpoint write; each timed, compiler output kept on failure),
  then ``build_hf_engine`` itself (weights loaded, KV cache allocated);
- ``prefill``: a warm-up, then a 128-token prompt for one sequence and for a batch of 32;
- ``decode``: 32 greedy steps of one token per sequence (after 2 untimed ones), single stream and batch 32.

Only ``--layers N`` (default 4) of Phi-4's 40 layers are written: the full model is 29 GB to write to disk and
load again, which does not fit the ~150 s its caller gives it; every layer has Phi-4's exact shapes, so kernel
behaviour per layer is the real one. Decode time is split with CUDA events into the N-layer stack and the rest
(embedding, unembedding over the 100352-token vocabulary, host-side batch bookkeeping); the ``extrapolated_40_layers``
fields scale only the layer stack by 40/N. They are estimates, not measurements.

Two DeepSpeed 0.19.8 problems seen on the H200 (torch 2.11+cu130) are worked around, each recorded in the JSON:
an unset ``TORCH_CUDA_ARCH_LIST`` is set to the device's "major.minor" before DeepSpeed is imported (unset, the JIT
build died parsing a "9.0a" arch entry; ``env.torch_cuda_arch_list*``), and ``InferenceEngineV2.can_schedule``,
which fails every ``put()`` with a TypeError on single-KV-group models, is replaced by a corrected copy only when a
dry run shows that failure (``patches``, ``stages.build_engine.can_schedule_patch``).

The JSON result is rewritten to ``--out`` after every stage, so a run killed by its caller's timeout still says how
far it got (a stage left ``running`` is the one it was in). The exit code is 0 whatever stage failed: the failure is
the result. ``--tiny`` writes a toy-width checkpoint on CPU, where the build must fail cleanly (FastGen is CUDA-only).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # shapes.py beside this file
from shapes import PHI4, TINY

TARGET_LAYERS = PHI4["num_hidden_layers"]
# Phi-4's special-token ids (endoftext, im_end, pad): kept so the config matches the real one.
SPECIAL = dict(bos_token_id=100257, eos_token_id=100265, pad_token_id=100349)
PROMPT_VOCAB = 100000  # random prompt ids stay below the special tokens
DECODE_WARMUP = 2  # untimed decode steps before each measured run
# As the caller set it, read before torch (or anything else this probe imports) can touch the environment.
ARCH_LIST_GIVEN = os.environ.get("TORCH_CUDA_ARCH_LIST")


class Probe:
    """The result record, rewritten to disk after every change that matters."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.started = time.perf_counter()
        self.current: str | None = None
        self.record: dict[str, Any] = {
            "probe": "deepspeed fastgen (inference v2) at phi-4 layer shapes",
            "status": "running",
            "argv": sys.argv[1:],
            "env": {},
            "stages": {},
            "results": {},  # flat name -> number, for a caller that tabulates them (bench/gpu/phi4_gpu.py)
        }

    def log(self, msg: str) -> None:
        print(f"[fastgen_probe +{time.perf_counter() - self.started:.1f}s] {msg}", flush=True)

    def save(self) -> None:
        """Atomic rewrite: a reader (or a kill mid-write) never sees half a file."""
        self.record["elapsed_s"] = round(time.perf_counter() - self.started, 3)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out.with_name(self.out.name + ".tmp")
        tmp.write_text(json.dumps(self.record, indent=1, default=str))
        os.replace(tmp, self.out)

    def results(self, prefix: str, values: dict[str, Any]) -> None:
        """Copy the numbers of a measurement into the flat results, named ``<prefix>_<key>``."""
        for key, value in values.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                self.record["results"][f"{prefix}_{key}"] = value
        self.save()

    def ok(self, name: str) -> bool:
        return self.record["stages"].get(name, {}).get("status") == "ok"

    @contextlib.contextmanager
    def stage(self, name: str, needs: tuple[str, ...] = ()) -> Iterator[dict[str, Any] | None]:
        """Time one stage and record its exception instead of raising: the next stages decide if they can run.

        Yields the stage's record to fill in, or None when a stage it needs did not succeed (then it is skipped).
        """
        missing = [n for n in needs if not self.ok(n)]
        if missing:
            self.record["stages"][name] = {"status": "skipped", "reason": f"needs {', '.join(missing)}"}
            self.save()
            self.log(f"stage {name}: skipped (needs {', '.join(missing)})")
            yield None
            return
        rec: dict[str, Any] = {"status": "running"}
        self.record["stages"][name] = rec
        self.current = name
        self.save()
        self.log(f"stage {name}: start")
        t0 = time.perf_counter()
        try:
            yield rec
            rec["status"] = "ok"
        except Exception as exc:  # the failure is the result; later stages see it through ok()
            rec["status"] = "failed"
            rec["error"] = error_record(exc)
            self.log(f"stage {name}: FAILED {type(exc).__name__}: {str(exc)[:500]}")
            traceback.print_exc()
        finally:
            rec["seconds"] = round(time.perf_counter() - t0, 3)
            self.current = None
            self.save()
            self.log(f"stage {name}: {rec['status']} in {rec['seconds']:.1f}s")

    def on_sigterm(self, signum: int, _frame: object) -> None:
        """A caller's polite kill (e.g. `timeout`) still leaves a record naming the stage it interrupted."""
        if self.current:
            self.record["stages"][self.current]["status"] = "terminated"
        self.record["status"] = f"terminated by signal {signum}"
        self.save()
        os._exit(128 + signum)


def error_record(exc: BaseException) -> dict[str, Any]:
    """Type, message and traceback tail; a failed JIT build carries the compiler's output in its message."""
    msg = str(exc)
    if len(msg) > 6000:
        msg = msg[:1500] + "\n[...]\n" + msg[-4500:]
    tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
    return {"type": f"{type(exc).__module__}.{type(exc).__qualname__}", "message": msg, "traceback_tail": tb[-6:]}


def tool_version(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable: {exc}"
    lines = (out.stdout or out.stderr).strip().splitlines()
    return lines[-1] if lines else None


def stage_import(probe: Probe, rec: dict[str, Any]) -> None:
    """Import everything FastGen needs and record what the JIT build will find (or not)."""
    t0 = time.perf_counter()
    import torch

    rec["torch_s"] = round(time.perf_counter() - t0, 2)
    arch = set_cuda_arch_list(torch)  # before deepspeed is imported and before the JIT children inherit os.environ
    import deepspeed
    import transformers
    from deepspeed.inference.v2 import build_hf_engine  # noqa: F401
    from deepspeed.inference.v2.model_implementations import Phi3Policy  # noqa: F401
    from torch.utils.cpp_extension import is_ninja_available

    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "deepspeed": deepspeed.__version__,
        "cuda_available": torch.cuda.is_available(),
        "ninja": is_ninja_available(),
        "nvcc": tool_version(["nvcc", "--version"]),
        "torch_extensions_dir": os.environ.get("TORCH_EXTENSIONS_DIR", "~/.cache/torch_extensions (default)"),
        **arch,
    }
    if torch.cuda.is_available():
        env["device"] = torch.cuda.get_device_name()
        env["compute_capability"] = ".".join(map(str, torch.cuda.get_device_capability()))
        env["gpu_free_gib"] = round(torch.cuda.mem_get_info()[0] / 2**30, 1)
    try:  # the deepspeed-kernels wheel: RaggedOpsBuilder links its prebuilt libblockedflash.so
        import dskernels

        env["dskernels"] = dskernels.library_path()
    except ImportError as exc:
        env["dskernels"] = f"missing ({exc}): RaggedOpsBuilder.extra_ldflags imports it, so the ragged ops cannot build"
    probe.record["env"] = env


def set_cuda_arch_list(torch: Any) -> dict[str, Any]:
    """Set ``TORCH_CUDA_ARCH_LIST`` to the device's "major.minor" when the caller left it unset.

    Unset, DeepSpeed 0.19.8's JIT build failed on the H200 (torch 2.11+cu130) in ``compute_capability_args``
    (op_builder/builder.py:710, ``int('0a')``): it was handed an arch entry with a letter suffix ("9.0a"), which its
    parser cannot read. Set to "9.0" the three FastGen ops built. Only a "major.minor" from
    ``torch.cuda.get_device_capability()`` is written, never a suffixed form; a value the caller gave is kept.
    """
    out: dict[str, Any] = {"torch_cuda_arch_list_given": ARCH_LIST_GIVEN}
    seen = os.environ.get("TORCH_CUDA_ARCH_LIST")
    if seen != ARCH_LIST_GIVEN:
        out["torch_cuda_arch_list_after_torch_import"] = seen
    if ARCH_LIST_GIVEN and ARCH_LIST_GIVEN.strip():
        # The GPU image itself exports "9.0a" (seen on the H200: the variable arrived set): strip letter suffixes,
        # which DeepSpeed 0.19.8 cannot parse, and keep the rest of what the caller gave.
        entries = [e for e in re.split(r"[;\s]+", ARCH_LIST_GIVEN.strip()) if e]
        plain = ";".join(dict.fromkeys(re.sub(r"^(\d+\.\d+)[a-z]+", r"\1", e) for e in entries))
        os.environ["TORCH_CUDA_ARCH_LIST"] = plain
        source = "caller's environment" + (" (letter suffixes stripped)" if plain != ARCH_LIST_GIVEN.strip() else "")
        out.update(torch_cuda_arch_list=plain, torch_cuda_arch_list_source=source)
        return out
    if not torch.cuda.is_available():
        out.update(torch_cuda_arch_list=seen, torch_cuda_arch_list_source="left unset: no CUDA device")
        return out
    ccs: list[str] = []
    for i in range(torch.cuda.device_count()):
        major, minor = torch.cuda.get_device_capability(i)
        if f"{major}.{minor}" not in ccs:
            ccs.append(f"{major}.{minor}")
    os.environ["TORCH_CUDA_ARCH_LIST"] = ";".join(ccs)
    out.update(
        torch_cuda_arch_list=os.environ["TORCH_CUDA_ARCH_LIST"],
        torch_cuda_arch_list_source="set by the probe from torch.cuda.get_device_capability() (unset, DeepSpeed "
        "0.19.8's JIT build failed parsing a '9.0a' arch entry)",
    )
    return out


def stage_write_checkpoint(probe: Probe, rec: dict[str, Any], args: argparse.Namespace) -> None:
    """Random bf16 Phi-4-shaped weights, created where they are fast to make (GPU, or CPU for --tiny)."""
    import torch
    from transformers import Phi3Config, Phi3ForCausalLM

    shape = dict(TINY if args.tiny else PHI4, num_hidden_layers=args.layers)
    device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    cfg = Phi3Config(**SPECIAL, **shape)
    cfg.dtype = torch.bfloat16
    probe.record["shape"] = shape
    rec["device"] = device
    t0 = time.perf_counter()
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = Phi3ForCausalLM(cfg)
    finally:
        torch.set_default_dtype(previous)
    rec["parameters"] = sum(p.numel() for p in model.parameters())
    rec["create_s"] = round(time.perf_counter() - t0, 2)
    probe.save()
    t0 = time.perf_counter()
    model.save_pretrained(args.ckpt)
    rec["save_s"] = round(time.perf_counter() - t0, 2)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    files = sorted(p for p in args.ckpt.iterdir() if p.is_file())
    rec["path"] = str(args.ckpt)
    rec["files"] = [p.name for p in files]
    rec["bytes"] = sum(p.stat().st_size for p in files)
    if not any(p.suffix == ".safetensors" for p in files):
        raise RuntimeError(f"no safetensors file written in {args.ckpt}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def engine_config(args: argparse.Namespace) -> Any:
    """Sized for this probe: a fixed KV pool (ALLOCATE) instead of RESERVE, which takes all free GPU memory but
    1 GB, memory the calling benchmark still holds a model in."""
    from deepspeed.inference.v2 import RaggedInferenceEngineConfig
    from deepspeed.inference.v2.ragged import AllocationMode, DSStateManagerConfig, MemoryConfig

    return RaggedInferenceEngineConfig(
        state_manager=DSStateManagerConfig(
            max_tracked_sequences=args.batch + 8,
            max_ragged_batch_size=args.max_batch_tokens,
            max_ragged_sequence_count=args.batch,
            max_context=args.prompt + args.steps + DECODE_WARMUP + 64,
            memory_config=MemoryConfig(mode=AllocationMode.ALLOCATE, size=args.kv_blocks),
        )
    )


JIT_OPS = ("RaggedUtilsBuilder", "InferenceCoreBuilder", "RaggedOpsBuilder")
JIT_CHILD = (
    "import sys, time; t = time.perf_counter(); from deepspeed.ops import op_builder; "
    "getattr(op_builder, sys.argv[1])().load(verbose=True); print(f'JIT_SECONDS {time.perf_counter() - t:.2f}')"
)


def remove_stale_locks() -> list[str]:
    """torch's JIT build waits forever on a `lock` file that a killed build left behind: remove ours first.

    Safe because this probe is the only thing building these ops on the machine.
    """
    from deepspeed.ops import op_builder
    from torch.utils.cpp_extension import _get_build_directory

    removed = []
    for name in JIT_OPS:
        lock = Path(_get_build_directory(getattr(op_builder, name).NAME, verbose=False)) / "lock"
        if lock.exists():
            lock.unlink()
            removed.append(str(lock))
    return removed


class JitBuilds:
    """FastGen's three op libraries compiled side by side in child processes, started before the checkpoint is
    written: DeepSpeed loads them lazily one after another inside the engine build, so built there they cost the sum
    of the three compiles after the checkpoint; here they cost the slowest one, overlapped with the write. A child
    outlives a probe killed by its caller's timeout and still completes the torch-extensions cache for a rerun.
    """

    def __init__(self, log_dir: Path) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self.removed_locks = remove_stale_locks()
        self.children: dict[str, tuple[subprocess.Popen, Path]] = {}
        for name in JIT_OPS:
            log = log_dir / f"jit_{name}.log"
            with log.open("w") as fh:
                proc = subprocess.Popen([sys.executable, "-c", JIT_CHILD, name], stdout=fh, stderr=subprocess.STDOUT)
            self.children[name] = (proc, log)

    def wait(self, probe: Probe, rec: dict[str, Any]) -> None:
        """Record each op as it finishes (rewriting the JSON), then raise if any failed to build."""
        jit: dict[str, Any] = rec.setdefault("jit", {})
        jit["stale_locks_removed"] = self.removed_locks
        t0, last_log = time.perf_counter(), 0.0
        pending = dict(self.children)
        while pending:
            for name, (proc, log) in list(pending.items()):
                if proc.poll() is None:
                    continue
                del pending[name]
                text = log.read_text(errors="replace")
                done = [ln for ln in text.splitlines() if ln.startswith("JIT_SECONDS ")]
                jit[name] = {"rc": proc.returncode, "log": str(log)}
                if done:
                    jit[name]["seconds_incl_import"] = float(done[-1].split()[1])
                    probe.results("jit", {f"{name}_s": jit[name]["seconds_incl_import"]})
                else:
                    jit[name]["output_tail"] = text[-4000:]
                probe.save()
                probe.log(f"JIT {name}: rc {proc.returncode} {jit[name].get('seconds_incl_import', '')}")
            waited = time.perf_counter() - t0
            if pending and waited - last_log >= 10:
                last_log = waited
                jit["still_compiling"] = sorted(pending)
                probe.save()
                probe.log(f"waiting {waited:.0f}s for JIT builds: {', '.join(sorted(pending))}")
            time.sleep(0.2)
        jit.pop("still_compiling", None)
        jit["waited_s"] = round(time.perf_counter() - t0, 2)
        failed = [n for n in JIT_OPS if jit[n]["rc"] != 0]
        if failed:
            raise RuntimeError(
                "JIT build failed for "
                + ", ".join(failed)
                + "".join(f"\n--- {n} (last lines) ---\n{jit[n].get('output_tail', '')[-1500:]}" for n in failed)
            )


def stage_build_engine(probe: Probe, rec: dict[str, Any], args: argparse.Namespace, jit: JitBuilds | None) -> Any:
    """Check the checkpoint the way build_hf_engine reads it, have the op libraries built, build the engine."""
    import torch
    from deepspeed.inference.v2 import build_hf_engine
    from deepspeed.inference.v2.checkpoint import HuggingFaceCheckpointEngine

    config = engine_config(args)
    rec["engine_config"] = config.model_dump(mode="json")
    ckpt = HuggingFaceCheckpointEngine(str(args.ckpt))  # what build_hf_engine does first: config + file list
    rec["model_type"] = ckpt.model_config.model_type
    rec["checkpoint_files"] = [Path(p).name for p in ckpt._all_ckpt_paths]
    probe.save()
    if not torch.cuda.is_available():
        # Not attempted: on CPU, InferenceEngineV2's init_distributed JIT-compiles DeepSpeed's CPU shared-memory
        # comm op first (minutes on a small machine) before anything can fail.
        raise RuntimeError(
            "no CUDA device: FastGen (deepspeed.inference.v2) runs only on CUDA (its ragged embedding, blocked KV "
            "rotary and blocked flash attention kernels have no CPU implementation), so the engine was not built"
        )
    # InferenceEngineV2 calls deepspeed.comm.init_distributed(): without these it tries MPI discovery (mpi4py).
    for key, value in dict(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1").items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("MASTER_PORT", str(free_port()))
    from deepspeed.ops import op_builder

    if jit is not None:
        jit.wait(probe, rec)
    else:
        rec["jit"] = {"stale_locks_removed": remove_stale_locks()}
    # The builders FastGen's kernels load lazily; after the children this only loads the cached libraries.
    load_s = rec.setdefault("jit", {}).setdefault("in_process_load_s", {})
    for name in JIT_OPS:
        rec["jit"]["running"] = name
        probe.save()
        probe.log(f"loading {name}" + ("" if jit else " (compiling in process)"))
        t0 = time.perf_counter()
        getattr(op_builder, name)().load(verbose=False)
        load_s[name] = round(time.perf_counter() - t0, 2)
        probe.log(f"loaded {name} in {load_s[name]:.1f}s")
    del rec["jit"]["running"]
    probe.save()
    t0 = time.perf_counter()
    engine = build_hf_engine(str(args.ckpt), config)
    rec["engine_s"] = round(time.perf_counter() - t0, 2)
    probe.results("build_hf_engine", {"s": rec["engine_s"]})
    model = engine.model()
    rec["implementation"] = f"{type(model).__module__}.{type(model).__name__}"
    rec["kv_block_size"] = getattr(getattr(model, "attn", None), "kv_block_size", None)
    rec["kv_free_blocks"] = [int(b) for b in engine.free_blocks]
    rec["gpu_allocated_gib"] = round(torch.cuda.memory_allocated() / 2**30, 2)
    patch = patch_can_schedule(engine)
    rec["can_schedule_patch"] = patch
    probe.record.setdefault("patches", {})["InferenceEngineV2.can_schedule"] = patch
    probe.save()
    return engine


def first_kv_group(free_blocks: Any) -> int:
    """The free-block count of KV-cache group 0 from what ``DSStateManager.free_blocks`` returns: a list with one
    entry per group in 0.19.8 (ragged/kv_cache.py), a tensor of shape [n_groups] per its docstring, or a number."""
    per_group = isinstance(free_blocks, list | tuple) or (hasattr(free_blocks, "dim") and free_blocks.dim() > 0)
    return int(free_blocks[0] if per_group else free_blocks)


def can_schedule_single_kv_group(self: Any, uids: Any, lengths: Any) -> Any:
    """``InferenceEngineV2.can_schedule`` of DeepSpeed 0.19.8 (inference/v2/engine_v2.py), corrected for models with
    one KV-cache group (phi3 has one); installed by ``patch_can_schedule`` only where the original fails.

    The one change: 0.19.8 passes ``self._state_manager.free_blocks``, a list with one count per KV-cache group, as
    ``max_new_blocks`` to ``get_kv_requirements``, which compares it with an int (``block_lim <= max_new_blocks``:
    TypeError), and then subtracts an int from it. Here group 0's count is taken as an int, as the model's own
    ``maybe_allocate_kv`` does (``self.state_manager.free_blocks[0]``, inference_transformer_base.py:443). All else
    is the 0.19.8 method (its unused ``req_blocks`` local left out).
    """
    from deepspeed.inference.v2.ragged import PlaceholderSequenceDescriptor
    from deepspeed.inference.v2.scheduling_utils import SchedulingResult

    cur_seqs = self._state_manager.n_tracked_sequences
    free_blocks = first_kv_group(self._state_manager.free_blocks)  # the fix (0.19.8: the per-group list itself)
    batch_len = 0

    if len(uids) > self._config.state_manager.max_ragged_sequence_count:
        # Can only compose a batch from a limited number of sequences
        return SchedulingResult.BatchSequenceLimitExceeded

    for uid, length in zip(uids, lengths, strict=False):  # zip as in 0.19.8: no length check
        seq_desc = self._state_manager.get_sequence(uid)
        if seq_desc is None:
            cur_seqs += 1
            seq_desc = PlaceholderSequenceDescriptor()

        sched_len, sched_blocks = self._model.get_kv_requirements(seq_desc, length, free_blocks)

        if sched_len != length:
            # We ran out of KV cache
            return SchedulingResult.KVCacheLimitExceeded

        batch_len += length
        free_blocks -= sched_blocks

    if cur_seqs > self._config.state_manager.max_tracked_sequences:
        # Would run out of tracking metadata
        return SchedulingResult.EngineSequenceLimitExceeded

    if batch_len > self._config.state_manager.max_ragged_batch_size:
        # Would exceed the maximum batch size
        return SchedulingResult.BatchTokenLimitExceeded

    return SchedulingResult.Success


def patch_can_schedule(engine: Any) -> dict[str, Any]:
    """Replace ``InferenceEngineV2.can_schedule`` with ``can_schedule_single_kv_group`` where the installed one fails.

    ``put()`` calls ``can_schedule`` first (``do_checks=True``); in DeepSpeed 0.19.8 it raises ``TypeError: '<=' not
    supported between instances of 'int' and 'list'`` on every put (upstream bug, seen on the H200 run). The test is
    behavioural: a dry run (``can_schedule`` only reads state, placeholder descriptors included) for one token of an
    untracked uid. The rest of put()'s path reads free blocks correctly in 0.19.8 (``maybe_allocate_kv`` takes
    ``free_blocks[0]``; ``query`` passes the caller's count through; ``flush`` does not read it), so only this method
    is replaced, and only for a single KV-cache group, the case the correction is exact for.
    """
    import deepspeed
    from deepspeed.inference.v2.engine_v2 import InferenceEngineV2
    from deepspeed.inference.v2.scheduling_utils import SchedulingResult

    free = engine._state_manager.free_blocks
    info: dict[str, Any] = {
        "applied": False,
        "deepspeed": deepspeed.__version__,
        "free_blocks": repr(free),
        "n_kv_cache_groups": engine.n_kv_cache_groups,
    }
    uid = max([*engine._state_manager.tracked_sequences, 0]) + 1_000_000  # not tracked: a placeholder is used
    try:
        info["check_unpatched"] = str(engine.can_schedule([uid], [1]))
        info["reason"] = "not needed: the installed can_schedule works"
        return info
    except TypeError as exc:
        info["error_unpatched"] = f"TypeError: {exc}"
    if engine.n_kv_cache_groups != 1:
        info["reason"] = "not applied: the correction covers one KV-cache group only; put() will fail as installed"
        return info
    InferenceEngineV2.can_schedule = can_schedule_single_kv_group
    info["applied"] = True
    info["reason"] = (
        f"deepspeed {deepspeed.__version__} can_schedule passes the per-KV-group free_blocks list where "
        "get_kv_requirements expects an int, so every put() failed; replaced by a copy that uses group 0's count"
    )
    result = engine.can_schedule([uid], [1])
    info["check_patched"] = str(result)
    if result != SchedulingResult.Success:
        raise RuntimeError(f"patched can_schedule dry run returned {result}, expected Success")
    return info


class LayerStackTimer:
    """CUDA events at the end of the embedding and the start of the unembedding, per forward: the GPU time of the
    N-layer stack, the only part that grows with the layer count (so the only part scaled to 40 layers)."""

    def __init__(self, model: Any) -> None:
        import torch

        self.torch = torch
        self.spans: list[tuple[Any, Any]] = []
        self._start: Any = None
        embed, unembed = model._forward_embed, model._forward_unembed

        def timed_embed(batch: Any) -> Any:
            out = embed(batch)
            self._start = self._event()
            return out

        def timed_unembed(hidden: Any, batch: Any) -> Any:
            self.spans.append((self._start, self._event()))
            return unembed(hidden, batch)

        model._forward_embed, model._forward_unembed = timed_embed, timed_unembed

    def _event(self) -> Any:
        ev = self.torch.cuda.Event(enable_timing=True)
        ev.record()
        return ev

    def take_ms(self) -> list[float]:
        self.torch.cuda.synchronize()
        out = [a.elapsed_time(b) for a, b in self.spans]
        self.spans.clear()
        return out


def greedy(logits: Any) -> Any:
    """Next tokens on the host, taken at once: put() returns a view of a buffer the next put() overwrites."""
    return logits.argmax(dim=-1).cpu()


def put_chunked(engine: Any, uids: list[int], tokens: list[Any], max_tokens: int) -> Any:
    """Prefill in puts of at most max_ragged_batch_size tokens (as a FastGen scheduler does); next tokens."""
    import torch

    nxt, batch_uids, batch_toks, n = [], [], [], 0
    for uid, toks in zip(uids, tokens, strict=True):
        if batch_uids and n + toks.numel() > max_tokens:
            nxt.append(greedy(engine.put(batch_uids, batch_toks)))
            batch_uids, batch_toks, n = [], [], 0
        batch_uids.append(uid)
        batch_toks.append(toks)
        n += toks.numel()
    nxt.append(greedy(engine.put(batch_uids, batch_toks)))
    return torch.cat(nxt)


def decode(
    engine: Any, uids: list[int], nxt: Any, steps: int, timer: LayerStackTimer | None, warmup: int = 0
) -> dict[str, Any]:
    """``steps`` greedy steps, each a put of one token per sequence; the host needs each argmax before the next.

    ``warmup`` untimed steps go first (a new batch shape's first forwards pay lazy allocations and heuristics)."""
    import torch

    for _ in range(warmup):
        nxt = greedy(engine.put(uids, [nxt[i : i + 1] for i in range(len(uids))]))
    if timer:
        timer.take_ms()
    step_ms = []
    torch.cuda.synchronize()
    t_all = time.perf_counter()
    for _ in range(steps):
        t0 = time.perf_counter()
        nxt = greedy(engine.put(uids, [nxt[i : i + 1] for i in range(len(uids))]))  # .cpu() ends the step
        step_ms.append((time.perf_counter() - t0) * 1e3)
    torch.cuda.synchronize()
    total = time.perf_counter() - t_all
    ms = total * 1e3 / steps
    layers = engine.model().num_layers
    measured = f"measured_{layers}_layers"  # in every name: these are not Phi-4's 40-layer numbers
    out: dict[str, Any] = {
        "batch": len(uids),
        "steps": steps,
        "warmup_steps": warmup,
        "layers_measured": layers,
        "seconds": round(total, 4),
        f"{measured}_ms_per_step": round(ms, 3),
        f"{measured}_ms_per_step_median": round(statistics.median(step_ms), 3),
        f"{measured}_tok_s": round(len(uids) * steps / total, 1),
    }
    spans = timer.take_ms() if timer else []
    if spans:
        stack = statistics.median(spans)
        est = ms - stack + stack * TARGET_LAYERS / layers
        out.update(
            {
                f"{measured}_layer_stack_gpu_ms_per_step": round(stack, 3),
                f"{measured}_rest_ms_per_step": round(ms - stack, 3),
                f"extrapolated_{TARGET_LAYERS}_layers_ms_per_step": round(est, 3),
                f"extrapolated_{TARGET_LAYERS}_layers_tok_s": round(len(uids) * 1e3 / est, 1),
            }
        )
    return out


def prompts(n: int, length: int, seed: int) -> list[Any]:
    import torch

    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, PROMPT_VOCAB, (length,), generator=g, dtype=torch.long) for _ in range(n)]


def timed_prefill(engine: Any, uids: list[int], toks: list[Any], max_tokens: int) -> tuple[Any, dict[str, Any]]:
    import torch

    torch.cuda.synchronize()
    t0 = time.perf_counter()
    nxt = put_chunked(engine, uids, toks, max_tokens)
    s = time.perf_counter() - t0
    n = sum(t.numel() for t in toks)
    return nxt, {"sequences": len(uids), "tokens": n, "seconds": round(s, 4), "tok_s": round(n / s, 1)}


def flush_all(engine: Any, uids: list[int]) -> None:
    for uid in uids:
        with contextlib.suppress(Exception):
            engine.flush(uid)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="JSON result, rewritten after every stage")
    ap.add_argument("--layers", type=int, default=None, help="decoder layers written (default 4; 2 with --tiny)")
    ap.add_argument("--tiny", action="store_true", help="toy widths on CPU: tests everything up to the engine build")
    ap.add_argument("--workdir", type=Path, default=None, help="where the checkpoint goes (default: a temp dir)")
    ap.add_argument("--keep-checkpoint", action="store_true", help="do not delete the checkpoint at the end")
    ap.add_argument("--prompt", type=int, default=128, help="prompt tokens per sequence")
    ap.add_argument("--steps", type=int, default=32, help="decode steps measured (after 2 untimed)")
    ap.add_argument("--batch", type=int, default=32, help="sequences in the batched decode")
    ap.add_argument("--kv-blocks", type=int, default=512, help="KV-cache blocks allocated (ALLOCATE mode)")
    ap.add_argument("--max-batch-tokens", type=int, default=1024, help="FastGen max_ragged_batch_size")
    ap.add_argument(
        "--sequential-jit", action="store_true", help="compile the ops in process, one by one (as DeepSpeed would)"
    )
    args = ap.parse_args(argv)
    if args.layers is None:
        args.layers = 2 if args.tiny else 4
    for name in ("layers", "prompt", "steps", "batch", "kv_blocks"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.max_batch_tokens < max(args.prompt, args.batch):
        ap.error("--max-batch-tokens must hold one prompt and one decode token per sequence")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    probe = Probe(args.out)
    signal.signal(signal.SIGTERM, probe.on_sigterm)
    probe.record["layers"] = args.layers
    probe.record["target_layers"] = TARGET_LAYERS
    created = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="fastgen_probe_")) if created else args.workdir
    args.ckpt = workdir / "checkpoint"
    probe.save()
    try:
        run_stages(probe, args)
    finally:
        if not args.keep_checkpoint:
            shutil.rmtree(workdir if created else args.ckpt, ignore_errors=True)
        probe.record["status"] = "done"
        probe.save()
        probe.log(f"done: {args.out}")
    return 0


def run_stages(probe: Probe, args: argparse.Namespace) -> None:
    with probe.stage("import") as rec:
        if rec is not None:
            stage_import(probe, rec)
    jit = None
    if probe.record["env"].get("cuda_available") and not args.sequential_jit:
        try:  # compile while the checkpoint is written; a failure to start is the build stage's to report
            jit = JitBuilds(args.out.parent / f"{args.out.stem}_logs")
            probe.log("JIT builds started in the background: " + ", ".join(JIT_OPS))
        except Exception as exc:
            probe.record["jit_start_error"] = error_record(exc)
    with probe.stage("write_checkpoint", needs=("import",)) as rec:
        if rec is not None:
            if args.ckpt.exists():
                shutil.rmtree(args.ckpt)
            stage_write_checkpoint(probe, rec, args)
    engine = None
    with probe.stage("build_engine", needs=("write_checkpoint",)) as rec:
        if rec is not None:
            engine = stage_build_engine(probe, rec, args, jit)
    if engine is None:
        for name in ("prefill", "decode"):
            with probe.stage(name, needs=("build_engine",)):
                pass
        return
    single, batch = [1], list(range(100, 100 + args.batch))
    timer: LayerStackTimer | None = None
    first: dict[str, Any] = {}
    try:
        with probe.stage("prefill", needs=("build_engine",)) as rec:
            if rec is not None:
                timer = layer_timer(engine, rec)
                warm = prompts(1, args.prompt, seed=1)  # first puts pay lazy allocations and cuBLAS heuristics
                decode(engine, [0], greedy(engine.put([0], warm)), 4, None)
                engine.flush(0)
                first["single"], rec["single"] = timed_prefill(
                    engine, single, prompts(1, args.prompt, 2), args.max_batch_tokens
                )
                probe.results("prefill_single", rec["single"])
                first["batch"], rec["batch"] = timed_prefill(
                    engine, batch, prompts(args.batch, args.prompt, 3), args.max_batch_tokens
                )
                probe.results(f"prefill_batch{args.batch}", rec["batch"])
        with probe.stage("decode", needs=("prefill",)) as rec:
            if rec is not None:
                rec["single"] = decode(engine, single, first["single"], args.steps, timer, DECODE_WARMUP)
                probe.log(f"single stream: {json.dumps(rec['single'])}")
                probe.results("decode_single", rec["single"])
                rec["batch"] = decode(engine, batch, first["batch"], args.steps, timer, DECODE_WARMUP)
                probe.log(f"batch {args.batch}: {json.dumps(rec['batch'])}")
                probe.results(f"decode_batch{args.batch}", rec["batch"])
    finally:
        flush_all(engine, [0, *single, *batch])


def layer_timer(engine: Any, rec: dict[str, Any]) -> LayerStackTimer | None:
    """The split needs the phi3 model's _forward_embed/_forward_unembed; without them only totals are reported."""
    model = engine.model()
    if not (hasattr(model, "_forward_embed") and hasattr(model, "_forward_unembed")):
        rec["layer_stack_timer"] = "unavailable: no _forward_embed/_forward_unembed on the model"
        return None
    return LayerStackTimer(model)


if __name__ == "__main__":
    sys.exit(main())
