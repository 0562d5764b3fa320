"""The ``avprompt`` command line: a thin layer over library functions that the tests call directly.

Importing this module imports no torch (``avprompt --help`` stays fast); each command imports what
it needs. Library errors (bad option values, missing files, wrong weights) become one line on
stderr and exit code 2, never a traceback.
"""
from __future__ import annotations

import sys
from typing import Literal, Optional

import typer

import avprompt  # noqa: F401  (HF_HUB_OFFLINE before anything imports laion_clap)

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Few-shot and zero-shot audio-visual prompt learning benchmark (DG-SCT and baselines).")
backbones_app = typer.Typer(no_args_is_help=True, help="Frozen encoder architectures and weights.")
app.add_typer(backbones_app, name="backbones")

def _version(value: bool) -> None:
    if value:
        typer.echo(f"avprompt {avprompt.__version__}")
        raise typer.Exit()


@app.callback()
def _main_options(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                               help="Print the version and exit.")) -> None:
    """Few-shot and zero-shot audio-visual prompt learning benchmark (DG-SCT and baselines)."""


USER_ERRORS = (ValueError, FileNotFoundError, KeyError, NotADirectoryError, PermissionError)


def fail(message: str, code: int = 2):
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@app.command("methods")
def methods_cmd(pattern: str = typer.Argument("*", help="glob over method keys"),
                params: Optional[str] = typer.Option(None, "--params", help="print the parameter report of METHOD"),
                backbones: str = typer.Option("tiny", "--backbones", help="backbone spec for --params"),
                task: str = typer.Option("ave", "--task", help="task for --params (ave|ave-cls|llp-cls)")):
    """List registered methods (key, modalities, kind, runs_on, description), or a parameter report.

    Example: avprompt methods "co*" --params
    """
    from avprompt.registry import discover, list_methods

    if params:
        from avprompt.params import parameter_report, format_parameter_report
        typer.echo(format_parameter_report(parameter_report(params, backbones, task)))
        return
    reg = discover()
    keys = list_methods(pattern)
    if not keys:
        fail(f"no registered method matches {pattern!r}; `avprompt methods` lists them")
    width = max(len(k) for k in keys)
    for k in keys:
        cls = reg[k]
        mods = "|".join(cls.supported_modalities)
        # kind: what it does with the shots; runs_on: feature cache or the encoders every step
        typer.echo(f"{k:<{width}}  [{mods:<8}] {cls.kind:<14} {cls.runs_on:<8}  {cls.description}")


@app.command("tasks")
def tasks_cmd(pattern: str = typer.Argument("*", help="glob over task names"),
              protocol: Optional[str] = typer.Option(None, "--protocol", help="only few-shot | pretrain | supervised")):
    """List registered tasks (name, dataset, level, protocol, primary metric, description).

    Example: avprompt tasks "ave*"
    """
    from fnmatch import fnmatch

    from avprompt.tasks import PROTOCOLS, list_tasks

    if protocol is not None and protocol not in PROTOCOLS:
        fail(f"--protocol {protocol!r}: use one of {', '.join(PROTOCOLS)}")
    tasks = [t for t in list_tasks(protocol) if fnmatch(t.name, pattern)]
    if not tasks:
        fail(f"no registered task matches {pattern!r}; `avprompt tasks` lists them")
    # primary metric: "standard|reference-compatible" when the two protocols differ
    rows = [(t.name, t.dataset, t.level, t.protocol,
             (t.primary or "-") + (f"|{t.reference_primary}" if t.reference_primary else ""), t.description)
            for t in tasks]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        typer.echo("  ".join(f"{c:<{w}}" for c, w in zip(r, widths)) + "  " + r[5])


@backbones_app.command("list")
def backbones_list(all_open_clip: bool = typer.Option(False, "--all", help="also list every open_clip architecture")):
    """Known encoder architectures and where their weights come from.

    Example: avprompt backbones list --all
    """
    from avprompt.encoders.catalog import catalog, hub_cache_dir
    for r in catalog(all_open_clip):
        have = f"  [on disk: {', '.join(r['on_disk'])}]" if r["on_disk"] else ""
        typer.echo(f"{r['tower']:<5} {r['arch']:<28} {r['weights']}{have}")
    typer.echo(f"on disk: shipped assets, and open_clip tags found in {hub_cache_dir()} or ~/.cache/clip; "
               "anything else is downloaded on first use (needs internet) or given as a file")
    typer.echo("spec: --backbones synthav | synthav-10s | tiny | clip=ARCH[@TAG|FILE],clap=ARCH[+roberta][@FILE]")


