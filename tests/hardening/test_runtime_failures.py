"""Runtime failures of a real run are one line, keep the work done, and a resume finishes the run (issue 11).

One tiny real search (zero-cost NSGA-II, 2 finalists) meets, in its first session, a retraining that diverges
(finalist 0 trains at ``lr=1e6``: a real exploding loss) and a full disk while writing ``finalists/1/model.pt``
(``ENOSPC`` simulated at the one place io writes file bytes; ``test_run_dir_io`` uses a real tmpfs). The resume
does not retrain the diverged finalist again and finishes. Also: a GeNAS training trial that explodes is recorded as
failed, and a run that fails before its first result leaves no run directory.
"""
from __future__ import annotations

import errno
import json

import pytest

import mednas_nni.io as io_mod
from mednas_nni.cli import main
from mednas_nni.contracts.task import Task

TINY = ["strategy.params.pop_size=8", "strategy.params.generations=1", "space.params.num_blocks=1",
        "space.params.num_nodes=3", "space.params.channels=4", "strategy.params.top_k=1", "evaluator.epochs=1",
        "evaluator.max_batches_per_epoch=2", "evaluator.bn_batches=1", "evaluator.batch_size=32",
        "strategy.params.proxy_batch_size=8", "run.device=cpu"]


@pytest.mark.slow
def test_diverged_finalist_and_full_disk_then_resume(tmp_path, capsys, monkeypatch):
    fits: list[str] = []
    real_fit = Task.fit

    def fit(self, model, dataset, recipe, **kw):
        fits.append(kw.get("desc", ""))
        if kw.get("desc", "").startswith("retrain finalist 1/"):      # finalist 0: a learning rate that explodes
            recipe = recipe.model_copy(update={"lr": 1e6})
        return real_fit(self, model, dataset, recipe, **kw)

    real_write = io_mod._write_all

    def write(path, data):
        if path.parent.name == "1" and path.name.startswith(".model.pt."):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_write(path, data)

    monkeypatch.setattr(Task, "fit", fit)
    monkeypatch.setattr(io_mod, "_write_all", write)
    assert main(["search", "--no-progress", *TINY, f"run.out_dir={tmp_path}"]) == 1
    err = capsys.readouterr().err.splitlines()
    (rd,) = [p for p in tmp_path.iterdir()]
    assert len(err) == 2 and err[0].startswith(f"mednas: run directory: {rd} (zc_nsga2 on mstf_cell"), err
    assert err[1] == (f"mednas: {rd / 'finalists' / '1' / 'model.pt'}: cannot write (no space left on the device; "
                      f"free some space); continue with 'mednas resume {rd}'")
    failed = json.loads((rd / "finalists" / "0" / "failed.json").read_text())
    assert failed["error"].startswith("diverged: ") and "learning rate" in failed["error"]   # NaN or exploded
    assert "finalist 0 failed to retrain" in (rd / "search.log").read_text()
    assert not list(rd.rglob(".*.tmp")) and not (rd / "finalists" / "1" / "model.pt").exists()
    archs = (rd / "archs.jsonl").read_bytes()
    first_seconds = json.loads((rd / "status.json").read_text())["search_seconds"]

    monkeypatch.setattr(io_mod, "_write_all", real_write)            # space freed
    fits.clear()
    assert main(["resume", str(rd), "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert fits == ["retrain finalist 2/2"]                           # the diverged one is not retrained again
    assert "mednas: resuming: search finished in" in err and "0 of 2 finalist(s) retrained" in err
    assert "2 finalist(s) retrained (1 failed) for 1 epoch(s)" in out
    m = json.loads((rd / "metrics.json").read_text())
    assert m["best_finalist"] == 1 and [f["index"] for f in m["failed_finalists"]] == [0]
    assert m["search"]["seconds"] == pytest.approx(first_seconds) and m["search"]["sessions"] == 1
    assert (rd / "archs.jsonl").read_bytes() == archs                 # nothing scored again


def test_a_genas_training_that_explodes_is_recorded_as_failed(tmp_path):
    from mednas_nni.engines.search_loop import SearchLoop
    from mednas_nni.experiment import RunContext, build_strategy
    from mednas_nni.strategies._train_trial import train_and_score

    from _runs import GENAS, fake_metrics, started_run

    rd, cfg = started_run(tmp_path, [*GENAS, "space.name=genas_cnn", "space.params={}"])
    ctx = RunContext.build(cfg, rd)
    strategy = build_strategy(cfg)
    loop = SearchLoop(strategy, ctx.build_space(), ctx)
    batch = loop.next_batch()
    hashes = list(batch.todo)
    try:
        metrics = train_and_score(loop.space.freeze(batch.todo[hashes[0]]), batch.todo[hashes[0]], ctx,
                                  lambda d: None, epochs=2, lr=1e6, max_batches_per_epoch=3, batch_size=32)
        error = None
    except FloatingPointError as e:      # NaN at once: the engines record the exception as the reason
        metrics, error = None, f"FloatingPointError: {e}"
    rec = loop.complete(hashes[0], metrics, error=error)
    for i, h in enumerate(hashes[1:], 1):
        loop.complete(h, fake_metrics(strategy, i))
    loop.finish(batch)
    assert rec["status"] == "failed"
    assert "diverged" in rec["error"] or "loss became" in rec["error"], rec
    if error is None:   # finite but exploded (the 1e11 losses of the issue): scored, yet not a network
        assert rec["diverged"] is True and "(strategy.params.lr)" in rec["error"]
    assert all(f["hash"] != hashes[0] for f in loop.finalists())


def test_a_run_failing_before_its_first_result_leaves_no_folder(tmp_path, capsys):
    # select_by is checked against the task when the run starts, after the run directory was made
    assert main(["search", "--no-progress", "evaluator.select_by=val_bogus", f"run.out_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "val_bogus" in err[1] and "mednas resume" not in err[1], err
    assert list(tmp_path.iterdir()) == []
