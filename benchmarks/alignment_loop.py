"""The Nemotron-4 340B alignment loop end to end on the embedded demo model, with this project alone:

1. `nemotron sdg` samples several replies to arithmetic questions from the demo model (the SFT
   policy) and pairs a correct reply with a wrong one (ground truth judges), for training prompts
   and for held-out prompts;
2. `nemotron train reward` trains a reward model (Bradley-Terry) on the training pairs; its
   pairwise accuracy is measured on the held-out pairs;
3. `nemotron sdg` runs again with that reward model judging (`judges: [reward]`, the model run
   in-process exactly as a served reward model would be), so the pairs carry reward-model scores;
4. `nemotron train dpo` on the ground-truth pairs, `nemotron train rpo` on the reward-judged pairs;
5. on held-out questions, the SFT, DPO and RPO policies answer greedily: the share of correct final
   answers and the mean reward-model score, side by side.

    python benchmarks/alignment_loop.py --work build/alignment

Not a CI test (a few minutes on 2 cores); prints a Markdown table for the README.
"""
from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

from nemotron.assets import default_model_dir

ROOT = Path(__file__).resolve().parents[1]

OPS = {"plus": lambda x, y: x + y, "minus": lambda x, y: x - y, "times": lambda x, y: x * y}


def questions(seed: int, train: int, held_out: int) -> tuple[list[dict], list[dict]]:
    """Disjoint arithmetic questions in the demo model's range (sums to 10 + 10, differences to
    20 - 10, tables to 10 x 10)."""
    space = [("plus", x, y) for x in range(11) for y in range(11)]
    space += [("minus", x, y) for x in range(10, 21) for y in range(11) if x - y >= 0]
    space += [("times", x, y) for x in range(1, 11) for y in range(1, 11)]
    rng = random.Random(seed)
    rng.shuffle(space)
    rows = [{"prompt": f"What is {x} {op} {y}?", "answer": str(OPS[op](x, y))} for op, x, y in space]
    return rows[:train], rows[train:train + held_out]


def write_jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def nemotron(*args: str) -> None:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "nemotron", *args], check=True, cwd=ROOT)
    print(f"  ({time.perf_counter() - started:.0f} s: nemotron {' '.join(args[:2])})", flush=True)


def sdg_pairs(work: Path, name: str, seeds: Path, policy: Path, replies: int, reward: Path | None,
              temperature: float, rounds: int) -> Path:
    """Preference pairs from `policy`'s sampled replies, judged by ground truth or by `reward`;
    `rounds` pipeline runs with different seeds (different samples), pooled and deduplicated."""
    pooled: dict[tuple, dict] = {}
    for seed in range(rounds):
        for row in read_jsonl(_sdg_round(work, f"{name}_{seed}", seeds, policy, replies, reward, temperature, seed)):
            pooled.setdefault((json.dumps(row["prompt"]), json.dumps(row["chosen"]), json.dumps(row["rejected"])), row)
    return write_jsonl(work / f"{name}.jsonl", pooled.values())


def _sdg_round(work: Path, name: str, seeds: Path, policy: Path, replies: int, reward: Path | None,
               temperature: float, seed: int) -> Path:
    models = {"generator": {"model": "demo", "engine": str(policy), "max_concurrency": 64}}
    pairs = {"name": "pairs", "kind": "preference", "input": "questions", "n": replies,
             "judges": ["reward"] if reward else ["ground_truth"]}
    if reward:
        models["reward"] = {"model": "demo-reward", "kind": "reward", "engine": str(reward), "max_concurrency": 64}
        pairs["reward_model"] = "reward"
    config = {"name": name, "seed": seed, "models": models,
              "sampling": {"temperature": temperature, "top_p": 1.0, "max_tokens": 24},
              "stages": [{"name": "questions", "kind": "seeds", "path": str(seeds), "field": "prompt"}, pairs],
              "outputs": {"dpo": ["pairs"]}}
    path = work / f"{name}.yaml"
    path.write_text(json.dumps(config, indent=1))  # JSON is YAML
    nemotron("sdg", "run", str(path), "--out", str(work / name), "--no-progress")
    return work / name / "dpo.jsonl"


