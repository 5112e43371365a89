"""tappa: LLM inference, attention analysis and KV-cache compression, on the same engine as the CLI.

    import tappa
    model = tappa.Model("models/SmolLM2-135M-Instruct.Q4_1.gguf")
    engine = tappa.Engine(model)
    for piece in engine.stream("Once upon a time", max_tokens=32):
        print(piece, end="")
    rec = engine.compress(open("essay.txt").read(), kv="tappa", budget=256)
    rec["budget"], rec["qsim"]          # numpy arrays, one value per layer

Errors are tappa.Error (subclasses BadInput, BadFile, ContextOverflow, OutOfMemory, Cancelled,
InternalError) with .code, a tappa.ErrorCode. See docs/PYTHON.md.
"""
from ._tappa import (  # noqa: F401  (stubs: _tappa.pyi)
    BadFile,
    BadInput,
    CancelToken,
    Cancelled,
    ContextOverflow,
    Engine,
    Error,
    ErrorCode,
    InternalError,
    Model,
    OutOfMemory,
    Stream,
    kv_presets,
    validate_kv,
)

__all__ = ["Model", "Engine", "Stream", "CancelToken", "Error", "ErrorCode", "BadInput", "BadFile",
           "ContextOverflow", "OutOfMemory", "Cancelled", "InternalError", "kv_presets", "validate_kv", "generate", "compress", "score"]


def generate(engine, prompt, **kwargs):
    """Runs engine.stream(prompt, **kwargs) to the end and returns its result() dict
    (text, tokens, finish, logprobs, kv)."""
    s = engine.stream(prompt, **kwargs)
    for _ in s:
        pass
    return s.result()


def compress(engine, prompt, kv="tappa", budget=None, ratio=None, **kwargs):
    """engine.compress(...): the compression record of one prefill (see Engine.compress)."""
    return engine.compress(prompt, kv=kv, budget=budget, ratio=ratio, **kwargs)


def score(engine, prompt, **kwargs):
    """Log-probabilities (numpy float32) of every token of `prompt` after the first, given the ones before."""
    return generate(engine, prompt, max_tokens=0, prompt_logprobs=True, **kwargs)["prompt_logprobs"]


Engine.generate = generate
Engine.score = score
