"""The package's public face: only re-exports, nothing mutable at module level."""

import scriptflow_trio as sf


def test_public_names_are_reexports():
    public = {n for n in dir(sf) if not n.startswith("_")}
    for name in public - {"executors", "testing"}:
        obj = getattr(sf, name)
        assert getattr(obj, "__module__", "scriptflow_trio").startswith("scriptflow_trio"), name


def test_scriptflow_names_are_there():
    for name in (
        "Task",
        "bag",
        "init",
        "flow",
        "retry",
        "glob",
        "open_session",
        "LocalExecutor",
        "TaskFailed",
        "ScriptflowError",
    ):
        assert hasattr(sf, name)
    assert issubclass(sf.TaskFailed, sf.ScriptflowError)
    assert issubclass(sf.FlowNotFound, LookupError)


def test_notifier_is_the_one_public_name_of_notifications():
    assert sf.Notifier.__module__ == "scriptflow_trio._notify"
    public = {n for n in dir(sf) if not n.startswith("_")}
    assert {n for n in public if "notif" in n.lower()} == {"Notifier"}