def evaluate(policy: Path, reward: Path, held_out: list[dict], samples: int) -> dict[str, float]:
    """Share of correct final answers, greedy and sampled (T = 1, `samples` per question), and the
    mean reward-model scalar of the greedy answers."""
    import torch

    from nemotron.checkpoint.load import load_model
    from nemotron.engine.llm import LLM
    from nemotron.engine.sampling import SamplingParams
    from nemotron.model.config import REWARD_WEIGHTS
    from nemotron.sdg.answers import check_answer
    from nemotron.tokenizer import CHAT_STOP_STRINGS, render_chat
    from nemotron.train.preference_data import encode_scored
    from nemotron.train.reward import score

    llm = LLM(str(policy))
    prompts = [render_chat([{"role": "user", "content": q["prompt"]}]) for q in held_out]
    stops = list(CHAT_STOP_STRINGS)
    greedy = [r.outputs[0].text.strip() for r in llm.generate(prompts, SamplingParams(max_tokens=24, temperature=0,
                                                                           stop=stops))]
    sampled = llm.generate([p for p in prompts for _ in range(samples)],
                           [SamplingParams(max_tokens=24, temperature=1.0, top_p=1.0, top_k=0, seed=k,
                                           stop=stops) for k in range(len(prompts) * samples)])
    right = lambda replies, qs: sum(check_answer(r, q["answer"]) for r, q in zip(replies, qs)) / len(qs)
    rm = load_model(str(reward))
    sequences = [encode_scored([{"role": "user", "content": q["prompt"]}], r, rm.tokenizer)
                 for q, r in zip(held_out, greedy)]
    scalar = score(rm.model, sequences, rm.tokenizer.pad_id or 0) @ torch.tensor(REWARD_WEIGHTS)
    return {"greedy": right(greedy, held_out),
            "sampled": right([r.outputs[0].text.strip() for r in sampled],
                             [q for q in held_out for _ in range(samples)]),
            "reward": scalar.mean().item()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default="build/alignment", help="working directory (reruns resume SDG)")
    parser.add_argument("--train-prompts", type=int, default=262)
    parser.add_argument("--held-out", type=int, default=80)
    parser.add_argument("--replies", type=int, default=8, help="sampled replies per prompt")
    parser.add_argument("--temperature", type=float, default=1.5, help="sampling temperature of the replies the "
                        "reward model learns from (the demo model is rarely wrong at 1.0)")
    parser.add_argument("--policy-temperature", type=float, default=1.0,
                        help="sampling temperature of the replies DPO and RPO learn from (on-policy)")
    parser.add_argument("--rounds", type=int, default=8, help="SDG runs with different seeds, pooled")
    parser.add_argument("--samples", type=int, default=8, help="sampled answers per held-out question")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    work = Path(args.work).resolve()
    demo = default_model_dir()
    train_q, held_q = questions(args.seed, args.train_prompts, args.held_out)
    train_seeds = write_jsonl(work / "train_questions.jsonl", train_q)
    held_seeds = write_jsonl(work / "held_out_questions.jsonl", held_q)

    print("1. preference pairs from the demo (SFT) model, judged by ground truth", flush=True)
    policy_pairs = sdg_pairs(work, "sdg_policy", train_seeds, demo, args.replies, None, args.policy_temperature,
                             args.rounds)
    gt_pairs = sdg_pairs(work, "sdg_ground_truth", train_seeds, demo, args.replies, None, args.temperature,
                         args.rounds)
    held_pairs = sdg_pairs(work, "sdg_held_out", held_seeds, demo, args.replies, None, args.temperature, 1)
    print(f"   {len(read_jsonl(gt_pairs))} reward-model training pairs (T = {args.temperature}), "
          f"{len(read_jsonl(held_pairs))} held-out pairs, {len(read_jsonl(policy_pairs))} on-policy pairs "
          f"(T = {args.policy_temperature})")

    print("2. reward model (Bradley-Terry) from the demo model's trunk", flush=True)
    loop = ["--seq-len", "96", "--batch-size", "16", "--log-every", "20", "--checkpoint-every", "0", "--no-progress",
            "--threads", "1"]
    nemotron("train", "reward", "--model", str(demo), "--data", str(gt_pairs), "--valid", str(held_pairs),
             "--out", str(work / "reward"), "--loss", "bt", "--steps", "600", "--lr", "2e-3", "--warmup", "20",
             *loop)
    reward = work / "reward" / "final"
    accuracy = json.loads((work / "reward" / "reward_eval.json").read_text())["accuracy"]

    print("3. pairs judged by the trained reward model (nemotron sdg, judges: [reward])", flush=True)
    rm_pairs = sdg_pairs(work, "sdg_reward", train_seeds, demo, args.replies, reward, args.policy_temperature,
                         args.rounds)
    print(f"   {len(read_jsonl(rm_pairs))} reward-judged pairs")

    print("4. DPO on on-policy ground-truth pairs, RPO on on-policy reward-judged pairs", flush=True)
    policy_loop = ["--steps", "60", "--lr", "5e-5", "--warmup", "5", *loop]
    nemotron("train", "dpo", "--model", str(demo), "--data", str(policy_pairs), "--out", str(work / "dpo"),
             "--beta", "0.1", "--sft-weight", "0.5", *policy_loop)
    nemotron("train", "rpo", "--model", str(demo), "--data", str(rm_pairs), "--out", str(work / "rpo"),
             "--beta", "0.1", "--eta", "1.0", "--sft-weight", "0.5", *policy_loop)

    print("5. held-out questions: greedy and sampled answers", flush=True)
    rows = [(name, evaluate(path, reward, held_q, args.samples)) for name, path in
            (("SFT (demo model)", demo), ("DPO", work / "dpo" / "final"), ("RPO", work / "rpo" / "final"))]
    print(f"\nreward model held-out pairwise accuracy: {accuracy:.3f} ({len(read_jsonl(held_pairs))} pairs)\n")
    print(f"| policy | correct, greedy ({len(held_q)} held-out questions) | correct, sampled at T = 1 "
          f"({args.samples} per question) | mean reward (greedy answers) |")
    print("|---|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {r['greedy']:.1%} | {r['sampled']:.1%} | {r['reward']:.3f} |")


if __name__ == "__main__":
    main()
