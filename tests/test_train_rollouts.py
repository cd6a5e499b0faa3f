"""`train.rollouts.generate_evicting` returns token for token what ``model.generate`` returns
under the same seed (and leaves the random generator in the same state), while finished rows
leave the batch; `ShortcotGRPOTrainer` rollouts use it and train to bit-identical weights."""

from __future__ import annotations

import inspect

import pytest
import torch
from transformers import AutoModelForCausalLM, DynamicCache, GenerationConfig

from train import rollouts
from train.rollouts import evicting_generate, generate_evicting

# Many end-of-sequence ids, so that rows of a random tiny model finish at different times.
EOS = [1, *range(20, 44)]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_tokenizer):
    from conftest import make_tiny_model_dir

    path = tmp_path_factory.mktemp("rollouts_model")
    make_tiny_model_dir(path, tiny_tokenizer, seed=3)
    return path


@pytest.fixture(scope="module")
def model(model_dir):
    return AutoModelForCausalLM.from_pretrained(model_dir).eval()


@pytest.fixture
def evictions(monkeypatch):
    """Counts the rows dropped from KV caches (proof that rows really left the batch)."""
    dropped = []
    original = DynamicCache.batch_select_indices

    def counting(self, indices):
        if len(indices) < self.layers[0].keys.shape[0]:  # not the prefill's copies to rows
            dropped.append(self.layers[0].keys.shape[0] - len(indices))
        return original(self, indices)

    monkeypatch.setattr(DynamicCache, "batch_select_indices", counting)
    return dropped


def left_padded(lengths, pad, seed=0):
    """A left-padded batch of random prompts of these lengths."""
    g = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.full((len(lengths), width), pad)
    mask = torch.zeros((len(lengths), width), dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, width - n :] = torch.randint(50, 250, (n,), generator=g)
        mask[i, width - n :] = 1
    return ids, mask


def rng_state(device) -> torch.Tensor:
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state()


def both(model, ids, mask, cfg, seed, evict_every=2, **kw):
    """(generate's output, ours, generator states after each)."""
    torch.manual_seed(seed)
    expected = model.generate(input_ids=ids, attention_mask=mask, generation_config=cfg, **kw)
    state = rng_state(ids.device)
    torch.manual_seed(seed)
    got = generate_evicting(model, ids, mask, cfg, evict_every=evict_every, **kw)
    return expected, got, state, rng_state(ids.device)


def assert_same(expected, got, state, got_state):
    assert got.shape == expected.shape
    assert torch.equal(got, expected), (got - expected).nonzero()[:5]
    assert torch.equal(got_state, state), "the generator must end in the same state"


def sampling(**kw) -> GenerationConfig:
    base = dict(do_sample=True, max_new_tokens=40, eos_token_id=EOS, pad_token_id=2)
    return GenerationConfig(**{**base, **kw})


def test_the_multinomial_fact_the_identity_rests_on():
    """ATen's one-sample multinomial is argmax(p / q), q ~ Exp(1) drawn for the whole batch."""
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(6, 300, generator=g) * 3, dim=-1)
    probs[:, :100] = 0  # filtered tokens
    for seed in range(5):
        torch.manual_seed(seed)
        a = torch.multinomial(probs, 1).squeeze(1)
        torch.manual_seed(seed)
        b = (probs / torch.empty_like(probs).exponential_(1)).argmax(-1)
        assert torch.equal(a, b)


def test_a_row_forward_does_not_depend_on_the_other_rows(model):
    """The other premise: on CPU a row's logits are the same numbers in a smaller batch."""
    ids, mask = left_padded([7, 3, 5, 6], pad=2)
    full = model(input_ids=ids, attention_mask=mask).logits
    for keep in ([0, 2], [1], [3, 1, 0]):
        part = model(input_ids=ids[keep], attention_mask=mask[keep]).logits
        assert torch.equal(part, full[keep])


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize(
    "lengths", [[6, 2, 3, 1], [5] * 8, [4, 9, 1, 7, 2, 2, 8]], ids=["4", "8same", "7"]
)
def test_sampling_matches_generate_token_for_token(model, evictions, seed, lengths):
    ids, mask = left_padded(lengths, pad=2, seed=seed)
    assert_same(*both(model, ids, mask, sampling(temperature=0.9, top_p=0.95, top_k=0), seed))
    assert sum(evictions) > 0, "rows should have left the batch"


