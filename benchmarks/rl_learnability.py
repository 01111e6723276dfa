"""Do the RL trainers learn? GRPO, Rank-GRPO and IRanker RL on a synthetic ranking task, tiny LM.

What it measures: NDCG (full list, linear gain) on held-out synthetic lists before and after RL, for
  * ERank GRPO (TRL ``GRPOTrainer`` with ``erank_list_reward`` + ``erank_format_reward``), read
    with the expected-integer readout;
  * sequence-level GRPO (TRL ``GRPOTrainer``, reward = NDCG of the ranked lines) and Rank-GRPO
    (``RankGRPOTrainer``, per-rank ``log_decay`` rewards) on the same prompts and budget;
  * IRanker RL (TRL ``GRPOTrainer``, step reward + format reward on elimination states), evaluated
    by full iterative elimination.
The task: each list holds 4 passages ``<colour> <grade>``; the grade word decides relevance (best 3,
good 2, poor 1, bad 0), the colours are noise. The rule is visible in the text, so a policy can
learn it from rewards alone. The policies are randomly initialised Llama-style LMs with a BPE tokenizer
trained on the task's text. Before RL each gets a short SFT on a *decoy* relevance, the scrambled
grades best 2, good 4, poor 8, bad 6: ERank (2 layers, hidden 64) learns to emit the decoy score of
a passage; the list answers and IRanker (one 4-layer, hidden-128 model) learn to rank by the decoy
(poor, bad, good, best) and to eliminate by it ("best" first). So every policy reads the document,
knows the answer format and, for lists, points from a grade word to its passage id, but ranks below
chance; RL must find the true order from the rewards. The list answers need that pointer (id to
passage): a 2-layer, 64-wide model never learned it (8% exact orders after 400 SFT steps), the
4-layer, 128-wide one reaches 92% exact decoy orders after 800 steps on 2,000 lists. Held-out NDCG
curves (ERank GRPO; Rank-GRPO vs GRPO; IRanker GRPO) are plotted against steps in ``rl_learnability.png``.

Command (about 25 minutes on 2 cores, under the shared CPU lock):
    flock /tmp/rankwise-cpu.lock .venv/bin/python benchmarks/rl_learnability.py
Hardware: recorded in the JSON. Seeds fixed (``--seed``).
"""

from __future__ import annotations

import argparse
import copy
import random
import time
from dataclasses import asdict, dataclass

import torch
from datasets import Dataset
from transformers import TrainerCallback
from trl import GRPOConfig, GRPOTrainer

from rankwise.eval.report import RESULTS_DIR, print_table, write_results
from rankwise.rankers.erank import INTEGER_TASK, ERankRanker, erank_prompt
from rankwise.rankers.erank import SYSTEM as ERANK_SYSTEM
from rankwise.rankers.iranker import SYSTEM as IR_SYSTEM
from rankwise.rankers.iranker import IRanker, elimination_to_order
from rankwise.rankers.listwise import ANSWER_FORMATS, listwise_prompt, parse_permutation
from rankwise.rankers.listwise import SYSTEM as LIST_SYSTEM
from rankwise.rankers.llm import generate, tiny_causal_lm
from rankwise.train.grpo.erank_reward import erank_format_reward, erank_list_reward
from rankwise.train.grpo.iranker import iranker_format_reward, iranker_states, iranker_step_reward
from rankwise.train.grpo.rank_grpo import RankGRPOConfig, RankGRPOTrainer, rank_ndcg_reward
from rankwise.train.listwise_lipo import order_ndcg
from rankwise.train.sft import CurriculumSFTConfig, train_sft

GRADES = {"best": 3, "good": 2, "poor": 1, "bad": 0}
COLOURS = ["red", "blue", "green", "black", "white", "pink", "grey", "brown"]
QUERY = "find the best item"
SCRAMBLED = {"best": 2, "good": 4, "poor": 8, "bad": 6}  # ERank warm-up targets: a wrong order on purpose


