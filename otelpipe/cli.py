"""`otelpipe [run] | validate | components` — the only module that configures logging or exits.

As with the Collector, `otelpipe --config F` runs (the `run` word is optional),
`--config` takes a path, `file:PATH`, `env:VAR` or `yaml:INLINE`, and
`--set key::path=value` overrides one key. `run` fails fast on a bad config
(every problem printed, exit 1), then serves until SIGTERM/SIGINT (graceful
drain, exit 0; a second SIGINT forces the exit) and reloads its config on
SIGHUP. uvloop is used when available.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import resource
import signal
import sys
from collections.abc import Sequence
from typing import TextIO

from otelpipe import components
from otelpipe.defaults import load_config
from otelpipe.top import top
from pipeline.config.schema import Config
from pipeline.config.watch import file_sources, watch
from pipeline.errors import ConfigError, StartError
from pipeline.logutil import configure_logging
from pipeline.memtune import tune_malloc
from pipeline.version import VERSION

log = logging.getLogger("otelpipe.service")


def _config_paths(args: argparse.Namespace) -> list[str]:
    paths: list[str] = list(args.config or [])
    if not paths and os.environ.get("OTELPIPE_CONFIG"):
        paths = [p for p in os.environ["OTELPIPE_CONFIG"].split(os.pathsep) if p]
    return paths


def _print_issues(err: ConfigError, stream: TextIO = sys.stderr) -> None:
    for issue in err.issues:
        print(str(issue), file=stream)


def cmd_validate(args: argparse.Namespace) -> int:
    paths = _config_paths(args)
    try:
        cfg = load_config(paths, components.factories(), sets=args.set or ())
    except ConfigError as e:
        _print_issues(e)
        n = sum(1 for i in e.issues if not i.warning)
        print(f"invalid configuration: {n} problem{'s' if n != 1 else ''}", file=sys.stderr)
        return 1
    for w in cfg.warnings:
        print(str(w), file=sys.stderr)
    print(f"configuration is valid: {len(cfg.pipelines)} pipeline(s): "
          f"{', '.join(str(p) for p in cfg.pipelines)}")
    return 0


def cmd_components(_args: argparse.Namespace) -> int:
    fmap = components.factories()
    for kind, items in fmap.items():
        print(f"{kind.section}:")
        for name in sorted(items):
            print(f"  {name:<22} {items[name].stability_text()}".rstrip())
    return 0


def raise_open_file_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit, as every Go program (the Collector too) does at start.

    Distributions often start services with a soft limit of 1024 and a much
    higher hard one; each client connection costs a descriptor. Returns the
    (old, new) soft limit; the new one is unchanged when raising is refused.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as e:  # e.g. an unlimited hard limit above the kernel's nr_open
        log.info("cannot raise the open-file limit", extra={"soft": soft, "hard": hard, "error": str(e)})
        return soft, soft
    return soft, hard


def cmd_run(args: argparse.Namespace) -> int:
    tune_malloc()  # before any gRPC thread exists; see pipeline/memtune.py
    paths = _config_paths(args)
    sets = args.set or ()
    fmap = components.factories()
    try:
        cfg = load_config(paths, fmap, sets=sets)
    except ConfigError as e:
        _print_issues(e)
        print("otelpipe: not starting: the configuration is invalid (see above; `otelpipe validate` checks a "
              "config without running it)", file=sys.stderr)
        return 1
    tel = cfg.service.telemetry.logs
    configure_logging(tel.level, tel.encoding)
    old_nofile, nofile = raise_open_file_limit()
    if nofile != old_nofile:
        log.info("raised the open-file limit", extra={"from": old_nofile, "to": nofile})
    for w in cfg.warnings:
        log.warning(w.message, extra={"path": w.path, "file": w.file})

    def reload_config() -> Config:
        return load_config(paths, fmap, sets=sets)

    loop_factory = None
    if not args.no_uvloop:
        try:
            import uvloop

            loop_factory = uvloop.new_event_loop
        except ImportError:
            loop_factory = None
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            watched = file_sources(paths) if args.watch_config else []
            if args.watch_config and not watched:
                log.warning("--watch-config: no config file to watch (the config comes from env:, yaml: or "
                            "the embedded default)")
            return runner.run(_serve(cfg, fmap, reload_config, watched))
    except KeyboardInterrupt:
        return 130


async def _serve(cfg: Config, fmap: object, reload_config: object, watched: list[str]) -> int:
    from pipeline.service import Service

    service = Service(cfg, fmap, reload_config=reload_config)  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    interrupts = 0

    def on_stop(signame: str) -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts > 1 and signame == "SIGINT":
            log.error("second SIGINT: exiting without draining")
            os._exit(130)
        log.info("stop requested", extra={"signal": signame})
        service.request_stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_stop, sig.name)
    loop.add_signal_handler(signal.SIGHUP, service.request_reload)
    watcher = asyncio.create_task(watch(watched, service.request_reload), name="otelpipe-config-watch") \
        if watched else None
    try:
        await service.run()
    except (StartError, OSError) as e:
        log.error("otelpipe failed to start", extra={"error": str(e)})
        print(f"otelpipe: failed to start: {e}", file=sys.stderr)
        return 1
    finally:
        if watcher is not None:
            watcher.cancel()
    return 1 if service.fatal else 0


COMMANDS = ("run", "validate", "components", "top")


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", action="append", metavar="SOURCE",
                   help="config: a file path, file:PATH, env:VAR or yaml:INLINE; repeat to merge several, later "
                        "keys winning (env: OTELPIPE_CONFIG)")
    p.add_argument("--set", action="append", metavar="KEY::PATH=VALUE",
                   help="override one key after every --config, e.g. processors::batch::timeout=2s")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="otelpipe", description="OpenTelemetry-style telemetry pipeline daemon")
    p.add_argument("--version", action="version", version=f"otelpipe version {VERSION}")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the pipelines (the embedded default config when no --config is given); "
                                     "the default command")
    _config_args(run)
    run.add_argument("--no-uvloop", action="store_true", help="use the default asyncio event loop")
    run.add_argument("--watch-config", action="store_true",
                     help="reload when a config file changes (e.g. a Kubernetes ConfigMap update), as SIGHUP does")
    run.set_defaults(func=cmd_run)
    val = sub.add_parser("validate", help="check a config; exit 1 with one line per problem")
    _config_args(val)
    val.set_defaults(func=cmd_validate)
    comp = sub.add_parser("components", help="list every component type with its signals and stability")
    comp.set_defaults(func=cmd_components)
    topp = sub.add_parser("top", help="live items per second, totals and problems of every component (from /status)")
    topp.add_argument("--admin", default="localhost:8888", metavar="HOST:PORT",
                      help="the admin server (service.telemetry.metrics.address)")
    topp.add_argument("--interval", type=float, default=2.0, help="seconds between redraws")
    topp.add_argument("--once", action="store_true", help="print one table and exit")
    topp.set_defaults(func=lambda a: top(a.admin, once=a.once, interval=a.interval))
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    # The Collector's habit: `otelcol --config F` runs. No command word (or only options) means `run`.
    if not args_in or (args_in[0] not in COMMANDS and args_in[0] not in ("-h", "--help", "--version")):
        args_in.insert(0, "run")
    args = build_parser().parse_args(args_in)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