@pytest.mark.parametrize(
    "settings",
    [
        dict(temperature=1.0, top_p=1.0, top_k=0),
        dict(temperature=0.6, top_p=0.9),
        dict(temperature=1.3, top_k=20),
        dict(temperature=0.7, top_p=0.8, top_k=50, min_p=0.05),
        dict(temperature=1.0, repetition_penalty=1.2, top_k=0),
        dict(temperature=0.8, min_new_tokens=5, no_repeat_ngram_size=3),
        dict(do_sample=False),
    ],
    ids=["plain", "T0.6-p0.9", "T1.3-k20", "p-k-minp", "rep-penalty", "min-new-ngram", "greedy"],
)
@pytest.mark.parametrize("evict_every", [1, 3, 16])
def test_logits_processors_and_eviction_intervals(model, settings, evict_every):
    ids, mask = left_padded([6, 2, 3, 1, 5, 4], pad=2, seed=7)
    cfg = sampling(max_new_tokens=48, **settings)
    for seed in (0, 11):
        assert_same(*both(model, ids, mask, cfg, seed, evict_every=evict_every))


def test_one_row_no_padding_and_no_attention_mask(model):
    ids, _ = left_padded([5], pad=2)
    assert_same(*both(model, ids, None, sampling(), 4))
    ids, mask = left_padded([4, 4, 4], pad=2, seed=1)
    assert_same(*both(model, ids, None, sampling(), 5))
    assert_same(*both(model, ids, mask, sampling(), 5))


def test_rows_that_never_finish_and_the_token_limit(model):
    ids, mask = left_padded([3, 5], pad=2)
    cfg = sampling(eos_token_id=[1], max_new_tokens=12)  # random model: rows hit the limit
    expected, *rest = both(model, ids, mask, cfg, 0)
    assert expected.shape[1] == ids.shape[1] + 12
    assert_same(expected, *rest)


@pytest.mark.parametrize(
    "extra",
    [dict(num_beams=2, do_sample=False), dict(return_dict_in_generate=True)],
    ids=["beams", "dict-output"],
)
def test_unsupported_settings_run_the_stock_generate(model, evictions, extra):
    ids, mask = left_padded([6, 2, 3], pad=2)
    cfg = sampling(max_new_tokens=16, **extra)
    torch.manual_seed(0)
    expected = model.generate(input_ids=ids, attention_mask=mask, generation_config=cfg)
    torch.manual_seed(0)
    got = generate_evicting(model, ids, mask, cfg, evict_every=1)
    if extra.get("return_dict_in_generate"):
        expected, got = expected.sequences, got.sequences
    assert torch.equal(got, expected)
    assert not evictions


def grpo_batch(prompts: int, copies: int, seed: int = 0):
    """As TRL builds a rollout batch: each prompt repeated ``copies`` times in a row."""
    ids, mask = left_padded([2 + (3 * i) % 7 for i in range(prompts)], pad=2, seed=seed)
    return ids.repeat_interleave(copies, 0), mask.repeat_interleave(copies, 0)


def prefill_rows(model, monkeypatch) -> list[int]:
    """The batch size of every forward that starts from an empty cache (a prefill)."""
    sizes = []
    forward = type(model).forward

    def spy(self, *args, **kwargs):
        cache = (
            kwargs.get("cache")
            if kwargs.get("cache") is not None
            else kwargs.get("past_key_values")
        )
        if cache is None or cache.get_seq_length() == 0:
            sizes.append(kwargs["input_ids"].shape[0])
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(type(model), "forward", spy)
    return sizes


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("prompts,copies", [(3, 4), (1, 8), (5, 2)])
def test_repeated_prompts_are_prefilled_once_with_the_same_samples(
    model, evictions, monkeypatch, seed, prompts, copies
):
    """GRPO's batch holds each prompt ``num_generations`` times: the prompt's forward runs
    once per distinct prompt, and every token and the generator's state are generate's."""
    ids, mask = grpo_batch(prompts, copies, seed)
    cfg = sampling(temperature=0.9, top_p=0.95, top_k=0)
    torch.manual_seed(seed)
    expected = model.generate(input_ids=ids, attention_mask=mask, generation_config=cfg)
    state = rng_state(ids.device)
    sizes = prefill_rows(model, monkeypatch)
    torch.manual_seed(seed)
    got = generate_evicting(model, ids, mask, cfg, evict_every=2)
    assert_same(expected, got, state, rng_state(ids.device))
    assert sizes == [prompts]
    assert sum(evictions) > 0


