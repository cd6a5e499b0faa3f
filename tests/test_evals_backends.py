"""The HF generation backend on the tiny random model, against independent computations."""

from __future__ import annotations

import pytest
import torch

from artifacts.errors import ShortcotError
from evals.backends import Request, SamplingParams, load_backend
from evals.hf_backend import _PerRowSampler

MESSAGES = [
    [{"role": "user", "content": "What is 12 + 7?"}],
    [
        {
            "role": "user",
            "content": "a 3 b 5 c 2 sum mod 10 ; step : a = 3 , total 3 ; b = 5 , total 8",
        }
    ],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "1+1"}],
]


def make_sharp_model_dir(path, tokenizer):
    """The tiny random Llama with large weights (std 0.5): its greedy output depends on
    the prompt, instead of repeating one token, so equivalence tests have teeth."""
    from conftest import make_tiny_model_dir

    from testbed.model import save_checkpoint

    model = make_tiny_model_dir(path, tokenizer, seed=3)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    save_checkpoint(model, tokenizer, path)
    return path


@pytest.fixture(scope="module")
def backend(tmp_path_factory, tiny_tokenizer):
    path = make_sharp_model_dir(tmp_path_factory.mktemp("backend_model"), tiny_tokenizer)
    return load_backend("hf", str(path), batch_size=2, device="cpu")


def test_n_completions_truncation_and_decoding(backend):
    out = backend.generate(
        MESSAGES, SamplingParams(max_new_tokens=5, temperature=0.6, n=3), progress=False
    )
    assert [len(c) for c in out] == [3, 3, 3]
    for per_prompt in out:
        for c in per_prompt:
            eos_seen = any(t in backend.eos_token_ids for t in c.token_ids)
            assert c.finished == eos_seen
            assert c.num_tokens <= 5
            if not c.finished:
                assert c.num_tokens == 5  # hit the limit: truncated
            assert c.text == backend.tokenizer.decode(c.token_ids, skip_special_tokens=True)
    # different samples of one prompt differ (seeded per sample index)
    assert len({tuple(c.token_ids) for c in out[1]}) > 1


def test_greedy_batched_left_padding_matches_unpadded_generate(backend):
    """Batched generation with left padding + KV cache == one prompt at a time, unpadded."""
    out = backend.generate(
        MESSAGES, SamplingParams(max_new_tokens=12, temperature=0), progress=False
    )
    for msgs, (c,) in zip(MESSAGES, out):
        ids = torch.tensor([backend.prompt_ids(msgs)])
        ref = backend.model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=12,
            eos_token_id=sorted(backend.eos_token_ids),
            pad_token_id=backend.pad_token_id,
        )[0, ids.shape[1] :].tolist()
        assert c.token_ids == ref[: len(c.token_ids)]
    assert len({tuple(c.token_ids) for (c,) in out}) == 3  # prompt-dependent, not degenerate
    # the chat template was applied with the generation prompt
    assert backend.render(MESSAGES[0]).endswith("<|assistant|>\n")


def test_samples_do_not_depend_on_batching(backend):
    params = SamplingParams(max_new_tokens=8, temperature=1.0, top_p=0.9, seed=7)
    prompts = [backend.prompt_ids(m) for m in MESSAGES]
    reqs = [Request(p, k) for p in prompts for k in range(2)]
    a = backend.generate_requests(reqs, params, progress=False)
    backend.batch_size = 1
    try:
        b = backend.generate_requests(list(reversed(reqs)), params, progress=False)[::-1]
    finally:
        backend.batch_size = 2
    assert [c.token_ids for c in a] == [c.token_ids for c in b]
    c = backend.generate_requests(
        reqs, SamplingParams(max_new_tokens=8, temperature=1.0, top_p=0.9, seed=8), False
    )
    assert [x.token_ids for x in a] != [x.token_ids for x in c]


def test_finished_flag_from_eos(backend):
    """Declare a token of the greedy continuation as EOS: generation stops right after it."""
    ((c,),) = backend.generate(
        MESSAGES[:1], SamplingParams(max_new_tokens=10, temperature=0), progress=False
    )
    stop = c.token_ids[2]
    first = c.token_ids.index(stop)
    saved = backend.eos_token_ids
    backend.eos_token_ids = {stop}
    try:
        ((d,),) = backend.generate(
            MESSAGES[:1], SamplingParams(max_new_tokens=10, temperature=0), progress=False
        )
    finally:
        backend.eos_token_ids = saved
    assert d.finished and d.token_ids == c.token_ids[: first + 1]


def test_per_row_sampler_distribution():
    """Temperature + top-p + per-row draws reproduce the intended distribution."""
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    rows = 4000
    logits = torch.log(probs).repeat(rows, 1)
    # T = 1, top_p = 0.7 keeps {0, 1} -> renormalised 0.625 / 0.375
    picks = _PerRowSampler(list(range(rows)), 1.0, 0.7)(None, logits.clone()).argmax(-1)
    assert set(picks.tolist()) == {0, 1}
    assert abs((picks == 0).float().mean().item() - 0.625) < 0.03
    # T = 2, no top-p: p ~ sqrt(probs)
    picks = _PerRowSampler(list(range(rows)), 2.0, 1.0)(None, logits.clone()).argmax(-1)
    expected = probs.sqrt() / probs.sqrt().sum()
    freq = torch.bincount(picks, minlength=4).float() / rows
    assert torch.allclose(freq, expected, atol=0.03)
    # same seeds, same draws
    again = _PerRowSampler(list(range(rows)), 2.0, 1.0)(None, logits.clone()).argmax(-1)
    assert torch.equal(picks, again)


