"""A trial runs, and reports under, the parameter NNI's manager assigned it, even where NNI 3.0's channel sends it
another trial's (measured: two trials started together on the local service ran each other's architecture)."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import nni
import pytest
from nni.runtime.trial_command_channel import get_default_trial_command_channel, set_default_trial_command_channel
from nni.runtime.trial_command_channel.base import TrialCommandChannel

from mednas_nni.engines.assigned_parameters import assigned_record, get_assigned_parameter
from mednas_nni.engines.nas_trial_entry import NNI_ENTRY, main as nas_entry_main, nas_trial_python


class SwappingChannel(TrialCommandChannel):
    """NNI's trial channel as it behaves in the swap: it sends parameter ``sent``; metrics are recorded."""

    def __init__(self, sent: dict) -> None:
        self.sent, self.metrics = sent, []

    def receive_parameter(self):
        return self.sent

    def send_metric(self, type, parameter_id, trial_job_id, sequence, value):   # noqa: A002 (NNI's signature)
        self.metrics.append((type, parameter_id, value))


def _manager(records: dict[str, list[str]]):
    """A REST server answering ``GET /api/v1/nni/trial-jobs/<id>`` as NNI's manager does (``hyperParameters``)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):        # noqa: N802 (http.server's name)
            tid = self.path.rsplit("/", 1)[-1]
            if not self.path.startswith("/api/v1/nni/trial-jobs/") or tid not in records:
                self.send_error(404)
                return
            body = json.dumps({"trialJobId": tid, "hyperParameters": records[tid]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


@pytest.fixture
def swapped(monkeypatch):
    """Trial ``T1`` is assigned parameter 1 by the manager, but its channel sends parameter 0."""
    sent = {"parameter_id": 0, "parameter_source": "algorithm", "parameters": {"arch": "zero"}}
    mine = {"parameter_id": 1, "parameter_source": "algorithm", "parameters": {"arch": "one"}}
    srv = _manager({"T1": [json.dumps(mine)]})
    before = get_default_trial_command_channel()
    channel = SwappingChannel(sent)
    set_default_trial_command_channel(channel)
    monkeypatch.setenv("NNI_TRIAL_COMMAND_CHANNEL", f"http://127.0.0.1:{srv.server_address[1]}/platform/T1")
    monkeypatch.setenv("NNI_TRIAL_JOB_ID", "T1")
    monkeypatch.setattr(nni.trial, "_params", None)
    yield channel, srv
    set_default_trial_command_channel(before)
    srv.shutdown()


def test_a_swapped_parameter_is_replaced_by_the_assigned_one_and_metrics_carry_its_id(swapped) -> None:
    channel, _ = swapped
    assert get_assigned_parameter() == {"arch": "one"}
    nni.report_intermediate_result({"default": 0.5})
    nni.report_final_result({"default": 0.7})
    assert [(t, pid) for t, pid, _ in channel.metrics] == [("PERIODICAL", 1), ("FINAL", 1)]


def test_the_channels_parameter_stays_where_it_is_the_assigned_one(swapped, monkeypatch) -> None:
    channel, _ = swapped
    channel.sent = {"parameter_id": 1, "parameter_source": "algorithm", "parameters": {"arch": "one"}}
    assert get_assigned_parameter() == {"arch": "one"}
    assert nni.trial._params is channel.sent


def test_an_unreachable_manager_keeps_the_channels_parameter(swapped, monkeypatch) -> None:
    channel, srv = swapped
    monkeypatch.setenv("NNI_TRIAL_JOB_ID", "unknown-trial")            # the manager answers 404
    assert assigned_record() is None
    assert get_assigned_parameter() == {"arch": "zero"}
    nni.report_final_result(0.1)
    assert channel.metrics == [("FINAL", 0, 0.1)]


def test_a_record_that_does_not_decode_keeps_the_channels_parameter(swapped, monkeypatch) -> None:
    channel, _ = swapped

    def broken_load(text: str):
        raise TypeError("cannot rebuild the model space here")     # what nni.load may raise on a foreign record

    assert assigned_record(broken_load) is None
    assert get_assigned_parameter(broken_load) == {"arch": "zero"}


def test_outside_nni_there_is_no_record(monkeypatch) -> None:
    monkeypatch.delenv("NNI_TRIAL_COMMAND_CHANNEL", raising=False)
    monkeypatch.delenv("NNI_TRIAL_JOB_ID", raising=False)
    assert assigned_record() is None


def test_nas_trial_command_keeps_nnis_entry_and_refuses_other_arguments(caplog) -> None:
    assert nas_trial_python("/opt/py/bin/python3") == "/opt/py/bin/python3 -m mednas_nni.engines.nas_trial_entry"
    with caplog.at_level("ERROR", logger="mednas_nni.engines.nas_trial_entry"):
        assert nas_entry_main(["trial"]) == 2
    (err,) = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert "\n" not in err and " ".join(NNI_ENTRY) in err and "got trial" in err
