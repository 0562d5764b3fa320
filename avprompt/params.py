"""Parameter report: trainable vs total parameters per component (DG-SCT paper, table 6 style).

``avprompt methods --params KEY --backbones SPEC --task ave`` prints it. Components are named
from a method's parameter names: the frozen towers, and for DG-SCT the A2V / V2A prompt
projections (psi, the token-axis conv + Linear the paper's table 6 blames for most of the growth)
separately from their attention layers; any other top-level module keeps its own name.
"""
from __future__ import annotations

from collections import OrderedDict

from avprompt.task import TaskSpec

NAMES = {
    "encoders.vision": "CLIP image + text towers (frozen)",
    "encoders.audio": "CLAP audio + text towers (frozen)",
    "head": "heads (E_v, E_a, T_v, T_a)",
    "ctx": "learnable prompt context",
    "prompt_": "learnable prompt context",
    "log_scale": "temperatures",
    "adapter": "CLIP-Adapter",
    "av_audio": "audio-visual contrastive projection",
}
#: DG-SCT module parameter (injections.<k>_<point>.<a2v|v2a>.<name>) -> component, by name prefix
INJECTED = (("prompt", "A2V/V2A projection (psi)"), ("ch_", "channel attention (eq. 3)"),
            ("sp_", "spatial attention (eq. 4)"), ("rnn", "temporal gate (eq. 5)"),
            ("t_out", "temporal gate (eq. 5)"), ("latent", "latent tokens (reference)"),
            ("out", "output bottleneck (reference)"), ("gate", "output gates"))


def component(name: str) -> str:
    """Component label of one parameter name."""
    parts = name.split(".")
    if parts[0] == "encoders" and len(parts) > 1:
        return NAMES.get(".".join(parts[:2]), "encoders." + parts[1])
    if parts[0] == "injections" and len(parts) > 3:
        return next((label for prefix, label in INJECTED if parts[3].startswith(prefix)), parts[3])
    for prefix, label in NAMES.items():
        if parts[0].startswith(prefix):
            return label
    return parts[0]


def task_spec(task_name: str, num_segments: int = 10) -> TaskSpec:
    """A ``TaskSpec`` with the real dataset's class count (``Task.reference_classes``) and
    placeholder class names: the report depends only on the level and the count."""
    from avprompt.tasks import discover
    known = [t for t in discover().values() if t.reference_classes > 0]
    task = next((t for t in known if t.name == task_name), None)
    if task is None:
        raise ValueError(f"--task {task_name!r}: use one of {', '.join(t.name for t in known)}")
    return TaskSpec(task.name, task.level, tuple(f"class {i}" for i in range(task.reference_classes)),
                    num_segments)


def count(method) -> dict:
    """{"components": [{name, trainable, total}], "trainable", "total"} of a built method."""
    rows: OrderedDict[str, list[int]] = OrderedDict()
    seen = set()
    for name, p in method.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            continue
        seen.add(id(p))
        row = rows.setdefault(component(name), [0, 0])
        row[0] += p.numel() if p.requires_grad else 0
        row[1] += p.numel()
    comps = [{"name": k, "trainable": t, "total": n} for k, (t, n) in rows.items()]
    return {"components": comps, "trainable": sum(c["trainable"] for c in comps),
            "total": sum(c["total"] for c in comps)}


def parameter_report(method_key: str, backbones_spec: str, task_name: str, **overrides) -> dict:
    """Build METHOD on BACKBONES for TASK (placeholder class names) and count its parameters."""
    import torch

    from avprompt.encoders import load_encoders
    from avprompt.registry import get_method

    cls = get_method(method_key)
    task = task_spec(task_name)
    torch.manual_seed(0)
    method = cls(load_encoders(backbones_spec), task, cls.default_config(**overrides))
    report = count(method)
    report.update(method=method_key, backbones=backbones_spec, task=task_name)
    compare = getattr(cls, "reference_overrides", None)
    if compare:  # the same method as its released code builds it, on the same backbones
        torch.manual_seed(0)
        ref = cls(method.encoders, task, cls.default_config(**{**overrides, **compare}))
        report["reference"] = {**count(ref), "overrides": compare}
    return report


def _m(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n:,}"


def format_parameter_report(report: dict) -> str:
    """A plain-text table: component, trainable, total (and the released code's trainable count
    per component when the method declares one); then the totals and trainable share."""
    ref = report.get("reference")
    ref_by = {c["name"]: c["trainable"] for c in ref["components"]} if ref else {}
    names = [c["name"] for c in report["components"]] + [n for n in ref_by if n not in
                                                          {c["name"] for c in report["components"]}]
    own = {c["name"]: c for c in report["components"]}
    rows = [(n, _m(own[n]["trainable"]) if n in own else "-", _m(own[n]["total"]) if n in own else "-",
             _m(ref_by[n]) if n in ref_by else "-") for n in names]
    rows.append(("total", _m(report["trainable"]), _m(report["total"]), _m(ref["trainable"]) if ref else "-"))
    w = max(len(r[0]) for r in rows)
    head = f"{report.get('method', '')} on {report.get('backbones', '')} ({report.get('task', '')})"
    ref_head = f"  {'released code':>13}" if ref else ""
    lines = [head, f"{'component':<{w}}  {'trainable':>10}  {'total':>10}{ref_head}"]
    lines += [f"{a:<{w}}  {b:>10}  {c:>10}" + (f"  {d:>13}" if ref else "") for a, b, c, d in rows]
    share = 100 * report["trainable"] / max(report["total"], 1)
    lines.append(f"trainable share: {share:.2f}%")
    if ref:
        opts = ", ".join(f"{k}={v}" for k, v in ref["overrides"].items())
        lines.append(f"released code: the same method with {opts} (trainable parameters per component)")
    return "\n".join(lines)
