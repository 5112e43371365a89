"""The Python module against the CLI of the same build: identical generations, budgets and q-similarity;
error mapping; interrupted generations. Run by ctest (python_tests) with PYTHONPATH=build/python."""
import json
import os
import pathlib
import subprocess
import threading
import _thread

import numpy as np
import pytest

import tappa
from conftest import CLI, MODEL, TEXT

PROMPT = "The history of the Roman Empire begins"


def cli(*args):
    return subprocess.run([CLI, *args, "-m", MODEL, "-t", "2"], check=True, capture_output=True, text=True).stdout


def test_tokenize_roundtrip(model):
    ids = model.tokenize("Hello world, ünïcode")
    assert ids[0] == model.bos or not model.config["name"] is None
    assert model.detokenize(ids) == "Hello world, ünïcode"
    assert isinstance(model.token_to_piece(ids[-1]), bytes)
    assert model.config["n_layer"] == 30 and model.config["n_head_kv"] == 3


def test_generation_equals_cli_greedy(engine):
    expected = cli("run", "-p", PROMPT, "-n", "32", "-q", "--ignore-eos")
    r = tappa.generate(engine, PROMPT, max_tokens=32, ignore_eos=True)
    assert r["text"] + "\n" == expected
    assert len(r["tokens"]) == 32 and r["finish"] == "length"


def test_stream_pieces_concatenate_to_result(engine):
    s = engine.stream(PROMPT, max_tokens=24, ignore_eos=True)
    pieces = list(s)
    assert len(pieces) > 1 and "".join(pieces) == s.result()["text"]


def test_compressed_generation_equals_cli(engine, model):
    prompt = open(TEXT).read()[:3000]
    expected = cli("run", "-p", prompt, "-n", "24", "-q", "--ignore-eos", "--kv", "tappa", "--budget", "128")
    r = tappa.generate(engine, prompt, max_tokens=24, ignore_eos=True, kv="tappa", budget=128)
    assert r["text"] + "\n" == expected
    assert r["kv"]["compressed"]


@pytest.mark.parametrize("method", ["tappa", "cake", "pyramidkv"])
def test_budgets_and_qsim_equal_cli_compress(engine, model, method):
    out = cli("compress", "-f", TEXT, "--max-tokens", "512", "--kv", method, "--budget", "128", "--json", "-")
    want = json.loads(out)["record"]
    ids = model.tokenize(open(TEXT).read())[:512]
    rec = tappa.compress(engine, ids, kv=method, budget=128)
    assert rec["n_prompt"] == want["n_prompt"] == 512
    # budgets are integers: exactly equal
    np.testing.assert_array_equal(rec["budget"], [l["budget"] for l in want["layers"]])
    np.testing.assert_array_equal(rec["kept"], [l["kept"] for l in want["layers"]])
    np.testing.assert_array_equal(rec["head_budget"], [[h["budget"] for h in l["heads"]] for l in want["layers"]])
    # q-sim: the same doubles through JSON (17 significant digits round-trip); 1e-12 for the decimal print
    np.testing.assert_allclose(rec["qsim"], [l["qsim"] for l in want["layers"]], rtol=0, atol=1e-12)
    np.testing.assert_allclose(rec["head_qsim"], [[h["qsim"] for h in l["heads"]] for l in want["layers"]],
                               rtol=0, atol=1e-12)
    assert rec["budget"].dtype == np.int32 and rec["qsim"].shape == (30,)
    assert json.loads(rec["json"])["capacity"] == 128


def test_score_matches_logits(engine, model):
    ids = model.tokenize(PROMPT)
    lp = tappa.score(engine, ids)
    logits = engine.logits(ids).astype(np.float64)
    ls = logits - logits.max(axis=1, keepdims=True)
    ls -= np.log(np.exp(ls).sum(axis=1, keepdims=True))
    ref = np.array([ls[i, ids[i + 1]] for i in range(len(ids) - 1)])
    assert lp.shape == (len(ids) - 1,)
    np.testing.assert_allclose(lp, ref, atol=1e-4)  # float32 log-softmax in C++ vs float64 here


def test_errors_map_to_exceptions(engine, model):
    with pytest.raises(tappa.BadFile) as e:
        tappa.Model("/nonexistent.gguf")
    assert e.value.code == tappa.ErrorCode.bad_file and isinstance(e.value, tappa.Error)
    with pytest.raises(tappa.BadInput) as e:
        engine.stream(PROMPT, kv="no-such-method", budget=64)
    assert e.value.code == tappa.ErrorCode.bad_input and isinstance(e.value, ValueError)
    assert "no-such-method" in str(e.value)
    with pytest.raises(tappa.ContextOverflow) as e:
        engine.stream([1] * 4000, max_tokens=200)
    assert e.value.code == tappa.ErrorCode.context_overflow
    with pytest.raises(tappa.BadInput):
        engine.logits([model.n_vocab + 5])


