"""The Nemotron-4 340B alignment loop end to end on the embedded demo model, with this project alone:

1. `nemotron sdg` samples several replies to arithmetic questions from the demo model (the SFT
   policy) and pairs a correct reply with a wrong one (ground truth judges). The facts are split
   three ways: training (asked in several wordings), validation (hyperparameters were chosen on
   these) and held-out (reported only; no held-out fact is in any training or validation prompt);
2. `nemotron train reward` trains a reward model (Bradley-Terry) on the training pairs; its
   pairwise accuracy is measured on the validation and on the held-out pairs;
3. `nemotron sdg` runs again with that reward model judging (`judges: [reward]`, the model run
   in-process exactly as a served reward model would be), so the pairs carry reward-model scores;
4. `nemotron train dpo` on the ground-truth pairs, `nemotron train rpo` on the reward-judged pairs;
5. on validation and held-out questions, the SFT, DPO and RPO policies answer, greedily and
   sampled: the share of correct final answers and the mean reward-model score, side by side.

    python benchmarks/alignment_loop.py --work build/alignment

Not a CI test (about half an hour on 2 busy cores); prints Markdown tables for the README.
`--stop-after` ends after a stage; a rerun in the same --work reuses the SDG outputs.
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

from nemotron.assets import default_model_dir

ROOT = Path(__file__).resolve().parents[1]

OPS = {"plus": lambda x, y: x + y, "minus": lambda x, y: x - y, "times": lambda x, y: x * y}
# The ways the demo model's chat data asks each kind of question (train/demo_facts.py); the first is
# the one validation and held-out questions use.
PHRASINGS = {
    "plus": ("What is {x} plus {y}?", "What is {x} + {y}?", "How much is {x} plus {y}?", "Can you add {x} and {y}?",
             "{x} + {y} = ?", "What do you get if you add {x} and {y}?"),
    "minus": ("What is {x} minus {y}?", "What is {x} - {y}?", "How much is {x} minus {y}?",
              "What is {y} taken away from {x}?", "{x} - {y} = ?"),
    "times": ("What is {x} times {y}?", "What is {x} x {y}?", "How much is {x} times {y}?",
              "What is {x} multiplied by {y}?", "{x} * {y} = ?"),
}


def questions(seed: int, held_out: int, valid: int, phrasings: int) -> tuple[list[dict], list[dict], list[dict]]:
    """Every arithmetic fact the demo model was taught (sums to 10 + 10, differences to 20 - 10,
    tables to 10 x 10), split by fact into training, validation and held-out questions: no fact is
    asked in two splits. Training facts are asked in `phrasings` of the chat data's wordings (more,
    more varied prompts for the same facts); validation and held-out ones in the first wording."""
    space = [("plus", x, y) for x in range(11) for y in range(11)]
    space += [("minus", x, y) for x in range(21) for y in range(11) if y <= x]
    space += [("times", x, y) for x in range(1, 11) for y in range(1, 11)]
    rng = random.Random(seed)
    rng.shuffle(space)
    ask = lambda op, x, y, k: {"prompt": PHRASINGS[op][k].format(x=x, y=y), "answer": str(OPS[op](x, y))}  # noqa: E731
    held = [ask(*fact, 0) for fact in space[:held_out]]
    checks = [ask(*fact, 0) for fact in space[held_out:held_out + valid]]
    train = [ask(op, x, y, k) for op, x, y in space[held_out + valid:]
             for k in sorted(rng.sample(range(len(PHRASINGS[op])), min(phrasings, len(PHRASINGS[op]))))]
    return train, checks, held


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
    greedy = [c.text.strip() for c in llm.generate(prompts, SamplingParams(max_new_tokens=24, greedy=True,
                                                                           stop_strings=stops))]
    sampled = llm.generate([p for p in prompts for _ in range(samples)],
                           [SamplingParams(max_new_tokens=24, temperature=1.0, top_p=1.0, top_k=0, seed=k,
                                           stop_strings=stops) for k in range(len(prompts) * samples)])
    right = lambda replies, qs: sum(check_answer(r, q["answer"]) for r, q in zip(replies, qs)) / len(qs)
    rm = load_model(str(reward))
    sequences = [encode_scored([{"role": "user", "content": q["prompt"]}], r, rm.tokenizer)
                 for q, r in zip(held_out, greedy)]
    scalar = score(rm.model, sequences, rm.tokenizer.pad_id or 0) @ torch.tensor(REWARD_WEIGHTS)
    return {"greedy": right(greedy, held_out),
            "sampled": right([c.text.strip() for c in sampled], [q for q in held_out for _ in range(samples)]),
            "reward": scalar.mean().item()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default="build/alignment", help="working directory (reruns resume SDG)")
    parser.add_argument("--held-out", type=int, default=80, help="held-out facts (reported only)")
    parser.add_argument("--valid", type=int, default=40, help="validation facts (hyperparameters are chosen on them)")
    parser.add_argument("--phrasings", type=int, default=3, help="wordings of each training fact")
    parser.add_argument("--replies", type=int, default=8, help="sampled replies per prompt")
    parser.add_argument("--temperature", type=float, default=1.5, help="sampling temperature of the replies the "
                        "reward model learns from (the demo model is rarely wrong at 1.0)")
    parser.add_argument("--policy-temperature", type=float, default=1.0,
                        help="sampling temperature of the replies DPO and RPO learn from (on-policy)")
    parser.add_argument("--rounds", type=int, default=8, help="SDG runs with different seeds, pooled")
    parser.add_argument("--eval-rounds", type=int, default=4, help="SDG runs for validation and held-out pairs")
    parser.add_argument("--rpo-rounds", type=int, default=4, help="SDG runs judged by the reward model, for RPO")
    parser.add_argument("--samples", type=int, default=8, help="sampled answers per held-out question")
    parser.add_argument("--rm-steps", type=int, default=400)
    parser.add_argument("--rm-lr", type=float, default=5e-4)
    parser.add_argument("--rm-batch", type=int, default=16)
    parser.add_argument("--rm-add-layers", type=int, default=2,
                        help="identity-initialised layers on top of the reward model's trunk")
    parser.add_argument("--po-steps", type=int, default=100, help="DPO / RPO steps")
    parser.add_argument("--po-lr", type=float, default=2e-5)
    parser.add_argument("--beta", type=float, default=1.0)
    parser.add_argument("--eta", type=float, default=1.0)
    parser.add_argument("--sft-weight", type=float, default=1.0)
    parser.add_argument("--stop-after", choices=["sdg", "reward", "rpo-data", "policies"],
                        help="end after this stage (reruns reuse the SDG outputs)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    work = Path(args.work).resolve()
    demo = default_model_dir()
    train_q, valid_q, held_q = questions(args.seed, args.held_out, args.valid, args.phrasings)
    train_seeds = write_jsonl(work / "train_questions.jsonl", train_q)
    valid_seeds = write_jsonl(work / "valid_questions.jsonl", valid_q)
    held_seeds = write_jsonl(work / "held_out_questions.jsonl", held_q)
    print(f"{len(train_q)} training questions, {len(valid_q)} validation and {len(held_q)} held-out facts", flush=True)

    print("1. preference pairs from the demo (SFT) model, judged by ground truth", flush=True)
    def pairs(name: str, seeds: Path, temperature: float, rounds: int) -> Path:
        return sdg_pairs(work, name, seeds, demo, args.replies, None, temperature, rounds)

    policy_pairs = pairs("sdg_policy", train_seeds, args.policy_temperature, args.rounds)
    gt_pairs = pairs("sdg_ground_truth", train_seeds, args.temperature, args.rounds)
    valid_pairs = pairs("sdg_valid", valid_seeds, args.temperature, args.eval_rounds)
    valid_policy_pairs = pairs("sdg_valid_policy", valid_seeds, args.policy_temperature, args.eval_rounds)
    held_pairs = pairs("sdg_held_out", held_seeds, args.temperature, args.eval_rounds)
    count = lambda path: len(read_jsonl(path))  # noqa: E731
    print(f"   {count(gt_pairs)} reward-model training pairs (T = {args.temperature}), {count(valid_pairs)} validation "
          f"and {count(held_pairs)} held-out pairs; {count(policy_pairs)} on-policy pairs "
          f"(T = {args.policy_temperature})")
    if args.stop_after == "sdg":
        return

    print("2. reward model (Bradley-Terry) from the demo model's trunk", flush=True)
    for stale in [*work.glob("sdg_reward*"), *work.glob("sdg_valid_reward*")]:  # judged by an older reward model
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    loop = ["--seq-len", "96", "--log-every", "20", "--checkpoint-every", "0", "--no-progress", "--threads", "1",
            "--no-resume"]
    nemotron("train", "reward", "--model", str(demo), "--data", str(gt_pairs), str(policy_pairs), "--valid",
             str(valid_pairs), "--out", str(work / "reward"), "--loss", "bt", "--steps", str(args.rm_steps),
             "--lr", str(args.rm_lr), "--warmup", "20", "--batch-size", str(args.rm_batch),
             "--add-layers", str(args.rm_add_layers), *loop)
    reward = work / "reward" / "final"
    valid_accuracy = json.loads((work / "reward" / "reward_eval.json").read_text())["accuracy"]
    held_eval = work / "reward" / "held_out_eval.json"
    with held_eval.open("w") as out:
        subprocess.run([sys.executable, "-m", "nemotron", "train", "reward-eval", str(reward), "--data",
                        str(held_pairs), "--json", "--threads", "1"], check=True, cwd=ROOT, stdout=out)
    accuracy = json.loads(held_eval.read_text())["accuracy"]
    print(f"   reward model pairwise accuracy: validation {valid_accuracy:.3f} ({count(valid_pairs)} pairs), "
          f"held-out {accuracy:.3f} ({count(held_pairs)} pairs)", flush=True)
    if args.stop_after == "reward":
        return

    print("3. pairs judged by the trained reward model (nemotron sdg, judges: [reward])", flush=True)
    rm_pairs = sdg_pairs(work, "sdg_reward", train_seeds, demo, args.replies, reward, args.policy_temperature,
                         args.rpo_rounds)
    rm_valid = sdg_pairs(work, "sdg_valid_reward", valid_seeds, demo, args.replies, reward,
                         args.policy_temperature, args.eval_rounds)
    print(f"   {count(rm_pairs)} reward-judged pairs")
    if args.stop_after == "rpo-data":
        return

    print("4. DPO on on-policy ground-truth pairs, RPO on on-policy reward-judged pairs", flush=True)
    policy_loop = ["--steps", str(args.po_steps), "--lr", str(args.po_lr), "--warmup", "5", "--batch-size", "16",
                   "--beta", str(args.beta), "--sft-weight", str(args.sft_weight), *loop]
    nemotron("train", "dpo", "--model", str(demo), "--data", str(policy_pairs), "--valid", str(valid_policy_pairs),
             "--out", str(work / "dpo"), *policy_loop)
    nemotron("train", "rpo", "--model", str(demo), "--data", str(rm_pairs), "--valid", str(rm_valid),
             "--out", str(work / "rpo"), "--eta", str(args.eta), *policy_loop)
    if args.stop_after == "policies":
        return

    print("5. validation and held-out questions: greedy and sampled answers", flush=True)
    policies = (("SFT (demo model)", demo), ("DPO", work / "dpo" / "final"), ("RPO", work / "rpo" / "final"))
    for title, qs in (("validation", valid_q), ("held-out", held_q)):
        rows = [(name, evaluate(path, reward, qs, args.samples)) for name, path in policies]
        print(f"\n{title}: {len(qs)} questions\n")
        print(f"| policy | correct, greedy | correct, sampled at T = 1 ({args.samples} per question) "
              "| mean reward (greedy answers) |")
        print("|---|---|---|---|")
        for name, r in rows:
            print(f"| {name} | {r['greedy']:.1%} | {r['sampled']:.1%} | {r['reward']:.3f} |", flush=True)
    print(f"\nreward model pairwise accuracy: validation {valid_accuracy:.1%} ({count(valid_pairs)} pairs), "
          f"held-out {accuracy:.1%} ({count(held_pairs)} pairs)")


if __name__ == "__main__":
    main()