def test_prefill_of_a_forward_that_draws_random_numbers_is_redone_in_full(model_dir, monkeypatch):
    """With dropout in training mode the draws depend on the batch shape: the deduplicated
    prefill is undone (generator and cache) and computed for every row, as generate does."""
    m = AutoModelForCausalLM.from_pretrained(model_dir, attention_dropout=0.3).train()
    ids, mask = grpo_batch(2, 3)
    for seed in range(2):
        torch.manual_seed(seed)
        expected = m.generate(input_ids=ids, attention_mask=mask, generation_config=sampling())
        state = torch.get_rng_state()
        sizes = prefill_rows(m, monkeypatch)
        torch.manual_seed(seed)
        got = generate_evicting(m, ids, mask, sampling(), evict_every=1)
        assert_same(expected, got, state, torch.get_rng_state())
        assert sizes == [2, 6]  # tried once per prompt, then redone for all rows
        monkeypatch.undo()


def test_a_forward_that_draws_random_numbers_keeps_every_row(model_dir, evictions):
    """Dropout in training mode draws per batch row: evicting would change the draws."""
    m = AutoModelForCausalLM.from_pretrained(model_dir, attention_dropout=0.3).train()
    ids, mask = left_padded([6, 2, 3, 1], pad=2)
    for seed in range(3):
        assert_same(*both(m, ids, mask, sampling(), seed, evict_every=1))
    assert not evictions
    m.eval()  # no dropout: rows leave again
    assert_same(*both(m, ids, mask, sampling(), 0, evict_every=1))
    assert evictions


def test_lora_model(model_dir, evictions):
    peft = pytest.importorskip("peft")
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    m = peft.get_peft_model(base, cfg).eval()
    ids, mask = left_padded([6, 2, 3, 1], pad=2)
    expected_state = None
    for seed in range(2):
        torch.manual_seed(seed)
        expected = m.generate(input_ids=ids, attention_mask=mask, generation_config=sampling())
        expected_state = torch.get_rng_state()
        torch.manual_seed(seed)
        with evicting_generate(m, evict_every=1):  # as the trainer hook patches it
            got = m.generate(input_ids=ids, attention_mask=mask, generation_config=sampling())
        assert_same(expected, got, expected_state, torch.get_rng_state())
    assert evictions
    assert "generate" not in vars(m), "the patch must be undone"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda(model_dir, dtype):
    """On GPUs a smaller batch may select another matmul kernel: run this where there is one."""
    m = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).cuda().eval()
    ids, mask = left_padded([6, 2, 3, 1, 5, 4, 7, 2], pad=2)
    for seed in range(4):
        cfg = sampling(temperature=0.9, top_p=0.95, max_new_tokens=64)
        assert_same(*both(m, ids.cuda(), mask.cuda(), cfg, seed, evict_every=3))


# -- the hook in ShortcotGRPOTrainer ------------------------------------------------------


def test_trl_still_generates_through_model_generate():
    """The hook patches the unwrapped model's ``generate`` for TRL's non-vLLM branch."""
    from trl import GRPOTrainer

    src = inspect.getsource(GRPOTrainer._generate_single_turn)
    assert "unwrapped_model.generate(" in src and "self.use_transformers_continuous_batching" in src
    assert list(inspect.signature(GRPOTrainer._generate_single_turn).parameters)[0] == "self"


def _length_reward(completions, **kwargs):
    return [float(len(c)) for c in completions]