def test_bad_backend_and_missing_vllm(tiny_model_dir):
    with pytest.raises(ShortcotError, match="unknown backend"):
        load_backend("tgi", str(tiny_model_dir))
    with pytest.raises(ShortcotError, match="does not exist"):
        load_backend("hf", "./no/such/model")
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(ShortcotError, match="pip install shortcot\\[vllm\\]"):
            load_backend("vllm", str(tiny_model_dir))
    with pytest.raises(ShortcotError, match="temperature"):
        SamplingParams(temperature=-1).validate()


def test_evicting_finished_rows_changes_no_token(backend, monkeypatch):
    """Rows leave the batch when they finish (every EVICT_EVERY tokens); every completion
    must equal what one uninterrupted ``generate`` call over the whole batch produces."""
    import evals.hf_backend as backends

    prompts = [backend.prompt_ids(m) for m in MESSAGES]
    reqs = [Request(p, k) for p in prompts for k in range(3)]
    # Declare two frequent tokens of the sampled text end-of-sequence, so that rows end at
    # different steps (the random model never emits the real one).
    probe = backend.generate_requests(reqs, SamplingParams(max_new_tokens=30, seed=1), False)
    counts: dict[int, int] = {}
    for c in probe:
        for t in c.token_ids[3:]:
            counts[t] = counts.get(t, 0) + 1
    stops = set(sorted(counts, key=counts.get, reverse=True)[:2])
    monkeypatch.setattr(backend, "eos_token_ids", stops)
    monkeypatch.setattr(backend, "batch_size", len(reqs))
    widths = []
    real_generate = backend.model.generate
    real_can_evict = backends.cache_can_drop_rows

    def spy(*args, **kwargs):
        widths.append(kwargs["input_ids"].shape[0])
        return real_generate(*args, **kwargs)

    monkeypatch.setattr(backend.model, "generate", spy)
    for params in (
        SamplingParams(max_new_tokens=30, temperature=1.0, top_p=0.9, seed=1),
        SamplingParams(max_new_tokens=30, temperature=0),
    ):
        monkeypatch.setattr(backends, "EVICT_EVERY", 10**6)  # one generate call
        whole = backend.generate_requests(reqs, params, progress=False)
        widths.clear()
        monkeypatch.setattr(backends, "EVICT_EVERY", 3)
        evicted = backend.generate_requests(reqs, params, progress=False)
        assert [c.token_ids for c in evicted] == [c.token_ids for c in whole]
        assert [c.finished for c in evicted] == [c.finished for c in whole]
        lengths = sorted(len(c.token_ids) for c in whole)
        assert lengths[0] < lengths[-1]  # rows did end at different steps
        assert widths[0] == len(reqs) and min(widths) < len(reqs)  # and rows were evicted
        # a cache that cannot drop rows (static, linear attention): the same tokens, no eviction
        monkeypatch.setattr(backends, "cache_can_drop_rows", lambda cache: False)
        widths.clear()
        kept = backend.generate_requests(reqs, params, progress=False)
        assert [c.token_ids for c in kept] == [c.token_ids for c in whole]
        assert [c.finished for c in kept] == [c.finished for c in whole]
        assert set(widths) == {len(reqs)}
        monkeypatch.setattr(backends, "cache_can_drop_rows", real_can_evict)


def test_current_cache_api_no_deprecation(backend, monkeypatch):
    """Chunked generation hands the KV cache back to ``generate`` under transformers' current
    name: no "past_key_values is deprecated" warning (FutureWarning or logger), and the
    tokens are those of one uninterrupted call."""
    import logging
    import warnings

    import evals.hf_backend as backends

    reqs = [Request(backend.prompt_ids(m), k) for m in MESSAGES for k in range(2)]
    params = SamplingParams(max_new_tokens=12, temperature=1.0, seed=3)
    monkeypatch.setattr(backends, "EVICT_EVERY", 10**6)
    whole = backend.generate_requests(reqs, params, progress=False)
    monkeypatch.setattr(backends, "EVICT_EVERY", 4)  # three generate calls, cache passed twice
    seen: list[str] = []

    class Grab(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    handler = Grab(level=logging.WARNING)
    logging.getLogger("transformers").addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            chunked = backend.generate_requests(reqs, params, progress=False)
    finally:
        logging.getLogger("transformers").removeHandler(handler)
    seen += [str(w.message) for w in caught]
    assert not [m for m in seen if "past_key_values" in m or "deprecated" in m], seen
    assert [c.token_ids for c in chunked] == [c.token_ids for c in whole]
