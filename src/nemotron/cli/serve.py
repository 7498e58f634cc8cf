"""`nemotron serve`: the NeMo /generate API, the OpenAI API and a chat playground over HTTP."""
from __future__ import annotations

import argparse
import logging
import os
import socket
import sys

from nemotron.cli.main import add_model_loading, add_parallel, parallel_config, parallel_launcher

API_KEY_ENV = "NEMOTRON_API_KEY"


def register(commands) -> None:
    serve = commands.add_parser(
        "serve", help="serve a model over HTTP (NeMo /generate, OpenAI /v1, reward scoring, playground at /)")
    serve.add_argument("model", nargs="?", help="model directory, .nemo file or preset (default: the demo model)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: localhost only)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--served-model-name", help="model id reported by /v1/models (default: from MODEL)")
    serve.add_argument("--api-key", help=f"require 'Authorization: Bearer KEY' (default: ${API_KEY_ENV}, else none)")
    serve.add_argument("--max-body-mb", type=float, default=16.0, help="largest request body accepted")
    serve.add_argument("--request-timeout", type=float, default=600.0, help="seconds before a request is cancelled")
    serve.add_argument("--shutdown-timeout", type=float, default=30.0,
                       help="on SIGTERM, seconds running requests get to finish while new ones get 503")
    serve.add_argument("--allowed-hosts", default="",
                       help="comma-separated host names the server answers for besides localhost and IP "
                            "addresses (DNS-rebinding protection); '*' for any")
    serve.add_argument("--cors-origins", default="",
                       help="comma-separated origins (https://app.example) whose web pages may call the API")
    serve.add_argument("--max-num-seqs", type=int, default=256, help="requests batched together at most")
    serve.add_argument("--kv-cache-gb", type=float, default=None, help="KV cache size on CPU (default 2)")
    serve.add_argument("--gpu-memory-fraction", type=float, default=None,
                       help="share of the GPU memory left after loading that the KV cache takes (default 0.9)")
    serve.add_argument("--max-model-len", type=int, default=None,
                       help="context served, prompt + generated (default: the model's own)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    add_model_loading(serve)
    add_parallel(serve)
    serve.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    import torch
    import uvicorn

    from nemotron.assets import default_model_dir
    from nemotron.checkpoint.load import load_model, resolve
    from nemotron.errors import NemotronError
    from nemotron.parallel.launch import check_fits
    from nemotron.server import create_app
    from nemotron.server.runner import DrainingServer
    from nemotron.tokenizer import Tokenizer

    spec = args.model or str(default_model_dir())
    resolve(spec)  # a wrong path or a taken port fails here, before the model loads
    config = _server_config(args, spec)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    launch = parallel_launcher(args, spec, config.engine, device)
    if launch is not None and launch.is_worker:  # a torchrun rank other than 0: no HTTP, only steps
        launch.serve_steps()
        return
    if launch is not None:
        if args.lora:
            raise NemotronError("--lora merges an adapter into a whole model; for --tp/--pp merge it into a "
                                "checkpoint first (nemotron convert MODEL OUT --merge-lora ADAPTER)")
        check_fits(launch.options)  # before anything listens or spawns
    _check_port_free(args.host, args.port)
    failure: list[BaseException] = []

    def load():
        loaded = launch.start() if launch is not None else load_model(
            spec, dtype=args.dtype, device=device, trust_pickle=args.trust_pickle, force=args.force)
        if args.tokenizer:
            loaded.tokenizer = Tokenizer.from_file(args.tokenizer)
        if args.lora:
            from nemotron.checkpoint.peft import merge_adapter_into

            merge_adapter_into(loaded, args.lora)
        if launch is not None:
            launch.ranks.watch(on_rank_failure)
        return loaded

    def stop(err: BaseException) -> None:
        failure.append(err)
        server.should_exit = True

    def on_rank_failure(err: BaseException) -> None:  # from the watcher thread
        served = app.state.server.model
        if served is not None and served.llm is not None:
            served.llm.fail(err)  # requests in flight answer 503
        stop(err)  # uvicorn polls should_exit

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    app = create_app(load, config, on_load_error=stop)
    # loop="asyncio": the server as measured and tested (uvicorn's "auto" would take uvloop, which
    # is installed for the SDG client).
    server = DrainingServer(app, uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level,
                                                timeout_graceful_shutdown=5, loop="asyncio"))
    print(f"serving {spec} as {config.model_name!r} on http://{args.host}:{args.port} "
          f"(playground at /, OpenAI API at /v1, NeMo API at PUT /generate)"
          + ("; API key required" if config.api_key else "")
          + (f"; {launch.describe()}" if launch is not None else ""), file=sys.stderr)
    try:
        server.run()
    except SystemExit:  # uvicorn exits when it cannot listen, after logging why
        raise NemotronError(f"could not serve on {args.host}:{args.port}") from None
    finally:
        if launch is not None:
            launch.close()
    if failure:
        err = failure[0]
        raise err if isinstance(err, NemotronError) else NemotronError(f"loading {spec} failed: {err}")


def _server_config(args: argparse.Namespace, spec: str):
    from nemotron.engine.llm_engine import EngineConfig
    from nemotron.errors import NemotronError
    from nemotron.server import ServerConfig

    engine = dict(max_num_seqs=args.max_num_seqs, parallel=parallel_config(args), max_model_len=args.max_model_len)
    if args.kv_cache_gb is not None:
        engine["cpu_kv_cache_bytes"] = int(args.kv_cache_gb * 1024**3)
    if args.gpu_memory_fraction is not None:
        engine["gpu_memory_fraction"] = args.gpu_memory_fraction
    # The environment only fills the key's default, here at the edge.
    api_key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV) or None
    try:
        if not 0 < args.port < 65536:
            raise ValueError(f"--port must be in 1..65535, got {args.port}")
        return ServerConfig(model_name=args.served_model_name or _model_name(spec), api_key=api_key,
                            max_body_bytes=int(args.max_body_mb * 1024**2), request_timeout_s=args.request_timeout,
                            shutdown_timeout_s=args.shutdown_timeout, allowed_hosts=_allowed_hosts(args),
                            cors_origins=_names(args.cors_origins), engine=EngineConfig(**engine))
    except ValueError as err:
        raise NemotronError(f"invalid server settings: {err}") from None


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _allowed_hosts(args: argparse.Namespace) -> tuple[str, ...]:
    """The name the server is bound to (on all interfaces, the machine's name) and the user's;
    IP addresses and localhost are always served."""
    bound = [socket.gethostname()] if args.host in ("0.0.0.0", "::", "") else [args.host]
    return tuple(dict.fromkeys(h for h in (*bound, *_names(args.allowed_hosts)) if h))


def _check_port_free(host: str, port: int) -> None:
    from nemotron.errors import NemotronError

    try:
        with socket.create_server((host, port)):
            pass
    except OSError as err:
        raise NemotronError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None


def _model_name(spec: str) -> str:
    name = os.path.basename(os.path.normpath(spec))
    return name[:-5] if name.endswith(".nemo") else name or "nemotron"
