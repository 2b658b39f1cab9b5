"""One vLLM engine process: generates for the given prompts and prints a RESULT line (JSON).

Used by the vLLM engine tests and the TTFT benchmark; each call is a fresh process, as two
inference workers would be. Usage: python engine_run.py '<json spec>'

``python engine_run.py serve`` is the same runs without importing vLLM each time (about 15 s of a
20 s run on a 2-core machine): it imports vLLM once, then reads one request per line on stdin
(``{"spec": ..., "env": {...}, "log": path}``) and forks a child per request that applies ``env``,
writes its stdout and stderr to ``log`` and runs the spec. Nothing of vLLM's runs before the fork
(its settings are read from the environment when first used), so each child starts as a fresh
process that already has the modules loaded. It answers each request with ``{"pid": N}`` at once
and ``{"returncode": N}`` when the child has exited. ``EngineServer`` is its client.

spec: model (folder), node (HOST:PORT or null for no connector), prompts (lists of token ids),
max_tokens, timeout_ms, extra (more kv_connector_extra_config), block_size, dtype, llm_args (more
arguments of vllm.LLM, e.g. gpu_memory_utilization), batch (all prompts in one generate call).
"""

from __future__ import annotations

import atexit
import json
import os
import select
import signal
import subprocess
import sys
import time
import traceback


def make_model(
    folder: str, layers: int = 2, hidden: int = 128, heads: int = 2, seed: int = 0, sliding_window: int = 0
) -> None:
    """A small Llama with random weights, written offline (no download, no tokenizer).

    ``sliding_window`` > 0 makes it hybrid: even layers attend within that window (vLLM's Llama
    reads ``layer_types``), odd layers attend to everything.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=512,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=8192,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
        # Large weights make the next token depend strongly on the context, so a wrong KV block
        # changes the output instead of hiding behind near-uniform logits.
        initializer_range=0.5,
        **(
            {
                "sliding_window": sliding_window,
                "layer_types": ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(layers)],
            }
            if sliding_window
            else {}
        ),
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32)
    model.save_pretrained(folder, safe_serialization=True)


def set_defaults() -> None:
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # engine core in this process
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


def main(spec: dict) -> None:
    set_defaults()
    from vllm import LLM, SamplingParams

    kv_transfer = None
    if spec.get("node"):
        kv_transfer = {
            "kv_connector": "StrataConnector",
            "kv_connector_module_path": "strata_kv.vllm",
            "kv_role": "kv_both",
            "kv_connector_extra_config": {
                "strata.node": spec["node"],
                "strata.timeout_ms": spec.get("timeout_ms", 5000),
                **spec.get("extra", {}),
            },
        }
    started = time.monotonic()
    llm = LLM(
        model=spec["model"],
        skip_tokenizer_init=True,
        dtype=spec.get("dtype", "float32"),
        block_size=spec.get("block_size", 32),
        enable_prefix_caching=False,
        max_model_len=spec.get("max_model_len", 4096),
        max_num_batched_tokens=spec.get("max_num_batched_tokens", 4096),
        max_num_seqs=4,
        enforce_eager=True,
        seed=0,
        kv_transfer_config=kv_transfer,
        **spec.get("llm_args", {}),
    )
    ready = time.monotonic()
    params = SamplingParams(max_tokens=spec.get("max_tokens", 8), temperature=0.0, detokenize=False)
    results = []
    if spec.get("batch"):
        # All prompts in one call: they run together (and may preempt one another).
        outs = llm.generate([{"prompt_token_ids": p} for p in spec["prompts"]], params, use_tqdm=False)
        results = [
            {
                "tokens": list(o.outputs[0].token_ids),
                "num_cached_tokens": o.num_cached_tokens,
                "finish_reason": o.outputs[0].finish_reason,
            }
            for o in outs
        ]
    for prompt in [] if spec.get("batch") else spec["prompts"]:
        # One prompt at a time: TTFT is the time of the prefill (plus one token) of this prompt.
        begin = time.monotonic()
        out = llm.generate([{"prompt_token_ids": prompt}], params, use_tqdm=False)[0]
        first = out.metrics.first_token_latency if getattr(out, "metrics", None) else None
        results.append(
            {
                "tokens": list(out.outputs[0].token_ids),
                "num_cached_tokens": out.num_cached_tokens,
                "finish_reason": out.outputs[0].finish_reason,
                "seconds": time.monotonic() - begin,
                "ttft": first,
            }
        )
    llm.llm_engine.engine_core.shutdown()  # waits for saves in flight (connector shutdown)
    print(
        "RESULT "
        + json.dumps({"init_seconds": ready - started, "total_seconds": time.monotonic() - started, "results": results}),
        flush=True,
    )


def serve() -> None:
    set_defaults()
    from vllm import LLM, SamplingParams  # noqa: F401  (loaded once, before any fork)

    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                status = run_child(request)
            finally:
                os._exit(status)  # never back into this loop, whatever happened
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}), flush=True)


def run_child(request: dict) -> int:
    """In a forked child: the run of ``request``, as ``python engine_run.py SPEC`` would do it;
    returns its exit status (1 and the traceback in the log for an exception)."""
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    os.environ.update(request.get("env") or {})
    status = 0
    try:
        main(request["spec"])
    except SystemExit as exit:
        status = exit.code if isinstance(exit.code, int) else 1
    except BaseException:  # noqa: BLE001  (reported as an interpreter would, then exit 1)
        traceback.print_exc()
        status = 1
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    return status


class EngineServer:
    """Client of ``engine_run.py serve``: ``run(spec, env, log, timeout)`` -> exit status. A run past
    its timeout is killed (and raises ``TimeoutError``)."""

    def __init__(self, python: str = sys.executable) -> None:
        self.process = subprocess.Popen(
            [python, os.path.abspath(__file__), "serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._pending = b""

    def run(self, spec: dict, env: dict | None, log: str, timeout: float) -> int:
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps({"spec": spec, "env": env or {}, "log": log}) + "\n").encode())
        pid = json.loads(self._line(time.monotonic() + timeout))["pid"]
        try:
            return json.loads(self._line(time.monotonic() + timeout))["returncode"]
        except TimeoutError:
            os.kill(pid, signal.SIGKILL)
            self._line(time.monotonic() + 30)  # the server reaps it and answers
            raise

    def _line(self, deadline: float) -> str:
        """The server's next line, read without buffering beyond it (so the next wait sees the rest)."""
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the engine run did not finish in time")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    raise RuntimeError(f"the engine server exited ({self.process.wait()})")
                self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        return line.decode()

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=60)


if __name__ == "__main__":
    if sys.argv[1] == "make-model":
        make_model(sys.argv[2], *[int(a) for a in sys.argv[3:]])
    elif sys.argv[1] == "serve":
        serve()
    else:
        main(json.loads(sys.argv[1]))
