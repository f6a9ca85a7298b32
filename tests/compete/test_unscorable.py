"""An entrant's model the evaluation fails on is the entrant's problem, not the competition's."""

from __future__ import annotations

from pathlib import Path

import pytest

from unlearn.compete.competition import EVALUATION_ERROR, _evaluate


def _failing(exc: BaseException):
    def evaluate_model(*_args, **_kwargs):
        raise exc

    return evaluate_model


def test_a_failed_evaluation_names_only_the_exception_class_and_keeps_the_traceback(tmp_path: Path):
    run = {"status": "ok", "reason": "", "wall_time_s": 3.0}
    leak = KeyError("Tobin Hale, 5550192834")  # a foreign message may quote the private rows
    result = _evaluate(run, tmp_path, tmp_path, tmp_path, {}, None, {}, _failing(leak))
    assert result["status"] == "unscorable" and result["reason"] == f"evaluation: KeyError, see {EVALUATION_ERROR}"
    assert (result["run_status"], result["run_reason"]) == ("ok", "")
    assert "Tobin Hale" in (tmp_path / EVALUATION_ERROR).read_text()  # for the organiser only
    for machine in (MemoryError(), OSError(28, "No space left on device")):  # the organiser's, not the entrant's
        with pytest.raises(type(machine)):
            _evaluate(run, tmp_path, tmp_path, tmp_path, {}, None, {}, _failing(machine))


def test_the_evaluation_process_says_why_it_has_no_scores(tmp_path: Path):
    """The real child process on a folder without rows: our message comes back as the reason,
    with the traceback beside it; a retry is not asked for."""
    from unlearn.compete.evaluation import Unscorable, evaluate_apart

    folder = tmp_path / "entrant"
    folder.mkdir()
    missing = tmp_path / "no_model"
    with pytest.raises(Unscorable) as caught:
        evaluate_apart("lume", missing, tmp_path, folder / "evaluation", folder, {"progress": False}, None, 60, 3)
    assert caught.value.reason == f"{tmp_path}: no forget.jsonl or forget.parquet in this folder"
    assert not caught.value.retry
    assert "Traceback" in (folder / EVALUATION_ERROR).read_text()


def test_an_evaluation_to_retry_is_unscorable_without_a_cached_verdict(tmp_path: Path):
    from unlearn.compete.evaluation import Unscorable

    run = {"status": "ok", "reason": "", "wall_time_s": 3.0}
    killed = _failing(Unscorable("killed by SIGKILL after 4 s (out of memory?)", retry=True))
    result = _evaluate(run, tmp_path, tmp_path, tmp_path, {}, None, {}, killed)
    assert result["status"] == "unscorable" and result["retry"] is True
    assert result["reason"] == "evaluation: killed by SIGKILL after 4 s (out of memory?)"


def test_an_organisers_input_the_evaluation_cannot_find_stops_the_competition(tmp_path: Path, monkeypatch):
    """Not the entrant's doing, so not its `unscorable` verdict (which would be cached): the
    competition stops with one line naming the input. Relative paths reach the child absolute."""
    from unlearn import RunError
    from unlearn.compete.evaluation import evaluate_apart

    folder = tmp_path / "entrant"
    folder.mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        RunError, match="mia: .*no_such_mia: not found .*the organiser's settings; the competition stops"
    ):
        evaluate_apart("lume", Path("no_model"), Path("."), folder / "evaluation", folder,
                       {"mia": "no_such_mia", "progress": False}, None, 60, 3)  # fmt: skip
    spec = (folder / "evaluation_spec.json").read_text()
    assert f'"mia": "{tmp_path / "no_such_mia"}"' in spec and f'"model": "{tmp_path / "no_model"}"' in spec
