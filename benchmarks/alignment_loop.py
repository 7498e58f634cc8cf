"""The Nemotron-4 340B alignment loop end to end on the embedded demo model, with this project alone:

1. `nemotron sdg` samples several replies to questions from the demo model (the SFT policy): the
   facts it was taught (train/demo_facts.py: arithmetic, countries, animals, numbers, calendar,
   colours, science), in the relations it knows (its greedy answers to the training facts are right at
   least half the time). Ground truth judges: a reply is correct when it states the fact's reference
   reply and nothing else. The facts are split by fact within each family: training (asked in several
   wordings), validation (hyperparameters were chosen on these) and held-out (reported only; no
   held-out fact is in any training or validation prompt);
2. `nemotron train reward` trains a reward model (Bradley-Terry, plus the demo model's own
   log-likelihood distilled: the pair margins, and per reply token; optionally exact swapped-answer
   pairs) on the training pairs (one model by default; with several --rm-seeds one per seed, their
   weights averaged into one: WARM); its pairwise accuracy is measured on the validation and on
   the held-out pairs, per family;
3. `nemotron sdg` runs again with that reward model judging (`judges: [reward]`, the model run
   in-process exactly as a served reward model would be), so the pairs carry reward-model scores;
4. `nemotron train dpo` on the ground-truth pairs, `nemotron train rpo` on the reward-judged pairs;
5. on validation and held-out questions, the SFT, DPO and RPO policies answer, greedily and
   sampled: the share of correct replies and the mean reward-model score, side by side.

    python benchmarks/alignment_loop.py --work build/alignment

Not a CI test (about an hour on 2 busy cores); prints Markdown tables for the README.
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

# The demo model's question relations (train/demo_facts.py) by family: the categories of the tables.
FAMILIES = {"arithmetic": ("add", "sub", "mul"), "countries": ("capital", "capital_of", "continent", "language"),
            "animals": ("sound", "baby", "legs", "home", "food", "class"), "colours": ("colour", "mix"),
            "calendar": ("day_after", "day_before", "month_number", "month_after"),
            "numbers": ("number_word", "next_number", "even"), "science": ("science",)}
# Questions of two relations that state one fact ("the capital of France is Paris" answers both
# "capital of France?" and "Paris is the capital of which country?") go to the same split.
SAME_FACT = {"capital_of": lambda e: ("capital", e), "day_before": lambda i: ("day_after", (i - 1) % 7)}


def facts() -> dict[str, list[list[tuple]]]:
    """Every fact the demo model was taught, by family: each fact a list of the (relation, entity)
    questions that state it."""
    from nemotron.train.demo_facts import relations

    family_of = {name: family for family, names in FAMILIES.items() for name in names}
    grouped: dict[str, dict[tuple, list[tuple]]] = {family: {} for family in FAMILIES}
    for rel in relations():
        for entity in rel.entities:
            key = SAME_FACT[rel.name](entity) if rel.name in SAME_FACT else (rel.name, entity)
            grouped[family_of[rel.name]].setdefault(key, []).append((rel, entity))
    return {family: list(found.values()) for family, found in grouped.items()}


def questions(seed: int, held_out: float, valid: float, phrasings: int) -> tuple[list[dict], list[dict], list[dict]]:
    """The facts split within each family into training, validation and held-out questions: no fact
    is asked in two splits. Training facts are asked in `phrasings` of the chat data's wordings (more,
    more varied prompts for the same facts); validation and held-out ones in the first wording. Each
    question carries its reference reply (the chat data's answer), category and relation."""
    rng = random.Random(seed)
    ask = lambda rel, e, family, wording: {"prompt": wording, "reference": rel.answer(e),  # noqa: E731
                                           "category": family, "relation": rel.name, "entity": e}
    train, checks, held = [], [], []
    for family, found in facts().items():
        rng.shuffle(found)
        n_held, n_valid = round(held_out * len(found)), round(valid * len(found))
        for split, group in ((held, found[:n_held]), (checks, found[n_held:n_held + n_valid])):
            split += [ask(rel, e, family, rel.wordings(e)[0]) for fact in group for rel, e in fact]
        for rel, e in (pair for fact in found[n_held + n_valid:] for pair in fact):
            wordings = rel.wordings(e)
            train += [ask(rel, e, family, wordings[k])
                      for k in sorted(rng.sample(range(len(wordings)), min(phrasings, len(wordings))))]
    return train, checks, held


def _arithmetic_slips(e: tuple, value: int) -> list[int]:
    """Wrong results a reader could mistake for `value`: off by one, two or ten, digits swapped, or
    another operation on the same operands."""
    x, y = e
    found = {value - 2, value - 1, value + 1, value + 2, value - 10, value + 10, int(str(value)[::-1]),
             x + y, x - y, x * y}
    return sorted(v for v in found if v >= 0 and v != value)


def _answer_slot(name: str):
    """For the relations that swap well: e -> (the answer's text in the reference reply, and every
    value of the same relation's answers given the entities), or None."""
    from nemotron.train import demo_facts as f

    fields = {"capital": 1, "capital_of": 0, "language": 3, "sound": 2, "baby": 6, "class": 7, "mix": 2, "colour": 2, "continent": 2,
              "home": 3, "food": 4}
    if name in fields:
        k = fields[name]
        show = (lambda v: f.a_or_an(v)) if name in ("baby", "class") else str  # noqa: E731
        return lambda e, pool: (show(e[k]), [show(o[k]) for o in pool])
    if name == "legs":
        return lambda e, pool: (f._legs(e[5]), [f._legs(o[5]) for o in pool])
    if name in ("add", "sub", "mul"):
        op = {"add": lambda x, y: x + y, "sub": lambda x, y: x - y, "mul": lambda x, y: x * y}[name]
        return lambda e, pool: (str(op(*e)), [str(v) for v in _arithmetic_slips(e, op(*e))])
    named = {"day_before": lambda i: f.DAYS[(i - 1) % 7], "day_after": lambda i: f.DAYS[(i + 1) % 7],
             "month_number": lambda i: f.MONTHS[i], "month_after": lambda i: f.MONTHS[(i + 1) % 12],
             "number_word": lambda n: f.NUMBER_WORDS[n], "next_number": lambda n: str(n + 1),
             "even": lambda n: "an even" if n % 2 == 0 else "an odd"}
    if name in named:
        value = named[name]
        return lambda e, pool: (value(e), [value(o) for o in pool] + (["an even", "an odd"] if name == "even" else []))
    return None


def swap_negatives(train: list[dict], per_question: int, seed: int) -> list[dict]:
    """Exact hard negatives for the training questions: the reference reply against the same reply
    with its answer swapped for another value of the same relation ("7 plus 8 is 15." against
    "7 plus 8 is 16."; "The capital of France is Paris." against "... is Rome."), `per_question`
    each. Ground truth decides, so these pairs cost nothing and are never wrong; they make the reward
    model compare the stated answer with what the trunk knows rather than the look of a reply.
    The swapped values are those of the training facts (and arithmetic slips), never held-out ones."""
    rng = random.Random(seed)
    pools: dict[str, list] = {}
    for q in train:
        pools.setdefault(q["relation"], []).append(q["entity"])
    rows = []
    for q in train:
        slot = _answer_slot(q["relation"])
        if slot is None:
            continue
        answer, values = slot(q["entity"], pools[q["relation"]])
        at = q["reference"].rfind(answer)
        wrong = sorted(set(values) - {answer})
        if at < 0 or not wrong:
            continue
        for value in rng.sample(wrong, min(per_question, len(wrong))):
            rejected = q["reference"][:at] + value + q["reference"][at + len(answer):]
            rows.append({"prompt": [{"role": "user", "content": q["prompt"]}], "chosen": q["reference"],
                         "rejected": rejected, "category": q["category"], "judge": "swap"})
    return rows


def known_relations(work: Path, policy: Path, train: list[dict], threshold: float) -> list[str]:
    """The relations the demo model knows: its greedy answers to one wording of each training
    fact are right at least `threshold` of the time (measured on training facts only; cached)."""
    cache = work / "known_relations.json"
    if not cache.is_file():
        from nemotron.engine.llm import LLM
        from nemotron.engine.sampling import SamplingParams
        from nemotron.sdg.answers import check_reference
        from nemotron.tokenizer import CHAT_STOP_STRINGS, render_chat

        first = list({(q["relation"], q["reference"]): q for q in reversed(train)}.values())
        outputs = LLM(str(policy)).generate([render_chat([{"role": "user", "content": q["prompt"]}]) for q in first],
                                            SamplingParams(max_tokens=24, temperature=0, stop=list(CHAT_STOP_STRINGS)))
        right: dict[str, list[bool]] = {}
        for q, out in zip(first, outputs):
            right.setdefault(q["relation"], []).append(check_reference(out.outputs[0].text.strip(), q["reference"]))
        cache.write_text(json.dumps({name: sum(v) / len(v) for name, v in right.items()}, indent=1))
    shares = json.loads(cache.read_text())
    print("   greedy correctness on training facts: " + ", ".join(f"{k} {v:.0%}" for k, v in shares.items()))
    return [name for name, share in shares.items() if share >= threshold]


def write_jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_seeds(path: Path, qs: list[dict]) -> Path:
    """The questions as `nemotron sdg` seed records (without the entity, which only this script uses)."""
    return write_jsonl(path, ({k: v for k, v in q.items() if k != "entity"} for q in qs))


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
    # No dedup: "What is 9 plus 4?" and "What is 9 plus 7?" are near duplicates as text, not as questions.
    pairs = {"name": "pairs", "kind": "preference", "input": "questions", "n": replies,
             "judges": ["reward"] if reward else ["ground_truth"], "filters": {"dedup": False}}
    if reward:
        models["reward"] = {"model": "demo-reward", "kind": "reward", "engine": str(reward), "max_concurrency": 64}
        pairs["reward_model"] = "reward"
    config = {"name": name, "seed": seed, "models": models,
              "sampling": {"temperature": temperature, "top_p": 1.0, "max_tokens": 24},
              "stages": [{"name": "questions", "kind": "seeds", "path": str(seeds), "field": "prompt",
                          "filters": {"dedup": False}}, pairs],
              "outputs": {"dpo": ["pairs"]}}
    path = work / f"{name}.yaml"
    path.write_text(json.dumps(config, indent=1))  # JSON is YAML
    nemotron("sdg", "run", str(path), "--out", str(work / name), "--no-progress")
    return work / name / "dpo.jsonl"


def evaluate(policy: Path, reward: Path, qs: list[dict], samples: int) -> dict[str, dict[str, float]]:
    """Share of correct replies (the reference check), greedy and sampled (T = 1, `samples` per
    question), overall ("all") and per category, and the mean reward-model scalar of the greedy replies."""
    import torch

    from nemotron.checkpoint.load import load_model
    from nemotron.engine.llm import LLM
    from nemotron.engine.sampling import SamplingParams
    from nemotron.model.config import REWARD_WEIGHTS
    from nemotron.sdg.answers import check_reference
    from nemotron.tokenizer import CHAT_STOP_STRINGS, render_chat
    from nemotron.train.preference_data import encode_scored
    from nemotron.train.reward import score

    llm = LLM(str(policy))
    prompts = [render_chat([{"role": "user", "content": q["prompt"]}]) for q in qs]
    stops = list(CHAT_STOP_STRINGS)
    greedy = [r.outputs[0].text.strip() for r in llm.generate(prompts, SamplingParams(max_tokens=24, temperature=0,
                                                                           stop=stops))]
    sampled = llm.generate([p for p in prompts for _ in range(samples)],
                           [SamplingParams(max_tokens=24, temperature=1.0, top_p=1.0, top_k=0, seed=k,
                                           stop=stops) for k in range(len(prompts) * samples)])
    sampled_qs = [q for q in qs for _ in range(samples)]

    def right(replies: list[str], asked: list[dict]) -> dict[str, float]:
        groups: dict[str, list[bool]] = {"all": []}
        for reply, q in zip(replies, asked):
            ok = check_reference(reply, q["reference"])
            groups["all"].append(ok)
            groups.setdefault(q["category"], []).append(ok)
        return {k: sum(v) / len(v) for k, v in groups.items()}

    rm = load_model(str(reward))
    sequences = [encode_scored([{"role": "user", "content": q["prompt"]}], r, rm.tokenizer) for q, r in zip(qs, greedy)]
    scalar = score(rm.model, sequences, rm.tokenizer.pad_id or 0) @ torch.tensor(REWARD_WEIGHTS)
    return {"greedy": right(greedy, qs), "sampled": right([r.outputs[0].text.strip() for r in sampled], sampled_qs),
            "reward": {"all": scalar.mean().item()}}


def reward_table(evaluations: dict[str, dict]) -> str:
    """RewardBench-style table: pairwise accuracy per category, one column per evaluated split."""
    names = list(evaluations)
    categories = sorted({c for e in evaluations.values() for c in e["by_category"]})
    cell = lambda e, c: (f"{e['by_category'][c]['accuracy']:.1%} ({e['by_category'][c]['pairs']})"  # noqa: E731
                         if c in e["by_category"] else "-")
    lines = ["| category | " + " | ".join(f"{n}: accuracy (pairs)" for n in names) + " |",
             "|---|" + "---|" * len(names)]
    lines += [f"| {c} | " + " | ".join(cell(evaluations[n], c) for n in names) + " |" for c in categories]
    lines += ["| **all** | " + " | ".join(f"**{e['accuracy']:.1%}** ({e['pairs']})" for e in evaluations.values())
              + " |"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default="build/alignment", help="working directory (reruns resume SDG)")
    parser.add_argument("--held-out", type=float, default=0.2, help="share of each family's facts held out "
                        "(reported only)")
    parser.add_argument("--valid", type=float, default=0.1, help="share of each family's facts for validation "
                        "(hyperparameters are chosen on them)")
    parser.add_argument("--min-known", type=float, default=0.5, help="keep the relations the demo model answers "
                        "right (greedy) at least this often on the training facts")
    parser.add_argument("--phrasings", type=int, default=3, help="wordings of each training fact")
    parser.add_argument("--replies", type=int, default=8, help="sampled replies per prompt")
    parser.add_argument("--temperature", type=float, default=1.5, help="sampling temperature of the replies the "
                        "reward model learns from (the demo model is rarely wrong at 1.0)")
    parser.add_argument("--policy-temperature", type=float, default=1.0,
                        help="sampling temperature of the replies DPO and RPO learn from (on-policy)")
    parser.add_argument("--rounds", type=int, default=16, help="SDG runs with different seeds, pooled, for the "
                        "training pairs (~35 s each here; one reward model held out: 87.4%% / 89.3%% / 91.3%% from "
                        "4 / 8 / 16 runs at 1,600 / 1,600 / 2,000 steps)")
    parser.add_argument("--eval-rounds", type=int, default=4, help="SDG runs for validation and held-out pairs")
    parser.add_argument("--rpo-rounds", type=int, default=4, help="SDG runs judged by the reward model, for RPO")
    parser.add_argument("--samples", type=int, default=8, help="sampled answers per held-out question")
    parser.add_argument("--rm-steps", type=int, default=2000)
    parser.add_argument("--rm-lr", type=float, default=1e-3)
    parser.add_argument("--rm-batch", type=int, default=16)
    parser.add_argument("--rm-add-layers", type=int, default=2,
                        help="identity-initialised layers on top of the reward model's trunk")
    parser.add_argument("--rm-lm-weight", type=float, default=1.0,
                        help="auxiliary next-token loss on the chosen replies (keeps the trunk's knowledge)")
    parser.add_argument("--swap-negatives", type=int, default=0,
                        help="per training question, pairs of the reference reply against it with the answer "
                             "swapped for another value of the relation, added to the reward model's data")
    parser.add_argument("--rm-distill-weight", type=float, default=3.0,
                        help="pull the reward margin towards the demo model's own log-likelihood margin")
    parser.add_argument("--rm-distill-scale", type=float, default=0.3)
    parser.add_argument("--rm-dense-weight", type=float, default=0.3,
                        help="dense distillation: the reward head at every reply token towards the demo model's "
                             "log-likelihood of the reply so far (× --rm-distill-scale)")
    parser.add_argument("--rm-dense-target", choices=["so-far", "per-token"], default="per-token")
    parser.add_argument("--rm-train-added-only", action="store_true",
                        help="freeze the demo model's trunk: train only the added layers, final norm and head")
    parser.add_argument("--rm-keep-best", type=int, default=0, metavar="N",
                        help="evaluate the reward model on every validation pair each N steps and keep the "
                             "weights of the best accuracy (0: the last weights)")
    parser.add_argument("--rm-seeds", type=int, nargs="+", metavar="SEED", default=[0],
                        help="a single seed trains one model; several (WARM) train one reward model per seed (batch "
                             "order) and average their weights into one (nemotron train reward --seeds)")
    parser.add_argument("--rm-resume", action="store_true",
                        help="continue the reward model(s) in --work from their checkpoints instead of starting "
                             "over (a finished one is reused; only with unchanged --rm-* settings and data)")
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
    work.mkdir(parents=True, exist_ok=True)
    known = set(known_relations(work, demo, train_q, args.min_known))
    train_q, valid_q, held_q = ([q for q in qs if q["relation"] in known] for qs in (train_q, valid_q, held_q))
    print(f"   relations kept: {', '.join(sorted(known))}", flush=True)
    train_seeds = write_seeds(work / "train_questions.jsonl", train_q)
    valid_seeds = write_seeds(work / "valid_questions.jsonl", valid_q)
    held_seeds = write_seeds(work / "held_out_questions.jsonl", held_q)
    print(f"{len(train_q)} training questions, {len(valid_q)} validation and {len(held_q)} held-out ones", flush=True)

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
    every_valid_pair = str(-(-count(valid_pairs) // args.rm_batch))  # batches
    keep_best = ["--eval-every", str(args.rm_keep_best), "--eval-batches", every_valid_pair, "--keep-best"] \
        if args.rm_keep_best else []
    rm_data = [gt_pairs, policy_pairs]
    if args.swap_negatives:
        rm_data.append(write_jsonl(work / "swap_negatives.jsonl", swap_negatives(train_q, args.swap_negatives,
                                                                                  args.seed)))
        print(f"   {count(rm_data[-1])} swapped-answer pairs from the training questions")
    nemotron("train", "reward", "--model", str(demo), "--data", *map(str, rm_data), "--valid",
             str(valid_pairs), "--out", str(work / "reward"), "--loss", "bt", "--steps", str(args.rm_steps),
             "--lr", str(args.rm_lr), "--warmup", "20", "--batch-size", str(args.rm_batch),
             "--add-layers", str(args.rm_add_layers), "--lm-weight", str(args.rm_lm_weight),
             "--distill-weight", str(args.rm_distill_weight), "--distill-scale", str(args.rm_distill_scale),
             "--dense-weight", str(args.rm_dense_weight), "--dense-target", args.rm_dense_target,
             *(["--train-added-only"] if args.rm_train_added_only else []),
             *keep_best, *(["--seeds", *map(str, args.rm_seeds)] if len(args.rm_seeds) > 1
                           else ["--seed", str(args.rm_seeds[0])]),
             *(a for a in loop if not (args.rm_resume and a == "--no-resume")))
    reward = work / "reward" / "final"
    held_eval = work / "reward" / "held_out_eval.json"
    with held_eval.open("w") as out:
        subprocess.run([sys.executable, "-m", "nemotron", "train", "reward-eval", str(reward), "--data",
                        str(held_pairs), "--json", "--threads", "1"], check=True, cwd=ROOT, stdout=out)
    rm_evals = {"validation": json.loads((work / "reward" / "reward_eval.json").read_text()),
                "held-out": json.loads(held_eval.read_text())}
    print("   reward model pairwise accuracy:\n" + reward_table(rm_evals), flush=True)
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
        (work / f"policies_{title}.json").write_text(json.dumps(dict(rows), indent=1))
        print(f"\n{title}: {len(qs)} questions\n")
        print(f"| policy | correct, greedy | correct, sampled at T = 1 ({args.samples} per question) "
              "| mean reward (greedy answers) |")
        print("|---|---|---|---|")
        for name, r in rows:
            print(f"| {name} | {r['greedy']['all']:.1%} | {r['sampled']['all']:.1%} | {r['reward']['all']:.3f} |")
        categories = sorted({c for _, r in rows for c in r["greedy"]} - {"all"})
        print("\n| category (questions) | " + " | ".join(f"{name}: greedy / sampled" for name, _ in rows) + " |")
        print("|---|" + "---|" * len(rows))
        for c in categories:
            n = sum(q["category"] == c for q in qs)
            print(f"| {c} ({n}) | " + " | ".join(f"{r['greedy'][c]:.1%} / {r['sampled'][c]:.1%}" for _, r in rows)
                  + " |", flush=True)
    print("\nreward model pairwise accuracy:\n" + reward_table(rm_evals))


if __name__ == "__main__":
    main()