@backbones_app.command("build")
def backbones_build(world: str = typer.Option("synthav", "--world", help="the world to pre-train on (synthav)"),
                    out: Optional[str] = typer.Option(None, "--out", help="output folder (default: the package's assets)"),
                    seed: int = typer.Option(0, "--seed"),
                    quick: bool = typer.Option(False, "--quick", help="a reduced build (minutes), for checks"),
                    minutes: float = typer.Option(14.0, "--minutes", help="wall-time guard for the whole build"),
                    plan: Literal["full", "clap-10s"] = typer.Option(
                        "full", "--plan", help="full: the default towers; clap-10s: the 10 s-window audio "
                        "tower (backbone spec synthav-10s), written to the assets' synthav-10s folder"),
                    towers: Optional[list[str]] = typer.Option(None, "--towers", parser=lambda v: v,
                                                               metavar="clip,clap",
                                                               help="towers to (re)build (default: the plan's); "
                                                               "the others are kept from --out")):
    """Pre-train the embedded CLIP/CLAP backbones on the SynthAV caption corpus.

    Example: avprompt backbones build --out /tmp/backbones --quick
    """
    if world != "synthav":
        fail(f"--world {world!r}: only synthav is supported")
    from avprompt.synthav.backbones import PLAN_DIRS, PLANS, build_backbones
    if quick and plan != "full":
        fail(f"--quick builds the tiny test towers; it does not combine with --plan {plan}")
    chosen = PLANS["quick" if quick else plan]
    names = chosen.towers if not towers else tuple(t.strip() for v in towers for t in v.split(",") if t.strip())
    out = out or str(PLAN_DIRS[plan])
    try:
        manifest = build_backbones(out, minutes, seed=seed, quick=quick, towers=names, plan=chosen,
                                   log=lambda s: typer.echo(s))
    except ValueError as e:
        fail(str(e))
    for kind, t in manifest["towers"].items():
        zs = t["zero_shot"]
        typer.echo(f"{kind}: zero-shot held-out pairs {zs['heldout']['accuracy']['mean']:.3f}, AVE names "
                   f"{zs['ave']['accuracy']['mean']:.3f}, LLP names {zs['llp']['accuracy']['mean']:.3f} "
                   f"(chance {zs['ave']['chance']:.3f})")
    typer.echo(f"backbones written to {out}")


def _mount_optional_groups():
    """Command groups living in their own modules (each imports no torch at module level)."""
    import importlib
    for module, name, kind in (("avprompt.cli_data", "data", "group"),
                               ("avprompt.cli_bench", "bench", "command"),
                               ("avprompt.cli_bench", "zeroshot", "command"),
                               ("avprompt.cli_bench", "predict", "command"),
                               ("avprompt.cli_explain", "explain", "command"),
                               ("avprompt.cli_train", "train", "command"),
                               ("avprompt.cli_train", "eval", "command"),
                               ("avprompt.cli_report", "report", "command")):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            continue
        if kind == "group":
            app.add_typer(mod.app, name=name)
        else:
            app.command(name)(getattr(mod, f"{name}_command"))


_mount_optional_groups()


def main(argv: list[str] | None = None):
    import warnings

    from avprompt.registry import RegistryError
    # Deprecation chatter from laion-clap's imports (timm.models.layers, torch.meshgrid) says
    # nothing to a user of the CLI; library use keeps every warning.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"timm\..*")
    warnings.filterwarnings("ignore", message=r"torch\.meshgrid", category=UserWarning)
    from avprompt.engine.executors import keep_freed_memory
    keep_freed_memory()  # this process may run cells itself (--jobs 1, train, zeroshot)
    args = sys.argv[1:] if argv is None else list(argv)
    if not args:  # no command: typer prints the help
        app(args=args, standalone_mode=True)
    try:
        # not standalone: a bad option value (typed choices and lists) comes back as an exception
        # and is said in one line, like every other user error, instead of a boxed panel
        rv = app(args=args, standalone_mode=False)
    except USER_ERRORS + (RegistryError,) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        typer.echo(f"error: {msg}", err=True)
        sys.exit(2)
    except typer.Abort:
        typer.echo("Aborted!", err=True)
        sys.exit(1)
    except typer.TyperException as e:
        if not hasattr(e, "format_message"):
            raise
        ctx = getattr(e, "ctx", None)
        hint = f"; see `{ctx.command_path} --help`" if ctx is not None else ""
        msg = " ".join(e.format_message().replace("Value error, ", "").split())
        typer.echo(f"error: {msg}{hint}", err=True)
        sys.exit(getattr(e, "exit_code", 2))
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