def _train_two_steps(
    model_dir, workdir, evict_every: int, prompts: int = 2, generations: int = 4, length: int = 32
) -> dict[str, torch.Tensor]:
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import GRPOConfig

    from train.trainer import ShortcotGRPOTrainer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    model.generation_config.eos_token_id = EOS  # rows finish at different times
    args = GRPOConfig(
        output_dir=str(workdir),
        num_generations=generations,
        per_device_train_batch_size=prompts * generations,
        max_completion_length=length,
        max_steps=2,
        learning_rate=1e-3,
        temperature=0.9,
        bf16=False,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        seed=0,
        disable_tqdm=True,
    )
    rows = [{"prompt": f"What is {i} + 7?"} for i in range(max(8, 2 * prompts))]
    trainer = ShortcotGRPOTrainer(
        model=model,
        reward_funcs=[_length_reward],
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
        advantage="grpo",
    )
    trainer.rollout_evict_every = evict_every
    trainer.train()
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def test_grpo_training_is_bit_identical_with_and_without_eviction(tmp_path, model_dir, evictions):
    off = _train_two_steps(model_dir, tmp_path / "off", evict_every=0)
    assert not evictions
    on = _train_two_steps(model_dir, tmp_path / "on", evict_every=2)
    assert sum(evictions) > 0, "rollout rows should have left the batch"
    assert off.keys() == on.keys()
    for name in off:
        assert torch.equal(off[name], on[name]), name
    before = AutoModelForCausalLM.from_pretrained(model_dir).state_dict()
    assert any(not torch.equal(before[k], on[k]) for k in before), "training changed nothing"


def test_grpo_steps_at_the_testbed_size_are_bit_identical_on_one_and_two_threads(
    tmp_path, tiny_tokenizer
):
    """The pipeline may run an RL stage on 2 threads (``stage_threads``): on this machine,
    at the default testbed's model size (4 x 128 Llama) and RL batch (8 prompts x 8 rollouts
    of up to 48 tokens), that trains the same weights as 1 thread (MKL splits a matmul's
    rows and columns between threads, not its sum; the reductions are too small to be
    split). 20 steps of the real recipe were compared once: identical. If a machine's BLAS
    splits differently, this fails; keep stage_threads off there."""
    from conftest import make_tiny_model_dir

    model_dir = tmp_path / "model"
    make_tiny_model_dir(model_dir, tiny_tokenizer, seed=1, hidden_size=128, num_layers=4)
    shape = dict(prompts=8, generations=8, length=48)
    one = _train_two_steps(model_dir, tmp_path / "one", rollouts.EVICT_EVERY, **shape)
    torch.set_num_threads(2)  # the autouse fixture restores the count
    two = _train_two_steps(model_dir, tmp_path / "two", rollouts.EVICT_EVERY, **shape)
    assert one.keys() == two.keys()
    assert [k for k in one if not torch.equal(one[k], two[k])] == []
    before = AutoModelForCausalLM.from_pretrained(model_dir).state_dict()
    assert any(not torch.equal(before[k], one[k]) for k in before), "training changed nothing"


def test_the_stock_loop_sentinel_is_raised_before_any_work(model):
    """An unsupported setting must leave no trace (no random numbers drawn, no forward)."""
    ids, mask = left_padded([3, 2], pad=2)
    calls = []
    hook = model.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        state = torch.get_rng_state()
        with pytest.raises(rollouts._StockLoop):
            model.generate(
                input_ids=ids,
                attention_mask=mask,
                generation_config=sampling(num_beams=2, do_sample=False),
                custom_generate=rollouts._evicting_sample,
            )
        assert not calls and torch.equal(state, torch.get_rng_state())
    finally:
        hook.remove()


def test_passed_processors_and_an_own_generate_are_left_alone(model, evictions):
    from transformers import LogitsProcessorList, TemperatureLogitsWarper

    ids, mask = left_padded([6, 2, 3, 1], pad=2)
    procs = LogitsProcessorList([TemperatureLogitsWarper(0.8)])
    assert_same(*both(model, ids, mask, sampling(), 0, evict_every=1, logits_processor=procs))
    assert not evictions

    def own(*args, **kwargs):
        return "own"

    model.generate = own
    try:
        with evicting_generate(model):
            assert model.generate() == "own"
        assert model.generate is own
    finally:
        del model.generate
