"""Export a rankwise model directory to ONNX, with a parity check against PyTorch at export time.

The exported directory holds ``model.onnx`` (dynamic batch and sequence axes), whatever the
runtime needs to build inputs (the tokenizer, cached item vectors) and ``serving.json``: kind,
input and output names, max length, score mapping, precision, the measured parity and the
rankwise version. :func:`export_model` dispatches on the source directory's ``rankwise.json``
``kind``; each exportable kind registers a graph builder in :data:`EXPORTERS`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rankwise.core.model_dir import ModelDirError, read_rankwise_json
from rankwise.serving._kinds import RECOMMENDER_CLASSES, load_class

__all__ = [
    "EXPORTERS",
    "SERVING_JSON",
    "ExportGraph",
    "ExportParityError",
    "ExportResult",
    "export_model",
    "read_serving_json",
    "PARITY_PAIRS",
    "read_pairs_file",
]

log = logging.getLogger("rankwise.serving")

SERVING_JSON = "serving.json"
ONNX_FILE = "model.onnx"
HEAD_FILE = "head.onnx"  # the fp32 graph of an export with an exact head (serving.cascade)
OPSET = 17
BLOCKWISE_INT8_BLOCK = 128  # input channels per MatMulNBits block (one weight scale, one activation scale)

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


class _DropLogLine(logging.Filter):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


class ExportParityError(RuntimeError):
    """The exported graph disagrees with PyTorch beyond the tolerance on real inputs."""


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
        make_feeds: tokenises ``(query, doc)`` pairs into one padded input batch (pair scorers; the
            calibration batches of ``quantize="int8-smooth"``); ``None`` for other kinds.
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


@dataclass(frozen=True)
class ExportResult:
    """Where the export went and how close it is to PyTorch."""

    output_dir: Path
    kind: str
    precision: str
    parity_max_abs_diff: float
    fp32_parity_max_abs_diff: float
    export_s: float


def _cross_encoder_graph(model_dir: Path, meta: dict, pairs: Sequence[tuple[str, str]]) -> ExportGraph:
    import torch

    from rankwise.rankers.cross_encoder import CrossEncoder

    ce = CrossEncoder.from_pretrained(model_dir, attn_implementation="eager")  # the pattern _fuse_encoder matches
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


def _bi_encoder_graph(model_dir: Path, meta: dict, pairs: Sequence[tuple[str, str]]) -> ExportGraph:
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


def _erank_graph(model_dir: Path, meta: dict, pairs: Sequence[tuple[str, str]]) -> ExportGraph:
    import torch

    from rankwise.rankers.erank import ERankRanker, expected_score

    ranker = ERankRanker.from_pretrained(model_dir, device="cpu")  # traced with CPU feeds
    if ranker.readout == "reasoning":
        raise ModelDirError(f"{model_dir / 'rankwise.json'}: readout 'reasoning' generates text and cannot be exported; "
                            "export the 'integer' or 'yes_no' readout")
    integer = ranker.readout == "integer"
    append = [ranker._digits[1]] if integer else []
    tok = ranker.tokenizer

    class _ExpectedScore(torch.nn.Module):
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model
            self.register_buffer("digits", torch.tensor(ranker._digits))
            self.register_buffer("yes", torch.tensor(ranker._yes))
            self.register_buffer("no", torch.tensor(ranker._no))

        def forward(self, input_ids, attention_mask):  # (B, T) left-padded prompt (+ "1" for integer)
            logits = self.model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=2 if integer else 1).logits
            logp = torch.log_softmax(logits.float(), dim=-1)  # (B, keep, V)
            if integer:
                return expected_score(logp[:, 0, self.digits], logp[:, 1, self.digits])  # (B,) in [0, 10]
            yes = torch.logsumexp(logp[:, -1, self.yes], -1)  # (B,)
            no = torch.logsumexp(logp[:, -1, self.no], -1)
            return torch.sigmoid(yes - no)  # (B,) in [0, 1]

    def feeds(sel: Sequence[tuple[str, str]]) -> dict[str, torch.Tensor]:
        rows = []
        for q, d in sel:
            rows.append({"input_ids": tok(ranker.prompts(q, [d])[0], add_special_tokens=False)["input_ids"] + append})
        batch = tok.pad(rows, return_tensors="pt", padding=True)  # left padding (LLMRanker sets it)
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    names = ["input_ids", "attention_mask"]
    return ExportGraph(
        module=_ExpectedScore(ranker.model).eval(),
        example=feeds(pairs[:2]),
        parity=feeds(pairs),
        output="scores",
        dynamic_axes={n: {0: "batch", 1: "sequence"} for n in names} | {"scores": {0: "batch"}},
        metadata={"task": "pair-score", "encoding": "prompt", "readout": ranker.readout,
                  "max_doc_tokens": ranker.max_doc_tokens, "append_ids": append, "padding_side": "left",
                  "pad_token_id": tok.pad_token_id, "max_length": None,
                  "score": "expected integer 0-10" if integer else "P(yes) / (P(yes) + P(no))"},
        save_assets=lambda d: tok.save_pretrained(str(d)),
    )


def _user_tower_graph(model_dir: Path, meta: dict, _pairs: Sequence[tuple[str, str]]) -> ExportGraph:
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


def _hllm_item_tower_graph(model_dir: Path, meta: dict, _pairs: Sequence[tuple[str, str]]) -> ExportGraph:
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
                  "similarity": cfg.similarity, "pad_token_id": tok.pad_token_id},
        save_assets=lambda d: tok.save_pretrained(str(d)),
    )


ITEM_TOWER_EXPORTERS: dict[str, Callable[[Path, dict, Sequence[tuple[str, str]]], ExportGraph]] = {
    "hllm": _hllm_item_tower_graph,
}
"""Item-tower graph builders (item text → item vector) by kind, for ``export_model(part="item-tower")``."""

EXPORTERS: dict[str, Callable[[Path, dict, Sequence[tuple[str, str]]], ExportGraph]] = {
    "cross-encoder": _cross_encoder_graph,
    "erank": _erank_graph,
    "bi-encoder": _bi_encoder_graph,
    **{kind: _user_tower_graph for kind in RECOMMENDER_CLASSES},
}
"""Graph builders by ``rankwise.json`` kind: ``(model_dir, rankwise_meta, parity_pairs) -> ExportGraph``."""


def _cast_bool_eyelike(path: Path) -> None:
    """Rewrite bool ``EyeLike`` (from ``torch.eye(..., dtype=torch.bool)``) as int32 EyeLike + Cast.

    onnxruntime implements EyeLike for numeric types only, so such graphs would not load.
    """
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(path))
    if not any(n.op_type == "EyeLike" for n in model.graph.node):
        return
    types = {v.name: v.type.tensor_type.elem_type for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
    nodes = []
    for node in model.graph.node:
        if node.op_type == "EyeLike" and types.get(node.output[0]) == TensorProto.BOOL:
            src, out = node.input[0], node.output[0]
            kept = [a for a in node.attribute if a.name == "k"]
            nodes += [
                helper.make_node("Cast", [src], [src + "_int32"], to=TensorProto.INT32, name=node.name + "_in"),
                helper.make_node("EyeLike", [src + "_int32"], [out + "_int32"], dtype=TensorProto.INT32,
                                 name=node.name, **{a.name: a.i for a in kept}),
                helper.make_node("Cast", [out + "_int32"], [out], to=TensorProto.BOOL, name=node.name + "_out"),
            ]
        else:
            nodes.append(node)
    if len(nodes) != len(model.graph.node):
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        onnx.save(model, str(path))


EXTERNAL_DATA_BYTES = 1_900_000_000
"""Graphs larger than this are saved as ``model.onnx`` + ``model.onnx.data`` (protobuf's limit is 2 GB)."""


def _fuse_encoder(path: Path, config: Any, work: Path) -> tuple[Path, dict[str, int]] | None:
    """onnxruntime's transformer fusion of a BERT-family encoder graph: each layer's Q/K/V MatMuls,
    scaled dot product, mask and softmax become one ``Attention`` op, and the embeddings, residual
    LayerNorms and bias + GELU become ``EmbedLayerNormalization``, ``SkipLayerNormalization`` and
    ``BiasGelu``. ``Attention`` takes its mask as per-row lengths, so inputs must be right-padded (as
    the saved tokenizer pads). Returns the fused graph and its fused-op counts, or ``None`` when not
    every layer's attention fused (the caller keeps the plain graph)."""
    import onnx
    from onnxruntime.transformers.optimizer import optimize_model

    quiet = logging.getLogger("onnxruntime.transformers")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        model = optimize_model(str(path), model_type="bert", num_heads=config.num_attention_heads,
                               hidden_size=config.hidden_size, opt_level=0)
    finally:
        quiet.setLevel(level)
    counts = {op: n for op, n in model.get_fused_operator_statistics().items() if n}
    inputs = [i.name for i in model.model.graph.input]
    original = [i.name for i in onnx.load(str(path), load_external_data=False).graph.input]
    if counts.get("Attention", 0) != config.num_hidden_layers or inputs != original:
        return None  # partial fusion, or the fused graph dropped an input (e.g. an unused token_type_ids)
    fused = work / "fused.onnx"
    model.save_model_to_file(str(fused), use_external_data_format=_has_external_data(work))
    return fused, counts


MIN_CALIBRATION_PAIRS = 32
CALIBRATION_BATCH = 32
SENSITIVITY_PAIRS = 128
"""``fp32_ops``: at most about this many calibration pairs (evenly strided) score each one-op probe."""


def _calibration_feeds(graph: ExportGraph, pairs: Sequence[tuple[str, str]]) -> list[dict[str, np.ndarray]]:
    """``pairs`` batched as served (:func:`~serving.runtime.bucket_batches` by length, at most
    :data:`CALIBRATION_BATCH` a batch), each batch padded to its longest pair."""
    from rankwise.serving.runtime import bucket_batches

    lengths = [len(q) + len(d) for q, d in pairs]  # characters: a proxy of the token count for ordering
    return [{k: v.numpy() for k, v in graph.make_feeds([pairs[i] for i in batch]).items()}
            for batch in bucket_batches(lengths, CALIBRATION_BATCH)]


def _quantize_dynamic_int8(src: Path, dst: Path, nodes: list[str]) -> None:
    """onnxruntime dynamic int8 of the weight ops ``nodes`` of ``src`` (QInt8 per-channel weights;
    activations quantised at run time, one range per tensor), written to ``dst``.

    Per-channel weight scales and only weight MatMuls (fused: the Attention's QKV projection too);
    activation x activation products (attention scores), embeddings, pooler and head stay fp32."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    hint = _DropLogLine("pre-processing before quantization")  # onnxruntime's root-logger advice
    logging.getLogger().addFilter(hint)
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True, nodes_to_quantize=nodes,
                         extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT},
                         use_external_data_format=_has_external_data(src.parent))
    finally:
        logging.getLogger().removeFilter(hint)


def _has_external_data(folder: Path) -> bool:
    return any(p.suffix != ".onnx" for p in folder.iterdir())


def _finalise(chosen: Path, final: Path) -> None:
    """Move ``chosen`` to ``final``; graphs with external data are gathered into one ``.data`` file."""
    import onnx

    data = final.with_name(final.name + ".data")
    data.unlink(missing_ok=True)
    if not _has_external_data(chosen.parent) and chosen.stat().st_size < EXTERNAL_DATA_BYTES:
        os.replace(chosen, final)
        return
    model = onnx.load(str(chosen))
    onnx.save_model(model, str(final), save_as_external_data=True, all_tensors_to_one_file=True, location=data.name)


def _run_onnx(path: Path, inputs: dict[str, Any]) -> np.ndarray:
    from rankwise.serving.runtime import OnnxSession

    return OnnxSession(path, device="cpu").run({k: v.numpy() for k, v in inputs.items()})


def export_model(
    model_dir: str | Path,
    output_dir: str | Path,
    quantize: Literal["int8", "int8-smooth", "int8-blockwise"] | None = None,
    fp16: bool = False,
    parity_pairs: Sequence[tuple[str, str]] | None = None,
    calibration_pairs: Sequence[tuple[str, str]] | None = None,
    tolerance: float = 1e-3,
    opset: int = OPSET,
    part: Literal["model", "item-tower"] = "model",
    fuse: bool = True,
    fp32_ops: int = 0,
    exact_head: int = 0,
) -> ExportResult:
    """Export ``model_dir`` to ``output_dir/model.onnx`` and check it against PyTorch.

    The fp32 graph is always exported first and must match PyTorch within ``tolerance``
    (max absolute difference of the outputs on real inputs), else :class:`ExportParityError` and
    nothing is left in ``output_dir``. ``quantize="int8"`` then applies onnxruntime's dynamic
    quantisation (QInt8 per-channel weights of the weight MatMuls, activations quantised at run time
    with one range per tensor: the fastest on VNNI CPUs, the largest score error);
    ``quantize="int8-smooth"`` is the same arithmetic after SmoothQuant scaling chosen on
    ``calibration_pairs`` (:mod:`serving.smooth_quant`: same speed, less score error);
    ``quantize="int8-blockwise"`` replaces each weight MatMul by onnxruntime's ``MatMulNBits`` with
    8-bit weights in blocks of 128 input channels and ``accuracy_level=4`` (activations quantised to
    int8 per row and block at run time: ~4x less score error, much less speed-up); ``fp16=True`` converts
    the weights to float16 with float32 inputs/outputs (for CUDA); their distance to PyTorch is
    measured and recorded, not bounded, since it is the price of the format.

    Args:
        model_dir: a rankwise model directory (``rankwise.json`` names its kind).
        output_dir: created if needed; an existing ``model.onnx`` there is replaced.
        quantize: ``"int8"`` (dynamic, per-tensor activations), ``"int8-smooth"`` (the same after
            SmoothQuant scaling), ``"int8-blockwise"`` (``MatMulNBits``, per-block activations) or
            ``None`` for fp32.
        fp16: convert to float16 weights (GPU serving); exclusive with ``quantize``.
        parity_pairs: ``(query, doc)`` pairs for tracing and parity; default :data:`PARITY_PAIRS`.
        calibration_pairs: ``(query, doc)`` pairs like the served traffic (e.g. queries with their
            first-stage candidates; a few hundred), required by ``"int8-smooth"``, unused otherwise.
        tolerance: maximum allowed fp32 |ONNX - PyTorch|.
        opset: ONNX opset.
        part: ``"model"`` (the scorer or the user tower) or ``"item-tower"`` (HLLM: item text →
            item vector, for items added after training).
        fuse: fuse a BERT-family encoder's attention, LayerNorms and GELU into onnxruntime's
            contrib ops (:func:`_fuse_encoder`; CPU and CUDA providers) before quantising; the
            fused graph must pass the same parity check, else the plain graph is kept. Not applied
            with ``fp16``.
        fp32_ops: with ``"int8"`` / ``"int8-smooth"``, leave this many weight ops in fp32: those whose
            quantisation alone moves the scores of ``calibration_pairs`` most
            (:mod:`serving.mixed_precision`; required pairs as for ``"int8-smooth"``).
        exact_head: with ``quantize`` or ``fp16`` on a (query, doc) scorer, also write the fp32 graph
            (``head.onnx``) and let :class:`~serving.onnx_ranker.OnnxRanker` rescore each query's
            top ``exact_head`` documents with it (:mod:`serving.cascade`); 0 = off.

    Returns:
        An :class:`ExportResult` (also written, with more fields, to ``serving.json``).

    Example:
        >>> export_model("runs/ce-minilm", "runs/ce-minilm-onnx", quantize="int8")  # doctest: +SKIP
    """
    import torch

    if quantize not in (None, "int8", "int8-smooth", "int8-blockwise"):
        raise ValueError(f"export_model: quantize must be None, 'int8', 'int8-smooth' or 'int8-blockwise', got {quantize!r}")
    if fp32_ops < 0 or (fp32_ops and quantize not in ("int8", "int8-smooth")):
        raise ValueError(f"export_model: fp32_ops={fp32_ops} needs quantize='int8' or 'int8-smooth' and must be >= 0")
    if (quantize == "int8-smooth" or fp32_ops) and len(calibration_pairs or ()) < MIN_CALIBRATION_PAIRS:
        user = "quantize='int8-smooth'" if quantize == "int8-smooth" else "fp32_ops"
        raise ValueError(f"export_model: {user} needs at least {MIN_CALIBRATION_PAIRS} calibration_pairs "
                         f"like the served traffic, got {len(calibration_pairs or ())}")
    if exact_head < 0 or (exact_head and not (quantize or fp16)):
        raise ValueError(f"export_model: exact_head={exact_head} needs quantize or fp16 (the head is the fp32 graph) "
                         "and must be >= 0")
    if quantize and fp16:
        raise ValueError(f"export_model: choose one of quantize={quantize!r} and fp16=True")
    model_dir, output_dir = Path(model_dir), Path(output_dir)
    meta = read_rankwise_json(model_dir)
    kind = meta["kind"]
    if part not in ("model", "item-tower"):
        raise ValueError(f"export_model: part must be 'model' or 'item-tower', got {part!r}")
    builders = EXPORTERS if part == "model" else ITEM_TOWER_EXPORTERS
    if kind not in builders:
        raise ModelDirError(f"{model_dir / 'rankwise.json'}: kind {kind!r} has no exportable {part} (exportable: {sorted(builders)})")
    pairs = list(parity_pairs) if parity_pairs is not None else PARITY_PAIRS
    if len(pairs) < 3:
        raise ValueError("export_model: parity_pairs needs at least 3 pairs (2 trace, all checked)")
    start = time.perf_counter()
    graph = builders[kind](model_dir, meta, pairs)
    if exact_head and graph.metadata.get("task") != "pair-score":
        raise ModelDirError(f"{model_dir / 'rankwise.json'}: kind {kind!r} ({part}) scores no (query, doc) pairs; "
                            "exact_head reranks a query's documents")
    if (quantize == "int8-smooth" or fp32_ops) and graph.make_feeds is None:
        raise ModelDirError(f"{model_dir / 'rankwise.json'}: kind {kind!r} takes no (query, doc) calibration pairs; "
                            "int8-smooth and fp32_ops export pair scorers (use --quantize int8)")
    output_dir.mkdir(parents=True, exist_ok=True)
    final = output_dir / ONNX_FILE
    work = output_dir / ".export-tmp"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        fp32 = work / "fp32.onnx"
        names = list(graph.example)
        with torch.inference_mode():
            reference = graph.module(**graph.parity).float().numpy()
        with torch.no_grad(), warnings.catch_warnings():
            # tracer and deprecation chatter: the parity check below is what decides
            warnings.simplefilter("ignore")
            torch.onnx.export(
                graph.module, tuple(graph.example[n] for n in names), str(fp32), input_names=names,
                output_names=[graph.output], dynamic_axes=graph.dynamic_axes, opset_version=opset,
                do_constant_folding=True, dynamo=False,
            )
        _cast_bool_eyelike(fp32)
        fp32_diff = float(np.abs(_run_onnx(fp32, graph.parity) - reference).max())
        if not fp32_diff <= tolerance:
            raise ExportParityError(
                f"export of {model_dir}: |ONNX - PyTorch| = {fp32_diff:.3g} > {tolerance:g} on "
                f"{len(reference)} real inputs; the graph is wrong, nothing was written"
            )
        fusion = None
        if fuse and graph.encoder_config is not None and not fp16:
            fused = _fuse_encoder(fp32, graph.encoder_config, work)
            if fused is not None:
                try:
                    fused_diff = float(np.abs(_run_onnx(fused[0], graph.parity) - reference).max())
                except Exception as err:  # a contrib op that this onnxruntime build cannot run
                    fused_diff, why = float("inf"), f"does not run ({err})"
                else:
                    why = f"is off by {fused_diff:.3g} > {tolerance:g}"
                if fused_diff <= tolerance:
                    (fp32, fusion), fp32_diff = fused, fused_diff
                else:
                    log.warning("fused graph of %s %s; exporting the plain graph", model_dir, why)
        chosen, precision, exact = fp32, "fp32", fp32
        smoothing, sensitivity, kept = None, None, []
        if quantize == "int8-smooth":
            import onnx

            from rankwise.serving.smooth_quant import smooth_for_dynamic_int8

            smoothed = onnx.load(str(fp32))
            smoothing = smooth_for_dynamic_int8(smoothed, _calibration_feeds(graph, calibration_pairs))
            fp32 = work / "smoothed.onnx"
            onnx.save(smoothed, str(fp32), save_as_external_data=_has_external_data(work))
            smoothed_diff = float(np.abs(_run_onnx(fp32, graph.parity) - reference).max())
            if not smoothed_diff <= tolerance:
                raise ExportParityError(f"export of {model_dir}: the SmoothQuant-scaled fp32 graph is off by "
                                        f"{smoothed_diff:.3g} > {tolerance:g}; nothing was written")
        if quantize in ("int8", "int8-smooth"):
            import onnx

            from rankwise.serving.smooth_quant import weight_matmuls

            chosen, precision = work / "int8.onnx", quantize
            nodes = [n.name for n in weight_matmuls(onnx.load(str(fp32), load_external_data=False))]
            if fp32_ops:
                from rankwise.serving.mixed_precision import int8_sensitivity, most_sensitive

                probe_pairs = list(calibration_pairs)[:: max(1, len(calibration_pairs) // SENSITIVITY_PAIRS)]
                sensitivity = int8_sensitivity(fp32, _calibration_feeds(graph, probe_pairs), nodes,
                                               _quantize_dynamic_int8, work)
                kept = most_sensitive(sensitivity, fp32_ops)
                precision = f"{quantize}+fp32x{len(kept)}"
            _quantize_dynamic_int8(fp32, chosen, [n for n in nodes if n not in kept])
        elif quantize == "int8-blockwise":
            import onnx
            from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

            chosen, precision = work / "int8-blockwise.onnx", "int8-blockwise"
            quantizer = MatMulNBitsQuantizer(onnx.load(str(fp32)), bits=8, block_size=BLOCKWISE_INT8_BLOCK,
                                             is_symmetric=True, accuracy_level=4)
            quantizer.process()
            quantizer.model.save_model_to_file(str(chosen), _has_external_data(work))
        elif fp16:
            import onnx
            from onnxruntime.transformers.float16 import convert_float_to_float16

            chosen, precision = work / "fp16.onnx", "fp16"
            onnx.save(convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True), str(chosen))
        diff = fp32_diff if chosen is fp32 else float(np.abs(_run_onnx(chosen, graph.parity) - reference).max())
        graph.save_assets(output_dir)
        _finalise(chosen, final)
        for stale in (output_dir / HEAD_FILE, output_dir / (HEAD_FILE + ".data")):
            stale.unlink(missing_ok=True)
        if exact_head:
            _finalise(exact, output_dir / HEAD_FILE)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    seconds = time.perf_counter() - start
    from importlib.metadata import PackageNotFoundError, version

    try:
        rw_version = version("rankwise")
    except PackageNotFoundError:
        rw_version = "unknown"
    doc = {
        "format": "onnx",
        "kind": kind,
        "part": part,
        "onnx_file": ONNX_FILE,
        "inputs": names,
        "output": graph.output,
        "precision": precision,
        "fused_ops": fusion,
        **({"exact_head": {"k": exact_head, "onnx_file": HEAD_FILE, "precision": "fp32"}} if exact_head else {}),
        **({"smoothquant_alpha": smoothing} if smoothing is not None else {}),
        **({"fp32_ops": kept, "int8_sensitivity": sensitivity} if sensitivity is not None else {}),
        "opset": opset,
        **graph.metadata,
        "parity_max_abs_diff": diff,
        "fp32_parity_max_abs_diff": fp32_diff,
        "parity_inputs": len(reference),
        "source": {k: v for k, v in meta.items() if k != "rankwise_version"},
        "rankwise_version": rw_version,
    }
    tmp = output_dir / (SERVING_JSON + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=str))
    os.replace(tmp, output_dir / SERVING_JSON)
    log.info("exported %s (%s) to %s: max |ONNX - PyTorch| = %.3g", kind, precision, final, diff)
    return ExportResult(output_dir, kind, precision, diff, fp32_diff, seconds)


def read_pairs_file(path: str | Path) -> list[tuple[str, str]]:
    """``(query, doc)`` pairs from a ``.jsonl`` or ``.parquet`` file with string fields ``query`` and
    ``doc`` (the ``--calibration`` file of ``rankwise export``).

    Raises:
        ValueError: unreadable file, another suffix, a missing field or an empty string, naming the
            file (and the 1-based line of a ``.jsonl``).
    """
    import polars as pl

    path = Path(path)
    try:
        if path.suffix == ".parquet":
            frame = pl.read_parquet(path)
        elif path.suffix == ".jsonl":
            frame = pl.read_ndjson(path, infer_schema_length=None)
        else:
            raise ValueError(f"{path}: expected a .jsonl or .parquet file of (query, doc) pairs")
    except (OSError, pl.exceptions.PolarsError) as err:
        raise ValueError(f"{path}: cannot read (query, doc) pairs: {str(err).splitlines()[0]}") from None
    missing = [c for c in ("query", "doc") if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: field(s) {missing} missing (each pair needs 'query' and 'doc')")
    frame = frame.select(pl.col("query").cast(pl.String), pl.col("doc").cast(pl.String)).with_row_index("line", offset=1)
    bad = frame.filter(pl.col("query").fill_null("").str.strip_chars().eq("") | pl.col("doc").fill_null("").str.strip_chars().eq(""))
    if bad.height:
        where = f"line {bad['line'][0]}" if path.suffix == ".jsonl" else f"row {bad['line'][0]}"
        raise ValueError(f"{path}: {where}: empty 'query' or 'doc'")
    return list(zip(frame["query"].to_list(), frame["doc"].to_list()))


def read_serving_json(directory: str | Path) -> dict[str, Any]:
    """Read an export's ``serving.json``; :class:`ModelDirError` naming the file when absent or bad."""
    directory = Path(directory)
    path = directory / SERVING_JSON
    if not directory.is_dir():
        raise ModelDirError(f"{directory}: not a model directory (it does not exist)")
    if not path.is_file():
        raise ModelDirError(f"{path}: missing; not an ONNX export of rankwise")
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelDirError(f"{path}: not valid JSON ({err})") from None
    for key in ("kind", "onnx_file", "inputs", "output"):
        if not isinstance(doc, dict) or key not in doc:
            raise ModelDirError(f"{path}: field {key!r} is missing")
    return doc
