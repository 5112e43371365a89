#!/usr/bin/env python3
"""The `openai` package from PyPI, unchanged, against `tappa serve` on the default model: chat
(streamed and not), completions with echo + logprobs, model listing, and a 4xx surfacing as the
client's own error class. Exits 77 (ctest: skipped) when the package or the model is absent, except that a
missing package fails under TAPPA_REQUIRE_OPENAI=1 (scripts/test.sh, after install_deps.sh installed it).

    tests/server_openai_client.py build/tappa models/SmolLM2-135M-Instruct.Q4_1.gguf
"""
import os
import re
import subprocess
import sys


def main() -> int:
    tappa, model = sys.argv[1], sys.argv[2]
    try:
        import openai
    except ImportError:
        # scripts/test.sh installs it (scripts/install_deps.sh) and sets TAPPA_REQUIRE_OPENAI: a failure there.
        if os.environ.get("TAPPA_REQUIRE_OPENAI"):
            print("FAIL: the openai package is not installed in this Python (scripts/install_deps.sh installs it)")
            return 1
        print("SKIP: the openai package is not installed (scripts/install_deps.sh installs it into .cache/venv)")
        return 77
    if not os.path.exists(model):
        print(f"SKIP: model {model} not found: run scripts/fetch_model.sh")
        return 77
    srv = subprocess.Popen([tappa, "serve", "-m", model, "--port", "0", "-t", "2", "-c", "1024",
                            "--api-key", "k"], stderr=subprocess.PIPE, text=True)
    try:
        line = srv.stderr.readline()
        m = re.search(r"listening on (http://[\d.]+:\d+)", line)
        assert m, f"no 'listening on' line from the server: {line!r}"
        client = openai.OpenAI(base_url=m.group(1) + "/v1", api_key="k", max_retries=0, timeout=300)
        ids = [x.id for x in client.models.list().data]
        assert ids == ["SmolLM2-135M-Instruct.Q4_1"], ids
        msgs = [{"role": "user", "content": "Name three colours."}]
        r = client.chat.completions.create(model=ids[0], messages=msgs, max_tokens=20, temperature=0)
        text = r.choices[0].message.content
        assert text and r.choices[0].finish_reason in ("stop", "length"), r
        assert r.usage.completion_tokens > 0 and r.usage.prompt_tokens > 0, r.usage
        streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model=ids[0], messages=msgs, max_tokens=20, temperature=0, stream=True) if c.choices)
        assert streamed == text, (streamed, text)
        c = client.completions.create(model=ids[0], prompt="The capital of France is", max_tokens=1, echo=True,
                                      logprobs=2, temperature=0)
        lp = c.choices[0].logprobs
        assert lp.token_logprobs[0] is None and all(x <= 0 for x in lp.token_logprobs[1:]), lp
        assert c.choices[0].text.startswith("The capital of France is"), c.choices[0].text
        try:
            client.completions.create(model=ids[0], prompt="hi", max_tokens=-3)
            raise AssertionError("max_tokens -3 was accepted")
        except openai.BadRequestError as e:
            assert "max_tokens" in str(e), e
        try:
            openai.OpenAI(base_url=m.group(1) + "/v1", api_key="wrong", max_retries=0).models.list()
            raise AssertionError("a wrong API key was accepted")
        except openai.AuthenticationError:
            pass
        print(f"ok: chat {text!r}, streamed equal, echo logprobs of {len(lp.tokens)} tokens")
        return 0
    finally:
        srv.terminate()
        srv.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