def test_interrupted_generator_leaves_model_usable(engine, model):
    ref = tappa.generate(engine, PROMPT, max_tokens=16, ignore_eos=True)["text"]
    for i, _ in enumerate(engine.stream(PROMPT, max_tokens=64, ignore_eos=True)):
        if i == 3:
            break  # the abandoned stream's sequence is its own
    s = engine.stream(PROMPT, max_tokens=64, ignore_eos=True)
    next(s)
    s.cancel()
    assert s.result()["finish"] == "cancelled" and list(s) == []
    assert tappa.generate(engine, PROMPT, max_tokens=16, ignore_eos=True)["text"] == ref


def test_cancel_token_and_keyboard_interrupt(engine, model):
    ref = tappa.generate(engine, PROMPT, max_tokens=8, ignore_eos=True)["text"]
    long_ids = model.tokenize(open(TEXT).read())[:3000]
    tok = tappa.CancelToken()
    tok.cancel()
    with pytest.raises(tappa.Cancelled) as e:
        engine.logits(long_ids, cancel=tok)
    assert e.value.code == tappa.ErrorCode.cancelled
    # Ctrl-C during a long prefill (GIL released): the progress callback sees it and cancels the call.
    t = threading.Timer(0.3, _thread.interrupt_main)
    t.start()
    with pytest.raises(KeyboardInterrupt):
        for _ in engine.stream(long_ids, max_tokens=1000, ignore_eos=True):
            pass
    t.join()
    assert tappa.generate(engine, PROMPT, max_tokens=8, ignore_eos=True)["text"] == ref


def test_gil_released_during_compute(engine, model):
    ids = model.tokenize(open(TEXT).read())[:1500]
    ticks = []
    stop = threading.Event()

    def tick():
        while not stop.is_set():
            ticks.append(1)
            stop.wait(0.01)

    th = threading.Thread(target=tick)
    th.start()
    engine.logits(ids)
    stop.set()
    th.join()
    assert len(ticks) >= 3  # the other thread ran while one C++ call computed (GIL held: at most 1)


def test_weights_not_copied(model):
    def rss_anon():
        for line in open("/proc/self/status"):
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    before = rss_anon()
    m2 = tappa.Model(MODEL)
    grown = rss_anon() - before
    size = os.path.getsize(MODEL)
    assert m2.config["n_layer"] == 30
    assert grown < 0.25 * size, (grown, size)  # the weights stay in the mapped file


def test_stubs_name_every_public_name():
    import pathlib
    stub = (pathlib.Path(tappa.__file__).parent / "_tappa.pyi").read_text()
    for name in tappa.__all__:
        if name[0].isupper():
            assert f"class {name}" in stub, name
        else:
            assert f"def {name}(" in stub or name in ("generate", "compress", "score"), name
    for meth in ("stream", "compress", "logits", "tokenize", "detokenize"):
        assert f"def {meth}(" in stub
    assert tappa.Engine.stream.__doc__ and tappa.Model.tokenize.__doc__


def test_skip_layers_equal_cli(model):
    e = tappa.Engine(model, n_threads=2)
    e.set_skip_layers([3, 5, 20, 21])
    assert e.skip_layers == [3, 5, 20, 21]
    expected = cli("run", "-p", PROMPT, "-n", "16", "-q", "--ignore-eos", "--skip-layers", "3,5,20-21")
    assert tappa.generate(e, PROMPT, max_tokens=16, ignore_eos=True)["text"] + "\n" == expected
    e.set_skip_layers([])
    full = cli("run", "-p", PROMPT, "-n", "16", "-q", "--ignore-eos")
    assert tappa.generate(e, PROMPT, max_tokens=16, ignore_eos=True)["text"] + "\n" == full != expected
    with pytest.raises(tappa.BadInput):
        e.set_skip_layers([30])


def test_kv_registry():
    names = [n for n, _ in tappa.kv_presets()]
    assert "tappa" in names and "snapkv" in names
    tappa.validate_kv("snapkv+tappa", budget=64)
    with pytest.raises(tappa.BadInput) as e:
        tappa.validate_kv("tappa")  # no budget
    assert e.value.code == tappa.ErrorCode.bad_input


