"""The graph each exportable model kind contributes to an ONNX export (:func:`rankwise.serving.export.export_model`).

A builder reads a rankwise model directory and returns an :class:`ExportGraph`: the module to
trace (its ``forward`` returns the one served output), example and parity inputs, dynamic axes,
``serving.json`` metadata and the assets the runtime needs (tokenizer, item vectors).
:data:`EXPORTERS` maps each ``rankwise.json`` kind to its builder.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rankwise.core.model_dir import ModelDirError
from rankwise.serving._kinds import RECOMMENDER_CLASSES, load_class

__all__ = ["EXPORTERS", "ExportGraph", "PARITY_PAIRS", "cross_encoder_graph", "bi_encoder_graph", "erank_graph",
           "user_tower_graph", "hllm_item_tower_graph"]

# Real (query, document) pairs of varied length, used for tracing and the parity check when the
# caller passes none. The last document is long enough to be cut at any max length <= 512.
PARITY_PAIRS: list[tuple[str, str]] = [
    ("what is bm25", "BM25 is a bag-of-words ranking function used by search engines to estimate relevance."),
    ("vitamin d deficiency and bone density",
     "Low serum 25-hydroxyvitamin D was associated with reduced bone mineral density in older adults."),
    ("how do cross-encoders rank documents", "A fish swims in the sea."),
    ("does smoking cause lung cancer",
     "Cohort studies show that cigarette smoking increases the risk of lung cancer roughly twenty-fold, "
     "with risk rising with the number of pack-years and falling after cessation."),
    ("neural reranking latency",
     " ".join(["Transformer rerankers score every query-document pair jointly, so their cost grows "
               "linearly with the number of candidates and quadratically with the sequence length."] * 12)),
]


@dataclass
class ExportGraph:
    """What one model kind contributes to an export.

    Args:
        module: a ``torch.nn.Module`` in eval mode whose ``forward(**inputs)`` returns the one
            output tensor to serve (scores ``(B,)`` or vectors ``(B, D)``).
        example: inputs used to trace the graph.
        parity: other real inputs (different batch and sequence sizes) for the parity check.
        output: the output's name.
        dynamic_axes: onnx dynamic axes per input/output name.
        metadata: kind-specific fields written into ``serving.json``.
        save_assets: writes tokenizer files, item vectors, ... into the export directory.
        encoder_config: the HF config of the one BERT-family encoder inside ``module``, traced with
            eager attention, when the graph may be fused by :func:`_fuse_encoder`; ``None`` otherwise.
        make_feeds: tokenises ``(query, doc)`` pairs into one padded input batch (pair scorers, the ERank
            prompt scorer included; the calibration batches of ``quantize="int8-smooth"`` and of OpenVINO
            int8); ``None`` for other kinds.
    """

    module: Any
    example: dict[str, Any]
    parity: dict[str, Any]
    output: str
    dynamic_axes: dict[str, dict[int, str]]
    metadata: dict[str, Any] = field(default_factory=dict)
    save_assets: Callable[[Path], None] = lambda _d: None
    encoder_config: Any = None
    make_feeds: Callable[[Sequence[tuple[str, str]]], dict[str, Any]] | None = None


def cross_encoder_graph(model_dir: Path, meta: dict, pairs: Sequence[tuple[str, str]]) -> ExportGraph:
    import torch

    from rankwise.core.registry import load_target, model_kind

    cls = load_target(model_kind(meta["kind"]).model)  # CrossEncoder, or a subclass registered under its own kind
    ce = cls.from_pretrained(model_dir, attn_implementation="eager")  # the pattern _fuse_encoder matches
    ce.model.eval()
    names = ["input_ids", "attention_mask"]
    if "token_type_ids" in ce.tokenizer.model_input_names:
        names.append("token_type_ids")

    class _Logit(torch.nn.Module):
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model  # registered, so the export sees its weights

        def forward(self, input_ids, attention_mask, token_type_ids=None):  # (B, T) each
            extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
            return ce.pair_logits(input_ids, attention_mask, **extra)  # (B,), through ce's pooling

    def feeds(sel: Sequence[tuple[str, str]]) -> dict[str, torch.Tensor]:
        enc = ce.tokenize([q for q, _ in sel], [d for _, d in sel])
        return {n: enc[n] for n in names}

    axes = {n: {0: "batch", 1: "sequence"} for n in names} | {"scores": {0: "batch"}}
    return ExportGraph(
        module=_Logit(ce.model).eval(),
        example=feeds(pairs[:2]),
        parity=feeds(pairs),
        output="scores",
        dynamic_axes=axes,
        metadata={"task": "pair-score", "max_length": ce.max_length, "score": "logit",
                  "pad_token_id": ce.tokenizer.pad_token_id, "truncation": "longest_first"},
        save_assets=lambda d: ce.tokenizer.save_pretrained(str(d)),
        encoder_config=ce.model.config,
        make_feeds=feeds,
    )


def bi_encoder_graph(model_dir: Path, meta: dict, pairs: Sequence[tuple[str, str]]) -> ExportGraph:
    import torch

    from rankwise.rankers.bi_encoder_ranker import TrainableBiEncoder

    ranker = TrainableBiEncoder.from_pretrained(model_dir, cache=False)
    st = ranker.doc_encoder.model  # sentence-transformers: Transformer, Pooling[, Normalize]
    pooling = next((m for m in st if type(m).__name__ == "Pooling"), None)
    if getattr(pooling, "pooling_mode", None) != "mean":
        raise ModelDirError(f"{model_dir / 'rankwise.json'}: the document tower does not use mean pooling; only mean pooling is exported")
    doc_model = st[0].auto_model
    doc_tok = st.tokenizer
    q_tok = ranker.tokenizer

    def mean_pool(hidden, mask):  # (N, T, D), (N, T) -> unit (N, D)
        m = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1)

    class _ScaledCosine(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.query = ranker.model
            self.doc = doc_model

        def forward(self, query_input_ids, query_attention_mask, doc_input_ids, doc_attention_mask):
            q = self.query(query_input_ids, query_attention_mask)  # (1 or N, D) unit
            d = mean_pool(self.doc(input_ids=doc_input_ids, attention_mask=doc_attention_mask).last_hidden_state,
                          doc_attention_mask)  # (N, D) unit
            return self.query.log_scale.exp() * (q * d).sum(-1)  # (N,)

    def feeds(sel: Sequence[tuple[str, str]], one_query: bool) -> dict[str, torch.Tensor]:
        queries = [sel[0][0]] if one_query else [q for q, _ in sel]
        qe = q_tok(queries, truncation=True, max_length=ranker.max_length, padding=True, return_tensors="pt")
        de = doc_tok([d for _, d in sel], truncation=True, max_length=ranker.doc_max_length, padding=True, return_tensors="pt")
        return {"query_input_ids": qe["input_ids"], "query_attention_mask": qe["attention_mask"],
                "doc_input_ids": de["input_ids"], "doc_attention_mask": de["attention_mask"]}

    def save(d: Path) -> None:
        q_tok.save_pretrained(str(d))
        doc_tok.save_pretrained(str(d / "doc_tokenizer"))

    names = ["query_input_ids", "query_attention_mask", "doc_input_ids", "doc_attention_mask"]
    return ExportGraph(
        module=_ScaledCosine().eval(),
        example=feeds(pairs[:2], one_query=False),
        parity=feeds(pairs, one_query=True),  # one query against many documents, as served
        output="scores",
        dynamic_axes={n: {0: "query_batch" if n.startswith("query") else "batch", 1: n.split("_")[0] + "_sequence"} for n in names}
        | {"scores": {0: "batch"}},
        metadata={"task": "pair-score", "encoding": "bi-encoder", "max_length": ranker.max_length,
                  "doc_max_length": ranker.doc_max_length, "score": "scale * cosine", "scale": ranker.scale,
                  "pad_token_id": q_tok.pad_token_id, "doc_pad_token_id": doc_tok.pad_token_id},
        save_assets=save,
    )


def erank_graph(model_dir: Path, meta: dict, pairs: Sequence[tuple[str, str]], share_prefix: bool = True) -> ExportGraph:
    """The ERank prompt scorer: prompt (+ the integer readout's appended "1") in, expected score out.

    With ``share_prefix`` (the default) the graph takes one query's documents at a time: the tokens
    every prompt of the batch starts with (chat template, instruction, query: ``prefix_ids``,
    ``(1, P)``) run once, and their keys/values are broadcast to the batch's left-padded remainders
    (``input_ids`` / ``attention_mask``, ``(B, S)``), which continue at positions ``P, P + 1, ...``
    (explicit position ids, so left padding leaves no gap). The scores equal the per-document graph's:
    the same tokens at the same positions, since the prefix is a split of each prompt's own token ids.
    Without it, every row is a whole left-padded prompt.
    """
    import torch
    from transformers import DynamicCache

    from rankwise.rankers.erank import ERankRanker, expected_score
    from rankwise.serving.runtime import shared_prefix_length

    ranker = ERankRanker.from_pretrained(model_dir, device="cpu")  # traced with CPU feeds
    if ranker.readout == "reasoning":
        raise ModelDirError(f"{model_dir / 'rankwise.json'}: readout 'reasoning' generates text and cannot be exported; "
                            "export the 'integer' or 'yes_no' readout")
    integer = ranker.readout == "integer"
    append = [ranker._digits[1]] if integer else []
    tok = ranker.tokenizer
    # transformers renamed past_key_values to cache (both work in between); the check below catches a miss
    cache_kwarg = "cache" if "cache" in inspect.signature(type(ranker.model).forward).parameters else "past_key_values"
    keep = len(append) + 1  # positions the readout reads logits at

    class _ExpectedScore(torch.nn.Module):
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model
            self.register_buffer("digits", torch.tensor(ranker._digits))
            self.register_buffer("yes", torch.tensor(ranker._yes))
            self.register_buffer("no", torch.tensor(ranker._no))

        def readout(self, logits: torch.Tensor) -> torch.Tensor:  # (B, keep, V) -> (B,)
            logp = torch.log_softmax(logits.float(), dim=-1)
            if integer:
                return expected_score(logp[:, 0, self.digits], logp[:, 1, self.digits])  # (B,) in [0, 10]
            yes = torch.logsumexp(logp[:, -1, self.yes], -1)  # (B,)
            no = torch.logsumexp(logp[:, -1, self.no], -1)
            return torch.sigmoid(yes - no)  # (B,) in [0, 1]

        def forward(self, input_ids, attention_mask):  # (B, T) left-padded prompt (+ "1" for integer)
            return self.readout(self.model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=keep).logits)

    class _SharedPrefixScore(_ExpectedScore):
        def forward(self, prefix_ids, input_ids, attention_mask):  # (1, P); (B, S) left-padded remainders
            batch, prefix = input_ids.size(0), prefix_ids.size(1)
            # an explicit mask: without one transformers asks SDPA for grouped-query attention, which
            # the ONNX exporter cannot convert (SmolLM2, Qwen2.5 use GQA)
            out = self.model(input_ids=prefix_ids, attention_mask=torch.ones_like(prefix_ids), use_cache=True)
            cached = out.cache if cache_kwarg == "cache" else out.past_key_values
            # repeat (ONNX Tile), not expand: OpenVINO's RoPE fusion drops an Expand that follows it
            cache = DynamicCache([(layer.keys.repeat(batch, 1, 1, 1), layer.values.repeat(batch, 1, 1, 1))
                                  for layer in cached.layers], config=self.model.config)
            mask = torch.cat([torch.ones(batch, prefix, dtype=attention_mask.dtype), attention_mask], 1)  # (B, P + S)
            positions = prefix + attention_mask.cumsum(-1) - 1  # real tokens at P, P + 1, ...; pads are masked
            logits = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                                logits_to_keep=keep, **{cache_kwarg: cache}).logits
            return self.readout(logits)

    def prompt_ids(sel: Sequence[tuple[str, str]]) -> list[list[int]]:
        return [tok(ranker.prompts(q, [d])[0], add_special_tokens=False)["input_ids"] + append for q, d in sel]

    def pad_left(rows: list[list[int]]) -> dict[str, torch.Tensor]:
        batch = tok.pad([{"input_ids": r} for r in rows], return_tensors="pt", padding=True)  # left (LLMRanker sets it)
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    def feeds(sel: Sequence[tuple[str, str]]) -> dict[str, torch.Tensor]:
        if not share_prefix:
            return pad_left(prompt_ids(sel))
        if len({q for q, _ in sel}) != 1:
            raise ValueError("erank_graph: a shared-prefix batch holds one query's documents")
        rows = prompt_ids(sel)
        cut = shared_prefix_length(rows, own=keep)  # the readout's logit positions stay in the rows
        return {"prefix_ids": torch.tensor([rows[0][:cut]]), **pad_left([r[cut:] for r in rows])}

    def one_query(sel: Sequence[tuple[str, str]], query: str) -> list[tuple[str, str]]:
        return [(query, d) for _, d in sel] if share_prefix else list(sel)

    names = (["prefix_ids"] if share_prefix else []) + ["input_ids", "attention_mask"]
    module = (_SharedPrefixScore if share_prefix else _ExpectedScore)(ranker.model).eval()
    parity_pairs = one_query(pairs, pairs[-1][0])
    parity = feeds(parity_pairs)
    if share_prefix:  # the split must not change a score: compare with whole prompts before tracing
        with torch.inference_mode():
            whole = _ExpectedScore(ranker.model).eval()(**pad_left(prompt_ids(parity_pairs)))
            split = module(**parity)
        gap = float((whole - split).abs().max())
        if not gap <= 1e-4 * (1.0 + float(whole.abs().max())):
            raise ModelDirError(f"{model_dir}: the shared-prefix ERank graph differs from whole prompts by {gap:.3g} "
                                "with this transformers version; export with share_prefix=False")
    return ExportGraph(
        module=module,
        example=feeds(one_query(pairs[:2], pairs[0][0])),
        parity=parity,
        output="scores",
        dynamic_axes={n: {0: "batch", 1: "sequence"} for n in names} | {"scores": {0: "batch"}}
        | ({"prefix_ids": {1: "prefix"}} if share_prefix else {}),
        metadata={"task": "pair-score", "encoding": "prompt", "readout": ranker.readout,
                  "max_doc_tokens": ranker.max_doc_tokens, "append_ids": append, "padding_side": "left",
                  "pad_token_id": tok.pad_token_id, "max_length": None, "shared_prefix": share_prefix,
                  "score": "expected integer 0-10" if integer else "P(yes) / (P(yes) + P(no))"},
        save_assets=lambda d: tok.save_pretrained(str(d)),
        make_feeds=feeds,  # one query's (query, doc) prompts: OpenVINO / NNCF int8 calibration
    )


def user_tower_graph(model_dir: Path, meta: dict, _pairs: Sequence[tuple[str, str]]) -> ExportGraph:
    import torch

    model = load_class(RECOMMENDER_CLASSES[meta["kind"]]).from_pretrained(model_dir).eval()
    cfg = model.config
    if not model.item_ids:
        raise ModelDirError(f"{model_dir / 'rankwise.json'}: field 'item_ids' is missing (the item-id mapping)")

    class _UserTower(torch.nn.Module):
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, item_seq):  # (B, L) left-padded item indices
            return self.model.encode_users(item_seq)  # (B, D) or (B, M, D)

    def histories(batch: int, length: int, seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        seq = torch.randint(1, cfg.n_items + 1, (batch, length), generator=gen)  # (B, L)
        keep = torch.randint(1, length + 1, (batch,), generator=gen)  # items per row, >= 1
        keep[0] = length
        pad = torch.arange(length).unsqueeze(0) < (length - keep).unsqueeze(1)  # (B, L) left padding
        return seq.masked_fill(pad, 0)

    length = min(cfg.max_len, 50)
    with torch.inference_mode():
        vectors = model.item_embeddings()[1:].float().numpy()  # (n_items, D)
    multi = {0: "batch"} if model.encode_users(histories(1, 3, 0)).dim() == 2 else {0: "batch", 1: "interests"}
    return ExportGraph(
        module=_UserTower(model).eval(),
        example={"item_seq": histories(2, max(2, length // 2), 0)},
        parity={"item_seq": histories(5, length, 1)},
        output="user_vectors",
        dynamic_axes={"item_seq": {0: "batch", 1: "sequence"}, "user_vectors": multi},
        metadata={"task": "user-tower", "max_len": cfg.max_len, "similarity": cfg.similarity,
                  "item_vectors": "item_vectors.npy", "item_ids": list(model.item_ids),
                  **({"dataset": meta["dataset"]} if meta.get("dataset") else {})},
        save_assets=lambda d: np.save(d / "item_vectors.npy", vectors),
    )


def hllm_item_tower_graph(model_dir: Path, meta: dict, _pairs: Sequence[tuple[str, str]]) -> ExportGraph:
    import torch

    from rankwise.recsys.hllm import _ItemLLM

    model = load_class(RECOMMENDER_CLASSES["hllm"]).from_pretrained(model_dir).eval()
    cfg = model.config
    texts = model.item_texts
    if not texts:
        raise ModelDirError(f"{model_dir}: item_texts.json is missing; the item tower needs the item texts for its parity check")
    item_llm = model.item_llm if model.item_llm is not None else _ItemLLM(cfg)  # frozen: the configured LLM
    item_llm.eval()
    tok = item_llm.tokenizer

    class _ItemTower(torch.nn.Module):
        """``_ItemLLM.forward`` from token ids (it tokenises inside), then the item adapter."""

        def __init__(self) -> None:
            super().__init__()
            self.item_llm = item_llm
            self.adapter = model.adapter

        def forward(self, input_ids, attention_mask):  # (n, T) right-padded "prompt + text" tokens
            llm = self.item_llm.llm
            embeds = llm.get_input_embeddings()(input_ids)  # (n, T, H)
            if self.item_llm.item_token is None:
                hidden = llm(inputs_embeds=embeds, attention_mask=attention_mask).last_hidden_state  # (n, T, H)
                w = attention_mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * w).sum(1) / w.sum(1).clamp(min=1)  # (n, H)
            else:
                lengths = attention_mask.sum(1)  # (n,): the [ITEM] slot follows the last text token
                positions = torch.arange(input_ids.shape[1] + 1)[None, :]  # (1, T + 1)
                embeds = torch.cat([embeds, embeds.new_zeros(embeds.shape[0], 1, embeds.shape[2])], 1)
                embeds = torch.where((positions == lengths[:, None]).unsqueeze(-1), self.item_llm.item_token, embeds)
                attn = (positions <= lengths[:, None]).long()  # (n, T + 1)
                hidden = llm(inputs_embeds=embeds, attention_mask=attn).last_hidden_state
                pooled = hidden[torch.arange(hidden.shape[0]), lengths]  # (n, H)
            return self.adapter(pooled)  # (n, hidden)

    def feeds(sel: Sequence[str]) -> dict[str, torch.Tensor]:
        enc = tok([cfg.prompt + t for t in sel], padding=True, truncation=True, max_length=cfg.max_text_len, return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    by_length = sorted(texts, key=len)
    sample = by_length[:2] + by_length[-2:] + texts[:4]  # shortest, longest and the first items
    names = ["input_ids", "attention_mask"]
    return ExportGraph(
        module=_ItemTower().eval(),
        example=feeds(texts[:2]),
        parity=feeds(sample),
        output="item_vectors",
        dynamic_axes={n: {0: "batch", 1: "sequence"} for n in names} | {"item_vectors": {0: "batch"}},
        metadata={"task": "item-tower", "prompt": cfg.prompt, "max_length": cfg.max_text_len,
                  "similarity": cfg.similarity, "pad_token_id": tok.pad_token_id,
                  # a new item has no learned id vector: the tower gives A(text) alone (catalog items: the user-tower export's table)
                  **({"item_id_vectors": "not added (new items)"} if getattr(cfg, "item_id_vectors", False) else {})},
        save_assets=lambda d: tok.save_pretrained(str(d)),
    )


def _registered(field: str) -> dict[str, Callable[[Path, dict, Sequence[tuple[str, str]]], ExportGraph]]:
    """The builders the registry names for ``field`` (``export`` or ``item_tower``), kind by kind."""
    from rankwise.core.registry import kinds, load_target

    return {n: load_target(getattr(k, field)) for n, k in kinds().items() if getattr(k, field)}


class _Builders(dict):
    """Graph builders by kind: explicit entries first (tests, plug-ins), then the registry's, looked up
    when asked, so a kind registered after import is exportable."""

    def __init__(self, field: str) -> None:
        super().__init__()
        self.field = field

    def _all(self) -> dict:
        return {**_registered(self.field), **dict(self.items())}

    def get(self, kind, default=None):  # noqa: ANN001, ANN201
        return self._all().get(kind, default)

    def __contains__(self, kind: object) -> bool:
        return kind in self._all()

    def __missing__(self, kind: str):  # noqa: ANN204
        return self._all()[kind]

    def known(self) -> list[str]:
        return sorted(self._all())


ITEM_TOWER_EXPORTERS = _Builders("item_tower")
"""Item-tower graph builders (item text → item vector) by kind, for ``export_model(part="item-tower")``."""

EXPORTERS = _Builders("export")
"""Graph builders by ``rankwise.json`` kind: ``(model_dir, rankwise_meta, parity_pairs) -> ExportGraph``."""
