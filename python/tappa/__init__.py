"""tappa: LLM inference, attention analysis and KV-cache compression, on the same engine as the CLI.

    import tappa
    model = tappa.Model("models/SmolLM2-135M-Instruct.Q4_1.gguf")
    engine = tappa.Engine(model)
    for piece in engine.stream("Once upon a time", max_tokens=32):
        print(piece, end="")
    rec = engine.compress(open("essay.txt").read(), kv="tappa", budget=256)
    rec["budget"], rec["qsim"]          # numpy arrays, one value per layer
    a = tappa.analyze(model, open("essay.txt").read())
    a.qsim_pre_last, a.labels           # [n_layer, n_head] arrays / lists
    cal = tappa.calibrate(model, [open("essay.txt").read()])
    tappa.prune(model, tappa.prune_order(cal["bi"], cal["qsim"])[:2], "pruned.gguf")

Errors are tappa.Error (subclasses BadInput, BadFile, ContextOverflow, OutOfMemory, Cancelled,
InternalError) with .code, a tappa.ErrorCode. See docs/PYTHON.md.
"""
from ._tappa import (  # noqa: F401  (stubs: _tappa.pyi)
    Analysis,
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
    analyze,
    calibrate,
    eval_kv,
    eval_kv_summary,
    kv_presets,
    prune,
    prune_order,
    validate_kv,
)

__all__ = ["Model", "Engine", "Stream", "CancelToken", "Error", "ErrorCode", "BadInput", "BadFile",
           "ContextOverflow", "OutOfMemory", "Cancelled", "InternalError", "Analysis", "kv_presets", "validate_kv",
           "generate", "compress", "score", "analyze", "calibrate", "prune_order", "prune", "eval_kv",
           "eval_kv_summary"]


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