@dataclass
class BenchConfig:
    """Budgets of the RL runs (the two list trainers share every setting)."""

    seed: int = 0
    items: int = 4
    train_lists: int = 200
    eval_lists: int = 64
    hidden: int = 64
    sft_steps: int = 200
    list_layers: int = 4  # the list answers need a pointer from id to passage: 2 layers x 64 never learned it
    list_hidden: int = 128
    list_sft_lists: int = 2000
    list_sft_steps: int = 800
    erank_steps: int = 100
    erank_lr: float = 2e-3
    rl_steps: int = 80
    eval_every: int = 20
    generations: int = 8
    prompts_per_step: int = 4
    lr: float = 5e-4  # list trainers (2e-3 peaked at step 20, then fell back)
    iranker_steps: int = 80
    iranker_lr: float = 2.5e-4  # 5e-4 peaked at step 30, then drifted below chance
    device: str = "cpu"  # auto / cuda / cpu: where TRL trains (a tiny model is fastest on one CPU thread)


def make_lists(n: int, items: int, rng: random.Random) -> list[tuple[str, list[str], list[int]]]:
    """``n`` lists of ``items`` passages with distinct grades (a random subset, random order)."""
    out = []
    for _ in range(n):
        grades = rng.sample(list(GRADES), items)
        docs = [f"{rng.choice(COLOURS)} {g}" for g in grades]
        out.append((QUERY, docs, [GRADES[g] for g in grades]))
    return out


def lines(order: list[int]) -> str:
    return "".join(f"[{i + 1}]\n" for i in order)


def scrambled(docs: list[str]) -> list[float]:
    """The decoy grades of ``docs`` (best 2, good 4, poor 8, bad 6): the warm-up's wrong relevance."""
    return [SCRAMBLED[d.split()[1]] for d in docs]


def decoy_order(docs: list[str]) -> list[int]:
    """0-based order of ``docs`` by the decoy grades, highest first (poor, bad, good, best)."""
    decoy = scrambled(docs)
    return sorted(range(len(docs)), key=lambda i: -decoy[i])


def list_answers(model, tok, lists) -> list[list[int]]:
    """Greedy ranked-lines answers on ``lists``, parsed and repaired to 0-based orders."""
    prompts = [listwise_prompt(tok, q, d, "lines") for q, d, _ in lists]
    texts = generate(model, tok, prompts, max_new_tokens=4 * len(lists[0][1]) + 2, batch_size=32)
    return [parse_permutation(t, len(l[2])) for t, l in zip(texts, lists)]


def eval_lists(model, tok, lists) -> float:
    """Mean NDCG of the greedy ranked-lines answers on ``lists``."""
    return sum(order_ndcg(o, l[2]) for o, l in zip(list_answers(model, tok, lists), lists)) / len(lists)


def eval_iranker(model, tok, lists) -> float:
    ranker = IRanker(model, tok, batch_size=32)
    elim = ranker.eliminations([q for q, _, _ in lists], [d for _, d, _ in lists])
    return sum(order_ndcg(elimination_to_order(e, len(l[2])), l[2]) for e, l in zip(elim, lists)) / len(lists)


class EvalCurve(TrainerCallback):
    """Held-out NDCG every ``every`` steps (the learning curve)."""

    def __init__(self, fn, every: int, curve: list) -> None:
        self.fn, self.every, self.curve = fn, every, curve

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every == 0:
            model.eval()
            self.curve.append((state.global_step, self.fn(model)))
            model.train()


def _on_cpu(config: BenchConfig) -> bool:
    from rankwise.core.device import resolve_device

    return resolve_device(config.device).type == "cpu"


