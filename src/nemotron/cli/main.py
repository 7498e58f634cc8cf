"""The `nemotron` command. Every error a user can cause ends as one line on stderr, exit status 2.

Each command lives in its own module exposing `register(subparsers)`, which adds its parser and
sets `func` (called with the parsed arguments). Modules are imported when the program starts, so
keep their top-level imports light and import heavy machinery inside the command functions.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys

from nemotron.allocator import reexec_with_mimalloc
from nemotron.errors import NemotronError

COMMAND_MODULES = [
    "nemotron.cli.info",
    "nemotron.cli.generate",
    "nemotron.cli.convert",
    "nemotron.cli.memory",
    "nemotron.cli.quantize",
    "nemotron.cli.serve",
    "nemotron.cli.sdg",
    "nemotron.cli.train",
]


class Parser(argparse.ArgumentParser):
    """Options may come anywhere among a command's positionals (`generate MODEL --dtype bfloat16 "prompt"`):
    a parser without subcommands parses intermixed. Subcommand parsers are made of this class too.
    Everything after `--` is positional (a prompt that starts with "-"), and a usage error is one line."""

    def parse_known_args(self, args=None, namespace=None):
        nested = any(a.nargs in (argparse.PARSER, argparse.REMAINDER) for a in self._actions)
        if nested or getattr(self, "_intermixing", False):  # parse_known_intermixed_args calls us back
            return super().parse_known_args(args, namespace)
        args = list(sys.argv[1:] if args is None else args)
        literal: dict[str, str] = {}
        if "--" in args:  # Python 3.11's intermixed parsing loses `--` when no positional comes before it:
            # the words after it go in as placeholders that cannot look like options, and come back after
            cut = args.index("--")
            literal = {f"\0arg{k}\0": word for k, word in enumerate(args[cut + 1:])}
            args = args[:cut] + list(literal)
        self._intermixing = True
        try:
            namespace, extras = self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False
        for name, value in vars(namespace).items():
            if isinstance(value, str) and value in literal:
                setattr(namespace, name, literal[value])
            elif isinstance(value, list):
                setattr(namespace, name, [literal.get(v, v) if isinstance(v, str) else v for v in value])
        return namespace, [literal.get(e, e) for e in extras]

    def error(self, message: str):
        """One line (argparse prints the whole usage block first), exit status 2."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def add_model_loading(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto",
                        help="compute dtype (default auto: on a CPU bfloat16 where it computes in bf16 natively, "
                             "else float32; on a GPU the checkpoint's stored dtype)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--tokenizer", help="tokenizer.model or tokenizer.json to use instead of the model's own")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow loading pickled checkpoints that hold arbitrary Python objects (trusted files only)")
    parser.add_argument("--force", action="store_true",
                        help="load even when the memory planner says the weights do not fit the device's free memory")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="CPU threads for torch (default: torch's choice; 1 is often faster on a busy machine)")
    parser.add_argument("--lora", metavar="ADAPTER", help="a LoRA adapter directory (PEFT layout) merged into "
                        "the model's weights at load")


def add_parallel(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tp", type=int, default=1, metavar="N",
                        help="tensor parallel: split every layer over N GPUs (or N CPU processes)")
    parser.add_argument("--pp", type=int, default=1, metavar="M", help="pipeline parallel: split the layers into M stages")
    parser.add_argument("--dist-timeout", type=float, default=300.0, metavar="S",
                        help="seconds a rank may keep the others waiting in a step before the run is stopped")


def parallel_config(args: argparse.Namespace):
    """The --tp / --pp options (under torchrun they must multiply to its WORLD_SIZE)."""
    from nemotron.parallel.runtime import ParallelConfig

    return ParallelConfig(args.tp, args.pp, args.dist_timeout)


def parallel_launcher(args: argparse.Namespace, spec: str, engine, device: str):
    """How this command's ranks start (nemotron.parallel.launch.Launch), or None on one device."""
    from nemotron.parallel.launch import Launch, RankOptions, under_torchrun

    if engine.parallel.world_size == 1 and not under_torchrun():
        return None
    kind = "cuda" if device.startswith("cuda") else device
    return Launch(RankOptions(spec, engine, args.dtype, kind, args.trust_pickle, args.threads))


def auto_dtype(device: str | None) -> str | None:
    """--dtype auto: the CPU's preferred dtype (nemotron.quant.cpu), or None (stored) on a GPU."""
    import torch

    from nemotron.quant.cpu import default_cpu_dtype

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return str(default_cpu_dtype()).removeprefix("torch.") if torch.device(device).type == "cpu" else None


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="nemotron", description="Run Nemotron-family models. MODEL is a Hugging Face directory, a .nemo "
        "file or directory, a GGUF file, or a preset name (random weights); omitted, the embedded demo model "
        "is used.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # the `nemotron` program itself (tests call main(argv) in their own process)
        reexec_with_mimalloc()  # nemotron.allocator: a decode step's many small allocations
    # OpenMP threads that spin at barriers steal the cores their partners wait for as soon as anything
    # else runs: a 2-thread bf16 decode went from 30-50 tok/s (PASSIVE) to 4-7 (libgomp's default
    # spin) under a load of 7. Set before torch loads libgomp (commands import it later); a value
    # the user set wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = build_parser().parse_args(argv)
    threads = vars(args).get("threads")  # only commands that load a model have the flag
    if threads:
        import torch

        torch.set_num_threads(threads)
    try:
        if vars(args).get("device") not in (None, "auto"):  # `train` spells "the default" auto
            checked_device(args.device)
        if vars(args).get("dtype") == "auto":
            args.dtype = auto_dtype(args.device)
        status = args.func(args)  # a command may return its own exit status (`sdg run`: 3, 4)
    except NemotronError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as a killed writer would
        _silence_stdout()
        return 141
    except OSError as err:
        if err.filename is not None or err.errno not in (errno.ENOSPC, errno.EIO, errno.EDQUOT):
            raise  # not a full or failing output (files are named in checkpoint errors, which are one line)
        _silence_stdout()
        print(f"error: cannot write the output: {err.strerror}", file=sys.stderr)
        return 2
    return status if isinstance(status, int) else 0


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that Python's own flush at exit does not fail a second time."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def checked_device(name: str) -> None:
    """--device, checked before anything loads: a name torch knows, and a CUDA GPU that is there."""
    import torch

    from nemotron.errors import ConfigError

    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"device {name!r}: {str(err).splitlines()[0]}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r}: this torch sees no CUDA GPU (a CPU build, or no driver)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device {name!r}: there are {torch.cuda.device_count()} CUDA GPU(s)")


if __name__ == "__main__":
    sys.exit(main())