def test_analysis_equals_cli_analyze(model, tmp_path):
    # The same numbers as `tappa analyze` on the same text and options (one code path: exact).
    out = tmp_path / "cli"
    subprocess.run([CLI, "analyze", "-f", TEXT, "-m", MODEL, "-t", "2", "--max-tokens", "512", "-o", str(out), "--no-progress"],
                   check=True, capture_output=True, text=True)
    want = json.loads((out / "report.json").read_text())
    a = tappa.analyze(model, open(TEXT).read(), max_tokens=512, n_threads=2)
    assert a.n_tokens == 512 and a.qsim_pre_last.shape == (30, 9)
    heads = want["heads"]
    for h in heads[:: max(1, len(heads) // 40)]:
        l, q = h["layer"], h["head"]
        assert a.labels[l][q] == h["label"]
        for field in ("qsim_pre_last", "qsim_post_last", "qsim_pre_sliding"):
            if field in h:
                assert getattr(a, field)[l, q] == h[field], (field, l, q)
    assert a.channel_energy.shape[:2] == (30, 9)
    assert a.report["heads"][0]["layer"] == heads[0]["layer"]
    rep = a.write_report(str(tmp_path / "py"))
    assert (tmp_path / "py" / "report.html").exists() and len(rep["heads"]) == len(heads)


def test_calibrate_order_and_prune_equal_cli(model, tmp_path):
    # calibrate / prune-order / prune against the CLI on the same text: the scores are the same bits,
    # the orders the same lists, the pruned files the same bytes.
    scores = tmp_path / "scores.json"
    subprocess.run([CLI, "calibrate", "-f", TEXT, "-m", MODEL, "-t", "2", "--window", "256", "--stride", "256",
                    "--max-windows", "3", "-o", str(scores), "-q"], check=True, capture_output=True, text=True)
    want = json.loads(scores.read_text())
    cal = tappa.calibrate(model, [open(TEXT).read()], window=256, stride=256, max_windows=3, n_threads=2)
    assert cal["windows"] == 3
    np.testing.assert_array_equal(cal["bi"], want["bi"]["scores"])
    np.testing.assert_array_equal(cal["qsim"], want["qsim"]["scores"])
    order = tappa.prune_order(cal["bi"], cal["qsim"], beta=0.2)
    assert sorted(order) == list(range(30))
    assert tappa.prune_order(cal["bi"], method="shortgpt") == list(np.argsort(cal["bi"], kind="stable"))
    with pytest.raises(tappa.BadInput):
        tappa.prune_order(cal["bi"], method="tappa")
    ours, theirs = tmp_path / "py.gguf", tmp_path / "cli.gguf"
    s = tappa.prune(model, sorted(order[:2]), str(ours))
    assert s["n_layer_before"] == 30 and s["n_layer_after"] == 28
    layers = ",".join(str(x) for x in sorted(order[:2]))
    subprocess.run([CLI, "prune", "-m", MODEL, "--remove", layers, "-o", str(theirs)], check=True,
                   capture_output=True, text=True)
    assert ours.read_bytes() == theirs.read_bytes()
    assert tappa.Model(str(ours)).config["n_layer"] == 28


def test_eval_kv_cells_equal_cli(model, tmp_path):
    data = os.environ.get("TAPPA_DATA_DIR", str(pathlib.Path(__file__).resolve().parents[3] / "shared" / "data"))
    if not os.path.isdir(os.path.join(data, "wikitext2")):
        pytest.skip(f"{data}/wikitext2 missing (the evaluation data beside the checkout)")
    out = tmp_path / "cli"
    args = ["--tasks", "fidelity_wikitext,passkey", "--methods", "snapkv,tappa", "--budgets", "64",
            "--lengths", "512", "--samples", "1", "--fidelity-tokens", "8", "--greedy-tokens", "4"]
    subprocess.run([CLI, "eval-kv", "-m", MODEL, "-t", "2", "--data-dir", data, "-o", str(out), "--no-progress", *args],
                   check=True, capture_output=True, text=True)
    want = json.loads((out / "results.json").read_text())["cells"]
    res = tappa.eval_kv(model, ["snapkv", "tappa"], [64], ["fidelity_wikitext", "passkey"], lengths=[512],
                        samples=1, fidelity_tokens=8, greedy_tokens=4, data_dir=data, threads=2)
    got = {(c["task"], c["method"], c["budget"]): c for c in res["cells"]}
    assert len(got) == len(want) >= 6
    for c in want:
        g = got[(c["task"], c["method"], c["budget"])]
        for k in ("score", "kv_bytes", "kept_rows", "kl", "top1", "prediction"):
            if k in c:
                assert g[k] == c[k], (k, c["task"], c["method"])
    assert tappa.eval_kv(model, ["snapkv", "tappa"], [64], ["fidelity_wikitext", "passkey"], lengths=[512],
                         samples=1, fidelity_tokens=8, greedy_tokens=4, data_dir=data, threads=2,
                         results=res) == res  # nothing left to run
    with pytest.raises(tappa.BadInput):  # another grid's results
        tappa.eval_kv(model, ["snapkv"], [64], ["passkey"], lengths=[512], samples=1, data_dir=data, results=res)
    md = tappa.eval_kv_summary(res, str(tmp_path / "sum"))
    assert "tappa" in md and (tmp_path / "sum" / "table.md").exists()
