"""Task contract: every registered task (built-in or dropped in) is a legal ``Task``, and a new
task is one file found by scanning (``avprompt/tasks/``, entry points, ``AVPROMPT_TASKS_PATH``)."""
from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from avprompt.cli import app
from avprompt.tasks import (DATASETS, FEW_SHOT_PROTOCOLS, LEVELS, PROTOCOLS, Task, TaskError, _unregister,
                            discover, few_shot_task, get_task, list_tasks, register_task)

TASKS = sorted(discover())
BUILTIN = ("ave", "ave-cls", "llp-cls", "vggsound40k", "vggsound")


@pytest.fixture(scope="module")
def listing() -> str:
    r = CliRunner().invoke(app, ["tasks"])
    assert r.exit_code == 0, r.output
    return r.output


@pytest.fixture
def drop_in(tmp_path, monkeypatch):
    """A folder on AVPROMPT_TASKS_PATH; tasks registered from it are removed afterwards so the
    other tests see only the built-in ones."""
    import avprompt.tasks as registry
    before = set(discover())
    monkeypatch.setenv("AVPROMPT_TASKS_PATH", str(tmp_path))
    yield tmp_path
    monkeypatch.delenv("AVPROMPT_TASKS_PATH")
    for name in set(registry._TASKS) - before:
        _unregister(name)
    discover(force=True)


def _task_file(name: str, **fields) -> str:
    args = {"name": name, "dataset": "ave", "level": "video", "protocol": "few-shot",
            "description": "a user task", "metrics": ("video_acc",), "primary": "video_acc", **fields}
    return ("from avprompt.tasks import Task, register_task\n"
            f"register_task(Task(**{args!r}))\n")


# ----- every registered task ----------------------------------------------------------------------
def test_builtin_tasks_are_registered():
    assert set(BUILTIN) <= set(TASKS)


@pytest.mark.parametrize("name", TASKS)
def test_task_fields_are_legal(name):
    t = get_task(name)
    assert isinstance(t, Task) and t.name == name
    assert t.level in LEVELS
    assert t.protocol in PROTOCOLS
    assert t.dataset in DATASETS
    assert t.description and "\n" not in t.description
    assert t.metrics and t.primary in t.metrics
    assert not t.reference_primary or t.reference_primary in t.metrics
    assert t.primary_metric("standard") == t.primary
    assert t.primary_metric("reference") in t.metrics
    assert t.num_segments > 0 and t.reference_classes >= 0
    if t.protocol != "supervised":
        assert not t.head, "only supervised tasks name a task head"
    else:  # the few-shot commands run only few-shot / pre-training tasks
        assert not (t.default_bench or t.zeroshot_target or t.single_label_shots)
    if t.single_label_shots:
        assert t.multi_label, "single-label shots only make sense when videos carry label sets"


@pytest.mark.parametrize("name", TASKS)
def test_task_is_listed(name, listing):
    t = get_task(name)
    line = next((ln for ln in listing.splitlines() if ln.split()[:1] == [name]), None)
    assert line is not None, listing
    assert line.split()[1:4] == [t.dataset, t.level, t.protocol]
    assert t.primary in line and t.description in line


def test_default_for_dataset_is_unique_per_dataset():
    seen: dict[str, str] = {}
    for t in list_tasks():
        if t.default_for_dataset:
            assert t.dataset not in seen, f"{seen.get(t.dataset)} and {t.name} both default for {t.dataset}"
            seen[t.dataset] = t.name


def test_defaults_match_the_old_tables():
    """The registry reproduces what used to be hard-coded (bench / zeroshot defaults, LLP rules)."""
    from avprompt.bench import BenchConfig
    from avprompt.zeroshot import ZeroShotConfig
    assert BenchConfig().tasks == ["ave", "ave-cls", "llp-cls"]
    assert ZeroShotConfig().targets == ["ave", "ave-cls", "llp-cls"]
    assert [t.name for t in list_tasks() if t.single_label_shots] == ["llp-cls"]
    assert [t.name for t in list_tasks() if t.level == "segment" and t.few_shot] == ["ave"]
    assert {d: t.name for d in ("ave", "llp", "vggsound", "vggsound40k")
            for t in list_tasks() if t.dataset == d and t.default_for_dataset} == \
        {"ave": "ave", "llp": "llp-cls", "vggsound": "vggsound", "vggsound40k": "vggsound40k"}