def grpo_args(cls, config: BenchConfig, steps: int, out: str, **kw):
    return cls(
        output_dir=out, max_steps=steps, learning_rate=config.lr, num_generations=config.generations,
        per_device_train_batch_size=config.generations * config.prompts_per_step, max_completion_length=4 * config.items + 2,
        use_cpu=_on_cpu(config), report_to="none", save_strategy="no", logging_steps=10, disable_tqdm=True, seed=config.seed,
        lr_scheduler_type="constant", **kw,
    )


def eval_erank(model, tok, lists) -> float:
    """Mean NDCG of ERank's expected-integer scores on ``lists``."""
    ranker = ERankRanker(model, tok, "integer", batch_size=64)
    total = 0.0
    for q, d, labels in lists:
        scores = ranker.score(q, d)
        total += order_ndcg(sorted(range(len(d)), key=lambda i: -scores[i]), labels)
    return total / len(lists)


def sft(model, tok, rows, config: BenchConfig, name: str, steps: int | None = None, **kw) -> float:
    """Warm-up SFT; returns seconds."""
    opts = {"per_device_train_batch_size": 16, "learning_rate": 3e-3, "lr_scheduler_type": "constant"} | kw
    args = CurriculumSFTConfig(output_dir=f"/tmp/rankwise-learn-{name}", max_steps=steps or config.sft_steps, use_cpu=_on_cpu(config),
                               report_to="none", save_strategy="no", logging_steps=100, disable_tqdm=True, seed=config.seed, **opts)
    start = time.perf_counter()
    train_sft(model, tok, rows, args)
    model.eval()
    return time.perf_counter() - start


