"""Recorded FHIR exchanges (`ldn-app record`, the `responses` file format) replayed through the full gateway."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import responses
import yaml

from smart_app.cli import main
from smart_app.cli_server import replay_base
from smart_app.fhir.load import load_bundles
from smart_app.samples import SAMPLE_AS_OF, SAMPLES_DIR, load_sample

RECORDINGS = sorted((Path(__file__).parent / "recordings").glob("*.yaml"))
AS_OF = SAMPLE_AS_OF.isoformat()


def replayed_assessment(capsys, recording: Path, patient: str) -> str:
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        mock._add_from_file(file_path=recording)
        code = main(["assess", "--server", replay_base(str(recording)), "--patient", patient, "--as-of", AS_OF,
                     "--json"])
    assert code == 0
    return capsys.readouterr().out


def file_assessment(capsys, patient: str) -> str:
    assert main(["assess", str(SAMPLES_DIR / f"{patient}.json"), "--as-of", AS_OF, "--json"]) == 0
    return capsys.readouterr().out


def test_there_are_recordings_for_several_sample_patients():
    assert len(RECORDINGS) >= 5


@pytest.mark.parametrize("recording", RECORDINGS, ids=[r.stem for r in RECORDINGS])
def test_each_recording_replays_through_the_gateway_to_the_same_assessment_as_the_sample_file(capsys, recording):
    assert replayed_assessment(capsys, recording, recording.stem) == file_assessment(capsys, recording.stem)


@pytest.mark.live
def test_record_saves_every_exchange_of_one_patient_and_the_file_replays_without_the_server(
        fhir_server, tmp_path, capsys):
    load_bundles(fhir_server.base_url, {"crps": load_sample("ldn-crps")})
    out = tmp_path / "crps.yaml"

    code = main(["record", "--server", fhir_server.base_url, "--patient", "ldn-crps", "--out", str(out)])
    printed = json.loads(capsys.readouterr().out)
    exchanges = [r["response"] for r in yaml.safe_load(out.read_text())["responses"]]

    assert code == 0 and printed["patient"] == "ldn-crps"
    assert {e["url"].split("?")[0].rsplit("/", 1)[-1] for e in exchanges} >= {
        "metadata", "ldn-crps", "Condition", "MedicationRequest", "MedicationStatement", "MedicationDispense"}
    assert all(e["status"] == 200 and e["body"] for e in exchanges)
    assert replay_base(str(out)) == fhir_server.base_url
    assert replayed_assessment(capsys, out, "ldn-crps") == file_assessment(capsys, "ldn-crps")