def test_unknown_task_is_a_one_line_error():
    with pytest.raises(ValueError, match="unknown task 'nope'; use one of ave, ave-cls") as e:
        get_task("nope")
    assert "\n" not in str(e.value)


def test_tasks_cli_filters_and_fails_in_one_line():
    r = CliRunner().invoke(app, ["tasks", "--protocol", "pretrain"])
    assert r.exit_code == 0 and r.output.split()[0] == "vggsound40k"
    r = CliRunner().invoke(app, ["tasks", "no-such-*"])
    assert r.exit_code == 2


# ----- supervised tasks stay out of the few-shot code paths ---------------------------------------
def test_supervised_task_is_refused_by_few_shot_paths(drop_in):
    from avprompt.bench import BenchConfig
    from avprompt.data.metrics import compute_metrics
    from avprompt.data.records import DatasetIndex
    from avprompt.data.splits import make_split

    (drop_in / "sup_probe.py").write_text(_task_file("sup-probe", protocol="supervised", level="segment",
                                                     metrics=("segment_acc",), primary="segment_acc",
                                                     head="probe-head"))
    discover(force=True)
    msg = "task 'sup-probe' is a supervised task: run it with `avprompt train --task sup-probe`"
    with pytest.raises(ValueError, match="^" + re.escape(msg) + "$"):
        few_shot_task("sup-probe")
    with pytest.raises(ValueError, match="is a supervised task"):
        BenchConfig(tasks=["ave", "sup-probe"]).validate()
    with pytest.raises(ValueError, match="is a supervised task"):
        make_split(DatasetIndex(name="ave", root=".", classes=["a"], records=[]), "sup-probe")
    with pytest.raises(ValueError, match="is a supervised task"):
        compute_metrics("sup-probe", "standard", [], [])
    assert "sup-probe" not in BenchConfig().tasks


# ----- drop-in discovery --------------------------------------------------------------------------
def test_new_file_in_tasks_path_registers_a_task(drop_in):
    (drop_in / "my_task.py").write_text(_task_file("my-task", description="a dropped-in task"))
    reg = discover(force=True)
    assert reg["my-task"].description == "a dropped-in task" and reg["my-task"].dataset == "ave"
    assert few_shot_task("my-task").name == "my-task"
    r = CliRunner().invoke(app, ["tasks", "my-*"])
    assert r.exit_code == 0 and r.output.startswith("my-task") and "a dropped-in task" in r.output


def test_duplicate_task_name_is_an_error_naming_both_files(drop_in):
    (drop_in / "again_ave.py").write_text(_task_file("ave-cls"))
    with pytest.raises(TaskError, match=r"duplicate task name 'ave-cls': .*ave_cls\.py and .*again_ave\.py; rename one"):
        discover(force=True)
    assert get_task("ave-cls").description.startswith("AVE video classification")  # the original stays


def test_broken_task_file_is_reported_with_its_path(drop_in):
    (drop_in / "broken_task.py").write_text("import no_such_module_xyz\n")
    with pytest.raises(TaskError, match=r"broken_task\.py failed to import: ModuleNotFoundError") as e:
        discover(force=True)
    assert "\n" not in str(e.value)


def test_illegal_field_is_an_error_naming_the_file(drop_in):
    (drop_in / "bad_level.py").write_text(_task_file("bad-level", level="clip"))
    with pytest.raises(TaskError, match=r"task 'bad-level' in .*bad_level\.py: bad level 'clip'"):
        discover(force=True)
    assert "bad-level" not in discover()


def test_register_needs_a_task():
    with pytest.raises(TaskError, match="register_task needs a Task"):
        register_task({"name": "x"})
    assert FEW_SHOT_PROTOCOLS == ("few-shot", "pretrain")