def run(config: BenchConfig) -> tuple[list[dict], dict]:
    rng = random.Random(config.seed)
    train, held = make_lists(config.train_lists, config.items, rng), make_lists(config.eval_lists, config.items, rng)
    corpus = [  # the tokenizer learns the prompts' words (all three prompt kinds), so passages are a few tokens each
        f"{LIST_SYSTEM} {IR_SYSTEM} {ERANK_SYSTEM} {INTEGER_TASK} 0 1 2 3 4 5 6 7 8 9 10\nQuery: {q}\nDocument: "
        + "\n".join(f"[{i + 1}] [{'ABCD'[i]}] {x}" for i, x in enumerate(d))
        + f"\nRank the {len(d)} passages above by relevance to the query, most relevant first. {ANSWER_FORMATS['lines']}"
        + " Which passage is the LEAST relevant to the query? Answer with its identifier only, e.g. [D]."
        for q, d, _ in train
    ]
    fresh, tok = tiny_causal_lm(corpus * 3, vocab_size=400, hidden=config.hidden, layers=2, seed=config.seed)
    rows: list[dict] = []
    curves: dict[str, list] = {}

    # 1) ERank GRPO. Warm-up SFT on a scrambled mapping of the grade word to a score (best 2, good 4,
    #    poor 8, bad 6): the policy learns the answer format and to read the document, but ranks
    #    below chance; RL must find the right order from the rewards alone.
    model = copy.deepcopy(fresh)
    decoy = [{"prompt": erank_prompt(tok, q, x), "completion": str(SCRAMBLED[x.split()[1]]) + tok.eos_token} for q, d, _ in train for x in d]
    sft_s = sft(model, tok, decoy, config, "erank")
    before = eval_erank(model, tok, held)
    rows.append({"model": "scrambled-sft (untrained ranking)", "task": "erank pointwise", "step": 0, "ndcg": before, "train_s": sft_s})
    data = Dataset.from_list([
        {"prompt": erank_prompt(tok, q, x), "qid": str(i), "label": 10 * y / 3} for i, (q, d, ls) in enumerate(train) for x, y in zip(d, ls)
    ])  # a list's documents are contiguous and one list fills a generation batch (prompts_per_step = items)
    curve = [(0, before)]
    args = grpo_args(GRPOConfig, config, config.erank_steps, "/tmp/rankwise-learn-erank-grpo", beta=0.0, shuffle_dataset=False)
    args.learning_rate, args.lr_scheduler_type, args.max_completion_length = config.erank_lr, "linear", 3
    trainer = GRPOTrainer(model, reward_funcs=[erank_list_reward, erank_format_reward], args=args, train_dataset=data,
                          processing_class=tok, callbacks=[EvalCurve(lambda m: eval_erank(m, tok, held), config.eval_every, curve)])
    start = time.perf_counter()
    trainer.train()
    model.eval()
    curves["erank-grpo"] = curve
    rows.append({"model": "erank-grpo", "task": "erank pointwise", "step": config.erank_steps, "ndcg": eval_erank(model, tok, held),
                 "best_ndcg": max(v for _, v in curve), "train_s": time.perf_counter() - start})
    print_table(rows[-2:], "erank")

    # 2) ranked lines (listwise answer, one id per line) and IRanker eliminations. Warm-up SFT on the
    #    decoy grades as an order (poor > bad > good > best) and as eliminations (drop "best" first):
    #    the policy learns the format, to read the grade word and to point from it to its passage id,
    #    but ranks below chance; RL must find the right order from the rewards. Then sequence-level
    #    GRPO vs Rank-GRPO with the same prompts, samples, steps and learning rate, and IRanker GRPO.
    base, list_tok = tiny_causal_lm(corpus * 3, vocab_size=400, hidden=config.list_hidden, layers=config.list_layers, seed=config.seed)
    assert list_tok.get_vocab() == tok.get_vocab()  # the tokenizer depends on the corpus only
    warm = make_lists(config.list_sft_lists, config.items, rng)
    decoy = [{"prompt": listwise_prompt(tok, q, d, "lines"), "completion": lines(decoy_order(d)) + tok.eos_token} for q, d, _ in warm]
    decoy += [{"prompt": s["prompt"], "completion": f"[{'ABCD'[min(range(len(s['labels'])), key=s['labels'].__getitem__)]}]" + tok.eos_token}
              for q, d, _ in warm for s in iranker_states(tok, q, d, scrambled(d), rng)]
    sft_s = sft(base, tok, decoy, config, "decoy", steps=config.list_sft_steps, per_device_train_batch_size=32,
                learning_rate=2e-3, lr_scheduler_type="cosine", warmup_steps=50)
    answers = list_answers(base, tok, held)
    decoy_exact = sum(a == decoy_order(d) for a, (_, d, _) in zip(answers, held)) / len(held)
    before_list, before_ir = eval_lists(base, tok, held), eval_iranker(base, tok, held)
    rows.append({"model": "decoy-sft (wrong ranking)", "task": "ranked lines", "step": 0, "ndcg": before_list,
                 "decoy_exact_orders": decoy_exact, "train_s": sft_s})
    rows.append({"model": "decoy-sft (wrong ranking)", "task": "iranker elimination", "step": 0, "ndcg": before_ir, "train_s": sft_s})
    states = [s for q, d, l in train for s in iranker_states(tok, q, d, l, rng)]
    list_data = Dataset.from_list([{"prompt": listwise_prompt(tok, q, d, "lines"), "labels": l} for q, d, l in train])
    for name, cls, cfg_cls, extra in [
        ("grpo", GRPOTrainer, GRPOConfig, {"beta": 0.0}),
        ("rank-grpo", RankGRPOTrainer, RankGRPOConfig, {"beta": 0.0, "n_ranks": config.items}),
    ]:
        model = copy.deepcopy(base)
        curve = [(0, before_list)]
        kwargs = {"reward_funcs": [rank_ndcg_reward]} if cls is GRPOTrainer else {}
        trainer = cls(model, args=grpo_args(cfg_cls, config, config.rl_steps, f"/tmp/rankwise-learn-{name}", **extra),
                      train_dataset=list_data, processing_class=tok,
                      callbacks=[EvalCurve(lambda m: eval_lists(m, tok, held), config.eval_every, curve)], **kwargs)
        start = time.perf_counter()
        trainer.train()
        model.eval()
        curves[name] = curve
        rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
        rows.append({"model": name, "task": "ranked lines", "step": config.rl_steps, "ndcg": eval_lists(model, tok, held),
                     "best_ndcg": max(v for _, v in curve), "first_reward": rewards[0], "last_reward": rewards[-1],
                     "train_s": time.perf_counter() - start})
        print_table(rows[-1:], name)

    # 3) IRanker RL on single elimination states, evaluated by full elimination
    model = copy.deepcopy(base)
    curve = [(0, before_ir)]
    args = grpo_args(GRPOConfig, config, config.iranker_steps, "/tmp/rankwise-learn-iranker", beta=0.0)
    args.learning_rate = config.iranker_lr
    trainer = GRPOTrainer(model, reward_funcs=[iranker_step_reward, iranker_format_reward], train_dataset=Dataset.from_list(states),
                          processing_class=tok, args=args,
                          callbacks=[EvalCurve(lambda m: eval_iranker(m, tok, held), config.eval_every, curve)])
    start = time.perf_counter()
    trainer.train()
    model.eval()
    step_rewards = [h["rewards/iranker_step_reward/mean"] for h in trainer.state.log_history if "rewards/iranker_step_reward/mean" in h]
    curves["iranker-grpo"] = curve
    rows.append({"model": "iranker-grpo", "task": "iranker elimination", "step": config.iranker_steps, "ndcg": eval_iranker(model, tok, held),
                 "best_ndcg": max(v for _, v in curve),
                 "first_reward": step_rewards[0], "last_reward": step_rewards[-1], "train_s": time.perf_counter() - start})
    # chance level: the expected NDCG of a uniformly random order of these lists
    chance = sum(order_ndcg(rng.sample(range(config.items), config.items), l) for _, _, l in held for _ in range(20)) / (20 * len(held))
    rows.append({"model": "random order", "task": "any", "step": 0, "ndcg": chance, "train_s": 0.0})
    return rows, curves


def plot(curves: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    panels = [(["erank-grpo"], "ERank GRPO (pointwise, listwise-derived reward)"),
              (["grpo", "rank-grpo"], "ranked lines: Rank-GRPO vs sequence-level GRPO"),
              (["iranker-grpo"], "IRanker GRPO (step + format reward)")]
    for ax, (names, title) in zip(axes, panels):
        for name in names:
            curve = curves.get(name, [])
            ax.plot([s for s, _ in curve], [v for _, v in curve], marker="o", label=name)
        ax.set_xlabel("RL step")
        ax.set_ylabel("held-out NDCG")
        ax.set_title(title, fontsize=10)
        ax.legend()
    fig.suptitle("synthetic lists (grade word decides relevance); ERank: 2-layer LM, lists and IRanker: 4-layer LM "
                 "after decoy-order SFT; chance 0.80", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for key, value in asdict(BenchConfig()).items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=value)
    config = BenchConfig(**{k.replace("-", "_"): v for k, v in vars(parser.parse_args()).items()})
    torch.set_num_threads(1)  # a tiny model is overhead-bound: one thread is fastest (and kind to shared cores)
    rows, curves = run(config)
    protocol = (f"synthetic lists of {config.items} passages (grade word decides relevance), {config.eval_lists} held-out lists; "
                f"tiny random Llama: ERank {2} layers x {config.hidden} after SFT on a scrambled grade->score map, list answers and "
                f"IRanker {config.list_layers} layers x {config.list_hidden} after SFT on the same scrambled grades as an order; "
                "NDCG over the full list")
    print_table(rows, protocol)
    flat_curves = {f"curve_{n}": " ".join(f"{s}:{v:.4f}" for s, v in c) for n, c in curves.items()}
    write_results("rl_learnability", rows, protocol, config=str(asdict(config)), **flat_curves)
    plot(curves, RESULTS_DIR / "rl_learnability.png")


if __name__ == "__main__":
    main()
